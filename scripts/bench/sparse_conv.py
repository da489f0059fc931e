"""Cost of the project's CPU sparse convolution against single-threaded spconv (the correct baseline).

A 3-level sparse U-Net over ~100k active voxels of a Waymo-like 0.2 m grid; forward and
forward+backward. Each variant runs in a fresh child process (so peak memory is its own); the parent
prints a table with ratios against the baseline, all from this one command:

    .venv/bin/python scripts/bench/sparse_conv.py [--voxels 100000] [--repeats 5]

Variants: ``spconv-1t`` (spconv's own CPU kernels, 1 thread, backward made to run with
``enable_spconv_cpu_backward``), ``ours-1t`` and ``ours-2t`` (detector.ops, 1 and 2 threads).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = {"spconv-1t": ("spconv", 1), "ours-1t": ("ours", 1), "ours-2t": ("ours", 2)}


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
    flat = np.unique(((z * shape[1] + y) * shape[2] + x))[:n_voxels]
    rng.shuffle(flat)
    flat = np.sort(flat)
    zi, rem = np.divmod(flat, shape[1] * shape[2])
    yi, xi = np.divmod(rem, shape[2])
    idx = np.stack([np.zeros_like(zi), zi, yi, xi], 1).astype(np.int32)
    feats = torch.from_numpy(rng.standard_normal((len(idx), 4)).astype(np.float32))
    return spconv.SparseConvTensor, feats, torch.from_numpy(idx).contiguous(), list(shape)


def _unet(kind: str):
    import spconv.pytorch as spconv
    import torch
    from torch import nn

    from detector import ops

    mod = ops if kind == "ours" else spconv

    class Block(nn.Module):
        def __init__(self, cin, cout, key):
            super().__init__()
            self.conv = mod.SubMConv3d(cin, cout, 3, bias=False, indice_key=key)
            self.norm = nn.BatchNorm1d(cout)

        def forward(self, x):
            x = self.conv(x)
            return x.replace_feature(torch.relu(self.norm(x.features)))

    class UNet(nn.Module):
        def __init__(self, ch=(16, 32, 64)):
            super().__init__()
            self.stem = Block(4, ch[0], "s0")
            self.enc = nn.ModuleList()
            self.down = nn.ModuleList()
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            for i in range(len(ch) - 1):
                self.down.append(mod.SparseConv3d(ch[i], ch[i + 1], 3, stride=2, padding=1, bias=False, indice_key=f"d{i}"))
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

    return UNet()


def _child(variant: str, n_voxels: int, repeats: int) -> dict:
    import torch

    kind, threads = VARIANTS[variant]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if kind == "spconv":
        from detector.ops import enable_spconv_cpu_backward

        enable_spconv_cpu_backward()
    tensor_cls, feats, idx, shape = _make_input(n_voxels)
    net = _unet(kind)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run(backward: bool) -> float:
        f = feats.clone().requires_grad_(backward)
        t0 = time.perf_counter()
        out = net(tensor_cls(f, idx, shape, 1))
        if backward:
            out.features.square().mean().backward()
        return time.perf_counter() - t0

    run(True)  # warm-up
    fwd = min(run(False) for _ in range(repeats))
    fb = min(run(True) for _ in range(repeats))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "voxels": int(len(idx)), "forward_s": fwd, "fwd_bwd_s": fb,
            "peak_rss_mb": rss1 / 1024, "peak_rss_over_input_mb": (rss1 - rss0) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voxels", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.voxels, args.repeats)))
        return
    rows = []
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--child", v, "--voxels", str(args.voxels),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"sparse U-Net (3 levels, 16/32/64 ch), {base['voxels']} active voxels, best of {args.repeats}")
    print("| variant | forward s | ratio | fwd+bwd s | ratio | peak RSS MB | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['forward_s']:.3f} | {r['forward_s'] / base['forward_s']:.2f} | "
              f"{r['fwd_bwd_s']:.3f} | {r['fwd_bwd_s'] / base['fwd_bwd_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
