"""The frame store: converted segments on disk, one folder a segment.

Layout::

    root/<split>/<segment_name>/0000.npz, 0001.npz, ...   (Frame.save_npz)
    root/<split>/<segment_name>/segment.json               (written last: marks the segment complete)

``segment.json`` holds ``format_version`` (2: compact frame files, ``detector.data.frame_codec``; 1: float32
points, still read), ``segment``, ``split``, ``num_frames``,
``timestamps_micros`` (list), ``source`` (the record it came from) and, when the converter dropped
points with NaN/inf values, ``nonfinite_points`` (``{lidar name: count}``). A segment folder without it is
incomplete and is ignored by readers (and redone by the converter).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from detector.atomic import write_json_atomic
from detector.data.frame import Frame, FrameFormatError
from detector.errors import InputError

#: Written into new segments: 2 = compact frame files (``detector.data.frame_codec``); 1 = float32 points.
FORMAT_VERSION = 2
#: Every version this code reads (a store converted before keeps working).
READABLE_VERSIONS = (1, 2)
SEGMENT_META = "segment.json"
SPLITS = ("training", "validation", "testing")


class FrameStoreError(InputError):
    """A folder that is not a frame store, or a segment whose files disagree with its metadata."""


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    split: str
    path: Path
    num_frames: int
    timestamps_micros: tuple[int, ...]
    source: str = ""
    #: ``(lidar name, count)`` of the points the converter dropped for NaN/inf values
    nonfinite_points: tuple[tuple[str, int], ...] = ()

    def frame_path(self, index: int) -> Path:
        return self.path / f"{index:04d}.npz"

    def load_frame(self, index: int) -> Frame:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.path}: frame {index} out of range [0, {self.num_frames})")
        return Frame.load_npz(self.frame_path(index), segment=self.name, index=index)

    def frames(self):
        for i in range(self.num_frames):
            yield self.load_frame(i)


def write_segment_meta(segment_dir: str | os.PathLike, *, segment: str, split: str,
                       timestamps_micros: list[int], source: str = "",
                       nonfinite_points: dict[str, int] | None = None) -> Path:
    """Write ``segment.json`` (call after every frame file is in place)."""
    path = Path(segment_dir) / SEGMENT_META
    meta = {
        "format_version": FORMAT_VERSION,
        "segment": segment,
        "split": split,
        "num_frames": len(timestamps_micros),
        "timestamps_micros": [int(t) for t in timestamps_micros],
        "source": str(source),
    }
    if nonfinite_points:
        meta["nonfinite_points"] = {str(k): int(v) for k, v in nonfinite_points.items()}
    write_json_atomic(path, meta)
    return path


def read_segment(segment_dir: str | os.PathLike, split: str | None = None) -> SegmentInfo | None:
    """The segment in ``segment_dir``, or None when it is incomplete (no ``segment.json``)."""
    segment_dir = Path(segment_dir)
    meta_path = segment_dir / SEGMENT_META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        version = int(meta["format_version"])
        n = int(meta["num_frames"])
        ts = tuple(int(t) for t in meta["timestamps_micros"])
        nonfinite = tuple(sorted((str(k), int(v)) for k, v in dict(meta.get("nonfinite_points") or {}).items()))
    except (ValueError, KeyError, TypeError) as e:
        raise FrameStoreError(f"{meta_path}: unreadable segment metadata ({e})") from e
    if version not in READABLE_VERSIONS:
        raise FrameStoreError(f"{meta_path}: format_version {version}, this code reads {list(READABLE_VERSIONS)}")
    if len(ts) != n:
        raise FrameStoreError(f"{meta_path}: num_frames={n} but {len(ts)} timestamps")
    return SegmentInfo(
        name=str(meta.get("segment", segment_dir.name)),
        split=split or str(meta.get("split", segment_dir.parent.name)),
        path=segment_dir,
        num_frames=n,
        timestamps_micros=ts,
        source=str(meta.get("source", "")),
        nonfinite_points=nonfinite,
    )


def list_segments(root: str | os.PathLike, split: str) -> list[SegmentInfo]:
    """Complete segments of ``root/split``, sorted by name. Raises if the split folder is missing."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        present = [s for s in SPLITS if (Path(root) / s).is_dir()]
        raise FrameStoreError(
            f"{split_dir}: no such split folder in the frame store {root} (splits present: {present or 'none'})"
        )
    segs = []
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        info = read_segment(d, split)
        if info is not None:
            segs.append(info)
    return segs


__all__ = [
    "FORMAT_VERSION", "READABLE_VERSIONS", "SEGMENT_META", "SPLITS", "FrameStoreError", "FrameFormatError", "SegmentInfo",
    "write_segment_meta", "read_segment", "list_segments",
]
