"""scripts/bench/headroom.py on hand-made labels and predictions with known answers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.eval import WaymoMetrics
from detector.eval.occlusion import FrameLabels
from detector.eval.submission import FrameObjects
from tests.helpers.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location("headroom", Path(REPO_ROOT) / "scripts" / "bench" / "headroom.py")
headroom = importlib.util.module_from_spec(_spec)
sys.modules["headroom"] = headroom
_spec.loader.exec_module(headroom)

CAR = (4.5, 2.0, 1.6)


def _pose(x: float) -> np.ndarray:
    p = np.eye(4)
    p[0, 3] = x
    return p


def _frame(index: int, objects: dict[str, tuple[float, float, int]], ego_x: float = 0.0) -> FrameLabels:
    """``objects``: id -> (x, y, num_points), vehicles heading 0 in the vehicle frame of an ego at ``ego_x``."""
    boxes = np.array([[x, y, 0.8, *CAR, 0.0] for x, y, _ in objects.values()]).reshape(-1, 7)
    n = len(objects)
    return FrameLabels(segment="seg", index=index, timestamp_micros=100_000 * index, pose=_pose(ego_x),
                       boxes=boxes, types=np.ones(n, np.int64), ids=np.array(list(objects), str),
                       num_points=np.array([p for *_, p in objects.values()], np.int64),
                       difficulty=np.zeros(n, np.int64))


def _preds(boxes: np.ndarray, scores: list[float]) -> FrameObjects:
    n = len(boxes)
    return FrameObjects(boxes=np.asarray(boxes, float).reshape(-1, 7), types=np.ones(n, np.int64),
                        scores=np.array(scores, np.float32), overlap_nlz=np.zeros(n, bool),
                        num_points=np.zeros(n, np.int64), difficulty=np.zeros(n, np.int64))


def test_speeds_follow_the_ids_through_the_ego_poses():
    # the ego drives 1 m a frame; "parked" stays put in the world, "driving" moves 1.5 m a frame with
    # the ego's +1 m (so +0.5 m in the vehicle frame); "alone" is in no other frame
    frames = [_frame(0, {"parked": (10.0, 0.0, 80), "driving": (0.0, 5.0, 80)}, ego_x=0.0),
              _frame(1, {"parked": (9.0, 0.0, 80), "driving": (0.5, 5.0, 80), "alone": (3.0, 3.0, 80)}, ego_x=1.0)]
    v = headroom.speeds(frames)
    assert v[0] == pytest.approx([0.0, 15.0])  # the first frame looks one frame ahead
    assert v[1][:2] == pytest.approx([0.0, 15.0])
    assert np.isnan(v[1][2])


def test_bins_split_the_objects_and_the_loose_iou_counts_a_poor_fit():
    # per frame: a sparse car found exactly, a dense car found 1.2 m off (IoU 0.57: below 0.7, above 0.1),
    # a 3-point car (LEVEL_2: in no row); all still
    frames = [_frame(i, {"sparse": (10.0, 0.0, 10), "dense": (-10.0, 5.0, 300), "tiny": (30.0, 9.0, 3)})
              for i in range(3)]
    preds = {}
    for f in frames:
        boxes = f.boxes[:2].copy()
        boxes[1, 0] += 1.2
        preds[f.key] = _preds(boxes, [0.9, 0.8])
    got = headroom.table(frames, {"m": preds}, bins=[6, 20, 150], loose_iou=0.1, moving=1.0, ranges=[20.0])
    assert got["bins"] == ["all", "6-19", "20-149", ">=150", "still (< 1 m/s)", "moving (>= 1 m/s)", "0-20 m", ">=20 m"]
    rows = got["models"]["m"]
    veh = {b: rows[b]["VEHICLE"] for b in got["bins"]}
    assert veh["all"]["objects"] == 6 and veh["6-19"]["objects"] == 3 and veh["20-149"]["objects"] == 0
    assert veh["6-19"]["official"] == pytest.approx(1.0)
    assert veh[">=150"]["official"] == pytest.approx(0.0) and veh[">=150"]["iou 0.1"] == pytest.approx(1.0)
    assert veh["all"]["official"] == pytest.approx(0.5) and veh["all"]["iou 0.1"] == pytest.approx(1.0)
    full = WaymoMetrics()  # the row "all" is the official LEVEL_1
    for f in frames:
        p = preds[f.key]
        full.add_frame(f.key, f.boxes, f.types, f.num_points, f.difficulty, p.boxes, p.scores, p.types)
    assert veh["all"]["official"] == pytest.approx(full.compute()["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"])
    assert veh["still (< 1 m/s)"]["objects"] == 6 and veh["moving (>= 1 m/s)"]["objects"] == 0
    assert veh["0-20 m"]["objects"] == 6 and veh[">=20 m"]["objects"] == 0  # the 3-point car at 31 m is LEVEL_2
    assert "| 6-19 | 3 | 100.0 / 100.0 |" in headroom.markdown(got)


def test_bins_must_increase():
    with pytest.raises(SystemExit, match="increasing"):
        headroom.bin_edges([20, 6])
