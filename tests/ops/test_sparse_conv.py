"""The project's sparse convolutions against dense torch convolutions, under 1, 2 and 4 threads.

Forward values, input gradients and weight gradients must match ``conv3d`` / ``conv_transpose3d`` on
random sparse grids with batch size 2, 20 times per thread count, so that a race in the CPU path fails.
Set ``DETECTOR_TEST_RAW_SPCONV=1`` to run the same checks on spconv's own classes (that is how the
tests were shown to catch the fault: they fail there with 2 and 4 threads).
"""

from __future__ import annotations

import os

import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

from detector import ops

RUNS = 20
TOL = 1e-4
RAW = os.environ.get("DETECTOR_TEST_RAW_SPCONV") == "1"

if RAW:
    ops.enable_spconv_cpu_backward()
    SubM, Conv, Inverse = spconv.SubMConv3d, spconv.SparseConv3d, spconv.SparseInverseConv3d
else:
    SubM, Conv, Inverse = ops.SubMConv3d, ops.SparseConv3d, ops.SparseInverseConv3d

SHAPE = (9, 10, 11)
B, CIN, COUT = 2, 4, 5


@pytest.fixture(params=[1, 2, 4], ids=lambda t: f"threads{t}")
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _random_grid(gen: torch.Generator, density: float = 0.2):
    mask = torch.rand((B, *SHAPE), generator=gen) < density
    indices = mask.nonzero().int().contiguous()
    features = torch.randn(len(indices), CIN, generator=gen)
    return mask, indices, features


def _dense(indices: torch.Tensor, features: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, D, H, W) dense grid with ``features`` at ``indices`` (differentiable in features)."""
    i = indices.long()
    grid = features.new_zeros((B, *SHAPE, channels)).index_put((i[:, 0], i[:, 1], i[:, 2], i[:, 3]), features)
    return grid.permute(0, 4, 1, 2, 3)


def _at(dense: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    i = indices.long()
    return dense.permute(0, 2, 3, 4, 1)[i[:, 0], i[:, 1], i[:, 2], i[:, 3]]


def _dense_weight(w: torch.Tensor) -> torch.Tensor:
    """spconv KRSC ``(out, kd, kh, kw, in)`` -> conv3d ``(out, in, kd, kh, kw)``."""
    return w.permute(0, 4, 1, 2, 3)


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest error, relative to the magnitude of the reference where that exceeds one."""
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


def _check(kind: str, gen: torch.Generator) -> tuple[float, float, float]:
    mask, indices, feats = _random_grid(gen)
    f_sparse = feats.clone().requires_grad_(True)
    f_dense = feats.clone().requires_grad_(True)
    x = spconv.SparseConvTensor(f_sparse, indices, list(SHAPE), B)
    xd = _dense(indices, f_dense, CIN)

    if kind == "subm":
        layer = SubM(CIN, COUT, 3, bias=True, indice_key="s")
        y = layer(x)
        out, out_idx = y.features, y.indices
        ref_full = F.conv3d(xd, _dense_weight(layer.weight), layer.bias, padding=1)
        weights = [layer.weight]
    elif kind == "strided":
        layer = Conv(CIN, COUT, 3, stride=2, padding=1, bias=True, indice_key="d")
        y = layer(x)
        out, out_idx = y.features, y.indices
        ref_full = F.conv3d(xd, _dense_weight(layer.weight), layer.bias, stride=2, padding=1)
        weights = [layer.weight]
    elif kind == "inverse":
        down = Conv(CIN, COUT, 3, stride=2, padding=1, bias=False, indice_key="d")
        up = Inverse(COUT, CIN, 3, bias=False, indice_key="d")
        mid = down(x)
        y = up(mid)
        out, out_idx = y.features, y.indices
        ref_mid = F.conv3d(xd, _dense_weight(down.weight), None, stride=2, padding=1)
        active = torch.zeros_like(ref_mid[:, :1])
        mi = mid.indices.long()
        active[mi[:, 0], 0, mi[:, 1], mi[:, 2], mi[:, 3]] = 1.0
        # conv_transpose3d weight is (in, out, k...); output_padding restores the input shape.
        out_pad = [(s + 2 - 3) % 2 for s in SHAPE]
        ref_full = F.conv_transpose3d(
            ref_mid * active, _dense_weight(up.weight).transpose(0, 1), None, stride=2, padding=1,
            output_padding=out_pad,
        )
        weights = [down.weight, up.weight]
    else:
        raise ValueError(kind)

    if kind in ("subm", "inverse"):
        assert torch.equal(out_idx.long(), indices.long()), "output sites must be the input sites"
    ref = _at(ref_full, out_idx)
    grad_out = torch.randn(out.shape, generator=gen)
    wgrads = torch.autograd.grad((out * grad_out).sum(), [f_sparse, *weights])
    wgrads_ref = torch.autograd.grad((ref * grad_out).sum(), [f_dense, *weights])
    fwd = _close(out, ref)
    din = _close(wgrads[0], wgrads_ref[0])
    dw = max(_close(a, b) for a, b in zip(wgrads[1:], wgrads_ref[1:]))
    return fwd, din, dw


@pytest.mark.parametrize("kind", ["subm", "strided", "inverse"])
def test_matches_dense(kind, threads):
    gen = torch.Generator().manual_seed(1000 + threads)
    worst = [0.0, 0.0, 0.0]
    for _ in range(RUNS):
        errs = _check(kind, gen)
        worst = [max(w, e) for w, e in zip(worst, errs)]
    assert worst[0] < TOL, f"{kind} forward differs from dense by {worst[0]:.3g} ({threads} threads)"
    assert worst[1] < TOL, f"{kind} input gradient differs by {worst[1]:.3g} ({threads} threads)"
    assert worst[2] < TOL, f"{kind} weight gradient differs by {worst[2]:.3g} ({threads} threads)"


