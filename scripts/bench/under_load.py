"""The demo's training command idle and next to busy programs: how much slower it gets, per setting.

Runs ``python -m detector.train experiment=demo_synthetic`` for ``--steps`` steps (no validation) on a
frame store, first with the machine otherwise idle, then with ``--competitors`` busy processes (each a
pure-Python loop, one core's worth of work) started just before it, for every variant given. Reports
the wall time of each run and its ratio to the same variant's idle run: a fair share on 2 cores with 2
competitors is 2x (3 runnable programs for 2 cores would be 1.5x; the command runs 2 threads).

Variants (``--variants``, comma-separated):
- ``default``: the command as shipped (``OMP_WAIT_POLICY=PASSIVE`` with a short spin,
  ``GOMP_SPINCOUNT``, unless the environment sets the policy: ``detector/openmp.py``);
- ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (threads spin between parallel regions for good; torch's
  default spins ~3 ms, ``spin300000``);
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` alone (threads sleep as soon as a parallel region ends);
- ``spinN`` (any N, e.g. ``spin10000``): ``OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=N``, threads spin N
  times (libgomp: ~100,000 spins a millisecond) before they sleep; torch's own default is ``spin300000``;
- ``threads1``: ``torch_threads=1``;
- ``workers1``: ``data.num_workers=1`` (a DataLoader worker process), with the shipped wait policy;
- ``active_workers1``: both of the previous settings' opposites: spinning threads and a worker.

    PYTHONPATH=. .venv/bin/python scripts/bench/under_load.py --store work/demo/store [--steps 10] \\
        [--variants default,passive,workers1] [--repeats 1]

Why it stays: it chose the OpenMP wait setting the entry points ship (docs/studies/openmp-under-load.md); the
answer depends on the kernels' parallel regions, so it is rerun when the kernels change.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from detector.openmp import SPIN_VARIABLE, VARIABLE  # noqa: E402  (torch-free: the names only)
from scripts.bench._harness import markdown_table, timed_command  # noqa: E402

VARIANTS = {
    "default": ({}, []),
    "active": ({VARIABLE: "ACTIVE"}, []),
    "passive": ({VARIABLE: "PASSIVE"}, []),
    "threads1": ({}, ["torch_threads=1"]),
    "workers1": ({}, ["data.num_workers=1"]),
    "active_workers1": ({VARIABLE: "ACTIVE"}, ["data.num_workers=1"]),
}
BUSY = "import time\nend = time.time() + {secs}\nwhile time.time() < end:\n    pass\n"


def _train(store: str, steps: int, env: dict, overrides: list[str], run_dir: str) -> float:
    cmd = [sys.executable, "-m", "detector.train", "experiment=demo_synthetic", f"data.root={store}",
           f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={run_dir}", *overrides]
    return timed_command(cmd, env=env, unset=(VARIABLE, SPIN_VARIABLE))[0]


def _variant(name: str) -> tuple[dict, list[str]] | None:
    if name in VARIANTS:
        return VARIANTS[name]
    if name.startswith("spin") and name[4:].isdigit():
        return {VARIABLE: "PASSIVE", SPIN_VARIABLE: name[4:]}, []
    return None


def _with_competitors(n: int, fn, secs: float = 3600.0):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(secs=secs)]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them get going
        return fn()
    finally:
        for p in procs:  # only the processes started here
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="frame store with a training split (the demo's)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--competitors", type=int, default=2)
    ap.add_argument("--variants", default="default,passive,threads1,workers1")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    names = args.variants.split(",")
    variants = {n: _variant(n) for n in names}
    unknown = [n for n, v in variants.items() if v is None]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)} and spinN")
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f} on {os.cpu_count()} cores", file=sys.stderr)
    times = {n: {"idle": [], "loaded": []} for n in names}
    with tempfile.TemporaryDirectory(prefix="under_load_") as tmp:
        for rep in range(args.repeats):
            for n in names:
                env, overrides = variants[n]
                idle = _train(args.store, args.steps, env, overrides, f"{tmp}/{n}_{rep}_idle")
                loaded = _with_competitors(args.competitors, functools.partial(
                    _train, args.store, args.steps, env, overrides, f"{tmp}/{n}_{rep}_loaded"))
                times[n]["idle"].append(idle)
                times[n]["loaded"].append(loaded)
                print(f"round {rep}: {n} idle {idle:.1f} s, with {args.competitors} busy {loaded:.1f} s "
                      f"({loaded / idle:.2f}x)", file=sys.stderr, flush=True)
    base = statistics.median(times[names[0]]["idle"])
    print(f"training command, {args.steps} steps of experiment=demo_synthetic (start-up included), "
          f"{args.competitors} busy competitors, median of {args.repeats}")
    rows = []
    for n in names:
        i, lo = statistics.median(times[n]["idle"]), statistics.median(times[n]["loaded"])
        rows.append([n, f"{i:.1f}", f"{i / base:.2f}", f"{lo:.1f}", f"{lo / i:.2f}x"])
    print(markdown_table(["variant", "idle s", "vs first variant idle", "with competitors s", "slowdown"], rows))


if __name__ == "__main__":
    main()
