"""Waymo detection metrics: the official op's values on the fake files, cases with known answers,
streaming invariance and input errors."""


import numpy as np
import pytest
from waymo_open_dataset.protos import breakdown_pb2

from detector.eval import WaymoMetrics, default_config, evaluate_objects, mean_average_precision, read_objects
from tests.helpers.metric_cases import synthetic_frames
from tests.helpers.paths import WAYMO_FAKE_DIR

FAKE_DIR = WAYMO_FAKE_DIR

# AP, APH of the official op (waymo-open-dataset-tf-2-12-0==1.6.7, py_metrics_ops.detection_metrics)
# on fake_ground_truths.bin / fake_predictions.bin with the official tool's config and ground-truth
# rules, printed by:  .venv/bin/python scripts/bench/metrics.py --official-fake-constants
OFFICIAL_FAKE = {
    "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1": (0.2096817046403885, 0.16353964805603027),
    "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2": (0.20680946111679077, 0.1612301468849182),
    "OBJECT_TYPE_TYPE_PEDESTRIAN_LEVEL_1": (0.1292581856250763, 0.09849616140127182),
    "OBJECT_TYPE_TYPE_PEDESTRIAN_LEVEL_2": (0.12513598799705505, 0.09534379839897156),
    "OBJECT_TYPE_TYPE_SIGN_LEVEL_1": (0.09262776374816895, 0.06359384953975677),
    "OBJECT_TYPE_TYPE_SIGN_LEVEL_2": (0.06792702525854111, 0.046635471284389496),
    "OBJECT_TYPE_TYPE_CYCLIST_LEVEL_1": (0.0, 0.0),
    "OBJECT_TYPE_TYPE_CYCLIST_LEVEL_2": (0.0, 0.0),
    "RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_1": (0.15472730994224548, 0.12992726266384125),
    "RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_2": (0.15472730994224548, 0.12992726266384125),
    "RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_1": (0.2766360938549042, 0.23332639038562775),
    "RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_2": (0.27407461404800415, 0.23116593062877655),
    "RANGE_TYPE_VEHICLE_[50, +inf)_LEVEL_1": (0.2185959368944168, 0.15550127625465393),
    "RANGE_TYPE_VEHICLE_[50, +inf)_LEVEL_2": (0.2121877521276474, 0.1509629189968109),
    "RANGE_TYPE_PEDESTRIAN_[0, 30)_LEVEL_1": (0.19352023303508759, 0.15542784333229065),
    "RANGE_TYPE_PEDESTRIAN_[0, 30)_LEVEL_2": (0.19352023303508759, 0.15542784333229065),
    "RANGE_TYPE_PEDESTRIAN_[30, 50)_LEVEL_1": (0.14420056343078613, 0.10313094407320023),
    "RANGE_TYPE_PEDESTRIAN_[30, 50)_LEVEL_2": (0.13493070006370544, 0.0966024249792099),
    "RANGE_TYPE_PEDESTRIAN_[50, +inf)_LEVEL_1": (0.09855480492115021, 0.07798577100038528),
    "RANGE_TYPE_PEDESTRIAN_[50, +inf)_LEVEL_2": (0.09605440497398376, 0.07589101791381836),
    "RANGE_TYPE_SIGN_[0, 30)_LEVEL_1": (0.10617512464523315, 0.07169289886951447),
    "RANGE_TYPE_SIGN_[0, 30)_LEVEL_2": (0.0651952400803566, 0.04397165775299072),
    "RANGE_TYPE_SIGN_[30, 50)_LEVEL_1": (0.1552795022726059, 0.11776281148195267),
    "RANGE_TYPE_SIGN_[30, 50)_LEVEL_2": (0.13586954772472382, 0.10304246097803116),
    "RANGE_TYPE_SIGN_[50, +inf)_LEVEL_1": (0.07527602463960648, 0.050751835107803345),
    "RANGE_TYPE_SIGN_[50, +inf)_LEVEL_2": (0.05963423475623131, 0.04020599275827408),
    "RANGE_TYPE_CYCLIST_[0, 30)_LEVEL_1": (0.0, 0.0),
    "RANGE_TYPE_CYCLIST_[0, 30)_LEVEL_2": (0.0, 0.0),
    "RANGE_TYPE_CYCLIST_[30, 50)_LEVEL_1": (0.0, 0.0),
    "RANGE_TYPE_CYCLIST_[30, 50)_LEVEL_2": (0.0, 0.0),
    "RANGE_TYPE_CYCLIST_[50, +inf)_LEVEL_1": (0.0, 0.0),
    "RANGE_TYPE_CYCLIST_[50, +inf)_LEVEL_2": (0.0, 0.0),
}

