"""The Hydra run folder of every entry point on a full, a read-only and an impossible path: exit status 2,
one line naming the run folder and the errno, nothing left behind (no ``.hydra/``, no empty log), and
Hydra's own writes untouched when the folder is fine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools import convert_waymo, stats, synthesize
from detector import evaluate, predict, train, visualize
from detector.runfolder import PROBE_MARGIN, prepare_run_folder
from tests.helpers.faults import assert_one_line_error, fill, read_only, run_hydra, small_tmpfs

#: entry point -> (main, arguments it needs to compose, its error prefix)
ENTRY_POINTS = {
    "train": (train.main, ["experiment=demo_synthetic"], "train"),
    "evaluate": (evaluate.main, ["experiment=demo_synthetic", "ckpt_path=x.ckpt"], "evaluate"),
    "predict": (predict.main, ["experiment=demo_synthetic", "ckpt_path=x.ckpt", "input=x"], "predict"),
    "convert_waymo": (convert_waymo.main, ["src=x", "dst=y"], "convert_waymo"),
    "stats": (stats.main, ["dst=x"], "stats"),
    "synthesize": (synthesize.main, ["out_dir=x"], "synthesize"),
    "visualize": (visualize.main, ["input=x"], "visualize"),
}


def _run(main, args: list[str], run_dir: Path, capsys) -> tuple[int, str]:
    """The entry point in this process with Hydra's real run folder writes (``.hydra/`` and the log)."""
    code, _, err = run_hydra(main, args, run_dir.parent, capsys, run_dir=run_dir, hydra_files=True)
    return code, err


def _names_folder_and_errno(code, err, run_dir, prefix, errno_name):
    assert_one_line_error(code, err, f"run folder {run_dir}", "hydra.run.dir", errno_name, prefix=prefix)


@pytest.mark.parametrize("name", [n for n in ENTRY_POINTS if n != "visualize"])  # the viewer writes no file there
def test_full_disk_run_folder(name, tmp_path, capsys):
    main, args, prefix = ENTRY_POINTS[name]
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        fill(disk, leave=0)
        run_dir = disk / "outputs" / name / "run"
        code, err = _run(main, args, run_dir, capsys)
        _names_folder_and_errno(code, err, run_dir, prefix, "ENOSPC")
        assert "No space left on device" in err
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # the folders it made are gone again


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_read_only_run_folder(name, tmp_path, capsys):
    main, args, prefix = ENTRY_POINTS[name]
    with read_only(tmp_path / "ro", dirs=("runs",)) as ro:
        run_dir = ro / "runs" / name
        code, err = _run(main, args, run_dir, capsys)
        _names_folder_and_errno(code, err, run_dir, prefix, "EROFS")
        assert [p.name for p in ro.iterdir()] == ["runs"] and not any((ro / "runs").iterdir())


@pytest.mark.parametrize("name", ["train", "stats"])
def test_existing_read_only_run_folder(name, tmp_path, capsys):
    """The folder exists (a rerun into the same folder) but its file system went read-only."""
    main, args, prefix = ENTRY_POINTS[name]
    with read_only(tmp_path / "ro", dirs=("run",)) as ro:
        code, err = _run(main, args, ro / "run", capsys)
        _names_folder_and_errno(code, err, ro / "run", prefix, "EROFS")


@pytest.mark.parametrize("name", ["evaluate", "convert_waymo"])
def test_run_folder_under_a_file(name, tmp_path, capsys):
    main, args, prefix = ENTRY_POINTS[name]
    (tmp_path / "file").write_text("a file, not a folder")
    run_dir = tmp_path / "file" / "run"
    code, err = _run(main, args, run_dir, capsys)
    _names_folder_and_errno(code, err, run_dir, prefix, "ENOTDIR")
    assert (tmp_path / "file").read_text() == "a file, not a folder"


def test_unwritable_run_folder_for_a_user(tmp_path):
    """Permissions (not root): an existing folder without write permission is refused as EACCES."""
    if os.geteuid() == 0:
        pytest.skip("root writes into any folder; the read-only file system cases cover root")
    d = tmp_path / "locked"
    d.mkdir(mode=0o500)
    with pytest.raises(Exception, match=r"Permission denied \(errno 13, EACCES\)"):
        prepare_run_folder(d / "run", 10)


def test_a_disk_with_room_for_less_than_hydra_writes(tmp_path):
    """Some space left, less than the probe: refused before Hydra starts writing, nothing left."""
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=PROBE_MARGIN // 2)
        with pytest.raises(Exception, match="ENOSPC"):
            prepare_run_folder(disk / "a" / "b", PROBE_MARGIN)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_a_good_run_folder_gets_hydras_files(tmp_path, capsys):
    """The check changes nothing when the folder is fine: Hydra's .hydra files and the log are there, no probe."""
    run_dir = tmp_path / "run"
    code, err = _run(stats.main, [f"dst={tmp_path / 'no_store'}"], run_dir, capsys)
    assert code == 2 and "no_store" in err  # the command itself ran (and refused the missing store)
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert (run_dir / "stats.log").is_file()
    assert not [p for p in run_dir.iterdir() if "probe" in p.name]


def test_full_disk_from_the_command_line(tmp_path):
    """The real command in a fresh process: exit 2 and one line, no traceback."""
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        fill(disk, leave=0)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("HYDRA_FULL_ERROR", None)
        r = subprocess.run([sys.executable, "-m", "detector.evaluate", "experiment=demo_synthetic", "ckpt_path=x",
                            f"hydra.run.dir={disk / 'run'}"], capture_output=True, text=True, env=env, timeout=120)
        assert_one_line_error(r.returncode, r.stderr, f"run folder {disk / 'run'}", "errno 28, ENOSPC",
                              prefix="evaluate")
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
