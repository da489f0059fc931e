"""The converter on Waymo v2 roots: the same frame files as from the v1 records of the same frames,
resume and skip, shards, workers, and per-segment failures that name the missing or damaged file."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.convert_waymo import SourceError, convert, find_records, select_shard, summary
from data_tools.synth_segment import SegmentConfig
from data_tools.synthesize import synthesize
from detector.data import waymo_v2_schema as S
from detector.data.frame_store import list_segments
from tests.helpers.paths import REPO_ROOT


def _frame_digests(store: Path) -> dict[str, str]:
    """Digests of the frame files (``segment.json`` names the source, which differs between formats)."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.rglob("*.npz"))}


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """Two training and one validation segment of 4 frames, synthesized once and written in both formats,
    each converted into its own store."""
    tmp = tmp_path_factory.mktemp("both")
    synthesize(tmp / "src", 2, 1, 5, SegmentConfig(frames=4, top_width=384, nlz_prob=1.0), format="both",
               v2_row_group_frames=3)
    stores = {}
    for fmt in ("v1", "v2"):
        results = convert(tmp / "src" / fmt, tmp / f"store_{fmt}")
        assert [r.status for r in results] == ["converted"] * 3, summary(results)
        stores[fmt] = tmp / f"store_{fmt}"
    return tmp / "src", stores


def test_v2_store_equals_v1_store(both):
    src, stores = both
    jobs = find_records(src / "v2")
    assert [(j.split, j.format) for j in jobs] == [("training", "v2")] * 2 + [("validation", "v2")]
    assert all(j.path.parent.name == S.LIDAR and j.path.is_file() for j in jobs)
    v1, v2 = _frame_digests(stores["v1"]), _frame_digests(stores["v2"])
    assert len(v1) == 12 and v1 == v2  # byte-identical frame files: points, labels, poses, timestamps, NLZ
    for seg in list_segments(stores["v2"], "training"):
        meta = json.loads((seg.path / "segment.json").read_text())
        assert meta["source"] == f"training/lidar/{seg.name}.parquet"
        old = json.loads((stores["v1"] / "training" / seg.name / "segment.json").read_text())
        assert meta["timestamps_micros"] == old["timestamps_micros"] and meta["num_frames"] == 4


def test_resume_skip_shards_and_workers(both, tmp_path):
    src, stores = both
    dst = tmp_path / "store"
    for i in range(2):
        convert(src / "v2", dst, shard=f"{i}/2")
    assert _digests(dst) == _digests(stores["v2"])
    jobs = find_records(src / "v2")
    assert sorted(j.path for p in (select_shard(jobs, "0/2"), select_shard(jobs, "1/2")) for j in p) == \
        sorted(j.path for j in jobs)
    assert [r.status for r in convert(src / "v2", dst)] == ["skipped"] * 3
    # an interrupted segment (no segment.json, a frame missing, a temporary file) is redone byte-identically
    seg = sorted((dst / "training").iterdir())[0]
    (seg / "segment.json").unlink()
    (seg / "0003.npz").unlink()
    (seg / ".0002.npz.abc.tmp").write_bytes(b"partial")
    results = convert(src / "v2", dst, workers=2)
    assert sorted(r.status for r in results) == ["converted", "skipped", "skipped"]
    assert _digests(dst) == _digests(stores["v2"])


def test_missing_and_damaged_components_fail_their_segment(both, tmp_path):
    src, stores = both
    root = tmp_path / "v2"
    shutil.copytree(src / "v2", root)
    a, b = sorted(p.stem for p in (root / "training" / S.LIDAR).glob("*.parquet"))
    missing = root / "training" / S.VEHICLE_POSE / f"{a}.parquet"
    missing.unlink()
    damaged = root / "training" / S.LIDAR / f"{b}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    results = convert(root, tmp_path / "store")
    by_name = {r.job.path.stem: r for r in results}
    assert by_name[a].status == "failed" and f"no vehicle_pose file {missing}" in by_name[a].error
    assert by_name[b].status == "failed" and f"{damaged}: not a readable parquet file" in by_name[b].error
    assert [r.status for r in results if r.job.split == "validation"] == ["converted"]
    assert list_segments(tmp_path / "store", "training") == []  # nothing half-written is taken for a segment
    text = summary(results)
    assert "1 converted, 0 already complete (skipped), 2 failed" in text and f"FAILED {damaged}" in text

    # a segment whose lidar file alone is missing is listed from its other components, and named
    lidar = root / "validation" / S.LIDAR
    (only,) = list(lidar.glob("*.parquet"))
    only.unlink()
    results = convert(root, tmp_path / "store2")
    (val,) = [r for r in results if r.job.split == "validation"]
    assert val.status == "failed" and f"no lidar file {only}" in val.error


def test_cli_v2_and_mixed_roots(both, tmp_path):
    src, stores = both
    run = subprocess.run([sys.executable, "-m", "data_tools.convert_waymo", f"src={src / 'v2'}",
                          f"dst={tmp_path / 's'}", "workers=2", "progress=true", f"hydra.run.dir={tmp_path / 'logs'}"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "3 converted" in run.stdout and "segment" in run.stderr  # the tqdm bar over segments
    assert _frame_digests(tmp_path / "s") == _frame_digests(stores["v1"])
    mixed = tmp_path / "mixed"
    shutil.copytree(src / "v2", mixed)
    for p in (src / "v1" / "training").glob("*.tfrecord"):
        shutil.copy(p, mixed / "training")
    with pytest.raises(SourceError, match="both v1 records"):
        find_records(mixed)
    run = subprocess.run([sys.executable, "-m", "data_tools.convert_waymo", f"src={mixed}", f"dst={tmp_path / 'm'}",
                          f"hydra.run.dir={tmp_path / 'logs'}"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "both v1 records" in run.stderr
