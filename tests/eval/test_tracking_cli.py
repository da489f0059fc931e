"""``python -m detector.metrics GT PRED --tracking``: the table and JSON of the tracking metrics, and the
files it refuses (ids absent or partial, repeated ground-truth ids) or warns about (repeated prediction ids)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector import metrics
from detector.eval import ObjectsWriter
from detector.eval.submission import objects_to_frames, read_objects
from detector.eval.tracking_metrics import evaluate_tracking_frames
from tests.helpers.faults import assert_one_line_error

CONTEXT = "1234_100_000_120_000"


def _boxes(k: int, f: int) -> np.ndarray:
    return np.array([[5.0 + 8 * i + 0.5 * f, 2.0, 0.8, 4.5, 1.9, 1.6, 0.1] for i in range(k)])


def _write(tmp_path, pred_ids=None, gt_ids=None, frames=4, k=3):
    gt, pred = tmp_path / "gt.bin", tmp_path / "pred.bin"
    with ObjectsWriter(gt) as g, ObjectsWriter(pred) as p:
        for f in range(frames):
            ts = 1_000_000 + 100_000 * f
            boxes = _boxes(k, f)
            ids = [f"obj{i}" for i in range(k)] if gt_ids is None else gt_ids(f)
            g.add_ground_truth(CONTEXT, ts, boxes, np.ones(k), np.full(k, 50), np.ones(k), ids, np.full(k, 1))
            pids = [str(i + (f >= 2)) for i in range(k)] if pred_ids is None else pred_ids(f)  # a switch at f 2
            p.add_detections(CONTEXT, ts, boxes, np.full(k, 0.9), np.ones(k), pids)
    return gt, pred


def _run(capsys, *args):
    code = metrics.main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_table_and_json_equal_the_api(tmp_path, capsys):
    gt, pred = _write(tmp_path)
    code, out, err = _run(capsys, gt, pred, "--tracking", "--json", tmp_path / "t.json")
    assert code == 0 and err == "", err
    assert "4 frames of 1 sequences, 12 ground-truth objects, 12 predictions" in out
    assert "MOTA" in out and "MISMATCH" in out
    data = json.loads((tmp_path / "t.json").read_text())
    ref = evaluate_tracking_frames(objects_to_frames(read_objects(gt), tracking=True),
                                   objects_to_frames(read_objects(pred), tracking=True)).compute()
    assert data.keys() == ref.keys() and all(data[k] == pytest.approx(ref[k]) for k in ref)
    veh = data["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"]
    assert set(veh) == {"MOTA", "MOTP", "MISS", "MISMATCH", "FP"}
    # ids 0,1,2 become 1,2,3 at frame 2: each object changes its prediction id once
    assert veh["MISMATCH"] == pytest.approx(3 / 12) and veh["MOTA"] == pytest.approx(0.75)
    assert "RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_1" in data


def test_files_without_ids_are_refused(tmp_path, capsys):
    gt, pred = _write(tmp_path, pred_ids=lambda f: [""] * 3)
    code, _, err = _run(capsys, gt, pred, "--tracking")
    assert_one_line_error(code, err, str(pred), "no object has an id", prefix="metrics")


def test_a_missing_id_names_file_frame_and_object(tmp_path, capsys):
    gt, pred = _write(tmp_path, pred_ids=lambda f: ["a", "" if f == 1 else "b", "c"])
    code, _, err = _run(capsys, gt, pred, "--tracking")
    assert_one_line_error(code, err, str(pred), "prediction 1 of frame", repr(CONTEXT), "1100000", "has no id",
                          prefix="metrics")


def test_a_repeated_ground_truth_id_is_refused(tmp_path, capsys):
    gt, pred = _write(tmp_path, gt_ids=lambda f: ["x", "x" if f == 3 else "y", "z"])
    code, _, err = _run(capsys, gt, pred, "--tracking")
    assert_one_line_error(code, err, str(gt), "ground-truth id 'x' repeats", "1300000", prefix="metrics")


def test_a_repeated_prediction_id_is_warned_about_and_strict_refuses_it(tmp_path, capsys):
    gt, pred = _write(tmp_path, pred_ids=lambda f: ["a", "a", "c"] if f == 2 else ["a", "b", "c"])
    code, out, err = _run(capsys, gt, pred, "--tracking", "--json", tmp_path / "t.json")
    assert code == 0
    assert "warning:" in err and "1 predictions repeat an id" in err and "'a'" in err and "1200000" in err
    # scored as the official computation: the repeated one takes no part (a miss, no false positive)
    veh = json.loads((tmp_path / "t.json").read_text())["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"]
    assert veh["MISS"] == pytest.approx(1 / 12) and veh["FP"] == 0.0
    code, _, err = _run(capsys, gt, pred, "--tracking", "--strict")
    assert_one_line_error(code, err, "repeat an id", "(--strict)", prefix="metrics")


def test_plot_does_not_go_with_tracking(tmp_path, capsys):
    gt, pred = _write(tmp_path)
    code, _, err = _run(capsys, gt, pred, "--tracking", "--plot", tmp_path / "p.png")
    assert_one_line_error(code, err, "--plot", prefix="metrics")
