"""Heading direction from motion: an online, causal fix for the front/back of moving objects.

The head predicts the box axis well (the doubled angle), but its direction bit needs the object's
front to show in its shape, which a 0.4 m voxel grid barely resolves (a pedestrian looks the same both
ways). A moving object shows its front by moving: ``MotionHeading`` keeps short tracks of the last
frames' detections in the world frame (the frame poses), matches each new detection to the nearest
track end of its type within ``gate`` metres, and, when the track has moved at least ``min_speed``
(m/s, per class) along the box axis over up to ``history`` frames, and by at least ``min_move``
metres (per class; vehicles only by default), turns the box (by pi) to face its motion. A track keeps
the direction it last moved in, so a car that stops keeps its heading. An object never seen moving
gets, with ``vote_static``, the majority of the fronts its detections have had so far (each frame's
front as decoded, a unit vector in the world frame, summed over the track): a parked car whose front
the box-direction stage reads wrongly in a few frames keeps the front of the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from detector.models.outputs import Detections

__all__ = ["MotionHeading"]


@dataclass
class _Track:
    centres: list[np.ndarray]  # world BEV centres, oldest first
    times: list[float]  # seconds
    type: int
    direction: float | None = None  # world heading it last moved in
    fronts: np.ndarray = field(default_factory=lambda: np.zeros(2))  # sum of its decoded world fronts


@dataclass
class MotionHeading:
    """See the module docstring. ``min_speed`` (m/s) and ``gate`` (m) per Waymo type; other types are
    left as they are."""

    min_speed: dict[int, float] = field(default_factory=lambda: {1: 1.5, 2: 0.5, 4: 1.0})
    gate: dict[int, float] = field(default_factory=lambda: {1: 2.5, 2: 0.8, 4: 1.5})
    history: int = 4
    #: the least distance (m) a track must have moved for its motion to count, per Waymo type (0 where
    #: absent): the centre of a parked car's box wanders by tenths of a metre from frame to frame, which over
    #: a short track reads as walking speed, and a direction once taken is kept (docs/studies/
    #: motion-heading-parked-cars.md)
    min_move: dict[int, float] = field(default_factory=lambda: {1: 1.0})
    min_alignment: float = 0.8  # |cos| between the motion and the box axis
    max_gap_s: float = 0.5
    vote_static: bool = True  # a track never seen moving takes the majority of its decoded fronts
    _tracks: list[_Track] = field(default_factory=list, repr=False)
    _last_time: float | None = field(default=None, repr=False)

    def reset(self) -> None:
        self._tracks, self._last_time = [], None

    def __call__(self, det: Detections, pose: np.ndarray, timestamp_micros: int) -> Detections:
        """``det`` (one frame, vehicle frame of ``pose``) with headings turned where motion says so."""
        t = timestamp_micros * 1e-6
        if self._last_time is not None and abs(t - self._last_time) > self.max_gap_s:
            self.reset()
        self._last_time = t
        boxes = det.boxes.detach().double().cpu().numpy().copy()
        types = det.types.cpu().numpy()
        pose = np.asarray(pose, np.float64)
        yaw = math.atan2(pose[1, 0], pose[0, 0])
        centres = boxes[:, :2] @ pose[:2, :2].T + pose[:2, 3]
        ends = np.array([tr.centres[-1] for tr in self._tracks]).reshape(-1, 2)
        end_types = np.array([tr.type for tr in self._tracks], np.int64)
        taken = np.zeros(len(self._tracks), bool)
        new_tracks = []
        order = np.argsort(-det.scores.detach().cpu().numpy(), kind="stable")
        for i in order:
            ty = int(types[i])
            if ty not in self.min_speed:
                continue
            track = None
            if len(ends):
                d = np.hypot(*(ends - centres[i]).T)
                d[(end_types != ty) | taken] = np.inf
                j = int(np.argmin(d))
                if d[j] <= self.gate[ty]:
                    taken[j] = True
                    old = self._tracks[j]
                    keep = -(self.history - 1)
                    track = _Track(old.centres[keep:] + [centres[i]], old.times[keep:] + [t],
                                   ty, old.direction, old.fronts.copy())
            if track is None:
                track = _Track([centres[i]], [t], ty)
            front = np.array([math.cos(boxes[i, 6] + yaw), math.sin(boxes[i, 6] + yaw)])
            track.fronts = track.fronts + front
            new_tracks.append(track)
            span = track.times[-1] - track.times[0]
            if span > 0:
                move = track.centres[-1] - track.centres[0]
                moved = float(np.hypot(*move))
                axis = boxes[i, 6] + yaw
                if moved / span >= self.min_speed[ty] and moved >= self.min_move.get(ty, 0.0):
                    heading = math.atan2(move[1], move[0])
                    if abs(math.cos(heading - axis)) >= self.min_alignment:
                        track.direction = heading
            if track.direction is not None:
                turn = math.cos(track.direction - (boxes[i, 6] + yaw)) < 0
            else:
                turn = self.vote_static and float(track.fronts @ front) < 0
            if turn:
                boxes[i, 6] = (boxes[i, 6] + 2 * math.pi) % (2 * math.pi) - math.pi

        self._tracks = new_tracks
        out = torch.as_tensor(boxes, dtype=det.boxes.dtype, device=det.boxes.device)
        return Detections(out, det.scores, det.types)
