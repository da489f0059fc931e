"""Checks of leaderboard files before they are scored: objects the metrics cannot score (NaN/inf
values, boxes with non-positive sizes, unknown types), and files that do not describe the same frames.

Without them a NaN box stops the metrics with an error that names no file, and predictions of another
split (timestamps or context names that match no ground-truth frame) score a table of zeros. The
checks run on the objects grouped by frame (``objects_to_frames``), as numpy arrays: no second pass
over the protos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from detector.errors import InputError
from detector.eval.submission import FrameKey, FrameObjects

__all__ = ["InvalidObjectsError", "FramesCheck", "check_frames", "FrameCoverage", "frame_coverage"]

_BOX = ("center_x", "center_y", "center_z", "length", "width", "height", "heading")
_SHOWN = 3  # problems quoted in a message


class InvalidObjectsError(InputError):
    """Objects the metrics cannot score; the message names the file, the frame and the object index."""


@dataclass
class FramesCheck:
    """A file's frames with the invalid objects left out (when asked to skip them) and what was found."""

    frames: dict[FrameKey, FrameObjects]
    objects: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, each naming frame and object


def _invalid_mask(f: FrameObjects, ground_truth: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(f.boxes).all(1) | ~(f.boxes[:, 3:6] > 0).all(1) | ~np.isin(f.types, range(5))
    if ground_truth:
        bad |= ~np.isin(f.difficulty, range(3))
        if f.tracking_difficulty is not None:
            bad |= ~np.isin(f.tracking_difficulty, range(3))
    else:
        bad |= ~np.isfinite(f.scores)
    return bad


def _problem(f: FrameObjects, i: int, ground_truth: bool) -> str:
    box = f.boxes[i]
    bad = [n for n, v in zip(_BOX, box) if not np.isfinite(v)]
    if bad:
        return f"non-finite box {', '.join(bad)} ({', '.join(f'{v:g}' for v in box)})"
    sizes = [f"{n}={v:g}" for n, v in zip(_BOX[3:6], box[3:6]) if not v > 0]
    if sizes:
        return f"box size {', '.join(sizes)} is not positive"
    if f.types[i] not in range(5):
        return f"type {f.types[i]} is not a Waymo Label.Type (0..4)"
    if ground_truth and f.tracking_difficulty is not None and f.tracking_difficulty[i] not in range(3):
        return f"tracking_difficulty_level {f.tracking_difficulty[i]} is not 0, 1 or 2"
    if ground_truth:
        return f"detection_difficulty_level {f.difficulty[i]} is not 0, 1 or 2"
    return f"non-finite score {f.scores[i]:g}"


def _keep(f: FrameObjects, keep: np.ndarray) -> FrameObjects:
    return f.subset(keep)


def check_frames(frames: dict[FrameKey, FrameObjects], path: str | os.PathLike, *, ground_truth: bool,
                 skip_invalid: bool = False) -> FramesCheck:
    """Refuse (``InvalidObjectsError``) or, with ``skip_invalid``, leave out the objects the metrics
    cannot score; every problem names ``path``, the frame (context name + camera, timestamp) and the
    object's index among that frame's objects in the file."""
    kind = "ground-truth object" if ground_truth else "prediction"
    out: dict[FrameKey, FrameObjects] = {}
    invalid, total, problems = 0, 0, []
    for key, f in frames.items():
        total += len(f.boxes)
        bad = _invalid_mask(f, ground_truth)
        if not bad.any():
            out[key] = f
            continue
        idx = np.flatnonzero(bad)
        invalid += len(idx)
        for i in idx[: max(_SHOWN - len(problems), 0)]:
            problems.append(f"{kind} {int(i)} of frame ({key[0]!r}, {key[1]}): {_problem(f, int(i), ground_truth)}")
        kept = _keep(f, ~bad)
        if len(kept.boxes):
            out[key] = kept
    if invalid and not skip_invalid:
        more = f" (and {invalid - len(problems)} more)" if invalid > len(problems) else ""
        raise InvalidObjectsError(f"{path}: {invalid} invalid of {total} objects: {'; '.join(problems)}{more}. "
                                  "Fix the file, or pass --skip-invalid to leave them out (counted)")
    return FramesCheck(out if invalid else frames, total, invalid, problems)


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


def frame_coverage(gt: dict[FrameKey, FrameObjects], pred: dict[FrameKey, FrameObjects]) -> FrameCoverage:
    unmatched = [k for k in pred if k not in gt]
    return FrameCoverage(len(gt), sum(len(f.boxes) for f in gt.values()), len(pred),
                         sum(len(f.boxes) for f in pred.values()), len(unmatched),
                         sum(len(pred[k].boxes) for k in unmatched), unmatched[0] if unmatched else None)
