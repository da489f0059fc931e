"""Batched tensors that travel from the data module into the model.

A clip is T consecutive frames of one segment (``Clip``, the record the datasets of
``detector/data/clips.py`` fill and ``detector/data/collate.py`` batches). A batch holds B clips; frame t
of every clip is one ``FrameBatch``. Tensors carry their batch index in column 0 (``points``, ``boxes``), as everything that
travels through the model does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from detector.data.augment import GlobalTransform
from detector.data.frame import Frame


@dataclass
class Clip:
    """T frames of one segment, after augmentation and filtering, with per-frame reset flags."""

    frames: list[Frame]
    reset: np.ndarray  # (T,) bool
    segment: str
    start: int
    transform: GlobalTransform | None = None  # the augmentation applied, None without

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class FrameBatch:
    """Frame t of B clips.

    points: (P, 6) float32 ``[b, x, y, z, intensity, elongation]``, vehicle frame of frame t of clip b.
    poses: (B, 4, 4) float64 vehicle-to-world (after augmentation, consistent across the clip).
    timestamps: (B,) int64 microseconds.
    reset: (B,) bool, True where the temporal state must start afresh (first frame of a segment, or a
        timestamp gap beyond the configured limit since the previous frame).
    boxes: (M, 8) float32 ``[b, cx, cy, cz, length, width, height, heading]`` (Waymo convention).
    types: (M,) int64 Waymo ``Label.Type``; num_points, difficulty: (M,) int64.
    segments / indices: per clip, the segment name and frame index (for evaluation output).
    box_ids: (M,) the boxes' object ids (Waymo ``Label.id``), row for row (tracking ground truth).
    """

    points: torch.Tensor
    poses: torch.Tensor
    timestamps: torch.Tensor
    reset: torch.Tensor
    boxes: torch.Tensor
    types: torch.Tensor
    num_points: torch.Tensor
    difficulty: torch.Tensor
    segments: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    box_ids: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.poses.shape[0])

    def to(self, device: torch.device | str) -> "FrameBatch":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return FrameBatch(**out)

    def boxes_of(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (M_b, 7) and types of clip b."""
        m = self.boxes[:, 0] == b
        return self.boxes[m, 1:], self.types[m]


@dataclass
class ClipBatch:
    """T frames of B clips, in time order."""

    frames: list[FrameBatch]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def batch_size(self) -> int:
        return self.frames[0].batch_size if self.frames else 0

    def to(self, device: torch.device | str) -> "ClipBatch":
        return ClipBatch([f.to(device) for f in self.frames])
