"""Faults in the converter's input and output: bad records, files cut short, NaN/inf points, damaged
or missing frame files in a converted store, kill -9 at random points, full and read-only disks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from waymo_open_dataset import dataset_pb2

from data_tools import convert_waymo, stats
from data_tools.convert_waymo import convert, summary
from detector.data.frame import Frame
from detector.data.frame_store import list_segments, read_segment
from detector.data.tfrecord import iter_records, iter_records_with_offsets, masked_crc32c, write_tfrecord
from detector.data.waymo_reader import decode_matrix_float, encode_matrix_float
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.faults import assert_one_line_error, fill, flip_bytes, leftovers, read_only, run_hydra, small_tmpfs
from tests.helpers.paths import REPO_ROOT

FRAMES = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One training and one validation segment of 8 frames, and their converted store."""
    return make_tiny_dataset(tmp_path_factory.mktemp("faults_records"), segments=1, frames=FRAMES, seed=3,
                             val_segments=1, top_width=512)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _src_with(tiny, tmp_path: Path, make_bad) -> tuple[Path, Path]:
    """A copy of the records whose training file is replaced by ``make_bad(records)`` (bytes)."""
    records, _ = tiny
    src = tmp_path / "src"
    shutil.copytree(records, src)
    bad = next((src / "training").glob("*.tfrecord"))
    bad.write_bytes(make_bad(list(iter_records_with_offsets(bad)), bad.read_bytes()))
    return src, bad


def _assert_failed_cleanly(result, dst: Path, *named: str) -> None:
    assert result.status == "failed"
    for s in named:
        assert s in result.error, (s, result.error)
    assert "MemoryError" not in result.error
    assert not (dst / "training").exists() or not any((dst / "training").iterdir()), "a failed segment left files"


def test_random_bytes_record_file_fails_its_segment_only(tiny, tmp_path):
    src, bad = _src_with(tiny, tmp_path, lambda recs, raw: np.random.default_rng(0).bytes(20_000))
    results = convert(src, tmp_path / "dst")
    by = {r.job.path: r for r in results}
    _assert_failed_cleanly(by[bad], tmp_path / "dst", str(bad), "byte offset 0")
    assert [r.status for r in results if r.job.path != bad] == ["converted"]


def test_crc_damaged_record_mid_segment_names_record_offset(tiny, tmp_path):
    def damage(recs, raw):
        offset = recs[3][0]
        out = bytearray(raw)
        out[offset + 12 + 100] ^= 0x01
        return bytes(out)

    src, bad = _src_with(tiny, tmp_path, damage)
    offset = list(iter_records_with_offsets(next((tiny[0] / "training").glob("*.tfrecord"))))[3][0]
    r = convert(src, tmp_path / "dst")[0]
    _assert_failed_cleanly(r, tmp_path / "dst", str(bad), f"byte offset {offset}", "data CRC mismatch")


def test_truncated_record_mid_segment(tiny, tmp_path):
    src, bad = _src_with(tiny, tmp_path, lambda recs, raw: raw[: recs[5][0] + 500])
    r = convert(src, tmp_path / "dst")[0]
    _assert_failed_cleanly(r, tmp_path / "dst", str(bad), "truncated")


def test_header_claiming_a_terabyte_is_refused_without_allocating(tiny, tmp_path):
    def huge(recs, raw):
        header = struct.pack("<Q", 1 << 40)
        return raw[: recs[2][0]] + header + struct.pack("<I", masked_crc32c(header)) + b"\0" * 64

    src, bad = _src_with(tiny, tmp_path, huge)
    offset = list(iter_records_with_offsets(next((tiny[0] / "training").glob("*.tfrecord"))))[2][0]
    results = convert(src, tmp_path / "dst", workers=2)  # the pool survives and the summary is complete
    r = {x.job.path: x for x in results}[bad]
    _assert_failed_cleanly(r, tmp_path / "dst", str(bad), f"byte offset {offset}", f"claims {1 << 40} bytes")
    assert "1 converted, 0 already complete (skipped), 1 failed" in summary(results)


