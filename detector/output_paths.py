"""No output overwrites an input: the one check every entry point makes before it writes.

An output path is compared with each input path after resolving both (``..``, symbolic links, the
working folder) and, where both exist, as files (``os.path.samefile``: also a hard link). A match is an
``OutputError`` naming both config keys, exit status 2, before anything is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from detector.atomic import OutputError

__all__ = ["same_path", "check_not_input"]


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (resolved; the same inode where both exist)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_input(output: str | os.PathLike | None, inputs: Iterable[str | os.PathLike | None], key: str,
                    input_key: str = "input") -> None:
    """Refuse ``output`` (given by the option ``key``) when it is one of ``inputs`` (given by ``input_key``)."""
    if output is None or str(output) == "":
        return
    for inp in inputs:
        if inp is not None and str(inp) != "" and same_path(output, inp):
            same = "" if str(output) == str(inp) else f" (the same file as {input_key}={inp})"
            raise OutputError(f"{key}={output}: this is an input{same} and would be overwritten; write the "
                              f"output elsewhere (the {input_key} is only read)")
