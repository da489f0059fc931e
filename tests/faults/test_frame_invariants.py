"""Frame invariants checked where frames are read (v1 records, v2 components, the frame store): poses
finite and rigid, timestamps strictly increasing, labels finite with positive sizes and unique ids;
frame files that are not the frames ``segment.json`` lists; segments in two splits or in the wrong one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from waymo_open_dataset import dataset_pb2

from data_tools import stats
from data_tools.convert_waymo import convert
from detector import evaluate, train
from detector.config import register_resolvers
from detector.data import waymo_v2_schema as S
from detector.data.frame import Frame
from detector.data.frame_checks import POSE_TOLERANCE, pose_problem
from detector.data.frame_store import list_segments
from detector.data.tfrecord import iter_records_with_offsets, write_tfrecord
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.faults import TINY_MODEL, assert_one_line_error, leftovers, run_hydra, save_tiny_checkpoint
from tests.helpers.v2 import replace_column, rewrite_component, synth_pair

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(records, store, checkpoint): one training and one validation segment of 6 frames."""
    register_resolvers()
    root = tmp_path_factory.mktemp("faults_invariants")
    records, store = make_tiny_dataset(root, segments=1, frames=FRAMES, seed=11, val_segments=1, top_width=256)
    return records, store, save_tiny_checkpoint(root / "tiny.ckpt")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rewrite(tiny, tmp_path: Path, edit) -> tuple[Path, Path, list[int]]:
    """A copy of the records whose training file is rewritten: ``edit(protos)`` changes the list of
    ``dataset_pb2.Frame`` in place (or returns a new list). Returns (src, the file, record offsets)."""
    src = tmp_path / "src"
    shutil.copytree(tiny[0], src)
    bad = next((src / "training").glob("*.tfrecord"))
    protos = []
    for _, data in iter_records_with_offsets(bad):
        p = dataset_pb2.Frame()
        p.ParseFromString(data)
        protos.append(p)
    protos = edit(protos) or protos
    write_tfrecord(bad, [p.SerializeToString() for p in protos])
    return src, bad, [o for o, _ in iter_records_with_offsets(bad)]


def _failed(results, bad: Path, dst: Path, *named: str) -> None:
    (r,) = [r for r in results if r.job.path == bad]
    assert r.status == "failed", r
    for s in named:
        assert s in r.error, (s, r.error)
    assert not (dst / "training").exists() or not any((dst / "training").iterdir()), "the failed segment left files"
    assert not leftovers(dst)
    assert [x.status for x in results if x.job.path != bad] == ["converted"]


def _scale_pose(p: dataset_pb2.Frame, factor: float) -> None:
    m = np.array(p.pose.transform).reshape(4, 4)
    m[:3, :3] *= factor
    del p.pose.transform[:]
    p.pose.transform.extend(m.ravel().tolist())


# --- poses -----------------------------------------------------------------------------------------------


def test_nan_pose_fails_the_segment_naming_record_and_pose(tiny, tmp_path):
    def edit(protos):
        protos[3].pose.transform[5] = float("nan")

    src, bad, offsets = _rewrite(tiny, tmp_path, edit)
    results = convert(src, tmp_path / "dst")
    _failed(results, bad, tmp_path / "dst", f"{bad}: record 3 at byte offset {offsets[3]}: pose.transform",
            "NaN/inf")
    assert "points with NaN/inf" not in " ".join(w for r in results for w in r.warnings)


@pytest.mark.parametrize("factor,what", [(3.0, "not orthonormal"), (-1.0, "det -1")])
def test_non_rigid_pose_fails_the_segment(tiny, tmp_path, factor, what):
    src, bad, offsets = _rewrite(tiny, tmp_path, lambda protos: _scale_pose(protos[2], factor))
    _failed(convert(src, tmp_path / "dst"), bad, tmp_path / "dst",
            f"record 2 at byte offset {offsets[2]}: pose.transform", what, f"tolerance {POSE_TOLERANCE:g}")


def test_pose_tolerance_is_what_the_docs_say():
    pose = np.eye(4)
    pose[:3, :3] *= 1 + POSE_TOLERANCE / 4
    assert pose_problem(pose) is None
    pose[:3, :3] = np.eye(3) * (1 + 10 * POSE_TOLERANCE)
    assert "not orthonormal" in pose_problem(pose)
    pose = np.eye(4)
    pose[3, 0] = 1.0
    assert "last row" in pose_problem(pose)