def test_shared_rule_book_chain(threads):
    """A small U-Net-shaped chain (subm, down, subm, up with shared keys) equals its dense twin."""
    gen = torch.Generator().manual_seed(7)
    mask, indices, feats = _random_grid(gen, density=0.3)
    f = feats.clone().requires_grad_(True)
    fd = feats.clone().requires_grad_(True)
    s1 = ops.SubMConv3d(CIN, 6, 3, bias=False, indice_key="l0")
    d1 = ops.SparseConv3d(6, 8, 3, stride=2, padding=1, bias=False, indice_key="down0")
    s2 = ops.SubMConv3d(8, 8, 3, bias=False, indice_key="l1")
    u1 = ops.SparseInverseConv3d(8, 6, 3, bias=False, indice_key="down0")
    s3 = ops.SubMConv3d(6, 3, 3, bias=False, indice_key="l0")  # reuses the level-0 rule book
    x = spconv.SparseConvTensor(f, indices, list(SHAPE), B)
    y = s3(u1(s2(d1(s1(x)))))

    def sub(dense, w):  # submanifold conv = dense conv masked to the active sites
        return F.conv3d(dense, _dense_weight(w), padding=1)

    active0 = mask[:, None].float()
    h = sub(_dense(indices, fd, CIN), s1.weight) * active0
    h = F.conv3d(h, _dense_weight(d1.weight), stride=2, padding=1)
    mid_idx = d1(s1(spconv.SparseConvTensor(feats, indices, list(SHAPE), B))).indices.long()
    active1 = torch.zeros_like(h[:, :1])
    active1[mid_idx[:, 0], 0, mid_idx[:, 1], mid_idx[:, 2], mid_idx[:, 3]] = 1.0
    h = sub(h * active1, s2.weight) * active1
    h = F.conv_transpose3d(h, _dense_weight(u1.weight).transpose(0, 1), stride=2, padding=1,
                           output_padding=[(s + 2 - 3) % 2 for s in SHAPE]) * active0
    ref = _at(sub(h, s3.weight), indices)
    assert _close(y.features, ref) < TOL
    g = torch.randn(ref.shape, generator=gen)
    ga = torch.autograd.grad((y.features * g).sum(), [f, s1.weight, d1.weight, u1.weight])
    gb = torch.autograd.grad((ref * g).sum(), [fd, s1.weight, d1.weight, u1.weight])
    for a, b in zip(ga, gb):
        assert _close(a, b) < TOL


def test_non_contiguous_indices_are_handled():
    """spconv reads index memory ignoring strides; the layer makes indices contiguous itself."""
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand((1, *SHAPE), generator=gen) < 0.2
    idx = mask.nonzero().int()
    assert not idx.is_contiguous()
    feats = torch.randn(len(idx), CIN, generator=gen)
    layer = ops.SubMConv3d(CIN, COUT, 3, bias=False)
    a = layer(spconv.SparseConvTensor(feats, idx, list(SHAPE), 1)).features
    b = layer(spconv.SparseConvTensor(feats, idx.contiguous(), list(SHAPE), 1)).features
    assert torch.allclose(a, b)


def test_clear_errors():
    x = spconv.SparseConvTensor(torch.randn(3, CIN), torch.zeros(3, 4, dtype=torch.int32).contiguous(), list(SHAPE), 1)
    with pytest.raises(ValueError, match="channels"):
        ops.SubMConv3d(CIN + 1, COUT, 3)(x)
    with pytest.raises(KeyError, match="missing_key"):
        ops.SparseInverseConv3d(CIN, COUT, 3, indice_key="missing_key")(x)


def test_cpu_backward_switch_lets_spconv_native_backward_run():
    """spconv's own CPU backward raises on CPU-only torch; the switch makes it run (1 thread: exact)."""
    if torch.cuda.is_available():
        pytest.skip("CPU-only torch behaviour")
    assert ops.enable_spconv_cpu_backward()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(11)
        mask, indices, feats = _random_grid(gen)
        f = feats.clone().requires_grad_(True)
        layer = spconv.SubMConv3d(CIN, COUT, 3, bias=False)
        out = layer(spconv.SparseConvTensor(f, indices, list(SHAPE), B)).features
        (gin,) = torch.autograd.grad(out.sum(), [f])
        fd = feats.clone().requires_grad_(True)
        ref = _at(F.conv3d(_dense(indices, fd, CIN), _dense_weight(layer.weight), padding=1), indices)
        (gref,) = torch.autograd.grad(ref.sum(), [fd])
        assert _close(out, ref) < TOL and _close(gin, gref) < TOL
    finally:
        torch.set_num_threads(before)


def test_layer_built_for_cuda_runs_on_cpu():
    """A layer built with spconv's implicit-GEMM algorithm (its default where CUDA exists) still runs
    on the CPU, through the native rule book."""
    from spconv.core import ConvAlgo

    gen = torch.Generator().manual_seed(5)
    mask, indices, feats = _random_grid(gen)
    native = ops.SubMConv3d(CIN, COUT, 3, bias=False, algo=ConvAlgo.Native)
    gemm = ops.SubMConv3d(CIN, COUT, 3, bias=False)
    gemm.algo = ConvAlgo.MaskImplicitGemm  # as spconv sets it when built on a CUDA machine
    gemm.weight.data.copy_(native.weight.data)
    x = spconv.SparseConvTensor(feats, indices, list(SHAPE), B)
    assert torch.equal(native(x).features, gemm(x).features)
