"""Every writer of the project on a full and on a read-only disk: the file appears whole or not at all,
an existing file is kept, no temporary file stays, and the error names the path."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from detector.atomic import AtomicWriter, OutputError, atomic_open, atomic_path, write_json_atomic
from detector.data.frame import Frame
from detector.data.tfrecord import TFRecordWriter
from detector.eval.submission import ObjectsWriter, write_objects
from tests.helpers.faults import fill, leftovers, read_only, small_tmpfs

BIG = 300_000  # more than the disk has left


def _frame() -> Frame:
    rng = np.random.default_rng(0)
    return Frame(points=rng.normal(size=(BIG // 20, 5)).astype(np.float32), pose=np.eye(4), timestamp_micros=1)


def _atomic_open(p):
    with atomic_open(p) as f:
        f.write(b"x" * BIG)


WRITERS = {
    "write_json_atomic": lambda p: write_json_atomic(p, {"x": "y" * BIG}),
    "atomic_open": _atomic_open,
    "frame.save_npz": lambda p: _frame().save_npz(p),
    "TFRecordWriter": lambda p: _tfrecords(p),
    "ObjectsWriter": lambda p: _objects(p),
    "write_objects": lambda p: _write_objects(p),
}


def _tfrecords(p):
    with TFRecordWriter(p) as w:
        for _ in range(30):
            w.write(b"r" * 10_000)


def _objects(p):
    with ObjectsWriter(p) as w:
        for t in range(200):
            w.add_detections("ctx", t, np.ones((10, 7)), np.ones(10), np.ones(10))


def _write_objects(p):
    from detector.eval.submission import detections_to_objects

    write_objects(p, detections_to_objects("ctx", 0, np.ones((2000, 7)), np.ones(2000), np.ones(2000)))


@pytest.mark.parametrize("writer", list(WRITERS))
def test_full_disk_keeps_the_old_file_and_leaves_nothing(tmp_path, writer):
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        target = disk / "out.bin"
        target.write_bytes(b"old contents")
        fill(disk, leave=0)
        with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
            WRITERS[writer](target)
        assert target.read_bytes() == b"old contents"
        assert not leftovers(disk), leftovers(disk)


def test_atomic_writer_abort_survives_enospc_on_close(tmp_path):
    """The path of the bug: an error inside the block, then the buffered data fails to flush on close."""
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        fill(disk, leave=0)
        with pytest.raises(RuntimeError, match="inside"):
            with AtomicWriter(disk / "x.bin") as w:
                w._f.write(b"x" * 4000)  # buffered: nothing reaches the disk yet
                raise RuntimeError("inside")
        assert not leftovers(disk)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_read_only_disk_is_named_and_nothing_is_created(tmp_path, writer):
    with read_only(tmp_path / "ro") as ro:
        with pytest.raises(OutputError, match=f"cannot write {ro / 'out.bin'}: Read-only file system"):
            WRITERS[writer](ro / "out.bin")
        assert list(ro.iterdir()) == []


def test_a_bug_stays_a_bug(tmp_path):
    """Only refused writes become OutputError: writing under a file (ENOTDIR) is a program error."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError) as e:
        write_json_atomic(tmp_path / "file" / "x.json", {})
    assert not isinstance(e.value, OutputError) and e.value.errno == errno.ENOTDIR


def test_atomic_path_full_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        fill(disk, leave=0)
        with pytest.raises(OutputError, match="No space left"):
            with atomic_path(disk / "plot.png", keep_suffix=True) as tmp:
                tmp.write_bytes(b"p" * BIG)
        assert not list(p for p in disk.iterdir() if p.name != "filler")
