"""Streaming pieces of evaluation: merging metric counts (DDP) and the frame-by-frame .bin writer."""

import numpy as np
import pytest

from detector.eval import ObjectsWriter, WaymoMetrics, evaluate_objects, read_objects
from tests.helpers.metric_cases import synthetic_frames


def _frames(n=40, seed=3):
    return list(synthetic_frames(n, gt_per_frame=12, pred_per_frame=30, seed=seed))


def test_merge_equals_one_pass():
    frames = _frames()
    whole = WaymoMetrics()
    a, b = WaymoMetrics(), WaymoMetrics()
    for i, f in enumerate(frames):
        whole.add_frame(*f.args())
        (a if i % 3 else b).add_frame(*f.args())
    merged = a.merge(b).compute()
    ref = whole.compute()
    assert merged.keys() == ref.keys()
    for k in ref:
        assert merged[k] == pytest.approx(ref[k], abs=1e-12), k
    assert ref["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] > 0


def test_merge_refuses_shared_frames():
    f = _frames(2)
    a, b = WaymoMetrics(), WaymoMetrics()
    a.add_frame(*f[0].args())
    b.add_frame(*f[0].args())
    with pytest.raises(ValueError, match="in both"):
        a.merge(b)


def test_objects_writer_round_trip_and_metrics(tmp_path):
    frames = _frames(20)
    ref = WaymoMetrics()
    with ObjectsWriter(tmp_path / "pred.bin") as pw, ObjectsWriter(tmp_path / "gt.bin") as gw:
        for f in frames:
            ctx, ts = f.key
            # the .bin path has no NLZ flag on predictions; score the in-memory path the same way
            ref.add_frame(f.key, f.gt_boxes, f.gt_types, f.gt_num_points, f.gt_difficulty, f.pred_boxes,
                          f.pred_scores, f.pred_types)
            pw.add_detections(ctx, ts, f.pred_boxes, f.pred_scores, f.pred_types)
            gw.add_ground_truth(ctx, ts, f.gt_boxes, f.gt_types, f.gt_num_points, f.gt_difficulty)
    pred, gt = read_objects(tmp_path / "pred.bin"), read_objects(tmp_path / "gt.bin")
    assert len(pred.objects) == sum(len(f.pred_boxes) for f in frames)
    assert len(gt.objects) == sum(len(f.gt_boxes) for f in frames)
    assert gt.objects[0].object.num_lidar_points_in_box == int(frames[0].gt_num_points[0])
    from_files = evaluate_objects(gt, pred)
    expected = ref.compute()
    for k in expected:
        assert from_files[k]["AP"] == pytest.approx(expected[k]["AP"], abs=1e-6), k


def test_objects_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ObjectsWriter(tmp_path / "pred.bin") as w:
            w.add_detections("ctx", 1, np.zeros((1, 7)) + 1, [0.5], [1])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