VEH = "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"
VEH2 = "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"
CAR = np.array([20.0, 5.0, 1.0, 4.5, 2.0, 1.6, 0.4])


def _shift(box, along=0.0, z=0.0, heading=0.0, width=None):
    out = np.array(box, dtype=np.float64)
    out[0] += along * np.cos(out[6])
    out[1] += along * np.sin(out[6])
    out[2] += z
    out[6] += heading
    if width is not None:
        out[4] = width
    return out


def _one_frame(gt_boxes, gt_types, pred_boxes, pred_scores, pred_types, *, points=None, difficulty=None,
               nlz=None, config=None):
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 7)
    m = WaymoMetrics(config)
    m.add_frame("frame", gt_boxes, gt_types, np.full(len(gt_boxes), 100) if points is None else points,
                np.zeros(len(gt_boxes), int) if difficulty is None else difficulty,
                np.asarray(pred_boxes, np.float64).reshape(-1, 7), pred_scores, pred_types, nlz)
    return m


@pytest.mark.skipif(not FAKE_DIR.exists(), reason=f"{FAKE_DIR} absent")
def test_fake_files_equal_the_official_op():
    results = evaluate_objects(read_objects(FAKE_DIR / "fake_ground_truths.bin"),
                               read_objects(FAKE_DIR / "fake_predictions.bin"))
    assert list(results) == list(OFFICIAL_FAKE)  # the official names, in the official order
    for name, (ap, aph) in OFFICIAL_FAKE.items():
        assert results[name]["AP"] == pytest.approx(ap, abs=1e-6), name
        assert results[name]["APH"] == pytest.approx(aph, abs=1e-6), name


def test_perfect_and_empty_sides():
    m = _one_frame([CAR], [1], [CAR], [0.9], [1])
    curve = m.pr_curves()[VEH]
    assert curve.ap == pytest.approx(1.0, abs=1e-6) and curve.aph == pytest.approx(1.0, abs=1e-6)
    assert curve.tp[:91].tolist() == [1] * 91 and curve.tp[91:].tolist() == [0] * 10  # gone above 0.9
    assert curve.fn[91:].tolist() == [1] * 10

    no_pred = _one_frame([CAR, _shift(CAR, 10)], [1, 1], [], [], [])
    c = no_pred.pr_curves()[VEH]
    assert c.ap == 0.0 and c.fn.tolist() == [2] * 101 and not c.tp.any() and not c.fp.any()

    no_gt = _one_frame([], [], [CAR, CAR], [0.5, 0.7], [1, 1])
    c = no_gt.pr_curves()[VEH]
    assert c.ap == 0.0 and c.fp[0] == 2 and c.fp[60] == 1 and c.fp[80] == 0 and not c.fn.any()

    nothing = WaymoMetrics()
    assert all(v == {"AP": 0.0, "APH": 0.0} for v in nothing.compute().values())


def test_all_boxes_identical():
    m = _one_frame([CAR] * 3, [1] * 3, [CAR] * 3, [0.8, 0.8, 0.8], [1] * 3)
    c = m.pr_curves()[VEH]
    assert c.tp[0] == 3 and c.fp[0] == 0 and c.fn[0] == 0 and c.ap == pytest.approx(1.0, abs=1e-6)
    # Four identical predictions for three identical ground truths: one false positive.
    m = _one_frame([CAR] * 3, [1] * 3, [CAR] * 4, [0.8] * 4, [1] * 4)
    c = m.pr_curves()[VEH]
    assert (c.tp[0], c.fp[0], c.fn[0]) == (3, 1, 0)
    assert c.ap == pytest.approx(0.75, abs=1e-6)


def test_one_prediction_overlapping_two_ground_truths():
    # Two heavily overlapping ground truths; the prediction between them has IoU > 0.7 with both.
    gts = [_shift(CAR, -0.15), _shift(CAR, 0.15)]
    m = _one_frame(gts, [1, 1], [CAR], [0.9], [1])
    c = m.pr_curves()[VEH]
    assert (c.tp[0], c.fp[0], c.fn[0]) == (1, 0, 1)
    assert c.ap == pytest.approx(0.5, abs=1e-6)


