"""Detection head: per-site class logits, box code and heading direction; losses; decoding + NMS."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from spconv.pytorch import SparseConvTensor
from torch import nn

from detector.boxes import paired_iou
from detector.models.backbone import SubMBlock
from detector.models.box_coding import DEFAULT_ANCHOR_SIZES, BoxCoder
from detector.models.losses import sigmoid_focal_loss, smooth_l1
from detector.models.nms import rotated_nms
from detector.models.outputs import Detections, HeadOutput
from detector.models.rulebooks import SITES_SUBM3
from detector.models.targets import Targets, assign_targets

__all__ = ["DetectionHead", "LOSS_NORMS"]

#: ``all``: every loss term divided by the frame's number of positive sites (the paper's single-stage
#: recipe; classes with many sites per object dominate); ``per_class``: each class's focal, box and
#: direction terms divided by that class's own positives, then averaged over the classes, so that a
#: pedestrian's few sites weigh as much as a car's many; ``per_class_cls``: the focal term per class,
#: the box and direction terms over every positive (as ``all``), so the many sites of vehicles keep
#: the weight their IoU-0.7 boxes need.
LOSS_NORMS = ("all", "per_class", "per_class_cls")

def _per_class(value: float | Sequence[float], n: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    value = [float(v) for v in value]
    if len(value) != n:
        raise ValueError(f"DetectionHead: {name} needs one value per class ({n}), got {value}")
    return value


class DetectionHead(nn.Module):
    """Per-site predictions for ``classes`` (Waymo type ids, default vehicle, pedestrian, cyclist).

    A submanifold block (``convs`` of them) on the fused sites, then per-site linear layers for the
    class logits (focal loss), the 8-number box code (smooth L1) and the direction bit (BCE, one logit
    shared by the classes). Decoding: per-class score thresholds (on the best class of a site, or on every class with
    ``multi_label``), the ``pre_nms`` best sites per stream (per class and stream with
    ``pre_nms_per_class``), rotated BEV NMS with
    per-class IoU thresholds (optionally merging suppressed boxes), at most ``max_detections`` a frame.

    IoU-aware scores (``iou_weight > 0``): one more per-site output per class learns the 3D IoU of the
    site's decoded box with an object of that class: at a positive site of class ``l`` the IoU of its box
    with its object for output ``l`` and 0 for the others (a car's site holds no pedestrian, whatever its
    box); BCE, on up to ``iou_max_sites`` positives a frame, evenly spaced: the targets' polygon clipping
    runs on the CPU; decoding then ranks, merges and
    reports ``p ** (1 - a) * iou ** a`` (``a = iou_power`` per class) instead of the class probability
    ``p``, so that of an object's many votes the best-fitting box leads its NMS cluster. The score
    thresholds stay on ``p``.
    """

    def __init__(
        self,
        in_channels: int,
        classes: Sequence[int] = (1, 2, 4),
        channels: int = 32,
        convs: int = 1,
        anchor_sizes: Sequence[Sequence[float]] | None = None,
        assign_margin: float = 0.25,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        cls_weight: float = 1.0,
        reg_weight: float = 2.0,
        dir_weight: float = 0.2,
        score_threshold: float | Sequence[float] = 0.1,
        nms_iou: float | Sequence[float] = 0.25,
        nms_merge: bool = True,
        pre_nms: int = 1024,
        max_detections: int = 200,
        prior_prob: float = 0.01,
        loss_norm: str = "all",
        assign_margin_below: float | None = None,
        pre_nms_per_class: bool = False,
        multi_label: bool = False,
        iou_weight: float = 0.0,
        iou_power: float | Sequence[float] = 0.0,
        iou_max_sites: int = 512,
    ) -> None:
        super().__init__()
        self.classes = [int(c) for c in classes]
        if not self.classes:
            raise ValueError("DetectionHead: classes is empty")
        n = len(self.classes)
        self.in_channels = int(in_channels)
        sizes = anchor_sizes if anchor_sizes is not None else [DEFAULT_ANCHOR_SIZES[c] for c in self.classes]
        self.coder = BoxCoder(sizes)
        if self.coder.anchor_sizes.shape[0] != n:
            raise ValueError(f"DetectionHead: {len(sizes)} anchor sizes for {n} classes")
        self.assign_margin = float(assign_margin)
        self.assign_margin_below = None if assign_margin_below is None else float(assign_margin_below)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.cls_weight, self.reg_weight, self.dir_weight = float(cls_weight), float(reg_weight), float(dir_weight)
        self.score_threshold = _per_class(score_threshold, n, "score_threshold")
        self.nms_iou = _per_class(nms_iou, n, "nms_iou")
        self.nms_merge = bool(nms_merge)
        self.pre_nms, self.max_detections = int(pre_nms), int(max_detections)
        if loss_norm not in LOSS_NORMS:
            raise ValueError(f"DetectionHead: loss_norm={loss_norm!r}, expected one of {LOSS_NORMS}")
        self.loss_norm = loss_norm
        self.pre_nms_per_class = bool(pre_nms_per_class)
        self.multi_label = bool(multi_label)
        self.iou_weight = float(iou_weight)
        self.iou_power = _per_class(iou_power, n, "iou_power")
        self.iou_max_sites = int(iou_max_sites)
        if self.iou_max_sites < 1:
            raise ValueError(f"DetectionHead: iou_max_sites={iou_max_sites} must be >= 1")
        if self.iou_weight < 0 or any(not 0.0 <= a <= 1.0 for a in self.iou_power):
            raise ValueError(f"DetectionHead: iou_weight={iou_weight} must be >= 0 and iou_power={iou_power} in [0, 1]")
        if self.iou_weight == 0 and any(self.iou_power):
            raise ValueError("DetectionHead: iou_power needs the IoU branch (iou_weight > 0)")

        c_in = self.in_channels
        self.body = nn.Sequential(*[SubMBlock(c_in if i == 0 else channels, channels, SITES_SUBM3)
                                    for i in range(convs)])
        c = channels if convs > 0 else c_in
        self.cls = nn.Linear(c, n)
        self.reg = nn.Linear(c, BoxCoder.code_size + 1)  # the box code and the direction logit
        self.iou = nn.Linear(c, n) if self.iou_weight > 0 else None
        with torch.no_grad():
            self.cls.bias.fill_(-torch.log(torch.tensor((1 - prior_prob) / prior_prob)).item())
            self.reg.weight.mul_(0.1)
            self.reg.bias.zero_()

    def forward(self, x: SparseConvTensor, centres: torch.Tensor) -> HeadOutput:
        f = self.body(x).features
        reg = self.reg(f)
        iou = self.iou(f) if self.iou is not None else None
        k = BoxCoder.code_size
        f32 = lambda t: None if t is None else t.float()  # noqa: E731  losses and decoding in float32 under autocast
        return HeadOutput(x.indices, centres, *map(f32, (self.cls(f), reg[:, :k], reg[:, k], iou)))

    def targets(self, out: HeadOutput, gt_boxes: torch.Tensor, gt_types: torch.Tensor) -> Targets:
        return assign_targets(out.centres, out.sites[:, 0], gt_boxes, gt_types, self.classes, self.assign_margin,
                              margin_below=self.assign_margin_below)

    def loss(self, out: HeadOutput, targets: Targets) -> dict[str, torch.Tensor]:
        """``{"loss", "cls", "reg", "dir"[, "iou"]}`` for one frame, normalised as ``loss_norm`` says."""
        pos = targets.positive
        n_cls = out.cls_logits.shape[1]
        onehot = torch.zeros_like(out.cls_logits)
        onehot[pos, targets.labels[pos]] = 1.0
        focal = sigmoid_focal_loss(out.cls_logits, onehot, self.focal_alpha, self.focal_gamma, reduction="none")
        num_pos = max(targets.num_positive, 1)
        counts = torch.bincount(targets.labels[pos], minlength=n_cls).to(focal.dtype)
        if self.loss_norm in ("per_class", "per_class_cls"):
            cls = (focal.sum(dim=0) / counts.clamp(min=1)).sum() / n_cls
        else:
            cls = focal.sum() / num_pos
        if self.loss_norm == "per_class":
            site_w = 1.0 / (counts.clamp(min=1)[targets.labels[pos]] * n_cls)
        else:
            site_w = torch.full((int(pos.sum()),), 1.0 / num_pos, dtype=focal.dtype, device=focal.device)
        if bool(pos.any()):
            code, direction = self.coder.encode(targets.boxes[pos], out.centres[pos], targets.labels[pos])
            reg = (smooth_l1(out.box_reg[pos], code).sum(dim=1) * site_w).sum()
            logits = out.dir_logits[pos]
            bce = nn.functional.binary_cross_entropy_with_logits(logits, direction, reduction="none")
            dirl = (bce * site_w).sum() / site_w.sum()
        else:
            reg = out.box_reg.sum() * 0.0
            dirl = out.dir_logits.sum() * 0.0
        total = self.cls_weight * cls + self.reg_weight * reg + self.dir_weight * dirl
        losses = {"loss": total, "cls": cls, "reg": reg, "dir": dirl}
        if out.iou_logits is not None:
            losses["iou"] = self._iou_loss(out, targets, site_w)
            losses["loss"] = losses["loss"] + self.iou_weight * losses["iou"]
        return losses

    def _iou_loss(self, out: HeadOutput, targets: Targets, site_w: torch.Tensor) -> torch.Tensor:
        """BCE of the IoU branch on at most ``iou_max_sites`` positives, evenly spaced in site order
        (every object keeps its share; no random draw, so a resumed run repeats an uninterrupted one)."""
        rows = torch.nonzero(targets.positive).squeeze(1)
        if rows.numel() == 0:
            return out.iou_logits.sum() * 0.0
        pick = torch.arange(rows.numel(), device=rows.device)
        if rows.numel() > self.iou_max_sites:
            pick = torch.div(pick[: self.iou_max_sites] * rows.numel(), self.iou_max_sites, rounding_mode="floor")
        sites = rows[pick]
        target = torch.zeros_like(out.iou_logits[sites])  # 0 for every class but the site's own
        target[torch.arange(sites.numel()), targets.labels[sites]] = self._iou_targets(out, targets, sites)
        bce = nn.functional.binary_cross_entropy_with_logits(out.iou_logits[sites], target, reduction="none")
        w = site_w[pick]
        return (bce.sum(dim=1) * w).sum() / w.sum()

    @torch.no_grad()
    def _iou_targets(self, out: HeadOutput, targets: Targets, sites: torch.Tensor) -> torch.Tensor:
        """3D IoU of the given positive sites' decoded boxes (as decoding would make them) with their objects."""
        cls = targets.labels[sites]
        boxes = self.coder.decode(out.box_reg[sites], out.dir_logits[sites], out.centres[sites], cls)
        iou = paired_iou(boxes.double().cpu().numpy(), targets.boxes[sites].double().cpu().numpy())
        return torch.from_numpy(iou.astype(np.float32)).to(out.iou_logits.device)

    @torch.no_grad()
    def decode(self, out: HeadOutput, batch_size: int) -> list[Detections]:
        """Boxes, scores and Waymo types per stream (see the class docstring)."""
        probs = torch.sigmoid(out.cls_logits)
        results = []
        thresholds = torch.tensor(self.score_threshold, device=probs.device)
        rescore = out.iou_logits is not None and any(self.iou_power)
        if rescore:
            power = torch.tensor(self.iou_power, device=probs.device, dtype=probs.dtype)
            ranked = probs.pow(1.0 - power) * torch.sigmoid(out.iou_logits).pow(power)  # (N, C): ranked, reported
        batch = out.sites[:, 0].long()
        for b in range(batch_size):
            rows = torch.nonzero(batch == b).squeeze(1)
            if rows.numel() == 0 or probs.shape[1] == 0:
                results.append(self._empty(probs.device))
                continue
            if self.multi_label:
                # every (site, class) above its class threshold is a candidate: a pedestrian's sites,
                # where the vehicle logit is often the larger one, still vote for a pedestrian
                ok = probs[rows] >= thresholds
                site, cls = torch.nonzero(ok, as_tuple=True)
                rows, score = rows[site], probs[rows[site], cls]
            else:
                score, cls = probs[rows].max(dim=1)
                ok = score >= thresholds[cls]
                rows, score, cls = rows[ok], score[ok], cls[ok]
            if rescore:
                score = ranked[rows, cls]
            if self.pre_nms_per_class:
                # the pre_nms best sites of every class: a car's hundred voxels must not crowd out the
                # few of every pedestrian
                groups = [torch.nonzero(cls == k).squeeze(1) for k in torch.unique(cls).tolist()]
                top = [g[torch.topk(score[g], min(self.pre_nms, g.numel())).indices] for g in groups]
                top = torch.cat(top) if top else cls.new_zeros(0)
                rows, score, cls = rows[top], score[top], cls[top]
            elif score.numel() > self.pre_nms:
                top = torch.topk(score, self.pre_nms).indices
                rows, score, cls = rows[top], score[top], cls[top]
            boxes = self.coder.decode(out.box_reg[rows], out.dir_logits[rows], out.centres[rows], cls)
            kept_boxes, kept_scores, kept_cls = [], [], []
            for k in torch.unique(cls).tolist():
                m = cls == k
                keep, merged = rotated_nms(boxes[m], score[m], self.nms_iou[k], self.nms_merge)
                kept_boxes.append(merged)
                kept_scores.append(score[m][keep])
                kept_cls.append(cls[m][keep])
            if not kept_scores:
                results.append(self._empty(probs.device))
                continue
            boxes, score, cls = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_cls)
            order = torch.argsort(score, descending=True, stable=True)[: self.max_detections]
            types = torch.tensor(self.classes, device=cls.device)[cls[order]]
            results.append(Detections(boxes[order].float(), score[order].float(), types))
        return results

    @staticmethod
    def _empty(device: torch.device) -> Detections:
        return Detections(
            torch.zeros((0, 7), device=device), torch.zeros((0,), device=device),
            torch.zeros((0,), dtype=torch.long, device=device),
        )
