"""Per-site training targets from ground-truth boxes: a site whose voxel centre lies inside a box
(grown by ``margin`` metres on every side, since voxels of surface points straddle the box faces) is a
positive of that box's class and regresses that box; inside several boxes, the nearest centre wins.
Boxes of untrained types (e.g. signs) make no positives. ``margin_below`` (default: ``margin``) grows
the box downwards instead: a negative value lifts its floor, so that the layer of ground voxels at the
objects' feet, which a margin all round makes positive, stays background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from detector.boxes import bev_radius, points_in_boxes_paired

__all__ = ["Targets", "assign_targets", "class_indices"]


@dataclass
class Targets:
    """labels (N,) int64: class index or -1 (background); boxes (N, 7) the assigned box (zeros for
    background); num_positive: count of labels >= 0."""

    labels: torch.Tensor
    boxes: torch.Tensor

    @property
    def positive(self) -> torch.Tensor:
        return self.labels >= 0

    @property
    def num_positive(self) -> int:
        return int(self.positive.sum())


def class_indices(types: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(M,) head class index of each Waymo type in ``types`` (its place in ``classes``; -1 if absent)."""
    type_to_class = {int(t): i for i, t in enumerate(classes)}
    return torch.tensor([type_to_class.get(int(t), -1) for t in types.tolist()], dtype=torch.long,
                        device=types.device)


def assign_targets(
    centres: torch.Tensor,
    batch: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_types: torch.Tensor,
    classes: Sequence[int],
    margin: float = 0.25,
    chunk: int = 32768,
    margin_below: float | None = None,
) -> Targets:
    """Targets for sites with voxel centres (N, 3) and batch index (N,), from boxes (M, 8)
    ``[b, cx, cy, cz, l, w, h, heading]`` with Waymo types (M,)."""
    n = centres.shape[0]
    labels = torch.full((n,), -1, dtype=torch.long, device=centres.device)
    boxes = centres.new_zeros((n, 7))
    cls_of_box = class_indices(gt_types, classes).to(centres.device)

    trained = cls_of_box >= 0
    gt_boxes, cls_of_box = gt_boxes[trained], cls_of_box[trained]
    if gt_boxes.shape[0] == 0 or n == 0:
        return Targets(labels, boxes)
    gt_batch = gt_boxes[:, 0].long()
    for b in torch.unique(gt_batch).tolist():
        site_rows = torch.nonzero(batch == b).squeeze(1)
        box_rows = torch.nonzero(gt_batch == b).squeeze(1)
        bx = gt_boxes[box_rows, 1:].float()
        reach = bev_radius(bx) + margin  # circumradius in BEV
        for start in range(0, site_rows.shape[0], chunk):
            rows = site_rows[start : start + chunk]
            p = centres[rows]
            # cheap BEV distance test first; the exact box test only on the candidate pairs
            near = torch.cdist(p[:, :2], bx[:, :2]) <= reach
            pi, bi = torch.nonzero(near, as_tuple=True)
            if pi.numel() == 0:
                continue
            inside = points_in_boxes_paired(p[pi], bx[bi], margin, margin_below)
            pi, bi = pi[inside], bi[inside]
            if pi.numel() == 0:
                continue
            # several boxes: the nearest centre wins (sort by distance, keep each site's first)
            dist = (p[pi] - bx[bi, :3]).norm(dim=1)
            order = torch.argsort(dist, stable=True)
            order = order[torch.argsort(pi[order], stable=True)]
            pi, bi = pi[order], bi[order]
            first = torch.ones_like(pi, dtype=torch.bool)
            first[1:] = pi[1:] != pi[:-1]
            pi, bi = pi[first], bi[first]
            labels[rows[pi]] = cls_of_box[box_rows[bi]]
            boxes[rows[pi]] = bx[bi]
    return Targets(labels, boxes)
