"""Invariants of a segment's frames, checked where the frames are read (the v1 and v2 readers, the
frame store), so that nothing downstream (the temporal state, the metrics) sees a broken frame.

- **Poses** (vehicle-to-world, 4x4; also each lidar's extrinsic) must be finite and rigid:
  ``R·Rᵀ = I`` and ``det R = +1`` within ``POSE_TOLERANCE`` per entry, last row ``[0 0 0 1]`` within
  the same tolerance. A frame whose pose
  fails refuses its segment (``FrameFormatError`` naming the record or row and the pose): every
  relative motion the model is given would be wrong.
- **Timestamps** strictly increase within a segment (``SegmentFrameChecks``): a repeated or earlier
  timestamp refuses the segment, naming both records.
- **Labels**: a box with a NaN/inf value, a size that is not positive, a type that is not a Waymo
  ``Label.Type``, or an id already seen in the same frame (its copy) is dropped and counted per reason
  (``LABEL_DROP_REASONS``): the converter's summary, ``segment.json`` (``dropped_labels``) and
  ``stats`` show the counts, as for non-finite points.

The splits of a store (a segment's ``segment.json`` split is its folder's, no segment in two split
folders) are checked by ``detector.data.frame_store`` (``read_segment``, ``check_store_splits``).

Costs (docs/studies/faults.md): microseconds a frame, against ~100 ms to convert one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from detector.data.frame import Frame, FrameFormatError
from detector.data.range_image import laser_label

#: Largest deviation accepted per entry of ``R·Rᵀ - I``, of ``det R - 1`` and of the last row from
#: ``[0 0 0 1]``: a rotation scaled by 1.0001 passes, one scaled by 1.001 (10 cm at 100 m) does not.
POSE_TOLERANCE = 1e-4
#: Why a label is dropped, in the order they are tested (a box counts once, for its first reason).
LABEL_DROP_REASONS = ("nonfinite_box", "nonpositive_size", "unknown_type", "duplicate_id")
#: Waymo ``Label.Type`` values (0 TYPE_UNKNOWN, 1 vehicle, 2 pedestrian, 3 sign, 4 cyclist): 0..4.
KNOWN_TYPES = range(5)


def pose_problem(pose: np.ndarray, tolerance: float = POSE_TOLERANCE) -> str | None:
    """Why ``pose`` (4x4) is not a finite rigid transform, or None."""
    pose = np.asarray(pose, np.float64)
    if pose.shape != (4, 4):
        return f"shape {pose.shape}, expected (4, 4)"
    rows = pose.tolist()  # 16 Python floats: cheaper than numpy calls on a 4x4 (a few us, not ~30)
    if not all(math.isfinite(v) for row in rows for v in row):
        return "has NaN/inf values"
    r = [row[:3] for row in rows[:3]]
    off = max(abs(sum(a * b for a, b in zip(r[i], r[j])) - (i == j)) for i in range(3) for j in range(i, 3))
    if off > tolerance:
        return f"rotation is not orthonormal (max |R·Rt - I| = {off:.3g} > {tolerance:g})"
    (a, b, c), (d, e, f), (g, h, i) = r
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if abs(det - 1.0) > tolerance:
        return f"rotation has det {det:.4g}, expected +1 (a reflection)"
    last = max(abs(v - w) for v, w in zip(rows[3], (0.0, 0.0, 0.0, 1.0)))
    if last > tolerance:
        return f"last row is {rows[3]}, expected [0, 0, 0, 1]"
    return None


def check_pose(pose: np.ndarray, where: str) -> None:
    """Refuse a pose that is not finite and rigid; ``where`` names the record/row and the field."""
    problem = pose_problem(pose)
    if problem is not None:
        raise FrameFormatError(f"{where}: {problem}; a vehicle pose must be a rigid transform (rotation and "
                               f"translation, tolerance {POSE_TOLERANCE:g}): the segment is refused")


def check_poses(poses: np.ndarray, where: Iterable[str]) -> None:
    """``check_pose`` of a stack (F, 4, 4), vectorised for the common case where all are fine."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    r = poses[:, :3, :3]
    fine = (np.isfinite(poses).all(axis=(1, 2))
            & (np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max(axis=(1, 2)) <= POSE_TOLERANCE)
            & (np.abs(poses[:, 3] - (0.0, 0.0, 0.0, 1.0)).max(axis=1) <= POSE_TOLERANCE))
    if fine.all():
        fine &= np.abs(np.linalg.det(r) - 1.0) <= POSE_TOLERANCE
    for pose, ok, w in zip(poses, fine, where):
        if not ok:
            check_pose(pose, w)


def check_extrinsics(calibrations, where: str) -> None:
    """The lidars' sensor-to-vehicle ``extrinsic`` transforms must be finite and rigid too (a NaN one
    would turn every point of its lidar into NaN, dropped as non-finite points); ``calibrations`` are
    ``LaserCalibration``s, ``where`` names the field."""
    for c in calibrations:
        ext = np.asarray(c.extrinsic, np.float64)
        if ext.size == 16:  # (another size is refused where the calibration is used)
            check_pose(ext.reshape(4, 4), f"{where} laser {laser_label(c.name)} extrinsic")


def _labels_valid(frame: Frame) -> bool:
    """The common case, cheaply: every label finite, sized, of a known type, its id unique."""
    boxes = frame.boxes
    return (not len(boxes) or (bool(np.isfinite(boxes).all()) and bool((boxes[:, 3:6] > 0).all())
                               and bool(((frame.types >= 0) & (frame.types <= 4)).all())
                               and len(set(frame.ids.tolist())) == len(boxes)))


