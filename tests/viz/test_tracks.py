"""The viewer shows tracks: ids in the labels, trails through a track's earlier centres (in the current
vehicle frame), drawn by the bird's-eye renderer, read from a tracking .bin."""

import math

import numpy as np

from detector.data.frame import Frame
from detector.eval import ObjectsWriter
from detector.viz.bev import BevFraming, render_bev
from detector.viz.scene import PredictedBoxes, SceneFrame, SceneOptions, TrailMemory, score_labels, trail_segments
from detector.viz.sources import load_predictions
from tests.helpers.scenes import pose_matrix


def _scene(f, ids=("7", "9")):
    pose = pose_matrix(2.0 * f, 0.0, 0.1 * f)  # the ego drives and turns
    world = np.array([[10.0 + f, 5.0, 0.8, 1.0], [20.0, -5.0 - 0.5 * f, 0.8, 1.0]])
    local = world @ np.linalg.inv(pose).T
    boxes = np.c_[local[:, :3], np.tile([4.5, 2.0, 1.6, 0.0], (2, 1))]
    frame = Frame(np.zeros((0, 6)), pose, 100_000 * f, "seg", f)
    return SceneFrame(frame, PredictedBoxes(boxes, [1, 2], [0.9, 0.8], list(ids)))


def test_trails_follow_each_track_in_the_current_vehicle_frame():
    memory = TrailMemory(length=3)
    scenes = [memory.add(_scene(f)) for f in range(5)]
    assert [len(t) for t in scenes[0].predictions.trails] == [0, 0]
    last = scenes[-1]
    assert [len(t) for t in last.predictions.trails] == [3, 3]
    # the car's trail: its world centres of frames 1..3, seen from frame 4's pose
    inv = np.linalg.inv(last.frame.pose)
    want = np.array([[10.0 + f, 5.0, 0.8, 1.0] for f in (1, 2, 3)]) @ inv.T
    np.testing.assert_allclose(last.predictions.trails[0], want[:, :3], atol=1e-4)
    segs, colors = trail_segments(last.predictions)
    assert segs.shape == (6, 2, 3) and colors.shape == (6, 3)  # 3 earlier centres + this one, 2 tracks
    # a jump (not the next frame) starts the trails afresh
    assert [len(t) for t in memory.add(_scene(9)).predictions.trails] == [0, 0]


def test_labels_carry_the_id_and_filters_keep_ids_and_trails():
    scene = TrailMemory(3).add(_scene(0))
    texts = [lab.text for lab in score_labels(scene, SceneOptions())]
    assert texts == ["VEH 0.90 #7", "PED 0.80 #9"]
    kept = scene.predictions.above(0.85)
    assert kept.track_ids.tolist() == ["7"] and len(kept.trails) == 1


def test_bev_render_draws_the_trails():
    memory = TrailMemory(5)
    scenes = [memory.add(_scene(f)) for f in range(5)]
    framing = BevFraming(320, 240, 30.0)
    with_trails = render_bev(scenes[-1], SceneOptions(show_scores=False), framing)
    bare = SceneFrame(scenes[-1].frame, PredictedBoxes(scenes[-1].predictions.boxes, [1, 2], [0.9, 0.8]))
    without = render_bev(bare, SceneOptions(show_scores=False), framing)
    assert (with_trails != without).any(axis=2).sum() > 20


def test_a_tracking_bin_gives_ids_to_the_viewer(tmp_path):
    path = tmp_path / "pred.bin"
    with ObjectsWriter(path) as w:
        w.add_detections("seg", 0, np.array([[5.0, 0, 0.8, 4.5, 2, 1.6, math.pi]]), [0.9], [1], [42])
    boxes = load_predictions(path).by_frame[("seg", 0)]
    assert boxes.track_ids.tolist() == ["42"]
    with ObjectsWriter(tmp_path / "plain.bin") as w:
        w.add_detections("seg", 0, np.array([[5.0, 0, 0.8, 4.5, 2, 1.6, 0.0]]), [0.9], [1])
    assert load_predictions(tmp_path / "plain.bin").by_frame[("seg", 0)].track_ids is None
