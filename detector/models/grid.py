"""The voxel grid: cells of ``voxel_size`` over ``point_range``, and moving sites and points between frames.

Sparse tensors use spconv's layout: indices ``(N, 4)`` contiguous int32 ``[b, z, y, x]`` and
``spatial_shape = [nz, ny, nx]``. The grid maps metres to cells (``coords``), cells to their centres
(``centers``), moves sites rigidly between frames (``move``) and pools features of coinciding sites
(``pool``): the temporal state is re-voxelized on the current frame's grid with these, then joined with
the frame's own sites (``union_sites``, ``scatter_rows``). Between frames, per stream, points move by
``inv(pose_t) @ pose_k`` (``relative_transforms``, ``transform_points``, ``with_sweeps``). Feature
encoding of points is the ``Voxelizer``'s (voxelizer.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from detector.ops.sites import compiled_voxel_means, voxel_means
from detector.point_range import check_point_range, in_point_range

__all__ = ["VoxelGrid", "Pooled", "unique_sites", "union_sites", "scatter_rows", "relative_transforms",
           "transform_points", "with_sweeps"]


def unique_sites(indices: torch.Tensor, spatial_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique ``[b, z, y, x]`` rows of ``indices`` (N, 4) (any integer dtype).

    Returns ``(unique (M, 4) int64, inverse (N,) int64)``; order is by (b, z, y, x), deterministic.
    """
    nz, ny, nx = (int(s) for s in spatial_shape)
    idx = indices.long()
    key = ((idx[:, 0] * nz + idx[:, 1]) * ny + idx[:, 2]) * nx + idx[:, 3]
    ukey, inverse = torch.unique(key, sorted=True, return_inverse=True)
    x = ukey % nx
    rest = ukey // nx
    y = rest % ny
    rest = rest // ny
    z = rest % nz
    b = rest // nz
    return torch.stack([b, z, y, x], dim=1), inverse


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


def relative_transforms(pose_to: torch.Tensor, pose_from: torch.Tensor) -> torch.Tensor:
    """``inv(pose_to) @ pose_from`` per batch element, float64 (B, 4, 4): maps points of the vehicle
    frame of ``pose_from`` into the vehicle frame of ``pose_to``."""
    return torch.linalg.solve(pose_to.double(), pose_from.double())


