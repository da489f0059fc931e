"""The project's error family for what a user can act on, and the one place each entry point reports it.

- ``InputError``: bad input (a file, a record, a frame, a config key or value, a checkpoint). Raised
  where the input is read, with a message that names the culprit and says what to do.
- ``UnavailableError``: something this machine or installation lacks (a display, a renderer).

Both derive from ``ReportedError``; an entry point wrapped in ``user_errors`` prints such an error as
one line and exits with status 2. Anything else is a bug: it propagates with its traceback (exit 1).
"""

from __future__ import annotations

import functools
import sys


class ReportedError(Exception):
    """An error the user can act on: reported as one line, exit status 2."""


class InputError(ReportedError, ValueError):
    """Bad input from the user; the message names the file, record, frame or config key and what to fix."""


class UnavailableError(ReportedError, RuntimeError):
    """Something this machine or installation lacks (a display server, a renderer, an optional package)."""


#: The name the entry points used before the family had a base; the same class.
UserError = InputError


def one_line(error: ReportedError) -> str:
    """The error's message; for one re-raised from a DataLoader worker (whose message torch prefixes with
    the worker's traceback) the original message only, so that the user still sees one line."""
    msg = str(error)
    if "Original Traceback" in msg:
        last = msg.rstrip().splitlines()[-1]
        name = type(error).__name__
        msg = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return msg


def user_errors(fn=None, *, prefix: str = "error", returns: bool = False):
    """Decorate an entry point: a ``ReportedError`` prints ``"<prefix>: <message>"`` on stderr and exits
    with status 2 (``returns=True``: the function returns 2, for ``main(argv) -> int`` entry points)."""

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            try:
                return f(*args, **kwargs)
            except ReportedError as e:
                print(f"{prefix}: {one_line(e)}", file=sys.stderr)
                if returns:
                    return 2
                sys.exit(2)

        return wrapper

    return decorate(fn) if fn is not None else decorate
