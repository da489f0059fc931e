"""Clip index, reset flags, gaps, non-finite points, cropping, class filter, collation, segment streaming."""

import logging

import numpy as np
import pytest
import torch

from tests.helpers.stores import STEP_MICROS, make_segment
from detector.data.batch import ClipBatch, FrameBatch
from detector.data.clips import (ClipDataset, SegmentDataset, clip_starts, frame_resets, iter_segment_frames,
                                 split_segments)
from detector.data.collate import collate_clips, collate_stream
from detector.data.frame import Frame, FrameFormatError
from detector.data.frame_store import FrameStoreError, list_segments


def test_clip_starts_stride_tail_and_short_segments():
    assert clip_starts(10, 4, 3) == [0, 3, 6]
    assert clip_starts(11, 4, 3) == [0, 3, 6, 7]
    assert clip_starts(11, 4, 3, cover_tail=False) == [0, 3, 6]
    assert clip_starts(4, 4, 1) == [0]
    assert clip_starts(3, 4, 1) == []
    with pytest.raises(ValueError):
        clip_starts(5, 0, 1)


def test_frame_resets_on_start_gaps_and_disorder():
    ts = [0, 100_000, 200_000, 900_000, 1_000_000, 1_000_000, 1_100_000]
    assert frame_resets(ts, 0.5).tolist() == [True, False, False, True, False, True, False]
    assert frame_resets(ts, None).tolist() == [True, False, False, False, False, True, False]
    assert frame_resets([], 0.5).tolist() == []


def test_clip_index_over_segments_and_short_segment_warning(tmp_path, caplog):
    make_segment(tmp_path, "training", "long", 9, seed=0, num_points=20)
    make_segment(tmp_path, "training", "short", 2, seed=1, num_points=20)
    make_segment(tmp_path, "training", "mid", 5, seed=2, num_points=20)
    (tmp_path / "training" / "incomplete").mkdir()  # no segment.json: ignored
    with caplog.at_level(logging.WARNING):
        ds = ClipDataset(tmp_path, "training", clip_length=4, stride=4)
    assert "short" in caplog.text and "clip_length=4" in caplog.text
    names = [s.name for s in ds.segments]
    assert names == ["long", "mid", "short"]
    assert [(names[k], s) for k, s in ds.index] == [("long", 0), ("long", 4), ("long", 5), ("mid", 0), ("mid", 1)]
    clip = ds[2]
    assert clip.segment == "long" and clip.start == 5
    assert [f.index for f in clip.frames] == [5, 6, 7, 8]
    assert all(f.segment == "long" for f in clip.frames)
    with pytest.raises(FrameStoreError, match="clip_length=10"):
        ClipDataset(tmp_path, "training", clip_length=10)


def test_each_frame_file_read_once_per_clip(tmp_path, monkeypatch):
    make_segment(tmp_path, "training", "a", 8, seed=0, num_points=20)
    ds = ClipDataset(tmp_path, "training", clip_length=4, stride=2)
    reads = []
    real_load = Frame.load_npz.__func__

    def counting_load(cls, path, *args, **kwargs):
        reads.append(str(path))
        return real_load(cls, path, *args, **kwargs)

    monkeypatch.setattr(Frame, "load_npz", classmethod(counting_load))
    ds[1]
    assert sorted(reads) == [str(tmp_path / "training" / "a" / f"{i:04d}.npz") for i in range(2, 6)]


def test_reset_flags_and_gap_reporting(tmp_path, caplog):
    make_segment(tmp_path, "training", "gappy", 8, seed=0, num_points=20, gaps_before=(5,))
    with caplog.at_level(logging.WARNING):
        ds = ClipDataset(tmp_path, "training", clip_length=4, stride=2, max_gap_s=0.5)
    assert ds.num_gaps == 1
    assert "gappy" in caplog.text and "frame 5" in caplog.text
    # clips start at 0, 2, 4; frame 0 of every clip resets; frame 5 resets (1.1 s gap)
    assert ds[0].reset.tolist() == [True, False, False, False]
    assert ds[1].reset.tolist() == [True, False, False, True]
    assert ds[2].reset.tolist() == [True, True, False, False]
    lenient = ClipDataset(tmp_path, "training", clip_length=4, stride=2, max_gap_s=2.0)
    assert lenient.num_gaps == 0 and lenient[1].reset.tolist() == [True, False, False, False]


