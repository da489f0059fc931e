"""Exact values of the tracking metrics on small hand-made sequences (the official semantics of
``mot.cc`` / ``tracking_metrics.cc``: id switches, evictions, repeated ids, levels, the best cutoff)."""

import numpy as np
import pytest

from detector.eval.tracking_metrics import WaymoTrackingMetrics

CAR = np.array([10.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0])
VEH = "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"
VEH1 = "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"


def car(x, y=0.0, dx=0.0):
    b = CAR.copy()
    b[0], b[1] = x + dx, y
    return b


def run(frames, levels=None):
    """frames: list of (gt [(id, box)], pred [(id, box, score)]) of one sequence, 10 Hz."""
    m = WaymoTrackingMetrics()
    for f, (gts, preds) in enumerate(frames):
        lv = [0] * len(gts) if levels is None else levels[f]
        m.add_frame("seq", 1000 + 100_000 * f,
                    np.array([b for _, b in gts]).reshape(-1, 7), np.ones(len(gts), np.int64),
                    [i for i, _ in gts], lv,
                    np.array([b for _, b, _ in preds]).reshape(-1, 7), [s for _, _, s in preds],
                    np.ones(len(preds), np.int64), [i for i, _, _ in preds])
    return m.results()


def test_a_perfect_track():
    r = run([([("a", car(0))], [("1", car(0), 0.9)])] * 5)[VEH]
    assert (r.mota, r.miss, r.fp, r.mismatch, r.motp) == (1.0, 0.0, 0.0, 0.0, pytest.approx(0.0, abs=1e-6))
    assert (r.num_objects_gt, r.num_matches) == (5, 5)


def test_an_id_switch_between_two_objects_counts_two_mismatches():
    a, b = car(0), car(0, y=10)
    frames = [([("a", a), ("b", b)], [("1", a, 0.9), ("2", b, 0.9)])] * 2
    frames += [([("a", a), ("b", b)], [("2", a, 0.9), ("1", b, 0.9)])] * 2
    r = run(frames)[VEH]
    assert (r.num_objects_gt, r.num_mismatches, r.num_misses, r.num_fps) == (8, 2, 0, 0)
    assert r.mismatch == pytest.approx(0.25) and r.mota == pytest.approx(0.75)


def test_a_fragmented_track_counts_one_mismatch_and_a_gap_none():
    frames = [([("a", car(0))], [("1", car(0), 0.9)]),
              ([("a", car(0))], []),  # occluded: a miss, the mapping kept
              ([("a", car(0))], [("1", car(0), 0.9)]),
              ([("a", car(0))], [("7", car(0), 0.9)])]  # a new id: one mismatch
    r = run(frames)[VEH]
    assert (r.num_objects_gt, r.num_misses, r.num_mismatches, r.num_fps) == (4, 1, 1, 0)


def test_a_matched_pair_is_kept_over_a_better_overlap():
    # frame 1: prediction 2 overlaps better, but 1 still matches "a": the mapping keeps 1; 2 is a false positive
    frames = [([("a", car(0))], [("1", car(0), 0.9)]),
              ([("a", car(0))], [("1", car(0, dx=0.3), 0.9), ("2", car(0), 0.9)])]
    r = run(frames)[VEH]
    assert (r.num_matches, r.num_fps, r.num_mismatches) == (2, 1, 0)
    assert r.motp == pytest.approx((1 - (4 - 0.3) / (4 + 0.3)) / 2, abs=1e-6)


def test_a_prediction_taken_from_an_absent_object_is_a_mismatch():
    # t0: a->1, b->2; t1: b gone, a matched by 2: a switches (1) and 2 leaves b, absent (1)
    a, b = car(0), car(0, y=10)
    r = run([([("a", a), ("b", b)], [("1", a, 0.9), ("2", b, 0.9)]),
             ([("a", a)], [("2", a, 0.9)])])[VEH]
    assert (r.num_objects_gt, r.num_mismatches) == (3, 2)
    # ... but not when b is still there, unmatched (then it is a miss)
    r = run([([("a", a), ("b", b)], [("1", a, 0.9), ("2", b, 0.9)]),
             ([("a", a), ("b", b)], [("2", a, 0.9)])])[VEH]
    assert (r.num_mismatches, r.num_misses) == (1, 1)


