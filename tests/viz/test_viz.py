"""Viewer: box geometry, headless Open3D renders (pixels at projected box edges carry the class
colours), GIF/MP4 frame counts, the matplotlib bird's-eye plot, inputs and their errors, the interactive
viewer's on-demand loader (read-ahead, checkpoint streaming, unreadable frames), broken data. The window
itself is tested on a virtual display in test_window.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from detector import CONFIG_DIR
from detector.data.frame import Frame, FrameFormatError
from detector.data.frame_store import write_segment_meta
from detector.visualize import visualize
from detector.viz import sources
from detector.viz.bev import BevFraming, render_bev
from detector.viz.camera import birds_eye_camera, chase_camera
from detector.viz.headless import OffscreenView, RenderError
from detector.viz.scene import (
    BOX_EDGES,
    GT_COLORS,
    PRED_COLORS,
    STATE_COLOR,
    TOP_EDGES,
    PredictedBoxes,
    SceneFrame,
    SceneOptions,
    StateVoxels,
    box_corners,
    box_segments,
    clean_scene,
    dashed,
    frame_caption,
    score_labels,
    state_geometry,
    visible_ground_truth,
    visible_predictions,
)
from tests.helpers.paths import REPO_ROOT

SEGMENT = "segA"
# Large, asymmetric boxes: a mirrored or rotated image cannot pass the colour checks.
GT_BOXES = np.array([[9.0, 6.0, 0.0, 4.8, 2.2, 1.6, 0.4],     # vehicle
                     [-4.0, -9.0, 0.1, 2.4, 2.0, 1.8, -1.0],  # pedestrian
                     [-9.5, 9.0, 0.0, 3.2, 1.6, 1.7, 2.0]],   # cyclist
                    np.float32)
GT_TYPES = np.array([1, 2, 4])
PRED_BOXES = np.array([[8.0, -7.0, 0.0, 4.5, 2.0, 1.5, -0.3],   # vehicle 0.9
                       [-9.0, -1.0, 0.0, 2.4, 2.0, 1.8, 0.8],   # pedestrian 0.6
                       [3.0, 12.0, 0.0, 3.0, 1.5, 1.7, 0.0]],   # cyclist 0.05: below the threshold
                      np.float32)
PRED_TYPES = np.array([1, 2, 4])
PRED_SCORES = np.array([0.9, 0.6, 0.05], np.float32)


def make_frame(index: int, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed + index)
    pts = rng.uniform([-30, -30, -1.9, 0, 0], [30, 30, -1.6, 1, 1], (4000, 5)).astype(np.float32)
    boxes = GT_BOXES.copy()
    boxes[:, 0] += 0.5 * index  # objects move between frames
    return Frame(points=pts, pose=np.eye(4), timestamp_micros=1_000_000 + 100_000 * index, segment=SEGMENT,
                 index=index, boxes=boxes, types=GT_TYPES, ids=["v", "p", "c"], num_points=[50, 20, 20],
                 difficulty=[1, 1, 1])


def write_store(root: Path, num_frames: int) -> Path:
    seg = root / "validation" / SEGMENT
    seg.mkdir(parents=True)
    frames = [make_frame(i) for i in range(num_frames)]
    for f in frames:
        f.save_npz(seg / f"{f.index:04d}.npz")
    write_segment_meta(seg, segment=SEGMENT, split="validation",
                       timestamps_micros=[f.timestamp_micros for f in frames])
    return seg


def write_predictions(path: Path, frames_with_boxes: list[int], context: str = SEGMENT) -> Path:
    from waymo_open_dataset.protos import metrics_pb2

    objects = metrics_pb2.Objects()
    for i in frames_with_boxes:
        for box, t, s in zip(PRED_BOXES, PRED_TYPES, PRED_SCORES):
            o = objects.objects.add()
            o.context_name = context
            o.frame_timestamp_micros = make_frame(i).timestamp_micros
            b = o.object.box
            b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = map(float, box)
            o.object.type = int(t)
            o.score = float(s)
    path.write_bytes(objects.SerializeToString())
    return path


def run_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="visualize", overrides=list(overrides))
    return visualize(cfg)


def has_color(img: np.ndarray, uv, rgb, radius: int = 1, tol: int = 1) -> bool:
    """Some pixel within ``radius`` of pixel ``uv`` has colour ``rgb`` (0-1 floats) within ``tol``/255."""
    u, v = int(np.floor(uv[0])), int(np.floor(uv[1]))
    patch = img[max(v - radius, 0):v + radius + 1, max(u - radius, 0):u + radius + 1].reshape(-1, 3)
    want = np.round(255 * np.asarray(rgb))
    return bool(np.any(np.all(np.abs(patch.astype(int) - want) <= tol, axis=1)))


def check_box_pixels(img, project, boxes, types, palette, expect_present=True):
    """Top-edge and heading-marker midpoints carry the class colour; the rear half of the top face
    (no line there from above) does not."""
    segs = box_segments(boxes)
    for b, t in enumerate(types):
        color = palette[int(t)]
        for e in TOP_EDGES:
            uv = project(segs[b, e].mean(axis=0))
            assert has_color(img, uv, color) == expect_present, (b, t, e, uv)
        if expect_present:
            heading_mid = project(segs[b, len(BOX_EDGES)].mean(axis=0))  # centre -> front edge
            assert has_color(img, heading_mid, color), (b, "heading", heading_mid)
            rear_mid = box_corners(boxes[b:b + 1])[0, [6, 7]].mean(axis=0)
            inside = project(0.5 * (rear_mid + segs[b, len(BOX_EDGES), 0]))  # between centre and rear
            assert not has_color(img, inside, color), (b, "inside", inside)


def test_box_corners_follow_waymo_convention():
    box = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.0, np.pi / 2]])
    c = box_corners(box)[0]
    # heading +90 deg: the front (+length/2 along heading) is at +y; bottom face at cz - h/2
    np.testing.assert_allclose(c[:4, 2], 2.5)
    np.testing.assert_allclose(c[4:, 2], 3.5)
    np.testing.assert_allclose(c[[0, 1], 1], 4.0, atol=1e-12)
    np.testing.assert_allclose(c[[2, 3], 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(sorted(c[[0, 1], 0]), [0.0, 2.0], atol=1e-12)
    segs = box_segments(box)
    assert segs.shape == (1, 15, 2, 3)
    np.testing.assert_allclose(segs[0, 12], [[1, 2, 3.5], [1, 4, 3.5]], atol=1e-12)  # heading marker
    ls = state_geometry(np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), 0.5, fill=0.8)
    pts = np.asarray(ls.points)
    assert pts.shape == (16, 3) and np.asarray(ls.lines).shape == (24, 2)
    np.testing.assert_allclose(pts[8:].max(axis=0) - pts[8:].min(axis=0), 0.4)


def test_birds_eye_camera_and_matplotlib_framing_agree():
    cam = birds_eye_camera(320, 240, 15.0)
    framing = BevFraming(320, 240, 15.0)
    xy = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 20.0], [-7.5, -3.0]])
    uv, depth = cam.project(np.concatenate([xy, np.zeros((4, 1))], axis=1))
    np.testing.assert_allclose(uv, framing.to_pixels(xy), atol=1e-9)
    np.testing.assert_allclose(uv[:3], [[160, 120], [160, 0], [0, 120]], atol=1e-9)  # +x up, +y left
    assert np.all(depth > 0)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("viz_store"), 3)


@pytest.fixture(scope="module")
def predictions_file(tmp_path_factory) -> Path:
    return write_predictions(tmp_path_factory.mktemp("viz_pred") / "predictions.bin", [0, 2])


def test_headless_png_box_edges_carry_class_colors(store, predictions_file, tmp_path):
    out = tmp_path / "view.png"
    result = run_cfg(f"input={store}", f"predictions={predictions_file}", "headless=true", f"out={out}",
                     "frame=2", "width=320", "height=240", "range_m=15", "show_scores=false",
                     "score_threshold=0.1", "line_width=3")
    assert result.frames == 1 and out.is_file()
    img = iio.imread(out)
    assert img.shape == (240, 320, 3)
    cam = birds_eye_camera(320, 240, 15.0)

    def project(p):
        return cam.project(np.asarray(p)[None])[0][0]

    frame2 = make_frame(2)
    check_box_pixels(img, project, frame2.boxes, GT_TYPES, GT_COLORS)
    check_box_pixels(img, project, PRED_BOXES[:2], PRED_TYPES[:2], PRED_COLORS)
    check_box_pixels(img, project, PRED_BOXES[2:], PRED_TYPES[2:], PRED_COLORS, expect_present=False)
    # frame 0's ground truth is elsewhere (objects moved by 1 m): its vehicle front edge is not drawn
    front0 = box_segments(make_frame(0).boxes[:1])[0, TOP_EDGES[0]].mean(axis=0)
    assert not has_color(img, project(front0), GT_COLORS[1], radius=0)


def test_offscreen_chase_view_scores_and_state(tmp_path):
    frame = make_frame(0)
    state = StateVoxels(np.array([[2.0, -3.0, -1.0]]), 1.0)
    scene = SceneFrame(frame, PredictedBoxes(PRED_BOXES[:1], PRED_TYPES[:1], PRED_SCORES[:1]), state)
    cam = chase_camera(320, 240)
    opts = SceneOptions(show_state=True, line_width=3, show_scores=False)
    with OffscreenView(cam, opts) as view:
        img = view.render_scene(scene)
        view.opts = SceneOptions(show_state=True, line_width=3, show_scores=True)
        labelled = view.render_scene(scene)
    assert img.shape == (240, 320, 3)

    def project(p):
        uv, depth = cam.project(np.asarray(p)[None])
        assert depth[0] > 0
        return uv[0]

    segs = box_segments(frame.boxes)
    for b, t in enumerate(GT_TYPES):
        for e in (*TOP_EDGES, 8, 9, 10, 11):  # top face and vertical edges, seen in perspective
            assert has_color(img, project(segs[b, e].mean(axis=0)), GT_COLORS[int(t)]), (b, e)
    pred_segs = box_segments(PRED_BOXES[:1])
    for e in (*TOP_EDGES, 8, 9):
        assert has_color(img, project(pred_segs[0, e].mean(axis=0)), PRED_COLORS[1]), e
    # state voxel: a wireframe cube (0.8 m) around its centre
    cube = box_segments(np.array([[2.0, -3.0, -1.0, 0.8, 0.8, 0.8, 0.0]]))[0]
    assert sum(has_color(img, project(cube[e].mean(axis=0)), STATE_COLOR) for e in TOP_EDGES) >= 3
    # the score label is drawn in the prediction's colour just above-right of its top centre
    anchor = project(np.array([PRED_BOXES[0, 0], PRED_BOXES[0, 1], PRED_BOXES[0, 2] + PRED_BOXES[0, 5] / 2]))
    u, v = int(anchor[0]), int(anchor[1])
    changed = np.any(labelled != img, axis=-1)
    assert changed.sum() > 10
    vs, us = np.nonzero(changed)
    assert vs.min() >= v - 20 and vs.max() <= v and us.min() >= u and us.max() <= u + 60
    text_rgb = labelled[changed].astype(float).mean(axis=0)  # anti-aliased text: the hue, not exact values
    assert text_rgb[0] > 2 * text_rgb[1] and text_rgb[0] > 2 * text_rgb[2]


def test_gif_one_frame_per_lidar_frame(store, predictions_file, tmp_path):
    out = tmp_path / "seq.gif"
    result = run_cfg(f"input={store}", f"predictions={predictions_file}", "headless=true", f"out={out}",
                     "width=160", "height=120", "range_m=15")
    frames = iio.imread(out, index=None)
    assert result.frames == 3 and frames.shape[:3] == (3, 120, 160)
    assert not np.array_equal(frames[0], frames[1])
    sel = tmp_path / "sel.gif"
    assert run_cfg(f"input={store}", "headless=true", f"out={sel}", "frames=[1,3]", "width=160",
                   "height=120").frames == 2
    assert iio.imread(sel, index=None).shape[0] == 2


def test_mp4_one_frame_per_lidar_frame(store, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    out = tmp_path / "seq.mp4"
    assert run_cfg(f"input={store}", "headless=true", f"out={out}", "width=160", "height=120").frames == 3
    reader = imageio.get_reader(out)
    try:
        assert reader.count_frames() == 3
    finally:
        reader.close()


def test_matplotlib_bird_eye_plot(store, predictions_file, tmp_path):
    out = tmp_path / "bev.png"
    run_cfg(f"input={store}", f"predictions={predictions_file}", "headless=true", f"out={out}",
            "renderer=matplotlib", "frame=0", "width=320", "height=240", "range_m=15", "show_scores=false",
            "score_threshold=0.1", "line_width=3")
    img = iio.imread(out)[..., :3]
    assert img.shape == (240, 320, 3)
    framing = BevFraming(320, 240, 15.0)

    def project(p):
        return framing.to_pixels(np.asarray(p)[None, :2])[0]

    # matplotlib draws footprints: the bottom-face edges project where the top ones do from above
    check_box_pixels(img, project, make_frame(0).boxes, GT_TYPES, GT_COLORS)
    check_box_pixels(img, project, PRED_BOXES[:2], PRED_TYPES[:2], PRED_COLORS)
    check_box_pixels(img, project, PRED_BOXES[2:], PRED_TYPES[2:], PRED_COLORS, expect_present=False)
    # direct call: the same image size, labels drawn when asked
    scene = SceneFrame(make_frame(0), PredictedBoxes(PRED_BOXES, PRED_TYPES, PRED_SCORES))
    assert render_bev(scene, SceneOptions(), framing).shape == (240, 320, 3)


def test_predictions_matched_by_segment_and_timestamp(store, predictions_file, tmp_path):
    index = sources.load_predictions(predictions_file)
    source = sources.open_source(store)
    scenes = list(sources.iter_scene_frames(source, predictions=index))
    assert [len(s.predictions) for s in scenes] == [3, 0, 3]
    np.testing.assert_allclose(scenes[2].predictions.boxes, PRED_BOXES, atol=1e-6)
    np.testing.assert_array_equal(scenes[2].predictions.types, PRED_TYPES)
    other = write_predictions(tmp_path / "other.bin", [0], context="another_segment")
    with pytest.raises(sources.VisualizeInputError, match="no objects for segment 'segA'.*another_segment"):
        list(sources.iter_scene_frames(source, predictions=sources.load_predictions(other)))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xff\xff not a proto")
    with pytest.raises(sources.VisualizeInputError, match="bad.bin"):
        sources.load_predictions(bad)


def test_missing_inputs_give_clear_errors(store, tmp_path):
    E = sources.VisualizeInputError
    with pytest.raises(E, match="no input: set input="):
        run_cfg("headless=true", f"out={tmp_path / 'x.png'}")
    with pytest.raises(E, match="no such file or folder"):
        run_cfg(f"input={tmp_path / 'nothere'}", "headless=true", f"out={tmp_path / 'x.png'}")
    with pytest.raises(E, match="not a frame-store segment: no segment.json.*point input= at one segment"):
        run_cfg(f"input={store.parent.parent}", "headless=true", f"out={tmp_path / 'x.png'}")
    with pytest.raises(E, match="predictions=.*missing.bin: no such file"):
        run_cfg(f"input={store}", f"predictions={tmp_path / 'missing.bin'}", "headless=true",
                f"out={tmp_path / 'x.png'}")
    with pytest.raises(E, match="headless=true needs out="):
        run_cfg(f"input={store}", "headless=true")
    with pytest.raises(RenderError, match="unsupported file type '.jpg'"):
        run_cfg(f"input={store}", "headless=true", f"out={tmp_path / 'x.jpg'}")
    with pytest.raises(E, match="out of range"):
        run_cfg(f"input={store}", "headless=true", f"out={tmp_path / 'x.png'}", "frame=7")
    with pytest.raises(E, match="ckpt_path=.*nope.ckpt: no such file"):
        run_cfg(f"input={store}", "headless=true", f"out={tmp_path / 'x.png'}",
                f"ckpt_path={tmp_path / 'nope.ckpt'}")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(sources.CheckpointUnavailableError, match="detector.no_such_module.*predictions=FILE.bin"):
        run_cfg(f"input={store}", "headless=true", f"out={tmp_path / 'x.png'}", f"ckpt_path={ckpt}",
                "ckpt_loader=detector.no_such_module:load")
    with pytest.raises(E, match="show_state=true .* needs ckpt_path"):
        run_cfg(f"input={store}", "headless=true", f"out={tmp_path / 'x.png'}", "show_state=true")
    broken = write_store(tmp_path / "broken", 2)
    (broken / "0001.npz").write_bytes(b"garbage")
    with pytest.raises(FrameFormatError, match="0001.npz"):
        run_cfg(f"input={broken}", "headless=true", f"out={tmp_path / 'x.gif'}")
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.gif"))  # nothing half-written


def test_cli_without_display_prints_a_message(store):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "detector.visualize", f"input={store}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no display" in proc.stderr and "headless=true out=" in proc.stderr
    assert "Traceback" not in proc.stderr


class _OracleDetector:
    """Stands in for the streaming detector (not in this tree yet): returns each frame's ground truth
    with score 1 and records what it was given."""

    def __init__(self):
        self.calls = []

    def init_state(self, batch_size):
        return {"frames_seen": 0, "batch_size": batch_size}

    def step(self, batch, state):
        import torch

        self.calls.append((batch.batch_size, bool(batch.reset[0]), int(batch.timestamps[0])))
        boxes, types = batch.boxes_of(0)
        det = PredictedBoxes(boxes.numpy(), types.numpy(), torch.ones(len(boxes)).numpy())
        state = {**state, "frames_seen": state["frames_seen"] + 1}
        return [det], state


def load_oracle(path, map_location="cpu"):
    assert Path(path).is_file() and map_location == "cpu"
    return _OracleDetector()


def test_checkpoint_streams_detector_over_frames(store, tmp_path):
    ckpt = tmp_path / "oracle.ckpt"
    ckpt.write_bytes(b"x")
    source = sources.open_source(store)
    scenes = list(sources.iter_scene_frames(
        source, 1, None, ckpt_path=str(ckpt), ckpt_loader=f"{__name__}:load_oracle",
        state_voxels=lambda s: (np.full((s["frames_seen"], 3), 1.0), 0.5)))
    assert [s.frame.index for s in scenes] == [1, 2]
    for s in scenes:
        np.testing.assert_allclose(s.predictions.boxes, s.frame.boxes)
        np.testing.assert_array_equal(s.predictions.scores, 1.0)
    assert [len(s.state.centers) for s in scenes] == [1, 2]  # the state carried from frame to frame
    # one frame a step, reset only on the first shown frame
    loader = sources.resolve_checkpoint_loader(f"{__name__}:load_oracle")
    det = loader(ckpt)
    list(sources.stream_detections(det, source.frames(0, None)))
    assert det.calls == [(1, True, 1_000_000), (1, False, 1_100_000), (1, False, 1_200_000)]


def test_loader_reads_on_demand_and_holds_only_the_read_ahead(tmp_path):
    from detector.viz.loader import SceneLoader

    seg = write_store(tmp_path / "store", 8)
    pred = write_predictions(tmp_path / "p.bin", [0, 2, 5])
    prepared = []
    with SceneLoader(sources.open_source(seg), 1, None, predictions=sources.load_predictions(pred), readahead=2,
                     prepare=lambda scene: prepared.append(scene.frame.index) or scene.frame.index) as loader:
        assert len(loader) == 7
        item = loader.wait(0, timeout=30)  # position 0 = segment frame 1
        assert (item.position, item.scene.frame.index, item.prepared) == (0, 1, 1)
        assert len(item.scene.predictions) == 0
        item = loader.wait(4, timeout=30)
        assert item.scene.frame.index == 5 and len(item.scene.predictions) == 3
        loader.wait(6, timeout=30)
        assert set(loader.held()) <= {5, 6}  # the wanted frame, the one behind; nothing else is kept
        item = loader.wait(1, timeout=30)  # going back reads again
        np.testing.assert_allclose(item.scene.frame.boxes, make_frame(2).boxes)
        assert set(loader.held()) <= {0, 1, 2, 3}
        loader.set_prepare(lambda scene: -scene.frame.index)  # e.g. another colour mode
        assert loader.wait(1, timeout=30).prepared == -2
    assert prepared.count(1) == 1  # frame 1 read and prepared once while it was held


def test_loader_streams_the_checkpoint_and_keeps_its_outputs(tmp_path):
    from detector.viz.loader import SceneLoader

    seg = write_store(tmp_path / "store", 5)
    (seg / "0002.npz").write_bytes(b"garbage")  # an unreadable frame: shown empty, skipped by the stream
    ckpt = tmp_path / "oracle.ckpt"
    ckpt.write_bytes(b"x")
    dets = []

    def load(path, map_location="cpu"):
        dets.append(_OracleDetector())
        return dets[-1]

    globals()["_load_recorded_oracle"] = load
    with SceneLoader(sources.open_source(seg), 0, None, ckpt_path=str(ckpt),
                     ckpt_loader=f"{__name__}:_load_recorded_oracle", readahead=0,
                     state_voxels=lambda s: (np.full((s["frames_seen"], 3), 1.0), 0.5)) as loader:
        item = loader.wait(3, timeout=60)  # jumping ahead runs the detector over the frames before
        np.testing.assert_allclose(item.scene.predictions.boxes, item.scene.frame.boxes)
        assert len(item.scene.state.centers) == 3  # frames 0, 1, 3 seen
        assert [c[1:] for c in dets[0].calls] == [(True, 1_000_000), (False, 1_100_000), (False, 1_300_000)]
        broken = loader.wait(2, timeout=60)
        assert "0002.npz" in broken.scene.error and len(broken.scene.frame.points) == 0
        assert broken.scene.frame.timestamp_micros == 1_200_000  # from segment.json
        back = loader.wait(0, timeout=60)  # stepping back: the stream's output for frame 0, not rerun
        assert len(back.scene.state.centers) == 1 and len(dets[0].calls) == 3 and len(dets) == 1
        assert "UNREADABLE" in frame_caption(broken.scene, SceneOptions())


def test_non_finite_points_still_render_their_boxes(tmp_path):
    frame = make_frame(0)
    frame.points[::50, 0] = np.inf
    frame.points[1::50, 2] = np.nan
    preds = PredictedBoxes(np.concatenate([PRED_BOXES[:2], [[np.nan] * 7]]), [1, 2, 1], [0.9, 0.6, 0.7])
    scene = clean_scene(SceneFrame(frame, preds))
    assert len(scene.frame.points) == 4000 - 160 and len(scene.predictions) == 2
    assert scene.warnings == ("dropped 160 points with non-finite values",
                              "dropped 1 prediction with non-finite values")
    assert "WARNING: dropped 160 points" in frame_caption(scene, SceneOptions())
    cam = birds_eye_camera(320, 240, 15.0)
    with OffscreenView(cam, SceneOptions(line_width=3, show_scores=False)) as view:
        img = view.render_scene(SceneFrame(frame, preds))  # the uncleaned scene: the view cleans it

    def project(p):
        return cam.project(np.asarray(p)[None])[0][0]

    check_box_pixels(img, project, frame.boxes, GT_TYPES, GT_COLORS)
    check_box_pixels(img, project, PRED_BOXES[:2], PRED_TYPES[:2], PRED_COLORS)


def test_class_filter_nearest_labels_and_dashes():
    frame = make_frame(0)
    scene = SceneFrame(frame, PredictedBoxes(PRED_BOXES, PRED_TYPES, PRED_SCORES))
    opts = SceneOptions(classes=(1, 4), max_labels=1)
    boxes, types = visible_ground_truth(scene, opts)
    assert list(types) == [1, 4] and list(visible_predictions(scene, opts).types) == [1, 4]
    # the nearest shown prediction to (3, 12) is the cyclist; with a selection, the vehicle too
    assert [lab.text for lab in score_labels(scene, opts, near=(3.0, 12.0))] == ["CYC 0.05"]
    assert [lab.text for lab in score_labels(scene, opts, near=(3.0, 12.0), selected=0)] == ["VEH 0.90", "CYC 0.05"]
    seg = np.array([[[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]]])
    d = dashed(seg, dash=0.5)  # 4 m: 2 x 4 + 1 = 9 pieces of 0.44 m, the 5 even ones kept
    assert d.shape == (5, 2, 3)
    np.testing.assert_allclose(d[0, 0], [0, 0, 0]) and np.testing.assert_allclose(d[-1, 1], [4, 0, 0])
    np.testing.assert_allclose(d[2].mean(axis=0), [2, 0, 0])  # the middle is drawn


def write_label_only_tfrecord(path: Path, num_frames: int) -> Path:
    """Waymo Frame records without lasers (so no points), with pose, timestamp and the labels of
    ``make_frame``: enough for the reader and the viewer's TFRecord path."""
    from waymo_open_dataset import dataset_pb2

    from detector.data.tfrecord import write_tfrecord

    records = []
    for i in range(num_frames):
        f = make_frame(i)
        proto = dataset_pb2.Frame()
        proto.context.name = SEGMENT
        proto.timestamp_micros = f.timestamp_micros
        proto.pose.transform.extend(np.eye(4).reshape(-1).tolist())
        for box, t in zip(f.boxes, f.types):
            label = proto.laser_labels.add()
            b = label.box
            b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = map(float, box)
            label.type = int(t)
            label.id = f"obj{t}"
        records.append(proto.SerializeToString())
    write_tfrecord(path, records)
    return path