# --- timestamps ------------------------------------------------------------------------------------------


def test_repeated_frame_fails_naming_record_and_timestamp(tiny, tmp_path):
    def edit(protos):
        return protos[:4] + [protos[3]] + protos[4:]

    src, bad, offsets = _rewrite(tiny, tmp_path, edit)
    results = convert(src, tmp_path / "dst")
    ts = list_segments(tiny[1], "training")[0].timestamps_micros[3]
    _failed(results, bad, tmp_path / "dst", f"record 4 at byte offset {offsets[4]}", f"timestamp_micros {ts} repeats",
            "record 3")


def test_frames_out_of_order_fail(tiny, tmp_path):
    def edit(protos):
        protos[1], protos[2] = protos[2], protos[1]

    src, bad, offsets = _rewrite(tiny, tmp_path, edit)
    _failed(convert(src, tmp_path / "dst"), bad, tmp_path / "dst", f"record 2 at byte offset {offsets[2]}",
            "comes before")


# --- labels ----------------------------------------------------------------------------------------------


def _label_case(case: str):
    def edit(protos):
        p = protos[2]
        if case == "duplicate_id":
            p.laser_labels.add().CopyFrom(p.laser_labels[1])
        elif case == "nonfinite_box":
            p.laser_labels[1].box.center_x = float("nan")
        else:
            p.laser_labels[1].box.length = -2.0
    return edit


@pytest.mark.parametrize("case", ["duplicate_id", "nonfinite_box", "nonpositive_size"])
def test_broken_label_is_dropped_and_counted_everywhere(tiny, tmp_path, capsys, case):
    src, bad, _ = _rewrite(tiny, tmp_path, _label_case(case))
    (r,) = [r for r in convert(src, tmp_path / "dst") if r.job.path == bad]
    assert r.status == "converted"
    assert any(f"1 labels dropped ({case} 1) in 1 frames, e.g. {bad}: record 2" in w for w in r.warnings), r.warnings
    seg = list_segments(tmp_path / "dst", "training")[0]
    assert json.loads((seg.path / "segment.json").read_text())["dropped_labels"] == {case: 1}
    clean = list_segments(tiny[1], "training")[0].load_frame(2)
    frame = seg.load_frame(2)
    assert len(set(frame.ids.tolist())) == frame.num_boxes
    assert np.isfinite(frame.boxes).all() and (frame.boxes[:, 3:6] > 0).all()
    assert frame.num_boxes == clean.num_boxes - (case != "duplicate_id")
    code, out, err = run_hydra(stats.main, [f"dst={tmp_path / 'dst'}"], tmp_path, capsys)
    assert code == 0 and f"labels dropped at conversion: 1 ({case} 1)" in out


# --- v2 --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2_segment(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults_invariants_v2") / "v2"
    synth_pair(root, frames=4, seed=4, top_width=256)
    return root