def test_nonfinite_points_dropped_counted_and_logged_once_per_file(tmp_path, caplog):
    make_segment(tmp_path, "training", "a", 4, seed=0, num_points=50, nonfinite={1: 6, 3: 3})
    ds = ClipDataset(tmp_path, "training", clip_length=4, classes=None)
    with caplog.at_level(logging.WARNING):
        clip = ds[0]
        ds[0]
    assert ds.num_nonfinite_points == 18  # 9 per read, read twice
    assert caplog.text.count("0001.npz: dropped 6 of 50") == 1
    assert caplog.text.count("0003.npz: dropped 3 of 50") == 1
    assert [len(f.points) for f in clip.frames] == [50, 44, 50, 47]
    assert all(np.isfinite(f.points).all() for f in clip.frames)


def test_crop_box_range_and_class_filter(tmp_path):
    make_segment(tmp_path, "training", "a", 4, seed=3, num_points=400)
    rng = [-10, -12, -1, 10, 12, 2]
    raw = list_segments(tmp_path, "training")[0].load_frame(0)
    ds = ClipDataset(tmp_path, "training", clip_length=4, point_range=rng)
    f = ds[0].frames[0]
    xyz = f.points[:, :3]
    assert len(f.points) < len(raw.points)
    assert np.all((xyz >= rng[:3]) & (xyz <= rng[3:]))
    raw_xyz = raw.points[:, :3]
    assert len(f.points) == np.all((raw_xyz >= rng[:3]) & (raw_xyz <= rng[3:]), axis=1).sum()
    in_range = np.all((raw.boxes[:, :3] >= rng[:3]) & (raw.boxes[:, :3] <= rng[3:]), axis=1)
    expect = in_range & np.isin(raw.types, [1, 2, 4])
    np.testing.assert_array_equal(f.boxes, raw.boxes[expect])
    np.testing.assert_array_equal(f.ids, raw.ids[expect])
    kept = ClipDataset(tmp_path, "training", clip_length=4, point_range=rng, keep_boxes_outside_range=True,
                       classes=[1, 2, 3, 4])[0].frames[0]
    np.testing.assert_array_equal(kept.types, raw.types)  # signs stay in the data when asked for
    assert 3 not in ClipDataset(tmp_path, "training", clip_length=4)[0].frames[0].types


def test_collate_matches_batch_contract_and_empty_frames_flow(tmp_path):
    make_segment(tmp_path, "training", "a", 4, seed=0, num_points=30, empty_frames=(2,))
    make_segment(tmp_path, "training", "b", 4, seed=1, num_points=40)
    ds = ClipDataset(tmp_path, "training", clip_length=4)
    batch = collate_clips([ds[0], ds[1]])
    assert isinstance(batch, ClipBatch) and len(batch) == 4 and batch.batch_size == 2
    for t, fb in enumerate(batch.frames):
        assert isinstance(fb, FrameBatch)
        assert fb.points.dtype == torch.float32 and fb.points.shape[1] == 6
        assert fb.poses.dtype == torch.float64 and fb.poses.shape == (2, 4, 4)
        assert fb.timestamps.dtype == torch.int64 and fb.reset.dtype == torch.bool
        assert fb.boxes.dtype == torch.float32 and fb.boxes.shape[1] == 8
        assert fb.types.dtype == fb.num_points.dtype == fb.difficulty.dtype == torch.int64
        assert fb.segments == ["a", "b"] and fb.indices == [t, t]
        assert fb.reset.tolist() == [t == 0, t == 0]
        n_a = 0 if t == 2 else 30
        assert (fb.points[:, 0] == 0).sum() == n_a and (fb.points[:, 0] == 1).sum() == 40
        np.testing.assert_array_equal(fb.points[fb.points[:, 0] == 1, 1:].numpy(), ds[1].frames[t].points)
        boxes_b, types_b = fb.boxes_of(1)
        np.testing.assert_array_equal(boxes_b.numpy(), ds[1].frames[t].boxes)
        np.testing.assert_array_equal(types_b.numpy(), ds[1].frames[t].types)
        np.testing.assert_array_equal(fb.poses[0].numpy(), ds[0].frames[t].pose)
        assert fb.timestamps[1] - fb.timestamps[0] == 10_000_000
    assert batch.frames[1].timestamps[0] - batch.frames[0].timestamps[0] == STEP_MICROS
    with pytest.raises(ValueError, match="different lengths"):
        collate_clips([ds[0], ClipDataset(tmp_path, "training", clip_length=2)[0]])