def test_thresholds_types_and_degenerate_boxes():
    # IoU 0.65: below the vehicle threshold (0.7), above the pedestrian one (0.5).
    shifted = _shift(CAR, 4.5 * (1 - 0.65) / (1 + 0.65))
    assert _one_frame([CAR], [1], [shifted], [0.9], [1]).pr_curves()[VEH].tp[0] == 0
    ped = "OBJECT_TYPE_TYPE_PEDESTRIAN_LEVEL_1"
    assert _one_frame([CAR], [2], [shifted], [0.9], [2]).pr_curves()[ped].tp[0] == 1
    # A perfect box of another type never matches.
    c = _one_frame([CAR], [1], [CAR], [0.9], [2]).pr_curves()
    assert c[VEH].fn[0] == 1 and c[ped].fp[0] == 1
    # Degenerate prediction (width 0.005 m): IoU 0, so a false positive and a false negative.
    c = _one_frame([CAR], [1], [_shift(CAR, width=0.005)], [0.9], [1]).pr_curves()[VEH]
    assert (c.tp[0], c.fp[0], c.fn[0]) == (0, 1, 1)


def test_heading_accuracy_and_no_label_zones():
    flipped = _one_frame([CAR], [1], [_shift(CAR, heading=np.pi)], [0.9], [1]).compute()[VEH]
    assert flipped["AP"] == pytest.approx(1.0, abs=1e-6) and flipped["APH"] == pytest.approx(0.0, abs=1e-6)
    quarter = _one_frame([CAR], [1], [_shift(CAR, heading=np.pi / 2)], [0.9], [1])  # footprint turns too
    assert quarter.pr_curves()[VEH].tp[0] == 0
    # An unmatched prediction that overlaps a no-label zone is not a false positive.
    far = _shift(CAR, 30.0)
    plain = _one_frame([CAR], [1], [CAR, far], [0.8, 0.9], [1, 1]).pr_curves()[VEH]
    in_nlz = _one_frame([CAR], [1], [CAR, far], [0.8, 0.9], [1, 1], nlz=[False, True]).pr_curves()[VEH]
    assert plain.fp[0] == 1 and in_nlz.fp[0] == 0
    assert in_nlz.ap == pytest.approx(1.0, abs=1e-6) and plain.ap < 0.8


def test_difficulty_levels_and_point_counts():
    second = _shift(CAR, 10.0)
    empty = _shift(CAR, 20.0)
    # GT 0: 100 points (LEVEL_1), detected. GT 1: 3 points (LEVEL_2 by rule), missed.
    # GT 2: 0 points: dropped, so the prediction on it is a false positive.
    m = _one_frame([CAR, second, empty], [1, 1, 1], [CAR, empty], [0.9, 0.5], [1, 1], points=[100, 3, 0])
    c1, c2 = m.pr_curves()[VEH], m.pr_curves()[VEH2]
    assert (c1.tp[0], c1.fp[0], c1.fn[0]) == (1, 1, 0)
    assert (c2.tp[0], c2.fp[0], c2.fn[0]) == (1, 1, 1)
    # An explicit difficulty wins over the point count; a matched LEVEL_2 box is a TP at LEVEL_1 too.
    m = _one_frame([CAR, second], [1, 1], [CAR], [0.9], [1], points=[100, 100], difficulty=[2, 2])
    assert m.pr_curves()[VEH].tp[0] == 1 and m.pr_curves()[VEH].fn[0] == 0 and m.pr_curves()[VEH2].fn[0] == 1


