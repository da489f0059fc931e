"""``data_tools.stats``: counts that agree with the frames, and a clear error for a folder that is not a
frame store."""

import shutil
import subprocess
import sys

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
