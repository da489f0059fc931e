"""The streaming state and its ego-motion alignment.

A recurrent state lives on sparse sites ``[b, z, y, x]`` of the grid of the frame that made it. To use
it at frame t it is moved by ``inv(pose_t) @ pose_{t-1}`` (per batch element): voxel centres are
transformed rigidly, re-voxelized on the current grid (sites falling together average their features,
sites leaving the grid are dropped) and then joined with the current frame's sites (union, zeros where
a side has no features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from detector.models.grid import VoxelGrid, unique_sites

__all__ = [
    "RecurrentState",
    "Sweep",
    "State",
    "relative_transforms",
    "move_sites",
    "align_state",
    "union_sites",
    "scatter_rows",
]


@dataclass
class RecurrentState:
    """Hidden (and, for LSTM cells, memory) features per layer on sites of the frame that made them.

    sites: (N, 4) int32 ``[b, z, y, x]``; hidden[l]: (N, H); memory[l]: (N, H) or None (GRU);
    age: (N,) int32, frames since the site last held a backbone site of its frame (0: the frame that
    made the state), or None where nobody counted (a site of unknown age counts as seen last frame).
    """

    sites: torch.Tensor
    hidden: list[torch.Tensor]
    memory: list[torch.Tensor | None]
    age: torch.Tensor | None = None

    @property
    def num_sites(self) -> int:
        return int(self.sites.shape[0])

    def select(self, rows: torch.Tensor) -> RecurrentState:
        return RecurrentState(
            self.sites[rows].contiguous(),
            [h[rows] for h in self.hidden],
            [None if c is None else c[rows] for c in self.memory],
            None if self.age is None else self.age[rows],
        )

    def detach(self) -> RecurrentState:
        return RecurrentState(
            self.sites, [h.detach() for h in self.hidden], [None if c is None else c.detach() for c in self.memory],
            self.age,
        )

    def tensors(self) -> list[torch.Tensor]:
        return [self.sites, *self.hidden, *(c for c in self.memory if c is not None),
                *(() if self.age is None else (self.age,))]


@dataclass
class Sweep:
    """One earlier sweep kept by the ``concat`` baseline (or for the box stages): points (P, 6) ``[b, x, y,
    z, intensity, elongation]`` in that sweep's own vehicle frame, with its poses (B, 4, 4) and timestamps
    (B,)."""

    points: torch.Tensor
    poses: torch.Tensor
    timestamps: torch.Tensor


def with_sweeps(points: torch.Tensor, poses: torch.Tensor, timestamps: torch.Tensor,
                sweeps: list[Sweep]) -> torch.Tensor:
    """A frame's points (P, C) ``[b, x, y, z, ...]`` and those of earlier ``sweeps`` moved into its vehicle
    frame by ``inv(pose_t) @ pose_k`` (``poses`` (B, 4, 4), ``timestamps`` (B,) the frame's), each row
    with one more column: its sweep's age in seconds (0 for the frame's own points)."""
    parts = [torch.cat([points, points.new_zeros((points.shape[0], 1))], dim=1)]
    for sweep in sweeps:
        if sweep.points.shape[0] == 0:
            continue
        b = sweep.points[:, 0]
        xyz = transform_points(sweep.points[:, 1:4], b, relative_transforms(poses, sweep.poses))
        age = (timestamps - sweep.timestamps).to(xyz.dtype).to(xyz.device)[b.long()] * 1e-6
        parts.append(torch.cat([sweep.points[:, :1], xyz, sweep.points[:, 4:], age[:, None]], dim=1))
    return torch.cat(parts, dim=0)


@dataclass
class State:
    """What a ``Detector`` carries from one frame to the next, for B streams.

    poses (B, 4, 4) float64 and timestamps (B,) int64 are those of the last frame seen; ``valid`` (B,)
    is False for a stream that has seen no frame yet (or was reset). ``recurrent`` holds the cell
    state (recurrent modes), ``sweeps`` the newest-first earlier sweeps (``concat``), ``box_sweeps`` the
    newest-first sweeps the box stages read (this frame's first); all hold only the streams that are
    valid. Its size is bounded: at most ``top_k`` sites per stream, or K sweeps.
    """

    poses: torch.Tensor
    timestamps: torch.Tensor
    valid: torch.Tensor
    recurrent: RecurrentState | None = None
    sweeps: list[Sweep] = field(default_factory=list)
    box_sweeps: list[Sweep] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.valid.shape[0])

    @property
    def num_sites(self) -> int:
        return 0 if self.recurrent is None else self.recurrent.num_sites

    def nbytes(self) -> int:
        """Bytes held by the state's tensors."""
        tensors = [self.poses, self.timestamps, self.valid]
        if self.recurrent is not None:
            tensors += self.recurrent.tensors()
        for s in (*self.sweeps, *self.box_sweeps):
            tensors += [s.points, s.poses, s.timestamps]
        return sum(t.numel() * t.element_size() for t in tensors)

    def detach(self) -> State:
        return replace(self, recurrent=None if self.recurrent is None else self.recurrent.detach())

    def drop_streams(self, reset: torch.Tensor) -> State:
        """Forget everything of the streams where ``reset`` (B,) is True."""
        if not bool(reset.any()):
            return self
        keep_b = ~reset
        recurrent = self.recurrent
        if recurrent is not None:
            recurrent = recurrent.select(keep_b[recurrent.sites[:, 0].long()])
        def kept(sweeps: list[Sweep]) -> list[Sweep]:
            return [replace(s, points=s.points[keep_b[s.points[:, 0].long()]]) for s in sweeps]

        return replace(self, valid=self.valid & keep_b, recurrent=recurrent, sweeps=kept(self.sweeps),
                       box_sweeps=kept(self.box_sweeps))


def relative_transforms(pose_to: torch.Tensor, pose_from: torch.Tensor) -> torch.Tensor:
    """``inv(pose_to) @ pose_from`` per batch element, float64 (B, 4, 4): maps points of the vehicle
    frame of ``pose_from`` into the vehicle frame of ``pose_to``."""
    return torch.linalg.solve(pose_to.double(), pose_from.double())


def transform_points(xyz: torch.Tensor, batch: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Apply ``transforms[batch[i]]`` (B, 4, 4) to points ``xyz`` (N, 3); computed in float64."""
    t = transforms[batch.long()]
    out = (t[:, :3, :3] @ xyz.double().unsqueeze(2)).squeeze(2) + t[:, :3, 3]
    return out.to(xyz.dtype)


def move_sites(
    sites: torch.Tensor, transforms: torch.Tensor, grid: VoxelGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move sites ``[b, z, y, x]`` (N, 4) by ``transforms`` (B, 4, 4): returns the new sites (N, 4)
    int64 on the same grid and the mask of those that stay inside it."""
    centres = grid.centers(sites)
    moved = transform_points(centres, sites[:, 0], transforms)
    cell, inside = grid.coords(moved)
    return torch.cat([sites[:, :1].long(), cell], dim=1), inside


def align_state(
    state: RecurrentState, transforms: torch.Tensor, grid: VoxelGrid
) -> RecurrentState:
    """Move a recurrent state by ``transforms`` (B, 4, 4) onto the voxelizer's grid (see module doc).

    Identity transforms return the same sites and features (states are kept sorted by site). Sites
    falling together keep the youngest age."""
    moved, inside = move_sites(state.sites, transforms, grid)
    feats = [*state.hidden, *(c for c in state.memory if c is not None)]
    sites, pooled, _ = grid.pool(moved[inside], [f[inside] for f in feats])
    n_layers = len(state.hidden)
    hidden = pooled[:n_layers]
    rest = iter(pooled[n_layers:])
    memory = [None if c is None else next(rest) for c in state.memory]
    age = None
    if state.age is not None:
        _, inverse = unique_sites(moved[inside], grid.spatial_shape)
        age = state.age.new_full((sites.shape[0],), torch.iinfo(state.age.dtype).max)
        age = age.scatter_reduce_(0, inverse, state.age[inside], "amin")
    return RecurrentState(sites, hidden, memory, age)


def union_sites(
    parts: Sequence[torch.Tensor], spatial_shape: Sequence[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Union of several site sets (each (N_i, 4)): the sorted union (U, 4) int32 contiguous and,
    for each part, the row of each of its sites in the union."""
    sizes = [p.shape[0] for p in parts]
    uniq, inverse = unique_sites(torch.cat([p.long() for p in parts], dim=0), spatial_shape)
    return uniq.int().contiguous(), list(torch.split(inverse, sizes))


def scatter_rows(features: torch.Tensor, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Place ``features`` (N, F) at ``rows`` of a zero (num_rows, F) tensor (differentiable)."""
    out = features.new_zeros((num_rows, features.shape[1]))
    return out.index_copy(0, rows, features)
