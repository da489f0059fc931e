"""A normal (non-editable) install works on its own: the configs (the repository's top-level ``configs/``)
ship as package data (``detector/configs``), and the commands run from any folder with the source
checkout neither on ``sys.path`` nor the working directory.

The install goes into a fresh folder with ``pip install --no-deps --no-build-isolation --target`` (the
dependencies, torch included, are this environment's), from a copy of the sources so that the build
leaves nothing in the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_train import TINY
from tests.helpers.paths import REPO_ROOT

SOURCES = ("detector", "data_tools", "configs", "setup.cfg", "setup.py", "pyproject.toml", "README.md", "MANIFEST.in")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        p = Path(REPO_ROOT) / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    site = root / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--quiet", "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.rmtree(src)  # the installed copy must not need its sources
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR", "DETECTOR_DATA_ROOT")}
    env["PYTHONPATH"] = str(site)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_installed_package_carries_its_configs(installed, tmp_path):
    assert (installed / "detector" / "configs" / "train.yaml").is_file()
    assert (installed / "detector" / "configs" / "experiment" / "base" / "waymo.yaml").is_file()
    # the one source tree, configs/ at the repository's top, mapped into the package: nothing else installed
    source = Path(REPO_ROOT) / "configs"
    shipped = sorted(p.relative_to(installed / "detector" / "configs") for p in installed.rglob("*.yaml"))
    assert shipped == sorted(p.relative_to(source) for p in source.rglob("*.yaml")) and len(shipped) > 30
    assert not (installed / "configs").exists()
    # the CPU kernels' source: the loader names a build by its hash (the slow half trains through it)
    assert (installed / "detector" / "ops" / "csrc" / "sparse_conv_cpu.cpp").is_file()
    r = _run(installed, tmp_path, "-c", "import sys, detector, data_tools; "
             "print(detector.__file__); print(data_tools.__file__); print(detector.CONFIG_DIR); print(sys.path)")
    assert r.returncode == 0, r.stderr[-2000:]
    det, tools, config_dir, path = r.stdout.splitlines()
    assert det.startswith(str(installed)) and tools.startswith(str(installed)), r.stdout
    assert config_dir == str(installed / "detector" / "configs")
    assert REPO_ROOT not in eval(path)
    r = _run(installed, tmp_path, "-m", "detector.train", "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "experiment: " in r.stdout and "demo_synthetic" in r.stdout and "bench_synthetic_lstm" in r.stdout


@pytest.mark.slow  # ~90 s on the shared 2-core machine: four fresh interpreters importing torch and Lightning
def test_installed_demo_runs_from_another_folder(installed, tmp_path):
    """Synthesize, convert into ./data (the default data root), train one step, evaluate: every output
    under the working folder (./outputs/<command>/...), nothing from the checkout."""
    work = tmp_path / "work"
    work.mkdir()
    r = _run(installed, work, "-m", "data_tools.synthesize", "out_dir=records", "segments=1", "val_segments=1",
             "frames=3", "workers=1", "progress=false", "top_height=32", "top_width=256")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(installed, work, "-m", "data_tools.convert_waymo", "src=records", "dst=data/synthetic", "workers=1",
             "progress=false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "data" / "synthetic" / "validation").is_dir()

    r = _run(installed, work, "-m", "detector.train", "experiment=demo_synthetic", "torch_threads=1",
             "data.clip_length=2", "data.stride=2", "trainer.max_epochs=1", "trainer.max_steps=1",
             "trainer.enable_progress_bar=false", "module.validation_metrics=false", "logging.tensorboard=false",
             "logging.plot=false", *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpts = list((work / "outputs" / "train").glob("*/checkpoints/last.ckpt"))
    assert len(ckpts) == 1, list(work.rglob("*"))

    r = _run(installed, work, "-m", "detector.evaluate", "experiment=demo_synthetic", f"ckpt_path={ckpts[0]}",
             "device=cpu", "max_frames=2", "torch_threads=1", *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 frames of split 'validation'" in r.stdout, r.stdout[-2000:]
    assert len(list((work / "outputs" / "evaluate").glob("*/metrics.json"))) == 1


def test_installed_package_reports_its_version(installed, tmp_path):
    """No setup.cfg beside the installed package: the version comes from the install's metadata."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(Path(REPO_ROOT) / "setup.cfg")
    r = _run(installed, tmp_path, "-c", "import detector; print(detector.__version__)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == parser["metadata"]["version"]
