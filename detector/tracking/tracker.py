"""The online tracker: every detection of a stream's frame gets a track id.

Per frame, in the world frame of the frame poses: every track's centre moves ahead by its constant-velocity
Kalman filter (``motion``); detections are assigned to tracks of their class by bird's-eye centre distance
within the class's gate (``association``); matched tracks take the detection's centre; unmatched
detections scoring at least ``birth_score`` start tracks, the others get an id of their own that nothing
continues (so that every detection carries one); tracks unseen for more than ``max_coast_s`` die
(``life_cycle``), the others coast through the occlusion on their predicted motion. Causal: a frame's ids
depend on it and the frames before only. A timestamp gap over ``max_gap_s`` (or time going back) ends every
track; ids keep counting, so an id never names two objects within a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.tracking.association import associate, duplicates
from detector.tracking.config import TrackerConfig
from detector.tracking.life_cycle import births, survivors
from detector.tracking.motion import ConstantVelocity

__all__ = ["TrackState", "Tracker"]

#: Centres a track remembers for its recent displacement (the motion-heading step reads it).
HISTORY = 4
#: Velocity variance (m^2/s^2) of a new track: at rest, but fast vehicles are allowed.
BIRTH_SPEED_VAR = 100.0


@dataclass
class TrackState:
    """The tracks of one frame's detections, row for row, in that frame's vehicle frame.

    ``track_ids`` (K,) int64; ``velocity`` (K, 2) m/s from the motion model; ``displacement`` (K, 2) metres
    moved over the track's last ``HISTORY`` detections (this one included), over ``span_s`` (K,) seconds;
    ``hits`` (K,) detections the track has had; ``age_s`` (K,) seconds since its birth; ``score`` (K,) the
    mean score of its detections; ``new`` (K,) whether this detection started the track (or stands alone);
    ``duplicate`` (K,) whether it lies on a higher-scoring detection of its class group (see ``TrackerConfig``).
    """

    track_ids: np.ndarray
    velocity: np.ndarray
    displacement: np.ndarray
    span_s: np.ndarray
    hits: np.ndarray
    age_s: np.ndarray
    score: np.ndarray
    new: np.ndarray
    duplicate: np.ndarray | None = None  # (K,) bool: a duplicate of a higher-scoring detection

    @classmethod
    def empty(cls) -> TrackState:
        z = np.zeros(0)
        return cls(np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros((0, 2)), z, np.zeros(0, np.int64), z, z,
                   np.zeros(0, bool), np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.track_ids)


def _yaw_rotation(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pose's rotation (3x3) and translation (3,)."""
    pose = np.asarray(pose, np.float64)
    return pose[:3, :3], pose[:3, 3]


