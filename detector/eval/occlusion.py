"""AP on objects that were occluded in the previous frames: where memory should help most.

Definition (the breakdown of the paper table, ``scripts/bench/paper_table.py``). A ground-truth object
of frame ``t`` is *previously occluded* when

- it has lidar points at ``t`` (``num_points > 0``), and
- in at least one of the previous ``k`` frames of its segment (``t-k .. t-1``, those that exist) its
  tracking id (``Frame.ids``) was labelled with ``num_points == 0``, or was not labelled at all while
  the object was within ``label_range`` metres of the ego. "Within range" is judged with the box
  centre at ``t`` moved into the vehicle frame of the earlier frame by the ego poses; an id absent
  because the object was farther away than the labelled range does not count.

AP/APH on that subset comes from the same :class:`~detector.eval.WaymoMetrics` as the full metrics
(official config, LEVEL_1/LEVEL_2 from points and difficulty), with the other ground truths of each
frame removed. A prediction that would have matched a removed ground truth (same type, 3D IoU at or
above the type's threshold, 0.7 vehicle / 0.5 others) is flagged ``pred_overlap_nlz``: like a
prediction in a no-label zone it then counts as a true positive if it matches a subset object and is
never a false positive. Every other prediction competes as usual, so false positives anywhere in the
frame lower the subset's precision exactly as they lower the full one's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from waymo_open_dataset.protos import metrics_pb2

from detector.boxes.iou import iou3d
from detector.data.frame_store import FrameStoreError, SegmentInfo, list_segments
from detector.errors import InputError, user_errors
from detector.eval.submission import FrameObjects, objects_to_frames, read_objects
from detector.eval.waymo_metrics import WaymoMetrics

#: Previous frames looked at.
PREVIOUS_FRAMES = 3
#: Waymo labels objects within 75 m of the ego (as does the synthesizer's default ``label_range``).
LABEL_RANGE_M = 75.0
_LABEL_ARRAYS = ("pose", "timestamp_micros", "boxes", "types", "ids", "num_points", "difficulty")

FrameKey = tuple[str, int]  # (context name == segment name, frame timestamp in microseconds)


class OcclusionInputError(InputError):
    """Labels or predictions that do not fit together (duplicate ids, frames of another split)."""


@dataclass
class FrameLabels:
    """The labels and pose of one frame-store frame (no points)."""

    segment: str
    index: int
    timestamp_micros: int
    pose: np.ndarray  # (4, 4) float64 vehicle -> world
    boxes: np.ndarray  # (M, 7) float64, Waymo boxes in this frame's vehicle frame
    types: np.ndarray  # (M,) int64 Waymo Label.Type
    ids: np.ndarray  # (M,) str tracking ids
    num_points: np.ndarray  # (M,) int64
    difficulty: np.ndarray  # (M,) int64

    @property
    def key(self) -> FrameKey:
        return self.segment, self.timestamp_micros


def load_labels(segment: SegmentInfo) -> list[FrameLabels]:
    """Every frame of ``segment`` in order, reading only the label arrays and the pose of each file."""
    frames = []
    for i in range(segment.num_frames):
        path = segment.frame_path(i)
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in _LABEL_ARRAYS if k in z.files}
        except (OSError, ValueError, EOFError) as e:  # zip errors are ValueError/OSError subclasses
            raise FrameStoreError(f"{path}: not a readable frame file ({e})") from e
        missing = [k for k in _LABEL_ARRAYS if k not in a]
        if missing:
            raise FrameStoreError(f"{path}: missing arrays {missing}")
        m = len(a["boxes"])
        frames.append(FrameLabels(
            segment=segment.name, index=i, timestamp_micros=int(a["timestamp_micros"]),
            pose=np.asarray(a["pose"], np.float64).reshape(4, 4),
            boxes=np.asarray(a["boxes"], np.float64).reshape(m, 7), types=np.asarray(a["types"], np.int64),
            ids=np.asarray(a["ids"]).astype(str), num_points=np.asarray(a["num_points"], np.int64),
            difficulty=np.asarray(a["difficulty"], np.int64),
        ))
    return frames


def previously_occluded(frames: Sequence[FrameLabels], k: int = PREVIOUS_FRAMES,
                        label_range: float = LABEL_RANGE_M) -> list[np.ndarray]:
    """For the consecutive frames of ONE segment: per frame, an (M,) bool mask of its previously
    occluded ground truths (see the module docstring)."""
    if k < 1:
        raise OcclusionInputError(f"k={k}: need at least one previous frame")
    by_id: list[dict[str, int]] = []
    for f in frames:
        ids = {str(x): j for j, x in enumerate(f.ids)}
        if len(ids) != len(f.ids):
            dup = sorted({x for x in f.ids if list(f.ids).count(x) > 1})[:3]
            raise OcclusionInputError(f"segment {f.segment} frame {f.index}: duplicate tracking ids {dup}")
        by_id.append(ids)
    masks = []
    for t, f in enumerate(frames):
        mask = np.zeros(len(f.boxes), bool)
        for j, obj_id in enumerate(f.ids):
            if f.num_points[j] <= 0:
                continue
            for p in range(max(0, t - k), t):
                prev = frames[p]
                i = by_id[p].get(str(obj_id))
                if i is not None:
                    hidden = prev.num_points[i] <= 0
                else:  # not labelled: occluded if it was within the labelled range
                    centre = np.linalg.solve(prev.pose, f.pose @ np.r_[f.boxes[j, :3], 1.0])
                    hidden = float(np.hypot(centre[0], centre[1])) <= label_range
                if hidden:
                    mask[j] = True
                    break
        masks.append(mask)
    return masks


def overlaps_removed(pred_boxes: np.ndarray, pred_types: np.ndarray, removed_boxes: np.ndarray,
                     removed_types: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
    """(P,) bool: the prediction has 3D IoU >= its type's threshold with a removed box of its type."""
    out = np.zeros(len(pred_boxes), bool)
    if len(pred_boxes) == 0 or len(removed_boxes) == 0:
        return out
    iou = iou3d(pred_boxes, removed_boxes)
    same = np.asarray(pred_types)[:, None] == np.asarray(removed_types)[None, :]
    thr = np.asarray(iou_thresholds, np.float64)[np.asarray(pred_types)]
    return ((iou >= thr[:, None]) & same).any(axis=1)