def invalid_labels(frame: Frame) -> dict[str, np.ndarray]:
    """Boolean masks (M,) of the labels to drop, one per reason of ``LABEL_DROP_REASONS`` (disjoint: a
    label counts for its first reason; a repeated id is the copy of the first valid label with it)."""
    boxes = frame.boxes
    m = len(boxes)
    nonfinite = ~np.isfinite(boxes).all(axis=1) if m else np.zeros(0, bool)
    nonpositive = ~nonfinite & ~(boxes[:, 3:6] > 0).all(axis=1) if m else np.zeros(0, bool)
    unknown = ~nonfinite & ~nonpositive & ~((frame.types >= 0) & (frame.types <= 4))
    duplicate = np.zeros(m, bool)
    valid = np.flatnonzero(~(nonfinite | nonpositive | unknown))
    if len(valid) > 1:
        _, first = np.unique(frame.ids[valid], return_index=True)
        duplicate[valid] = True
        duplicate[valid[first]] = False
    return {"nonfinite_box": nonfinite, "nonpositive_size": nonpositive, "unknown_type": unknown,
            "duplicate_id": duplicate}


def drop_invalid_labels(frame: Frame) -> tuple[Frame, dict[str, int], str]:
    """The frame without its invalid labels (``invalid_labels``), the counts per reason (only reasons
    with a count) and an example for messages (``"object 3 (id 'x'): duplicate_id"``, or "")."""
    if _labels_valid(frame):
        return frame, {}, ""
    masks = invalid_labels(frame)
    drop = np.zeros(frame.num_boxes, bool)
    for m in masks.values():
        drop |= m
    if not drop.any():
        return frame, {}, ""
    counts = {k: int(m.sum()) for k, m in masks.items() if m.any()}
    first = int(np.flatnonzero(drop)[0])
    reason = next(k for k, m in masks.items() if m[first])
    example = f"object {first} (id {str(frame.ids[first])!r}): {reason}"
    keep = ~drop
    frame.boxes, frame.types, frame.ids = frame.boxes[keep], frame.types[keep], frame.ids[keep]
    frame.num_points, frame.difficulty = frame.num_points[keep], frame.difficulty[keep]
    return frame, counts, example


def check_stored_labels(frame: Frame, where: str) -> None:
    """Refuse a frame-store frame holding a label the converter now drops (a store converted before the
    check): ``where`` names the file; the message names the object and says to convert again."""
    if _labels_valid(frame):
        return
    boxes = frame.boxes
    masks = invalid_labels(frame)
    k = next(int(np.flatnonzero(m)[0]) for m in masks.values() if m.any())
    reason = next(name for name, m in masks.items() if m[k])
    raise FrameFormatError(f"{where}: object {k} (id {str(frame.ids[k])!r}) is invalid ({reason}: box "
                           f"{boxes[k].tolist()}); convert the segment again (the converter drops such labels "
                           "and counts them)")


@dataclass
class SegmentFrameChecks:
    """The checks of one segment's frames in reading order: timestamps strictly increasing, invalid
    labels dropped and counted (``dropped_labels``: ``{frame index: {reason: count}}``)."""

    dropped_labels: dict[int, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    _last: tuple[int, str] | None = None

    def __call__(self, frame: Frame, where: str) -> Frame:
        ts = frame.timestamp_micros
        if self._last is not None and ts <= self._last[0]:
            what = "repeats" if ts == self._last[0] else "comes before"
            raise FrameFormatError(f"{where}: timestamp_micros {ts} {what} that of the frame before it "
                                   f"({self._last[1]}: {self._last[0]}); a segment's frames must have strictly "
                                   "increasing timestamps (a duplicated or misordered record)")
        self._last = (ts, where)
        frame, counts, example = drop_invalid_labels(frame)
        if counts:
            self.dropped_labels[frame.index] = counts
            if len(self.examples) < 3:
                self.examples.append(f"{where}: {example}")
        return frame


def label_totals(per_frame: Mapping[int, Mapping[str, int]]) -> dict[str, int]:
    """``{reason: count}`` over the frames of ``SegmentFrameChecks.dropped_labels``."""
    out: dict[str, int] = {}
    for d in per_frame.values():
        for reason, n in d.items():
            out[reason] = out.get(reason, 0) + int(n)
    return {k: out[k] for k in LABEL_DROP_REASONS if k in out}


def format_dropped_labels(per_frame: Mapping[int, Mapping[str, int]], examples: list[str]) -> str:
    """``"3 labels dropped (duplicate_id 2, nonfinite_box 1) in 2 frames, e.g. ..."``."""
    totals = label_totals(per_frame)
    shown = ", ".join(f"{k} {n}" for k, n in totals.items())
    eg = f", e.g. {examples[0]}" if examples else ""
    return f"{sum(totals.values())} labels dropped ({shown}) in {len(per_frame)} frames{eg}"


__all__ = ["POSE_TOLERANCE", "LABEL_DROP_REASONS", "KNOWN_TYPES", "pose_problem", "check_pose", "check_poses",
           "check_extrinsics", "invalid_labels", "drop_invalid_labels", "check_stored_labels", "SegmentFrameChecks",
           "label_totals", "format_dropped_labels"]
