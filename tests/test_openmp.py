"""The entry points' OpenMP wait settings (detector/openmp.py), in fresh interpreters: torch not loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detector.openmp import SPIN_VARIABLE, VARIABLE

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import json, os, sys; from detector.openmp import prefer_passive_wait; r = prefer_passive_wait(); "
         "print(json.dumps([r, os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT')]))")


def _probe(env: dict, code: str = PROBE) -> list:
    base = {k: v for k, v in os.environ.items() if k not in (VARIABLE, SPIN_VARIABLE)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("env, expected", [
    ({}, [True, "PASSIVE", "3000"]),                                   # the default: a short spin, then sleep
    ({"OMP_WAIT_POLICY": "ACTIVE"}, [True, "ACTIVE", None]),            # the user's policy, nothing added
    ({"OMP_WAIT_POLICY": "PASSIVE"}, [True, "PASSIVE", None]),          # pure passive stays pure
    ({"GOMP_SPINCOUNT": "500"}, [True, "PASSIVE", "500"]),              # the user's spin count kept
])
def test_wait_settings(env, expected):
    assert _probe(env) == expected


def test_nothing_set_once_torch_is_loaded():
    code = "import torch\n" + PROBE
    assert _probe({}, code) == [False, None, None]
