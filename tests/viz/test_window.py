"""The interactive viewer as a person sees it: the real window of ``python -m detector.visualize`` on a
virtual display (its own Xvfb), driven with key presses (xdotool), checked on screenshots (xwd): black
background, box colours where the boxes project, the caption changing, stepping, playing, Home/End, and
a frame with non-finite points still showing its boxes. Skipped, with the reason, where Xvfb, xwd or
xdotool is missing (scripts/setup.sh installs them as root on Debian)."""

from __future__ import annotations

import numpy as np
import pytest

from detector.viz.scene import GT_COLORS, PRED_COLORS, TOP_EDGES, box_segments
from detector.viz.sources import open_source
from detector.viz.xdisplay import DisplayUnavailable, ViewerSession, VirtualDisplay, missing_tools
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.window import REPO, predictions_file, scene_pixels, wait_screen

_missing = missing_tools()
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"no virtual display: {', '.join(_missing)} not installed "
                                                       "(Debian: apt-get install xvfb x11-apps xdotool)")


def near_color(image: np.ndarray, uv, rgb, radius: int = 2, tol: int = 12) -> bool:
    u, v = int(round(uv[0])), int(round(uv[1]))
    patch = image[max(v - radius, 0):v + radius + 1, max(u - radius, 0):u + radius + 1].reshape(-1, 3)
    return bool(len(patch)) and bool(np.any(np.all(np.abs(patch.astype(int) - np.round(255 * np.asarray(rgb)))
                                                   <= tol, axis=1)))


def edge_hits(image, session, record, boxes, types, palette) -> tuple[int, int]:
    """(edges showing their class colour, edges checked): top-face edge midpoints inside the view."""
    if not len(boxes):
        return 0, 0
    segs = box_segments(boxes)
    mids = segs[:, list(TOP_EDGES)].mean(axis=2).reshape(-1, 3)
    uv = session.screen_xy(record, mids) - np.asarray(record["window_rect"][:2])
    x, y, w, h = record["scene_rect"]
    colors = np.repeat([palette[int(t)] for t in types], len(TOP_EDGES), axis=0)
    inside = (uv[:, 0] > x + 60) & (uv[:, 0] < x + w - 10) & (uv[:, 1] > y + 80) & (uv[:, 1] < y + h - 150)
    hits = sum(near_color(image, p, c) for p, c, ok in zip(uv, colors, inside) if ok)
    return hits, int(inside.sum())


@pytest.fixture(scope="module")
def segment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("window")
    _, store = make_tiny_dataset(tmp, segments=0, val_segments=1, frames=4, seed=1)
    seg = next((store / "validation").iterdir())
    # predictions 1.3 x the ground truth's footprint: their edges lie apart from the truth's
    pred = predictions_file(open_source(seg), tmp / "predictions.bin", scale=1.3)
    return seg, pred


