"""Sparse 3D convolutions that are correct on CPU and plain spconv on CUDA.

spconv 2.3.8's CPU path has two faults (see docs/ARCHITECTURE.md, "Sparse convolution on CPU"):
its gather-GEMM-scatter loop gives wrong values with more than one torch thread, and its backward
asks for a CUDA stream even on CPU-only torch. The rule book it computes is right under any thread
count. So on CPU these layers keep spconv's rule book (same ``indice_key`` caching, same
``IndiceData``, so inverse convolutions and submanifold reuse work as in spconv) and redo only the
feature computation, on one of two paths:

- ``cpp`` (default where built, see ``cpu_kernels``): the rule book is turned once into neighbour
  maps (``(rows, KV)``: the source row of every destination row and offset), cached on the
  ``IndiceData`` so that every layer sharing an ``indice_key`` reuses them; a fused C++ kernel computes
  each output row from all its offsets in registers (forward), the same kernel over the transposed
  map gives the input gradient, and a per-offset kernel the weight gradient. Each output row and
  each weight-gradient offset is owned by one thread: no atomics, results independent of the
  thread count.
- ``torch`` (the fallback, and the reference kept callable as ``gather_gemm_scatter``): per offset
  ``index_select``, matrix product, ``index_add_``.

On CUDA ``forward`` is spconv's own, untouched but for the precision it runs in under a bfloat16
autocast (``detector.ops.precision``).

The classes subclass spconv's, so weights, state dicts and ``SparseConvTensor`` are spconv's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import NamedTuple

import torch
from spconv.core import ConvAlgo
from spconv.pytorch import SparseConvTensor
from spconv.pytorch import conv as spconv_conv
from spconv.pytorch import ops as spconv_ops
from spconv.pytorch.core import IndiceData

from detector.ops import cpu_kernels
from detector.ops.precision import current_spconv_cuda_dtype

__all__ = ["SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "gather_gemm_scatter", "neighbour_conv",
           "cpu_backend", "use_cpu_backend"]

log = logging.getLogger(__name__)
_FORCED_BACKEND: str | None = None


def cpu_backend() -> str:
    """``"cpp"`` (compiled fused kernels) or ``"torch"``: the path the CPU layers take now."""
    if _FORCED_BACKEND is not None:
        return _FORCED_BACKEND
    return "cpp" if cpu_kernels.load() is not None else "torch"


@contextlib.contextmanager
def use_cpu_backend(name: str) -> Iterator[None]:
    """Run the CPU layers on ``"torch"`` or ``"cpp"`` inside the block (benchmarks, tests)."""
    global _FORCED_BACKEND
    if name not in ("torch", "cpp"):
        raise ValueError(f"unknown CPU sparse-conv backend {name!r} (torch or cpp)")
    if name == "cpp" and cpu_kernels.load() is None:
        raise RuntimeError("the compiled CPU kernels are not available (python -m detector.ops.cpu_kernels)")
    before, _FORCED_BACKEND = _FORCED_BACKEND, name
    try:
        yield
    finally:
        _FORCED_BACKEND = before


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
    _require_pair_lists(indice_pairs, indice_pair_num)
    return _GatherGemmScatter.apply(features, weight, indice_pairs, indice_pair_num, num_out, subm, inverse)


# --- compiled path -----------------------------------------------------------------------------------

class _NeighbourMaps:
    """A rule book as neighbour maps, in the terms of the convolution that built it (input -> output).

    ``by_out[o, k]``: input row reaching output ``o`` through offset ``k`` (-1: none); ``by_in[i, k]``:
    output row that input ``i`` reaches through ``k`` (``None`` for a submanifold rule book, whose
    transpose is ``by_out`` with the offsets mirrored). The weight gradient reads the forward's map (one
    offset's column at a time), so no layer holds pair lists.
    """

    def __init__(self, by_out: torch.Tensor, by_in: torch.Tensor | None, subm: bool):
        if (by_in is None) != subm:
            raise ValueError("neighbour maps: by_in is needed exactly when the rule book is not subm")
        self.by_out, self.by_in = by_out, by_in

    @classmethod
    def from_rulebook(cls, indice_pairs: torch.Tensor, indice_pair_num: torch.Tensor, n_in: int, n_out: int,
                      subm: bool) -> _NeighbourMaps:
        """The maps of spconv's rule book (pairs (2, KV, P), counts (KV,))."""
        kv = indice_pairs.shape[1]
        centre = kv // 2
        counts = indice_pair_num.to(torch.int64).clone()
        if subm:  # spconv fills submanifold counts only up to the centre; an offset past it has its mirror's
            counts[centre + 1:] = counts[:centre].flip(0)
            counts[centre] = 0
        pairs = indice_pairs.to(torch.int32)
        ks = [k for k in range(kv) if counts[k] > 0]
        n = counts[ks]
        rows_in = (torch.cat([pairs[0, k, : int(c)] for k, c in zip(ks, n)]).long() if ks
                   else torch.zeros(0, dtype=torch.long))
        rows_out = (torch.cat([pairs[1, k, : int(c)] for k, c in zip(ks, n)]).long() if ks
                    else torch.zeros(0, dtype=torch.long))
        offs = torch.repeat_interleave(torch.tensor(ks, dtype=torch.long), n)
        by_out = torch.full((n_out, kv), -1, dtype=torch.int32)
        by_out.view(-1)[rows_out * kv + offs] = rows_in.to(torch.int32)
        if subm:
            by_out[:, centre] = torch.arange(n_out, dtype=torch.int32)
            return cls(by_out, None, True)
        by_in = torch.full((n_in, kv), -1, dtype=torch.int32)
        by_in.view(-1)[rows_in * kv + offs] = rows_out.to(torch.int32)
        return cls(by_out, by_in, False)

    def from_rows(self, rows: torch.Tensor) -> _NeighbourMaps:
        """The maps of this submanifold convolution with only the sites ``rows`` (S,) as its input (the
        others' features zero): ``by_out`` (U, KV) into ``0..S-1``, ``by_in`` (S, KV) the output row each
        reaches through offset k, which is its neighbour through the mirrored offset."""
        if self.by_in is not None:
            raise ValueError("from_rows restricts a submanifold rule book")
        cached = getattr(self, "_from_rows", None)
        if cached is not None and cached[0] is rows:  # stacked cells: every layer's gates, the same rows
            return cached[1]
        n = self.by_out.shape[0]
        pos = torch.full((n + 1,), -1, dtype=torch.int32)  # pos[-1] = pos[n] = -1 keeps a missing entry missing
        pos[rows] = torch.arange(rows.shape[0], dtype=torch.int32)
        by_out = pos[self.by_out.long()]
        by_in = self.by_out[rows].flip(1).contiguous()
        self._from_rows = (rows, _NeighbourMaps(by_out, by_in, False))
        return self._from_rows[1]

    @classmethod
    def of(cls, datas: IndiceData | None, indice_pairs, indice_pair_num, n_in: int, n_out: int, subm: bool):
        """The maps of a rule book, built once per ``IndiceData`` (shared by every layer of its key)."""
        if datas is not None:
            cached = getattr(datas, "_detector_neighbour_maps", None)
            if cached is not None and cached[0] is indice_pairs:
                return cached[1]
        _require_pair_lists(indice_pairs, indice_pair_num)
        maps = cls.from_rulebook(indice_pairs, indice_pair_num, n_in, n_out, subm)
        if datas is not None:
            datas._detector_neighbour_maps = (indice_pairs, maps)
        return maps


