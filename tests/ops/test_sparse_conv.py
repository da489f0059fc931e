"""The project's sparse convolutions against dense torch convolutions, under 1, 2 and 4 threads.

Forward values, input gradients and weight gradients must match ``conv3d`` / ``conv_transpose3d`` on
random sparse grids with batch size 2, 20 times per thread count, so that a race in the CPU path fails.
Every check runs on both CPU paths of ``detector.ops``: the compiled fused kernels (``cpp``, with the
compiled submanifold rule book) and the torch reference (``torch``). Set ``DETECTOR_TEST_RAW_SPCONV=1``
to run the same checks on spconv's own classes (that is how the tests were shown to catch the fault:
they fail there with 2 and 4 threads).
"""

from __future__ import annotations

import os
import shutil

import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

from detector import ops
from detector.ops import cpu_kernels
from detector.ops.sparse_conv import cpu_backend, use_cpu_backend

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


BACKENDS = ["torch", "cpp"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The CPU path under test (the compiled one must be built: ``python -m detector.ops.cpu_kernels``)."""
    if RAW:
        yield "spconv"
        return
    if request.param == "cpp" and cpu_kernels.load() is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    with use_cpu_backend(request.param):
        yield request.param


@pytest.fixture(params=[1, 2, 4], ids=lambda t: f"threads{t}")
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _random_grid(gen: torch.Generator, density: float = 0.2, cin: int = CIN):
    mask = torch.rand((B, *SHAPE), generator=gen) < density
    indices = mask.nonzero().int().contiguous()
    features = torch.randn(len(indices), cin, generator=gen)
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


def _check(kind: str, gen: torch.Generator, cin: int = CIN, cout: int = COUT,
           density: float = 0.2) -> tuple[float, float, float]:
    CIN, COUT = cin, cout  # noqa: N806 - the module defaults, overridden for wide-channel checks
    mask, indices, feats = _random_grid(gen, density=density, cin=CIN)
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
def test_matches_dense(kind, threads, backend):
    gen = torch.Generator().manual_seed(1000 + threads)
    worst = [0.0, 0.0, 0.0]
    for _ in range(RUNS):
        errs = _check(kind, gen)
        worst = [max(w, e) for w, e in zip(worst, errs)]
    assert worst[0] < TOL, f"{kind} forward differs from dense by {worst[0]:.3g} ({threads} threads)"
    assert worst[1] < TOL, f"{kind} input gradient differs by {worst[1]:.3g} ({threads} threads)"
    assert worst[2] < TOL, f"{kind} weight gradient differs by {worst[2]:.3g} ({threads} threads)"


@pytest.mark.parametrize("kind", ["subm", "strided", "inverse"])
@pytest.mark.parametrize("cin,cout", [(13, 70), (33, 17), (40, 24)])
def test_wide_channels_match_dense(kind, cin, cout, threads, backend):
    """Channel counts that are not multiples of the kernels' register blocks (8 / 32 / 64 columns)."""
    gen = torch.Generator().manual_seed(2000 + threads + cin)
    for _ in range(3):
        fwd, din, dw = _check(kind, gen, cin, cout)
        assert max(fwd, din, dw) < TOL, f"{kind} {cin}->{cout}: errors {fwd:.3g} {din:.3g} {dw:.3g} ({threads} threads)"


@pytest.mark.parametrize("kind", ["subm", "strided", "inverse"])
@pytest.mark.parametrize("cin,cout", [(5, 24), (24, 48), (48, 24)])
def test_dense_neighbourhoods_match_dense(kind, cin, cout, threads, backend):
    """Sites with most of their 27 neighbours present (a 0.85-full grid, as on LiDAR surfaces and denser),
    a narrow stem and widths that are not multiples of the register tiles (weight gradient in place below
    12 input channels, packed from there; 8-column ragged ends)."""
    gen = torch.Generator().manual_seed(3000 + threads + cin)
    for _ in range(2):
        fwd, din, dw = _check(kind, gen, cin, cout, density=0.85)
        assert max(fwd, din, dw) < TOL, f"{kind} {cin}->{cout}: errors {fwd:.3g} {din:.3g} {dw:.3g} ({threads} threads)"


@pytest.mark.skipif(RAW, reason="detector.ops only")
@pytest.mark.parametrize("kind", ["subm", "strided", "inverse"])
@pytest.mark.parametrize("cin,cout", [(5, 24), (12, 20), (40, 40)], ids=["in_place_dw", "row_major", "offset_major"])
@pytest.mark.parametrize("density", [0.3, 0.85])
def test_compiled_path_is_independent_of_thread_count(kind, cin, cout, density):
    """Each output row and each weight-gradient offset has one owner: bitwise equal under 1, 2, 4 threads
    (for small layers, whose kernel sums all offsets in registers, and wide ones, taken offset by offset;
    the weight gradient's offsets grouped differently for every thread count)."""
    if cpu_kernels.load() is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    results = []
    before = torch.get_num_threads()
    try:
        for t in (1, 2, 4):
            torch.set_num_threads(t)
            torch.manual_seed(0)
            gen = torch.Generator().manual_seed(99)
            _, indices, feats = _random_grid(gen, density=density, cin=cin)
            f = feats.clone().requires_grad_(True)
            x = spconv.SparseConvTensor(f, indices, list(SHAPE), B)
            with use_cpu_backend("cpp"):
                if kind == "subm":
                    layer = ops.SubMConv3d(cin, cout, 3, bias=False)
                    y = layer(x)
                elif kind == "strided":
                    layer = ops.SparseConv3d(cin, cout, 3, stride=2, padding=1, bias=False, indice_key="d")
                    y = layer(x)
                else:
                    down = ops.SparseConv3d(cin, cin, 3, stride=2, padding=1, bias=False, indice_key="d")
                    layer = ops.SparseInverseConv3d(cin, cout, 3, bias=False, indice_key="d")
                    y = layer(down(x))
                g = torch.randn(y.features.shape, generator=gen)
                grads = torch.autograd.grad((y.features * g).sum(), [f, layer.weight])
            results.append((y.features.detach(), *grads))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.skipif(RAW, reason="detector.ops only")
@pytest.mark.parametrize("dilation", [1, 2])
def test_compiled_submanifold_rule_book_equals_spconvs(dilation):
    """The compiled submanifold rule book holds exactly spconv's pairs per offset, for unsorted sites."""
    kern = cpu_kernels.load()
    if kern is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    from spconv.core import ConvAlgo
    from spconv.pytorch import ops as spconv_ops

    gen = torch.Generator().manual_seed(17)
    _, indices, _ = _random_grid(gen, density=0.25)
    indices = indices[torch.randperm(len(indices), generator=gen)].contiguous()
    nbr, counts = kern.submanifold_rulebook(indices, list(SHAPE), [3, 3, 3], [dilation] * 3)
    assert torch.equal(counts, (nbr >= 0).sum(0).int())
    _, ref_pairs, ref_counts = spconv_ops.get_indice_pairs(
        indices, B, list(SHAPE), ConvAlgo.Native, [3, 3, 3], [1, 1, 1], [0, 0, 0], [dilation] * 3, [0, 0, 0], True,
        False,
    )
    kv = 27
    ref_counts = ref_counts.tolist()
    for k in range(kv):
        if k == kv // 2:
            assert torch.equal(nbr[:, k].long(), torch.arange(len(indices)))
            continue
        n_ref = ref_counts[kv - k - 1] if k > kv // 2 else ref_counts[k]
        ref = sorted(zip(ref_pairs[0, k, :n_ref].tolist(), ref_pairs[1, k, :n_ref].tolist()))
        rows = torch.nonzero(nbr[:, k] >= 0).flatten()
        assert sorted(zip(nbr[rows, k].tolist(), rows.tolist())) == ref, f"offset {k}"


@pytest.mark.skipif(RAW, reason="detector.ops only")
@pytest.mark.parametrize("stride,padding", [(2, 1), (2, 0), (1, 1)])
def test_compiled_strided_rule_book_equals_spconvs(stride, padding):
    """Same output sites and, per offset, the same (input site, output site) pairs as spconv's rule book."""
    kern = cpu_kernels.load()
    if kern is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    from spconv.core import ConvAlgo
    from spconv.pytorch import ops as spconv_ops

    gen = torch.Generator().manual_seed(23 + stride + padding)
    _, indices, _ = _random_grid(gen, density=0.25)
    indices = indices[torch.randperm(len(indices), generator=gen)].contiguous()
    k, s, p, d = [3] * 3, [stride] * 3, [padding] * 3, [1] * 3
    out_shape = spconv_ops.get_conv_output_size(list(SHAPE), k, s, p, d)
    outids, by_out, by_in, counts = kern.strided_rulebook(indices, list(SHAPE), list(out_shape), k, s, p, d)
    assert torch.equal(counts, (by_out >= 0).sum(0).int())
    ref_out, ref_pairs, ref_counts = spconv_ops.get_indice_pairs(
        indices, B, list(SHAPE), ConvAlgo.Native, k, s, p, d, [0, 0, 0], False, False
    )

    def sites(t):
        return [tuple(r) for r in t.tolist()]

    assert sorted(sites(outids)) == sorted(sites(ref_out))
    assert sites(outids) == sorted(sites(outids)), "output sites in (batch, z, y, x) order"
    ins, ours_out, theirs_out = sites(indices), sites(outids), sites(ref_out)
    for kk in range(27):
        n_ours, n_ref = int(counts[kk]), int(ref_counts[kk])
        rows = torch.nonzero(by_out[:, kk] >= 0).flatten()
        ours = sorted((ins[i], ours_out[o]) for i, o in zip(by_out[rows, kk].tolist(), rows.tolist()))
        ref = sorted((ins[i], theirs_out[o]) for i, o in zip(ref_pairs[0, kk, :n_ref].tolist(),
                                                               ref_pairs[1, kk, :n_ref].tolist()))
        assert ours == ref, f"offset {kk}"
        assert torch.equal(by_in[by_out[rows, kk].long(), kk], rows.int()), "by_in is the transpose of by_out"
        assert int((by_in[:, kk] >= 0).sum()) == n_ours


@pytest.mark.skipif(RAW, reason="detector.ops only")
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_forward_rows_matches_dense(fraction, threads, backend):
    """``SubMConv3d.forward_rows``: the convolution of a tensor whose features are given at some rows
    only (zero elsewhere), and its gradients for those rows, the weight and the bias, against dense
    ``conv3d``; on the compiled path only the given rows' pairs are computed."""
    gen = torch.Generator().manual_seed(31)
    _, indices, feats = _random_grid(gen)
    rows = torch.randperm(len(indices), generator=gen)[: int(fraction * len(indices))].sort().values
    sub = feats[rows].clone().requires_grad_(True)
    full = torch.zeros_like(feats).index_copy(0, rows, feats[rows]).requires_grad_(True)
    layer = SubM(CIN, COUT, 3, bias=True, indice_key="s")
    x = spconv.SparseConvTensor(torch.randn(len(indices), 7, generator=gen), indices, list(SHAPE), B)  # unread
    y = layer.forward_rows(x, rows, sub)
    assert torch.equal(y.indices, indices) and "s" in y.indice_dict
    ref = _at(F.conv3d(_dense(indices, full, CIN), _dense_weight(layer.weight), layer.bias, padding=1), indices)
    grad_out = torch.randn(ref.shape, generator=gen)
    got = torch.autograd.grad((y.features * grad_out).sum(), [sub, layer.weight, layer.bias])
    want = torch.autograd.grad((ref * grad_out).sum(), [full, layer.weight, layer.bias])
    assert _close(y.features, ref) < TOL
    assert got[0].shape == (len(rows), CIN) and (not len(rows) or _close(got[0], want[0][rows]) < TOL)
    assert _close(got[1], want[1]) < TOL and _close(got[2], want[2]) < TOL
    with pytest.raises(ValueError, match="channels"):
        layer.forward_rows(x, rows, sub[:, :2])


@pytest.mark.skipif(RAW, reason="detector.ops only")
def test_layers_sharing_a_key_share_neighbour_maps():
    if cpu_kernels.load() is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    gen = torch.Generator().manual_seed(4)
    _, indices, feats = _random_grid(gen)
    with use_cpu_backend("cpp"):
        a = ops.SubMConv3d(CIN, CIN, 3, indice_key="k")
        b = ops.SubMConv3d(CIN, CIN, 3, indice_key="k")
        y = a(spconv.SparseConvTensor(feats, indices, list(SHAPE), B))
        maps = y.indice_dict["k"]._detector_neighbour_maps
        z = b(y)
        assert z.indice_dict["k"]._detector_neighbour_maps is maps


@pytest.mark.skipif(RAW, reason="detector.ops only")
def test_a_compiled_rule_book_is_refused_by_the_torch_path():
    """Compiled rule books keep neighbour maps, not spconv's pair lists: switching the backend inside a
    pass must fail loudly, not convolve over empty pair lists."""
    if cpu_kernels.load() is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    gen = torch.Generator().manual_seed(5)
    _, indices, feats = _random_grid(gen)
    a = ops.SubMConv3d(CIN, CIN, 3, indice_key="k")
    b = ops.SubMConv3d(CIN, CIN, 3, indice_key="k")
    with use_cpu_backend("cpp"):
        y = a(spconv.SparseConvTensor(feats, indices, list(SHAPE), B))
    with use_cpu_backend("torch"), pytest.raises(RuntimeError, match="compiled kernels"):
        b(y)


@pytest.mark.skipif(RAW, reason="detector.ops only")
def test_compiled_kernels_are_used_where_they_can_be_built():
    """With a C++ compiler and an AVX2 + FMA CPU, scripts/setup.sh builds the kernels and they run by default."""
    supported, why = cpu_kernels.cpu_supported()
    if not (supported and shutil.which("c++")) or os.environ.get(cpu_kernels.ENV, "auto") != "auto":
        pytest.skip(why or "no C++ compiler here, or the path is forced")
    assert cpu_kernels.load() is not None, "run scripts/setup.sh (or python -m detector.ops.cpu_kernels) to build them"
    assert cpu_backend() == "cpp"


def test_shared_rule_book_chain(threads, backend):
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