def subset_metrics(frames: Iterable[tuple[FrameLabels, np.ndarray]], predictions: Mapping[FrameKey, FrameObjects],
                   config: metrics_pb2.Config | None = None) -> tuple[WaymoMetrics, dict[int, int]]:
    """Waymo metrics over the ground truths selected by each frame's mask, predictions that overlap
    an unselected ground truth (with points) flagged as in a no-label zone. Returns the metrics and
    the number of selected ground truths with points per type."""
    metrics = WaymoMetrics(config)
    thresholds = metrics.spec.iou_thresholds
    counts: dict[int, int] = {}
    empty = FrameObjects.empty()
    for f, keep in frames:
        keep = np.asarray(keep, bool)
        p = predictions.get(f.key, empty)
        removed = ~keep & (f.num_points > 0)
        flag = p.overlap_nlz.astype(bool) | overlaps_removed(p.boxes, p.types, f.boxes[removed], f.types[removed],
                                                            thresholds)
        metrics.add_frame(f.key, f.boxes[keep], f.types[keep], f.num_points[keep], f.difficulty[keep],
                          p.boxes, p.scores, p.types, flag)
        for t in f.types[keep & (f.num_points > 0)]:
            counts[int(t)] = counts.get(int(t), 0) + 1
    return metrics, counts


def predictions_by_frame(objects: metrics_pb2.Objects, source: str = "predictions") -> dict[FrameKey, FrameObjects]:
    """Predictions grouped by (context name, timestamp); one camera name per frame (lidar detections)."""
    out: dict[FrameKey, FrameObjects] = {}
    for (name, ts), objs in objects_to_frames(objects).items():
        context = name.rsplit("_", 1)[0]  # objects_to_frames keys are "<context>_<camera name number>"
        if (context, ts) in out:
            raise OcclusionInputError(f"{source}: frame ({context}, {ts}) has objects under several camera names")
        out[(context, ts)] = objs
    return out


@dataclass
class OcclusionResult:
    """AP/APH of the previously occluded subset (official breakdown names, as ``WaymoMetrics.compute``)."""

    metrics: dict[str, dict[str, float]]
    num_objects: dict[int, int]  # subset ground truths with points, per Waymo type
    num_frames: int
    k: int


