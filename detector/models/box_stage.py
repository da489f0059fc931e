"""What the stages after decoding share: the points of a frame in each box's own axes, and training on
the frame's labelled boxes jittered like a detector's.

A box stage (``detector.models.box_direction``, ``detector.models.box_refine``) looks at each decoded
box again, through the current frame's points in and around it, in the box's axis frame (the axis angle
in (-pi/2, pi/2], so the frame does not depend on which end is the front). It trains on the labelled
boxes of one frame a clip, moved like a detector's boxes, not on the head's outputs: no gradient
reaches the backbone and the stage does not wait for the head to find anything. Its jitter and subsets
come from a generator seeded by a draw counter saved with its weights, so a resumed run draws what the
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from detector.boxes import from_box_frame, points_in_box_frames
from detector.models.targets import class_indices

__all__ = ["BoxStage", "axis_reading", "box_grid_counts", "evenly_spaced", "jitter_boxes", "max_pool", "point_mlp"]

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
    box, uvw = points_in_box_frames(points, boxes, margin)
    if box.numel():
        iu = ((uvw[:, 0] + 1) * (0.5 * bl)).long().clamp(0, bl - 1)
        iv = ((uvw[:, 1] + 1) * (0.5 * bw)).long().clamp(0, bw - 1)
        iw = ((uvw[:, 2] + 1) * (0.5 * bh)).long().clamp(0, bh - 1)
        cell = box * (bl * bw * bh) + (iu * bw + iv) * bh + iw
        out.view(-1).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float32))
    return out.view(k, bl, bw, bh)


def evenly_spaced(box: torch.Tensor, uvw: torch.Tensor, k: int, max_points: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                        torch.Tensor]:
    """``(box, uvw, counts (k,))`` of :func:`points_in_box_frames` output kept to at most ``max_points`` a
    box, evenly spaced in the search's order (its points come grouped by box); ``counts`` are the points
    each box had before."""
    counts = torch.bincount(box, minlength=k)
    if box.numel() and int(counts.max()) > max_points:
        rank = torch.arange(box.numel(), device=box.device) - (torch.cumsum(counts, 0) - counts)[box]
        n = counts[box]
        keep = (rank * max_points) // n != ((rank - 1) * max_points) // n
        keep |= rank == 0
        box, uvw = box[keep], uvw[keep]
    return box, uvw, counts


def point_mlp(channels: Sequence[int], inputs: int = 3) -> tuple[nn.Sequential, int]:
    """A point-wise MLP from a point's 3 axis-frame coordinates (and ``inputs - 3`` further columns)
    through ``channels`` (ReLU after each), and its output width."""
    layers, width = [], int(inputs)
    for ch in channels:
        layers += [nn.Linear(width, int(ch)), nn.ReLU(inplace=True)]
        width = int(ch)
    return nn.Sequential(*layers), width


def axis_reading(uvw: torch.Tensor, sign: float) -> torch.Tensor:
    """Axis-frame coordinates (n, 3 + E) as read from the axis' other end for ``sign`` -1: (u, v) -> (-u, -v)."""
    flip = torch.ones(uvw.shape[1], device=uvw.device, dtype=uvw.dtype)
    flip[:2] = sign
    return uvw * flip


def max_pool(feats: torch.Tensor, box: torch.Tensor, k: int) -> torch.Tensor:
    """(k, C) max over each box's rows of point features (n, C) (0 for a box without points)."""
    out = feats.new_zeros(k, feats.shape[1])
    if box.numel():
        out = out.scatter_reduce(0, box.view(-1, 1).expand(-1, feats.shape[1]), feats, "amax", include_self=True)
    return out


def jitter_boxes(boxes: torch.Tensor, gen: torch.Generator | None, centre: Sequence[float], heading: float,
                 size: Sequence[float], relative: bool = False) -> torch.Tensor:
    """Boxes (K, 7) moved like a detector's: the centre along the box's axis, across it (and up, with a
    third ``centre`` value) by normal draws of those standard deviations (in metres, or in fractions of
    the box's length / width / height with ``relative``), the heading by ``heading`` radians and the
    length, width (and height) by ``exp`` of draws of ``size``. One ``randn`` of
    ``len(centre) + 1 + len(size)`` columns, in that order."""
    nc, ns = len(centre), len(size)
    k = boxes.shape[0]
    g = torch.randn(k, nc + 1 + ns, generator=gen, dtype=boxes.dtype).to(boxes.device)
    sd = torch.as_tensor([*centre], dtype=boxes.dtype, device=boxes.device)
    shift = g[:, :nc] * sd
    if relative:
        shift = shift * boxes[:, 3:3 + nc]
    out = boxes.clone()
    out[:, 0], out[:, 1] = from_box_frame(boxes[:, 0], boxes[:, 1], shift[:, 0], shift[:, 1], boxes[:, 6])
    if nc > 2:
        out[:, 2] = boxes[:, 2] + shift[:, 2]
    out[:, 6] = boxes[:, 6] + g[:, nc] * heading
    out[:, 3:3 + ns] = boxes[:, 3:3 + ns] * torch.exp(
        g[:, nc + 1:] * torch.as_tensor([*size], dtype=boxes.dtype, device=boxes.device))
    return out


