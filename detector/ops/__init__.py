"""Sparse-convolution layers used by every model: spconv on CUDA, proven-correct torch math on CPU."""

from detector.ops.sparse_conv import SparseConv3d, SparseInverseConv3d, SubMConv3d, gather_gemm_scatter
from detector.ops.spconv_compat import enable_spconv_cpu_backward

__all__ = ["SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "gather_gemm_scatter", "enable_spconv_cpu_backward"]