def test_window_draws_steps_and_plays(segment, tmp_path):
    seg, pred = segment
    source = open_source(seg)
    try:
        display = VirtualDisplay(1200, 900)
    except DisplayUnavailable as e:
        pytest.skip(f"no virtual display: {e}")
    with display, ViewerSession(display, [f"input={seg}", f"predictions={pred}", "width=1100", "height=800",
                                          "fps=4"], tmp_path / "trace.jsonl", cwd=REPO,
                                log=tmp_path / "viewer.log") as session:
        first = session.wait_drawn(timeout=120)
        assert first["position"] == 0 and "frame 0" in first["caption"] and "pred" in first["caption"]
        assert first["held"] and max(first["held"]) <= 4  # the frame and its read-ahead only

        frame0 = source.load(0)
        scene_preds = [b for b in _pred_boxes(pred, frame0)]
        pb, pt = np.array([b[0] for b in scene_preds]), np.array([b[1] for b in scene_preds])

        def shows_frame(frame, record, min_share=0.6):
            def check(image):
                gt = edge_hits(image, session, record, frame.boxes, frame.types, GT_COLORS)
                return gt[1] >= 5 and gt[0] >= min_share * gt[1]
            return check

        image0, _ = wait_screen(session, first, shows_frame(frame0, first))
        view = scene_pixels(image0, first)
        # black background: the commonest colour of the 3D view is (0, 0, 0)
        colors, counts = np.unique(view.reshape(-1, 3), axis=0, return_counts=True)
        assert tuple(colors[np.argmax(counts)]) == (0, 0, 0) and counts.max() > 0.5 * view.shape[0] * view.shape[1]
        hits, checked = edge_hits(image0, session, first, pb, pt, PRED_COLORS)
        assert checked >= 5 and hits >= 0.6 * checked, (hits, checked)  # dashed predictions: midpoints drawn
        caption0 = view[:60, :360].copy()

        session.keys(first, "Right")  # next frame
        rec1 = session.wait_drawn(lambda r: r["position"] == 1, timeout=60)
        assert "frame 1" in rec1["caption"] and rec1["view_matrix"] == first["view_matrix"]  # the view is kept
        image1, _ = wait_screen(session, rec1, lambda im: not np.array_equal(scene_pixels(im, rec1)[:60, :360],
                                                                             caption0))
        wait_screen(session, rec1, shows_frame(source.load(1), rec1))

        session.keys(rec1, "space")  # play to the end (it stops there)
        n_before = len(session.records())
        session.wait_drawn(lambda r: r["position"] == 3 and r["playing"], timeout=60)
        played = [r["position"] for r in session.records()[n_before:]]
        assert played == sorted(played) and 2 in played, played
        last = session.wait_drawn(lambda r: not r["playing"], timeout=60)
        assert last["position"] == 3

        session.keys(last, "Home")
        assert session.wait_drawn(lambda r: r["position"] == 0, timeout=60)["position"] == 0
        session.keys(last, "End")
        rec_end = session.wait_drawn(lambda r: r["position"] == 3, timeout=60)
        session.keys(rec_end, "g")  # ground truth off: its colour leaves the picture
        off = session.wait_drawn(lambda r: not r["opts"]["show_gt"], timeout=60)
        frame3 = source.load(3)
        wait_screen(session, off, lambda im: edge_hits(im, session, off, frame3.boxes, frame3.types,
                                                       GT_COLORS)[0] <= 1)
        session.keys(off, "q")
        session.proc.wait(timeout=30)
        assert session.proc.returncode == 0, (tmp_path / "viewer.log").read_text()[-2000:]


def _pred_boxes(path, frame):
    from detector.viz.sources import load_predictions

    p = load_predictions(path).for_frame(frame)
    return list(zip(p.boxes, p.types))


def test_window_shows_boxes_of_a_frame_with_inf_points(tmp_path):
    """A frame whose points hold inf: the window still draws its boxes and says what it dropped."""
    from detector.data.frame import Frame
    from detector.data.frame_store import write_segment_meta

    seg = tmp_path / "validation" / "broken"
    seg.mkdir(parents=True)
    rng = np.random.default_rng(0)
    boxes = np.array([[10.0, 5.0, 0.8, 4.6, 2.0, 1.6, 0.3], [-8.0, -6.0, 0.8, 4.6, 2.0, 1.6, -0.5],
                      [5.0, -12.0, 0.9, 0.9, 0.9, 1.8, 0.0]], np.float32)
    types = np.array([1, 1, 2])
    for i in range(2):
        pts = rng.uniform([-30, -30, -0.2, 0, 0], [30, 30, 0.2, 1, 1], (3000, 5)).astype(np.float32)
        pts[::100, 0] = np.inf
        Frame(points=pts, pose=np.eye(4), timestamp_micros=1_000_000 + 100_000 * i, segment="broken", index=i,
              boxes=boxes, types=types, ids=["a", "b", "c"], num_points=[9, 9, 9],
              difficulty=[1, 1, 1]).save_npz(seg / f"{i:04d}.npz")
    write_segment_meta(seg, segment="broken", split="validation", timestamps_micros=[1_000_000, 1_100_000])
    try:
        display = VirtualDisplay(1000, 800)
    except DisplayUnavailable as e:
        pytest.skip(f"no virtual display: {e}")
    with display, ViewerSession(display, [f"input={seg}", "width=900", "height=700", "range_m=20"],
                                tmp_path / "trace.jsonl", cwd=REPO, log=tmp_path / "viewer.log") as session:
        rec = session.wait_drawn(timeout=120)
        assert "WARNING: dropped 30 points with non-finite values" in rec["caption"]
        def all_boxes(image):
            hits, checked = edge_hits(image, session, rec, boxes, types, GT_COLORS)
            return checked >= 8 and hits >= checked - 1

        wait_screen(session, rec, all_boxes)
