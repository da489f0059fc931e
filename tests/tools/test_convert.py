"""The converter: frame-store layout and content, skipping complete segments, byte-identical resume
after an interruption (a real kill -9 included), corrupt and truncated records, shards."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_tools.convert_waymo import ShardError, convert, find_records, parse_shard, select_shard, summary
from detector.data.frame import NPZ_ARRAYS, Frame
from detector.data.frame_codec import POINT_ARRAYS
from detector.data.frame_store import FORMAT_VERSION, list_segments
from detector.data.waymo_reader import iter_frames, read_context_name
from detector.errors import InputError
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.paths import REPO_ROOT


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), segments=2, frames=5, seed=1, val_segments=1,
                             top_width=512, nlz_prob=1.0)


def test_layout_and_content(tiny):
    records, store = tiny
    jobs = find_records(records)
    assert [j.split for j in jobs] == ["training", "training", "validation"]
    for job in jobs:
        name = read_context_name(job.path)
        seg_dir = store / job.split / name
        meta = json.loads((seg_dir / "segment.json").read_text())
        assert meta["format_version"] == FORMAT_VERSION and meta["segment"] == name
        assert meta["split"] == job.split and meta["source"] == f"{job.split}/{job.path.name}"
        assert meta["num_frames"] == 5 and np.all(np.diff(meta["timestamps_micros"]) == 100_000)
        assert sorted(p.name for p in seg_dir.iterdir()) == [f"{i:04d}.npz" for i in range(5)] + ["segment.json"]
        for i, expected in enumerate(iter_frames(job.path)):
            with np.load(seg_dir / f"{i:04d}.npz") as z:  # format 2: compact points (detector/data/frame_codec.py)
                assert (set(NPZ_ARRAYS) - {"points"}) | set(POINT_ARRAYS) | {"ie", "nlz_bits"} == set(z.files)
            loaded = Frame.load_npz(seg_dir / f"{i:04d}.npz")
            assert np.abs(loaded.points[:, :3] - expected.points[:, :3]).max() <= 0.51e-3  # millimetres
            half_f16_step = np.spacing(np.abs(expected.points[:, 3:]).astype(np.float16)).astype(np.float32) / 2
            assert (np.abs(loaded.points[:, 3:] - expected.points[:, 3:]) <= half_f16_step).all()
            loaded.points = expected.points
            assert loaded.equals(expected)
            assert loaded.nlz.any()
    assert len(list_segments(store, "training")) == 2 and len(list_segments(store, "validation")) == 1


def test_second_run_skips_complete_segments(tiny, tmp_path):
    records, store = tiny
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()}
    results = convert(records, dst)
    assert [r.status for r in results] == ["skipped"] * 3
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()} == mtimes
    assert "0 converted, 3 already complete" in summary(results)


def test_resume_after_partial_run_is_byte_identical(tiny, tmp_path):
    records, store = tiny
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    seg_a, seg_b = sorted((dst / "training").iterdir())
    # What an interrupted run can leave: no segment.json, missing frames, a temporary file.
    (seg_a / "segment.json").unlink()
    (seg_a / "0004.npz").unlink()
    (seg_a / ".0003.npz.x1y2.tmp").write_bytes(b"partial")
    # A segment converted from another source file under the same name is redone too.
    meta = json.loads((seg_b / "segment.json").read_text())
    meta["source"] = "training/other.tfrecord"
    (seg_b / "segment.json").write_text(json.dumps(meta))
    (seg_b / "0002.npz").write_bytes(b"stale")
    results = convert(records, dst, workers=2)
    assert sorted(r.status for r in results) == ["converted", "converted", "skipped"]
    assert _digests(dst) == _digests(store)


def test_kill_9_then_resume(tiny, tmp_path):
    records, store = tiny
    dst = tmp_path / "store"
    cmd = [sys.executable, "-m", "data_tools.convert_waymo", f"src={records}", f"dst={dst}", "workers=1",
           "progress=false", f"hydra.run.dir={tmp_path / 'logs'}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(dst.rglob("*.npz")):
            break
        time.sleep(0.001)
    assert proc.poll() is None, "the converter finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(dst.rglob("segment.json"))) < 3  # it was interrupted
    results = convert(records, dst)
    assert "failed" not in [r.status for r in results]
    assert _digests(dst) == _digests(store)


def _corrupt_copy(records: Path, tmp_path: Path) -> tuple[Path, Path, int, Path]:
    src = tmp_path / "records"
    shutil.copytree(records, src)
    bad = sorted((src / "training").iterdir())[0]
    raw = bytearray(bad.read_bytes())
    first_len = int.from_bytes(raw[:8], "little")
    offset = 16 + first_len  # the second record
    raw[offset + 12 + 5000] ^= 0x55
    bad.write_bytes(bytes(raw))
    short = next((src / "validation").iterdir())
    short.write_bytes(short.read_bytes()[:-1000])
    return src, bad, offset, short


def test_corrupt_and_truncated_records(tiny, tmp_path):
    records, store = tiny
    src, bad, offset, short = _corrupt_copy(records, tmp_path)
    results = convert(src, tmp_path / "store")
    by_path = {r.job.path: r for r in results}
    assert by_path[bad].status == "failed"
    assert str(bad) in by_path[bad].error and f"byte offset {offset}" in by_path[bad].error
    assert by_path[short].status == "failed" and "truncated" in by_path[short].error
    good = [r for r in results if r.status == "converted"]
    assert len(good) == 1 and (tmp_path / "store" / "training" / good[0].segment / "segment.json").is_file()
    # The failed segments are incomplete: no segment.json, so readers ignore them.
    assert len(list_segments(tmp_path / "store", "training")) == 1
    assert list_segments(tmp_path / "store", "validation") == []


def test_cli_exit_codes(tiny, tmp_path):
    records, _ = tiny
    src, bad, offset, _ = _corrupt_copy(records, tmp_path)
    run = subprocess.run([sys.executable, "-m", "data_tools.convert_waymo", f"src={src}", f"dst={tmp_path / 'store'}",
                          "workers=2", "progress=false", f"hydra.run.dir={tmp_path / 'logs'}"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 2
    assert "1 converted, 0 already complete (skipped), 2 failed" in run.stderr
    assert f"FAILED {bad}" in run.stderr and f"byte offset {offset}" in run.stderr
    run = subprocess.run([sys.executable, "-m", "data_tools.convert_waymo", f"src={tmp_path / 'nothing'}",
                          f"dst={tmp_path / 'store2'}", "shard=3/2", f"hydra.run.dir={tmp_path / 'logs'}"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "shard=3/2" in run.stderr


def test_shards_partition_the_files(tiny, tmp_path):
    records, store = tiny
    jobs = find_records(records)
    parts = [select_shard(jobs, f"{i}/2") for i in range(2)]
    assert sorted(j.path for p in parts for j in p) == sorted(j.path for j in jobs)
    assert not set(parts[0]) & set(parts[1])
    for i in range(2):
        convert(records, tmp_path / "store", shard=f"{i}/2")
    assert _digests(tmp_path / "store") == _digests(store)
    assert parse_shard(None) == (0, 1) and parse_shard("2/5") == (2, 5)
    for bad in ("2/2", "x", "1/0", "-1/3"):
        with pytest.raises(ShardError):
            parse_shard(bad)
    with pytest.raises(InputError, match="no records"):
        find_records(tmp_path / "store")
