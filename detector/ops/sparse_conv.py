"""Sparse 3D convolutions that are correct on CPU and plain spconv on CUDA.

spconv 2.3.8's CPU path has two faults (see docs/ARCHITECTURE.md, "Sparse convolution on CPU"):
its gather-GEMM-scatter loop gives wrong values with more than one torch thread, and its backward
asks for a CUDA stream even on CPU-only torch. The rule book it computes is right under any thread
count. So on CPU these layers keep spconv's rule book (same ``indice_key`` caching, same
``IndiceData``, so inverse convolutions and submanifold reuse work as in spconv) and redo only the
feature computation with torch ops (``index_select``, matrix product, ``index_add_``); autograd gives
the backward. On CUDA ``forward`` is spconv's own, untouched.

The classes subclass spconv's, so weights, state dicts and ``SparseConvTensor`` are spconv's.
"""

from __future__ import annotations

import torch
from spconv.core import ConvAlgo
from spconv.pytorch import SparseConvTensor
from spconv.pytorch import conv as spconv_conv
from spconv.pytorch import ops as spconv_ops
from spconv.pytorch.core import IndiceData

__all__ = ["SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "gather_gemm_scatter"]


def _pairs(indice_pairs: torch.Tensor, indice_pair_num: torch.Tensor, subm: bool, inverse: bool):
    """(offset, input rows, output rows) for every kernel offset with pairs (the centre excluded for
    submanifold convolutions, whose centre is the identity map)."""
    kv = indice_pairs.shape[1]
    centre = kv // 2
    pair_in = indice_pairs[int(inverse)]
    pair_out = indice_pairs[int(not inverse)]
    counts = indice_pair_num.tolist()
    for i in range(kv):
        if subm and i == centre:
            continue
        # spconv fills submanifold counts only up to the centre; an offset past it has its mirror's.
        n = counts[kv - i - 1] if (subm and i > centre) else counts[i]
        if n > 0:
            yield i, pair_in[i, :n].long(), pair_out[i, :n].long()


class _GatherGemmScatter(torch.autograd.Function):
    """Sparse convolution over a native rule book with torch ops.

    Saves only the inputs and the rule book (not the gathered rows of every offset), so memory stays
    close to spconv's; the backward recomputes the gathers.
    """

    @staticmethod
    def forward(ctx, features, weight, indice_pairs, indice_pair_num, num_out: int, subm: bool, inverse: bool):
        out_channels = weight.shape[0]
        w = weight.reshape(out_channels, -1, weight.shape[-1])  # (O, KV, I)
        centre = w.shape[1] // 2
        if subm:
            out = features @ w[:, centre].T
        else:
            out = features.new_zeros((num_out, out_channels))
        for i, rows_in, rows_out in _pairs(indice_pairs, indice_pair_num, subm, inverse):
            out.index_add_(0, rows_out, features.index_select(0, rows_in) @ w[:, i].T)
        ctx.save_for_backward(features, weight, indice_pairs, indice_pair_num)
        ctx.subm, ctx.inverse = subm, inverse
        return out

    @staticmethod
    def backward(ctx, grad_out):
        features, weight, indice_pairs, indice_pair_num = ctx.saved_tensors
        out_channels = weight.shape[0]
        w = weight.reshape(out_channels, -1, weight.shape[-1])
        centre = w.shape[1] // 2
        grad_out = grad_out.contiguous()
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_f = torch.zeros_like(features) if need_f else None
        grad_w = torch.zeros_like(w) if need_w else None
        if ctx.subm:
            if need_f:
                grad_f += grad_out @ w[:, centre]
            if need_w:
                grad_w[:, centre] = grad_out.T @ features
        for i, rows_in, rows_out in _pairs(indice_pairs, indice_pair_num, ctx.subm, ctx.inverse):
            g = grad_out.index_select(0, rows_out)
            if need_f:
                grad_f.index_add_(0, rows_in, g @ w[:, i])
            if need_w:
                grad_w[:, i] += g.T @ features.index_select(0, rows_in)
        if grad_w is not None:
            grad_w = grad_w.reshape(weight.shape)
        return grad_f, grad_w, None, None, None, None, None


def gather_gemm_scatter(
    features: torch.Tensor,
    weight: torch.Tensor,
    indice_pairs: torch.Tensor,
    indice_pair_num: torch.Tensor,
    num_out: int,
    subm: bool,
    inverse: bool,
) -> torch.Tensor:
    """Apply a sparse convolution given spconv's native rule book (differentiable in features, weight).

    ``weight`` is spconv's KRSC layout ``(out, *kernel, in)``; ``indice_pairs`` is ``(2, KV, P)``
    (row 0 input rows, row 1 output rows; swapped for an inverse convolution) and ``indice_pair_num``
    ``(KV,)`` counts the valid pairs per kernel offset.
    """
    return _GatherGemmScatter.apply(features, weight, indice_pairs, indice_pair_num, num_out, subm, inverse)


class _CpuSafeConv:
    """Mixin over ``spconv.pytorch.conv.SparseConvolution`` replacing only the CPU feature math."""

    def forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None = None):  # noqa: A002
        if input.features.is_cuda:
            return super().forward(input, add_input)
        return self._cpu_forward(input, add_input)

    def _cpu_forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None) -> SparseConvTensor:  # noqa: A002
        if input.features.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: input has {input.features.shape[1]} channels, expected {self.in_channels}"
            )
        features = input.features.contiguous()
        # spconv reads index memory ignoring strides: a non-contiguous index tensor (e.g. from
        # ``nonzero()``) silently gives a wrong rule book.
        indices = input.indices.contiguous()
        spatial_shape = input.spatial_shape
        indice_dict = input.indice_dict.copy()
        datas = input.find_indice_pair(self.indice_key)

        if self.inverse:
            if datas is None:
                raise KeyError(f"{type(self).__name__}: no rule book under indice_key={self.indice_key!r}")
            if datas.is_subm:
                raise ValueError("an inverse convolution needs the rule book of a strided convolution")
            self._check_inverse_reuse_valid(input, spatial_shape, datas)
            outids, pairs, pair_num = datas.indices, datas.indice_pairs, datas.indice_pair_num
            out_spatial_shape = datas.spatial_shape
        elif datas is not None:
            if not self.subm:
                raise ValueError(f"indice_key {self.indice_key!r} reused by a non-submanifold convolution")
            self._check_subm_reuse_valid(input, spatial_shape, datas)
            outids, pairs, pair_num = datas.out_indices, datas.indice_pairs, datas.indice_pair_num
            out_spatial_shape = spatial_shape
        else:
            if self.subm:
                out_spatial_shape = spatial_shape
            elif self.transposed:
                out_spatial_shape = spconv_ops.get_deconv_output_size(
                    spatial_shape, self.kernel_size, self.stride, self.padding, self.dilation, self.output_padding
                )
            else:
                out_spatial_shape = spconv_ops.get_conv_output_size(
                    spatial_shape, self.kernel_size, self.stride, self.padding, self.dilation
                )
            # the native rule book whatever algorithm the layer was built with (spconv picks an
            # implicit-GEMM one when CUDA is present; the same model must still run on the CPU)
            outids, pairs, pair_num = spconv_ops.get_indice_pairs(
                indices, input.batch_size, spatial_shape, ConvAlgo.Native, self.kernel_size, self.stride,
                self.padding, self.dilation, self.output_padding, self.subm, self.transposed,
            )
            if self.indice_key is not None:
                indice_dict[self.indice_key] = IndiceData(
                    outids, indices, pairs, pair_num, spatial_shape, out_spatial_shape,
                    is_subm=self.subm, algo=ConvAlgo.Native, ksize=self.kernel_size, stride=self.stride,
                    padding=self.padding, dilation=self.dilation,
                )

        if self.conv1x1 and self.subm:
            out_features = features @ self.weight.reshape(self.out_channels, self.in_channels).T
        else:
            out_features = gather_gemm_scatter(
                features, self.weight, pairs, pair_num, outids.shape[0], self.subm, self.inverse
            )
        if self.bias is not None:
            out_features = out_features + self.bias
        out = input.shadow_copy()
        out = out.replace_feature(out_features)
        out.indices = outids
        out.indice_dict = indice_dict
        out.spatial_shape = out_spatial_shape
        if add_input is not None:
            out = out.replace_feature(out.features + add_input.features)
        return out


class SubMConv3d(_CpuSafeConv, spconv_conv.SubMConv3d):
    """Submanifold 3D convolution (output sites = input sites)."""


class SparseConv3d(_CpuSafeConv, spconv_conv.SparseConv3d):
    """Regular (e.g. strided) sparse 3D convolution."""


class SparseInverseConv3d(_CpuSafeConv, spconv_conv.SparseInverseConv3d):
    """Inverse of a ``SparseConv3d`` with the same ``indice_key``: back to its input sites."""