def _require_pair_lists(indice_pairs: torch.Tensor, indice_pair_num: torch.Tensor) -> None:
    """A compiled rule book (``_no_pairs``) has only neighbour maps: refuse it where spconv's pair lists
    are needed, rather than convolve over nothing."""
    if indice_pairs.shape[-1] == 0 and bool((indice_pair_num > 0).any()):
        raise RuntimeError("a rule book of the compiled kernels (neighbour maps, no pair lists) reached a path that "
                           "needs spconv's pair lists: run a whole forward pass on one backend")


def _no_pairs(kv: int) -> torch.Tensor:
    """The ``indice_pairs`` of a compiled rule book: (2, KV, 0), a fresh object per rule book (the maps'
    cache key); its neighbour maps hold the rule book."""
    return torch.empty((2, kv, 0), dtype=torch.int32)


def _padded(w: torch.Tensor) -> torch.Tensor:
    """(KV, C_src, C_dst) -> contiguous, last dim zero-padded to a multiple of 8 (the kernel's register width)."""
    pad = (-w.shape[-1]) % 8
    return torch.nn.functional.pad(w, (0, pad)).contiguous() if pad else w.contiguous()


class _RuleBook(NamedTuple):
    """A CPU layer's rule book: output sites, spconv's pairs (empty for a compiled one) and counts, output
    shape, the ``indice_dict`` to hand on, and the ``IndiceData`` it is kept in (its maps' cache)."""

    outids: torch.Tensor
    pairs: torch.Tensor
    pair_num: torch.Tensor
    out_spatial_shape: list
    indice_dict: dict
    datas: IndiceData | None