class Tracker:
    """See the module docstring. ``update`` takes one frame's detections (vehicle frame of ``pose``) in
    time order and returns their ``TrackState``; ``reset`` starts afresh (a new segment)."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = TrackerConfig() if config is None else config
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids keep counting)."""
        c = self.config
        self.motion = ConstantVelocity(c.process_noise, c.measurement_noise)
        self.ids = np.zeros(0, np.int64)
        self.types = np.zeros(0, np.int64)
        self.hits = np.zeros(0, np.int64)
        self.born_s = np.zeros(0)
        self.last_seen_s = np.zeros(0)
        self.score_sum = np.zeros(0)
        self.hist_xy = np.zeros((0, HISTORY, 2))
        self.hist_t = np.zeros((0, HISTORY))
        self.hist_n = np.zeros(0, np.int64)
        self.time_s: float | None = None

    def restart(self) -> None:
        """A new stream: forget every track and count ids from 1 again."""
        self._next_id = 1
        self.reset()

    def __len__(self) -> int:
        return len(self.ids)

    def _new_ids(self, n: int) -> np.ndarray:
        out = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return out

    def update(self, boxes: np.ndarray, scores: np.ndarray, types: np.ndarray, pose: np.ndarray,
               timestamp_micros: int) -> TrackState:
        c = self.config
        boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
        scores = np.asarray(scores, np.float64).reshape(-1)
        types = np.asarray(types, np.int64).reshape(-1)
        t = int(timestamp_micros) * 1e-6
        if self.time_s is not None and (t - self.time_s > c.max_gap_s or t <= self.time_s):
            self.reset()
        dt = 0.0 if self.time_s is None else t - self.time_s
        self.time_s = t
        rot, trans = _yaw_rotation(pose)
        centres = boxes[:, :3] @ rot.T + trans
        k = len(boxes)

        self.motion.predict(dt)
        dup = duplicates(centres[:, :2], types, scores, c.duplicate_radius, c.groups)
        keep = np.flatnonzero(~dup)
        rows, cols = associate(self.motion.pos[:, :2], self.types, centres[keep, :2], types[keep], c.gates, c.groups,
                               c.class_penalty)
        cols = keep[cols]
        self.motion.update(rows, centres[cols])
        self.types[rows] = types[cols]  # a track takes its latest detection's class
        self.hits[rows] += 1
        self.last_seen_s[rows] = t
        self.score_sum[rows] += scores[cols]
        self._push_history(rows, centres[cols, :2], t)

        free = ~dup
        free[cols] = False
        unmatched = np.flatnonzero(free)
        born = births(scores, unmatched, c.birth_score)
        track_of = np.full(k, -1, np.int64)
        track_of[cols] = rows
        n_old = len(self.ids)
        if len(born):
            self._add(centres[born], types[born], scores[born], t)
            track_of[born] = n_old + np.arange(len(born))

        det_ids = np.zeros(k, np.int64)
        tracked = track_of >= 0
        det_ids[tracked] = self.ids[track_of[tracked]]
        alone = ~tracked
        det_ids[alone] = self._new_ids(int(alone.sum()))
        state = self._state(track_of, det_ids, rot, scores, t)
        state.duplicate = dup

        keep = survivors(self.last_seen_s, t, c.max_coast_s)
        if not keep.all():
            self._keep(keep)
        return state

    # ------------------------------------------------------------------ bookkeeping
    def _add(self, centres, types, scores, t) -> None:
        n = len(centres)
        self.motion.add(centres, BIRTH_SPEED_VAR)
        self.ids = np.r_[self.ids, self._new_ids(n)]
        self.types = np.r_[self.types, types]
        self.hits = np.r_[self.hits, np.ones(n, np.int64)]
        self.born_s = np.r_[self.born_s, np.full(n, t)]
        self.last_seen_s = np.r_[self.last_seen_s, np.full(n, t)]
        self.score_sum = np.r_[self.score_sum, scores]
        hist_xy = np.zeros((n, HISTORY, 2))
        hist_xy[:, -1] = centres[:, :2]
        hist_t = np.zeros((n, HISTORY))
        hist_t[:, -1] = t
        self.hist_xy = np.concatenate([self.hist_xy, hist_xy])
        self.hist_t = np.concatenate([self.hist_t, hist_t])
        self.hist_n = np.r_[self.hist_n, np.ones(n, np.int64)]

    def _push_history(self, rows, xy, t) -> None:
        if not len(rows):
            return
        self.hist_xy[rows, :-1] = self.hist_xy[rows, 1:]
        self.hist_t[rows, :-1] = self.hist_t[rows, 1:]
        self.hist_xy[rows, -1] = xy
        self.hist_t[rows, -1] = t
        self.hist_n[rows] = np.minimum(self.hist_n[rows] + 1, HISTORY)

    def _keep(self, mask) -> None:
        self.motion.keep(mask)
        for name in ("ids", "types", "hits", "born_s", "last_seen_s", "score_sum", "hist_xy", "hist_t", "hist_n"):
            setattr(self, name, getattr(self, name)[mask])

    def _state(self, track_of, det_ids, rot, scores, t) -> TrackState:
        k = len(track_of)
        tracked = track_of >= 0
        r = track_of[tracked]
        to_vehicle = rot[:2, :2].T
        velocity = np.zeros((k, 2))
        velocity[tracked] = self.motion.vel[r] @ to_vehicle.T
        displacement = np.zeros((k, 2))
        span = np.zeros(k)
        oldest = HISTORY - self.hist_n[r]
        first_xy = self.hist_xy[r, oldest]
        displacement[tracked] = (self.hist_xy[r, -1] - first_xy) @ to_vehicle.T
        span[tracked] = self.hist_t[r, -1] - self.hist_t[r, oldest]
        hits = np.ones(k, np.int64)
        hits[tracked] = self.hits[r]
        age = np.zeros(k)
        age[tracked] = t - self.born_s[r]
        score = scores.copy()
        score[tracked] = self.score_sum[r] / self.hits[r]
        new = ~tracked | (hits == 1)
        return TrackState(det_ids, velocity, displacement, span, hits, age, score, new)


