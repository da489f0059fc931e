"""Faults in the files the metrics CLI scores: NaN/inf values, non-positive sizes, an empty ground
truth, predictions of other frames, an output folder that cannot be written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from detector import metrics
from detector.eval.submission import detections_to_objects, ground_truth_to_objects, write_objects
from detector.eval.waymo_metrics import evaluate_objects
from tests.helpers.faults import assert_one_line_error, leftovers, read_only
from tests.helpers.paths import REPO_ROOT

CONTEXT = "1234_100_000_120_000"
TIMESTAMPS = (1_000_000, 1_100_000)


def _boxes(k: int) -> np.ndarray:
    return np.array([[5.0 + 6 * i, 2.0, 0.8, 4.5, 1.9, 1.6, 0.1 * i] for i in range(k)])


def _write(tmp_path, name, frames, ground_truth):
    objs = []
    for ts, boxes in frames:
        if ground_truth:
            objs += ground_truth_to_objects(CONTEXT, ts, boxes, np.ones(len(boxes)), np.full(len(boxes), 50),
                                            np.ones(len(boxes)))
        else:
            objs += detections_to_objects(CONTEXT, ts, boxes, np.full(len(boxes), 0.9), np.ones(len(boxes)))
    path = tmp_path / name
    write_objects(path, objs)
    return path


@pytest.fixture
def files(tmp_path):
    gt = _write(tmp_path, "gt.bin", [(ts, _boxes(3)) for ts in TIMESTAMPS], True)
    pred = _write(tmp_path, "pred.bin", [(ts, _boxes(3)) for ts in TIMESTAMPS], False)
    return gt, pred


def _run(capsys, *args):
    code = metrics.main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_clean_files_score_perfectly(files, capsys):
    code, out, err = _run(capsys, *files)
    assert code == 0 and err == "" and "2 frames, 6 ground-truth objects, 6 predictions" in out


@pytest.mark.parametrize("field,value,reason", [
    (0, np.nan, "non-finite box center_x"), (5, np.inf, "non-finite box height"),
    (3, -1.0, "box size length=-1 is not positive"), (4, 0.0, "box size width=0 is not positive"),
])
def test_invalid_prediction_box_names_file_frame_and_index(tmp_path, files, capsys, field, value, reason):
    gt, _ = files
    boxes = _boxes(3)
    boxes[2, field] = value
    pred = _write(tmp_path, "bad.bin", [(TIMESTAMPS[0], _boxes(3)), (TIMESTAMPS[1], boxes)], False)
    code, out, err = _run(capsys, gt, pred)
    assert_one_line_error(code, err, str(pred), f"prediction 2 of frame ('{CONTEXT}_0', {TIMESTAMPS[1]})", reason,
                          "--skip-invalid", prefix="metrics")
    assert out == ""


def test_nonfinite_score_is_refused(tmp_path, files, capsys):
    gt, _ = files
    objs = detections_to_objects(CONTEXT, TIMESTAMPS[0], _boxes(2), [0.5, np.nan], [1, 1])
    pred = tmp_path / "nan_score.bin"
    write_objects(pred, objs)
    code, out, err = _run(capsys, gt, pred)
    assert_one_line_error(code, err, str(pred), f"prediction 1 of frame ('{CONTEXT}_0', {TIMESTAMPS[0]})",
                          "non-finite score nan", prefix="metrics")


def test_invalid_ground_truth_is_refused(tmp_path, files, capsys):
    boxes = _boxes(3)
    boxes[0, 3] = -4.5
    gt = _write(tmp_path, "bad_gt.bin", [(TIMESTAMPS[0], boxes)], True)
    code, out, err = _run(capsys, gt, files[1])
    assert_one_line_error(code, err, str(gt), "ground-truth object 0 of frame", "length=-4.5", prefix="metrics")


def test_skip_invalid_leaves_them_out_and_counts(tmp_path, files, capsys):
    gt, pred = files
    boxes = _boxes(4)
    boxes[3, 0] = np.nan
    bad = _write(tmp_path, "bad.bin", [(TIMESTAMPS[0], _boxes(3)), (TIMESTAMPS[1], boxes)], False)
    out_json = tmp_path / "m.json"
    code, out, err = _run(capsys, gt, bad, "--skip-invalid", "--json", out_json)
    assert code == 0 and f"{bad}: left out 1 invalid objects (--skip-invalid)" in err
    from detector.eval.submission import read_objects

    expected = evaluate_objects(read_objects(gt), read_objects(pred))
    got = json.loads(out_json.read_text())
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k]) for k in got)
    assert got["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] == pytest.approx(1.0)


def test_empty_ground_truth_warns_or_fails_strict(tmp_path, files, capsys):
    empty = tmp_path / "empty.bin"
    write_objects(empty, [])
    code, out, err = _run(capsys, empty, files[1])
    assert code == 0 and f"warning: {empty}: the ground truth holds no object" in err
    assert "6 predictions on 2 of 2 prediction frames match no ground-truth frame" in err
    code, out, err = _run(capsys, empty, files[1], "--strict")
    assert_one_line_error(code, err, str(empty), "holds no object", "(--strict)", prefix="metrics")


@pytest.mark.parametrize("shift", ["timestamp", "context"])
def test_predictions_of_other_frames_warn_with_counts(tmp_path, files, capsys, shift):
    gt, _ = files
    objs = detections_to_objects(CONTEXT, TIMESTAMPS[0], _boxes(3), np.full(3, 0.9), np.ones(3))
    other = detections_to_objects(CONTEXT if shift == "timestamp" else "other_1_000_21_000",
                                  TIMESTAMPS[1] + (7 if shift == "timestamp" else 0), _boxes(2), np.full(2, 0.9),
                                  np.ones(2))
    pred = tmp_path / "shifted.bin"
    write_objects(pred, objs + other)
    code, out, err = _run(capsys, gt, pred)
    assert code == 0 and (f"warning: {pred}: 2 predictions on 1 of 2 prediction frames "
                          "match no ground-truth frame") in err
    code, out, err = _run(capsys, gt, pred, "--strict")
    assert_one_line_error(code, err, str(pred), "match no ground-truth frame", prefix="metrics")


def test_json_into_a_read_only_folder_fails_before_the_table(tmp_path, files, capsys):
    with read_only(tmp_path / "ro") as ro:
        code, out, err = _run(capsys, *files, "--json", ro / "m.json")
        assert_one_line_error(code, err, str(ro / "m.json"), "Read-only file system", prefix="metrics")
        assert out == "" and not list(ro.iterdir())


def test_json_into_a_missing_folder(tmp_path, files, capsys):
    code, out, err = _run(capsys, *files, "--json", tmp_path / "nope" / "m.json")
    assert_one_line_error(code, err, str(tmp_path / "nope"), "no such folder", prefix="metrics")
    assert not leftovers(tmp_path)


def test_real_process_nan_box_exit_2_no_traceback(tmp_path, files):
    """The same contract seen from a shell: exit status 2, one line on stderr."""
    boxes = _boxes(1)
    boxes[0, 6] = np.inf
    pred = _write(tmp_path, "inf.bin", [(TIMESTAMPS[0], boxes)], False)
    r = subprocess.run([sys.executable, "-m", "detector.metrics", str(files[0]), str(pred)], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert_one_line_error(r.returncode, r.stderr, str(pred), "non-finite box heading", prefix="metrics")
