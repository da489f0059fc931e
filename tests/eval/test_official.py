"""Cross-check against the official TensorFlow op on randomized cases (slow; needs .venv-official,
made by scripts/setup_official.sh). Every AP/APH within 1e-4 and every TP/FP/FN count equal."""

import numpy as np
import pytest
from waymo_open_dataset import label_pb2
from waymo_open_dataset.protos import breakdown_pb2

from detector.eval import WaymoMetrics, default_config
from detector.eval.submission import FrameObjects
from tests.helpers.metric_cases import FrameCase, synthetic_frames
from tests.helpers.official import official_available, official_inputs, run_official_op

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not official_available(), reason="needs .venv-official (scripts/setup_official.sh)")]
Breakdown = breakdown_pb2.Breakdown


def _compare(cases: list[FrameCase], config):
    gt_frames, pred_frames = {}, {}
    metrics = WaymoMetrics(config)
    for c in cases:
        # The op takes float32 boxes; give both sides the same values.
        gb, pb = c.gt_boxes.astype(np.float32), c.pred_boxes.astype(np.float32)
        metrics.add_frame(c.key, gb, c.gt_types, c.gt_num_points, c.gt_difficulty, pb, c.pred_scores,
                          c.pred_types, c.pred_overlap_nlz)
        n, k = len(gb), len(pb)
        gt_frames[c.key] = FrameObjects(gb, c.gt_types, np.ones(n, np.float32), np.zeros(n, bool),
                                        c.gt_num_points, c.gt_difficulty)
        pred_frames[c.key] = FrameObjects(pb, c.pred_types, c.pred_scores, c.pred_overlap_nlz,
                                          np.zeros(k, np.int64), np.zeros(k, np.int64))
    official = run_official_op(*official_inputs(gt_frames, pred_frames), config, timeout=600)
    curves = metrics.pr_curves()
    assert list(curves) == official.names
    for i, name in enumerate(official.names):
        ours = curves[name]
        np.testing.assert_array_equal(np.stack([ours.tp, ours.fp, ours.fn], 1), official.pr[i, :, 2:], err_msg=name)
        np.testing.assert_allclose(ours.precision_ha, official.pr_ha[i, :, 0], atol=1e-4, err_msg=name)
        assert ours.ap == pytest.approx(float(official.ap[i]), abs=1e-4), name
        assert ours.aph == pytest.approx(float(official.aph[i]), abs=1e-4), name


def _edge_cases() -> list[FrameCase]:
    car = np.array([[12.0, -3.0, 1.0, 4.5, 2.0, 1.6, 0.3]])
    ped = np.array([[35.0, 8.0, 1.0, 0.8, 0.8, 1.7, -2.0]])
    flipped = car.copy()
    flipped[0, 6] += np.pi
    thin = car.copy()
    thin[0, 4] = 0.005
    one = np.ones(1, np.float32)

    def case(i, gb, gt, pb, ps, pt, points=None, diff=None, nlz=None):
        gb, pb = np.asarray(gb, float).reshape(-1, 7), np.asarray(pb, float).reshape(-1, 7)
        return FrameCase(("edge", i), gb, np.asarray(gt, np.int64),
                         np.full(len(gb), 50) if points is None else np.asarray(points),
                         np.zeros(len(gb), np.int64) if diff is None else np.asarray(diff),
                         pb, np.asarray(ps, np.float32), np.asarray(pt, np.int64),
                         np.zeros(len(pb), bool) if nlz is None else np.asarray(nlz))

    return [
        case(0, car, [1], [], [], []),  # no predictions
        case(1, [], [], ped, 0.7 * one, [2]),  # no ground truth
        case(2, np.r_[car, car, car], [1, 1, 1], np.r_[car, car], [0.6, 0.6], [1, 1]),  # identical
        case(3, car, [1], np.r_[flipped, car], [0.9, 0.4], [1, 1]),  # heading flipped by pi
        case(4, car, [1], thin, one, [1]),  # degenerate
        case(5, np.r_[car, ped], [1, 2], np.r_[ped, car], [0.5, 0.8], [2, 1], points=[3, 0]),
        case(6, ped, [2], np.r_[ped, ped + 20], [0.3, 0.95], [2, 2], nlz=[False, True], diff=[2]),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_hard_cases_default_config(seed):
    _compare(list(synthetic_frames(150, 40, 120, seed=100 + seed, hard=True)) + _edge_cases(), default_config())


def test_other_breakdowns_levels_and_box_types():
    config = default_config()
    config.breakdown_generator_ids[:] = [Breakdown.ONE_SHARD, Breakdown.ALL_BUT_SIGN, Breakdown.SIZE]
    del config.difficulties[:]
    config.difficulties.add()  # no levels: LEVEL_2 only
    config.difficulties.add().levels.append(label_pb2.Label.LEVEL_1)
    config.difficulties.add().levels.extend([label_pb2.Label.LEVEL_2, label_pb2.Label.LEVEL_1])
    _compare(list(synthetic_frames(100, 30, 90, seed=7, hard=True)), config)

    config = default_config()
    config.box_type = label_pb2.Label.Box.TYPE_2D
    config.min_heading_accuracy = 0.3
    config.min_precision = 0.2
    config.desired_recall_delta = 0.1
    del config.score_cutoffs[:]
    config.score_cutoffs.extend([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    config.iou_thresholds[:] = [0.0, 0.6, 0.4, 0.4, 0.4]
    _compare(list(synthetic_frames(100, 30, 90, seed=8, hard=True)) + _edge_cases(), config)
