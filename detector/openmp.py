"""OpenMP's wait policy for the command-line entry points, set before torch is imported.

With torch's default (threads spin between parallel regions), a 2-thread command on 2 cores shared
with other busy programs loses most of its time to spinning: the demo's training command took 2.65x
its idle time next to two busy processes, against 1.67x with ``OMP_WAIT_POLICY=PASSIVE`` (threads
sleep), which costs ~5% on an idle machine (docs/RESULTS.md, "Fair under load"). OpenMP reads the
variable once, when torch loads its runtime, so the entry points call ``prefer_passive_wait()`` before
their first torch import; a value the user set is kept (``OMP_WAIT_POLICY=ACTIVE`` restores spinning).
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless set already; False (and nothing set) when torch is loaded."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault(VARIABLE, "PASSIVE")
    return True
