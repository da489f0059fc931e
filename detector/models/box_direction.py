"""A second look at each box's front: the points inside the box, binned in the box's own axes.

The head's direction bit is one logit per voxel of a shared feature map; learning a car's front there
takes backbone capacity the boxes need (docs/studies/direction-bit.md). This stage asks the
question where it is a question of shape alone: the current frame's points in and around a box are
counted in a ``length x width x height`` grid of the box's axis frame (the axis angle in
(-pi/2, pi/2]), normalised by the box's size, and a small MLP says whether the front lies at the
grid's -length end. The logit is antisymmetric by construction, ``g(x) - g(rot180(x))``: turning the
box by pi turns its grid and flips the answer, so a box has one front whichever way its axis is read.
With ``encoder="points"`` the grid is replaced by a PointNet over the box's points in the same frame
(a point-wise MLP, a max over at most ``max_points`` of them, the same antisymmetric difference of the
two readings of the axis): no cell edges, so a box that is off by a few tenths of a metre reads the same.

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

from detector.boxes import axis_angle, heading_direction, points_in_box_frames, wrap_angle
from detector.models.box_stage import (
    BoxStage,
    axis_reading,
    box_grid_counts,
    evenly_spaced,
    jitter_boxes,
    max_pool,
    point_mlp,
)
from detector.models.outputs import Detections
from detector.models.targets import class_indices

__all__ = ["BoxDirection", "box_grid_counts"]


class BoxDirection(BoxStage):
    """See the module docstring. ``classes``: the head's Waymo types, in its order (one output each);
    ``apply_to``: the types whose decoded heading this stage decides (default: all of ``classes``)."""

    name = "dir_box"

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
        train_frames: str = "last",
        encoder: str = "grid",
        point_channels: Sequence[int] = (32, 64),
        max_points: int = 128,
    ) -> None:
        super().__init__(classes, apply_to, weight, max_boxes, min_points, train_frames)
        if encoder not in ("grid", "points"):
            raise ValueError(f"BoxDirection: encoder must be 'grid' or 'points', got {encoder!r}")
        self.encoder = encoder
        self.max_points = int(max_points)
        if self.max_points < 1:
            raise ValueError(f"BoxDirection: max_points must be >= 1, got {max_points}")
        self.bins = tuple(int(b) for b in bins)
        if len(self.bins) != 3 or min(self.bins) < 1:
            raise ValueError(f"BoxDirection: bins must be 3 positive counts (length, width, height), got {bins}")
        self.margin = self._fractions(margin)
        self.jitter = (float(jitter_centre), float(jitter_heading), float(jitter_size))
        if encoder == "grid":
            width = self.bins[0] * self.bins[1] * self.bins[2]
        else:
            self.point_mlp, width = point_mlp(point_channels)
        self.mlp = nn.Sequential(
            nn.Linear(width + 1, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, len(self.classes)),
        )

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

    def point_logits(self, points: torch.Tensor, boxes: torch.Tensor,
                     cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (K,), points in each grown box (K,))`` with the points encoder: a point-wise MLP over
        each box's points (axis-frame coordinates in half-sizes, at most ``max_points``, evenly spaced),
        max-pooled, with the log of their number; the same network on the other reading of the axis
        ((u, v) -> (-u, -v)) subtracted."""
        k = int(boxes.shape[0])
        box, uvw = points_in_box_frames(points[:, :3].float(), boxes.float(), self.margin)
        box, uvw, counts = evenly_spaced(box, uvw, k, self.max_points)
        if k == 0:
            return uvw.new_zeros(0), counts
        total = torch.log1p(counts.to(torch.float32))[:, None] / 5.0
        def g(sign: float) -> torch.Tensor:
            y = self.mlp(torch.cat([max_pool(self.point_mlp(axis_reading(uvw, sign)), box, k), total], dim=1))
            return y.gather(1, cls.view(-1, 1)).squeeze(1)
        return g(1.0) - g(-1.0), counts

    def front_logits(self, points: torch.Tensor, boxes: torch.Tensor,
                     cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(front-at-the-minus-end logits (K,), points in each box's grown extent (K,))`` of boxes (K, 7)
        read as class indices ``cls``, from the frame's points (P, >=3), by the configured encoder."""
        if self.encoder == "points":
            return self.point_logits(points, boxes, cls)
        grid = self.features(points, boxes)
        return self.logits(grid, cls), grid.flatten(1).sum(dim=1)

    @staticmethod
    def target(boxes: torch.Tensor) -> torch.Tensor:
        """(K,) 1.0 where the heading is the axis + pi (the front at the grid's -length end)."""
        return heading_direction(boxes[:, 6])

    def loss(self, points: torch.Tensor, boxes: torch.Tensor, types: torch.Tensor,
             num_points: torch.Tensor) -> torch.Tensor:
        """BCE over the labelled boxes of a frame batch (``FrameBatch`` fields: points (P, 6) with the
        stream in column 0, boxes (M, 8) likewise), at most ``max_boxes`` a stream, each with at least
        ``min_points`` points; 0 (with a gradient path) when there is none."""
        terms = []
        gen = self._generator()
        dc, dh, ds = self.jitter
        for stream_points, gt, cls in self._labelled(points, boxes, types, num_points, gen):
            with torch.no_grad():
                seen = jitter_boxes(gt, gen, (dc, dc), dh, (ds, ds)) if gen is not None else gt
            logit, _ = self.front_logits(stream_points, seen, cls)
            terms.append(nn.functional.binary_cross_entropy_with_logits(logit, self.target(gt), reduction="none"))
        if not terms:
            return self._zero_loss()
        return torch.cat(terms).mean()

    @torch.no_grad()
    def apply(self, points: torch.Tensor, dets: Detections) -> Detections:
        """``dets`` of one stream with the heading of its ``apply_to`` boxes set by the stage (points
        (P, >=3) of that stream's frame, vehicle frame); a box with no point in its grid keeps its own."""
        cls = class_indices(dets.types, self.classes)
        rows = self._applies(dets.types)
        if rows.numel() == 0:
            return dets
        boxes = dets.boxes[rows]
        logit, count = self.front_logits(points, boxes, cls[rows])
        axis = axis_angle(boxes[:, 6])
        turned = wrap_angle(axis + math.pi * (logit > 0).to(axis.dtype))
        heading = torch.where(count > 0, turned, boxes[:, 6])
        out = dets.boxes.clone()
        out[rows, 6] = heading.to(out.dtype)
        return Detections(out, dets.scores, dets.types)
