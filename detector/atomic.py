"""Atomic file writes: nothing already written is lost or left half-written.

A file is written under a temporary name in its destination folder, flushed to disk, given the
usual permissions, and renamed over the destination only when writing finished without an error.
On any failure (also ``ENOSPC`` raised while closing) the temporary file is removed; a write refused
by the machine (full disk, read-only file system, no permission) becomes an ``OutputError`` naming
the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from detector.errors import InputError

#: errno values that say "this machine will not take the write", not "the program is wrong".
_REFUSED = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


class OutputError(InputError):
    """A file or folder the command was asked to write cannot be written (full disk, read-only file
    system, no permission); the message names the path and what to do."""


def output_error(path: str | os.PathLike, exc: OSError, key: str | None = None) -> OutputError:
    """``exc`` as an ``OutputError`` naming ``path`` (and the config ``key`` that gave it) for a refused
    write, or ``exc`` itself for any other error (a bug, reported with its traceback)."""
    if not isinstance(exc, OSError) or exc.errno not in _REFUSED:
        return exc
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "the file system is read-only: write elsewhere"}.get(exc.errno, "write elsewhere")
    where = f"{key}={path}" if key else str(path)
    return OutputError(f"cannot write {where}: {os.strerror(exc.errno)}; {hint}")


@contextlib.contextmanager
def refused_writes(path: str | os.PathLike, key: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` of a refused write inside the block into an ``OutputError`` naming ``path``."""
    try:
        yield
    except OSError as e:
        err = output_error(path, e, key)
        if err is e:
            raise
        raise err from e


def ensure_dir(path: str | os.PathLike, key: str | None = None) -> Path:
    """``mkdir -p path``, and check that files can be created in it; an ``OutputError`` naming the path
    (and the config ``key`` it came from, e.g. ``dst``) otherwise."""
    path = Path(path)
    with refused_writes(path, key):
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise OSError(errno.EROFS if _read_only(path) else errno.EACCES, "not writable", str(path))
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a file that cannot be written: its folder is missing, read-only or not ours."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; name a file in it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: no such folder {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise output_error(path, OSError(errno.EROFS if _read_only(parent) else errno.EACCES, "not writable"))
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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
    with refused_writes(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        err = output_error(path, e) if isinstance(e, OSError) else e
        if err is not e:
            raise err from e
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


class CloseOrAbort:
    """``with`` protocol of a whole-or-nothing writer: ``close()`` when the block ends normally, ``abort()``
    when it raises."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class AtomicWriter(CloseOrAbort):
    """A file written piece by piece under a temporary name next to ``path``. ``close()`` moves it
    into place; ``abort()`` (or an exception inside a ``with`` block) removes it and leaves ``path``
    untouched. Subclasses add the format (TFRecords, ``metrics_pb2.Objects``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = None
        with refused_writes(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._f = os.fdopen(fd, "wb")

    def _write(self, data: bytes) -> None:
        if self._f is None:
            raise ValueError(f"{self.path}: writer is closed")
        try:
            self._f.write(data)
        except OSError as e:
            self.abort()
            err = output_error(self.path, e)
            if err is e:
                raise
            raise err from e

    def close(self) -> None:
        if self._f is None:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.chmod(self._tmp, 0o666 & ~_umask())  # mkstemp makes 0600
            os.replace(self._tmp, self.path)
        except BaseException as e:
            self.abort()
            err = output_error(self.path, e) if isinstance(e, OSError) else e
            if err is not e:
                raise err from e
            raise

    def abort(self) -> None:
        """Remove the temporary file; never raises for the file's own buffered data (a full disk makes
        ``close`` flush and fail with ``ENOSPC``: the file is unlinked all the same)."""
        f, self._f = self._f, None
        try:
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass  # the data is being discarded; the unlink below is what matters
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """``data`` as indented JSON at ``path``, whole or not at all."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1)