class BoxStage(nn.Module):
    """Base of the stages after decoding: ``classes`` are the head's Waymo types in its order (one output
    each), ``apply_to`` the types whose boxes the stage changes (default: all of ``classes``); it trains on
    at most ``max_boxes`` labelled boxes a stream with at least ``min_points`` points, loss weight
    ``weight``, on the last frame of each training clip (``train_frames="last"``) or on every frame of it
    (``"all"``, the loss averaged over the frames). Subclasses set ``name`` (their loss key)."""

    name = "box"
    TRAIN_FRAMES = ("last", "all")
    #: sweeps a stage reads: 1, the current frame's points (``detector.models.box_refine`` may read more)
    frames = 1

    def __init__(self, classes: Sequence[int], apply_to: Sequence[int] | None, weight: float, max_boxes: int,
                 min_points: int, train_frames: str = "last") -> None:
        super().__init__()
        kind = type(self).__name__
        if train_frames not in self.TRAIN_FRAMES:
            raise ValueError(f"{kind}: train_frames must be one of {self.TRAIN_FRAMES}, got {train_frames!r}")
        self.train_frames = train_frames
        self.classes = [int(c) for c in classes]
        self.apply_to = list(self.classes) if apply_to is None else [int(c) for c in apply_to]
        unknown = sorted(set(self.apply_to) - set(self.classes))
        if unknown:
            raise ValueError(f"{kind}: apply_to {unknown} are not among the trained classes {self.classes}")
        self.weight = float(weight)
        self.max_boxes = int(max_boxes)
        self.min_points = int(min_points)
        #: training draws so far: the jitter and subsets come from a generator seeded by it, and it is saved
        #: with the weights, so a run resumed from a checkpoint draws what the uninterrupted run would have
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def _fractions(self, margin: Sequence[float]) -> tuple[float, float, float]:
        """A grid's growth beyond the box along / across / up, checked: 3 non-negative fractions."""
        out = tuple(float(m) for m in margin)
        if len(out) != 3 or min(out) < 0:
            raise ValueError(f"{type(self).__name__}: margin must be 3 non-negative fractions, got {margin}")
        return out

    def _generator(self) -> torch.Generator | None:
        """The training draw's generator (None outside training: no jitter, no random subsets)."""
        if not self.training:
            return None
        gen = torch.Generator().manual_seed(1_000_003 * int(self.draws) + 12_345)
        self.draws += 1
        return gen

    def _labelled(self, points: torch.Tensor, boxes: torch.Tensor, types: torch.Tensor, num_points: torch.Tensor,
                  gen: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per stream of a frame batch (``FrameBatch`` fields: points (P, C) with the stream in column 0,
        boxes (M, 8) likewise): ``(stream points (p, C - 1), labelled boxes (k, 7), their class indices)``, the
        boxes of the head's classes with at least ``min_points`` points, at most ``max_boxes`` (a random
        subset in training, the first ones otherwise)."""
        cls_all = class_indices(types, self.classes)
        for b in torch.unique(boxes[:, 0]).tolist() if boxes.numel() else []:
            m = (boxes[:, 0] == b) & (cls_all >= 0) & (num_points >= self.min_points)
            idx = torch.nonzero(m).squeeze(1)
            if idx.numel() == 0:
                continue
            if idx.numel() > self.max_boxes:
                pick = torch.randperm(idx.numel(), generator=gen) if gen is not None else torch.arange(idx.numel())
                idx = idx[pick[: self.max_boxes].to(idx.device)]
            yield points[points[:, 0] == b][:, 1:], boxes[idx, 1:], cls_all[idx]

    def training_frames(self, frames: Sequence) -> list:
        """The frames of a clip (time order) that the stage's loss reads: the last one, or all of them."""
        frames = list(frames)
        return frames if self.train_frames == "all" else frames[-1:]

    def clip_loss(self, frames: Sequence) -> torch.Tensor:
        """The stage's loss averaged over its :meth:`training_frames` of a clip (``FrameBatch`` objects)."""
        terms = [self.loss(f.points, f.boxes, f.types, f.num_points) for f in self.training_frames(frames)]
        return terms[0] if len(terms) == 1 else torch.stack(terms).mean()

    def _zero_loss(self) -> torch.Tensor:
        """0 with a gradient path to every weight (no labelled box in the batch)."""
        return sum(p.sum() for p in self.parameters()) * 0.0

    def _applies(self, types: torch.Tensor) -> torch.Tensor:
        """Rows of detections (by Waymo type) that the stage changes."""
        return torch.nonzero(class_indices(types, self.apply_to) >= 0).squeeze(1)
