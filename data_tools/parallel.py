"""One way to run a function over segments, in worker processes or in this one, with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def map_segments(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool) -> list[R]:
    """``[fn(x) for x in items]`` in order; with ``workers > 1`` in a process pool (fork where the
    platform has it: workers inherit the imported modules)."""
    results: list[R] = []
    with tqdm(total=len(items), desc=desc, unit="segment", disable=not progress) as bar:
        if workers > 1 and len(items) > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(min(workers, len(items))) as pool:
                for r in pool.imap(fn, items):
                    results.append(r)
                    bar.update()
        else:
            for x in items:
                results.append(fn(x))
                bar.update()
    return results
