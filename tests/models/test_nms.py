"""Rotated NMS: suppression and merging on a hand-made case; the greedy version equals the textbook one
over the full (N, N) BEV IoU matrix."""

import math

import numpy as np
import torch

from detector.boxes.iou import bev_iou
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
    for _ in range(5):
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


def test_rotated_nms_suppresses_overlaps_and_merges():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
            [0.2, 0.0, 0.0, 4.0, 2.0, 1.5, 0.05],  # overlaps the first
            [10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],  # far away
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2],  # crosses the first at right angles
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7])
    keep, kept = rotated_nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 3, 2]
    assert torch.equal(kept, boxes[keep])
    keep, merged = rotated_nms(boxes, scores, iou_threshold=0.5, merge=True)
    assert keep.tolist() == [0, 3, 2]
    assert torch.isclose(merged[0, 0], torch.tensor(0.2 * 0.8 / 1.7), atol=1e-6)
    assert merged[0, 6] == 0.0  # heading of the kept box
    empty_keep, _ = rotated_nms(boxes[:0], scores[:0], 0.5)
    assert empty_keep.numel() == 0
