"""Checks of leaderboard files before they are scored: objects the metrics cannot score (NaN/inf
values, boxes with non-positive sizes, unknown types), and files that do not describe the same frames.

Without them a NaN box stops the metrics with an error that names no file, and predictions of another
split (timestamps or context names that match no ground-truth frame) score a table of zeros.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field

import numpy as np
from waymo_open_dataset.protos import metrics_pb2

from detector.errors import InputError
from detector.eval.submission import FrameKey, frame_key

__all__ = ["InvalidObjectsError", "ObjectsCheck", "check_objects", "FrameCoverage", "frame_coverage"]

_BOX = ("center_x", "center_y", "center_z", "length", "width", "height", "heading")
_SHOWN = 3  # problems quoted in a message


class InvalidObjectsError(InputError):
    """Objects the metrics cannot score; the message names the file, the frame and the object index."""


@dataclass
class ObjectsCheck:
    """A file's objects with the invalid ones left out (when asked to skip them) and what was found."""

    objects: metrics_pb2.Objects
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, each naming frame and object


def _problem(values: np.ndarray, scored: bool, ground_truth: bool) -> str | None:
    box, typ, score, difficulty = values[:7], values[7], values[8], values[9]
    bad = [n for n, v in zip(_BOX, box) if not np.isfinite(v)]
    if bad:
        return f"non-finite box {', '.join(bad)} ({', '.join(f'{v:g}' for v in box)})"
    sizes = [f"{n}={v:g}" for n, v in zip(_BOX[3:6], box[3:6]) if not v > 0]
    if sizes:
        return f"box size {', '.join(sizes)} is not positive"
    if scored and not np.isfinite(score):
        return f"non-finite score {score:g}"
    if typ not in (0, 1, 2, 3, 4):
        return f"type {typ:g} is not a Waymo Label.Type (0..4)"
    if ground_truth and difficulty not in (0, 1, 2):
        return f"detection_difficulty_level {difficulty:g} is not 0, 1 or 2"
    return None


def check_objects(objects: metrics_pb2.Objects, path: str | os.PathLike, *, ground_truth: bool,
                  skip_invalid: bool = False) -> ObjectsCheck:
    """Refuse (``InvalidObjectsError``) or, with ``skip_invalid``, leave out the objects the metrics
    cannot score; every problem names ``path``, the frame (context name, timestamp) and the object's
    index in the file."""
    values = array("d")
    for obj in objects.objects:
        b = obj.object.box
        values.extend((b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading,
                       obj.object.type, obj.score, obj.object.detection_difficulty_level))
    table = np.frombuffer(values, np.float64).reshape(-1, 10)
    with np.errstate(invalid="ignore"):
        suspect = ~np.isfinite(table[:, :7]).all(1) | ~(table[:, 3:6] > 0).all(1) | ~np.isin(table[:, 7], range(5))
        if not ground_truth:
            suspect |= ~np.isfinite(table[:, 8])
        else:
            suspect |= ~np.isin(table[:, 9], range(3))
    invalid = np.flatnonzero(suspect)
    if not len(invalid):
        return ObjectsCheck(objects)
    kind = "ground-truth object" if ground_truth else "prediction"
    problems = []
    for i in invalid[:_SHOWN]:
        obj = objects.objects[int(i)]
        reason = _problem(table[i], scored=not ground_truth, ground_truth=ground_truth)
        problems.append(f"{kind} {int(i)} (frame {obj.context_name!r} at {obj.frame_timestamp_micros}): {reason}")
    if not skip_invalid:
        more = f" (and {len(invalid) - _SHOWN} more)" if len(invalid) > _SHOWN else ""
        raise InvalidObjectsError(f"{path}: {len(invalid)} invalid of {len(table)} objects: {'; '.join(problems)}"
                                  f"{more}. Fix the file, or pass --skip-invalid to leave them out (counted)")
    keep = np.ones(len(table), bool)
    keep[invalid] = False
    kept = metrics_pb2.Objects(objects=[o for o, k in zip(objects.objects, keep.tolist()) if k])
    return ObjectsCheck(kept, len(invalid), problems)


@dataclass(frozen=True)
class FrameCoverage:
    """How the prediction frames meet the ground-truth frames (frame key: context name + camera, timestamp)."""

    gt_frames: int
    gt_objects: int
    pred_frames: int
    pred_objects: int
    unmatched_frames: int  # prediction frames with no ground-truth object
    unmatched_objects: int  # predictions on those frames
    example: FrameKey | None = None

    def warnings(self, gt_path, pred_path) -> list[str]:
        out = []
        if self.gt_objects == 0:
            out.append(f"{gt_path}: the ground truth holds no object: every AP is 0 (is it the right file?)")
        if self.unmatched_frames:
            out.append(
                f"{pred_path}: {self.unmatched_objects} predictions on {self.unmatched_frames} of {self.pred_frames} "
                f"prediction frames match no ground-truth frame of {gt_path} (context name and timestamp, e.g. "
                f"{self.example[0]!r} at {self.example[1]}); they are scored as false positives. Check that both "
                "files come from the same split (frames without any labelled object are also absent from it)")
        return out


def frame_coverage(gt: metrics_pb2.Objects, pred: metrics_pb2.Objects) -> FrameCoverage:
    gt_keys = {frame_key(o) for o in gt.objects}
    pred_count: dict[FrameKey, int] = {}
    for o in pred.objects:
        k = frame_key(o)
        pred_count[k] = pred_count.get(k, 0) + 1
    unmatched = [k for k in pred_count if k not in gt_keys]
    return FrameCoverage(len(gt_keys), len(gt.objects), len(pred_count), len(pred.objects), len(unmatched),
                         sum(pred_count[k] for k in unmatched), unmatched[0] if unmatched else None)
