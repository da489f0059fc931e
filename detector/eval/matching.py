"""Per-frame matching of the Waymo detection metrics, reduced to counts per (shard, score cutoff).

The official definition runs, for every frame, breakdown shard and score cutoff, a Hungarian
matching that maximizes the sum of IoUs quantized to 1e-6 (``round(iou * 1e6)`` in float32) over
the prediction/ground-truth pairs that may match (same type, IoU >= the type's threshold). Here:

* only pairs whose IoU can reach the threshold get an exact IoU (circle, height and bounding-box
  bounds prune the rest), so the matchable pairs form a sparse bipartite graph;
* the matching decomposes over the graph's connected components, and within a component it only
  changes at the score cutoffs where one of its predictions drops out;
* components with one ground truth (or one prediction) have a closed form per cutoff: the present
  partner with the largest weight; other components are solved with
  ``scipy.optimize.linear_sum_assignment`` on each distinct prediction set;
* ties (equal quantized sums; in practice only exact duplicate boxes): predictions tied for one
  ground truth resolve to the lowest index, as the official solver does. Ground truths tied for one
  prediction also resolve to the lowest index, but there the official solver's choice depends on
  unrelated predictions of the frame; counts can differ only if such identical ground-truth boxes
  differ in difficulty level;
* every outcome is an interval of cutoff indices, accumulated with difference arrays, so a frame
  costs a few vectorized operations however many cutoffs there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from detector.boxes import bev_half_extent
from detector.boxes.iou import paired_iou, valid_dims
from detector.eval import breakdowns
from detector.eval.config import MetricsSpec

MAX_IOU_WEIGHT = np.float32(1e6)  # official kMaxIoU


@dataclass
class FrameBatch:
    """Objects of several frames, concatenated; ``*_frame`` is each object's frame number."""

    pred_frame: np.ndarray  # (P,) int64
    pred_boxes: np.ndarray  # (P, 7) float64
    pred_scores: np.ndarray  # (P,) float32
    pred_types: np.ndarray  # (P,) int64
    pred_nlz: np.ndarray  # (P,) bool
    gt_frame: np.ndarray  # (G,) int64
    gt_boxes: np.ndarray  # (G, 7) float64
    gt_types: np.ndarray  # (G,) int64
    gt_difficulty: np.ndarray  # (G,) int64, LEVEL_1 or LEVEL_2


