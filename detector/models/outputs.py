"""What the Detector returns: typed records, no free-form dicts except the loss components."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from detector.models.state import State

__all__ = ["Detections", "HeadOutput", "ClipOutput"]


@dataclass
class Detections:
    """Detections of one frame of one stream, in that frame's vehicle frame.

    boxes: (K, 7) float32 Waymo ``(cx, cy, cz, length, width, height, heading)``;
    scores: (K,) float32 in [0, 1], sorted descending; types: (K,) int64 Waymo ``Label.Type``;
    track_ids: (K,) int64 track ids, set by a stream's tracker (``detector.tracking``), else None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    types: torch.Tensor
    track_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def cpu(self) -> Detections:
        ids = None if self.track_ids is None else self.track_ids.detach().cpu()
        return Detections(self.boxes.detach().cpu(), self.scores.detach().cpu(), self.types.detach().cpu(), ids)


@dataclass
class HeadOutput:
    """Per-site predictions on the head's sites (N of them).

    sites: (N, 4) int32 ``[b, z, y, x]``; centres: (N, 3) voxel centres in metres;
    cls_logits: (N, C) one logit per trained class; box_reg: (N, 8) box code (see ``BoxCoder``);
    dir_logits: (N,) heading direction logit (the axis angle + pi when > 0); iou_logits: (N, C) predicted
    IoU of the site's box with an object of each class (logits), only from a head with the IoU branch
    (``iou_weight > 0``), else None.
    """

    sites: torch.Tensor
    centres: torch.Tensor
    cls_logits: torch.Tensor
    box_reg: torch.Tensor
    dir_logits: torch.Tensor
    iou_logits: torch.Tensor | None = None

    def objectness(self) -> torch.Tensor:
        """(N,) max class probability, detached."""
        if self.cls_logits.shape[0] == 0:
            return self.cls_logits.new_zeros((0,))
        return torch.sigmoid(self.cls_logits.detach()).max(dim=1).values


@dataclass
class ClipOutput:
    """Result of ``Detector.forward(clip)``.

    losses: ``{"loss": total averaged over the clip's frames, "cls": ..., "reg": ..., "dir": ...
    [, "aux_objectness": ...]}`` (each also averaged over frames); empty when ``compute_loss=False``.
    frame_losses: the same dict for every frame t (graph kept: a loss on one frame can be
    back-propagated alone). detections: ``[t][b]`` when ``decode=True``, else None.
    state: the state after the last frame (causal modes; None for bidirectional).
    """

    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    frame_losses: list[dict[str, torch.Tensor]] = field(default_factory=list)
    detections: list[list[Detections]] | None = None
    state: State | None = None
