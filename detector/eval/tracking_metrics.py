"""Waymo 3D tracking metrics (MOTA, MOTP, miss, mismatch and false-positive ratios per breakdown),
TensorFlow-free, equal to the official computation.

>>> m = WaymoTrackingMetrics()               # the official tracking tool's config
>>> m.add_frame(sequence, timestamp, gt_boxes, gt_types, gt_ids, gt_tracking_difficulty,
...             pred_boxes, pred_scores, pred_types, pred_ids)
>>> m.compute()["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"]
{'MOTA': ..., 'MOTP': ..., 'MISS': ..., 'MISMATCH': ..., 'FP': ...}

The official definition (``compute_tracking_metrics_main.cc``: ``ComputeTrackingMetrics`` with its
``GetConfig()``, which equals :func:`detector.eval.config.default_config`) runs, for every sequence,
breakdown shard, score cutoff and difficulty level, the CLEAR-MOT mapping over the sequence's frames in
timestamp order: a ground truth keeps the prediction id it was matched to while they still match (IoU >=
the type's threshold); the rest are matched by the Hungarian matching of the detection metrics; a ground
truth matched to another prediction id than before is a mismatch, and so is a prediction id taken from
a ground truth absent from the frame. Of predictions sharing an id in one frame's shard only the first (in
input order) takes part; the others are ignored. A ground-truth miss counts at the levels its
``tracking_difficulty_level`` is at or below (unset counts at every level); an unmatched ground truth
above a level is not counted at that level at all. Per breakdown, the cutoff of best MOTA wins, in
float32, lowest cutoff on ties, and only a MOTA above 0 replaces the all-zero result.

Here the same counts come out of a decomposition: the mapping of one connected component of the graph
whose nodes are ground-truth ids and prediction ids (per shard) and whose edges are the matchable pairs
of any frame evolves independently of every other component. Components with at most one id on each side
(a clean track, a lone false positive, a missed object) can have no mismatch and are counted for all
cutoffs at once with interval arithmetic; the others are simulated frame by frame, once per distinct set
of predictions present (which changes only at their own scores' cutoffs). The pair IoUs come from the
detection metrics' matching (:func:`detector.eval.matching.matchable_pairs`), once per sequence.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from waymo_open_dataset.protos import metrics_pb2

from detector.eval import breakdowns
from detector.eval.config import MetricsSpec
from detector.eval.matching import FrameBatch, matchable_pairs
from detector.eval.waymo_metrics import _as_array

__all__ = ["TrackingCounts", "TrackingResult", "WaymoTrackingMetrics", "evaluate_tracking_frames",
           "duplicate_ids"]

FIELDS = ("MOTA", "MOTP", "MISS", "MISMATCH", "FP")


@dataclass
class TrackingCounts:
    """Counts of one breakdown generator summed over sequences: shards x score cutoffs (x levels)."""

    misses: np.ndarray  # (S, L, C) int64
    num_gt: np.ndarray  # (S, L, C) int64
    fps: np.ndarray  # (S, C) int64
    mismatches: np.ndarray  # (S, C) int64
    matches: np.ndarray  # (S, C) int64
    cost: np.ndarray  # (S, C) float64, sum of 1 - IoU over the matches

    @classmethod
    def zeros(cls, num_shards: int, num_levels: int, num_cutoffs: int) -> TrackingCounts:
        s, c, lv = num_shards, num_cutoffs, num_levels
        return cls(np.zeros((s, lv, c), np.int64), np.zeros((s, lv, c), np.int64), np.zeros((s, c), np.int64),
                   np.zeros((s, c), np.int64), np.zeros((s, c), np.int64), np.zeros((s, c)))

    def add(self, other: TrackingCounts) -> None:
        for name in ("misses", "num_gt", "fps", "mismatches", "matches", "cost"):
            getattr(self, name).__iadd__(getattr(other, name))


@dataclass(frozen=True)
class TrackingResult:
    """One breakdown's metrics at its best-MOTA score cutoff, and the counts behind them."""

    name: str
    mota: float
    motp: float
    miss: float
    mismatch: float
    fp: float
    score_cutoff: float
    num_objects_gt: int
    num_misses: int
    num_fps: int
    num_mismatches: int
    num_matches: int

    def as_dict(self) -> dict[str, float]:
        return {"MOTA": self.mota, "MOTP": self.motp, "MISS": self.miss, "MISMATCH": self.mismatch, "FP": self.fp}