class _NeighbourConv(torch.autograd.Function):
    """Sparse convolution over neighbour maps with the compiled kernels (see ``_NeighbourMaps``)."""

    @staticmethod
    def forward(ctx, features, weight, maps: _NeighbourMaps, subm: bool, inverse: bool):
        kern = cpu_kernels.load()
        out_channels, in_channels = weight.shape[0], weight.shape[-1]
        w = weight.reshape(out_channels, -1, in_channels)  # (O, KV, I)
        fwd_map = maps.by_in if inverse else maps.by_out
        features = features.contiguous()
        out = kern.neighbour_conv(features, fwd_map, _padded(w.permute(1, 2, 0)), out_channels)
        ctx.save_for_backward(features, weight)
        ctx.maps, ctx.subm, ctx.inverse = maps, subm, inverse
        return out

    @staticmethod
    def backward(ctx, grad_out):
        kern = cpu_kernels.load()
        features, weight = ctx.saved_tensors
        maps, subm, inverse = ctx.maps, ctx.subm, ctx.inverse
        out_channels, in_channels = weight.shape[0], weight.shape[-1]
        w = weight.reshape(out_channels, -1, in_channels)
        grad_out = grad_out.contiguous()
        grad_f = grad_w = None
        if ctx.needs_input_grad[0]:
            wt = w.permute(1, 0, 2)  # (KV, O, I): the transposed offsets' matrices
            if subm:  # the transpose of a submanifold map is the map with mirrored offsets
                grad_f = kern.neighbour_conv(grad_out, maps.by_out, _padded(wt.flip(0)), in_channels)
            else:
                bwd_map = maps.by_out if inverse else maps.by_in
                grad_f = kern.neighbour_conv(grad_out, bwd_map, _padded(wt), in_channels)
        if ctx.needs_input_grad[1]:
            dw = kern.map_weight_grad(features, grad_out, maps.by_in if inverse else maps.by_out)  # (KV, I, O)
            grad_w = dw.permute(2, 0, 1).reshape(weight.shape)
        return grad_f, grad_w, None, None, None


def neighbour_conv(
    features: torch.Tensor,
    weight: torch.Tensor,
    indice_pairs: torch.Tensor,
    indice_pair_num: torch.Tensor,
    num_in: int,
    num_out: int,
    subm: bool,
    inverse: bool,
    datas: IndiceData | None = None,
) -> torch.Tensor:
    """``gather_gemm_scatter`` on the compiled kernels (same arguments and result; ``num_in``: rows of the
    rule book's input side, i.e. of ``features`` unless ``inverse``). ``datas``, the ``IndiceData`` the
    rule book came from, caches its neighbour maps for the other layers of the same key."""
    if inverse:  # maps are in the terms of the strided convolution that built the rule book
        maps = _NeighbourMaps.of(datas, indice_pairs, indice_pair_num, num_out, num_in, subm)
    else:
        maps = _NeighbourMaps.of(datas, indice_pairs, indice_pair_num, num_in, num_out, subm)
    return _NeighbourConv.apply(features, weight, maps, subm, inverse)


