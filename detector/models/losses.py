"""Detection losses: sigmoid focal loss for classification, smooth L1 for the box code, binary
cross-entropy for the heading direction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sigmoid_focal_loss", "smooth_l1"]


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "sum"
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) of logits and 0/1 targets of the same shape, summed
    (``reduction="sum"``) or element-wise (``"none"``)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * (1 - p_t) ** gamma * ce
    if reduction == "none":
        return loss
    if reduction != "sum":
        raise ValueError(f"sigmoid_focal_loss: reduction={reduction!r}, expected 'sum' or 'none'")
    return loss.sum()


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0 / 9.0) -> torch.Tensor:
    """Element-wise smooth L1 (Huber with transition ``beta``)."""
    d = (pred - target).abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
