"""Points -> sparse voxels on the model's grid (torch, deterministic, on the points' device).

Per-voxel features (``num_features(C)`` of them for points with C channels after the batch column):

- mean point offset from the voxel centre, in voxel units (3, in [-0.5, 0.5]);
- mean height z in metres divided by ``z_scale``: the sparse convolutions are translation
  equivariant, so absolute height is the only place the network learns where the ground is;
- ``tanh`` of the mean intensity (Waymo intensities are unbounded), then the means of the remaining
  channels (elongation, and any extra channel such as the time offset of swept points);
- ``log1p(count) / log1p(max_count_scale)``: how many points fell in the voxel.

The grid itself (cells, centres, pooling of coinciding sites) is ``VoxelGrid`` (grid.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from spconv.pytorch import SparseConvTensor

from detector.models.grid import VoxelGrid, unique_sites

__all__ = ["Voxelizer", "unique_sites"]


class Voxelizer(VoxelGrid):
    """Mean-pooling voxelizer over a ``VoxelGrid``. See the module docstring for the features."""

    def __init__(
        self,
        voxel_size: Sequence[float],
        point_range: Sequence[float],
        z_scale: float = 4.0,
        max_count_scale: float = 32.0,
    ) -> None:
        super().__init__(voxel_size, point_range)
        self.z_scale = float(z_scale)
        self.max_count_scale = float(max_count_scale)

    @staticmethod
    def num_features(point_channels: int) -> int:
        """Voxel feature count for points with ``point_channels`` columns after the batch column
        (x, y, z, intensity, ...)."""
        if point_channels < 4:
            raise ValueError(f"Voxelizer: points need at least x, y, z, intensity; got {point_channels} channels")
        return 3 + 1 + (point_channels - 3) + 1

    def __call__(self, points: torch.Tensor, batch_size: int) -> SparseConvTensor:
        """Voxelize points (P, 1 + C) ``[b, x, y, z, intensity, ...]``; points outside the range are
        dropped. Returns a ``SparseConvTensor`` with ``num_features(C)`` features per voxel."""
        if points.ndim != 2 or points.shape[1] < 5:
            raise ValueError("Voxelizer: points must be (P, >=5) [b, x, y, z, intensity, ...], "
                             f"got {tuple(points.shape)}")
        uniq, mean, counts = self.occupied(points)
        vs, _ = self._tensors(points.device)
        center = self.centers(uniq)
        offset = (mean[:, :3] - center) / vs
        height = mean[:, 2:3] / self.z_scale
        intensity = torch.tanh(mean[:, 3:4])
        rest = mean[:, 4:]
        density = torch.log1p(counts.float()).unsqueeze(1) / math.log1p(self.max_count_scale)
        features = torch.cat([offset, height, intensity, rest, density], dim=1)
        return SparseConvTensor(features, uniq, self.spatial_shape, batch_size)
