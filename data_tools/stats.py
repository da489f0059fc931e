"""``python -m data_tools.stats dst=DIR [split=NAME]``: what a frame store holds.

``python -m data_tools.stats PATH --compare GT.bin [--out TABLE.md]``: the label statistics of PATH (a frame
store, a folder of Waymo v1 segment records, or a folder with a frame store somewhere below it) beside those
of real Waymo labels in ``GT.bin`` (``metrics_pb2.Objects``, e.g. a ground-truth file of the Waymo
metrics), per class and Waymo range bucket ([0, 30), [30, 50), [50, 75] m from the ego to the box centre):
the share of the labelled objects of the class in the bucket, the median and 10th percentile of
``num_lidar_points_in_box``, and per class the LEVEL_2 share (difficulty 2 or at most 5 points), each with
whether it lies within the calibration bounds (``BOUNDS``).

Per split: complete segments, frames, points per frame (mean/min/max), boxes per class and per
difficulty level, incomplete segment folders (no ``segment.json``) if any, the points the converter
dropped for NaN/inf values (per lidar), the labels it dropped (NaN/inf values, non-positive sizes,
repeated ids) and any non-finite points still in the frames. A damaged frame
file stops it with the file's path (``python -m data_tools.convert_waymo`` repairs it).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from detector import CONFIG_DIR
from detector.data.frame import TYPE_NAMES
from detector.data.frame_store import SPLITS, FrameStoreError, list_segments
from detector.errors import InputError, user_errors


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


# -- label statistics against real Waymo labels (--compare) ---------------------------------------------------

#: Waymo's range buckets (metres from the ego to the box centre; the last one closed at 75).
BUCKETS = ((0.0, 30.0), (30.0, 50.0), (50.0, 75.0))
#: Classes compared (Waymo Label.Type): vehicle, pedestrian, cyclist.
COMPARED = (1, 2, 4)
#: Calibration bounds: share, median and 10th percentile within this relative distance of the real
#: figure; the LEVEL_2 share of every class within LEVEL_2_SHARE.
RELATIVE = 0.30
LEVEL_2_SHARE = (0.05, 0.35)


@dataclass
class Labels:
    """Every label of a data set, flat: type, distance (m, ego to box centre), points in box, difficulty."""

    types: np.ndarray
    distance: np.ndarray
    points: np.ndarray
    difficulty: np.ndarray
    frames: int
    source: str

    @classmethod
    def concat(cls, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], frames: int,
               source: str) -> Labels:
        cols = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4)]
        return cls(cols[0].astype(np.int64), cols[1].astype(np.float64), cols[2].astype(np.int64),
                   cols[3].astype(np.int64), frames, source)


def labels_from_ground_truth(path: str | Path) -> Labels:
    """The labels of a ``metrics_pb2.Objects`` file (the frames are its distinct (context, timestamp) pairs)."""
    from google.protobuf.message import DecodeError
    from waymo_open_dataset.protos import metrics_pb2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (--compare wants a metrics_pb2.Objects file of real labels)")
    objects = metrics_pb2.Objects()
    try:
        objects.ParseFromString(path.read_bytes())
    except DecodeError as e:
        raise InputError(f"{path}: not a metrics_pb2.Objects file ({e})") from e
    rows = [(o.object.type, float(np.hypot(o.object.box.center_x, o.object.box.center_y)),
             o.object.num_lidar_points_in_box, o.object.detection_difficulty_level) for o in objects.objects]
    if not rows:
        raise InputError(f"{path}: holds no objects")
    frames = len({(o.context_name, o.frame_timestamp_micros) for o in objects.objects})
    return Labels.concat([tuple(np.array(c) for c in zip(*rows))], frames, str(path))


def _store_root(path: Path) -> Path | None:
    """``path`` if it is a frame store, else the first frame store below it (None if there is none)."""
    for candidate in [path, *sorted(p.parent.parent for p in path.rglob("segment.json"))]:
        if any((candidate / s).is_dir() for s in SPLITS) and any(list_segments(candidate, s) for s in SPLITS
                                                                 if (candidate / s).is_dir()):
            return candidate
    return None


def labels_from_store(root: str | Path) -> Labels:
    """The labels of every frame of every split of a frame store (the label arrays alone are read)."""
    root = Path(root)
    parts, frames = [], 0
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for seg in list_segments(root, split):
            for i in range(seg.num_frames):
                with np.load(seg.frame_path(i), allow_pickle=False) as z:
                    boxes = z["boxes"].reshape(-1, 7)
                    parts.append((z["types"], np.hypot(boxes[:, 0], boxes[:, 1]), z["num_points"], z["difficulty"]))
                frames += 1
    return Labels.concat(parts, frames, str(root))


def labels_from_records(paths: list[Path], source: str) -> Labels:
    """The labels of the frames of Waymo v1 segment records."""
    from detector.data.tfrecord import iter_records
    from detector.data.waymo_reader import parse_frame

    parts, frames = [], 0
    for path in paths:
        for k, record in enumerate(iter_records(path)):
            labels = parse_frame(record, f"{path} record {k}").laser_labels
            parts.append((np.array([lab.type for lab in labels], np.int64),
                          np.array([np.hypot(lab.box.center_x, lab.box.center_y) for lab in labels]),
                          np.array([lab.num_lidar_points_in_box for lab in labels], np.int64),
                          np.array([lab.detection_difficulty_level for lab in labels], np.int64)))
            frames += 1
    return Labels.concat(parts, frames, source)


def find_labels(path: str | Path) -> Labels:
    """The labels of a frame store, a folder of v1 segment records, or a folder with a store below it."""
    path = Path(path)
    if not path.exists():
        raise FrameStoreError(f"{path}: no such file or folder")
    if path.is_file():
        return labels_from_records([path], str(path))
    store = _store_root(path)
    if store is not None:
        return labels_from_store(store)
    records = sorted(path.rglob("*.tfrecord"))
    if records:
        return labels_from_records(records, str(path))
    raise FrameStoreError(f"{path}: neither a frame store nor a folder of .tfrecord segments (nor one below it)")


@dataclass
class BucketStats:
    share: float | None  # of the class's labels within 75 m
    median: float | None
    p10: float | None
    count: int


@dataclass
class Calibration:
    """Per class: the bucket statistics and the LEVEL_2 share (of the class's labels within 75 m)."""

    buckets: dict[int, list[BucketStats]]
    level_2: dict[int, float | None]
    count: dict[int, int]
    frames: int


def calibration(labels: Labels) -> Calibration:
    buckets, level_2, count = {}, {}, {}
    for t in COMPARED:
        mine = (labels.types == t) & (labels.distance <= BUCKETS[-1][1])
        d, n = labels.distance[mine], labels.points[mine]
        count[t] = int(mine.sum())
        level_2[t] = float(np.mean((labels.difficulty[mine] == 2) | (n <= 5))) if count[t] else None
        rows = []
        for lo, hi in BUCKETS:
            inb = (d >= lo) & ((d < hi) if hi < BUCKETS[-1][1] else (d <= hi))
            k = int(inb.sum())
            rows.append(BucketStats(k / count[t] if count[t] else None, float(np.median(n[inb])) if k else None,
                                    float(np.percentile(n[inb], 10)) if k else None, k))
        buckets[t] = rows
    return Calibration(buckets, level_2, count, labels.frames)


def _within(value: float | None, real: float | None) -> bool | None:
    if value is None or real is None:
        return None
    return abs(value - real) <= RELATIVE * abs(real)


def compare(synthetic: Calibration, real: Calibration) -> tuple[str, int, int]:
    """The markdown table, synthetic beside real, and (checks met, checks made)."""
    met = made = 0

    def mark(ok: bool | None) -> str:
        nonlocal met, made
        if ok is None:
            return ""
        made += 1
        met += ok
        return " ✓" if ok else " ✗"

    def num(x, fmt="{:.0f}"):
        return "–" if x is None else fmt.format(x)

    lines = [f"Synthetic: {synthetic.frames} frames; real: {real.frames} frames. Per class and range bucket (m, ego "
             "to box centre): share of the class's labels within 75 m, median and 10th percentile of the points in "
             f"the box (synthetic / real; ✓ within ±{RELATIVE:.0%} of real). Cyclists (no real figures): their "
             "median between pedestrians' and vehicles' (✓).", "",
             "| class | range | labels (syn / real) | share | median points | p10 points |",
             "| --- | --- | --- | --- | --- | --- |"]
    for t in COMPARED:
        for b, (lo, hi) in enumerate(BUCKETS):
            s, r = synthetic.buckets[t][b], real.buckets[t][b]
            name = TYPE_NAMES.get(t, str(t))
            rng = f"[{lo:.0f}, {hi:.0f}{']' if b == len(BUCKETS) - 1 else ')'}"
            if t == 4 and not r.count:
                veh, ped = synthetic.buckets[1][b].median, synthetic.buckets[2][b].median
                between = (None if None in (s.median, veh, ped) else min(veh, ped) <= s.median <= max(veh, ped))
                lines.append(f"| {name} | {rng} | {s.count} / 0 | {num(s.share, '{:.2f}')} | {num(s.median)}"
                             f"{mark(between)} (ped {num(ped)}, veh {num(veh)}) | {num(s.p10)} |")
                continue
            lines.append(f"| {name} | {rng} | {s.count} / {r.count} "
                         f"| {num(s.share, '{:.2f}')} / {num(r.share, '{:.2f}')}{mark(_within(s.share, r.share))} "
                         f"| {num(s.median)} / {num(r.median)}{mark(_within(s.median, r.median))} "
                         f"| {num(s.p10)} / {num(r.p10)}{mark(_within(s.p10, r.p10))} |")
    lo, hi = LEVEL_2_SHARE
    lines += ["", f"LEVEL_2 share (difficulty 2 or ≤ 5 points; ✓ within {lo:.0%}–{hi:.0%}):", "",
              "| class | synthetic | real |", "| --- | --- | --- |"]
    for t in COMPARED:
        s_l2, r_l2 = synthetic.level_2[t], real.level_2[t]
        ok = None if s_l2 is None else lo <= s_l2 <= hi
        lines.append(f"| {TYPE_NAMES.get(t, str(t))} | {num(s_l2, '{:.2f}')}{mark(ok)} | {num(r_l2, '{:.2f}')} |")
    lines += ["", f"Within bounds: {met} of {made} checks."]
    return "\n".join(lines) + "\n", met, made


def parse_compare_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m data_tools.stats", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="a frame store, a folder of .tfrecord segments, or a folder with a store below it")
    ap.add_argument("--compare", required=True, metavar="GT.bin", help="real labels (metrics_pb2.Objects)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    return ap.parse_args(argv)


@user_errors(prefix="stats", returns=True)
def compare_main(argv: list[str]) -> int:
    args = parse_compare_args(argv)
    real = calibration(labels_from_ground_truth(args.compare))
    synthetic = calibration(find_labels(args.path))
    text, met, made = compare(synthetic, real)
    print(text, end="")
    if args.out:
        from detector.atomic import atomic_open

        with atomic_open(Path(args.out), "w") as f:
            f.write(text)
    return 0


@hydra.main(config_path=CONFIG_DIR, config_name="stats", version_base="1.3")
@user_errors(prefix="stats")
def main(cfg: DictConfig) -> None:
    stats = store_stats(cfg.dst, None if cfg.split is None else [str(cfg.split)])
    print(format_stats(stats))


def cli() -> None:
    """``--compare`` runs the comparison (argparse); anything else is the store summary (Hydra)."""
    if any(a == "--compare" or a.startswith("--compare=") for a in sys.argv[1:]):
        sys.exit(compare_main(sys.argv[1:]))
    main()


if __name__ == "__main__":
    cli()
