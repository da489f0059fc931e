"""``data_tools.stats``: counts that agree with the frames, and a clear error for a folder that is not a
frame store."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_tools.stats import format_stats, store_stats
from detector.data.frame_store import FrameStoreError, list_segments
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), segments=2, frames=3, seed=2, top_width=256)[1]


def test_counts_agree_with_frames(store):
    stats = {s.split: s for s in store_stats(store)}
    assert set(stats) == {"training", "validation"}
    for split, st in stats.items():
        frames = [f for seg in list_segments(store, split) for f in seg.frames()]
        assert st.segments == len(list_segments(store, split)) and st.frames == len(frames) == st.segments * 3
        assert st.points == [len(f.points) for f in frames]
        types = np.concatenate([f.types for f in frames])
        assert dict(st.boxes_by_type) == {int(t): int(n) for t, n in zip(*np.unique(types, return_counts=True))}
        assert sum(st.boxes_by_difficulty.values()) == len(types)
    text = format_stats(list(stats.values()))
    assert "[training] segments: 2, frames: 6" in text and "VEHICLE" in text and "points per frame: mean" in text


def test_incomplete_segments_are_reported(store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    seg = sorted((dst / "training").iterdir())[0]
    (seg / "segment.json").unlink()
    st = store_stats(dst, ["training"])[0]
    assert st.segments == 1 and st.incomplete == 1
    assert "segments: 1 (+1 incomplete)" in format_stats([st])


def test_not_a_frame_store(tmp_path):
    with pytest.raises(FrameStoreError, match="no such folder"):
        store_stats(tmp_path / "missing")
    with pytest.raises(FrameStoreError, match="not a frame store"):
        store_stats(tmp_path)
    (tmp_path / "training" / "some_segment").mkdir(parents=True)
    with pytest.raises(FrameStoreError, match="no complete segment"):
        store_stats(tmp_path)


def test_cli(store, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "data_tools.stats", f"dst={store}", f"hydra.run.dir={tmp_path / 'a'}"],
                        cwd=REPO_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "[validation] segments: 1, frames: 3" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "data_tools.stats", f"dst={tmp_path}",
                          f"hydra.run.dir={tmp_path / 'b'}"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and f"stats: {tmp_path}: not a frame store" in bad.stderr


# -- --compare: label statistics beside real Waymo labels ---------------------------------------------------
REAL = next((p for p in (Path(REPO_ROOT).parent / "shared" / "waymo_fake" / "fake_ground_truths.bin",
                         Path(REPO_ROOT).parent.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin")
             if p.is_file()), None)
needs_real = pytest.mark.skipif(REAL is None, reason="no real Waymo labels (shared/waymo_fake) here")


def test_calibration_figures_and_bounds():
    """Shares, medians, 10th percentiles and the LEVEL_2 share on hand-made labels; the marks follow the bounds."""
    from data_tools.stats import Labels, calibration, compare

    # vehicles: 4 at 10 m (100..400 points), 2 at 40 m (10, 20), 4 at 60 m (0, 3, 6, 9; one labelled LEVEL_2)
    types = np.array([1] * 10 + [2, 2, 2])
    distance = np.array([10.0] * 4 + [40.0] * 2 + [60.0, 60.0, 60.0, 75.0] + [5.0, 35.0, 80.0])
    points = np.array([100, 200, 300, 400, 10, 20, 0, 3, 6, 9, 50, 8, 1])
    difficulty = np.array([1] * 9 + [2] + [1, 1, 1])
    cal = calibration(Labels(types, distance, points, difficulty, frames=2, source="x"))
    near, mid, far = cal.buckets[1]
    assert (near.share, near.median, near.p10, near.count) == (0.4, 250.0, np.percentile([100, 200, 300, 400], 10), 4)
    assert (mid.share, mid.median) == (0.2, 15.0) and (far.share, far.median, far.count) == (0.4, 4.5, 4)
    assert cal.level_2[1] == pytest.approx(0.3)  # 0, 3 (<= 5 points) and the one at 75 m labelled LEVEL_2
    assert cal.count[2] == 2 and cal.level_2[4] is None  # the pedestrian at 80 m is out of range; no cyclists
    text, met, made = compare(cal, cal)
    assert "| VEHICLE | [0, 30) | 4 / 4 | 0.40 / 0.40 ✓ | 250 / 250 ✓ |" in text
    # LEVEL_2 shares: vehicles 0.30 (within 5-35 %), pedestrians 0.00 (not: 50 and 8 points, none labelled so)
    assert "| VEHICLE | 0.30 ✓ | 0.30 |" in text and "| PEDESTRIAN | 0.00 ✗ | 0.00 |" in text
    assert made - met == 1 and f"Within bounds: {met} of {made} checks." in text
    other = calibration(Labels(types, distance, points * 2, difficulty, frames=2, source="y"))
    assert "| 500 / 250 ✗ |" in compare(other, cal)[0]


@pytest.fixture(scope="module")
def records_and_store(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_rec"), segments=1, frames=2, seed=4, top_width=256)


@needs_real
def test_compare_cli_reads_stores_records_and_real_labels(records_and_store, tmp_path):
    """The store, its records and a folder above the store give the same table; the real column is the
    real file's own figures (computed here from the protos directly)."""
    from waymo_open_dataset.protos import metrics_pb2

    from data_tools.stats import calibration, find_labels, labels_from_ground_truth

    records, store = records_and_store
    tables = []
    for path in (store, records, store.parent):
        out = tmp_path / f"{len(tables)}.md"
        run = subprocess.run([sys.executable, "-m", "data_tools.stats", str(path), "--compare", str(REAL),
                              "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout == out.read_text() and "| PEDESTRIAN | [50, 75] |" in run.stdout
        tables.append(run.stdout)
    assert tables[0] == tables[1] == tables[2]
    assert find_labels(store).frames == 4  # 1 training + 1 validation segment x 2 frames

    objects = metrics_pb2.Objects()
    objects.ParseFromString(REAL.read_bytes())
    near = [o.object.num_lidar_points_in_box for o in objects.objects
            if o.object.type == 1 and np.hypot(o.object.box.center_x, o.object.box.center_y) < 30]
    real = calibration(labels_from_ground_truth(REAL))
    assert real.buckets[1][0].median == np.median(near) and real.buckets[1][0].count == len(near)
    assert f" / {np.median(near):.0f}" in tables[0]


def test_compare_cli_errors(records_and_store, tmp_path):
    records, store = records_and_store
    missing = subprocess.run([sys.executable, "-m", "data_tools.stats", str(store), "--compare",
                              str(tmp_path / "gt.bin")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"stats: {tmp_path / 'gt.bin'}: no such file (--compare wants a metrics_pb2.Objects file of real labels)"]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xff\xff")
    bad = subprocess.run([sys.executable, "-m", "data_tools.stats", str(store), "--compare", str(junk)],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith(f"stats: {junk}: not a metrics_pb2.Objects file")
    if REAL is not None:
        empty = subprocess.run([sys.executable, "-m", "data_tools.stats", str(tmp_path), "--compare", str(REAL)],
                               cwd=REPO_ROOT, capture_output=True, text=True)
        assert empty.returncode == 2 and "neither a frame store nor a folder of .tfrecord" in empty.stderr