def test_segment_streaming_in_order_with_resets(tmp_path):
    make_segment(tmp_path, "validation", "s1", 5, seed=0, num_points=20, gaps_before=(3,))
    make_segment(tmp_path, "validation", "s0", 3, seed=1, num_points=20, empty_frames=(1,))
    seen = [(fb.segments[0], fb.indices[0], bool(fb.reset[0])) for fb in iter_segment_frames(tmp_path, "validation")]
    assert seen == [("s0", 0, True), ("s0", 1, False), ("s0", 2, False),
                    ("s1", 0, True), ("s1", 1, False), ("s1", 2, False), ("s1", 3, True), ("s1", 4, False)]
    ds = SegmentDataset(tmp_path, "validation")
    fb = collate_stream([ds[1]])
    assert fb.batch_size == 1 and fb.points.shape == (0, 6)
    with pytest.raises(ValueError, match="one-frame"):
        collate_stream([ClipDataset(tmp_path, "validation", clip_length=2)[0]])


def test_split_segments_whole_and_balanced(tmp_path):
    for k, n in enumerate([9, 2, 5, 4, 3]):
        make_segment(tmp_path, "validation", f"s{k}", n, seed=k, num_points=5)
    segs = list_segments(tmp_path, "validation")
    parts = [split_segments(segs, 2, r) for r in range(2)]
    names = [[s.name for s in p] for p in parts]
    assert sorted(names[0] + names[1]) == [s.name for s in segs]
    assert not set(names[0]) & set(names[1])
    loads = [sum(s.num_frames for s in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= 1
    streams = [SegmentDataset(tmp_path, "validation", num_replicas=2, rank=r) for r in range(2)]
    assert sum(len(s) for s in streams) == 23
    assert SegmentDataset(tmp_path, "validation", num_replicas=8, rank=7).segments == []


def test_errors_name_the_folder_or_file(tmp_path):
    (tmp_path / "training").mkdir()
    with pytest.raises(FrameStoreError, match="no complete segments.*training"):
        ClipDataset(tmp_path, "training")
    with pytest.raises(FrameStoreError, match="validation"):
        SegmentDataset(tmp_path, "validation")
    seg = make_segment(tmp_path, "training", "a", 4, seed=0, num_points=5)
    (seg / "0002.npz").write_bytes(b"not a zip")
    ds = ClipDataset(tmp_path, "training", clip_length=4)
    with pytest.raises(FrameFormatError, match="0002.npz"):
        ds[0]
    seg = make_segment(tmp_path, "validation", "b", 2, seed=1, num_points=5)
    f = Frame.load_npz(seg / "0001.npz")
    f.timestamp_micros += 1
    f.save_npz(seg / "0001.npz")
    with pytest.raises(FrameStoreError, match="0001.npz: timestamp_micros"):
        list(iter_segment_frames(tmp_path, "validation"))
