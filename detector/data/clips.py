"""Clips over the frame store: T consecutive frames of one segment, and whole segments streamed in order.

Choices (documented here because callers depend on them):

- Clip windows start at 0, S, 2S, ... while a full window of T frames fits; with ``cover_tail`` (default)
  one more window ending at the segment's last frame is added when the strided windows miss the tail,
  so every frame is seen. Segments shorter than T give no clip (logged); all clips of a dataset have
  exactly T frames, so they batch without padding.
- ``reset`` is True at the first frame of every clip (no temporal state exists before it, whether or
  not the clip starts the segment), and inside a clip wherever the timestamp step from the previous
  frame exceeds ``max_gap_s`` or is not positive. For segment streaming it is True at each segment's
  first frame and on such gaps. Gaps are logged once (segment name, frame index) when the dataset is
  built and counted in ``num_gaps``.
- Points with a NaN/inf in any column are dropped; the count accumulates in ``num_nonfinite_points``
  and each frame file is logged once. Empty frames are valid. Counters live in the process that reads
  (each DataLoader worker keeps its own).
- Order per frame: drop non-finite points -> augmentation (clips only) -> crop points to
  ``point_range`` -> keep boxes of ``classes`` -> drop boxes whose centre lies outside ``point_range``
  unless ``keep_boxes_outside_range``. The frame store keeps every class (signs included); the
  ``classes`` filter decides only which boxes the batch carries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from detector.data.batch import Clip, FrameBatch
from detector.data.augment import AugmentConfig, GlobalTransform, sample_transform
from detector.data.collate import collate_stream
from detector.data.frame import TYPE_CYCLIST, TYPE_PEDESTRIAN, TYPE_VEHICLE, Frame
from detector.point_range import check_point_range, in_point_range
from detector.data.frame_store import FrameStoreError, SegmentInfo, list_segments

log = logging.getLogger(__name__)

DEFAULT_CLASSES = (TYPE_VEHICLE, TYPE_PEDESTRIAN, TYPE_CYCLIST)


def max_gap_micros(max_gap_s: float | None) -> int | None:
    """The timestamp step (microseconds) beyond which the temporal state starts afresh: ``max_gap_s``
    rounded to the microsecond (``None``: no limit). The data (``frame_resets``) and the model
    (``Detector``) both compare against this one number."""
    return None if max_gap_s is None else round(float(max_gap_s) * 1e6)


def frame_resets(timestamps_micros: Sequence[int], max_gap_s: float | None) -> np.ndarray:
    """(n,) bool: True at frame 0 and where the step from the previous timestamp exceeds
    ``max_gap_s`` or is not positive (``max_gap_s=None`` checks only the order)."""
    ts = np.asarray(timestamps_micros, np.int64)
    reset = np.zeros(len(ts), bool)
    if len(ts):
        reset[0] = True
        step = np.diff(ts)
        bad = step <= 0
        if max_gap_s is not None:
            bad |= step > max_gap_micros(max_gap_s)
        reset[1:] = bad
    return reset


def clip_starts(num_frames: int, clip_length: int, stride: int, cover_tail: bool = True) -> list[int]:
    """First frame of each window of ``clip_length`` frames over a segment of ``num_frames``."""
    if clip_length < 1 or stride < 1:
        raise ValueError(f"clip_length and stride must be >= 1, got {clip_length}, {stride}")
    last = num_frames - clip_length
    if last < 0:
        return []
    starts = list(range(0, last + 1, stride))
    if cover_tail and starts[-1] != last:
        starts.append(last)
    return starts


def split_segments(segments: Sequence[SegmentInfo], num_replicas: int, rank: int) -> list[SegmentInfo]:
    """Whole segments for one rank: greedy balance by frame count (largest first, to the least loaded
    rank, ties to the lower rank), deterministic; the result keeps name order."""
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} not in [0, {num_replicas})")
    load = [0] * num_replicas
    owner: dict[str, int] = {}
    for seg in sorted(segments, key=lambda s: (-s.num_frames, s.name)):
        r = min(range(num_replicas), key=lambda i: (load[i], i))
        owner[seg.name] = r
        load[r] += seg.num_frames
    return [s for s in segments if owner[s.name] == rank]


class _FrameStoreDataset(Dataset):
    """Shared loading and per-frame preparation of the clip and segment datasets."""

    def __init__(self, root: str | os.PathLike, split: str, *, max_gap_s: float | None,
                 point_range: Sequence[float] | None, classes: Sequence[int] | None,
                 keep_boxes_outside_range: bool, segments: Sequence[SegmentInfo] | None = None,
                 allow_empty: bool = False) -> None:
        self.root = os.fspath(root)
        self.split = split
        self.max_gap_s = None if max_gap_s is None else float(max_gap_s)
        self.point_range = None if point_range is None else np.asarray(check_point_range(point_range), np.float32)
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.keep_boxes_outside_range = bool(keep_boxes_outside_range)
        self.segments = list(segments) if segments is not None else list_segments(root, split)
        if not self.segments and not allow_empty:
            raise _no_segments(self.root, split)
        self.num_nonfinite_points = 0
        self._warned_files: set[str] = set()
        self.resets = [frame_resets(s.timestamps_micros, self.max_gap_s) for s in self.segments]
        self.num_gaps = 0
        for seg, reset in zip(self.segments, self.resets):
            for i in np.flatnonzero(reset[1:]) + 1:
                self.num_gaps += 1
                step = (seg.timestamps_micros[i] - seg.timestamps_micros[i - 1]) / 1e6
                log.warning("segment %s (%s): timestamp step %.3f s before frame %d exceeds max_gap_s=%s or is "
                            "not positive; the temporal state resets there", seg.name, seg.path, step, i,
                            self.max_gap_s)

    def _load(self, seg: SegmentInfo, index: int) -> Frame:
        frame = seg.load_frame(index)
        if frame.timestamp_micros != seg.timestamps_micros[index]:
            raise FrameStoreError(
                f"{seg.frame_path(index)}: timestamp_micros {frame.timestamp_micros} disagrees with "
                f"{seg.path / 'segment.json'} ({seg.timestamps_micros[index]})")
        total = len(frame.points)
        frame, dropped = drop_nonfinite_points(frame)
        if dropped:
            self.num_nonfinite_points += dropped
            path = str(seg.frame_path(index))
            if path not in self._warned_files:
                self._warned_files.add(path)
                log.warning("%s: dropped %d of %d points with NaN/inf values", path, dropped, total)
        return frame

    def _finish(self, frame: Frame) -> Frame:
        """Crop, then filter boxes (class, range)."""
        return prepare_frame(frame, self.point_range, self.classes, self.keep_boxes_outside_range)


def drop_nonfinite_points(frame: Frame) -> tuple[Frame, int]:
    """The frame without points that have NaN/inf values, and how many were dropped."""
    finite = np.isfinite(frame.points).all(axis=1)
    dropped = int(len(finite) - finite.sum())
    return (_select_points(frame, finite) if dropped else frame), dropped


def prepare_frame(frame: Frame, point_range: np.ndarray | Sequence[float] | None, classes: Sequence[int] | None,
                  keep_boxes_outside_range: bool) -> Frame:
    """Crop points to ``point_range``, keep boxes of ``classes`` (and, unless
    ``keep_boxes_outside_range``, whose centre lies in the range). The one per-frame preparation used
    by training, evaluation and prediction on raw records."""
    if point_range is not None:
        point_range = np.asarray(point_range, np.float32)
    if point_range is not None and len(frame.points):
        inside = in_point_range(frame.points[:, :3], point_range)
        if not inside.all():
            frame = _select_points(frame, inside)
    keep = np.ones(frame.num_boxes, bool)
    if classes is not None:
        keep &= np.isin(frame.types, classes)
    if point_range is not None and not keep_boxes_outside_range:
        keep &= in_point_range(frame.boxes[:, :3].astype(np.float32), point_range)
    if not keep.all():
        frame = replace(frame, boxes=frame.boxes[keep], types=frame.types[keep], ids=frame.ids[keep],
                        num_points=frame.num_points[keep], difficulty=frame.difficulty[keep])
    return frame


def _no_segments(root: str, split: str) -> FrameStoreError:
    return FrameStoreError(f"{os.path.join(root, split)}: no complete segments (folders with segment.json) in "
                           f"split '{split}' of the frame store {root}")


def _select_points(frame: Frame, mask: np.ndarray) -> Frame:
    return replace(frame, points=frame.points[mask], nlz=None if frame.nlz is None else frame.nlz[mask])


class ClipDataset(_FrameStoreDataset):
    """Item i: T consecutive frames of one segment as a ``Clip`` (see the module docstring).

    Each frame file is read once per item. ``augment`` (training only) draws one ``GlobalTransform``
    per clip and applies it to every frame and pose. The draw is a function of ``(seed, epoch, i)``
    only (not of worker processes or earlier draws), so runs resumed at an epoch boundary repeat it:
    the key may be ``i`` (epoch from ``set_epoch``) or ``(i, epoch)`` as ``ClipSampler(with_epoch=True)``
    yields, which also reaches DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike, split: str, clip_length: int = 4, stride: int | None = None,
                 max_gap_s: float | None = 0.5, augment: AugmentConfig | None = None,
                 point_range: Sequence[float] | None = None, classes: Sequence[int] | None = DEFAULT_CLASSES,
                 keep_boxes_outside_range: bool = False, cover_tail: bool = True, seed: int = 0,
                 segments: Sequence[SegmentInfo] | None = None) -> None:
        super().__init__(root, split, max_gap_s=max_gap_s, point_range=point_range, classes=classes,
                         keep_boxes_outside_range=keep_boxes_outside_range, segments=segments)
        self.clip_length = int(clip_length)
        self.stride = int(stride) if stride is not None else self.clip_length
        self.augment = AugmentConfig.from_any(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.index: list[tuple[int, int]] = []  # (segment position, first frame)
        short = []
        for k, seg in enumerate(self.segments):
            starts = clip_starts(seg.num_frames, self.clip_length, self.stride, cover_tail)
            if not starts:
                short.append(seg.name)
            self.index.extend((k, s) for s in starts)
        if short:
            log.warning("%s: %d segment(s) shorter than clip_length=%d give no clips: %s",
                        os.path.join(self.root, split), len(short), self.clip_length, ", ".join(short))
        if not self.index:
            raise FrameStoreError(
                f"{os.path.join(self.root, split)}: no segment has clip_length={self.clip_length} frames "
                f"(longest: {max(s.num_frames for s in self.segments)})")

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def augment_generator(self, i: int, epoch: int) -> torch.Generator:
        """The RNG of clip i's augmentation in ``epoch``."""
        state = np.random.SeedSequence([self.seed, epoch, i]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & (2**63 - 1))

    def __getitem__(self, key: int | tuple[int, int]) -> Clip:
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        k, start = self.index[i]
        seg = self.segments[k]
        frames = [self._load(seg, start + t) for t in range(self.clip_length)]
        reset = self.resets[k][start:start + self.clip_length].copy()
        reset[0] = True
        transform = None
        if self.augment is not None:
            transform = sample_transform(self.augment, self.augment_generator(i, epoch))
            frames = [transform.apply_frame(f) for f in frames]
        frames = [self._finish(f) for f in frames]
        return Clip(frames=frames, reset=reset, segment=seg.name, start=start, transform=transform)


class SegmentDataset(_FrameStoreDataset):
    """Whole segments frame by frame, in order (segment by name, then frame index), no augmentation.

    Item i is a one-frame ``Clip`` whose ``reset`` is True at the segment's first frame and on gaps.
    ``num_replicas``/``rank`` keep only this rank's whole segments (``split_segments``).
    """

    def __init__(self, root: str | os.PathLike, split: str, max_gap_s: float | None = 0.5,
                 point_range: Sequence[float] | None = None, classes: Sequence[int] | None = DEFAULT_CLASSES,
                 keep_boxes_outside_range: bool = False, num_replicas: int = 1, rank: int = 0,
                 segments: Sequence[SegmentInfo] | None = None) -> None:
        segs = list(segments) if segments is not None else list_segments(root, split)
        if not segs:
            raise _no_segments(os.fspath(root), split)
        # a rank owns no segment when there are more ranks than segments; it then streams nothing
        super().__init__(root, split, max_gap_s=max_gap_s, point_range=point_range, classes=classes,
                         keep_boxes_outside_range=keep_boxes_outside_range,
                         segments=split_segments(segs, num_replicas, rank), allow_empty=True)
        self.index = [(k, j) for k, seg in enumerate(self.segments) for j in range(seg.num_frames)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Clip:
        k, j = self.index[i]
        seg = self.segments[k]
        frame = self._finish(self._load(seg, j))
        return Clip(frames=[frame], reset=self.resets[k][j:j + 1].copy(), segment=seg.name, start=j)


def iter_segment_frames(root: str | os.PathLike, split: str, **kwargs) -> Iterator[FrameBatch]:
    """Every frame of every segment of ``root/split`` in order, as batch-size-1 ``FrameBatch``es with
    ``reset`` set at segment starts and on gaps. ``kwargs`` go to ``SegmentDataset``."""
    ds = SegmentDataset(root, split, **kwargs)
    for i in range(len(ds)):
        yield collate_stream([ds[i]])


__all__ = ["prepare_frame", "drop_nonfinite_points", "Clip", "ClipDataset", "SegmentDataset", "iter_segment_frames", "frame_resets", "clip_starts",
           "split_segments", "DEFAULT_CLASSES"]
