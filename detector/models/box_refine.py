"""A second look at each box's extent: its centre, size and axis from the points in and around it.

The head regresses a car's box from every voxel inside it, so the far end of a car is a guess from a
voxel three metres away: on the demo's validation split the head's vehicle AP is 0.96 at IoU 0.5 and
0.78 at 0.7, the length (0.27 m median error) and the centre along the axis (0.11 m) its largest
errors (docs/studies/box-refinement-stage.md). This stage reads the current frame's points in
each decoded box grown by ``margin``, in the box's axis frame normalised by its half-sizes (the axis
angle in (-pi/2, pi/2], so the frame does not depend on the front), through a point-wise MLP and a max
over the box's points (a PointNet), and regresses the box's residuals: centre along / across / up in
fractions of the box's length / width / height, the log of each size's ratio, and the axis angle's
change. Turning the frame by pi (the other reading of the same axis) negates the along and across
coordinates and residuals, so the output is the mean of the network on both readings with those signs
undone: one box has one refinement whichever way its axis is read.

Training uses the frame's labelled boxes, jittered like a detector's boxes (``detector.models.box_stage``),
the residuals scaled by the jitter's own deviations, smooth L1; no gradient reaches the backbone. At
decoding it moves each box of the ``apply_to`` types with at least ``min_points`` points in its grown
extent, then the box-direction stage and the stream's motion heading set the front.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from detector.boxes import axis_angle, axis_change, from_box_frame, points_in_box_frames, to_box_frame, wrap_angle
from detector.models.box_stage import (
    BoxStage,
    axis_reading,
    evenly_spaced,
    jitter_boxes,
    max_pool,
    point_mlp,
)
from detector.models.grid import with_sweeps
from detector.models.losses import smooth_l1
from detector.models.outputs import Detections
from detector.models.state import Sweep
from detector.models.targets import class_indices

__all__ = ["BoxRefine", "box_residuals", "apply_residuals", "sweep_xyz_age"]

#: a sweep's age (seconds) times this is the point input (0.1 s between frames: 0.5 a frame)
AGE_SCALE = 5.0

#: the residual code: centre along / across / up (fractions of the box's size), log size ratios, axis change
CODE = 7
#: residual components whose sign flips when the box frame is read the other way round (along, across)
_FLIP = torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def sweep_xyz_age(points: torch.Tensor, poses: torch.Tensor, timestamps: torch.Tensor,
                  earlier: list[Sweep]) -> torch.Tensor:
    """(P, 5) ``[b, x, y, z, age]``: a frame's points (P, >= 4) ``[b, x, y, z, ...]`` and those of the
    ``earlier`` sweeps (newest first) moved into its vehicle frame, with each sweep's age in seconds."""
    p = with_sweeps(points, poses, timestamps, earlier)
    return torch.cat([p[:, :4], p[:, -1:]], dim=1)


