"""The online tracker on synthetic detections: occlusions, crossing objects, birth, death, resets."""

import math

import numpy as np
import pytest

from detector.tracking import Tracker, TrackerConfig
from tests.helpers.scenes import pose_matrix

VEHICLE, PEDESTRIAN = 1, 2


def box(x, y, heading=0.0, size=(4.5, 2.0, 1.6)):
    return [x, y, 0.8, *size, heading]


def run(tracker, frames, poses=None, dt=0.1):
    """frames: per frame a list of (x, y, type, score) in the vehicle frame; returns the ids per frame."""
    out = []
    for f, dets in enumerate(frames):
        boxes = np.array([box(x, y) for x, y, _, _ in dets]).reshape(-1, 7)
        types = np.array([t for _, _, t, _ in dets], np.int64)
        scores = np.array([s for _, _, _, s in dets])
        pose = np.eye(4) if poses is None else poses[f]
        state = tracker.update(boxes, scores, types, pose, int(round(f * dt * 1e6)))
        out.append(state.track_ids.tolist())
    return out


def test_one_id_through_an_occlusion_of_a_few_frames():
    # a car at 10 m/s, hidden for 3 frames (0.3 s < max_coast_s 0.5), seen from an ego driving and turning
    tracker = Tracker()
    frames, poses = [], []
    for f in range(14):
        t = 0.1 * f
        pose = pose_matrix(2.0 * t, 0.0, 0.05 * f)
        world = np.array([5.0 + 10.0 * t, 3.0, 0.0, 1.0])
        local = np.linalg.inv(pose) @ world
        frames.append([] if 6 <= f < 9 else [(local[0], local[1], VEHICLE, 0.9)])
        poses.append(pose)
    ids = run(tracker, frames, poses)
    seen = [i[0] for i in ids if i]
    assert len(seen) == 11 and len(set(seen)) == 1


def test_a_longer_occlusion_ends_the_track():
    ids = run(Tracker(TrackerConfig(max_coast_s=0.2)),
              [[(10.0, 0.0, VEHICLE, 0.9)]] * 3 + [[]] * 3 + [[(10.0, 0.0, VEHICLE, 0.9)]] * 2)
    assert ids[0] == ids[2] and ids[6] == ids[7] and ids[6] != ids[0]


def test_no_switch_between_two_crossing_objects_of_different_speed():
    # pedestrians crossing: A walks +x at 1.5 m/s, B walks +y at 0.6 m/s; they pass 0.52 m apart (centres;
    # shoulder to shoulder), within each other's gate (1 m) for 0.8 s
    frames = []
    for f in range(40):
        t = 0.1 * f
        a = (-3.0 + 1.5 * t, 0.0)
        b = (0.6, -2.0 + 0.6 * t)
        frames.append([(*a, PEDESTRIAN, 0.8), (*b, PEDESTRIAN, 0.7)])
    ids = run(Tracker(), frames)
    assert len({i[0] for i in ids}) == 1 and len({i[1] for i in ids}) == 1 and ids[0][0] != ids[0][1]


def test_a_duplicate_detection_takes_no_track_and_gets_an_id_of_its_own():
    # two cyclist boxes 0.5 m apart on one cyclist (and a pedestrian box on it): the best continues the track
    frames = [[(10.0 + 0.5 * f, 0.0, 4, 0.9), (10.3 + 0.5 * f, 0.4, 4, 0.6), (10.1 + 0.5 * f, 0.1, 2, 0.5)]
              for f in range(5)]
    tracker = Tracker()
    states = []
    for f, dets in enumerate(frames):
        boxes = np.array([box(x, y) for x, y, _, _ in dets])
        states.append(tracker.update(boxes, [s for *_, s in dets], [t for _, _, t, _ in dets], np.eye(4), f * 100_000))
    assert len({int(s.track_ids[0]) for s in states}) == 1 and len(tracker) == 1
    assert all(s.duplicate.tolist() == [False, True, True] for s in states)
    assert len({int(s.track_ids[1]) for s in states}) == 5  # a new id every frame
    # with the pedestrian/cyclist group off, the pedestrian box is a track of its own
    alone = Tracker(TrackerConfig(class_groups=()))
    for f, dets in enumerate(frames):
        boxes = np.array([box(x, y) for x, y, _, _ in dets])
        s = alone.update(boxes, [x[3] for x in dets], [x[2] for x in dets], np.eye(4), f * 100_000)
    assert s.duplicate.tolist() == [False, True, False] and len(alone) == 2


