"""The greedy rotated NMS equals the textbook version over the full (N, N) BEV IoU matrix."""

import numpy as np
import torch

from detector.eval.iou import bev_iou
from detector.models.nms import rotated_nms


def _reference(boxes: np.ndarray, scores: np.ndarray, thr: float, merge: bool):
    order = np.argsort(-scores, kind="stable")
    b, s = boxes[order], scores[order]
    overlap = bev_iou(b, b) > thr
    suppressed = np.zeros(len(b), bool)
    keep, out = [], []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        cluster = overlap[i] & ~suppressed
        cluster[i] = True
        keep.append(order[i])
        box = b[i].copy()
        if merge:
            w = s[cluster][:, None]
            box[:6] = (b[cluster, :6] * w).sum(0) / w.sum()
        out.append(box)
        suppressed |= cluster
    return np.array(keep), np.array(out)


def test_greedy_nms_matches_dense_reference():
    rng = np.random.default_rng(0)
    for trial in range(5):
        centres = rng.uniform(-30, 30, (25, 2))
        n = 600
        c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.6, (n, 2))
        boxes = np.column_stack([c, rng.normal(0, 0.2, n), rng.uniform(3.5, 5, n), rng.uniform(1.6, 2.2, n),
                                 rng.uniform(1.4, 1.8, n), rng.uniform(-np.pi, np.pi, n)])
        scores = rng.random(n)
        for merge in (False, True):
            keep, out = rotated_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.25, merge=merge)
            rk, rout = _reference(boxes, scores, 0.25, merge)
            assert np.array_equal(keep.numpy(), rk)
            assert np.allclose(out.numpy(), rout, atol=1e-9)
