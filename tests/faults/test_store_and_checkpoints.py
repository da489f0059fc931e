"""Faults in what evaluate, stats and visualize read (frame files, checkpoints) and where evaluate
writes (a full or read-only disk): one line naming the file, exit status 2, nothing half-written."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from data_tools import stats
from detector import evaluate
from detector.checkpoints import load_checkpoint, load_detector
from detector.data.frame import Frame, FrameFormatError
from detector.errors import InputError
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.faults import (
    TINY_MODEL,
    assert_one_line_error,
    fill,
    flip_bytes,
    leftovers,
    read_only,
    run_hydra,
    save_tiny_checkpoint,
    small_tmpfs,
    tiny_model_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(store, checkpoint): one training and one validation segment of 4 frames; a tiny model's checkpoint."""
    root = tmp_path_factory.mktemp("faults_store")
    _, store = make_tiny_dataset(root, segments=1, frames=4, seed=5, val_segments=1, top_width=512)
    return store, save_tiny_checkpoint(root / "tiny.ckpt")


def _damaged_store(store: Path, tmp_path: Path, how: str = "bit_flip") -> tuple[Path, Path]:
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    frame = next((dst / "validation").iterdir()) / "0002.npz"
    if how == "bit_flip":
        flip_bytes(frame, frame.stat().st_size // 2, 4)
    else:
        frame.write_bytes(frame.read_bytes()[:1000])
    return dst, frame


def _evaluate_args(store: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["experiment=demo_synthetic", f"data.root={store}", f"ckpt_path={ckpt}", "device=cpu", *TINY_MODEL, *extra]


@pytest.mark.parametrize("how", ["bit_flip", "truncated"])
def test_damaged_frame_file_is_named_on_load(tiny, tmp_path, how):
    dst, frame = _damaged_store(tiny[0], tmp_path, how)
    with pytest.raises(FrameFormatError, match=f"{frame}: damaged frame file") as e:
        Frame.load_npz(frame)
    assert "convert_waymo" in str(e.value)


def test_stats_on_a_damaged_store(tiny, tmp_path, capsys):
    dst, frame = _damaged_store(tiny[0], tmp_path)
    code, out, err = run_hydra(stats.main, [f"dst={dst}"], tmp_path, capsys)
    assert_one_line_error(code, err, str(frame), "damaged frame file", prefix="stats")


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluate_on_a_damaged_store(tiny, tmp_path, capsys, workers):
    """Also when the frame is read in a DataLoader worker (whose error torch re-raises with a traceback)."""
    dst, frame = _damaged_store(tiny[0], tmp_path)
    code, out, err = run_hydra(evaluate.main, _evaluate_args(dst, tiny[1], f"data.num_workers={workers}"),
                               tmp_path, capsys)
    assert_one_line_error(code, err, str(frame), "damaged frame file", prefix="evaluate")
    assert not leftovers(tmp_path) and not (tmp_path / "hydra_run" / "predictions.bin").exists()


def test_visualize_on_a_damaged_store(tiny, tmp_path, capsys):
    from detector import visualize

    dst, frame = _damaged_store(tiny[0], tmp_path)
    code, out, err = run_hydra(visualize.main, [f"input={frame.parent}", "headless=true", "renderer=matplotlib",
                                                f"out={tmp_path / 'v.gif'}"], tmp_path, capsys)
    assert_one_line_error(code, err, str(frame), prefix="visualize")
    assert not (tmp_path / "v.gif").exists() and not leftovers(tmp_path)


def test_checkpoint_with_16_flipped_bytes_in_a_weight_is_refused(tiny, tmp_path):
    ckpt = tmp_path / "flipped.ckpt"
    shutil.copy(tiny[1], ckpt)
    with zipfile.ZipFile(ckpt) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor's storage
    # the member's data starts after its local header: 30 bytes + name + extra
    with open(ckpt, "rb") as f:
        f.seek(info.header_offset + 26)
        n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    flip_bytes(ckpt, info.header_offset + 30 + n + m + info.file_size // 2, 16)
    with pytest.raises(InputError, match=rf"{ckpt}: damaged checkpoint: .*{info.filename} fails its CRC-32"):
        load_checkpoint(ckpt)
    with pytest.raises(InputError, match="damaged checkpoint"):
        load_detector(tiny_model_config(), ckpt)


def test_truncated_checkpoint_is_refused(tiny, tmp_path, capsys):
    ckpt = tmp_path / "cut.ckpt"
    ckpt.write_bytes(tiny[1].read_bytes()[: tiny[1].stat().st_size // 2])
    code, out, err = run_hydra(evaluate.main, _evaluate_args(tiny[0], ckpt), tmp_path, capsys)
    assert_one_line_error(code, err, str(ckpt), prefix="evaluate")


def test_checkpoint_of_another_model_names_the_differing_keys(tiny, tmp_path, capsys):
    code, out, err = run_hydra(evaluate.main, _evaluate_args(tiny[0], tiny[1], "model.temporal.cell=gru"),
                               tmp_path, capsys)
    assert_one_line_error(code, err, str(tiny[1]), "temporal.cell: 'lstm' in the checkpoint vs 'gru' configured",
                          prefix="evaluate")


def test_evaluate_on_a_full_disk_leaves_nothing(tiny, tmp_path, capsys):
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=0)
        code, out, err = run_hydra(evaluate.main, _evaluate_args(tiny[0], tiny[1]), tmp_path, capsys,
                                   run_dir=disk / "run")
        assert_one_line_error(code, err, f"run folder {disk / 'run'}", "No space left on device", prefix="evaluate")
        assert not leftovers(disk), leftovers(disk)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # refused before Hydra's log (runfolder.py)


def test_predict_into_a_read_only_folder(tiny, tmp_path, capsys):
    """(Hydra's own run dir cannot be read-only: Hydra opens its log there first; ``out=`` can.)"""
    from detector import predict

    records = tiny[0].parent / "records"
    with read_only(tmp_path / "ro") as ro:
        code, out, err = run_hydra(predict.main, [f"input={records}", f"out={ro / 'sub' / 'predictions.bin'}",
                                                  *_evaluate_args(tiny[0], tiny[1])], tmp_path, capsys)
        assert_one_line_error(code, err, str(ro / "sub"), "Read-only file system", prefix="predict")


def test_evaluate_works_on_the_intact_store(tiny, tmp_path, capsys):
    """The control: the same command on the undamaged files succeeds and writes everything whole."""
    code, out, err = run_hydra(evaluate.main, _evaluate_args(tiny[0], tiny[1]), tmp_path, capsys)
    assert code == 0, err
    run = tmp_path / "hydra_run"
    assert {"predictions.bin", "ground_truth.bin", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert not leftovers(run)
