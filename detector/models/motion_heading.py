"""Heading direction from motion: an online, causal fix for the front/back of moving objects.

The head predicts the box axis well (the doubled angle), but its direction bit needs the object's
front to show in its shape, which a 0.4 m voxel grid barely resolves (a pedestrian looks the same both
ways). A moving object shows its front by moving: ``MotionHeading`` reads the stream tracker's state of
each detection (``detector.tracking.TrackState``: the track's displacement over its last detections, in
the current vehicle frame) and, when the track has moved at least ``min_speed`` (m/s, per class) along
the box axis, and by at least ``min_move`` metres (per class; vehicles only by default), turns the box
(by pi) to face its motion. It keeps no tracks of its own: one association, the tracker's. A track keeps
the direction it last moved in (remembered by track id), so a car that stops keeps its heading. An object
never seen moving gets, with ``vote_static``, the majority of the fronts its detections have had so far
(each frame's front as decoded, a unit vector in the world frame, summed over the track): a parked car
whose front the box-direction stage reads wrongly in a few frames keeps the front of the others.

Called as ``motion(det, pose, timestamp)`` without a tracker state, it runs a tracker of its own
(every detection may start a track, its ``gate`` per class), for use outside a ``Stream``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from detector.models.outputs import Detections
from detector.tracking import CLASS_TYPES, Tracker, TrackerConfig, TrackState

__all__ = ["MotionHeading"]

_FORGET_S = 2.0  # a track id unseen this long is forgotten


@dataclass
class _Memory:
    direction: float | None = None  # world heading it last moved in
    fronts: np.ndarray = field(default_factory=lambda: np.zeros(2))  # sum of its decoded world fronts
    seen_s: float = 0.0


@dataclass
class MotionHeading:
    """See the module docstring. ``min_speed`` (m/s) per Waymo type; other types are left as they are.
    ``gate`` (m) per type and ``max_gap_s`` serve the tracker of the standalone call only."""

    min_speed: dict[int, float] = field(default_factory=lambda: {1: 1.5, 2: 0.5, 4: 1.0})
    gate: dict[int, float] = field(default_factory=lambda: {1: 2.5, 2: 0.8, 4: 1.5})
    #: the least distance (m) a track must have moved for its motion to count, per Waymo type (0 where
    #: absent): the centre of a parked car's box wanders by tenths of a metre from frame to frame, which over
    #: a short track reads as walking speed, and a direction once taken is kept (docs/studies/
    #: motion-heading-parked-cars.md)
    min_move: dict[int, float] = field(default_factory=lambda: {1: 1.0})
    min_alignment: float = 0.8  # |cos| between the motion and the box axis
    max_gap_s: float = 0.5
    vote_static: bool = True  # a track never seen moving takes the majority of its decoded fronts
    _memory: dict[int, _Memory] = field(default_factory=dict, repr=False)
    _tracker: Tracker | None = field(default=None, repr=False)

    def reset(self) -> None:
        self._memory = {}
        if self._tracker is not None:
            self._tracker.restart()

    def __call__(self, det: Detections, pose: np.ndarray, timestamp_micros: int) -> Detections:
        """Standalone: track ``det`` (one frame, vehicle frame of ``pose``) with an own tracker, then turn."""
        if self._tracker is None:
            names = {v: k for k, v in CLASS_TYPES.items()}
            self._tracker = Tracker(TrackerConfig(gate_m={names[t]: g for t, g in self.gate.items()},
                                                  birth_score=0.0, max_coast_s=0.0, max_gap_s=self.max_gap_s))
        tracks = self._tracker.update(det.boxes.detach().double().cpu().numpy(), det.scores.detach().cpu().numpy(),
                                      det.types.cpu().numpy(), pose, timestamp_micros)
        return self.apply(det, tracks, pose, timestamp_micros)

    def apply(self, det: Detections, tracks: TrackState, pose: np.ndarray, timestamp_micros: int) -> Detections:
        """``det`` with headings turned where its tracks' motion says so; ``tracks`` row for row."""
        if len(tracks) != len(det):
            raise ValueError(f"{len(det)} detections but {len(tracks)} track states")
        t = timestamp_micros * 1e-6
        boxes = det.boxes.detach().double().cpu().numpy().copy()
        types = det.types.cpu().numpy()
        pose = np.asarray(pose, np.float64)
        yaw = math.atan2(pose[1, 0], pose[0, 0])
        for i in range(len(boxes)):
            ty = int(types[i])
            if ty not in self.min_speed:
                continue
            tid = int(tracks.track_ids[i])
            mem = self._memory.get(tid)
            if mem is None or tracks.new[i]:
                mem = self._memory[tid] = _Memory()
            mem.seen_s = t
            axis = boxes[i, 6] + yaw
            front = np.array([math.cos(axis), math.sin(axis)])
            mem.fronts = mem.fronts + front
            span = float(tracks.span_s[i])
            if span > 0:
                move = tracks.displacement[i]
                moved = float(np.hypot(*move))
                if moved / span >= self.min_speed[ty] and moved >= self.min_move.get(ty, 0.0):
                    heading = math.atan2(move[1], move[0]) + yaw
                    if abs(math.cos(heading - axis)) >= self.min_alignment:
                        mem.direction = heading
            if mem.direction is not None:
                turn = math.cos(mem.direction - axis) < 0
            else:
                turn = self.vote_static and float(mem.fronts @ front) < 0
            if turn:
                boxes[i, 6] = (boxes[i, 6] + 2 * math.pi) % (2 * math.pi) - math.pi
        if len(self._memory) > 4 * max(len(boxes), 64):
            self._memory = {k: m for k, m in self._memory.items() if t - m.seen_s <= _FORGET_S}
        out = torch.as_tensor(boxes, dtype=det.boxes.dtype, device=det.boxes.device)
        return Detections(out, det.scores, det.types, det.track_ids)
