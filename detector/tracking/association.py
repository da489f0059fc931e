"""Association: detections to tracks by bird's-eye centre distance, gated per class, solved as a
minimum-cost assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) per group of classes.

Classes in one group (by default pedestrians and cyclists, which a detector confuses) may continue each
other's tracks, at a cost ``class_penalty`` (metres) above their distance; other classes never match.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def duplicates(xy: np.ndarray, types: np.ndarray, scores: np.ndarray, radius: dict[int, float],
               groups: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """(K,) bool: detections within their class's ``radius`` of a higher-scoring detection of their class
    group (ties: the earlier one wins)."""
    out = np.zeros(len(xy), bool)
    for group in groups:
        d = np.nonzero(np.isin(types, group) & np.isin(types, list(radius)))[0]
        if len(d) < 2:
            continue
        r = np.array([radius[int(x)] for x in types[d]])
        dx = xy[d, 0][:, None] - xy[d, 0][None, :]
        dy = xy[d, 1][:, None] - xy[d, 1][None, :]
        close = dx * dx + dy * dy < (r * r)[None, :]  # [i, j]: j lies within its radius of i
        s = scores[d]
        better = (s[:, None] > s[None, :]) | ((s[:, None] == s[None, :]) & (d[:, None] < d[None, :]))
        out[d] = (close & better).any(axis=0)
    return out


def associate(track_xy: np.ndarray, track_types: np.ndarray, det_xy: np.ndarray, det_types: np.ndarray,
              gates: dict[int, float], groups: tuple[tuple[int, ...], ...] | None = None,
              class_penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (track row, detection row) within the detection class's gate, of one class group, that
    minimize the summed cost; types without a gate never match. ``groups``: classes that may match each
    other (default: each class alone)."""
    groups = tuple((t,) for t in gates) if groups is None else groups
    rows, cols = [], []
    for group in groups:
        t = np.nonzero(np.isin(track_types, group))[0]
        d = np.nonzero(np.isin(det_types, group) & np.isin(det_types, list(gates)))[0]
        if not len(t) or not len(d):
            continue
        gate = np.array([gates[int(x)] for x in det_types[d]])
        dx = track_xy[t, 0][:, None] - det_xy[d, 0][None, :]
        dy = track_xy[t, 1][:, None] - det_xy[d, 1][None, :]
        d2 = dx * dx + dy * dy
        ok = d2 <= (gate * gate)[None, :]
        if not ok.any():
            continue
        # Only rows and columns with a candidate take part: smaller problems, same solution.
        tr, dc = np.nonzero(ok.any(1))[0], np.nonzero(ok.any(0))[0]
        sub_ok = ok[np.ix_(tr, dc)]
        cost = np.sqrt(d2[np.ix_(tr, dc)])
        if len(group) > 1:
            cost = cost + class_penalty * (track_types[t[tr]][:, None] != det_types[d[dc]][None, :])
        cost = np.where(sub_ok, cost, 1e6)
        r, c = linear_sum_assignment(cost)
        good = sub_ok[r, c]
        rows.append(t[tr[r[good]]])
        cols.append(d[dc[c[good]]])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