@dataclass
class ShardCounts:
    """Counts of one breakdown generator: shards x score cutoffs (x difficulty levels for FN)."""

    tp: np.ndarray  # (S, C) int64
    fp: np.ndarray  # (S, C) int64
    sum_ha: np.ndarray  # (S, C) float64, sum of heading accuracies of the true positives
    fn: np.ndarray  # (S, L, C) int64

    @classmethod
    def zeros(cls, num_shards: int, num_levels: int, num_cutoffs: int) -> ShardCounts:
        s, c = num_shards, num_cutoffs
        return cls(np.zeros((s, c), np.int64), np.zeros((s, c), np.int64), np.zeros((s, c)),
                   np.zeros((s, num_levels, c), np.int64))

    def add(self, other: ShardCounts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.sum_ha += other.sum_ha
        self.fn += other.fn


# ----------------------------------------------------------------------------- heading accuracy
def _normalize_angle(rad: np.ndarray) -> np.ndarray:
    """Wrap to [-pi, pi) exactly as the official ``NormalizeAngle<double>``."""
    span = np.pi - (-np.pi)
    x = rad - (-np.pi)
    mod = x - np.trunc(x * (1.0 / span)) * span
    shifted = span + mod
    return np.where(mod >= 0, mod, np.where(shifted >= span, 0.0, shifted)) + (-np.pi)


def heading_accuracy(pred_heading: np.ndarray, gt_heading: np.ndarray) -> np.ndarray:
    """Official heading accuracy ``1 - |wrapped difference| / pi`` in its float32 arithmetic."""
    pd = _normalize_angle(np.asarray(pred_heading, np.float64)).astype(np.float32)
    gt = _normalize_angle(np.asarray(gt_heading, np.float64)).astype(np.float32)
    diff = np.abs(pd - gt)
    diff = np.where(diff > np.pi, (2.0 * np.pi - diff.astype(np.float64)).astype(np.float32), diff)
    return np.clip(1.0 - diff.astype(np.float64) / np.pi, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- matchable pairs
def _overlapping_pairs(p_group, p_box, p_half, g_group, g_box, g_half, g_type):
    """Index pairs with equal group and overlapping axis-aligned footprints: a sweep along x.

    Ground truths are sorted by ``x + group * offset``; each prediction takes the window of
    ground truths its x-extent (plus the widest ground truth of its type) can reach.
    """
    span = 2.0 * (np.abs(np.r_[p_box[:, 0], g_box[:, 0]]).max(initial=0.0)
                  + np.r_[p_half[:, 0], g_half[:, 0]].max(initial=0.0)) + 1.0
    s_p = p_box[:, 0] + p_group * span
    s_g = g_box[:, 0] + g_group * span
    order = np.argsort(s_g, kind="stable")
    s_sorted = s_g[order]
    widest = np.zeros(breakdowns.NUM_TYPES + 1)
    np.maximum.at(widest, g_type, g_half[:, 0])
    reach = p_half[:, 0] + widest[p_group % 8]
    start = np.searchsorted(s_sorted, s_p - reach, side="left")
    reps = np.searchsorted(s_sorted, s_p + reach, side="right") - start
    pi = np.repeat(np.arange(len(s_p)), reps)
    offsets = np.arange(len(pi)) - np.repeat(np.cumsum(reps) - reps, reps)
    gi = order[np.repeat(start, reps) + offsets]
    keep = (p_group[pi] == g_group[gi])
    keep &= np.abs(p_box[pi, 0] - g_box[gi, 0]) < p_half[pi, 0] + g_half[gi, 0]
    keep &= np.abs(p_box[pi, 1] - g_box[gi, 1]) < p_half[pi, 1] + g_half[gi, 1]
    return pi[keep], gi[keep]


def matchable_pairs(batch: FrameBatch, spec: MetricsSpec):
    """Pairs (same frame, same type) with IoU >= the type's threshold.

    Returns (pred index, gt index, float32 IoU, int64 quantized matching weight).
    """
    pb, gb = batch.pred_boxes, batch.gt_boxes
    use_h = spec.use_height
    p_ok = valid_dims(pb, use_h) & (batch.pred_types >= 1) & (batch.pred_types <= breakdowns.NUM_TYPES)
    g_ok = valid_dims(gb, use_h) & (batch.gt_types >= 1) & (batch.gt_types <= breakdowns.NUM_TYPES)
    p_idx, g_idx = np.nonzero(p_ok)[0], np.nonzero(g_ok)[0]
    hp, hg = bev_half_extent(pb[p_idx]), bev_half_extent(gb[g_idx])
    pi, gi = _overlapping_pairs(batch.pred_frame[p_idx] * 8 + batch.pred_types[p_idx], pb[p_idx], hp,
                                batch.gt_frame[g_idx] * 8 + batch.gt_types[g_idx], gb[g_idx], hg,
                                batch.gt_types[g_idx])
    # Upper bound of the IoU from the overlap of the axis-aligned footprints and of the heights.
    ox = np.minimum(pb[p_idx[pi], 0] + hp[pi, 0], gb[g_idx[gi], 0] + hg[gi, 0]) - np.maximum(
        pb[p_idx[pi], 0] - hp[pi, 0], gb[g_idx[gi], 0] - hg[gi, 0])
    oy = np.minimum(pb[p_idx[pi], 1] + hp[pi, 1], gb[g_idx[gi], 1] + hg[gi, 1]) - np.maximum(
        pb[p_idx[pi], 1] - hp[pi, 1], gb[g_idx[gi], 1] - hg[gi, 1])
    pi, gi = p_idx[pi], g_idx[gi]
    area_p, area_g = pb[pi, 3] * pb[pi, 4], gb[gi, 3] * gb[gi, 4]
    inter = np.minimum(ox * oy, np.minimum(area_p, area_g))
    if use_h:
        dz = np.minimum(pb[pi, 2] + 0.5 * pb[pi, 5], gb[gi, 2] + 0.5 * gb[gi, 5]) - np.maximum(
            pb[pi, 2] - 0.5 * pb[pi, 5], gb[gi, 2] - 0.5 * gb[gi, 5])
        inter = inter * np.minimum(dz, np.minimum(pb[pi, 5], gb[gi, 5]))
        vol_p, vol_g = area_p * pb[pi, 5], area_g * gb[gi, 5]
    else:
        vol_p, vol_g = area_p, area_g
    inter = np.maximum(inter, 0.0)
    bound = inter / np.maximum(vol_p + vol_g - inter, 1e-300)
    keep = bound >= spec.iou_thresholds[batch.pred_types[pi]].astype(np.float64) - 1e-6
    pi, gi = pi[keep], gi[keep]

    iou = paired_iou(pb[pi], gb[gi], use_height=use_h).astype(np.float32)
    keep = iou >= spec.iou_thresholds[batch.pred_types[pi]]
    pi, gi, iou = pi[keep], gi[keep], iou[keep]
    # std::round(float * int) in float32: half away from zero; the product is positive.
    weight = np.floor((iou * MAX_IOU_WEIGHT).astype(np.float64) + 0.5).astype(np.int64)
    return pi, gi, iou, weight


# ----------------------------------------------------------------------------- counting
class _Intervals:
    """Difference arrays over score-cutoff indices: add a value on [start, end) of a shard."""

    def __init__(self, num_shards: int, num_levels: int, num_cutoffs: int):
        self.s, self.l, self.c = num_shards, num_levels, num_cutoffs
        self.width = num_cutoffs + 1
        self.tp = np.zeros(num_shards * self.width)
        self.fp = np.zeros(num_shards * self.width)
        self.ha = np.zeros(num_shards * self.width)
        self.fn = np.zeros(num_shards * num_levels * self.width)

    def _add(self, target, row, start, end, weight=None):
        start, end = np.broadcast_arrays(np.asarray(start, np.int64), np.asarray(end, np.int64))
        m = start < end
        if not m.any():
            return
        row = np.broadcast_to(row, m.shape)[m]
        w = None if weight is None else np.broadcast_to(weight, m.shape)[m]
        n = len(target)
        target += np.bincount(row * self.width + start[m], w, minlength=n)
        target -= np.bincount(row * self.width + end[m], w, minlength=n)

    def pred(self, shard, start, end, tp=None, ha=None, fp=None):
        if tp is not None:
            self._add(self.tp, shard, start, end, tp)
            self._add(self.ha, shard, start, end, ha)
        if fp is not None:
            self._add(self.fp, shard, start, end, fp)

    def fn_add(self, shard, difficulty, levels, start, end):
        for li, level in enumerate(levels):
            self._add(self.fn, shard * self.l + li, start, end, (difficulty <= level).astype(np.float64))

    def counts(self) -> ShardCounts:
        def done(arr, shape):
            return np.rint(np.cumsum(arr.reshape(shape), axis=-1)[..., :-1])

        s, l, w = self.s, self.l, self.width
        return ShardCounts(
            tp=done(self.tp, (s, w)).astype(np.int64),
            fp=done(self.fp, (s, w)).astype(np.int64),
            sum_ha=np.cumsum(self.ha.reshape(s, w), axis=-1)[:, :-1],
            fn=done(self.fn, (s, l, w)).astype(np.int64),
        )


def generator_counts(gen: int, levels, batch: FrameBatch, spec: MetricsSpec, pairs, cut_k, ha, tp_ok) -> ShardCounts:
    """Counts of one breakdown generator over a batch of frames.

    ``pairs``: the output of :func:`matchable_pairs`; ``cut_k``: per prediction, the number of
    score cutoffs it passes (it is present at cutoff indices ``< cut_k``); ``ha``: the heading
    accuracy of each pair; ``tp_ok``: whether that pair counts as a true positive when matched.
    """
    n_cut = len(spec.score_cutoffs)
    acc = _Intervals(breakdowns.num_shards(gen), len(levels), n_cut)
    sp = breakdowns.shard_ids(gen, batch.pred_boxes, batch.pred_types)
    sg = breakdowns.shard_ids(gen, batch.gt_boxes, batch.gt_types)
    ep, eg, _, w = pairs
    same = (sp[ep] == sg[eg]) & (sp[ep] >= 0)
    ep, eg, w, e_ha, e_ok = ep[same], eg[same], w[same], ha[same], tp_ok[same]
    n_p, n_g = len(sp), len(sg)
    nodes = n_p + n_g
    graph = coo_matrix((np.ones(len(ep)), (ep, n_p + eg)), shape=(nodes, nodes))
    _, label = connected_components(graph, directed=False)
    comp_p, comp_g = label[:n_p], label[n_p:]
    p_in, g_in = sp >= 0, sg >= 0
    npc = np.bincount(comp_p[p_in], minlength=nodes)
    ngc = np.bincount(comp_g[g_in], minlength=nodes)
    nlz = batch.pred_nlz
    diff = batch.gt_difficulty
    zero = np.zeros(1, np.int64)

    # Predictions and ground truths without any matchable partner.
    lone_p = np.nonzero(p_in & (ngc[comp_p] == 0))[0]
    acc.pred(sp[lone_p], zero, cut_k[lone_p], fp=(~nlz[lone_p]).astype(np.float64))
    lone_g = np.nonzero(g_in & (npc[comp_g] == 0))[0]
    acc.fn_add(sg[lone_g], diff[lone_g], levels, zero, np.full(len(lone_g), n_cut))

    comp_e = comp_p[ep]
    # Components with one ground truth: the present prediction of largest weight matches it.
    star = ngc[comp_e] == 1
    if star.any():
        e_p, e_g, e_w, e_c = ep[star], eg[star], w[star], comp_e[star]
        order = np.lexsort((e_p, -e_w, e_c))
        e_p, e_g, e_c = e_p[order], e_g[order], e_c[order]
        e_h, e_o = e_ha[star][order], e_ok[star][order]
        k = cut_k[e_p]
        first = np.r_[True, e_c[1:] != e_c[:-1]]
        rank = np.cumsum(first) - 1
        key = rank * (n_cut + 2) + k
        prev = np.r_[-1, np.maximum.accumulate(key)[:-1]] - rank * (n_cut + 2)
        m_prev = np.where(first, 0, np.maximum(prev, 0))
        shard = sp[e_p]
        acc.pred(shard, m_prev, np.maximum(m_prev, k), tp=e_o.astype(np.float64), ha=np.where(e_o, e_h, 0.0))
        acc.pred(shard, zero, np.minimum(k, m_prev), fp=(~nlz[e_p]).astype(np.float64))
        last = np.r_[first[1:], True]
        m_all = np.maximum(np.maximum.accumulate(key) - rank * (n_cut + 2), 0)[last]
        g_last = e_g[last]
        acc.fn_add(sg[g_last], diff[g_last], levels, m_all, np.full(len(g_last), n_cut))

    # Components with one prediction and several ground truths: it matches the best one.
    star_p = (npc[comp_e] == 1) & (ngc[comp_e] >= 2)
    if star_p.any():
        e_p, e_g, e_w, e_c = ep[star_p], eg[star_p], w[star_p], comp_e[star_p]
        order = np.lexsort((e_g, -e_w, e_c))
        e_p, e_g, e_c = e_p[order], e_g[order], e_c[order]
        e_h, e_o = e_ha[star_p][order], e_ok[star_p][order]
        best = np.r_[True, e_c[1:] != e_c[:-1]]
        k = cut_k[e_p[best]]
        acc.pred(sp[e_p[best]], zero, k, tp=e_o[best].astype(np.float64), ha=np.where(e_o[best], e_h[best], 0.0))
        gb_ = e_g[best]
        acc.fn_add(sg[gb_], diff[gb_], levels, k, np.full(len(gb_), n_cut))
        go = e_g[~best]
        acc.fn_add(sg[go], diff[go], levels, zero, np.full(len(go), n_cut))

    general = (npc[comp_e] >= 2) & (ngc[comp_e] >= 2)
    if general.any():
        _general_components(acc, general, ep, eg, w, e_ha, e_ok, comp_e, sp, sg, cut_k, nlz, diff, levels, n_cut)
    return acc.counts()


def _general_components(acc, mask, ep, eg, w, e_ha, e_ok, comp_e, sp, sg, cut_k, nlz, diff, levels, n_cut):
    """Components with several predictions and several ground truths: solve each distinct
    prediction set (the set changes only where one of its predictions drops out)."""
    ep, eg, w, e_ha, e_ok, comp_e = ep[mask], eg[mask], w[mask], e_ha[mask], e_ok[mask], comp_e[mask]
    order = np.argsort(comp_e, kind="stable")
    ep, eg, w, e_ha, e_ok, comp_e = ep[order], eg[order], w[order], e_ha[order], e_ok[order], comp_e[order]
    bounds = np.r_[0, np.nonzero(comp_e[1:] != comp_e[:-1])[0] + 1, len(comp_e)]
    out_p, out_start, out_end, out_tp, out_ha, out_fp = [], [], [], [], [], []
    fn_g, fn_start, fn_end = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        preds, pr = np.unique(ep[a:b], return_inverse=True)
        gts, gr = np.unique(eg[a:b], return_inverse=True)
        weight = np.zeros((len(preds), len(gts)), np.int64)
        weight[pr, gr] = w[a:b]
        acc_m = np.zeros_like(weight, dtype=np.float64)
        acc_m[pr, gr] = e_ha[a:b]
        ok_m = np.zeros(weight.shape, bool)
        ok_m[pr, gr] = e_ok[a:b]
        k = cut_k[preds]
        lo = 0
        for hi in np.unique(k):
            if hi <= lo:
                continue
            rows = np.nonzero(k > lo)[0]
            r, c = linear_sum_assignment(weight[rows], maximize=True)
            matched = weight[rows[r], c] > 0
            r, c = rows[r[matched]], c[matched]
            unmatched_p = np.setdiff1d(rows, r)
            out_p += [preds[r], preds[unmatched_p]]
            out_start += [np.full(len(r) + len(unmatched_p), lo)]
            out_end += [np.full(len(r) + len(unmatched_p), hi)]
            out_tp += [ok_m[r, c].astype(np.float64), np.zeros(len(unmatched_p))]
            out_ha += [np.where(ok_m[r, c], acc_m[r, c], 0.0), np.zeros(len(unmatched_p))]
            out_fp += [np.zeros(len(r)), (~nlz[preds[unmatched_p]]).astype(np.float64)]
            unmatched_g = np.setdiff1d(np.arange(len(gts)), c)
            fn_g.append(gts[unmatched_g])
            fn_start.append(np.full(len(unmatched_g), lo))
            fn_end.append(np.full(len(unmatched_g), hi))
            lo = hi
        if lo < n_cut:  # no prediction left: every ground truth is a false negative
            fn_g.append(gts)
            fn_start.append(np.full(len(gts), lo))
            fn_end.append(np.full(len(gts), n_cut))
    if out_p:  # empty when every prediction scores below the first cutoff
        p = np.concatenate(out_p)
        acc.pred(sp[p], np.concatenate(out_start), np.concatenate(out_end),
                 tp=np.concatenate(out_tp), ha=np.concatenate(out_ha), fp=np.concatenate(out_fp))
    if fn_g:
        g = np.concatenate(fn_g)
        acc.fn_add(sg[g], diff[g], levels, np.concatenate(fn_start), np.concatenate(fn_end))


def batch_counts(batch: FrameBatch, spec: MetricsSpec) -> list[ShardCounts]:
    """Counts of every breakdown generator of ``spec`` over a batch of frames."""
    pairs = matchable_pairs(batch, spec)
    ep, eg = pairs[0], pairs[1]
    cut_k = np.searchsorted(spec.score_cutoffs, batch.pred_scores.astype(np.float32), side="right")
    ha = heading_accuracy(batch.pred_boxes[ep, 6], batch.gt_boxes[eg, 6])
    tp_ok = ha > np.float32(spec.min_heading_accuracy)
    return [generator_counts(gen, levels, batch, spec, pairs, cut_k, ha.astype(np.float64), tp_ok)
            for gen, levels in zip(spec.generators, spec.levels)]
