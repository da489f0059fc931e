"""User-facing errors of the command-line entry points: one clear message, no traceback."""

from __future__ import annotations

import functools
import os
import sys
import zipfile
from pathlib import Path

from detector.data.frame import FrameFormatError
from detector.data.frame_store import FrameStoreError
from detector.data.tfrecord import RecordError
from detector.eval.submission import SubmissionError


class UserError(RuntimeError):
    """Bad input from the user (a path, a checkpoint, a config value); the message says what to fix."""


#: Exceptions that mean bad input rather than a bug: reported as one line, exit status 2.
REPORTED = (UserError, FrameStoreError, FrameFormatError, RecordError, SubmissionError, FileNotFoundError)


def user_errors(fn):
    """Decorate a Hydra task function: known bad-input errors print one message and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except REPORTED as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """A readable Lightning checkpoint, or a UserError naming the path."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    if not zipfile.is_zipfile(p):
        raise UserError(f"{p}: not a torch checkpoint (not a zip archive)")
    return p
