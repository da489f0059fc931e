"""Per-segment claims: two converters writing the same frame store never write the same segment at once.

A job array with a repeated shard, or a re-run started while the first run still goes, gives two
``convert_waymo`` processes (on one machine or on several sharing the file system) the same segment.
Before touching ``dst/<split>/<segment>/`` a converter claims the segment: an exclusive ``flock`` on the
hidden file ``dst/<split>/.<segment>.lock``, which also records who holds it (host, pid, time) for the
other's message. The kernel drops the lock when its holder exits or is killed, so a lock never goes
stale: a claim left by a killed converter is taken over at once (and the segment, found incomplete, is
converted again). The holder removes the file before letting go; a claimer that finds the file it
locked unlinked or replaced starts over, so two processes can never both hold a segment.

``claim_segment(split_dir, segment, wait=False)`` returns a ``Claim`` (a context manager; leaving it
releases the segment) or raises ``SegmentBusy`` naming the holder; ``wait=True`` blocks until the
holder is done. File systems without ``flock`` (some network mounts) fall back to creating the lock
file with ``O_EXCL``; there a claim whose holder on this machine is gone is removed as stale.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path


class SegmentBusy(Exception):
    """Another converter holds the segment's claim; the message names it and the lock file."""


def lock_path(split_dir: str | os.PathLike, segment: str) -> Path:
    return Path(split_dir) / f".{segment}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another converter"
    if not info:
        return "another converter"
    return f"{info.get('host', '?')} pid {info.get('pid', '?')} since {info.get('since', '?')}"


def _me() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()


class Claim:
    """The held claim of one segment; ``release()`` (or leaving the ``with`` block) gives it up."""

    def __init__(self, path: Path, fd: int, flocked: bool) -> None:
        self.path, self._fd, self._flocked = path, fd, flocked

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiter that then gets the lock sees the file is gone
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_segment(split_dir: str | os.PathLike, segment: str, wait: bool = False,
                  poll_s: float = 0.2) -> Claim:
    """Claim ``segment`` of ``split_dir`` (module docstring); ``SegmentBusy`` when held and not ``wait``."""
    path = lock_path(split_dir, segment)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SegmentBusy(f"{path.parent / segment}: being converted by {_holder(path)} "
                                  f"(claim {path})") from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return _claim_exclusive(path, segment, wait, poll_s)
            raise
        try:  # the file locked must still be the one at the path (the last holder unlinks it before unlocking)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, _me())
        return Claim(path, fd, flocked=True)


def _alive_here(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, assume it runs
    try:
        os.kill(int(info.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def _claim_exclusive(path: Path, segment: str, wait: bool, poll_s: float) -> Claim:
    """The fallback without ``flock``: the lock file created with ``O_EXCL``; a stale one removed."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                info = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                info = {}
            if info and not _alive_here(info):
                try:
                    os.unlink(path)  # stale: its holder on this machine is gone
                except FileNotFoundError:
                    pass
                continue
            if not wait:
                raise SegmentBusy(f"{path.parent / segment}: being converted by {_holder(path)} "
                                  f"(claim {path})") from None
            time.sleep(poll_s)
            continue
        os.write(fd, _me())
        return Claim(path, fd, flocked=False)


__all__ = ["Claim", "SegmentBusy", "claim_segment", "lock_path"]
