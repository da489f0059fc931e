"""The voxel grid: cells of ``voxel_size`` over ``point_range``, and moving sites between frames.

Sparse tensors use spconv's layout: indices ``(N, 4)`` contiguous int32 ``[b, z, y, x]`` and
``spatial_shape = [nz, ny, nx]``. The grid maps metres to cells (``coords``), cells to their centres
(``centers``) and pools features of coinciding sites (``pool``): the temporal state is re-voxelized on
the current frame's grid with these. Feature encoding of points is the ``Voxelizer``'s (voxelizer.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from detector.ops.sites import compiled_voxel_means, voxel_means
from detector.point_range import check_point_range, in_point_range

__all__ = ["VoxelGrid", "unique_sites"]


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

    def pool(
        self, sites: torch.Tensor, features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Average ``features`` (each (N, F_i)) over coinciding sites ``[b, z, y, x]`` (N, 4).

        Returns ``(unique sites (M, 4) int32 contiguous, pooled features, counts (M,))``.
        """
        uniq, inverse = unique_sites(sites, self.spatial_shape)
        m = uniq.shape[0]
        counts = torch.bincount(inverse, minlength=m)
        denom = counts.clamp(min=1).unsqueeze(1)
        pooled = []
        for f in features:
            s = f.new_zeros((m, f.shape[1])).index_add_(0, inverse, f)
            pooled.append(s / denom.to(f.dtype))
        return uniq.int().contiguous(), pooled, counts

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
        uniq, (mean,), counts = self.pool(sites, [points[:, 1:]])
        return uniq, mean, counts
