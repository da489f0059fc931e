"""``python -m data_tools.stats dst=DIR [split=NAME]``: what a frame store holds.

Per split: complete segments, frames, points per frame (mean/min/max), boxes per class and per
difficulty level, incomplete segment folders (no ``segment.json``) if any, the points the converter
dropped for NaN/inf values (per lidar), the labels it dropped (NaN/inf values, non-positive sizes,
repeated ids) and any non-finite points still in the frames. A damaged frame
file stops it with the file's path (``python -m data_tools.convert_waymo`` repairs it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from detector import CONFIG_DIR
from detector.data.frame import TYPE_NAMES
from detector.data.frame_store import SPLITS, FrameStoreError, list_segments
from detector.errors import user_errors


@dataclass
class SplitStats:
    split: str
    segments: int = 0
    incomplete: int = 0
    frames: int = 0
    points: list[int] = field(default_factory=list)
    boxes_by_type: Counter = field(default_factory=Counter)
    boxes_by_difficulty: Counter = field(default_factory=Counter)
    boxes_without_points: int = 0
    nonfinite_dropped: Counter = field(default_factory=Counter)  # lidar -> points dropped at conversion
    nonfinite_points: int = 0  # points with NaN/inf still in the frame files
    dropped_labels: Counter = field(default_factory=Counter)  # reason -> labels dropped at conversion


def split_stats(root: str | Path, split: str) -> SplitStats:
    segs = list_segments(root, split)
    st = SplitStats(split, segments=len(segs))
    st.incomplete = sum(1 for d in (Path(root) / split).iterdir() if d.is_dir()) - len(segs)
    for seg in segs:
        st.nonfinite_dropped.update(dict(seg.nonfinite_points))
        st.dropped_labels.update(dict(seg.dropped_labels))
        for frame in seg.frames():
            st.nonfinite_points += int(len(frame.points) - np.count_nonzero(np.isfinite(frame.points).all(axis=1)))
            st.frames += 1
            st.points.append(len(frame.points))
            st.boxes_by_type.update(frame.types.tolist())
            st.boxes_by_difficulty.update(frame.difficulty.tolist())
            st.boxes_without_points += int(np.count_nonzero(frame.num_points == 0))
    return st


def store_stats(root: str | Path, splits: list[str] | None = None) -> list[SplitStats]:
    """Stats of every split present (or of ``splits``); raises ``FrameStoreError`` for a folder that is
    not a frame store (no split folder, or no complete segment in any)."""
    root = Path(root)
    if not root.is_dir():
        raise FrameStoreError(f"{root}: no such folder")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if splits is None:
        if not present:
            raise FrameStoreError(f"{root}: not a frame store (no {'/'.join(SPLITS)} folder)")
        splits = present
    out = [split_stats(root, s) for s in splits]
    if not any(st.segments for st in out):
        raise FrameStoreError(f"{root}: not a frame store (no complete segment, i.e. no <split>/<segment>/"
                              f"segment.json, in {', '.join(splits)})")
    return out


def format_stats(stats: list[SplitStats]) -> str:
    lines = []
    for st in stats:
        lines.append(f"[{st.split}] segments: {st.segments}"
                     + (f" (+{st.incomplete} incomplete)" if st.incomplete else "")
                     + f", frames: {st.frames}")
        if st.frames:
            p = np.array(st.points)
            lines.append(f"  points per frame: mean {p.mean():.0f}, min {p.min()}, max {p.max()}")
        total = sum(st.boxes_by_type.values())
        per_frame = total / st.frames if st.frames else 0.0
        lines.append(f"  boxes: {total} ({per_frame:.1f} per frame), {st.boxes_without_points} with no points")
        for t, n in sorted(st.boxes_by_type.items()):
            lines.append(f"    {TYPE_NAMES.get(t, f'type {t}'):<11} {n}")
        if st.nonfinite_dropped:
            lines.append(f"  points with NaN/inf dropped at conversion: {sum(st.nonfinite_dropped.values())} ("
                         + ", ".join(f"{k} {n}" for k, n in sorted(st.nonfinite_dropped.items())) + ")")
        if st.dropped_labels:
            lines.append(f"  labels dropped at conversion: {sum(st.dropped_labels.values())} ("
                         + ", ".join(f"{k} {n}" for k, n in sorted(st.dropped_labels.items())) + ")")
        if st.nonfinite_points:
            lines.append(f"  points with NaN/inf in the frame files: {st.nonfinite_points} (dropped when read)")
        levels = {0: "unset (0)", 1: "LEVEL_1", 2: "LEVEL_2"}
        lines.append("  boxes by difficulty: " + ", ".join(
            f"{levels.get(d, d)} {n}" for d, n in sorted(st.boxes_by_difficulty.items())))
    return "\n".join(lines)


@hydra.main(config_path=CONFIG_DIR, config_name="stats", version_base="1.3")
@user_errors(prefix="stats")
def main(cfg: DictConfig) -> None:
    stats = store_stats(cfg.dst, None if cfg.split is None else [str(cfg.split)])
    print(format_stats(stats))


if __name__ == "__main__":
    main()