def test_births_deaths_and_ids_of_their_own():
    cfg = TrackerConfig(birth_score=0.5, max_coast_s=0.1)
    # frame 0: a confident car (a track) and a faint one (an id of its own); frame 1: both again
    ids = run(Tracker(cfg), [[(10.0, 0.0, VEHICLE, 0.9), (30.0, 0.0, VEHICLE, 0.3)],
                             [(10.0, 0.0, VEHICLE, 0.9), (30.0, 0.0, VEHICLE, 0.3)]])
    assert ids[0][0] == ids[1][0]
    assert ids[0][1] != ids[1][1] and len({*ids[0], *ids[1]}) == 3
    # a faint detection continues a confident track
    ids = run(Tracker(cfg), [[(10.0, 0.0, VEHICLE, 0.9)], [(10.2, 0.0, VEHICLE, 0.2)]])
    assert ids[0] == ids[1]
    # classes never match each other; gates are per class
    ids = run(Tracker(cfg), [[(10.0, 0.0, VEHICLE, 0.9)], [(10.0, 0.0, PEDESTRIAN, 0.9)]])
    assert ids[0] != ids[1]
    ids = run(Tracker(cfg), [[(10.0, 0.0, PEDESTRIAN, 0.9)], [(11.5, 0.0, PEDESTRIAN, 0.9)]])
    assert ids[0] != ids[1]  # 1.5 m: beyond the pedestrian gate (1 m)
    ids = run(Tracker(cfg), [[(10.0, 0.0, VEHICLE, 0.9)], [(11.5, 0.0, VEHICLE, 0.9)]])
    assert ids[0] == ids[1]  # within the vehicle gate (2.5 m)


def test_a_timestamp_gap_ends_every_track_and_ids_never_repeat():
    tracker = Tracker()
    a = tracker.update(np.array([box(10, 0)]), [0.9], [VEHICLE], np.eye(4), 0).track_ids
    b = tracker.update(np.array([box(10, 0)]), [0.9], [VEHICLE], np.eye(4), 2_000_000).track_ids
    c = tracker.update(np.array([box(10, 0)]), [0.9], [VEHICLE], np.eye(4), 1_000_000).track_ids  # back in time
    assert len({int(a[0]), int(b[0]), int(c[0])}) == 3
    tracker.restart()
    assert tracker.update(np.array([box(10, 0)]), [0.9], [VEHICLE], np.eye(4), 0).track_ids.tolist() == [1]


def test_track_state_reports_motion_in_the_vehicle_frame():
    # world: a car at +x 10 m/s; the ego faces +y (yaw 90 degrees), so the motion is -y in its frame
    tracker = Tracker()
    for f in range(6):
        pose = pose_matrix(0.0, 0.0, math.pi / 2)
        world = np.array([10.0 + 1.0 * f, 5.0, 0.0, 1.0])
        local = np.linalg.inv(pose) @ world
        state = tracker.update(np.array([box(local[0], local[1])]), [0.9], [VEHICLE], pose, f * 100_000)
    assert state.hits.tolist() == [6] and state.velocity[0] == pytest.approx([0.0, -10.0], abs=0.6)
    assert state.displacement[0] == pytest.approx([0.0, -3.0], abs=1e-6) and state.span_s[0] == pytest.approx(0.3)
    assert state.age_s[0] == pytest.approx(0.5) and not state.new[0]


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="tracker.gate_m.truck"):
        TrackerConfig(gate_m={"truck": 2.0})
    with pytest.raises(ValueError, match="tracker.max_coast_s"):
        TrackerConfig(max_coast_s=-1)
