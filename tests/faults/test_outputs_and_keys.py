"""Outputs never overwrite inputs (metrics, predict, convert); config values refused by the key the
user sets (train, evaluate, synthesize); one run folder holds one evaluation; a segment given twice
to predict; every command's error line starts with its own name."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_tools import convert_waymo, synthesize
from detector import evaluate, metrics, predict, train
from detector.config import register_resolvers
from detector.eval.submission import detections_to_objects, ground_truth_to_objects, write_objects
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.faults import (
    TINY_MODEL,
    assert_one_line_error,
    leftovers,
    read_only,
    run_hydra,
    save_tiny_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = "1234_100_000_120_000"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(records, store, checkpoint): one training and one validation segment of 3 frames."""
    register_resolvers()
    root = tmp_path_factory.mktemp("faults_outputs")
    records, store = make_tiny_dataset(root, segments=1, frames=3, seed=13, val_segments=1, top_width=256)
    return records, store, save_tiny_checkpoint(root / "tiny.ckpt")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# --- metrics -------------------------------------------------------------------------------------------------


@pytest.fixture
def scored(tmp_path):
    boxes = np.array([[5.0 + 6 * i, 2.0, 0.8, 4.5, 1.9, 1.6, 0.1 * i] for i in range(3)])
    gt, pred = tmp_path / "gt.bin", tmp_path / "pred.bin"
    write_objects(gt, ground_truth_to_objects(CONTEXT, 1_000_000, boxes, np.ones(3), np.full(3, 50), np.ones(3)))
    write_objects(pred, detections_to_objects(CONTEXT, 1_000_000, boxes, np.full(3, 0.9), np.ones(3)))
    return gt, pred


@pytest.mark.parametrize("option,target", [("--json", "pred"), ("--json", "gt_link"), ("--plot", "gt")])
def test_metrics_output_onto_an_input_is_refused(scored, tmp_path, capsys, option, target):
    gt, pred = scored
    before = {p: _digest(p) for p in scored}
    if target == "gt_link":
        (tmp_path / "link.bin").symlink_to(gt)
        out = tmp_path / "sub" / ".." / "link.bin"
        (tmp_path / "sub").mkdir()
    else:
        out = pred if target == "pred" else gt
    code = metrics.main([str(gt), str(pred), option, str(out)])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, f"{option}={out}", "input", prefix="metrics")
    assert {p: _digest(p) for p in scored} == before


def test_metrics_json_into_a_folder_is_refused(scored, tmp_path, capsys):
    code = metrics.main([*map(str, scored), "--json", str(tmp_path)])
    cap = capsys.readouterr()
    assert_one_line_error(code, cap.err, str(tmp_path), "is a folder", prefix="metrics")
    assert cap.out == ""


# --- predict -------------------------------------------------------------------------------------------------


def _predict_args(tiny, *extra: str) -> list[str]:
    return ["experiment=demo_synthetic", f"ckpt_path={tiny[2]}", "device=cpu", *TINY_MODEL, *extra]


def test_predict_out_onto_its_input_record_is_refused(tiny, tmp_path, capsys):
    record = tmp_path / "seg.tfrecord"
    shutil.copyfile(next((tiny[0] / "validation").glob("*.tfrecord")), record)
    before = _digest(record)
    code, out, err = run_hydra(predict.main, _predict_args(tiny, f"input={record}", f"out={record}"), tmp_path, capsys)
    assert_one_line_error(code, err, f"out={record}", "input", prefix="predict")
    assert _digest(record) == before and not leftovers(tmp_path)


def test_predict_on_a_folder_with_a_segment_twice_is_refused(tiny, tmp_path, capsys):
    folder = tmp_path / "records"
    first = next((tiny[0] / "validation").glob("*.tfrecord"))
    folder.mkdir()
    shutil.copyfile(first, folder / "a.tfrecord")
    shutil.copyfile(first, folder / "b.tfrecord")
    code, out, err = run_hydra(predict.main, _predict_args(tiny, f"input={folder}", f"out={tmp_path / 'p.bin'}"),
                               tmp_path, capsys)
    assert_one_line_error(code, err, str(folder / "a.tfrecord"), str(folder / "b.tfrecord"), "again",
                          prefix="predict")
    assert not (tmp_path / "p.bin").exists()


# --- convert -------------------------------------------------------------------------------------------------


