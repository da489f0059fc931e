"""Rotated bird's-eye-view NMS with optional score-weighted box merging.

The rotated IoU is ``detector.boxes.paired_iou`` (numpy, exact polygon clipping), computed greedily
for each kept box against the boxes still alive whose circumscribed circles reach it.
"""

from __future__ import annotations

import numpy as np
import torch

from detector.boxes import bev_radius, paired_iou

__all__ = ["rotated_nms"]


def rotated_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, merge: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS of boxes (N, 7) by scores (N,) with BEV IoU above ``iou_threshold`` suppressed.

    Returns ``(keep (K,) int64 indices by descending score, boxes (K, 7))``. With ``merge`` the centre
    and size of each kept box are the score-weighted mean over the boxes it suppressed (and itself);
    its heading stays its own.
    """
    n = int(scores.shape[0])
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), boxes[:0]
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].detach().cpu().double().numpy()
    s = scores[order].detach().cpu().double().numpy()
    reach = bev_radius(b)  # circumradius: boxes farther apart cannot overlap
    alive = np.ones(n, dtype=bool)
    keep: list[int] = []
    merged: list[np.ndarray] = []
    # Greedy: IoU of each kept box against the boxes still alive near it only (not an N x N matrix:
    # candidates come in dense clusters, and a kept box removes its whole cluster at once).
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        alive[i] = False
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        d2 = (b[rest, 0] - b[i, 0]) ** 2 + (b[rest, 1] - b[i, 1]) ** 2
        near = rest[d2 <= (reach[rest] + reach[i]) ** 2]
        if len(near):
            iou = paired_iou(b[near], np.broadcast_to(b[i], (len(near), 7)), use_height=False)
            near = near[iou > iou_threshold]
            alive[near] = False
        if merge:
            cluster = np.concatenate([[i], near])
            w = s[cluster][:, None]
            box = b[i].copy()
            box[:6] = (b[cluster, :6] * w).sum(axis=0) / w.sum()
            merged.append(box)
    keep_t = order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
    if merge:
        out = torch.as_tensor(np.stack(merged), dtype=boxes.dtype, device=boxes.device)
    else:
        out = boxes[keep_t]
    return keep_t, out