def test_file_cut_at_a_record_boundary_is_reported(tiny, tmp_path):
    src, bad = _src_with(tiny, tmp_path, lambda recs, raw: raw[: recs[4][0]])  # 4 of 8 records, framing intact
    r = convert(src, tmp_path / "dst")[0]
    assert r.status == "converted" and r.frames == 4
    (warning,) = r.warnings
    assert str(bad) in warning and "0.8 s (~8 frames" in warning and "4 frames cover 0.4 s" in warning
    assert f"WARNING {warning}" in summary([r])
    # the complete file warns about nothing
    assert convert(tiny[0], tmp_path / "dst2")[0].warnings == ()


def _with_nonfinite(recs, raw, per_record: dict[int, tuple[int, int]]) -> bytes:
    """Records where, in TOP return 1, ``inf_n`` valid pixels get an infinite range and ``nan_n`` a NaN
    intensity (record index -> (inf_n, nan_n))."""
    out = []
    for i, (_, data) in enumerate(recs):
        if i in per_record:
            frame = dataset_pb2.Frame.FromString(data)
            laser = next(l for l in frame.lasers if l.name == dataset_pb2.LaserName.TOP)
            img = decode_matrix_float(laser.ri_return1.range_image_compressed, "test").copy()
            valid = np.argwhere(img[..., 0] > 0)
            inf_n, nan_n = per_record[i]
            for r, c in valid[:inf_n]:
                img[r, c, 0] = np.inf
            for r, c in valid[inf_n:inf_n + nan_n]:
                img[r, c, 1] = np.nan
            laser.ri_return1.range_image_compressed = encode_matrix_float(img)
            data = frame.SerializeToString()
        out.append(data)
    return out


def test_nonfinite_points_are_dropped_and_counted(tiny, tmp_path, capsys):
    records, _ = tiny
    src = tmp_path / "src"
    shutil.copytree(records, src)
    bad = next((src / "training").glob("*.tfrecord"))
    write_tfrecord(bad, _with_nonfinite(list(iter_records_with_offsets(bad)), None, {1: (7, 5), 6: (0, 3)}))
    r = convert(src, tmp_path / "dst")[0]
    assert r.status == "converted"
    (warning,) = r.warnings
    assert (str(bad) in warning
            and "15 points with NaN/inf values dropped (record 1: TOP 12; record 6: TOP 3)" in warning)
    seg = list_segments(tmp_path / "dst", "training")[0]
    assert dict(seg.nonfinite_points) == {"TOP": 15}
    for f in seg.frames():
        assert np.isfinite(f.points).all()
    clean = read_segment(tiny[1] / "training" / seg.name)
    assert len(seg.load_frame(1).points) == len(clean.load_frame(1).points) - 12
    code, out, err = run_hydra(stats.main, [f"dst={tmp_path / 'dst'}"], tmp_path, capsys)
    assert code == 0 and "points with NaN/inf dropped at conversion: 15 (TOP 15)" in out


def _converted_copy(tiny, tmp_path: Path) -> Path:
    dst = tmp_path / "dst"
    shutil.copytree(tiny[1], dst)
    return dst


