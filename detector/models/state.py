"""What a ``Detector`` carries from one frame to the next: a record, no geometry.

``State`` holds, per stream, the pose and timestamp of the last frame seen and whether the stream has
started, the temporal mode's own typed state (``temporal``: whatever its ``TemporalFusion.carry``
returns, e.g. ``temporal.RecurrentState`` or ``temporal.SweepHistory``; None for a single frame) and the
sweeps the box stages read. Moving a state into the next frame is the temporal mode's, on the grid's
geometry (``detector.models.grid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

__all__ = ["Sweep", "State", "TemporalState", "keep_sweep_streams"]


@dataclass
class Sweep:
    """One earlier sweep kept by the ``concat`` baseline (or for the box stages): points (P, 6) ``[b, x, y,
    z, intensity, elongation]`` in that sweep's own vehicle frame, with its poses (B, 4, 4) and timestamps
    (B,)."""

    points: torch.Tensor
    poses: torch.Tensor
    timestamps: torch.Tensor


def keep_sweep_streams(sweeps: list[Sweep], keep: torch.Tensor) -> list[Sweep]:
    """``sweeps`` with the points of the streams where ``keep`` (B,) is False removed."""
    return [replace(s, points=s.points[keep[s.points[:, 0].long()]]) for s in sweeps]


class TemporalState(Protocol):
    """What ``State`` asks of a temporal mode's state."""

    @property
    def num_sites(self) -> int: ...

    def keep_streams(self, keep: torch.Tensor) -> TemporalState: ...

    def detach(self) -> TemporalState: ...

    def tensors(self) -> list[torch.Tensor]: ...


@dataclass
class State:
    """What a ``Detector`` carries from one frame to the next, for B streams.

    poses (B, 4, 4) float64 and timestamps (B,) int64 are those of the last frame seen; ``valid`` (B,)
    is False for a stream that has seen no frame yet (or was reset). ``temporal`` is the temporal mode's
    state (None for a single frame), ``box_sweeps`` the newest-first sweeps the box stages read (this
    frame's first); both hold only the streams that are valid. Its size is bounded: at most ``top_k``
    sites per stream, or K sweeps.
    """

    poses: torch.Tensor
    timestamps: torch.Tensor
    valid: torch.Tensor
    temporal: TemporalState | None = None
    box_sweeps: list[Sweep] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.valid.shape[0])

    @property
    def num_sites(self) -> int:
        return 0 if self.temporal is None else self.temporal.num_sites

    def nbytes(self) -> int:
        """Bytes held by the state's tensors."""
        tensors = [self.poses, self.timestamps, self.valid]
        if self.temporal is not None:
            tensors += self.temporal.tensors()
        for s in self.box_sweeps:
            tensors += [s.points, s.poses, s.timestamps]
        return sum(t.numel() * t.element_size() for t in tensors)

    def detach(self) -> State:
        return replace(self, temporal=None if self.temporal is None else self.temporal.detach())

    def drop_streams(self, reset: torch.Tensor) -> State:
        """Forget everything of the streams where ``reset`` (B,) is True."""
        if not bool(reset.any()):
            return self
        keep = ~reset
        temporal = None if self.temporal is None else self.temporal.keep_streams(keep)
        return replace(self, valid=self.valid & keep, temporal=temporal,
                       box_sweeps=keep_sweep_streams(self.box_sweeps, keep))