def transform_points(xyz: torch.Tensor, batch: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Apply ``transforms[batch[i]]`` (B, 4, 4) to points ``xyz`` (N, 3); computed in float64."""
    t = transforms[batch.long()]
    out = (t[:, :3, :3] @ xyz.double().unsqueeze(2)).squeeze(2) + t[:, :3, 3]
    return out.to(xyz.dtype)


def with_sweeps(points: torch.Tensor, poses: torch.Tensor, timestamps: torch.Tensor, sweeps: Sequence) -> torch.Tensor:
    """A frame's points (P, C) ``[b, x, y, z, ...]`` and those of earlier ``sweeps`` (``state.Sweep``s) moved
    into its vehicle frame by ``inv(pose_t) @ pose_k`` (``poses`` (B, 4, 4), ``timestamps`` (B,) the
    frame's), each row with one more column: its sweep's age in seconds (0 for the frame's own points)."""
    parts = [torch.cat([points, points.new_zeros((points.shape[0], 1))], dim=1)]
    for sweep in sweeps:
        if sweep.points.shape[0] == 0:
            continue
        b = sweep.points[:, 0]
        xyz = transform_points(sweep.points[:, 1:4], b, relative_transforms(poses, sweep.poses))
        age = (timestamps - sweep.timestamps).to(xyz.dtype).to(xyz.device)[b.long()] * 1e-6
        parts.append(torch.cat([sweep.points[:, :1], xyz, sweep.points[:, 4:], age[:, None]], dim=1))
    return torch.cat(parts, dim=0)


class Pooled(NamedTuple):
    """Features pooled over coinciding sites: the unique ``sites`` (M, 4) int32 contiguous, the pooled
    ``features``, each site's ``counts`` (M,) and, for each input row, its row in ``sites`` (``inverse``)."""

    sites: torch.Tensor
    features: list[torch.Tensor]
    counts: torch.Tensor
    inverse: torch.Tensor


class VoxelGrid:
    """A fixed metric grid; a partial last cell along an axis counts as a cell."""

    def __init__(self, voxel_size: Sequence[float], point_range: Sequence[float]) -> None:
        voxel_size = [float(v) for v in voxel_size]
        if len(voxel_size) != 3 or min(voxel_size) <= 0:
            raise ValueError(f"{type(self).__name__}: voxel_size must be 3 positive numbers, got {voxel_size}")
        self.voxel_size = voxel_size
        self.point_range = check_point_range(point_range, f"{type(self).__name__}: point_range")
        # [nx, ny, nz] from the range (a partial last cell counts); spconv wants [nz, ny, nx].
        cells = [(self.point_range[i + 3] - self.point_range[i]) / voxel_size[i] for i in range(3)]
        nxyz = [int(round(c)) if abs(c - round(c)) < 1e-4 else int(math.ceil(c)) for c in cells]
        self.grid_size_xyz = nxyz
        self.spatial_shape = [nxyz[2], nxyz[1], nxyz[0]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(voxel_size={self.voxel_size}, point_range={self.point_range})"

    def _tensors(self, device: torch.device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        vs = torch.tensor(self.voxel_size, device=device, dtype=dtype)
        lo = torch.tensor(self.point_range[:3], device=device, dtype=dtype)
        return vs, lo

    def coords(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid cell ``[z, y, x]`` (int64) of each point (N, 3) in metres, and the mask of points inside
        ``point_range`` (``detector.point_range``: lower bounds inclusive, upper bounds exclusive)."""
        vs, lo = self._tensors(xyz.device, xyz.dtype)
        cell = torch.floor((xyz - lo) / vs).long()
        n = torch.tensor(self.grid_size_xyz, device=xyz.device)
        inside = ((cell >= 0) & (cell < n)).all(dim=1) & in_point_range(xyz, self.point_range)
        return cell.flip(1), inside

    def centers(self, indices: torch.Tensor) -> torch.Tensor:
        """Voxel centres (N, 3) float32 ``[x, y, z]`` in metres of sites ``[b, z, y, x]`` (N, 4)."""
        vs, lo = self._tensors(indices.device)
        return (indices[:, 1:].flip(1).float() + 0.5) * vs + lo

    def move(self, sites: torch.Tensor, transforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move sites ``[b, z, y, x]`` (N, 4) by ``transforms`` (B, 4, 4) (their centres, rigidly, per
        stream): the new sites (N, 4) int64 on this grid and the mask of those that stay inside it."""
        moved = transform_points(self.centers(sites), sites[:, 0], transforms)
        cell, inside = self.coords(moved)
        return torch.cat([sites[:, :1].long(), cell], dim=1), inside

    def pool(self, sites: torch.Tensor, features: Sequence[torch.Tensor]) -> Pooled:
        """Average ``features`` (each (N, F_i)) over coinciding sites ``[b, z, y, x]`` (N, 4) (see ``Pooled``)."""
        uniq, inverse = unique_sites(sites, self.spatial_shape)
        m = uniq.shape[0]
        counts = torch.bincount(inverse, minlength=m)
        denom = counts.clamp(min=1).unsqueeze(1)
        pooled = []
        for f in features:
            s = f.new_zeros((m, f.shape[1])).index_add_(0, inverse, f)
            pooled.append(s / denom.to(f.dtype))
        return Pooled(uniq.int().contiguous(), pooled, counts, inverse)

    def occupied(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cells of points (P, 1 + C) ``[b, x, y, z, ...]`` inside the range and the mean of each
        cell's points: ``(sites (M, 4) int32 sorted, means (M, C), counts (M,))``; points outside the
        range are dropped. One compiled pass on CPU where the kernels run (``detector.ops.sites``)."""
        points = points.float()
        if compiled_voxel_means(points):
            return voxel_means(points, self.point_range[:3], self.voxel_size, self.point_range[3:],
                               self.grid_size_xyz)
        cell, inside = self.coords(points[:, 1:4])
        points, cell = points[inside], cell[inside]
        sites = torch.cat([points[:, :1].long(), cell], dim=1)
        uniq, (mean,), counts, _ = self.pool(sites, [points[:, 1:]])
        return uniq, mean, counts
