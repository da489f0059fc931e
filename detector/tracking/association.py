"""Association: detections to tracks of the same class by bird's-eye centre distance, gated per class,
solved as a minimum-cost assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) per class."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def associate(track_xy: np.ndarray, track_types: np.ndarray, det_xy: np.ndarray, det_types: np.ndarray,
              gates: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (track row, detection row) of equal type, distance within the type's gate, that minimize the
    summed distance; types without a gate never match."""
    rows, cols = [], []
    for ty, gate in gates.items():
        t = np.nonzero(track_types == ty)[0]
        d = np.nonzero(det_types == ty)[0]
        if not len(t) or not len(d):
            continue
        dx = track_xy[t, 0][:, None] - det_xy[d, 0][None, :]
        dy = track_xy[t, 1][:, None] - det_xy[d, 1][None, :]
        d2 = dx * dx + dy * dy
        ok = d2 <= gate * gate
        if not ok.any():
            continue
        # Only rows and columns with a candidate take part: smaller problems, same solution.
        tr, dc = np.nonzero(ok.any(1))[0], np.nonzero(ok.any(0))[0]
        sub_ok = ok[np.ix_(tr, dc)]
        cost = np.where(sub_ok, np.sqrt(d2[np.ix_(tr, dc)]), gate * 1e3)
        r, c = linear_sum_assignment(cost)
        good = sub_ok[r, c]
        rows.append(t[tr[r[good]]])
        cols.append(d[dc[c[good]]])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
