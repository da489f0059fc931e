"""OpenMP's wait policy for the command-line entry points, set before torch is imported.

Between two parallel regions an OpenMP thread of libgomp (torch's runtime and the project's compiled
kernels') spins, then sleeps. torch's default spin (300,000 turns, ~3 ms) lets a 2-thread command on 2
cores shared with busy programs burn their time: the demo's training command took 4.1x its idle time
next to two busy processes. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) is fair (1.6x), but the
kernels' many short regions then wake the threads from sleep each time: 1.28x slower idle. A short
spin, ``GOMP_SPINCOUNT=3000`` (~30 us) with the passive policy, keeps torch's idle speed and next to
two busy programs takes about as long as passive (57 s against 55 s; docs/studies/openmp-under-load.md).
OpenMP reads the variables once, when torch loads its runtime, so the entry points call
``prefer_passive_wait()`` before their first torch import. A wait policy the user set is kept with
nothing added (``OMP_WAIT_POLICY=ACTIVE`` restores spinning); a spin count the user set is kept.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"
SPIN_VARIABLE = "GOMP_SPINCOUNT"
SPINS = "3000"


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` and ``GOMP_SPINCOUNT=3000`` unless the policy is set already
    (a spin count already set is kept); False (and nothing set) when torch is loaded."""
    if "torch" in sys.modules:
        return False
    if VARIABLE not in os.environ:
        os.environ[VARIABLE] = "PASSIVE"
        os.environ.setdefault(SPIN_VARIABLE, SPINS)
    return True
