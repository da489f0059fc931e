"""What the converter checks about a segment besides its records' framing: that a converted segment
is intact before it is skipped, that a record file holds as much time as its context name says, and
how many points it dropped for NaN/inf values.

Waymo context names end with the segment's start and end offsets in the log, seconds and
milliseconds: ``10017090168044687777_6380_000_6400_000`` is 6380.000 s to 6400.000 s, 20 s of 10 Hz
sweeps. A record file cut exactly at a record boundary reads without a framing error; only the name
tells that frames are missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from detector.data.frame import FrameFormatError, verify_frame_file
from detector.data.frame_store import SegmentInfo

#: Frame period of Waymo's lidar (10 Hz).
FRAME_SECONDS = 0.1
#: A segment may end this much earlier than its name says (Waymo's own segments hold 198-199 of the
#: nominal 200 frames) before the converter warns that the file looks cut short: 1 s, or a tenth of
#: the named duration for shorter segments.
SHORTFALL_TOLERANCE_S = 1.0
SHORTFALL_TOLERANCE_FRACTION = 0.1

_OFFSETS = re.compile(r"_(\d+)_(\d{3})_(\d+)_(\d{3})$")


def named_duration_s(segment: str) -> float | None:
    """Seconds between the start and end offsets at the end of a Waymo context name, or None."""
    m = _OFFSETS.search(segment)
    if not m:
        return None
    start = int(m.group(1)) + int(m.group(2)) / 1000
    end = int(m.group(3)) + int(m.group(4)) / 1000
    return end - start if end > start else None


def shortfall_warning(segment: str, source: str, timestamps_micros: list[int]) -> str | None:
    """A warning with the frame counts when the frames' timestamps cover less time than the segment's
    name says (the record file was probably cut at a record boundary); None when they agree."""
    duration = named_duration_s(segment)
    if duration is None or not timestamps_micros:
        return None
    covered = (max(timestamps_micros) - min(timestamps_micros)) / 1e6 + FRAME_SECONDS
    if covered >= duration - min(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_FRACTION * duration) - 1e-6:
        return None
    expected = round(duration / FRAME_SECONDS)
    return (f"{source}: segment {segment} is named for {duration:g} s (~{expected} frames at 10 Hz) but its "
            f"{len(timestamps_micros)} frames cover {covered:.1f} s: the file may be cut short at a record "
            "boundary (download it again)")


def damaged_frame(info: SegmentInfo) -> str | None:
    """Why a converted segment cannot be trusted, or None: a frame file missing or failing its zip CRCs,
    or one that is not the frame ``segment.json`` lists at its index (its timestamp differs: a file
    swapped with another of the segment, or copied from another segment)."""
    for i in range(info.num_frames):
        path = info.frame_path(i)
        try:
            verify_frame_file(path)
            with np.load(path, allow_pickle=False) as z:
                ts = int(z["timestamp_micros"])
        except FrameFormatError as e:
            return str(e)
        if ts != info.timestamps_micros[i]:
            return (f"{path}: timestamp_micros {ts}, but segment.json lists {info.timestamps_micros[i]} at index {i} "
                    "(a swapped or foreign frame file)")
    return None


def format_nonfinite(per_record: Mapping[int, Mapping[str, int]]) -> str:
    """``"12 points (record 3: TOP 10, FRONT 2)"`` for the points dropped for NaN/inf values."""
    total = sum(sum(d.values()) for d in per_record.values())
    parts = [f"record {r}: " + ", ".join(f"{lidar} {n}" for lidar, n in sorted(d.items()))
             for r, d in sorted(per_record.items())]
    shown = "; ".join(parts[:5]) + ("; ..." if len(parts) > 5 else "")
    return f"{total} points with NaN/inf values dropped ({shown})"


def lidar_totals(per_record: Mapping[int, Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in per_record.values():
        for lidar, n in d.items():
            out[lidar] = out.get(lidar, 0) + int(n)
    return dict(sorted(out.items()))
