"""Collation of clips into the batch contract of ``detector/data/batch.py``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from detector.data.batch import Clip, ClipBatch, FrameBatch
from detector.data.frame import Frame


def collate_frames(frames: Sequence[Frame], reset: Sequence[bool]) -> FrameBatch:
    """Frame b of the list becomes batch element b (column 0 of ``points`` and ``boxes``)."""
    if len(frames) != len(reset):
        raise ValueError(f"collate_frames: {len(frames)} frames but {len(reset)} reset flags")
    if not frames:
        raise ValueError("collate_frames: empty batch")
    points = np.concatenate([_with_batch_column(f.points, b) for b, f in enumerate(frames)], axis=0)
    boxes = np.concatenate([_with_batch_column(f.boxes, b) for b, f in enumerate(frames)], axis=0)
    return FrameBatch(
        points=torch.from_numpy(points),
        poses=torch.from_numpy(np.stack([f.pose for f in frames]).astype(np.float64)),
        timestamps=torch.tensor([f.timestamp_micros for f in frames], dtype=torch.int64),
        reset=torch.tensor([bool(r) for r in reset], dtype=torch.bool),
        boxes=torch.from_numpy(boxes),
        types=torch.from_numpy(np.concatenate([f.types for f in frames]).astype(np.int64)),
        num_points=torch.from_numpy(np.concatenate([f.num_points for f in frames]).astype(np.int64)),
        difficulty=torch.from_numpy(np.concatenate([f.difficulty for f in frames]).astype(np.int64)),
        segments=[f.segment for f in frames],
        indices=[int(f.index) for f in frames],
        box_ids=[str(i) for f in frames for i in f.ids.tolist()],
    )


def _with_batch_column(a: np.ndarray, b: int) -> np.ndarray:
    out = np.empty((len(a), a.shape[1] + 1), np.float32)
    out[:, 0] = b
    out[:, 1:] = a
    return out


def collate_clips(clips: Sequence[Clip]) -> ClipBatch:
    """B clips of equal length T -> ``ClipBatch`` of T ``FrameBatch``es in time order."""
    if not clips:
        raise ValueError("collate_clips: empty batch")
    lengths = {len(c) for c in clips}
    if len(lengths) != 1:
        raise ValueError(f"collate_clips: clips of different lengths {sorted(lengths)} "
                         f"({[(c.segment, c.start, len(c)) for c in clips]})")
    t_len = lengths.pop()
    return ClipBatch([collate_frames([c.frames[t] for c in clips], [c.reset[t] for c in clips])
                      for t in range(t_len)])


def collate_stream(clips: Sequence[Clip]) -> FrameBatch:
    """One-frame clips (segment streaming) -> one ``FrameBatch``."""
    bad = [(c.segment, c.start, len(c)) for c in clips if len(c) != 1]
    if bad:
        raise ValueError(f"collate_stream: expects one-frame clips, got {bad}")
    return collate_frames([c.frames[0] for c in clips], [c.reset[0] for c in clips])


__all__ = ["collate_frames", "collate_clips", "collate_stream"]
