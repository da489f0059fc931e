"""Frame-store format 2 (compact points): precision, the cases it must carry, damage found by the zip CRCs,
deterministic bytes, and format-1 files and stores still read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.data.frame import Frame, FrameFormatError, verify_frame_file
from detector.data.frame_codec import POINT_ARRAYS, as_stored
from detector.data.frame_store import FORMAT_VERSION, read_segment, write_segment_meta
from tests.helpers.faults import flip_bytes


def _frame(n=5000, seed=0, scale=40.0) -> Frame:
    rng = np.random.default_rng(seed)
    pts = np.empty((n, 5), np.float32)
    pts[:, :3] = rng.uniform(-scale, scale, (n, 3))
    pts[:, 3] = rng.gamma(1.0, 0.3, n)
    pts[:, 4] = rng.uniform(0, 0.5, n)
    return Frame(points=pts, pose=np.eye(4), timestamp_micros=7, boxes=np.ones((2, 7)), types=[1, 2],
                 ids=["a", "b"], num_points=[3, 4], difficulty=[1, 2], nlz=rng.random(n) < 0.1)


def _same(loaded: Frame, saved: Frame) -> bool:
    """Frame.equals, the name and index (taken from the file's path on load) aside."""
    loaded.segment, loaded.index = saved.segment, saved.index
    return loaded.equals(saved)


def _half_f16_step(v: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(v).astype(np.float16)).astype(np.float32) / 2


def test_round_trip_within_a_millimetre_and_half_a_float16_step(tmp_path):
    f = _frame(scale=80.0)  # random order: nearly every difference escapes int16 (the worst case)
    f.save_npz(tmp_path / "0000.npz")
    with np.load(tmp_path / "0000.npz") as z:
        assert set(POINT_ARRAYS) <= set(z.files) and "points" not in z.files
    g = Frame.load_npz(tmp_path / "0000.npz")
    assert g.points.dtype == np.float32 and g.points.shape == f.points.shape
    assert np.abs(g.points[:, :3] - f.points[:, :3]).max() <= 0.5e-3 + 1e-5
    assert (np.abs(g.points[:, 3:] - f.points[:, 3:]) <= _half_f16_step(f.points[:, 3:])).all()
    assert np.array_equal(g.nlz, f.nlz)
    g.points = f.points
    assert _same(g, f)


def test_as_stored_is_what_a_file_gives_back(tmp_path):
    f = _frame(seed=4)
    f.points[3, 3] = 70000.0  # beyond float16: float32 kept
    f.save_npz(tmp_path / "a.npz")
    assert np.array_equal(as_stored(f.points), Frame.load_npz(tmp_path / "a.npz").points)
    g = _frame(seed=5)
    g.save_npz(tmp_path / "b.npz")
    assert np.array_equal(as_stored(g.points), Frame.load_npz(tmp_path / "b.npz").points)


def test_scan_order_points_need_few_escapes(tmp_path):
    t = np.linspace(0, 20 * np.pi, 20000)
    pts = np.stack([30 * np.cos(t), 30 * np.sin(t), 0.1 * t, np.full_like(t, 0.25), np.zeros_like(t)], 1)
    f = Frame(points=pts, pose=np.eye(4), timestamp_micros=0)
    f.save_npz(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as z:
        assert len(z["xyz_mm_escapes"]) <= 3  # the first point only
    assert np.abs(Frame.load_npz(tmp_path / "a.npz").points - f.points.astype(np.float32)).max() <= 0.51e-3


def test_values_beyond_float16_stay_float32_and_nonfinite_points_stay_format_1(tmp_path):
    f = _frame(n=100)
    f.points[5, 3] = 1e6  # a raw intensity float16 cannot hold
    f.save_npz(tmp_path / "big.npz")
    with np.load(tmp_path / "big.npz") as z:
        assert "ie_f32" in z.files and "ie" not in z.files
    assert np.array_equal(Frame.load_npz(tmp_path / "big.npz").points[:, 3:], f.points[:, 3:])

    f.points[7, 0] = np.nan
    f.save_npz(tmp_path / "nan.npz")
    with np.load(tmp_path / "nan.npz") as z:
        assert "points" in z.files
    assert np.isnan(Frame.load_npz(tmp_path / "nan.npz").points[7, 0])


def test_empty_frame(tmp_path):
    f = Frame(points=np.zeros((0, 5)), pose=np.eye(4), timestamp_micros=1, nlz=np.zeros(0, bool))
    f.save_npz(tmp_path / "e.npz")
    assert _same(Frame.load_npz(tmp_path / "e.npz"), f)


def test_same_points_same_bytes(tmp_path):
    _frame(seed=3).save_npz(tmp_path / "a.npz")
    _frame(seed=3).save_npz(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


@pytest.mark.parametrize("member", ["xyz_mm", "ie"])
def test_damage_in_a_compressed_member_is_named(tmp_path, member):
    path = tmp_path / "0001.npz"
    _frame().save_npz(path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{member}.npy")
    flip_bytes(path, info.header_offset + 200, 2)  # inside the member's data
    with pytest.raises(FrameFormatError, match=f"{path}: damaged frame file"):
        verify_frame_file(path)
    with pytest.raises(FrameFormatError, match=f"{path}: damaged frame file"):
        Frame.load_npz(path)


def test_format_1_files_and_stores_still_read(tmp_path):
    seg = tmp_path / "training" / "seg"
    seg.mkdir(parents=True)
    f = _frame(n=300)
    f.save_npz(seg / "0000.npz", compact=False)
    write_segment_meta(seg, segment="seg", split="training", timestamps_micros=[7])
    meta = json.loads((seg / "segment.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2
    meta["format_version"] = 1  # as a store converted before
    (seg / "segment.json").write_text(json.dumps(meta))
    info = read_segment(seg)
    verify_frame_file(seg / "0000.npz")
    assert _same(info.load_frame(0), f)  # format 1: float32, exact


def test_a_waymo_size_frame_is_at_most_2_5_mb(tmp_path):
    """TOP 64x2650 and four short-range 200x600 lidars, both returns (the synthesizer's Waymo rig)."""
    from data_tools.convert_waymo import convert
    from data_tools.synth_segment import SegmentConfig
    from data_tools.synthesize import synthesize

    synthesize(tmp_path / "records", 1, 0, 3, SegmentConfig(frames=1, lidar="waymo"), workers=1)
    convert(tmp_path / "records", tmp_path / "store")
    (frame,) = list((tmp_path / "store").rglob("0000.npz"))
    points = len(Frame.load_npz(frame).points)
    assert points > 250_000 and frame.stat().st_size <= 2.5e6, (points, frame.stat().st_size)
