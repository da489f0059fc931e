"""Cost of the project's CPU sparse convolution against single-threaded spconv (the correct baseline).

A 4-level sparse U-Net (16/32/64/96 channels: submanifold, strided and inverse convolutions,
BatchNorm, ReLU) over ~200k active voxels of a LiDAR-like 0.2 m grid; forward and forward+backward,
rule books included (each pass starts from a fresh tensor, as every frame does).

Timing: every variant in this one process, interleaved repeat by repeat (so that a load change on a
shared machine hits them alike); the median of ``--repeats`` is reported with its ratio to the
baseline. Memory: each variant once more in a fresh child process (the peak resident memory one
forward+backward adds over what the process held before it).
Agreement: outputs and both gradients of every variant against the baseline (max error relative to
the reference's magnitude, as the tests measure it).

    PYTHONPATH=. .venv/bin/python scripts/bench/sparse_conv.py [--voxels 200000] [--repeats 5]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

VARIANTS = {"spconv-1t": ("spconv", 1), "torch-1t": ("torch", 1), "torch-2t": ("torch", 2),
            "cpp-1t": ("cpp", 1), "cpp-2t": ("cpp", 2)}
CHANNELS = (16, 32, 64, 96)


def _make_input(n_voxels: int, seed: int = 0):
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
    feats = torch.from_numpy(rng.standard_normal((len(idx), 4)).astype(np.float32))
    return spconv.SparseConvTensor, feats, torch.from_numpy(idx).contiguous(), list(shape)


def _unet(kind: str, ch=CHANNELS):
    import spconv.pytorch as spconv
    import torch
    from torch import nn

    from detector import ops

    mod = spconv if kind == "spconv" else ops

    class Block(nn.Module):
        def __init__(self, cin, cout, key):
            super().__init__()
            self.conv = mod.SubMConv3d(cin, cout, 3, bias=False, indice_key=key)
            self.norm = nn.BatchNorm1d(cout)

        def forward(self, x):
            x = self.conv(x)
            return x.replace_feature(torch.relu(self.norm(x.features)))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Block(4, ch[0], "s0")
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


def _child(variant: str, n_voxels: int) -> dict:
    """Peak RSS of one forward+backward of one variant, in a fresh process."""
    import torch

    kind, threads = VARIANTS[variant]
    torch.set_num_threads(threads)
    if kind == "spconv":
        from detector.ops import enable_spconv_cpu_backward

        enable_spconv_cpu_backward()
    tensor_cls, feats, idx, shape = _make_input(n_voxels)
    net = _unet(kind)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voxels", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (first: baseline)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-RSS children")
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.voxels)))
        return
    import torch

    from detector.ops import enable_spconv_cpu_backward
    from detector.ops.sparse_conv import cpu_backend

    names = args.variants.split(",")
    enable_spconv_cpu_backward()
    tensor_cls, feats, idx, shape = _make_input(args.voxels)
    nets = {n: _unet(VARIANTS[n][0]) for n in names}
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
            out = subprocess.run([sys.executable, __file__, "--child", n, "--voxels", str(args.voxels)],
                                 capture_output=True, text=True, check=True)
            mem[n] = json.loads(out.stdout.strip().splitlines()[-1])
    base = names[0]
    med = {n: {k: statistics.median(v) for k, v in times[n].items()} for n in names}
    print(f"sparse U-Net ({len(CHANNELS)} levels, {'/'.join(map(str, CHANNELS))} ch), {len(idx)} active voxels, "
          f"median of {args.repeats} interleaved repeats; compiled kernels: {cpu_backend() == 'cpp'}")
    print("| variant | forward s | ratio | fwd+bwd s | ratio | pass peak MB | ratio | max err out / d_in / d_w |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in names:
        m = mem.get(n, {}).get("pass_peak_mb", float("nan"))
        mb = mem.get(base, {}).get("pass_peak_mb", float("nan"))
        e = errors[n]
        print(f"| {n} | {med[n]['forward']:.3f} | {med[n]['forward'] / med[base]['forward']:.2f} | "
              f"{med[n]['fwd_bwd']:.3f} | {med[n]['fwd_bwd'] / med[base]['fwd_bwd']:.2f} | {m:.0f} | {m / mb:.2f} | "
              f"{e[0]:.1e} / {e[1]:.1e} / {e[2]:.1e} |")


if __name__ == "__main__":
    main()
