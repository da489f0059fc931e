"""Fault injection for the tests: small full or read-only file systems, damaged files, the real
entry points run in this process (exit status, stdout, stderr), tiny checkpoints.

    with small_tmpfs(tmp_path / "disk", size="64k") as disk: ...   # skips unless root can mount
    with read_only(tmp_path / "ro") as ro: ...
    code, out, err = run_hydra(convert_waymo.main, ["src=...", "dst=..."], tmp_path, capsys)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from detector import CONFIG_DIR

#: Overrides for a small, fast model (the real configs, narrower), as in tests/cli/test_train.py.
TINY_MODEL = ["model.backbone.channels=[8,16]", "model.backbone.out_channels=8", "model.temporal.hidden_channels=8",
              "model.temporal.gate_channels=8", "model.head.channels=8", "model.head.score_threshold=[0.01,0.01,0.01]"]


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount ({' '.join(args)}): {r.stderr.strip()}")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k", read_only: bool = False, dirs: tuple[str, ...] = ()) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (a full disk in a few writes) holding the folders ``dirs``;
    ``read_only`` remounts it ro. Skips the test when not root or when mounting fails (a container
    without the capability)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    try:
        for d in dirs:
            (path / d).mkdir(parents=True)
        if read_only:
            _mount(["-o", "remount,ro", str(path)])
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path, dirs: tuple[str, ...] = ()) -> Iterator[Path]:
    """A read-only folder at ``path`` holding the empty folders ``dirs`` (chmod does not stop root: a
    read-only tmpfs)."""
    with small_tmpfs(path, "64k", read_only=True, dirs=dirs) as p:
        yield p


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the file system of ``disk`` until about ``leave`` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(free - leave, 0))
            f.flush()
        except OSError:
            pass


def flip_bytes(path: Path, at: int, count: int = 1) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(at, at + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an atomic write left (hidden ``.*.tmp``, ``*.partial``)."""
    return sorted(p for p in folder.rglob("*")
                  if p.name.startswith(".") and ".tmp" in p.name or p.name.endswith(".partial"))


def run_hydra(main, args: list[str], tmp_path: Path, capsys, run_dir: Path | None = None,
              hydra_files: bool = False) -> tuple[int, str, str]:
    """A Hydra entry point (``detector.train.main`` ...) run here with ``args``: (exit status, stdout,
    stderr). An exception that escapes it (a traceback for the user) fails the test. The Hydra run dir
    (where evaluate and train write) is ``run_dir`` or ``tmp_path/hydra_run``; Hydra's own ``.hydra/``
    files are written there only with ``hydra_files``."""
    saved = sys.argv
    sys.argv = ["prog", *args, f"hydra.run.dir={run_dir or tmp_path / 'hydra_run'}",
                *([] if hydra_files else ["hydra.output_subdir=null"])]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(code: int, err: str, *named: str, prefix: str = "error") -> None:
    """Exit status 2 and one error line ``<prefix>: ...`` naming every string of ``named``; no traceback
    and no other line but progress bars and warnings."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{prefix}:")]
    others = [line for line in lines if line not in errors and not line.startswith("warning") and "\r" not in line
              and "|" not in line]
    assert len(errors) == 1 and not others, err
    for s in named:
        assert s in errors[0], (s, errors[0])


def tiny_model_config(experiment: str = "demo_synthetic") -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *TINY_MODEL])
    return OmegaConf.to_container(cfg.model, resolve=True)


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint of the tiny demo model (random weights) in the layout ``detector.train`` writes."""
    from detector.models import instantiate_model

    cfg = tiny_model_config()
    torch.manual_seed(seed)
    model = instantiate_model(cfg)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_cfg": cfg}}, path)
    return path
