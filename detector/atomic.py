"""Atomic file writes: nothing already written is lost or left half-written.

A file is written under a temporary name in its destination folder, flushed to disk, given the
usual permissions, and renamed over the destination only when writing finished without an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.
    For writers that take a file name. The temporary name is hidden (leading dot) and ends in ``.tmp``,
    so that nothing looking for the real files takes it for one (a converter resuming after a kill
    removes such leftovers); ``keep_suffix`` keeps ``path``'s suffix after it for writers that pick the
    format from the name (matplotlib, imageio)."""
    path = Path(path)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """``open(path, mode)`` that appears under ``path`` only once closed without an error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


class AtomicWriter:
    """A file written piece by piece under a temporary name next to ``path``. ``close()`` moves it
    into place; ``abort()`` (or an exception inside a ``with`` block) removes it and leaves ``path``
    untouched. Subclasses add the format (TFRecords, ``metrics_pb2.Objects``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._f = os.fdopen(fd, "wb")

    def _write(self, data: bytes) -> None:
        if self._f is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._f.write(data)

    def close(self) -> None:
        if self._f is None:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.chmod(self._tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """``data`` as indented JSON at ``path``, whole or not at all."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1)
