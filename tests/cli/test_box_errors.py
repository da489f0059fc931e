"""scripts/bench/box_errors.py on hand-made ground truth and predictions with known answers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np

from detector.eval import detections_to_objects, write_objects
from tests.helpers.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location("box_errors", Path(REPO_ROOT) / "scripts" / "bench" / "box_errors.py")
box_errors = importlib.util.module_from_spec(_spec)
sys.modules["box_errors"] = box_errors
_spec.loader.exec_module(box_errors)


def _write(path: Path, boxes: np.ndarray, types: list[int], points: int | None = None) -> None:
    objects = detections_to_objects("seg", 1_000, boxes, np.linspace(0.9, 0.5, len(boxes)), types)
    for o in objects:
        if points is not None:
            o.object.num_lidar_points_in_box = points
    write_objects(path, objects)


def test_matches_fronts_and_errors_of_known_boxes(tmp_path, capsys):
    truth = np.array([[10.0, 0.0, 0.8, 4.5, 2.0, 1.6, 0.3],
                      [20.0, 5.0, 0.8, 4.5, 2.0, 1.6, -1.0],
                      [-15.0, 8.0, 0.8, 4.5, 2.0, 1.6, 2.0],
                      [5.0, -6.0, 0.9, 0.8, 0.8, 1.8, 0.0]])
    pred = truth.copy()
    pred[1, 6] += math.pi  # the same box, its front the other way
    pred[2, 0] += 1.2 * math.cos(2.0)  # 1.2 m along its axis: IoU 3.3 / 5.7, below 0.7
    pred[2, 1] += 1.2 * math.sin(2.0)
    _write(tmp_path / "ground_truth.bin", truth, [1, 1, 1, 2], points=50)
    _write(tmp_path / "predictions.bin", pred, [1, 1, 1, 2])

    result = box_errors.main([str(tmp_path), "--thresholds", "0.5", "0.7", "--out", str(tmp_path / "e.json")])
    veh = result["errors"]["VEHICLE"]
    assert veh["matches"] == 3
    assert abs(veh["front_right"] - 2 / 3) < 1e-9
    assert abs(veh["at_official_iou"] - 2 / 3) < 1e-9
    assert abs(veh["median_abs_below"]["along"] - 1.2) < 1e-6  # the one box below 0.7
    assert veh["still_front_right"] is None  # these labels carry no speed
    assert result["errors"]["PEDESTRIAN"]["front_right"] == 1.0
    assert result["ap"]["VEHICLE"]["0.5"] > result["ap"]["VEHICLE"]["0.7"]  # the shifted car counts at 0.5 only
    assert json.loads((tmp_path / "e.json").read_text())["errors"]["VEHICLE"]["matches"] == 3
    assert "front right 0.667" in capsys.readouterr().out
