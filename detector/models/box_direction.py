"""A second look at each box's front: the points inside the box, binned in the box's own axes.

The head's direction bit is one logit per voxel of a shared feature map; learning a car's front there
takes backbone capacity the boxes need (docs/RESULTS.md, "The direction bit"). This stage asks the
question where it is a question of shape alone: the current frame's points in and around a box are
counted in a ``length x width x height`` grid of the box's axis frame (the axis angle in
(-pi/2, pi/2]), normalised by the box's size, and a small MLP says whether the front lies at the
grid's -length end. The logit is antisymmetric by construction, ``g(x) - g(rot180(x))``: turning the
box by pi turns its grid and flips the answer, so a box has one front whichever way its axis is read.

Training uses the frame's labelled boxes, jittered like a detector's boxes, not the head's outputs: no
gradient reaches the backbone and the stage does not wait for the head to find anything. Decoding sets
the heading of each detection of the ``apply_to`` types to its axis or axis + pi by the stage's logit;
the stream's motion heading (``detector.models.motion_heading``) still turns moving boxes afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from detector.models.box_coding import axis_angle, heading_direction, wrap_angle
from detector.models.outputs import Detections
from detector.models.targets import class_indices

__all__ = ["BoxDirection", "box_grid_counts"]


def box_grid_counts(
    points: torch.Tensor, boxes: torch.Tensor, bins: Sequence[int], margin: Sequence[float]
) -> torch.Tensor:
    """Counts (K, Bl, Bw, Bh) of ``points`` (P, 3) in the grid of each box (K, 7) in its axis frame.

    The grid spans ``(1 + margin[i])`` half-sizes either side of the box centre along the axis, across
    it and in height, cut into ``bins[i]`` cells; points outside it are not counted.
    """
    bl, bw, bh = (int(b) for b in bins)
    k = int(boxes.shape[0])
    out = torch.zeros(k, bl * bw * bh, dtype=torch.float32, device=boxes.device)
    if k == 0 or points.shape[0] == 0:
        return out.view(k, bl, bw, bh)
    half = 0.5 * boxes[:, 3:6] * (1.0 + torch.as_tensor(margin, dtype=boxes.dtype, device=boxes.device))
    reach = torch.hypot(half[:, 0], half[:, 1])
    # candidates: the points whose x lies within each box's circumradius (a slab of the sorted points)
    xs, order = torch.sort(points[:, 0].contiguous())
    lo = torch.searchsorted(xs, (boxes[:, 0] - reach).contiguous())
    hi = torch.searchsorted(xs, (boxes[:, 0] + reach).contiguous(), right=True)
    n = (hi - lo).clamp(min=0)
    total = int(n.sum())
    if total == 0:
        return out.view(k, bl, bw, bh)
    box = torch.repeat_interleave(torch.arange(k, device=boxes.device), n)
    start = torch.cumsum(n, 0) - n
    pos = torch.arange(total, device=boxes.device) - start[box] + lo[box]
    p = points[order[pos]]
    b = boxes[box]
    a = axis_angle(b[:, 6])
    c, s = torch.cos(a), torch.sin(a)
    dx, dy = p[:, 0] - b[:, 0], p[:, 1] - b[:, 1]
    h = half[box]
    u = (c * dx + s * dy) / h[:, 0]
    v = (-s * dx + c * dy) / h[:, 1]
    w = (p[:, 2] - b[:, 2]) / h[:, 2]
    inside = (u.abs() < 1) & (v.abs() < 1) & (w.abs() < 1)
    iu = ((u[inside] + 1) * (0.5 * bl)).long().clamp(0, bl - 1)
    iv = ((v[inside] + 1) * (0.5 * bw)).long().clamp(0, bw - 1)
    iw = ((w[inside] + 1) * (0.5 * bh)).long().clamp(0, bh - 1)
    cell = box[inside] * (bl * bw * bh) + (iu * bw + iv) * bh + iw
    out.view(-1).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float32))
    return out.view(k, bl, bw, bh)


class BoxDirection(nn.Module):
    """See the module docstring. ``classes``: the head's Waymo types, in its order (one output each);
    ``apply_to``: the types whose decoded heading this stage decides (default: all of ``classes``)."""

    def __init__(
        self,
        classes: Sequence[int],
        apply_to: Sequence[int] | None = None,
        bins: Sequence[int] = (12, 4, 6),
        margin: Sequence[float] = (0.2, 0.4, 0.2),
        hidden: int = 64,
        weight: float = 1.0,
        max_boxes: int = 64,
        min_points: int = 5,
        jitter_centre: float = 0.1,
        jitter_heading: float = 0.05,
        jitter_size: float = 0.05,
    ) -> None:
        super().__init__()
        self.classes = [int(c) for c in classes]
        self.apply_to = list(self.classes) if apply_to is None else [int(c) for c in apply_to]
        unknown = sorted(set(self.apply_to) - set(self.classes))
        if unknown:
            raise ValueError(f"BoxDirection: apply_to {unknown} are not among the trained classes {self.classes}")
        self.bins = tuple(int(b) for b in bins)
        if len(self.bins) != 3 or min(self.bins) < 1:
            raise ValueError(f"BoxDirection: bins must be 3 positive counts (length, width, height), got {bins}")
        self.margin = tuple(float(m) for m in margin)
        if len(self.margin) != 3 or min(self.margin) < 0:
            raise ValueError(f"BoxDirection: margin must be 3 non-negative fractions, got {margin}")
        self.weight = float(weight)
        self.max_boxes = int(max_boxes)
        self.min_points = int(min_points)
        self.jitter = (float(jitter_centre), float(jitter_heading), float(jitter_size))
        cells = self.bins[0] * self.bins[1] * self.bins[2]
        self.mlp = nn.Sequential(
            nn.Linear(cells + 1, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, len(self.classes)),
        )
        #: training draws so far: the jitter and subsets come from a generator seeded by it, and it is saved
        #: with the weights, so a run resumed from a checkpoint draws what the uninterrupted run would have
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def features(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(K, Bl, Bw, Bh) point counts in the grid of each box (points (P, >=3), boxes (K, 7))."""
        return box_grid_counts(points[:, :3].float(), boxes.float(), self.bins, self.margin)

    def logits(self, grid: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """(K,) front-at-the-minus-end logits of box grids (K, Bl, Bw, Bh) read as class index ``cls``:
        the MLP reads each cell's share of the box's points and the log of their number."""

        k = grid.shape[0]
        if k == 0:
            return grid.new_zeros(0)
        total = grid.flatten(1).sum(dim=1, keepdim=True)
        def g(x: torch.Tensor) -> torch.Tensor:
            share = x.flatten(1) / total.clamp(min=1.0)
            y = self.mlp(torch.cat([share, torch.log1p(total) / 5.0], dim=1))
            return y.gather(1, cls.view(-1, 1)).squeeze(1)
        return g(grid) - g(torch.flip(grid, dims=(1, 2)))

    @staticmethod
    def target(boxes: torch.Tensor) -> torch.Tensor:
        """(K,) 1.0 where the heading is the axis + pi (the front at the grid's -length end)."""
        return heading_direction(boxes[:, 6])

    def _jittered(self, boxes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Labelled boxes moved like a detector's: centre along its axes, heading, size."""
        dc, dh, ds = self.jitter
        k = boxes.shape[0]
        out = boxes.clone()
        g = torch.randn(k, 5, generator=gen, dtype=boxes.dtype).to(boxes.device)
        c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
        along, across = g[:, 0] * dc, g[:, 1] * dc
        out[:, 0] = boxes[:, 0] + c * along - s * across
        out[:, 1] = boxes[:, 1] + s * along + c * across
        out[:, 6] = boxes[:, 6] + g[:, 2] * dh
        out[:, 3:5] = boxes[:, 3:5] * torch.exp(g[:, 3:5] * ds)
        return out

    def loss(self, points: torch.Tensor, boxes: torch.Tensor, types: torch.Tensor,
             num_points: torch.Tensor) -> torch.Tensor:
        """BCE over the labelled boxes of a frame batch (``FrameBatch`` fields: points (P, 6) with the
        stream in column 0, boxes (M, 8) likewise), at most ``max_boxes`` a stream, each with at least
        ``min_points`` points; 0 (with a gradient path) when there is none."""
        terms = []
        cls_all = class_indices(types, self.classes)
        gen = None
        if self.training:
            gen = torch.Generator().manual_seed(1_000_003 * int(self.draws) + 12_345)
            self.draws += 1
        for b in torch.unique(boxes[:, 0]).tolist() if boxes.numel() else []:
            m = (boxes[:, 0] == b) & (cls_all >= 0) & (num_points >= self.min_points)
            idx = torch.nonzero(m).squeeze(1)
            if idx.numel() == 0:
                continue
            if idx.numel() > self.max_boxes:  # a random subset in training, the first ones otherwise
                pick = torch.randperm(idx.numel(), generator=gen) if self.training else torch.arange(idx.numel())
                idx = idx[pick[: self.max_boxes].to(idx.device)]
            gt = boxes[idx, 1:]
            with torch.no_grad():
                seen = self._jittered(gt, gen) if self.training else gt
                grid = self.features(points[points[:, 0] == b][:, 1:4], seen)



            logit = self.logits(grid, cls_all[idx])
            terms.append(nn.functional.binary_cross_entropy_with_logits(logit, self.target(gt), reduction="none"))
        if not terms:
            return sum(p.sum() for p in self.mlp.parameters()) * 0.0
        return torch.cat(terms).mean()

    @torch.no_grad()
    def apply(self, points: torch.Tensor, dets: Detections) -> Detections:
        """``dets`` of one stream with the heading of its ``apply_to`` boxes set by the stage (points
        (P, >=3) of that stream's frame, vehicle frame); a box with no point in its grid keeps its own."""
        cls = class_indices(dets.types, self.classes)
        applies = class_indices(dets.types, self.apply_to) >= 0  # apply_to is a subset of classes
        rows = torch.nonzero(applies).squeeze(1)
        if rows.numel() == 0:
            return dets
        boxes = dets.boxes[rows]
        grid = self.features(points, boxes)
        logit = self.logits(grid, cls[rows])
        axis = axis_angle(boxes[:, 6])
        turned = wrap_angle(axis + math.pi * (logit > 0).to(axis.dtype))

        heading = torch.where(grid.flatten(1).sum(dim=1) > 0, turned, boxes[:, 6])
        out = dets.boxes.clone()
        out[rows, 6] = heading.to(out.dtype)
        return Detections(out, dets.scores, dets.types)
