"""Rotated bird's-eye-view NMS with optional score-weighted box merging.

The pairwise rotated IoU is ``detector.eval.iou.bev_iou`` (numpy, exact polygon clipping, only pairs
whose circumscribed circles overlap are clipped); the greedy loop runs on the (N, N) overlap matrix.
"""

from __future__ import annotations

import numpy as np
import torch

from detector.eval.iou import bev_iou

__all__ = ["rotated_nms"]


def rotated_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, merge: bool = False
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
    overlap = bev_iou(b, b) > iou_threshold
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    merged: list[np.ndarray] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        cluster = overlap[i] & ~suppressed
        cluster[i] = True
        if merge:
            w = s[cluster][:, None]
            box = b[i].copy()
            box[:6] = (b[cluster, :6] * w).sum(axis=0) / w.sum()
            merged.append(box)
        suppressed |= cluster
    keep_t = order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
    if merge:
        out = torch.as_tensor(np.stack(merged), dtype=boxes.dtype, device=boxes.device)
    else:
        out = boxes[keep_t]
    return keep_t, out