@pytest.mark.parametrize("damage", ["bit_flip", "truncated", "missing", "emptied"])
def test_rerun_repairs_a_damaged_frame_file(tiny, tmp_path, damage):
    records, store = tiny
    dst = _converted_copy(tiny, tmp_path)
    frame = next((dst / "training").iterdir()) / "0005.npz"
    size = frame.stat().st_size
    if damage == "bit_flip":
        flip_bytes(frame, size // 2)
    elif damage == "truncated":
        frame.write_bytes(frame.read_bytes()[: size // 3])
    elif damage == "missing":
        frame.unlink()
    else:
        frame.write_bytes(b"")
    results = convert(records, dst)
    by = {r.job.split: r for r in results}
    assert by["training"].status == "converted" and by["validation"].status == "skipped"
    assert str(frame) in by["training"].warnings[0] and by["training"].warnings[0].startswith("repaired:")
    assert _digests(dst) == _digests(store)


def _count_frames(dst: Path) -> int:
    return sum(1 for p in dst.rglob("*") if p.suffix == ".npz" or p.name.endswith(".npz.tmp") or ".npz." in p.name)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_a_random_point_then_resume_is_byte_identical(tiny, tmp_path, seed):
    """The converter is killed after a random number (1 .. all but one) of frame files were started."""
    records, store = tiny
    dst = tmp_path / "dst"
    at = int(np.random.default_rng(seed).integers(1, 2 * FRAMES))
    cmd = [sys.executable, "-m", "data_tools.convert_waymo", f"src={records}", f"dst={dst}", "workers=1",
           "progress=false", f"hydra.run.dir={tmp_path / 'logs'}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and (not dst.exists() or _count_frames(dst) < at):
        time.sleep(0.0005)
    assert proc.poll() is None, "the converter finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(dst.rglob("segment.json"))) < 2
    results = convert(records, dst)
    assert "failed" not in [r.status for r in results]
    assert _digests(dst) == _digests(store) and not leftovers(dst)


def test_cli_bad_record_exits_2_with_summary(tiny, tmp_path, capsys):
    src, bad = _src_with(tiny, tmp_path, lambda recs, raw: raw[:100])
    code, out, err = run_hydra(convert_waymo.main, [f"src={src}", f"dst={tmp_path / 'dst'}", "workers=1",
                                                    "progress=false"], tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert "1 converted, 0 already complete (skipped), 1 failed" in err and f"FAILED {bad}: RecordError" in err


def test_read_only_dst_is_one_line(tiny, tmp_path, capsys):
    with read_only(tmp_path / "ro") as ro:
        code, out, err = run_hydra(convert_waymo.main, [f"src={tiny[0]}", f"dst={ro / 'store'}", "progress=false"],
                                   tmp_path, capsys)
        assert_one_line_error(code, err, f"dst={ro / 'store'}", "Read-only file system", prefix="convert_waymo")


def test_full_disk_fails_the_segment_and_leaves_nothing(tiny, tmp_path, capsys):
    with small_tmpfs(tmp_path / "disk", "40m") as disk:
        fill(disk, leave=200_000)  # a few frames fit, then ENOSPC
        code, out, err = run_hydra(convert_waymo.main, [f"src={tiny[0]}", f"dst={disk / 'store'}", "workers=1",
                                                        "progress=false"], tmp_path, capsys)
        assert code == 2 and "Traceback" not in err
        assert "2 failed" in err and "No space left on device" in err and "cannot write" in err
        assert not leftovers(disk)
        for split in ("training", "validation"):
            assert not (disk / "store" / split).exists() or not any((disk / "store" / split).iterdir())
        (disk / "filler").unlink()  # space again: the re-run converts everything
        results = convert(tiny[0], disk / "store")
        assert [r.status for r in results] == ["converted", "converted"], summary(results)
        assert _digests(disk / "store") == _digests(tiny[1])


def test_iter_records_bounds_lengths_without_verification(tmp_path):
    header = struct.pack("<Q", 1 << 40)
    p = tmp_path / "x.tfrecord"
    p.write_bytes(header + b"\0\0\0\0" + b"abc")
    with pytest.raises(Exception, match="byte offset 0: header claims") as e:
        list(iter_records(p, verify=False))
    assert type(e.value).__name__ == "RecordError"


def test_segment_metadata_garbage_is_named(tiny, tmp_path):
    dst = _converted_copy(tiny, tmp_path)
    meta = next((dst / "training").iterdir()) / "segment.json"
    meta.write_text("{not json")
    from detector.data.frame_store import FrameStoreError

    with pytest.raises(FrameStoreError, match=str(meta)):
        list_segments(dst, "training")
    assert convert(tiny[0], dst)[0].status == "converted"  # and a re-run repairs it
    assert json.loads(meta.read_text())["num_frames"] == FRAMES
    assert Frame.load_npz(meta.parent / "0000.npz").segment == meta.parent.name