# ----------------------------------------------------------------------------- counting helpers
class _Acc:
    """Difference arrays over score-cutoff indices for one generator's shards."""

    def __init__(self, num_shards: int, num_levels: int, num_cutoffs: int):
        self.s, self.l, self.c = num_shards, num_levels, num_cutoffs
        w = num_cutoffs + 1
        self.w = w
        self.fps = np.zeros(num_shards * w)
        self.mism = np.zeros(num_shards * w)
        self.matches = np.zeros(num_shards * w)
        self.cost = np.zeros(num_shards * w)
        self.misses = np.zeros(num_shards * num_levels * w)
        self.gt_out = np.zeros(num_shards * num_levels * w)  # unmatched ground truths above the level
        self.gt_all = np.zeros(num_shards, np.int64)  # ground truths present (every cutoff, every level)

    def add(self, target: np.ndarray, row, start, end, weight=1.0) -> None:
        row, start, end, weight = np.broadcast_arrays(np.asarray(row, np.int64), np.asarray(start, np.int64),
                                                      np.asarray(end, np.int64), np.asarray(weight, np.float64))
        m = start < end
        if not m.any():
            return
        n = len(target)
        target += np.bincount(row[m] * self.w + start[m], weight[m], minlength=n)
        target -= np.bincount(row[m] * self.w + end[m], weight[m], minlength=n)

    def add_unmatched_gt(self, shard, level, levels, start, end, weight=1.0) -> None:
        """Ground truths unmatched on [start, end): a miss at the levels they are at or below, else not
        counted at that level."""
        level = np.asarray(level, np.int64)
        for li, lv in enumerate(levels):
            below = (level <= lv).astype(np.float64) * weight
            row = np.asarray(shard, np.int64) * self.l + li
            self.add(self.misses, row, start, end, below)
            self.add(self.gt_out, row, start, end, np.asarray(weight, np.float64) - below)

    def counts(self) -> TrackingCounts:
        def done(arr, shape):
            return np.rint(np.cumsum(arr.reshape(shape), axis=-1)[..., :-1]).astype(np.int64)

        s, lv, w = self.s, self.l, self.w
        gt_out = done(self.gt_out, (s, lv, w))
        return TrackingCounts(
            misses=done(self.misses, (s, lv, w)),
            num_gt=self.gt_all[:, None, None] - gt_out,
            fps=done(self.fps, (s, w)),
            mismatches=done(self.mism, (s, w)),
            matches=done(self.matches, (s, w)),
            cost=np.cumsum(self.cost.reshape(s, w), axis=-1)[:, :-1],
        )