def test_convert_dst_equal_to_src_is_refused(tiny, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(tiny[0], src)
    before = _tree(src)
    code, out, err = run_hydra(convert_waymo.main, [f"src={src}", f"dst={src}/.", "progress=false"], tmp_path, capsys)
    assert_one_line_error(code, err, f"dst={src}/.", "src", prefix="convert_waymo")
    assert _tree(src) == before


# --- train: values that train nothing, values a constructor refuses -------------------------------------------------


@pytest.mark.parametrize("override,named", [
    ("trainer.max_epochs=0", "trainer.max_epochs=0"),
    ("trainer.max_steps=0", "trainer.max_steps=0"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0"),
    ("trainer.limit_train_batches=0.0", "trainer.limit_train_batches=0.0"),
    ("data.point_range=[-40,-40,3,40,40,-3]", "data.point_range=[-40, -40, 3, 40, 40, -3]"),
    ("data.point_range=[1,2,3]", "data.point_range=[1, 2, 3]"),
    ("model.voxelizer.voxel_size=[0.4,0,0.4]", "model.voxelizer.voxel_size=[0.4, 0, 0.4]"),
    ("data.augment.scale=[1.2,0.9]", "data.augment.scale=[1.2, 0.9]"),
    ("data.augment.flip_prob=2", "data.augment.flip_prob=2"),
    ("seed=-1", "seed=-1"),
    ("data.seed=-3", "data.seed=-3"),
])
def test_train_refuses_the_value_by_its_key(tmp_path, capsys, override, named):
    code, out, err = run_hydra(train.main, ["experiment=demo_synthetic", f"data.root={tmp_path / 'none'}", override],
                               tmp_path, capsys)
    assert_one_line_error(code, err, named, f"{named.split('=')[0]}=...", prefix="train")
    assert not (tmp_path / "hydra_run" / "checkpoints").exists()


def test_evaluate_refuses_a_bad_range_by_its_key(tiny, tmp_path, capsys):
    code, out, err = run_hydra(evaluate.main, [*_predict_args(tiny), f"data.root={tiny[1]}",
                                               "data.point_range=[0,0,0,0,0,0]"], tmp_path, capsys)
    assert_one_line_error(code, err, "data.point_range=[0, 0, 0, 0, 0, 0]", prefix="evaluate")


# --- evaluate: one run folder, one evaluation -----------------------------------------------------------------


def test_second_evaluation_into_one_run_folder_is_refused(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    args = [*_predict_args(tiny), f"data.root={tiny[1]}", "data.num_workers=0"]
    code, out, err = run_hydra(evaluate.main, args, tmp_path, capsys, run_dir=run)
    assert code == 0, err
    first = _tree(run)
    assert {"predictions.bin", "ground_truth.bin", "metrics.json"} <= set(first)
    code, out, err = run_hydra(evaluate.main, [*args, "max_frames=1"], tmp_path, capsys, run_dir=run)
    assert_one_line_error(code, err, f"hydra.run.dir={run}", "metrics.json", prefix="evaluate")
    assert _tree(run) == first and json.loads((run / "metrics.json").read_text())


# --- synthesize ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override,named", [
    ("seed=-5", "seed=-5: expected a whole number >= 0"), ("frames=0", "frames=0: expected a whole number >= 1"),
    ("segments=-1", "segments=-1"), ("workers=0", "workers=0"), ("format=v3", "format='v3'"),
    ("noise.pixel_dropout=1.5", "noise.pixel_dropout=1.5"),
])
def test_synthesize_refuses_the_value_by_its_key_and_leaves_nothing(tmp_path, capsys, override, named):
    out_dir = tmp_path / "out"
    code, out, err = run_hydra(synthesize.main, [f"out_dir={out_dir}", "segments=1", "val_segments=0", "frames=2",
                                                 "workers=1", "progress=false", override], tmp_path, capsys)
    assert_one_line_error(code, err, named, prefix="synthesize")
    assert not out_dir.exists()


def test_synthesize_out_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for out_dir in (f, f / "sub"):
        code, out, err = run_hydra(synthesize.main, [f"out_dir={out_dir}", "segments=1", "val_segments=0", "frames=2",
                                                     "workers=1", "progress=false"], tmp_path, capsys)
        assert_one_line_error(code, err, f"out_dir={out_dir}", "a file, not a folder", prefix="synthesize")
    assert f.read_text() == "x"


def test_synthesize_into_a_read_only_folder(tmp_path, capsys):
    with read_only(tmp_path / "ro") as ro:
        code, out, err = run_hydra(synthesize.main, [f"out_dir={ro / 'data'}", "segments=1", "val_segments=0",
                                                     "frames=2", "workers=1", "progress=false"], tmp_path, capsys)
        assert_one_line_error(code, err, f"out_dir={ro / 'data'}", "Read-only file system", prefix="synthesize")


@pytest.mark.parametrize("override,named", [("workers=0", "workers=0"), ("workers=abc", "workers='abc'"),
                                            ("second_return=maybe", "second_return='maybe'")])
def test_convert_refuses_the_value_by_its_key(tiny, tmp_path, capsys, override, named):
    code, out, err = run_hydra(convert_waymo.main, [f"src={tiny[0]}", f"dst={tmp_path / 'dst'}", "progress=false",
                                                    override], tmp_path, capsys)
    assert_one_line_error(code, err, named, prefix="convert_waymo")
    assert not (tmp_path / "dst").exists()
