"""scripts/bench/calibration_probe.py: the calibration table of a few generator-3 frames against real labels."""

import importlib.util
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT


def _probe():
    spec = importlib.util.spec_from_file_location("calibration_probe",
                                                  Path(REPO_ROOT) / "scripts" / "bench" / "calibration_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_prints_the_table(capsys):
    probe = _probe()
    if not probe.REAL.is_file():
        pytest.skip(f"no real labels at {probe.REAL}")
    assert probe.main(["--segments", "1", "--frames", "3", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "| VEHICLE | [0, 30) |" in out and "Within bounds:" in out
    assert "vehicles within 30 m, 0-10 / 10-20 / 20-30 m:" in out and "(1 frames)" in out


def test_probe_refuses_bad_input(tmp_path, capsys):
    probe = _probe()
    assert probe.main(["--frames", "3,x"]) == 2
    assert capsys.readouterr().err.strip() == "calibration_probe.py: --frames '3,x': not comma-separated frame indices"
    assert probe.main(["--frames", "40"]) == 2
    assert "indices must lie in 0..39" in capsys.readouterr().err
    bad = tmp_path / "gt.bin"
    bad.write_bytes(b"\xff\xff not a proto")
    assert probe.main(["--real", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"calibration_probe.py: {bad}: not a metrics_pb2.Objects file")