def _segment_prefix_max(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """For sorted ``group``: the max of ``values`` over the earlier members of each one's group (0 if none)."""
    if len(values) == 0:
        return values.copy()
    first = np.r_[True, group[1:] != group[:-1]]
    big = int(values.max()) + 1
    rank = np.cumsum(first) - 1
    key = rank * big + values
    run = np.maximum.accumulate(key) - rank * big  # max up to and including each element, per group
    prev = np.r_[0, run[:-1]]
    return np.where(first, 0, np.maximum(prev, 0))


# ----------------------------------------------------------------------------- one sequence
def _sequence_counts(batch: FrameBatch, gt_id: np.ndarray, gt_level: np.ndarray, pred_id: np.ndarray,
                     spec: MetricsSpec) -> list[TrackingCounts]:
    """Counts of every generator over one sequence; ``batch`` frames are numbered in time order,
    objects in input order within a frame; ids are small non-negative integers."""
    pairs = matchable_pairs(batch, spec)
    n_cut = len(spec.score_cutoffs)
    cut_k = np.searchsorted(spec.score_cutoffs, batch.pred_scores.astype(np.float32), side="right")
    out = []
    for gen, levels in zip(spec.generators, spec.levels):
        out.append(_generator_counts(gen, levels, batch, gt_id, gt_level, pred_id, pairs, cut_k, n_cut))
    return out


def _generator_counts(gen, levels, batch: FrameBatch, gt_id, gt_level, pred_id, pairs, cut_k, n_cut) -> TrackingCounts:
    num_shards = breakdowns.num_shards(gen)
    acc = _Acc(num_shards, len(levels), n_cut)
    sp = breakdowns.shard_ids(gen, batch.pred_boxes, batch.pred_types)
    sg = breakdowns.shard_ids(gen, batch.gt_boxes, batch.gt_types)
    n_p, n_g = len(sp), len(sg)

    # Which prediction of an id takes part in a frame's shard at each cutoff: the first one present.
    p_in = np.nonzero(sp >= 0)[0]
    n_pid = int(pred_id.max()) + 1 if n_p else 1
    group = (batch.pred_frame[p_in] * num_shards + sp[p_in]) * n_pid + pred_id[p_in]
    order = np.lexsort((p_in, group))
    lo = np.zeros(n_p, np.int64)
    hi = np.zeros(n_p, np.int64)
    lo[p_in[order]] = _segment_prefix_max(cut_k[p_in[order]], group[order])
    hi[p_in] = np.maximum(cut_k[p_in], lo[p_in])
    dup = np.zeros(n_p, bool)  # a prediction whose id repeats in its frame's shard
    if len(order):
        g_sorted = group[order]
        same = np.r_[False, g_sorted[1:] == g_sorted[:-1]]
        same_any = same | np.r_[same[1:], False]
        dup[p_in[order]] = same_any
    live = np.zeros(n_p, bool)
    live[p_in] = hi[p_in] > lo[p_in]

    g_in = np.nonzero(sg >= 0)[0]
    np.add.at(acc.gt_all, sg[g_in], 1)

    ep, eg, iou, _w = pairs
    keep = (sp[ep] == sg[eg]) & (sp[ep] >= 0) & live[ep]
    ep, eg, iou, w = ep[keep], eg[keep], iou[keep], _w[keep]

    # Nodes: (shard, prediction id) and (shard, ground-truth id).
    n_gid = int(gt_id.max()) + 1 if n_g else 1
    pnode_key = np.where(live, sp * n_pid + pred_id, -1)
    gnode_key = np.where(sg >= 0, sg * n_gid + gt_id, -1)
    pkeys, pnode = np.unique(pnode_key, return_inverse=True)
    gkeys, gnode = np.unique(gnode_key, return_inverse=True)
    pnode, gnode = pnode.reshape(-1), gnode.reshape(-1)
    n_pn, n_gn = len(pkeys), len(gkeys)
    nodes = n_pn + n_gn
    graph = coo_matrix((np.ones(len(ep)), (pnode[ep], n_pn + gnode[eg])), shape=(nodes, nodes))
    _, label = connected_components(graph, directed=False)
    comp_p, comp_g = label[:n_pn], label[n_pn:]
    valid_pn = pkeys >= 0
    valid_gn = gkeys >= 0
    npc = np.bincount(comp_p[valid_pn], minlength=nodes)
    ngc = np.bincount(comp_g[valid_gn], minlength=nodes)
    # A component with a repeated prediction id in some frame is simulated too (rare).
    dup_comp = np.zeros(nodes, bool)
    dup_comp[comp_p[pnode[dup & live]]] = True
    simple = (npc <= 1) & (ngc <= 1) & ~dup_comp

    p_simple = live & simple[comp_p[pnode]]
    g_simple = (sg >= 0) & simple[comp_g[gnode]]
    e_simple = simple[comp_p[pnode[ep]]]

    # Simple components: each prediction matches the ground truth it overlaps in its frame, if any.
    matched_p = np.zeros(n_p, bool)
    matched_p[ep[e_simple]] = True
    p_idx = np.nonzero(p_simple)[0]
    tp_mask = matched_p[p_idx]
    acc.add(acc.fps, sp[p_idx], lo[p_idx], hi[p_idx], (~tp_mask & ~batch.pred_nlz[p_idx]).astype(np.float64))
    es = np.nonzero(e_simple)[0]
    e_p, e_g = ep[es], eg[es]
    acc.add(acc.matches, sp[e_p], lo[e_p], hi[e_p])
    acc.add(acc.cost, sp[e_p], lo[e_p], hi[e_p], 1.0 - iou[es].astype(np.float64))
    g_idx = np.nonzero(g_simple)[0]
    acc.add_unmatched_gt(sg[g_idx], gt_level[g_idx], levels, np.zeros(len(g_idx), np.int64), np.full(len(g_idx), n_cut))
    acc.add_unmatched_gt(sg[e_g], gt_level[e_g], levels, lo[e_p], hi[e_p], -1.0)

    # The other components: the mapping, frame by frame.
    general = np.nonzero(~simple & ((npc + ngc) > 0))[0]
    if len(general):
        _simulate(acc, general, comp_p, comp_g, pnode, gnode, live, sp, sg, lo, hi, batch, gt_level, levels,
                  ep, eg, iou, w, n_cut)
    return acc.counts()


def _simulate(acc: _Acc, comps, comp_p, comp_g, pnode, gnode, live, sp, sg, lo, hi, batch, gt_level, levels,
              ep, eg, iou, w, n_cut) -> None:
    want = np.zeros(max(len(comp_p) + len(comp_g), 1), bool)
    want[comps] = True
    p_sel = np.nonzero(live & want[comp_p[pnode]])[0]
    g_sel = np.nonzero((sg >= 0) & want[comp_g[gnode]])[0]
    e_sel = np.nonzero(want[comp_p[pnode[ep]]])[0]
    pc, gc, ec = comp_p[pnode[p_sel]], comp_g[gnode[g_sel]], comp_p[pnode[ep[e_sel]]]
    p_by = _split_by(pc, p_sel)
    g_by = _split_by(gc, g_sel)
    e_by = _split_by(ec, e_sel)
    levels = [int(x) for x in levels]
    # Plain Python values: the frame loop below reads them one at a time.
    p_frame, g_frame = batch.pred_frame.tolist(), batch.gt_frame.tolist()
    lo_l, hi_l, nlz_l = lo.tolist(), hi.tolist(), batch.pred_nlz.tolist()
    pnode_l, gnode_l, level_l = pnode.tolist(), gnode.tolist(), gt_level.tolist()
    ep_l, eg_l, iou_l, w_l = ep.tolist(), eg.tolist(), iou.astype(np.float64).tolist(), w.tolist()
    rows: list[tuple] = []  # (shard, start, end, fps, mismatches, matches, cost, misses per level, out per level)
    for c in comps:
        ps, gs, es = p_by.get(c, ()), g_by.get(c, ()), e_by.get(c, ())
        frames: dict[int, list] = {}
        for j in ps.tolist() if len(ps) else ():
            frames.setdefault(p_frame[j], [[], [], {}])[0].append((j, pnode_l[j], lo_l[j], hi_l[j], nlz_l[j]))
        for i in gs.tolist() if len(gs) else ():
            frames.setdefault(g_frame[i], [[], [], {}])[1].append((i, gnode_l[i], level_l[i]))
        for e in es.tolist() if len(es) else ():
            frames[p_frame[ep_l[e]]][2][(ep_l[e], eg_l[e])] = (iou_l[e], w_l[e])
        order = sorted(frames)
        seq = [frames[f] for f in order]
        shard = int(sp[ps[0]]) if len(ps) else int(sg[gs[0]])
        # The first frame whose predictions change at each cutoff bound: the runs share the frames before it.
        first_change: dict[int, int] = {}
        for k, (preds, _, _) in enumerate(seq):
            for _, _, plo, phi, _ in preds:
                for bound in (plo, phi):
                    if bound not in first_change:
                        first_change[bound] = k
        bounds = sorted({0, n_cut, *first_change} & set(range(n_cut + 1)))
        snapshots: list = [None] * (len(seq) + 1)
        keep = set(first_change.values())  # the frames a later cutoff's run resumes at
        start = 0
        for a, b in zip(bounds[:-1], bounds[1:]):
            totals = _run_mot(seq, a, levels, snapshots, start, keep)
            rows.append((shard, a, b, *totals))
            start = min(first_change.get(b, len(seq)), len(seq))
    if not rows:
        return
    cols = list(zip(*rows))
    shard, start, end = (np.asarray(x, np.int64) for x in cols[:3])
    for target, values in ((acc.fps, cols[3]), (acc.mism, cols[4]), (acc.matches, cols[5]), (acc.cost, cols[6])):
        acc.add(target, shard, start, end, np.asarray(values, np.float64))
    misses, out = np.asarray(cols[7], np.float64), np.asarray(cols[8], np.float64)
    for li in range(len(levels)):
        acc.add(acc.misses, shard * acc.l + li, start, end, misses[:, li])
        acc.add(acc.gt_out, shard * acc.l + li, start, end, out[:, li])


def _split_by(keys: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    if len(keys) == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    cuts = np.r_[0, np.nonzero(k[1:] != k[:-1])[0] + 1, len(k)]
    return {int(k[a]): v[a:b] for a, b in zip(cuts[:-1], cuts[1:])}


def _run_mot(seq, cut, levels, snapshots, start, keep):
    """The official mapping over one component's frames with the predictions present at cutoff ``cut``.

    ``snapshots[k]``: the mapping and the counts before frame ``k`` (for ``k`` in ``keep``), kept from the
    run at the previous cutoff; frames before ``start`` saw the same predictions then, so the run resumes
    there."""
    if start > 0 and snapshots[start] is not None:
        state, inverse, counts = snapshots[start]
        state, inverse = dict(state), dict(inverse)
        fps, mism, matches, cost, miss, out = counts
        miss, out = list(miss), list(out)
    else:
        start = 0
        state, inverse = {}, {}  # ground-truth node -> prediction node, and back
        fps = mism = matches = 0
        cost = 0.0
        miss = [0] * len(levels)
        out = [0] * len(levels)
    n_levels = len(levels)
    for k in range(start, len(seq)):
        if k in keep:
            snapshots[k] = (dict(state), dict(inverse), (fps, mism, matches, cost, tuple(miss), tuple(out)))
        preds, gts, pair = seq[k]
        pd_map = {}  # prediction node -> (object, nlz): the first present of its id
        for j, p, plo, phi, nlz in preds:
            if plo <= cut < phi and p not in pd_map:
                pd_map[p] = (j, nlz)
        gt_map = {g: (i, lv) for i, g, lv in gts}
        new: dict[int, int] = {}
        for g, ig in list(gt_map.items()) if state else ():
            p = state.get(g)
            jp = None if p is None else pd_map.get(p)
            if jp is None:
                continue
            v = pair.get((jp[0], ig[0]))
            if v is None:
                continue
            new[g] = p
            cost = cost + 1.0 - v[0]
            del pd_map[p], gt_map[g]
        matched_g: set = set()
        matched_p: set = set()
        if pd_map and gt_map:
            cand = [(p, g, pair[(jp[0], ig[0])]) for p, jp in pd_map.items() for g, ig in gt_map.items()
                    if (jp[0], ig[0]) in pair]
            if len(cand) == 1:
                p, g, v = cand[0]
                new[g] = p
                cost = cost + 1.0 - v[0]
                matched_g.add(g)
                matched_p.add(p)
            elif cand:
                rp = {p: r for r, p in enumerate(pd_map)}
                rg = {g: r for r, g in enumerate(gt_map)}
                weight = np.zeros((len(rp), len(rg)), np.int64)
                for p, g, v in cand:
                    weight[rp[p], rg[g]] = v[1]
                r_idx, c_idx = linear_sum_assignment(weight, maximize=True)
                plist, glist = list(pd_map), list(gt_map)
                for r, q in zip(r_idx.tolist(), c_idx.tolist()):
                    if weight[r, q] > 0:
                        p, g = plist[r], glist[q]
                        new[g] = p
                        cost = cost + 1.0 - pair[(pd_map[p][0], gt_map[g][0])][0]
                        matched_g.add(g)
                        matched_p.add(p)
        for p, (_, nlz) in pd_map.items():
            if p not in matched_p and not nlz:
                fps += 1
        for g, (_, lv) in gt_map.items():
            if g not in matched_g:
                for li in range(n_levels):
                    if lv <= levels[li]:
                        miss[li] += 1
                    else:
                        out[li] += 1
        if not new:
            continue
        matches += len(new)
        for g, p in new.items():
            old = state.get(g)
            if old is not None and old != p:
                mism += 1
            prev = inverse.get(p)
            if prev is not None and prev not in gt_map and prev not in new:
                mism += 1
        evict = [inverse[p] for p in new.values() if p in inverse and inverse[p] not in new]
        state.update(new)
        for g in evict:
            state.pop(g, None)
        inverse = {p: g for g, p in state.items()}
    snapshots[len(seq)] = None
    return fps, mism, matches, cost, miss, out


# ----------------------------------------------------------------------------- the metrics
def _best_mota(counts: TrackingCounts, shard: int, li: int, cutoffs: np.ndarray):
    """The official ``ToTrackingMetrics``: float32 ratios, the first cutoff of strictly best MOTA > 0."""
    f32 = np.float32
    best = (f32(0), f32(0), f32(0), f32(0), f32(0), f32(0))
    best_c = None
    for c in range(len(cutoffs)):
        n_gt = int(counts.num_gt[shard, li, c])
        if n_gt == 0:
            continue
        n = f32(n_gt)
        miss = f32(counts.misses[shard, li, c]) / n
        fp = f32(counts.fps[shard, c]) / n
        mism = f32(counts.mismatches[shard, c]) / n
        mota = f32(1.0 - float(f32(f32(miss + fp) + mism)))
        if best[0] < mota:
            m = int(counts.matches[shard, c])
            motp = f32(counts.cost[shard, c] / m) if m > 0 else f32(0)
            best = (mota, motp, miss, mism, fp, f32(cutoffs[c]))
            best_c = c
    return best, best_c


def duplicate_ids(ids: np.ndarray) -> tuple[int, str | None]:
    """How many objects repeat an id already taken in the same frame, and the first such id."""
    if len(ids) < 2:
        return 0, None
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    extra = int((counts - 1).sum())
    if not extra:
        return 0, None
    seen: set = set()
    for x in ids:
        if x in seen:
            return extra, str(x)
        seen.add(x)
    return extra, None


class WaymoTrackingMetrics:
    """Waymo tracking metrics over whole sequences; ``config`` is a ``metrics_pb2.Config`` (default: the
    official tracking tool's, equal to the detection default). Frames may come in any order; each
    sequence is scored in timestamp order when it is complete, at :meth:`compute`."""

    def __init__(self, config: metrics_pb2.Config | None = None):
        self.spec = MetricsSpec.from_config(config)
        self._sequences: dict[Hashable, dict[int, tuple]] = {}
        n_cut = len(self.spec.score_cutoffs)
        self._totals = [TrackingCounts.zeros(breakdowns.num_shards(g), len(lv), n_cut)
                        for g, lv in zip(self.spec.generators, self.spec.levels)]
        self._done: set = set()

    @property
    def num_frames(self) -> int:
        return sum(len(f) for f in self._sequences.values())

    def add_frame(self, sequence: Hashable, timestamp: int, gt_boxes, gt_types, gt_ids, gt_difficulty,
                  pred_boxes, pred_scores, pred_types, pred_ids, pred_overlap_nlz=None) -> None:
        """Add one frame of ``sequence`` (the context name). ``*_ids``: object ids (any hashable, e.g.
        str); ``gt_difficulty``: tracking difficulty levels (0 unset: counted at every level). Every
        ground truth counts, whatever its points. A ground-truth id repeated in a frame is an error (the
        official computation aborts); a repeated prediction id takes part once, as its first object."""
        key = (sequence, int(timestamp))
        seq = self._sequences.setdefault(sequence, {})
        if sequence in self._done:
            raise ValueError(f"frame {key!r}: sequence {sequence!r} was already scored")
        if int(timestamp) in seq:
            raise ValueError(f"frame {key!r} was added twice")
        gb = _as_array(gt_boxes, np.float64, (7,), key, "gt_boxes")
        gt_t = _as_array(gt_types, np.int64, (), key, "gt_types")
        gid = np.asarray(gt_ids, dtype=object).reshape(-1)
        diff = _as_array(gt_difficulty, np.int64, (), key, "gt_difficulty")
        pb = _as_array(pred_boxes, np.float64, (7,), key, "pred_boxes")
        scores = _as_array(pred_scores, np.float32, (), key, "pred_scores")
        pt = _as_array(pred_types, np.int64, (), key, "pred_types")
        pid = np.asarray(pred_ids, dtype=object).reshape(-1)
        nlz = (np.zeros(len(pb), bool) if pred_overlap_nlz is None
               else _as_array(pred_overlap_nlz, bool, (), key, "pred_overlap_nlz"))
        m, k = len(gb), len(pb)
        for name, arr, n in (("gt_types", gt_t, m), ("gt_ids", gid, m), ("gt_difficulty", diff, m),
                             ("pred_scores", scores, k), ("pred_types", pt, k), ("pred_ids", pid, k),
                             ("pred_overlap_nlz", nlz, k)):
            if len(arr) != n:
                raise ValueError(f"frame {key!r}: {name} has {len(arr)} entries for {n} boxes")
        for name, arr in (("gt_boxes", gb), ("pred_boxes", pb), ("pred_scores", scores)):
            if not np.isfinite(arr).all():
                raise ValueError(f"frame {key!r}: {name} has non-finite values")
        for name, arr in (("gt_types", gt_t), ("pred_types", pt)):
            if arr.size and (arr.min() < 0 or arr.max() > breakdowns.NUM_TYPES):
                raise ValueError(f"frame {key!r}: {name} must be Waymo Label.Type values 0..4")
        if diff.size and (diff.min() < 0 or diff.max() > 2):
            raise ValueError(f"frame {key!r}: gt_difficulty must be 0 (unset), 1 or 2")
        extra, first = duplicate_ids(gid)
        if extra:
            raise ValueError(f"frame {key!r}: ground-truth id {first!r} repeats ({extra} repeated ids); "
                             "the official computation refuses this")
        seq[int(timestamp)] = (gb, gt_t, gid, diff, pb, scores, pt, pid, nlz)

    def _score(self, sequence) -> None:
        frames = self._sequences[sequence]
        times = sorted(frames)
        parts = [frames[t] for t in times]
        gt_n = np.array([len(p[0]) for p in parts], np.int64)
        pd_n = np.array([len(p[4]) for p in parts], np.int64)
        idx = np.arange(len(parts))

        def cat(i, dtype, shape=()):
            arrs = [p[i] for p in parts]
            return np.concatenate(arrs).astype(dtype) if arrs else np.zeros((0,) + shape, dtype)

        batch = FrameBatch(
            pred_frame=np.repeat(idx, pd_n), pred_boxes=cat(4, np.float64).reshape(-1, 7),
            pred_scores=cat(5, np.float32), pred_types=cat(6, np.int64), pred_nlz=cat(8, bool),
            gt_frame=np.repeat(idx, gt_n), gt_boxes=cat(0, np.float64).reshape(-1, 7), gt_types=cat(1, np.int64),
            gt_difficulty=np.zeros(int(gt_n.sum()), np.int64))
        gid = _codes(cat(2, object))
        pid = _codes(cat(7, object))
        level = cat(3, np.int64)
        for total, counts in zip(self._totals, _sequence_counts(batch, gid, level, pid, self.spec)):
            total.add(counts)
        self._done.add(sequence)

    def counts(self) -> list[TrackingCounts]:
        for sequence in self._sequences:
            if sequence not in self._done:
                self._score(sequence)
        return self._totals

    def results(self) -> dict[str, TrackingResult]:
        """Per breakdown name (official names and order): the metrics at the best-MOTA cutoff."""
        totals = self.counts()
        names = iter(self.spec.breakdown_names)
        out = {}
        for total, levels in zip(totals, self.spec.levels):
            for shard in range(total.fps.shape[0]):
                for li, _ in enumerate(levels):
                    name = next(names)
                    (mota, motp, miss, mism, fp, cutoff), c = _best_mota(total, shard, li, self.spec.score_cutoffs)

                    def pick(a, c=c):
                        return int(a[c]) if c is not None else 0

                    out[name] = TrackingResult(
                        name=name, mota=float(mota), motp=float(motp), miss=float(miss), mismatch=float(mism),
                        fp=float(fp), score_cutoff=float(cutoff),
                        num_objects_gt=pick(total.num_gt[shard, li]), num_misses=pick(total.misses[shard, li]),
                        num_fps=pick(total.fps[shard]), num_mismatches=pick(total.mismatches[shard]),
                        num_matches=pick(total.matches[shard]))
        return out

    def compute(self) -> dict[str, dict[str, float]]:
        """``{breakdown name: {"MOTA", "MOTP", "MISS", "MISMATCH", "FP"}}`` over all sequences added."""
        return {name: r.as_dict() for name, r in self.results().items()}


def _codes(ids: np.ndarray) -> np.ndarray:
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    _, inv = np.unique(np.asarray([str(x) for x in ids]), return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def evaluate_tracking_frames(gt_frames: dict, pred_frames: dict,
                             config: metrics_pb2.Config | None = None) -> WaymoTrackingMetrics:
    """Tracking metrics of frames read with ``objects_to_frames(..., tracking=True)``: sequence = context
    name, frames in timestamp order, every ground truth kept, levels by its tracking difficulty."""
    from detector.eval.submission import FrameObjects

    metrics = WaymoTrackingMetrics(config)
    empty = FrameObjects.empty(tracking=True)
    for key in sorted(set(gt_frames) | set(pred_frames)):
        g, p = gt_frames.get(key, empty), pred_frames.get(key, empty)
        metrics.add_frame(key[0], key[1], g.boxes, g.types, g.ids, g.tracking_difficulty,
                          p.boxes, p.scores, p.types, p.ids, p.overlap_nlz)
    return metrics