def box_residuals(boxes: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(K, 7) residuals that take ``boxes`` (K, 7) to ``truth`` (K, 7), in each box's axis frame."""
    along, across = to_box_frame(truth[:, 0] - boxes[:, 0], truth[:, 1] - boxes[:, 1], axis_angle(boxes[:, 6]))
    return torch.stack([
        along / boxes[:, 3],
        across / boxes[:, 4],
        (truth[:, 2] - boxes[:, 2]) / boxes[:, 5],
        torch.log(truth[:, 3] / boxes[:, 3]),
        torch.log(truth[:, 4] / boxes[:, 4]),
        torch.log(truth[:, 5] / boxes[:, 5]),
        axis_change(truth[:, 6], boxes[:, 6]),
    ], dim=1)


def apply_residuals(boxes: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`box_residuals`: ``boxes`` (K, 7) moved by ``res`` (K, 7); the front (which end of
    the axis the heading points to) is kept."""
    along, across = res[:, 0] * boxes[:, 3], res[:, 1] * boxes[:, 4]
    out = boxes.clone()
    out[:, 0], out[:, 1] = from_box_frame(boxes[:, 0], boxes[:, 1], along, across, axis_angle(boxes[:, 6]))
    out[:, 2] = boxes[:, 2] + res[:, 2] * boxes[:, 5]
    out[:, 3:6] = boxes[:, 3:6] * torch.exp(res[:, 3:6])
    out[:, 6] = wrap_angle(boxes[:, 6] + res[:, 6])
    return out


class BoxRefine(BoxStage):
    """See the module docstring. ``classes``: the head's Waymo types in its order (one residual code
    each); ``apply_to``: the types whose decoded boxes the stage moves (default: all of ``classes``);
    ``jitter_centre`` (along, across, up) in fractions of the box's size, ``jitter_heading`` in radians,
    ``jitter_size`` (length, width, height) log-normal deviations: the training boxes' moves, and the
    scale of the regressed residuals; ``max_points``: at most this many of a box's points (evenly spaced) are
    read. ``frames`` > 1: the points of the ``frames - 1`` sweeps before are read too, moved into the
    current vehicle frame by the ego poses, each with its sweep's age as a fourth input (a moving object's
    earlier points lie behind it); training reads them from the clip's earlier frames."""

    name = "refine_box"

    def __init__(
        self,
        classes: Sequence[int],
        apply_to: Sequence[int] | None = None,
        margin: Sequence[float] = (0.3, 0.5, 0.3),
        point_channels: Sequence[int] = (32, 64),
        hidden: int = 64,
        weight: float = 1.0,
        max_boxes: int = 64,
        min_points: int = 5,
        jitter_centre: Sequence[float] = (0.06, 0.07, 0.05),
        jitter_heading: float = 0.1,
        jitter_size: Sequence[float] = (0.08, 0.05, 0.07),
        copies: int = 1,
        max_points: int = 128,
        train_frames: str = "last",
        frames: int = 1,
    ) -> None:
        super().__init__(classes, apply_to, weight, max_boxes, min_points, train_frames)
        self.frames = int(frames)
        if self.frames < 1:
            raise ValueError(f"BoxRefine: frames must be >= 1, got {frames}")
        self.margin = self._fractions(margin)
        self.jitter_centre = tuple(float(v) for v in jitter_centre)
        self.jitter_size = tuple(float(v) for v in jitter_size)
        if len(self.jitter_centre) != 3 or len(self.jitter_size) != 3:
            raise ValueError("BoxRefine: jitter_centre and jitter_size need 3 values each "
                             f"(got {jitter_centre}, {jitter_size})")
        self.jitter_heading = float(jitter_heading)
        scale = [*self.jitter_centre, *self.jitter_size, self.jitter_heading]
        if min(scale) <= 0:
            raise ValueError(f"BoxRefine: every jitter deviation must be > 0 (they scale the residuals), got {scale}")
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.max_points = int(max_points)
        if self.max_points < 1:
            raise ValueError(f"BoxRefine: max_points must be >= 1, got {max_points}")
        self.copies = int(copies)

        if self.copies < 1:
            raise ValueError(f"BoxRefine: copies must be >= 1, got {copies}")
        # point inputs: the axis-frame coordinates, and the sweep's age when earlier sweeps are read
        self.point_mlp, width = point_mlp(point_channels, 3 if self.frames == 1 else 4)
        # box inputs: the pooled point features, log(1 + points) and the box's log size (the class prior)
        self.box_mlp = nn.Sequential(
            nn.Linear(width + 4, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, CODE * len(self.classes)),
        )

    def residuals(self, points: torch.Tensor, boxes: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
        """``(residuals (K, 7) in the jitter's units, points in each grown box (K,))`` of boxes (K, 7) read as
        class indices ``cls`` (K,), from the frame's points (P, >= 3), or with ``frames`` > 1 those of its
        sweeps (P, 4): x, y, z and the sweep's age in seconds."""
        k = int(boxes.shape[0])
        if self.frames == 1:
            points = points[:, :3]
        elif points.shape[1] != 4:
            raise ValueError(f"BoxRefine(frames={self.frames}): expected points (P, 4) x, y, z, age; "
                             f"got {tuple(points.shape)}")
        else:
            points = points * points.new_tensor([1.0, 1.0, 1.0, AGE_SCALE])
        box, uvw = points_in_box_frames(points.float(), boxes.float(), self.margin)
        box, uvw, counts = evenly_spaced(box, uvw, k, self.max_points)
        count = counts.to(torch.float32)
        extra = torch.cat([torch.log1p(count)[:, None] / 5.0, torch.log(boxes[:, 3:6].float().clamp(min=1e-3))], 1)
        flip = _FLIP.to(uvw.device)
        reads = []
        for sign in (1.0, -1.0):  # the axis read either way: (u, v) -> (-u, -v), along / across undone
            y = self.box_mlp(torch.cat([max_pool(self.point_mlp(axis_reading(uvw, sign)), box, k), extra], 1))
            y = y.view(k, len(self.classes), CODE)
            y = y[torch.arange(k, device=y.device), cls]
            reads.append(y if sign > 0 else y * flip)
        return 0.5 * (reads[0] + reads[1]), count

    def clip_loss(self, frames: Sequence) -> torch.Tensor:
        """As ``BoxStage.clip_loss``; with ``frames`` > 1 each training frame's points come with those of
        the clip's frames before it (at most ``frames - 1``), as :meth:`apply` reads a stream's sweeps."""
        if self.frames == 1:
            return super().clip_loss(frames)
        frames = list(frames)
        terms = []
        for f in self.training_frames(frames):
            i = next(j for j, g in enumerate(frames) if g is f)
            earlier = [Sweep(g.points, g.poses, g.timestamps) for g in reversed(frames[max(0, i - self.frames + 1):i])]
            terms.append(self.loss(sweep_xyz_age(f.points, f.poses, f.timestamps, earlier), f.boxes, f.types,
                                   f.num_points))
        return terms[0] if len(terms) == 1 else torch.stack(terms).mean()

    def loss(self, points: torch.Tensor, boxes: torch.Tensor, types: torch.Tensor,
             num_points: torch.Tensor) -> torch.Tensor:
        """Smooth L1 of the residuals (in the jitter's units) over the labelled boxes of a frame batch
        (``FrameBatch`` fields, as ``BoxStage._labelled``), ``copies`` jittered copies of each in training
        (the boxes themselves otherwise); 0 (with a gradient path) when there is none."""
        terms = []
        gen = self._generator()
        scale = self.scale
        for stream_points, gt, cls in self._labelled(points, boxes, types, num_points, gen):
            with torch.no_grad():
                if gen is not None:
                    gt = gt.repeat(self.copies, 1)
                    cls = cls.repeat(self.copies)
                    seen = jitter_boxes(gt, gen, self.jitter_centre, self.jitter_heading, self.jitter_size,
                                        relative=True)
                else:
                    seen = gt
                target = box_residuals(seen.float(), gt.float()) / scale
            pred, _ = self.residuals(stream_points, seen, cls)
            terms.append(smooth_l1(pred, target).sum(dim=1))
        if not terms:
            return self._zero_loss()
        return torch.cat(terms).mean()

    @torch.no_grad()
    def apply(self, points: torch.Tensor, dets: Detections) -> Detections:
        """``dets`` of one stream with its ``apply_to`` boxes moved by the stage (points (P, >=3) of that
        stream's frame, vehicle frame; with ``frames`` > 1 its sweeps' points (P, 4), see :meth:`residuals`);
        a box with fewer than ``min_points`` points in its grown extent stays as it is."""
        rows = self._applies(dets.types)
        if rows.numel() == 0:
            return dets
        boxes = dets.boxes[rows].float()
        cls = class_indices(dets.types[rows], self.classes)
        res, count = self.residuals(points, boxes, cls)
        keep = (count >= self.min_points)[:, None]
        boxes = torch.where(keep, apply_residuals(boxes, res * self.scale), boxes)
        out = dets.boxes.clone()
        out[rows] = boxes.to(out.dtype)
        return Detections(out, dets.scores, dets.types)

