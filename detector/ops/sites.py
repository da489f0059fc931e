"""The occupied voxels of a frame's points on the CPU, in one compiled pass (``csrc/sparse_conv_cpu.cpp``,
"voxel means") where the sparse-convolution kernels are built and chosen (``cpu_backend() == "cpp"``).

Voxelizing a frame with torch sorts every point (``torch.unique`` over ~115k keys for the demo's
~19k voxels) and runs a dozen element-wise passes; the kernel hashes the points once and sorts only
the distinct cells. The torch path (``VoxelGrid.coords`` + ``VoxelGrid.pool``) stays the fallback, the
reference the tests compare with, and the path for points that need a gradient (the kernel's means
have none; training's points never need one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from detector.ops import cpu_kernels
from detector.ops.sparse_conv import cpu_backend

__all__ = ["compiled_voxel_means", "voxel_means"]


def compiled_voxel_means(points: torch.Tensor) -> bool:
    """Whether ``voxel_means`` runs for these points: CPU tensors that need no gradient, and the compiled
    path chosen."""
    return (points.device.type == "cpu" and not points.requires_grad and cpu_backend() == "cpp"
            and cpu_kernels.load() is not None)


def voxel_means(points: torch.Tensor, lo: Sequence[float], size: Sequence[float], hi: Sequence[float],
                grid_xyz: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The occupied cells of CPU points (P, 1 + C), no gradient, ``[b, x, y, z, ...]`` on a grid of ``size`` cells
    from ``lo`` (``grid_xyz`` cells [nx, ny, nz]; points outside ``[lo, hi)`` dropped) and the mean of
    each cell's C channels: ``(sites (M, 4) int32 [b, z, y, x] sorted, means (M, C) float32, counts (M,)
    int64)``. Compiled only (``compiled_voxel_means``)."""
    if not compiled_voxel_means(points):
        raise RuntimeError("voxel_means needs CPU points and the compiled CPU kernels")
    ext = cpu_kernels.load()
    return tuple(ext.voxel_means(points.float().contiguous(), [float(v) for v in lo], [float(v) for v in size],
                                 [float(v) for v in hi], [int(v) for v in grid_xyz]))