class _CpuSafeConv:
    """Mixin over ``spconv.pytorch.conv.SparseConvolution`` replacing only the CPU feature math."""

    def forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None = None):  # noqa: A002
        if input.features.is_cuda:
            return self._cuda_forward(input, add_input)
        return self._cpu_forward(input, add_input)

    def _cuda_forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None) -> SparseConvTensor:  # noqa: A002
        """spconv's own forward; under a bfloat16 autocast in float32 with autocast off inside it (spconv would
        cast to float16 with no scaler to keep its gradients: ``detector.ops.precision``)."""
        dtype = current_spconv_cuda_dtype()
        if dtype is None:
            return super().forward(input, add_input)
        input = input.replace_feature(input.features.to(dtype))  # noqa: A001
        if add_input is not None:
            add_input = add_input.replace_feature(add_input.features.to(dtype))
        with torch.autocast("cuda", enabled=False):
            return super().forward(input, add_input)

    def _check_channels(self, channels: int) -> None:
        if channels != self.in_channels:
            raise ValueError(f"{type(self).__name__}: input has {channels} channels, expected {self.in_channels}")

    def _cpu_forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None) -> SparseConvTensor:  # noqa: A002
        self._check_channels(input.features.shape[1])
        rb = self._cpu_rulebook(input)
        features = input.features.contiguous()
        if self.conv1x1 and self.subm:
            out_features = features @ self.weight.reshape(self.out_channels, self.in_channels).T
        elif cpu_backend() == "cpp":
            out_features = neighbour_conv(
                features, self.weight, rb.pairs, rb.pair_num, features.shape[0], rb.outids.shape[0], self.subm,
                self.inverse, rb.datas,
            )
        else:
            out_features = gather_gemm_scatter(
                features, self.weight, rb.pairs, rb.pair_num, rb.outids.shape[0], self.subm, self.inverse
            )
        return self._cpu_output(input, out_features, rb, add_input)

    def _cpu_output(self, input: SparseConvTensor, out_features: torch.Tensor, rb: _RuleBook,  # noqa: A002
                    add_input: SparseConvTensor | None = None) -> SparseConvTensor:
        if self.bias is not None:
            out_features = out_features + self.bias
        out = input.shadow_copy()
        out = out.replace_feature(out_features)
        out.indices = rb.outids
        out.indice_dict = rb.indice_dict
        out.spatial_shape = rb.out_spatial_shape
        if add_input is not None:
            out = out.replace_feature(out.features + add_input.features)
        return out

    def _cpu_rulebook(self, input: SparseConvTensor) -> _RuleBook:  # noqa: A002
        """The layer's rule book on the CPU: found under ``indice_key`` or built (and stored there)."""
        # spconv reads index memory ignoring strides: a non-contiguous index tensor (e.g. from
        # ``nonzero()``) silently gives a wrong rule book.
        indices = input.indices.contiguous()
        spatial_shape = input.spatial_shape
        indice_dict = input.indice_dict.copy()
        datas = input.find_indice_pair(self.indice_key)
        key_datas = datas

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
        elif self.subm and cpu_backend() == "cpp" and all(k % 2 == 1 for k in self.kernel_size):
            # the compiled submanifold rule book: its neighbour map (and offset counts), no pair lists
            out_spatial_shape = spatial_shape
            nbr, pair_num = cpu_kernels.load().submanifold_rulebook(
                indices, list(spatial_shape), list(self.kernel_size), list(self.dilation)
            )
            pairs = _no_pairs(nbr.shape[1])
            outids = indices
            key_datas = IndiceData(
                outids, indices, pairs, pair_num, spatial_shape, out_spatial_shape,
                is_subm=True, algo=ConvAlgo.Native, ksize=self.kernel_size, stride=self.stride,
                padding=self.padding, dilation=self.dilation,
            )
            key_datas._detector_neighbour_maps = (pairs, _NeighbourMaps(nbr, None, True))
            if self.indice_key is not None:
                indice_dict[self.indice_key] = key_datas
        elif not self.subm and not self.transposed and cpu_backend() == "cpp":
            # the compiled rule book of a regular (strided) convolution, with both neighbour maps
            out_spatial_shape = spconv_ops.get_conv_output_size(
                spatial_shape, self.kernel_size, self.stride, self.padding, self.dilation
            )
            outids, by_out, by_in, pair_num = cpu_kernels.load().strided_rulebook(
                indices, list(spatial_shape), list(out_spatial_shape), list(self.kernel_size), list(self.stride),
                list(self.padding), list(self.dilation),
            )
            pairs = _no_pairs(by_out.shape[1])
            key_datas = IndiceData(
                outids, indices, pairs, pair_num, spatial_shape, out_spatial_shape,
                is_subm=False, algo=ConvAlgo.Native, ksize=self.kernel_size, stride=self.stride,
                padding=self.padding, dilation=self.dilation,
            )
            key_datas._detector_neighbour_maps = (pairs, _NeighbourMaps(by_out, by_in, False))
            if self.indice_key is not None:
                indice_dict[self.indice_key] = key_datas
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
                key_datas = indice_dict[self.indice_key] = IndiceData(
                    outids, indices, pairs, pair_num, spatial_shape, out_spatial_shape,
                    is_subm=self.subm, algo=ConvAlgo.Native, ksize=self.kernel_size, stride=self.stride,
                    padding=self.padding, dilation=self.dilation,
                )

        return _RuleBook(outids, pairs, pair_num, out_spatial_shape, indice_dict, key_datas)


