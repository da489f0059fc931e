"""Leaderboard files (metrics_pb2.Objects): round trip, frame keys, bad files, and the CLI."""

import json
import os

import numpy as np
import pytest
from waymo_open_dataset import dataset_pb2
from waymo_open_dataset.protos import metrics_pb2

from detector import metrics as cli
from detector.eval import (
    SubmissionError,
    WaymoMetrics,
    detections_to_objects,
    evaluate_objects,
    objects_to_frames,
    read_objects,
    write_objects,
)
from tests.helpers.metric_cases import synthetic_frames
from tests.helpers.paths import WAYMO_FAKE_DIR

FAKE_DIR = WAYMO_FAKE_DIR


def _synthetic_files(tmp_path, n=12, seed=5):
    """Ground-truth and prediction files of a few synthetic frames, and the frames themselves."""
    frames = list(synthetic_frames(n, 15, 40, seed=seed))
    gt, pred = metrics_pb2.Objects(), metrics_pb2.Objects()
    for f in frames:
        ctx, ts = f.key
        for box, typ, npts, diff in zip(f.gt_boxes, f.gt_types, f.gt_num_points, f.gt_difficulty):
            obj = gt.objects.add(context_name=ctx, frame_timestamp_micros=ts)
            b = obj.object.box
            b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = box.tolist()
            obj.object.type = int(typ)
            obj.object.num_lidar_points_in_box = int(npts)
            obj.object.detection_difficulty_level = int(diff)
        objs = detections_to_objects(ctx, ts, f.pred_boxes, f.pred_scores, f.pred_types)
        for o, nlz in zip(objs, f.pred_overlap_nlz):
            o.overlap_with_nlz = bool(nlz)
        pred.objects.extend(objs)
    write_objects(tmp_path / "gt.bin", gt)
    write_objects(tmp_path / "pred.bin", pred)
    return frames


def test_round_trip_and_evaluation_match_the_array_api(tmp_path):
    frames = _synthetic_files(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["gt.bin", "pred.bin"]  # no temporary files left
    pred = read_objects(tmp_path / "pred.bin")
    first = pred.objects[0]
    f0 = frames[0]
    assert first.context_name == f0.key[0] and first.frame_timestamp_micros == f0.key[1]
    assert first.object.box.center_x == pytest.approx(f0.pred_boxes[0, 0])
    assert first.score == pytest.approx(f0.pred_scores[0])
    grouped = objects_to_frames(pred)
    assert len(grouped) == len(frames)
    np.testing.assert_allclose(grouped[(f"{f0.key[0]}_0", f0.key[1])].boxes, f0.pred_boxes)

    from_files = evaluate_objects(read_objects(tmp_path / "gt.bin"), pred)
    direct = WaymoMetrics()
    for f in frames:
        direct.add_frame(*f.args())
    for name, v in direct.compute().items():
        assert from_files[name]["AP"] == pytest.approx(v["AP"], abs=1e-6), name
        assert from_files[name]["APH"] == pytest.approx(v["APH"], abs=1e-6), name


def test_frame_key_includes_the_camera():
    objs = detections_to_objects("ctx", 7, np.ones((2, 7)), [0.5, 0.6], [1, 2])
    objs[1].camera_name = dataset_pb2.CameraName.FRONT
    keys = set(objects_to_frames(objs))
    assert keys == {("ctx_0", 7), ("ctx_1", 7)}
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        detections_to_objects("ctx", 7, np.ones((2, 7)), [0.5], [1, 2])


def test_bad_files_are_named(tmp_path):
    frame = tmp_path / "frame.bin"
    frame.write_bytes(dataset_pb2.Frame(timestamp_micros=5, context=dataset_pb2.Context(name="x")).SerializeToString())
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xfe not a proto at all")
    label = tmp_path / "label.bin"  # parses, but the objects have no box and no context
    label.write_bytes(metrics_pb2.Objects(objects=[metrics_pb2.Object(score=0.5)]).SerializeToString())
    for path in (frame, junk, label, tmp_path / "missing.bin"):
        with pytest.raises(SubmissionError, match=str(path.name)):
            read_objects(path)


def test_cli_table_json_plot_and_errors(tmp_path, capsys):
    _synthetic_files(tmp_path)
    out_json, out_png = tmp_path / "m.json", tmp_path / "pr.png"
    rc = cli.main([str(tmp_path / "gt.bin"), str(tmp_path / "pred.bin"), "--json", str(out_json),
                   "--plot", str(out_png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "VEHICLE     LEVEL_1" in printed and "[30, 50)" in printed
    results = json.loads(out_json.read_text())
    assert set(results["RANGE_TYPE_PEDESTRIAN_[30, 50)_LEVEL_2"]) == {"AP", "APH"}
    assert 0.0 < results["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] <= 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "notes.txt").write_text("hello")
    assert cli.main([str(tmp_path / "notes.txt"), str(tmp_path / "pred.bin")]) == 2
    assert "notes.txt: not a metrics_pb2.Objects file" in capsys.readouterr().err
    no_points = metrics_pb2.Objects(objects=detections_to_objects("ctx", 1, np.ones((1, 7)), [0.5], [1]))
    write_objects(tmp_path / "swapped.bin", no_points)
    assert cli.main([str(tmp_path / "swapped.bin"), str(tmp_path / "pred.bin")]) == 2
    assert "swapped.bin: no object has num_lidar_points_in_box > 0" in capsys.readouterr().err


@pytest.mark.skipif(not FAKE_DIR.exists(), reason=f"{FAKE_DIR} absent")
def test_cli_on_the_fake_files(tmp_path, capsys):
    from tests.eval.test_metrics import OFFICIAL_FAKE

    out = tmp_path / "fake.json"
    assert cli.main([str(FAKE_DIR / "fake_ground_truths.bin"), str(FAKE_DIR / "fake_predictions.bin"),
                     "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == list(OFFICIAL_FAKE)
    for name, (ap, aph) in OFFICIAL_FAKE.items():
        assert (results[name]["AP"] == pytest.approx(ap, abs=1e-6)
                and results[name]["APH"] == pytest.approx(aph, abs=1e-6))
    assert "20 frames" in capsys.readouterr().out
