"""Waymo 3D detection metrics (AP, APH at LEVEL_1/LEVEL_2 per breakdown), streaming, TensorFlow-free.

>>> m = WaymoMetrics()                       # the official default detection config
>>> m.add_frame(key, gt_boxes, gt_types, gt_num_points, gt_difficulty,
...             pred_boxes, pred_scores, pred_types)
>>> m.compute()["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]
{'AP': ..., 'APH': ...}

Frames are buffered and reduced in batches to true/false positive, false negative and
heading-accuracy counts per (breakdown shard, score cutoff); memory stays bounded whatever the
number of frames. Precision, recall and the AP integral follow the official float32 arithmetic.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from waymo_open_dataset.protos import metrics_pb2

from detector.eval import breakdowns
from detector.eval.config import MetricsSpec
from detector.eval.matching import FrameBatch, ShardCounts, batch_counts

#: Ground truth with at most this many lidar points and no difficulty label is LEVEL_2.
LEVEL_2_MAX_POINTS = 5
_K_ERROR = np.float32(1e-6)


@dataclass(frozen=True)
class PRCurve:
    """Precision/recall of one breakdown at every score cutoff, and its AP / APH."""

    name: str
    score_cutoffs: np.ndarray  # (C,) float32
    precision: np.ndarray  # (C,) float32
    recall: np.ndarray  # (C,) float32
    precision_ha: np.ndarray  # (C,) float32, heading-accuracy weighted
    tp: np.ndarray  # (C,) int64
    fp: np.ndarray  # (C,) int64
    fn: np.ndarray  # (C,) int64
    ap: float
    aph: float


def mean_average_precision(precisions: np.ndarray, recalls: np.ndarray, recall_delta: float) -> float:
    """Area under the interpolated P/R curve, as the official ``ComputeMeanAveragePrecision``.

    Precision at each recall is the best precision at that recall or above; gaps wider than
    ``recall_delta`` get points every ``recall_delta``; the area is a trapezoid sum; the point at
    recall 0 takes the precision of its neighbour. Arithmetic in float32 like the original.
    """
    f32 = np.float32
    best: dict[np.float32, np.float32] = {f32(0.0): f32(1.0)}
    for p, r in zip(np.asarray(precisions, f32), np.asarray(recalls, f32)):
        best[r] = max(best.get(r, f32(0.0)), p)
    delta = f32(recall_delta)
    step = f32(delta + _K_ERROR)
    points: list[list[np.float32]] = []  # [precision, recall], recall descending
    last = min(best)
    max_p = f32(0.0)
    for r in sorted(best, reverse=True):
        while f32(last - r) > step:
            last = f32(last - delta)
            points.append([max_p, last])
        max_p = max(best[r], max_p)
        points.append([max_p, r])
        last = r
    if len(points) >= 2:
        points[-1][0] = points[-2][0]
    ap = f32(0.0)
    for (p0, r0), (p1, r1) in zip(points[:-1], points[1:]):
        ap = f32(float(ap) + 0.5 * float(f32(r0 - r1)) * float(f32(p0 + p1)))
    return float(ap)


def _precision_recall(tp, fp, fn, sum_ha, min_precision):
    f32 = np.float32
    tp_fp, tp_fn = tp + fp, tp + fn
    safe = np.maximum(tp_fp, 1).astype(f32)
    prec = np.where(tp_fp > 0, tp.astype(f32) / safe, f32(0))
    prec_ha = np.where(tp_fp > 0, sum_ha.astype(f32) / safe, f32(0))
    prec = np.where(prec < min_precision, f32(0), prec)
    prec_ha = np.where(prec_ha < min_precision, f32(0), prec_ha)
    rec = np.where(tp_fn > 0, tp.astype(f32) / np.maximum(tp_fn, 1).astype(f32), f32(0))
    prec = np.where(rec == 0, f32(1), prec).astype(f32)
    prec_ha = np.where(rec == 0, f32(1), prec_ha).astype(f32)
    return prec, prec_ha, rec.astype(f32)


def _as_array(value, dtype, shape_tail: tuple, key, field: str) -> np.ndarray:
    arr = np.array(value, dtype=dtype)  # a copy: the caller may reuse its buffers before a flush
    if arr.ndim == 1 and arr.size == 0 and shape_tail:
        arr = arr.reshape((0,) + shape_tail)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        want = "(N" + "".join(f", {d}" for d in shape_tail) + ")"
        raise ValueError(f"frame {key!r}: {field} must have shape {want}, got {arr.shape}")
    return arr


class WaymoMetrics:
    """Streaming Waymo detection metrics; ``config`` is a ``metrics_pb2.Config`` (default: official)."""

    def __init__(self, config: metrics_pb2.Config | None = None, batch_frames: int = 256):
        self.spec = MetricsSpec.from_config(config)
        self.batch_frames = int(batch_frames)
        n_cut = len(self.spec.score_cutoffs)
        self._totals = [ShardCounts.zeros(breakdowns.num_shards(g), len(lv), n_cut)
                        for g, lv in zip(self.spec.generators, self.spec.levels)]
        self._keys: set = set()
        self._pending: list[tuple] = []
        self._pending_objects = 0

    @property
    def num_frames(self) -> int:
        return len(self._keys)

    def add_frame(self, frame_key: Hashable, gt_boxes, gt_types, gt_num_points, gt_difficulty,
                  pred_boxes, pred_scores, pred_types, pred_overlap_nlz=None) -> None:
        """Add one frame. Ground truth with ``num_points <= 0`` is ignored; ground truth with
        difficulty 0 (unset) is LEVEL_2 with at most 5 points, else LEVEL_1. Predictions that
        overlap a no-label zone (``pred_overlap_nlz``) are never false positives."""
        if frame_key in self._keys:
            raise ValueError(f"frame {frame_key!r} was added twice")
        gb = _as_array(gt_boxes, np.float64, (7,), frame_key, "gt_boxes")
        m = len(gb)
        gt_t = _as_array(gt_types, np.int64, (), frame_key, "gt_types")
        npts = _as_array(gt_num_points, np.int64, (), frame_key, "gt_num_points")
        diff = _as_array(gt_difficulty, np.int64, (), frame_key, "gt_difficulty")
        pb = _as_array(pred_boxes, np.float64, (7,), frame_key, "pred_boxes")
        k = len(pb)
        scores = _as_array(pred_scores, np.float32, (), frame_key, "pred_scores")
        pt = _as_array(pred_types, np.int64, (), frame_key, "pred_types")
        nlz = (np.zeros(k, bool) if pred_overlap_nlz is None
               else _as_array(pred_overlap_nlz, bool, (), frame_key, "pred_overlap_nlz"))
        for name, arr, n in (("gt_types", gt_t, m), ("gt_num_points", npts, m), ("gt_difficulty", diff, m),
                             ("pred_scores", scores, k), ("pred_types", pt, k), ("pred_overlap_nlz", nlz, k)):
            if len(arr) != n:
                raise ValueError(f"frame {frame_key!r}: {name} has {len(arr)} entries for {n} boxes")
        for name, arr in (("gt_boxes", gb), ("pred_boxes", pb), ("pred_scores", scores)):
            if not np.isfinite(arr).all():
                raise ValueError(f"frame {frame_key!r}: {name} has non-finite values")
        for name, arr in (("gt_types", gt_t), ("pred_types", pt)):
            if arr.size and (arr.min() < 0 or arr.max() > breakdowns.NUM_TYPES):
                raise ValueError(f"frame {frame_key!r}: {name} must be Waymo Label.Type values 0..4")
        if diff.size and (diff.min() < 0 or diff.max() > 2):
            raise ValueError(f"frame {frame_key!r}: gt_difficulty must be 0 (unset), 1 or 2")

        keep = npts > 0
        level = np.where(diff == 0, np.where(npts <= LEVEL_2_MAX_POINTS, 2, 1), diff)
        self._keys.add(frame_key)
        self._pending.append((gb[keep], gt_t[keep], level[keep], pb, scores, pt, nlz))
        self._pending_objects += m + k
        if len(self._pending) >= self.batch_frames or self._pending_objects > 200_000:
            self._flush()

    def add_result(self, result) -> None:
        """Add one frame from a record with the fields of ``detector.streaming.FrameResult`` (its ``key``,
        ground truth ``gt_*`` and detections ``boxes``, ``scores``, ``types``)."""
        self.add_frame(result.key, result.gt_boxes, result.gt_types, result.gt_num_points, result.gt_difficulty,
                       result.boxes, result.scores, result.types)

    def _flush(self) -> None:
        if not self._pending:
            return
        parts = list(zip(*self._pending))
        gt_n = np.array([len(x) for x in parts[0]])
        pd_n = np.array([len(x) for x in parts[3]])
        frames = np.arange(len(self._pending))
        batch = FrameBatch(
            pred_frame=np.repeat(frames, pd_n),
            pred_boxes=np.concatenate(parts[3]).reshape(-1, 7),
            pred_scores=np.concatenate(parts[4]).astype(np.float32),
            pred_types=np.concatenate(parts[5]).astype(np.int64),
            pred_nlz=np.concatenate(parts[6]).astype(bool),
            gt_frame=np.repeat(frames, gt_n),
            gt_boxes=np.concatenate(parts[0]).reshape(-1, 7),
            gt_types=np.concatenate(parts[1]).astype(np.int64),
            gt_difficulty=np.concatenate(parts[2]).astype(np.int64),
        )
        self._pending, self._pending_objects = [], 0
        for total, counts in zip(self._totals, batch_counts(batch, self.spec)):
            total.add(counts)

    def pr_curves(self) -> dict[str, PRCurve]:
        """Per breakdown name (official names, official order): the P/R curve and AP/APH."""
        self._flush()
        spec = self.spec
        names = iter(spec.breakdown_names)
        out: dict[str, PRCurve] = {}
        for total, levels in zip(self._totals, spec.levels):
            for shard in range(total.tp.shape[0]):
                for li, _ in enumerate(levels):
                    name = next(names)
                    tp, fp, fn = total.tp[shard], total.fp[shard], total.fn[shard, li]
                    prec, prec_ha, rec = _precision_recall(tp, fp, fn, total.sum_ha[shard], spec.min_precision)
                    out[name] = PRCurve(
                        name=name, score_cutoffs=spec.score_cutoffs.copy(), precision=prec, recall=rec,
                        precision_ha=prec_ha, tp=tp.copy(), fp=fp.copy(), fn=fn.copy(),
                        ap=mean_average_precision(prec, rec, spec.desired_recall_delta),
                        aph=mean_average_precision(prec_ha, rec, spec.desired_recall_delta),
                    )
        return out

    def merge(self, other: WaymoMetrics) -> WaymoMetrics:
        """Add the counts of ``other`` (frames disjoint from this one's), e.g. from another DDP rank."""
        if other.spec.breakdown_names != self.spec.breakdown_names:
            raise ValueError("cannot merge metrics of different configurations")
        common = self._keys & other._keys
        if common:
            raise ValueError(f"cannot merge: {len(common)} frames in both, e.g. {next(iter(common))!r}")
        self._flush()
        other._flush()
        for mine, theirs in zip(self._totals, other._totals):
            mine.add(theirs)
        self._keys |= other._keys
        return self

    def compute(self) -> dict[str, dict[str, float]]:
        """``{breakdown name: {"AP": float, "APH": float}}`` over all frames added so far."""
        return {name: {"AP": c.ap, "APH": c.aph} for name, c in self.pr_curves().items()}


def evaluate_objects(gt: metrics_pb2.Objects, pred: metrics_pb2.Objects,
                     config: metrics_pb2.Config | None = None) -> dict[str, dict[str, float]]:
    """Metrics of leaderboard-format predictions against ground truth, frames keyed officially."""
    return evaluate_objects_curves(gt, pred, config).compute()


def evaluate_objects_curves(gt: metrics_pb2.Objects, pred: metrics_pb2.Objects,
                            config: metrics_pb2.Config | None = None) -> WaymoMetrics:
    """As :func:`evaluate_objects`, returning the filled :class:`WaymoMetrics` (for P/R curves)."""
    from detector.eval.submission import objects_to_frames

    return evaluate_frames_curves(objects_to_frames(gt), objects_to_frames(pred), config)


def evaluate_frames_curves(gt_frames: dict, pred_frames: dict,
                           config: metrics_pb2.Config | None = None) -> WaymoMetrics:
    """As :func:`evaluate_objects_curves`, from objects already grouped by frame (``objects_to_frames``)."""
    from detector.eval.submission import FrameObjects

    metrics = WaymoMetrics(config)
    empty = FrameObjects.empty()
    for key in sorted(set(gt_frames) | set(pred_frames)):
        g, p = gt_frames.get(key, empty), pred_frames.get(key, empty)
        metrics.add_frame(key, g.boxes, g.types, g.num_points, g.difficulty,
                          p.boxes, p.scores, p.types, p.overlap_nlz)
    return metrics