def test_range_breakdown_uses_each_box_centre():
    near = np.array([10.0, 0.0, 0.0, 4.5, 2.0, 1.6, 0.0])
    mid = np.array([40.0, 0.0, 0.0, 4.5, 2.0, 1.6, 0.0])
    r = _one_frame([near, mid], [1, 1], [near, mid], [0.9, 0.9], [1, 1]).compute()
    assert r["RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_1"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert r["RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_1"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert r["RANGE_TYPE_VEHICLE_[50, +inf)_LEVEL_1"]["AP"] == 0.0
    # A prediction across the 30 m border matches in OBJECT_TYPE but not in RANGE.
    gt = np.array([29.9, 0.0, 0.0, 4.5, 2.0, 1.6, 0.0])
    pred = _shift(gt, 0.2)
    m = _one_frame([gt], [1], [pred], [0.9], [1])
    curves = m.pr_curves()
    assert curves[VEH].tp[0] == 1
    assert curves["RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_1"].fn[0] == 1
    assert curves["RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_1"].fp[0] == 1


def test_mean_average_precision_interpolation():
    assert mean_average_precision([1.0], [1.0], 0.05) == pytest.approx(1.0, abs=1e-6)
    assert mean_average_precision([1.0], [0.5], 0.05) == pytest.approx(0.5, abs=1e-6)
    # Precision at a recall is the best precision at that recall or above, points are filled in
    # every 0.05 of recall, and the area is a trapezoid sum: 0.2 * 0.5 + 0.05 * 0.75 + 0.25 * 1.
    assert mean_average_precision([0.5, 1.0], [0.5, 0.25], 0.05) == pytest.approx(0.3875, abs=1e-6)
    assert mean_average_precision([], [], 0.05) == 0.0


def test_streaming_batches_and_frame_order_do_not_change_results():
    frames = list(synthetic_frames(60, 20, 60, seed=3, hard=True))
    one = WaymoMetrics(batch_frames=1)
    many = WaymoMetrics(batch_frames=1000)
    for f in frames:
        one.add_frame(*f.args())
    for f in reversed(frames):
        many.add_frame(*f.args())
    a, b = one.pr_curves(), many.pr_curves()
    for name in a:
        np.testing.assert_array_equal(a[name].tp, b[name].tp)
        np.testing.assert_array_equal(a[name].fn, b[name].fn)
        np.testing.assert_allclose(a[name].precision_ha, b[name].precision_ha, atol=1e-6)
        assert a[name].ap == pytest.approx(b[name].ap, abs=1e-6)


def test_other_breakdowns_and_config_errors():
    config = default_config()
    config.breakdown_generator_ids[:] = [breakdown_pb2.Breakdown.ONE_SHARD, breakdown_pb2.Breakdown.SIZE]
    m = _one_frame([CAR], [1], [CAR], [0.9], [1], config=config)
    r = m.compute()
    assert r["ONE_SHARD_LEVEL_1"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert r["SIZE_TYPE_VEHICLE_small_LEVEL_2"]["AP"] == pytest.approx(1.0, abs=1e-6)
    bad = default_config()
    bad.breakdown_generator_ids[1] = breakdown_pb2.Breakdown.VELOCITY
    with pytest.raises(ValueError, match="VELOCITY"):
        WaymoMetrics(bad)
    bad = default_config()
    del bad.iou_thresholds[:]
    with pytest.raises(ValueError, match="iou_thresholds"):
        WaymoMetrics(bad)


def test_input_errors_name_the_frame_and_field():
    m = WaymoMetrics()
    m.add_frame(("ctx", 1), [CAR], [1], [10], [0], [], [], [])
    with pytest.raises(ValueError, match=r"added twice"):
        m.add_frame(("ctx", 1), [CAR], [1], [10], [0], [], [], [])
    with pytest.raises(ValueError, match=r"'b'.*pred_boxes.*\(N, 7\)"):
        m.add_frame("b", [CAR], [1], [10], [0], np.zeros((2, 6)), [0.5, 0.5], [1, 1])
    with pytest.raises(ValueError, match=r"'c'.*pred_scores has 1 entries for 2 boxes"):
        m.add_frame("c", [CAR], [1], [10], [0], [CAR, CAR], [0.5], [1, 1])
    with pytest.raises(ValueError, match=r"'d'.*gt_types.*0\.\.4"):
        m.add_frame("d", [CAR], [7], [10], [0], [], [], [])
    with pytest.raises(ValueError, match=r"'e'.*gt_boxes has non-finite"):
        m.add_frame("e", [_shift(CAR, along=np.nan)], [1], [10], [0], [], [], [])


def test_caller_buffers_are_copied():
    boxes = np.array([CAR])
    m = WaymoMetrics()
    m.add_frame("f", boxes, [1], [50], [0], boxes, [0.9], [1])
    boxes[:] = 0.0  # a training loop may reuse its buffers before the batch is processed
    assert m.compute()[VEH]["AP"] == pytest.approx(1.0, abs=1e-6)


def test_scores_below_every_cutoff_count_nowhere():
    # Two predictions overlapping two overlapping ground truths (a many-to-many component), both
    # with negative scores: never present, so both ground truths are false negatives.
    gts = [_shift(CAR, -0.15), _shift(CAR, 0.15)]
    c = _one_frame(gts, [1, 1], [CAR, _shift(CAR, 0.05)], [-0.5, -0.1], [1, 1]).pr_curves()[VEH]
    assert not c.tp.any() and not c.fp.any() and c.fn.tolist() == [2] * 101
