"""Points -> sparse voxels on a fixed grid (torch, deterministic, on the points' device).

The grid covers ``point_range = [x_min, y_min, z_min, x_max, y_max, z_max]`` (metres, vehicle frame)
with cells of ``voxel_size = [dx, dy, dz]``. Sparse tensors use spconv's layout: indices ``(N, 4)``
contiguous int32 ``[b, z, y, x]`` and ``spatial_shape = [nz, ny, nx]``.

Per-voxel features (``num_features(C)`` of them for points with C channels after the batch column):

- mean point offset from the voxel centre, in voxel units (3, in [-0.5, 0.5]);
- mean height z in metres divided by ``z_scale`` (1): the sparse convolutions are translation
  equivariant, so absolute height is the only place the network learns where the ground is;
- ``tanh`` of the mean intensity (Waymo intensities are unbounded), then the means of the remaining
  channels (elongation, and any extra channel such as the time offset of swept points);
- ``log1p(count) / log1p(max_count_scale)`` (1): how many points fell in the voxel.

The same module moves voxel sites between frames (``centers``, ``coords``, ``pool``): the temporal
state is re-voxelized on the current grid with the features of coinciding voxels averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from spconv.pytorch import SparseConvTensor

__all__ = ["Voxelizer", "unique_sites"]


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


class Voxelizer:
    """Mean-pooling voxelizer over a fixed metric grid. See the module docstring for the features."""

    def __init__(
        self,
        voxel_size: Sequence[float],
        point_range: Sequence[float],
        z_scale: float = 4.0,
        max_count_scale: float = 32.0,
    ) -> None:
        voxel_size = [float(v) for v in voxel_size]
        point_range = [float(v) for v in point_range]
        if len(voxel_size) != 3 or min(voxel_size) <= 0:
            raise ValueError(f"Voxelizer: voxel_size must be 3 positive numbers, got {voxel_size}")
        if len(point_range) != 6 or any(point_range[i + 3] <= point_range[i] for i in range(3)):
            raise ValueError(f"Voxelizer: point_range must be [x0, y0, z0, x1, y1, z1] with x1>x0 ..., got {point_range}")
        self.voxel_size = voxel_size
        self.point_range = point_range
        self.z_scale = float(z_scale)
        self.max_count_scale = float(max_count_scale)
        # [nx, ny, nz] from the range (a partial last cell counts); spconv wants [nz, ny, nx].
        cells = [(point_range[i + 3] - point_range[i]) / voxel_size[i] for i in range(3)]
        nxyz = [int(round(c)) if abs(c - round(c)) < 1e-4 else int(math.ceil(c)) for c in cells]
        self.grid_size_xyz = nxyz
        self.spatial_shape = [nxyz[2], nxyz[1], nxyz[0]]

    def __repr__(self) -> str:
        return f"Voxelizer(voxel_size={self.voxel_size}, point_range={self.point_range})"

    @staticmethod
    def num_features(point_channels: int) -> int:
        """Voxel feature count for points with ``point_channels`` columns after the batch column
        (x, y, z, intensity, ...)."""
        if point_channels < 4:
            raise ValueError(f"Voxelizer: points need at least x, y, z, intensity; got {point_channels} channels")
        return 3 + 1 + (point_channels - 3) + 1

    def _tensors(self, device: torch.device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        vs = torch.tensor(self.voxel_size, device=device, dtype=dtype)
        lo = torch.tensor(self.point_range[:3], device=device, dtype=dtype)
        return vs, lo

    def coords(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid cell ``[z, y, x]`` (int64) of each point (N, 3) in metres, and the mask of points inside
        ``point_range`` (lower bounds inclusive, upper bounds exclusive)."""
        vs, lo = self._tensors(xyz.device, xyz.dtype)
        hi = torch.tensor(self.point_range[3:], device=xyz.device, dtype=xyz.dtype)
        cell = torch.floor((xyz - lo) / vs).long()
        n = torch.tensor(self.grid_size_xyz, device=xyz.device)
        inside = ((cell >= 0) & (cell < n) & (xyz < hi)).all(dim=1)
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

    def __call__(self, points: torch.Tensor, batch_size: int) -> SparseConvTensor:
        """Voxelize points (P, 1 + C) ``[b, x, y, z, intensity, ...]``; points outside the range are
        dropped. Returns a ``SparseConvTensor`` with ``num_features(C)`` features per voxel."""
        if points.ndim != 2 or points.shape[1] < 5:
            raise ValueError(f"Voxelizer: points must be (P, >=5) [b, x, y, z, intensity, ...], got {tuple(points.shape)}")
        points = points.float()
        cell, inside = self.coords(points[:, 1:4])
        points, cell = points[inside], cell[inside]
        b = points[:, :1].long()
        sites = torch.cat([b, cell], dim=1)
        (uniq, (mean,), counts) = self.pool(sites, [points[:, 1:]])
        vs, _ = self._tensors(points.device)
        center = self.centers(uniq)
        offset = (mean[:, :3] - center) / vs
        height = mean[:, 2:3] / self.z_scale
        intensity = torch.tanh(mean[:, 3:4])
        rest = mean[:, 4:]
        density = torch.log1p(counts.float()).unsqueeze(1) / math.log1p(self.max_count_scale)
        features = torch.cat([offset, height, intensity, rest, density], dim=1)
        return SparseConvTensor(features, uniq, self.spatial_shape, batch_size)
