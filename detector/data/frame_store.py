"""The frame store: converted segments on disk, one folder a segment.

Layout::

    root/<split>/<segment_name>/0000.npz, 0001.npz, ...   (Frame.save_npz)
    root/<split>/<segment_name>/segment.json               (written last: marks the segment complete)

``segment.json`` holds ``format_version`` (2: compact frame files, ``detector.data.frame_codec``; 1: float32
points, still read), ``segment``, ``split``, ``num_frames``,
``timestamps_micros`` (list), ``source`` (the record it came from) and, when the converter dropped
points with NaN/inf values, ``nonfinite_points`` (``{lidar name: count}``), and when it dropped invalid
labels, ``dropped_labels`` (``{reason: count}``, ``detector.data.frame_checks``). A segment folder
without it is incomplete and is ignored by readers (and redone by the converter). A ``segment.json``
whose split is not its folder's is refused, and a frame file whose timestamp is not the one
``segment.json`` lists at its index (a swapped or foreign file) is refused when loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from detector.atomic import write_json_atomic
from detector.data.frame import Frame, FrameFormatError
from detector.data.frame_checks import check_pose, check_stored_labels
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
    #: ``(reason, count)`` of the labels the converter dropped (``detector.data.frame_checks``)
    dropped_labels: tuple[tuple[str, int], ...] = ()

    def frame_path(self, index: int) -> Path:
        return self.path / f"{index:04d}.npz"

    def load_frame(self, index: int) -> Frame:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.path}: frame {index} out of range [0, {self.num_frames})")
        frame = Frame.load_npz(self.frame_path(index), segment=self.name, index=index)
        if frame.timestamp_micros != self.timestamps_micros[index]:
            raise FrameStoreError(
                f"{self.frame_path(index)}: timestamp_micros {frame.timestamp_micros} disagrees with "
                f"{self.path / SEGMENT_META} ({self.timestamps_micros[index]} at index {index}): a swapped or "
                "foreign frame file; convert the segment again (python -m data_tools.convert_waymo repairs it)")
        check_pose(frame.pose, f"{self.frame_path(index)}: pose")
        check_stored_labels(frame, str(self.frame_path(index)))
        return frame

    def frames(self):
        for i in range(self.num_frames):
            yield self.load_frame(i)


def write_segment_meta(segment_dir: str | os.PathLike, *, segment: str, split: str,
                       timestamps_micros: list[int], source: str = "",
                       nonfinite_points: dict[str, int] | None = None,
                       dropped_labels: dict[str, int] | None = None) -> Path:
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
    if dropped_labels:
        meta["dropped_labels"] = {str(k): int(v) for k, v in dropped_labels.items()}
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
        dropped = tuple((str(k), int(v)) for k, v in dict(meta.get("dropped_labels") or {}).items())
        meta_split = str(meta.get("split", segment_dir.parent.name))
    except (ValueError, KeyError, TypeError) as e:
        raise FrameStoreError(f"{meta_path}: unreadable segment metadata ({e})") from e
    if version not in READABLE_VERSIONS:
        raise FrameStoreError(f"{meta_path}: format_version {version}, this code reads {list(READABLE_VERSIONS)}")
    if len(ts) != n:
        raise FrameStoreError(f"{meta_path}: num_frames={n} but {len(ts)} timestamps")
    back = next((i for i in range(1, len(ts)) if ts[i] <= ts[i - 1]), None)
    if back is not None:
        raise FrameStoreError(f"{meta_path}: timestamps_micros[{back}] = {ts[back]} does not come after "
                              f"timestamps_micros[{back - 1}] = {ts[back - 1]} (a repeated or misordered frame); "
                              "convert the segment again (python -m data_tools.convert_waymo checks the order)")
    if split is not None and meta_split != split:
        raise FrameStoreError(f"{meta_path}: split {meta_split!r}, but the segment lies in the {split}/ folder "
                              f"(moved by hand?): move it back to {meta_split}/ or convert it into {split}/")
    return SegmentInfo(
        name=str(meta.get("segment", segment_dir.name)),
        split=split or str(meta.get("split", segment_dir.parent.name)),
        path=segment_dir,
        num_frames=n,
        timestamps_micros=ts,
        source=str(meta.get("source", "")),
        nonfinite_points=nonfinite,
        dropped_labels=dropped,
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


class SplitError(FrameStoreError):
    """A frame store whose segments disagree with their split folders."""


def check_store_splits(root: str | os.PathLike, splits: Iterable[str] = ()) -> None:
    """Refuse a frame store in which a segment name is a complete segment of two split folders (its
    frames would be scored on the data they were trained on). Reads folder listings only."""
    root = Path(root)
    seen: dict[str, str] = {}
    for split in dict.fromkeys([*SPLITS, *splits]):
        folder = root / split
        if not folder.is_dir():
            continue
        for d in sorted(folder.iterdir()):
            if not (d / SEGMENT_META).is_file():
                continue
            if d.name in seen:
                raise SplitError(f"{root}: segment {d.name} is in both {seen[d.name]}/ and {split}/ "
                                 "(its frames would be scored on the data they were trained on): remove one "
                                 f"copy, e.g. rm -r {folder / d.name}")
            seen[d.name] = split


__all__ = [
    "FORMAT_VERSION", "READABLE_VERSIONS", "SEGMENT_META", "SPLITS", "FrameStoreError", "FrameFormatError",
    "SegmentInfo", "write_segment_meta", "read_segment", "list_segments", "SplitError", "check_store_splits",
]