def _v2_copy(v2_segment: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "v2"
    shutil.copytree(v2_segment, src)
    return src, next((src / "training" / S.VEHICLE_POSE).glob("*.parquet"))


def _pose_column(edit):
    def fn(col):
        rows = np.array(col.to_pylist(), np.float64)
        edit(rows)
        return pa.array(rows.tolist(), col.type)
    return fn


@pytest.mark.parametrize("case,what", [("nan", "NaN/inf"), ("scaled", "not orthonormal")])
def test_v2_bad_world_from_vehicle_fails_naming_row(v2_segment, tmp_path, case, what):
    src, poses = _v2_copy(v2_segment, tmp_path)

    def edit(rows):
        if case == "nan":
            rows[1, 3] = np.nan
        else:
            rows[1, [0, 1, 2, 4, 5, 6, 8, 9, 10]] *= 3

    rewrite_component(poses, replace_column(S.WORLD_FROM_VEHICLE, _pose_column(edit)))
    (r,) = convert(src, tmp_path / "dst")
    assert r.status == "failed" and f"{poses}: row 1 (frame timestamp " in r.error, r.error
    assert S.WORLD_FROM_VEHICLE in r.error and what in r.error
    assert not (tmp_path / "dst" / "training").exists() or not any((tmp_path / "dst" / "training").iterdir())


@pytest.mark.parametrize("case", ["duplicate_id", "nonfinite_box", "unknown_type"])
def test_v2_broken_label_is_dropped_and_counted(v2_segment, tmp_path, case):
    src, _ = _v2_copy(v2_segment, tmp_path)
    boxes = next((src / "training" / S.LIDAR_BOX).glob("*.parquet"))

    def transform(table: pa.Table) -> pa.Table:
        if case == "duplicate_id":
            return pa.concat_tables([table, table.slice(0, 1)])
        if case == "unknown_type":
            types = table.column(S.BOX_TYPE).to_pylist()
            types[0] = 7
            i = table.schema.get_field_index(S.BOX_TYPE)
            return table.set_column(i, S.BOX_TYPE, pa.array(types, table.schema.field(i).type))
        col = table.column(S.BOX_FIELDS[0]).to_pylist()
        col[0] = float("nan")
        i = table.schema.get_field_index(S.BOX_FIELDS[0])
        return table.set_column(i, S.BOX_FIELDS[0], pa.array(col, table.schema.field(i).type))

    rewrite_component(boxes, transform)
    (r,) = convert(src, tmp_path / "dst")
    assert r.status == "converted", r.error
    assert any(f"1 labels dropped ({case} 1)" in w and str(boxes) in w for w in r.warnings), r.warnings
    seg = list_segments(tmp_path / "dst", "training")[0]
    assert dict(seg.dropped_labels) == {case: 1}
    for frame in seg.frames():
        assert len(set(frame.ids.tolist())) == frame.num_boxes and np.isfinite(frame.boxes).all()


# --- the frame store knows its frames ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["swapped", "foreign"])
def test_rerun_repairs_a_swapped_or_foreign_frame_file(tiny, tmp_path, how):
    records, store, _ = tiny
    dst = tmp_path / "dst"
    shutil.copytree(store, dst)
    seg = next((dst / "training").iterdir())
    a, b = seg / "0001.npz", seg / "0004.npz"
    if how == "swapped":
        tmp = seg / "x"
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    else:
        shutil.copyfile(next((dst / "validation").iterdir()) / "0001.npz", a)
    results = {r.job.split: r for r in convert(records, dst)}
    assert results["training"].status == "converted" and results["validation"].status == "skipped"
    assert results["training"].warnings[0].startswith("repaired: ") and str(a) in results["training"].warnings[0]
    assert _digests(dst) == _digests(store)


def test_loading_a_swapped_frame_file_names_it(tiny, tmp_path, capsys):
    _, store, ckpt = tiny
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    seg = next((dst / "validation").iterdir())
    shutil.copyfile(store / "validation" / seg.name / "0002.npz", seg / "0003.npz")
    shutil.copyfile(store / "validation" / seg.name / "0003.npz", seg / "0002.npz")
    code, out, err = run_hydra(evaluate.main, _evaluate_args(dst, ckpt), tmp_path, capsys)
    assert_one_line_error(code, err, str(seg / "0002.npz"), "segment.json", "swapped", prefix="evaluate")
    assert not (tmp_path / "hydra_run" / "metrics.json").exists() and not leftovers(tmp_path / "hydra_run")


def _evaluate_args(store: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["experiment=demo_synthetic", f"data.root={store}", f"ckpt_path={ckpt}", "device=cpu", "data.num_workers=0",
            *TINY_MODEL, *extra]


def _store_with(tiny, tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of the store with the training segment copied into validation too (``both_splits``), or
    with the validation segment's ``segment.json`` saying training (moved by hand, ``wrong_split``)."""
    dst = tmp_path / "store"
    shutil.copytree(tiny[1], dst)
    if how == "both_splits":
        seg = next((dst / "training").iterdir())
        shutil.copytree(seg, dst / "validation" / seg.name)
    else:
        seg = next((dst / "validation").iterdir())
        meta = json.loads((seg / "segment.json").read_text())
        (seg / "segment.json").write_text(json.dumps({**meta, "split": "training"}))
    return dst, seg.name


@pytest.mark.parametrize("how", ["both_splits", "wrong_split"])
def test_evaluate_refuses_a_segment_in_two_splits_or_the_wrong_one(tiny, tmp_path, capsys, how):
    dst, name = _store_with(tiny, tmp_path, how)
    code, out, err = run_hydra(evaluate.main, _evaluate_args(dst, tiny[2]), tmp_path, capsys)
    named = ("in both training/ and validation/",) if how == "both_splits" else ("segment.json", "split 'training'")
    assert_one_line_error(code, err, name, *named, prefix="evaluate")
    assert not (tmp_path / "hydra_run" / "predictions.bin").exists()


def test_train_refuses_a_segment_in_two_splits(tiny, tmp_path, capsys):
    dst, name = _store_with(tiny, tmp_path, "both_splits")
    code, out, err = run_hydra(train.main, ["experiment=demo_synthetic", f"data.root={dst}", "data.num_workers=0",
                                            "trainer.max_epochs=1", *TINY_MODEL], tmp_path, capsys)
    assert_one_line_error(code, err, name, "in both training/ and validation/", prefix="train")
    assert not (tmp_path / "hydra_run" / "checkpoints" / "last.ckpt").exists()


def test_frame_files_from_the_reader_satisfy_the_invariants(tiny):
    """The control: the converted store of the unmodified records passes every check."""
    for split in ("training", "validation"):
        for seg in list_segments(tiny[1], split):
            assert seg.dropped_labels == ()
            ts = [f.timestamp_micros for f in seg.frames()]
            assert ts == sorted(set(ts))


def test_store_with_a_repeated_timestamp_is_refused_by_name(tiny, tmp_path, capsys):
    """A store converted before the reader checked the order (a repeated frame) is refused where read."""
    dst = tmp_path / "store"
    shutil.copytree(tiny[1], dst)
    seg = next((dst / "validation").iterdir())
    meta = json.loads((seg / "segment.json").read_text())
    meta["timestamps_micros"][3] = meta["timestamps_micros"][2]
    (seg / "segment.json").write_text(json.dumps(meta))
    code, out, err = run_hydra(evaluate.main, _evaluate_args(dst, tiny[2]), tmp_path, capsys)
    assert_one_line_error(code, err, str(seg / "segment.json"), "timestamps_micros[3]", "repeated or misordered",
                          prefix="evaluate")
    assert not (tmp_path / "hydra_run" / "predictions.bin").exists()


def test_nan_lidar_extrinsic_fails_the_segment(tiny, tmp_path):
    """A NaN extrinsic made every point of its lidar NaN, dropped and reported as "points with NaN"."""
    def edit(protos):
        for p in protos:
            p.context.laser_calibrations[0].extrinsic.transform[3] = float("nan")

    src, bad, offsets = _rewrite(tiny, tmp_path, edit)
    _failed(convert(src, tmp_path / "dst"), bad, tmp_path / "dst", f"record 0 at byte offset {offsets[0]}",
            "context.laser_calibrations laser", "extrinsic: has NaN/inf values")


@pytest.mark.parametrize("case", ["nonfinite_box", "nonpositive_size", "duplicate_id"])
def test_store_converted_before_with_a_broken_label_is_refused_by_name(tiny, tmp_path, capsys, case):
    """A frame file written before the converter dropped such labels: evaluate exits 2 naming file and
    object (it used to exit 1 with a traceback, or to score the bad box)."""
    dst = tmp_path / "store"
    shutil.copytree(tiny[1], dst)
    path = next((dst / "validation").iterdir()) / "0001.npz"
    frame = Frame.load_npz(path)
    if case == "nonfinite_box":
        frame.boxes[2, 0] = np.nan
    elif case == "nonpositive_size":
        frame.boxes[2, 4] = -1.0
    else:
        frame.ids[2] = frame.ids[1]
    frame.save_npz(path)
    code, out, err = run_hydra(evaluate.main, _evaluate_args(dst, tiny[2]), tmp_path, capsys)
    assert_one_line_error(code, err, f"{path}: object 2", case, "convert the segment again", prefix="evaluate")
    assert not (tmp_path / "hydra_run" / "predictions.bin").exists() and not leftovers(tmp_path / "hydra_run")


def test_a_broken_label_and_its_valid_copy_keep_the_valid_one():
    """Labels dropped for a reason do not count as the first of their id: the valid copy stays."""
    from detector.data.frame_checks import drop_invalid_labels

    frame = Frame(points=np.zeros((0, 5)), pose=np.eye(4), timestamp_micros=1,
                  boxes=[[np.nan, 0, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1, 0], [2, 0, 0, 1, 1, 1, 0],
                         [3, 0, 0, 1, 1, 1, 0]],
                  types=[1, 1, 2, 9], ids=["a", "a", "a", "b"], num_points=[1, 2, 3, 4], difficulty=[1, 1, 1, 1])
    frame, counts, example = drop_invalid_labels(frame)
    assert counts == {"nonfinite_box": 1, "unknown_type": 1, "duplicate_id": 1}
    assert frame.ids.tolist() == ["a"] and frame.num_points.tolist() == [2] and "object 0 (id 'a')" in example