class SubMConv3d(_CpuSafeConv, spconv_conv.SubMConv3d):
    """Submanifold 3D convolution (output sites = input sites)."""

    def forward_rows(self, input: SparseConvTensor, rows: torch.Tensor, features: torch.Tensor) -> SparseConvTensor:  # noqa: A002
        """``self(input.replace_feature(F))`` where ``F`` holds ``features`` (S, C_in) at ``rows`` (S,) of
        ``input``'s sites and zeros elsewhere (``input.features`` is not read).

        On the compiled CPU path only the pairs whose source is one of ``rows`` are computed (the rule
        book restricted to them, ``_NeighbourMaps.from_rows``): the LSTM's carried state covers a fifth
        of the fused sites, and its gate convolution costs that fraction. Elsewhere ``F`` is built and
        the layer runs as usual. Same values and gradients either way (the zero rows add nothing)."""
        self._check_channels(features.shape[1])
        if features.is_cuda or cpu_backend() != "cpp" or self.conv1x1:
            full = features.new_zeros((input.indices.shape[0], features.shape[1])).index_copy(0, rows, features)
            return self(input.replace_feature(full))
        rb = self._cpu_rulebook(input)
        n = input.indices.shape[0]
        maps = _NeighbourMaps.of(rb.datas, rb.pairs, rb.pair_num, n, n, True).from_rows(rows)
        out_features = _NeighbourConv.apply(features.contiguous(), self.weight, maps, False, False)
        return self._cpu_output(input, out_features, rb)


class SparseConv3d(_CpuSafeConv, spconv_conv.SparseConv3d):
    """Regular (e.g. strided) sparse 3D convolution."""


class SparseInverseConv3d(_CpuSafeConv, spconv_conv.SparseInverseConv3d):
    """Inverse of a ``SparseConv3d`` with the same ``indice_key``: back to its input sites."""