def test_tfrecord_input(predictions_file, tmp_path):
    record = write_label_only_tfrecord(tmp_path / "segment-x.tfrecord", 3)
    source = sources.open_source(record)
    assert (source.kind, source.name, source.num_frames) == ("tfrecord", SEGMENT, 3)
    np.testing.assert_allclose(source.load(2).boxes, make_frame(2).boxes, atol=1e-6)  # random access
    scenes = list(sources.iter_scene_frames(source, 1, 3, predictions=sources.load_predictions(predictions_file)))
    assert [s.frame.index for s in scenes] == [1, 2] and [len(s.predictions) for s in scenes] == [0, 3]
    np.testing.assert_allclose(scenes[1].frame.boxes, make_frame(2).boxes, atol=1e-6)
    out = tmp_path / "rec.gif"
    assert run_cfg(f"input={record}", "headless=true", f"out={out}", "width=96", "height=64",
                   "renderer=matplotlib").frames == 3
    data = bytearray(record.read_bytes())
    data[-1] ^= 0xFF  # last record's data CRC
    (tmp_path / "bad.tfrecord").write_bytes(bytes(data))
    from detector.data.tfrecord import RecordError

    with pytest.raises(RecordError, match="bad.tfrecord"):
        run_cfg(f"input={tmp_path / 'bad.tfrecord'}", "headless=true", f"out={tmp_path / 'bad.gif'}")
