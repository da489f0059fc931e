"""What the benchmarks of scripts/bench/ share: the repository on the import path, one-core runs, timing a
function or a command, peak memory, the machine's load, and writing a report (JSON and a markdown table).

Torch-free and numpy-free, so a benchmark can import it before it pins the thread counts. A benchmark puts
the repository on the import path first (run as ``python scripts/bench/X.py`` only its own folder is there):

    ROOT = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(ROOT))
    from scripts.bench._harness import one_thread   # noqa: E402
    one_thread()                                    # before numpy / torch load
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: the repository root (scripts/bench/ is two levels below it)
REPO = Path(__file__).resolve().parents[2]

#: the thread-count variables of the OpenMP, OpenBLAS and MKL runtimes
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread() -> None:
    """Pin numpy's and torch's runtimes to one thread (frames/s is then per core). Call it before numpy or
    torch is imported: the runtimes read the variables once, when they load."""
    loaded = [m for m in ("numpy", "torch") if m in sys.modules]
    if loaded:
        raise RuntimeError(f"one_thread() after {', '.join(loaded)} was imported: the thread count is already fixed")
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"


def best_of(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """The shortest of ``repeats`` calls of ``fn``, in seconds of ``clock`` (wall time by default;
    ``time.process_time`` for CPU time), the least disturbed by other jobs."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: expected at least 1")
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def timed_command(cmd: Sequence[str], *, env: dict[str, str] | None = None, unset: Sequence[str] = (),
                  cwd: Path = REPO, timeout: float | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``cmd`` (output captured) and return its wall time in seconds with the finished process. The
    command gets this process's environment without the variables in ``unset``, with ``env`` added. A command
    that fails raises ``RuntimeError`` with the end of its output, so a benchmark never reports the time of a
    crash."""
    full_env = {**{k: v for k, v in os.environ.items() if k not in unset}, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} after {seconds:.1f} s:\n{tail}")
    return seconds, proc


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children, the largest of them), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def load_average() -> str:
    """The 1/5/15-minute load averages, for the report: timings on a shared machine are read against it."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; every row must have the header's width."""
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells, the header {len(header)}: {row!r}")
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: Path, data: dict | list, markdown: str | None = None) -> None:
    """Write ``data`` as JSON to ``out`` and, if given, ``markdown`` beside it (``out`` with ``.md``); each
    file atomically, so an interrupted benchmark leaves its previous report whole."""
    from detector.atomic import atomic_open, write_json_atomic

    out = Path(out)
    write_json_atomic(out, data)
    if markdown is not None:
        with atomic_open(out.with_suffix(".md"), "w") as f:
            f.write(markdown.rstrip() + "\n")


def child_json(cmd: Sequence[str], **kwargs) -> dict:
    """Run a measuring child process (``timed_command``'s arguments) that prints its result as JSON on its last
    line of output, and return that result: how a benchmark measures in a fresh process (peak memory, a
    runtime that must not share this one's state)."""
    _, proc = timed_command(cmd, **kwargs)
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise RuntimeError(f"{' '.join(cmd)}: no JSON on its last line of output:\n{proc.stdout[-2000:]}") from exc