def occluded_metrics(store_root: str | os.PathLike, split: str, predictions: str | os.PathLike | metrics_pb2.Objects,
                     k: int = PREVIOUS_FRAMES, label_range: float = LABEL_RANGE_M,
                     config: metrics_pb2.Config | None = None) -> OcclusionResult:
    """AP on the previously occluded objects of a frame-store split, for leaderboard-format predictions
    (a ``.bin`` path or ``metrics_pb2.Objects``). Every prediction must belong to a frame of the split."""
    source = str(predictions) if not isinstance(predictions, metrics_pb2.Objects) else "predictions"
    objects = predictions if isinstance(predictions, metrics_pb2.Objects) else read_objects(predictions)
    preds = predictions_by_frame(objects, source)
    segments = list_segments(store_root, split)
    if not segments:
        raise FrameStoreError(f"{Path(store_root) / split}: no complete segments")
    labelled: list[tuple[FrameLabels, np.ndarray]] = []
    for seg in segments:
        frames = load_labels(seg)
        labelled += list(zip(frames, previously_occluded(frames, k, label_range)))
    unknown = set(preds) - {f.key for f, _ in labelled}
    if unknown:
        raise OcclusionInputError(f"{source}: {len(unknown)} frames are not in {Path(store_root) / split}, "
                         f"e.g. {sorted(unknown)[0]} (predictions of another split?)")
    metrics, counts = subset_metrics(labelled, preds, config)
    return OcclusionResult(metrics=metrics.compute(), num_objects=counts, num_frames=len(labelled), k=k)


def subset_counts(store_root: str | os.PathLike, split: str, k: int = PREVIOUS_FRAMES,
                  label_range: float = LABEL_RANGE_M) -> dict[int, tuple[int, int]]:
    """Per Waymo type: (ground truths with points, of which previously occluded) over a split."""
    out: dict[int, tuple[int, int]] = {}
    for seg in list_segments(store_root, split):
        frames = load_labels(seg)
        for f, mask in zip(frames, previously_occluded(frames, k, label_range)):
            for t, occ in zip(f.types[f.num_points > 0], mask[f.num_points > 0]):
                n_all, n_occ = out.get(int(t), (0, 0))
                out[int(t)] = (n_all + 1, n_occ + int(occ))
    return out


@user_errors(prefix="occlusion", returns=True)
def main(argv: list[str] | None = None) -> int:
    import argparse

    from detector.atomic import write_json_atomic
    from detector.eval.report import format_table

    parser = argparse.ArgumentParser(prog="python -m detector.eval.occlusion",
                                     description="AP/APH on objects occluded in the previous frames.")
    parser.add_argument("store", help="frame store root (holds <split>/<segment>/...)")
    parser.add_argument("split", help="e.g. validation")
    parser.add_argument("pred", nargs="?", help="predictions, metrics_pb2.Objects (.bin), e.g. detector.evaluate's; "
                                                "without it, only count the objects")
    parser.add_argument("--k", type=int, default=PREVIOUS_FRAMES, help="previous frames looked at")
    parser.add_argument("--label-range", type=float, default=LABEL_RANGE_M,
                        help="metres from the ego within which objects are labelled (75 for Waymo)")
    parser.add_argument("--json", metavar="OUT.json", help="write {breakdown: {AP, APH}} here")
    args = parser.parse_args(argv)
    names = {1: "vehicle", 2: "pedestrian", 3: "sign", 4: "cyclist"}
    if args.json:
        from detector.atomic import check_writable
        from detector.output_paths import check_not_input

        check_not_input(args.json, [args.pred], "--json", "pred")
        check_writable(args.json)
    if args.pred is None:
        counts = subset_counts(args.store, args.split, args.k, args.label_range)
        for t, (n_all, n_occ) in sorted(counts.items()):
            print(f"{names.get(t, t):<12}{n_all:>9} objects with points{n_occ:>8} previously occluded (k={args.k})")
        return 0
    res = occluded_metrics(args.store, args.split, args.pred, args.k, args.label_range)
    table = {k: v for k, v in res.metrics.items() if k.startswith("OBJECT_TYPE_") and "SIGN" not in k}
    print(format_table(table), end="")
    counts = ", ".join(f"{names.get(t, t)} {n}" for t, n in sorted(res.num_objects.items()))
    print(f"{res.num_frames} frames; previously occluded objects (k={res.k}): {counts or 'none'}")
    if args.json:
        write_json_atomic(args.json, {"metrics": res.metrics,
                                      "num_objects": {str(t): n for t, n in res.num_objects.items()},
                                      "num_frames": res.num_frames, "k": res.k})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
