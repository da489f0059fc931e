"""Raw Waymo segments named by an ``input=`` path, in either format, for the entry points that read
raw data without conversion (``detector.predict``, ``detector.visualize``).

An input is a v1 record file, a folder of them (searched recursively), a v2 component file
(``root/<split>/<component>/<segment>.parquet``: its segment), a v2 split folder (``root/<split>``:
all its segments), a v2 root (all splits), or ``root/<split>/<segment>`` (a split folder and a
segment name).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from detector.data import waymo_v2
from detector.data.frame import Frame
from detector.errors import InputError

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")


class SegmentInputError(InputError):
    """An ``input=`` that names no readable segment; the message says what was expected."""


@dataclass(frozen=True)
class RawSegment:
    """One segment to read: ``format`` ``"v1"`` (``path`` is the record file) or ``"v2"`` (``path`` is
    its ``lidar`` component file, the other components beside it)."""

    path: Path
    format: str

    @classmethod
    def from_v2(cls, segment: waymo_v2.V2Segment) -> "RawSegment":
        return cls(segment.path(waymo_v2.S.LIDAR), "v2")

    def v2(self) -> waymo_v2.V2Segment:
        return waymo_v2.V2Segment(self.path.parent.parent.parent, self.path.parent.parent.name, self.path.stem)

    def name(self) -> str:
        """The context name (v1: read from the first record; v2: the file name)."""
        if self.format == "v2":
            return self.path.stem
        from detector.data.waymo_reader import read_context_name

        return read_context_name(self.path)

    def frames(self, second_return: bool = True, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames ``start <= index < stop`` in order (v1: records; v2: timestamps)."""
        if self.format == "v2":
            yield from waymo_v2.iter_frames(self.v2(), second_return=second_return, start=start, stop=stop)
            return
        from detector.data.waymo_reader import iter_frames

        yield from iter_frames(self.path, second_return=second_return, start=start, stop=stop)


def _is_record(p: Path) -> bool:
    return p.suffix in TFRECORD_SUFFIXES or ".tfrecord" in p.name


def find_segments(path: str | os.PathLike) -> list[RawSegment]:
    """Every segment that ``path`` names (see the module docstring), v1 files sorted, v2 by split and name."""
    p = Path(path)
    v2 = waymo_v2.segment_from_path(p)
    if v2 is not None:
        return [RawSegment.from_v2(v2)]
    if p.is_file() and p.suffix == ".parquet":
        raise SegmentInputError(f"input={p}: a parquet file outside a v2 component folder (expected "
                                f"<root>/<split>/<component>/<segment>.parquet, component one of "
                                f"{', '.join(waymo_v2.KNOWN_COMPONENTS)})")
    if p.is_file():
        return [RawSegment(p, "v1")]
    if not p.is_dir():
        raise SegmentInputError(f"input not found: {p}")
    if waymo_v2.is_v2_split(p):
        found = [RawSegment.from_v2(s) for s in waymo_v2.split_segments(p.parent, p.name)]
    elif waymo_v2.is_v2_root(p):
        found = [RawSegment.from_v2(s) for s in waymo_v2.find_segments(p)]
    else:
        found = [RawSegment(q, "v1") for q in sorted(p.rglob("*")) if _is_record(q) and q.is_file()]
    if not found:
        raise SegmentInputError(f"{p}: no .tfrecord files in this folder (searched recursively) and no Waymo v2 "
                                f"component folders ({', '.join(waymo_v2.S.REQUIRED)}, ...) in it")
    return found


def check_unique_names(segments: list[RawSegment]) -> list[str]:
    """The segments' context names; a ``SegmentInputError`` naming both files when one is repeated (the
    same segment twice under a folder: its every detection would be written, and scored, twice)."""
    names: dict[str, Path] = {}
    for seg in segments:
        name = seg.name()
        if name in names:
            raise SegmentInputError(f"{seg.path}: segment {name} again (also in {names[name]}): each segment must be "
                                    "given once; remove the copy or name one file")
        names[name] = seg.path
    return list(names)


def input_files(segments: list[RawSegment]) -> list[Path]:
    """Every file the segments are read from (v1: the record; v2: each component file)."""
    out: list[Path] = []
    for seg in segments:
        if seg.format == "v2":
            v2 = seg.v2()
            out += [v2.path(c) for c in v2.components()]
        else:
            out.append(seg.path)
    return out


def find_segment(path: str | os.PathLike) -> RawSegment:
    """The one segment ``path`` names; an error when it names several."""
    found = find_segments(path)
    if len(found) != 1:
        raise SegmentInputError(f"input={path} holds {len(found)} segments ({found[0].path.name}, ...): "
                                "name one record file, or one v2 component file or split/segment")
    return found[0]


__all__ = ["TFRECORD_SUFFIXES", "SegmentInputError", "RawSegment", "find_segments", "find_segment",
           "check_unique_names", "input_files"]


def segment_frame_batches(segments: list[RawSegment], point_range, max_gap_s: float | None,
                          second_return: bool = True):
    """Every frame of every segment as a batch-size-1 ``FrameBatch``, prepared as for evaluation (NaN/inf
    points dropped with a warning, the points rounded as the frame store keeps them
    (``frame_codec.as_stored``), points cropped to ``point_range``, every box kept), with ``reset`` at
    segment starts and timestamp gaps beyond ``max_gap_s``."""
    import logging

    from detector.data.clips import drop_nonfinite_points, frame_resets, prepare_frame
    from detector.data.collate import collate_frames
    from detector.data.frame_codec import as_stored

    log = logging.getLogger(__name__)
    for segment in segments:
        frames = []
        for frame in segment.frames(second_return=second_return):
            frame, dropped = drop_nonfinite_points(frame)
            if dropped:
                log.warning("%s frame %d: dropped %d points with NaN/inf values", segment.path, frame.index, dropped)
            frame.points = as_stored(frame.points)  # millimetres, float16 intensity: as the frame store gives them
            frames.append(prepare_frame(frame, point_range, classes=None, keep_boxes_outside_range=True))
            # a segment is ~200 frames: holding one segment's prepared frames keeps the gap logic simple
        resets = frame_resets([f.timestamp_micros for f in frames], max_gap_s)
        for f, r in zip(frames, resets):
            yield collate_frames([f], [bool(r)])
