"""Cost of the project's CPU sparse convolution against single-threaded spconv (the correct baseline).

A sparse U-Net (submanifold, strided and inverse convolutions, optional BatchNorm, ReLU) over ~200k
active voxels of a LiDAR-like 0.2 m grid; forward and forward+backward, rule books included (each pass
starts from a fresh tensor, as every frame does). Two cases (``--case``):

- ``scatter`` (the first benchmark): a random scatter thinning with range, 60 % of the sites on one z
  layer, so most sites have few neighbours (mean 4.5 of 27 with the centre); 4 -> 16/32/64/96 channels
  (multiples of 16), BatchNorm.
- ``surface``: voxels of surfaces as a LiDAR sees them (ground filled near the sensor and in rings
  further out, walls, the sensor-facing sides and tops of box-shaped objects): mean ~10.6 neighbours, as
  a synthetic Waymo-size frame's voxels have them (``--waymo-frame`` synthesizes one and prints its
  count); a narrow stem and widths that are not multiples of 16: 5 -> 24/48/96, no BatchNorm.

``--channels``, ``--in-channels`` and ``--norm/--no-norm`` override a case's net. Every run prints the
neighbours per site of the input's submanifold rule book.

Timing: every variant in this one process, interleaved repeat by repeat (so that a load change on a
shared machine hits them alike); the minimum (``--stat``) of ``--repeats`` is reported with its ratio to
the baseline; "backward" is forward+backward minus forward. ``--per-layer`` adds a table of every
convolution layer alone (the rule books of the layers that build one, the forward, spconv's backward
against the input gradient and the weight gradient of ours), each the minimum of ``--repeats`` calls
over the very inputs the whole net gave that layer.
Memory: each variant once more in a fresh child process (the peak resident memory one
forward+backward adds over what the process held before it).
Agreement: outputs and both gradients of every variant against the baseline (max error relative to
the reference's magnitude, as the tests measure it).

    PYTHONPATH=. .venv/bin/python scripts/bench/sparse_conv.py [--case scatter] [--voxels 200000] [--repeats 5]
    PYTHONPATH=. .venv/bin/python scripts/bench/sparse_conv.py --case surface --voxels 190000 --per-layer

Variants: ``spconv-1t`` (spconv's own CPU kernels and rule books, 1 thread, backward made to run with
``enable_spconv_cpu_backward``), ``torch-1t``/``torch-2t`` (detector.ops on the torch path: the previous
implementation, per-offset ``index_select``/``mm``/``index_add_`` over spconv's rule book) and
``cpp-1t``/``cpp-2t`` (detector.ops on the compiled kernels and rule books).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.bench._harness import best_of  # noqa: E402

VARIANTS = {"spconv-1t": ("spconv", 1), "torch-1t": ("torch", 1), "torch-2t": ("torch", 2),
            "cpp-1t": ("cpp", 1), "cpp-2t": ("cpp", 2)}
CHANNELS = (16, 32, 64, 96)


class Case(NamedTuple):
    """A benchmark input and the net run over it."""

    input: str  # "scatter" or "surface"
    channels: tuple[int, ...]
    in_channels: int
    norm: bool


CASES = {"scatter": Case("scatter", CHANNELS, 4, True), "surface": Case("surface", (24, 48, 96), 5, False)}


def _make_input(n_voxels: int, seed: int = 0, in_channels: int = 4):
    import numpy as np
    import spconv.pytorch as spconv
    import torch

    rng = np.random.default_rng(seed)
    shape = (40, 752, 752)  # z, y, x: 8 m x 150.4 m x 150.4 m at 0.2 m
    # LiDAR-like: density falling with range (ground rings) plus vertical surfaces.
    r = 3 + 72 * rng.random(n_voxels * 2) ** 2
    a = rng.random(n_voxels * 2) * 2 * np.pi
    x = (376 + r * np.cos(a) / 0.2).astype(np.int64)
    y = (376 + r * np.sin(a) / 0.2).astype(np.int64)
    z = np.where(rng.random(n_voxels * 2) < 0.6, 10, rng.integers(10, 30, n_voxels * 2))
    flat = np.unique((z * shape[1] + y) * shape[2] + x)[:n_voxels]
    rng.shuffle(flat)
    flat = np.sort(flat)
    zi, rem = np.divmod(flat, shape[1] * shape[2])
    yi, xi = np.divmod(rem, shape[2])
    idx = np.stack([np.zeros_like(zi), zi, yi, xi], 1).astype(np.int32)
    feats = torch.from_numpy(rng.standard_normal((len(idx), in_channels)).astype(np.float32))
    return spconv.SparseConvTensor, feats, torch.from_numpy(idx).contiguous(), list(shape)


def _surface_input(n_voxels: int, seed: int = 0, in_channels: int = 4):
    """Voxels of surfaces as a LiDAR sees them at 0.2 m: the ground (filled near the sensor, rings of growing
    spacing further out, gently undulating so that it crosses z layers), building walls along the road (vertical
    planes one or two voxels thick) and box-shaped objects (the two sides facing the sensor and the top).
    Elements are added in a seeded random order until ``n_voxels`` distinct sites are reached."""
    import numpy as np
    import spconv.pytorch as spconv
    import torch

    rng = np.random.default_rng(seed)
    shape = (40, 752, 752)  # z, y, x: 8 m x 150.4 m x 150.4 m at 0.2 m; the sensor at the centre, z = 2.4 m
    c, ground = 376, 10
    keys: set[int] = set()
    cells = []

    def ground_z(x, y):
        return ground + np.round(1.5 * np.sin(x / 97.0) * np.cos(y / 131.0)).astype(np.int64)

    # the ground: every cell out to 15 m, then rings (one per beam) whose spacing grows with range
    yy, xx = np.mgrid[-75:76, -75:76]
    near = (xx**2 + yy**2) <= 75**2
    x0, y0 = xx[near] + c, yy[near] + c
    cells.append(np.stack([ground_z(x0, y0), y0, x0], 1))
    r = 15.0
    while r < 74.0:
        n = int(2 * np.pi * r / 0.2)
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        x1 = np.clip((c + r * np.cos(a) / 0.2).astype(np.int64), 0, shape[2] - 1)
        y1 = np.clip((c + r * np.sin(a) / 0.2).astype(np.int64), 0, shape[1] - 1)
        cells.append(np.stack([ground_z(x1, y1), y1, x1], 1))
        r *= 1.035
    elements = []
    # walls: vertical planes along both sides of the road and across it
    for _ in range(60):
        side = rng.choice([-1, 1])
        dist = rng.uniform(12, 60) / 0.2
        length = int(rng.uniform(8, 50) / 0.2)
        start = int(rng.uniform(-70, 70 - length * 0.2) / 0.2)
        height = int(rng.uniform(2.5, 6.0) / 0.2)
        thick = int(rng.integers(1, 3))
        along = np.arange(start, start + length)
        z = np.arange(ground, min(shape[0], ground + height))
        a_, z_, t_ = np.meshgrid(along, z, np.arange(thick), indexing="ij")
        u = c + a_.ravel()
        v = c + side * int(dist) + side * t_.ravel()
        if rng.random() < 0.5:
            elements.append(np.stack([z_.ravel(), v, u], 1))
        else:
            elements.append(np.stack([z_.ravel(), u, v], 1))
    # objects: boxes (cars, trucks, pedestrians) of which the sensor sees two sides and the top
    for _ in range(400):
        length, width, height = [(4.5, 2.0, 1.6), (10.0, 2.6, 3.2), (0.8, 0.8, 1.8)][rng.choice(3, p=[0.7, 0.1, 0.2])]
        rr = rng.uniform(5, 70)
        a = rng.uniform(0, 2 * np.pi)
        cx, cy = c + rr * np.cos(a) / 0.2, c + rr * np.sin(a) / 0.2
        lx, ly, hz = max(1, int(length / 0.2)), max(1, int(width / 0.2)), max(1, int(height / 0.2))
        x_lo, y_lo = int(cx - lx / 2), int(cy - ly / 2)
        fx = x_lo if cx > c else x_lo + lx - 1  # the faces towards the sensor
        fy = y_lo if cy > c else y_lo + ly - 1
        z = np.arange(ground + 1, min(shape[0], ground + 1 + hz))
        parts = []
        yy_, zz_ = np.meshgrid(np.arange(y_lo, y_lo + ly), z, indexing="ij")
        parts.append(np.stack([zz_.ravel(), yy_.ravel(), np.full(yy_.size, fx)], 1))
        xx_, zz_ = np.meshgrid(np.arange(x_lo, x_lo + lx), z, indexing="ij")
        parts.append(np.stack([zz_.ravel(), np.full(xx_.size, fy), xx_.ravel()], 1))
        xx_, yy_ = np.meshgrid(np.arange(x_lo, x_lo + lx), np.arange(y_lo, y_lo + ly), indexing="ij")
        parts.append(np.stack([np.full(xx_.size, z[-1]), yy_.ravel(), xx_.ravel()], 1))
        elements.append(np.concatenate(parts))
    order = rng.permutation(len(elements))
    cells += [elements[i] for i in order]
    for part in cells:
        part = part[(part[:, 0] >= 0) & (part[:, 0] < shape[0]) & (part[:, 1] >= 0) & (part[:, 1] < shape[1])
                    & (part[:, 2] >= 0) & (part[:, 2] < shape[2])]
        flat = (part[:, 0] * shape[1] + part[:, 1]) * shape[2] + part[:, 2]
        new = [int(f) for f in np.unique(flat) if int(f) not in keys]
        keys.update(new[: max(0, n_voxels - len(keys))])
        if len(keys) >= n_voxels:
            break
    flat = np.sort(np.fromiter(keys, np.int64))
    zi, rem = np.divmod(flat, shape[1] * shape[2])
    yi, xi = np.divmod(rem, shape[2])
    idx = np.stack([np.zeros_like(zi), zi, yi, xi], 1).astype(np.int32)
    feats = torch.from_numpy(rng.standard_normal((len(idx), in_channels)).astype(np.float32))
    return spconv.SparseConvTensor, feats, torch.from_numpy(idx).contiguous(), list(shape)


def _case_input(case: Case, n_voxels: int):
    make = _surface_input if case.input == "surface" else _make_input
    return make(n_voxels, in_channels=case.in_channels)


def _neighbours(indices, shape) -> str:
    """Neighbours per site (the centre included) of the 3x3x3 submanifold rule book: mean and deciles."""
    import numpy as np
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo

    _, pairs, num = spconv.ops.get_indice_pairs(indices, 1, shape, ConvAlgo.Native, [3, 3, 3], [1, 1, 1], [1, 1, 1],
                                                [1, 1, 1], [0, 0, 0], True, False)
    n = np.ones(len(indices), np.int64)
    counts = num.tolist()
    for k in range(len(counts) // 2):  # spconv lists each non-centre pair of a submanifold map once, mirrored
        rows = pairs[0, k, : counts[k]].long().numpy()
        np.add.at(n, rows, 1)
        np.add.at(n, pairs[1, k, : counts[k]].long().numpy(), 1)
    q = np.quantile(n, [0.1, 0.5, 0.9])
    return f"{len(n)} sites, neighbours per site (of 27, centre included): mean {n.mean():.1f}, " \
           f"10/50/90 % {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}"


def _waymo_frame_sites(seed: int = 0):
    """The 0.2 m voxels of one synthetic Waymo-size frame (the project's synthesizer, 5 lidars, 2 returns)
    inside the Waymo configs' point range."""
    import numpy as np
    import torch

    from data_tools.synth_segment import SegmentConfig, synthesize_segment

    _, truth = next(iter(synthesize_segment(SegmentConfig(frames=1, lidar="waymo"), seed)))
    lo, hi = np.array([-75.2, -75.2, -3.0]), np.array([75.2, 75.2, 4.0])
    p = truth.points[np.all((truth.points >= lo) & (truth.points < hi), 1)]
    c = np.floor((p - lo) / 0.2).astype(np.int64)
    shape = [35, 752, 752]
    flat = np.unique((c[:, 2] * shape[1] + c[:, 1]) * shape[2] + c[:, 0])
    z, rem = np.divmod(flat, shape[1] * shape[2])
    y, x = np.divmod(rem, shape[2])
    idx = np.stack([np.zeros_like(z), z, y, x], 1).astype(np.int32)
    return len(truth.points), torch.from_numpy(idx).contiguous(), shape


def _unet(kind: str, ch=CHANNELS, in_channels: int = 4, norm: bool = True):
    import spconv.pytorch as spconv
    import torch
    from torch import nn

    from detector import ops

    mod = spconv if kind == "spconv" else ops

    class Block(nn.Module):
        def __init__(self, cin, cout, key):
            super().__init__()
            self.conv = mod.SubMConv3d(cin, cout, 3, bias=False, indice_key=key)
            self.norm = nn.BatchNorm1d(cout) if norm else nn.Identity()

        def forward(self, x):
            x = self.conv(x)
            return x.replace_feature(torch.relu(self.norm(x.features)))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Block(in_channels, ch[0], "s0")
            self.enc = nn.ModuleList()
            self.down = nn.ModuleList()
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            for i in range(len(ch) - 1):
                self.down.append(mod.SparseConv3d(ch[i], ch[i + 1], 3, stride=2, padding=1, bias=False,
                                                  indice_key=f"d{i}"))
                self.enc.append(Block(ch[i + 1], ch[i + 1], f"s{i + 1}"))
            for i in reversed(range(len(ch) - 1)):
                self.up.append(mod.SparseInverseConv3d(ch[i + 1], ch[i], 3, bias=False, indice_key=f"d{i}"))
                self.dec.append(Block(2 * ch[i], ch[i], f"s{i}"))

        def forward(self, x):
            x = self.stem(x)
            skips = []
            for down, enc in zip(self.down, self.enc):
                skips.append(x)
                x = enc(down(x))
            for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
                x = up(x)
                x = dec(x.replace_feature(torch.cat([x.features, skip.features], 1)))
            return x

    torch.manual_seed(0)  # the same weights for every variant
    return UNet()


def _backend(kind: str):
    from detector.ops.sparse_conv import use_cpu_backend

    return contextlib.nullcontext() if kind == "spconv" else use_cpu_backend(kind)


def _pass(net, tensor_cls, feats, idx, shape, kind: str, backward: bool):
    f = feats.clone().requires_grad_(backward)
    with _backend(kind):
        t0 = time.perf_counter()
        out = net(tensor_cls(f, idx, shape, 1))
        if backward:
            out.features.square().mean().backward()
        dt = time.perf_counter() - t0
    return dt, out.features.detach(), (f.grad, [p.grad.clone() for p in net.parameters()]) if backward else None


def _child(variant: str, case: Case, n_voxels: int) -> dict:
    """Peak RSS of one forward+backward of one variant, in a fresh process."""
    import torch

    kind, threads = VARIANTS[variant]
    torch.set_num_threads(threads)
    if kind == "spconv":
        from detector.ops import enable_spconv_cpu_backward

        enable_spconv_cpu_backward()
    tensor_cls, feats, idx, shape = _case_input(case, n_voxels)
    net = _unet(kind, case.channels, case.in_channels, case.norm)
    # the input's construction peaks higher than a pass: reset the high-water mark (Linux) and report
    # what the pass adds over the memory held before it
    Path("/proc/self/clear_refs").write_text("5")
    rss0 = _status_kb("VmRSS")
    _pass(net, tensor_cls, feats, idx, shape, kind, True)
    return {"variant": variant, "pass_peak_mb": (_status_kb("VmHWM") - rss0) / 1024,
            "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


class _Layer(NamedTuple):
    """One convolution of a net as the whole net ran it: its module, input tensor and output rows."""

    module: object
    input: object  # SparseConvTensor
    n_out: int


def _record_layers(net, tensor_cls, feats, idx, shape, kind: str) -> list[_Layer]:
    """The net's convolution layers in call order, each with the tensor it was given (rule books as the
    net had them at that point)."""
    from spconv.pytorch.conv import SparseConvolution

    layers: list[_Layer] = []
    hooks = [m.register_forward_hook(lambda m, a, out: layers.append(_Layer(m, a[0], out.features.shape[0])))
             for m in net.modules() if isinstance(m, SparseConvolution)]
    try:
        with _backend(kind):
            net(tensor_cls(feats, idx, shape, 1))
    finally:
        for h in hooks:
            h.remove()
    return layers


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    return best_of(fn, repeats)


def _layer_times(layer: _Layer, kind: str, repeats: int) -> dict:
    """Minimum times of one layer alone: its rule book (if it builds one), forward, and the backward (spconv:
    both gradients in one call; ours: the input gradient and the weight gradient apart)."""
    import torch
    from spconv.core import ConvAlgo
    from spconv.pytorch import ops as spconv_ops

    m, x = layer.module, layer.input
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn((layer.n_out, m.out_channels), generator=gen)
    builds = x.find_indice_pair(m.indice_key) is None and not m.inverse
    res = {}
    with _backend(kind):
        if builds:
            if kind == "spconv":
                res["rule book"] = _timed(lambda: spconv_ops.get_indice_pairs(
                    x.indices, x.batch_size, x.spatial_shape, ConvAlgo.Native, m.kernel_size, m.stride, m.padding,
                    m.dilation, m.output_padding, m.subm, m.transposed), repeats)
            else:
                res["rule book"] = _timed(lambda: m._cpu_rulebook(x), repeats)
        # a submanifold layer: its rule book as the whole net had it after this layer (built once, then
        # reused); a strided one builds it on every call
        xr = x
        if m.subm:
            xr = x.replace_feature(x.features)
            xr.indice_dict = dict(m(x).indice_dict)
        if builds and not m.subm:
            # a strided layer builds its rule book on every call: time its features by the difference
            res["forward"] = max(0.0, _timed(lambda: m(xr), repeats) - res["rule book"])
        else:
            res["forward"] = _timed(lambda: m(xr), repeats)

        def grads(wrt: str):
            f = x.features.detach().clone().requires_grad_(wrt in ("both", "input"))
            m.weight.requires_grad_(wrt in ("both", "weight"))
            out = m(xr.replace_feature(f)).features
            inputs = [t for t in (f, m.weight) if t.requires_grad]
            t0 = time.perf_counter()
            torch.autograd.grad(out, inputs, grad)
            return time.perf_counter() - t0

        try:  # the first of repeats + 1 calls warms up
            if kind == "spconv":
                res["backward"] = min(grads("both") for _ in range(repeats + 1))
            else:
                res["d_input"] = min(grads("input") for _ in range(repeats + 1))
                res["d_weight"] = min(grads("weight") for _ in range(repeats + 1))
                res["backward"] = res["d_input"] + res["d_weight"]
        finally:
            m.weight.requires_grad_(True)
    return res


def _per_layer(names: list[str], case: Case, tensor_cls, feats, idx, shape, repeats: int) -> None:
    import torch

    recorded = {}
    for n in names:
        kind, threads = VARIANTS[n]
        if kind == "torch":
            continue
        torch.set_num_threads(threads)
        net = _unet(kind, case.channels, case.in_channels, case.norm)
        recorded[n] = _record_layers(net, tensor_cls, feats, idx, shape, kind)
    names = list(recorded)
    base = names[0]
    rows = []
    for i, layer in enumerate(recorded[base]):
        m = layer.module
        what = "subm" if m.subm else ("inverse" if m.inverse else "strided")
        times = {}
        for n in names:  # interleaved layer by layer
            torch.set_num_threads(VARIANTS[n][1])
            times[n] = _layer_times(recorded[n][i], VARIANTS[n][0], repeats)
        rows.append((f"{i} {what} {m.in_channels}->{m.out_channels} ({m.indice_key}, {layer.input.features.shape[0]}"
                     f"->{layer.n_out} rows)", times))
        print(f"layer {rows[-1][0]}: " + "; ".join(f"{n} " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items())
                                                   for n, t in times.items()), file=sys.stderr, flush=True)
    print(f"\nper layer: min of {repeats} calls each, ms (ratio to {base}); rule book: layers that build one; "
          f"backward of ours = d_input + d_weight")
    cols = ["rule book", "forward", "backward"]
    head = [f"{base} {c}" for c in cols]
    for n in names[1:]:
        head += [f"{n} {c}" for c in cols] + [f"{n} d_input", f"{n} d_weight"]
    print("| layer | " + " | ".join(head) + " |")
    print("|" + " --- |" * (len(head) + 1))
    total = {n: {} for n in names}
    for label, times in rows:
        cells = []
        for n in names:
            for c in cols + ([] if n == base else ["d_input", "d_weight"]):
                v = times[n].get(c)
                total[n][c] = total[n].get(c, 0.0) + (v or 0.0)
                if v is None:
                    cells.append("")
                elif n == base or c not in times[base]:
                    cells.append(f"{v * 1e3:.1f}")
                else:
                    cells.append(f"{v * 1e3:.1f} ({v / max(times[base][c], 1e-9):.2f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        for c in cols + ([] if n == base else ["d_input", "d_weight"]):
            v = total[n][c]
            cells.append(f"{v * 1e3:.0f}" + ("" if n == base or c not in total[base] else
                                              f" ({v / max(total[base][c], 1e-9):.2f})"))
    print("| all layers | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASES), default="scatter")
    ap.add_argument("--voxels", type=int, default=200_000)
    ap.add_argument("--channels", help="comma-separated widths per level (default: the case's)")
    ap.add_argument("--in-channels", type=int, help="input feature channels (default: the case's)")
    ap.add_argument("--norm", action=argparse.BooleanOptionalAction, default=None,
                    help="BatchNorm after every submanifold convolution (default: the case's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stat", choices=["min", "median"], default="min", help="of the repeats (min: robust to load)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (first: baseline)")
    ap.add_argument("--per-layer", action="store_true", help="also time every convolution layer alone")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-net timing (with --per-layer)")
    ap.add_argument("--waymo-frame", action="store_true",
                    help="also print the neighbours per site of a synthetic Waymo-size frame's voxels")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-RSS children")
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    case = CASES[args.case]
    case = Case(case.input,
                tuple(int(c) for c in args.channels.split(",")) if args.channels else case.channels,
                args.in_channels if args.in_channels is not None else case.in_channels,
                case.norm if args.norm is None else args.norm)
    if args.child:
        print(json.dumps(_child(args.child, case, args.voxels)))
        return
    import torch

    from detector.ops import enable_spconv_cpu_backward
    from detector.ops.sparse_conv import cpu_backend

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"sparse_conv.py: unknown variant(s) {', '.join(unknown)} (--variants; known: {', '.join(VARIANTS)})",
              file=sys.stderr)
        raise SystemExit(2)
    enable_spconv_cpu_backward()
    tensor_cls, feats, idx, shape = _case_input(case, args.voxels)
    net_txt = (f"sparse U-Net {case.in_channels} -> {'/'.join(map(str, case.channels))} ch "
               f"({'BatchNorm + ' if case.norm else ''}ReLU)")
    print(f"input {case.input}: {_neighbours(idx, shape)}")
    if args.waymo_frame:
        n_points, widx, wshape = _waymo_frame_sites()
        print(f"synthetic Waymo-size frame ({n_points} points, 0.2 m voxels in [-75.2, 75.2]^2 x [-3, 4] m): "
              f"{_neighbours(widx, wshape)}")
    stat = min if args.stat == "min" else statistics.median
    if not args.no_whole:
        nets = {n: _unet(VARIANTS[n][0], case.channels, case.in_channels, case.norm) for n in names}
        times = {n: {"forward": [], "fwd_bwd": []} for n in names}
        ref = None
        errors = {}
        for rep in range(args.repeats + 1):  # the first round warms up (and checks agreement)
            for n in names:
                kind, threads = VARIANTS[n]
                torch.set_num_threads(threads)
                net = nets[n]
                net.zero_grad(set_to_none=True)
                tf, _, _ = _pass(net, tensor_cls, feats, idx, shape, kind, False)
                tb, out, grads = _pass(net, tensor_cls, feats, idx, shape, kind, True)
                if rep == 0:
                    if ref is None:
                        ref = (out, grads)
                    # strided rule books may order the output sites differently; the U-Net's output sites
                    # are its input sites, in input order, for every variant
                    errors[n] = (_err(out, ref[0]), _err(grads[0], ref[1][0]),
                                 max(_err(a, b) for a, b in zip(grads[1], ref[1][1])))
                else:
                    times[n]["forward"].append(tf)
                    times[n]["fwd_bwd"].append(tb)
                print(f"round {rep}: {n} forward {tf:.3f} s, fwd+bwd {tb:.3f} s", file=sys.stderr, flush=True)
        mem = {}
        if not args.no_memory:
            for n in names:
                cmd = [sys.executable, __file__, "--child", n, "--case", args.case, "--voxels", str(args.voxels),
                       "--channels", ",".join(map(str, case.channels)), "--in-channels", str(case.in_channels),
                       "--norm" if case.norm else "--no-norm"]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                mem[n] = json.loads(out.stdout.strip().splitlines()[-1])
        base = names[0]
        st = {n: {k: stat(v) for k, v in times[n].items()} for n in names}
        for n in names:
            st[n]["backward"] = st[n]["fwd_bwd"] - st[n]["forward"]
        print(f"{net_txt}, {len(idx)} active voxels, {args.stat} of {args.repeats} interleaved repeats, "
              f"torch {torch.__version__}; compiled kernels: {cpu_backend() == 'cpp'}")
        print("| variant | forward s | ratio | backward s | ratio | fwd+bwd s | ratio | pass peak MB | ratio | "
              "max err out / d_in / d_w |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in names:
            m = mem.get(n, {}).get("pass_peak_mb", float("nan"))
            mb = mem.get(base, {}).get("pass_peak_mb", float("nan"))
            e = errors[n]
            cells = [f"{st[n][k]:.3f} | {st[n][k] / st[base][k]:.2f}" for k in ("forward", "backward", "fwd_bwd")]
            print(f"| {n} | {' | '.join(cells)} | {m:.0f} | {m / mb:.2f} | {e[0]:.1e} / {e[1]:.1e} / {e[2]:.1e} |")
    if args.per_layer:
        print(f"\n{net_txt}, {len(idx)} active voxels")
        _per_layer(names, case, tensor_cls, feats, idx, shape, args.repeats)


if __name__ == "__main__":
    main()