def test_a_repeated_prediction_id_takes_part_once_as_its_first():
    others = [(f"o{k}", car(0, y=10 * k)) for k in (1, 2, 3)]  # tracked perfectly: MOTA stays above 0
    frames = [([("a", car(0))] + others, [("1", car(30), 0.9), ("1", car(0), 0.9)]
               + [(f"p{k}", car(0, y=10 * k), 0.9) for k in (1, 2, 3)])]
    r = run(frames)[VEH]
    assert (r.num_objects_gt, r.num_misses, r.num_fps, r.num_matches) == (4, 1, 1, 3)  # the second is ignored
    # at a cutoff above the first's score the second takes part: it matches
    frames = [([("a", car(0))], [("1", car(30), 0.2), ("1", car(0), 0.9)])]
    r = run(frames)[VEH]
    assert (r.num_misses, r.num_fps, r.num_matches, r.mota) == (0, 0, 1, 1.0)
    assert r.score_cutoff == pytest.approx(0.21)


def test_a_repeated_ground_truth_id_is_refused():
    with pytest.raises(ValueError, match="ground-truth id 'a' repeats"):
        run([([("a", car(0)), ("a", car(0, y=10))], [])])


def test_levels_count_a_missed_level_2_object_at_level_2_only_and_a_matched_one_at_both():
    frames = [([("a", car(0)), ("b", car(0, y=10))], [("1", car(0), 0.9)]),
              ([("a", car(0)), ("b", car(0, y=10))], [("1", car(0), 0.9), ("2", car(0, y=10), 0.9)])]
    levels = [[1, 2], [1, 2]]
    res = run(frames, levels)
    l1, l2 = res[VEH1], res[VEH]
    assert (l2.num_objects_gt, l2.num_misses) == (4, 1)
    assert (l1.num_objects_gt, l1.num_misses) == (3, 0)  # b missed at frame 0: not counted at LEVEL_1
    unset = run(frames)  # unset difficulty counts at every level
    assert unset[VEH1].num_misses == unset[VEH].num_misses == 1


def test_the_best_cutoff_is_the_lowest_of_equal_mota_and_only_above_zero():
    # a false positive at 0.5: cutoffs <= 0.5 give MOTA 0.5, above it 1.0 -> first cutoff above 0.5
    frames = [([("a", car(0)), ("b", car(0, y=10))], [("1", car(0), 0.9), ("2", car(0, y=10), 0.9),
                                                       ("3", car(40), 0.5)])]
    r = run(frames)[VEH]
    assert (r.mota, r.score_cutoff) == (1.0, pytest.approx(0.51))
    # only false positives: MOTA <= 0 everywhere, the all-zero result stays
    r = run([([("a", car(0))], [("1", car(40), 0.9)])])[VEH]
    assert (r.mota, r.motp, r.miss, r.fp, r.score_cutoff) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_sequences_are_separate_and_frames_sorted_by_time():
    m = WaymoTrackingMetrics()
    # "s1" added out of order: by time a->1, a->1, a->2 (one mismatch); "s2": a->2 alone (none)
    for seq, t, pid in (("s1", 300, "2"), ("s1", 100, "1"), ("s1", 200, "1"), ("s2", 100, "2")):
        m.add_frame(seq, t, [car(0)], [1], ["a"], [0], [car(0)], [0.9], [1], [pid])
    r = m.results()[VEH]
    assert (r.num_objects_gt, r.num_mismatches) == (4, 1)


def test_input_errors_name_the_frame():
    m = WaymoTrackingMetrics()
    with pytest.raises(ValueError, match=r"\('s', 5\): pred_ids has 0 entries for 1 boxes"):
        m.add_frame("s", 5, [car(0)], [1], ["a"], [0], [car(0)], [0.9], [1], [])
    m.add_frame("s", 5, [car(0)], [1], ["a"], [0], [car(0)], [0.9], [1], ["1"])
    with pytest.raises(ValueError, match="added twice"):
        m.add_frame("s", 5, [car(0)], [1], ["a"], [0], [car(0)], [0.9], [1], ["1"])
