"""``scripts/setup.sh --dry-run``: what set-up would remove and install, resolved by pip's own
``--dry-run``, nothing changed. On a machine that says it has CUDA (a stand-in ``nvidia-smi`` on PATH)
the CPU builds of torch, spconv, cumm and Open3D go and the CUDA ones come; on this CPU machine,
set up already, nothing but the project itself."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

SETUP = str(Path(REPO_ROOT) / "scripts" / "setup.sh")


def _freeze() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                          check=True).stdout


def _dry_run(tmp_path: Path, cuda: bool) -> tuple[str, dict[str, str], list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "SETUP_FLAVOR"}
    env["SETUP_VENV"] = str(Path(sys.executable).parents[1])
    if cuda:  # a machine that says it has a GPU
        stand_in = tmp_path / "bin" / "nvidia-smi"
        stand_in.parent.mkdir()
        stand_in.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-stand-in)'\n")
        stand_in.chmod(0o755)
        env["PATH"] = f"{stand_in.parent}{os.pathsep}{env['PATH']}"
    r = subprocess.run(["bash", SETUP, "--dry-run"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout
    installs = dict(re.findall(r"^\[setup\] would install (\S+) (\S+)$", out, re.M))
    removed = [name for line in re.findall(r"^\[setup\] would uninstall (.+?) \(", out, re.M) for name in line.split()]
    return out, installs, removed


def _installed(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@pytest.mark.slow
def test_dry_run_on_a_cuda_machine_swaps_the_cpu_builds_for_cuda_ones(tmp_path):
    before = _freeze()
    out, installs, removed = _dry_run(tmp_path, cuda=True)
    assert "[setup] flavour: cuda" in out
    # the CUDA builds: torch without a +cpu label (its CUDA libraries with it), spconv/cumm for CUDA, Open3D
    assert installs["torch"] == "2.13.0" and "+cpu" not in installs["torch"]
    assert any(n.startswith("nvidia-") for n in installs), installs
    assert installs["spconv-cu126"] == "2.3.8" and installs["open3d"] == "0.20.0"
    assert any(n.startswith("cumm-cu126") for n in installs), installs
    # the CPU builds that share their package folders go first (those installed here)
    for cpu_dist in ("spconv", "cumm", "open3d-cpu", "torch"):
        if _installed(cpu_dist):
            assert cpu_dist in removed, (cpu_dist, removed)
    assert not {"spconv", "cumm", "open3d-cpu"} & set(installs)
    assert "would build the compiled CPU sparse-convolution kernels" in out  # on CUDA machines too
    assert _freeze() == before, "a dry run changed the environment"


def test_dry_run_on_this_cpu_machine_changes_nothing(tmp_path):
    if _installed("torch") is None or "+cpu" not in (_installed("torch") or ""):
        pytest.skip("needs the CPU set-up of this machine")
    before = _freeze()
    out, installs, removed = _dry_run(tmp_path, cuda=False)
    assert "[setup] flavour: cpu" in out
    assert removed == [] and "torch" not in installs
    assert not {"spconv-cu126", "open3d", "cumm-cu126"} & set(installs)
    assert _freeze() == before
