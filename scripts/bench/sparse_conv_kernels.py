"""The compiled sparse-convolution kernels alone, one build against another, on a benchmark input's map.

Calls ``neighbour_conv`` (forward; also the input gradient's kernel) and ``map_weight_grad`` (weight
gradient) of two builds of ``detector/ops/csrc/sparse_conv_cpu.cpp`` in one process, interleaved, on the
3x3x3 submanifold map of ``scripts/bench/sparse_conv.py``'s input, for the given layer widths. Times are
the CPU time of the process (one thread by default: on a shared machine it does not count the time
other processes hold the core), minimum of ``--repeats`` twice over; results of the two builds are
compared (max error relative to the old build's magnitude).

    # keep a copy of the old build first, e.g. cp -r detector/ops/_build/detector_sparse_cpu_* /tmp/old_build
    PYTHONPATH=. .venv/bin/python scripts/bench/sparse_conv_kernels.py --old /tmp/old_build/*.so \\
        --case surface --voxels 190000 --widths 5x24,24x24,48x48,96x96 --what fwd,dw
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import best_of  # noqa: E402


def _load_so(path: Path):
    name = path.name.split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ValueError(f"not a loadable extension: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_input(case: str, voxels: int):
    spec = importlib.util.spec_from_file_location("bench_sparse_conv", ROOT / "scripts" / "bench" / "sparse_conv.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    make = bench._surface_input if case == "surface" else bench._make_input
    _, _, idx, shape = make(voxels)
    return idx, shape


def _cpu_min(fn, repeats: int) -> float:
    return best_of(fn, repeats, clock=time.process_time)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the other build's extension (.so)")
    ap.add_argument("--case", choices=["surface", "scatter"], default="surface")
    ap.add_argument("--voxels", type=int, default=190_000)
    ap.add_argument("--widths", default="5x24,24x24,48x24,48x48,96x96", help="c_in x c_out, comma-separated")
    ap.add_argument("--what", default="fwd,dw", help="fwd (neighbour_conv), dw (map_weight_grad)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        widths = [tuple(int(v) for v in w.split("x")) for w in args.widths.split(",")]
    except ValueError:
        print(f"sparse_conv_kernels.py: --widths {args.widths!r}: expected e.g. 5x24,48x48", file=sys.stderr)
        raise SystemExit(2) from None
    if not args.old.is_file():
        print(f"sparse_conv_kernels.py: --old {args.old}: no such file", file=sys.stderr)
        raise SystemExit(2)
    import torch

    from detector.ops import cpu_kernels

    torch.set_num_threads(args.threads)
    old, new = _load_so(args.old), cpu_kernels.load()
    if new is None:
        print("sparse_conv_kernels.py: this checkout's kernels are not built (python -m detector.ops.cpu_kernels)",
              file=sys.stderr)
        raise SystemExit(2)
    idx, shape = _bench_input(args.case, args.voxels)
    nbr, _ = new.submanifold_rulebook(idx, shape, [3, 3, 3], [1, 1, 1])
    print(f"{args.case} input: {len(idx)} rows, {(nbr >= 0).sum().item() / len(idx):.1f} pairs a row; "
          f"old {args.old.name}, new {cpu_kernels.module_name()}; {args.threads} thread(s), CPU time, "
          f"min of {args.repeats} (twice, interleaved)")
    print("| c_in -> c_out | kernel | old ms | new ms | new / old | max rel. difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    gen = torch.Generator().manual_seed(0)
    for ci, co in widths:
        x = torch.randn(len(idx), ci, generator=gen)
        grad = torch.randn(len(idx), co, generator=gen)
        w = torch.randn(nbr.shape[1], ci, (co + 7) // 8 * 8, generator=gen)
        w[:, :, co:] = 0
        for what in args.what.split(","):
            if what == "fwd":
                def run(m, x=x, w=w, co=co):
                    return m.neighbour_conv(x, nbr, w, co)
            elif what == "dw":
                def run(m, x=x, grad=grad):
                    return m.map_weight_grad(x, grad, nbr)
            else:
                print(f"sparse_conv_kernels.py: --what {what!r}: expected fwd or dw", file=sys.stderr)
                raise SystemExit(2)
            a, b = run(old), run(new)
            diff = ((a - b).abs().max() / a.abs().max().clamp(min=1e-30)).item()
            t_old = t_new = float("inf")
            for _ in range(2):
                t_old = min(t_old, _cpu_min(lambda: run(old), args.repeats))
                t_new = min(t_new, _cpu_min(lambda: run(new), args.repeats))
            print(f"| {ci} -> {co} | {what} | {t_old * 1e3:.1f} | {t_new * 1e3:.1f} | {t_new / t_old:.2f} | "
                  f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
