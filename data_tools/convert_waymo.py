"""``python -m data_tools.convert_waymo src=DIR dst=DIR workers=K [shard=i/n]``: Waymo data -> frame store.

``src/<split>/*.tfrecord`` (v1 records; split in training, validation, testing) or
``src/<split>/<component>/<segment>.parquet`` (v2 components, ``detector.data.waymo_v2``) becomes
``dst/<split>/<segment>/<index:04d>.npz`` plus ``segment.json``, the segment being the records'
``context.name`` (v1) or the components' ``key.segment_context_name`` (v2, which is also their file
name); v2 frames are numbered in timestamp order. A split holds one format or the other. Frame files
are written atomically and ``segment.json`` last, so a segment whose metadata is present, names the
same source and whose frame files pass their zip CRCs is complete and is skipped on a re-run; anything
else is converted again from scratch (giving byte-identical files). A corrupt or truncated record fails
its segment with the file and byte offset in the message (v2: a missing, truncated or malformed
component file fails its segment with the file named), and the segment's folder is emptied; the other
segments are still converted, and the command then exits with status 2 and a summary. Two converters
writing one ``dst`` at once (a job array with a repeated shard, a re-run while the first still runs)
claim each segment before writing it (``data_tools.claims``): the second waits for a segment the first
holds and then skips it as complete (``busy=skip``: leaves it to the other), never writing it at once. Points with
NaN/inf values are dropped and counted per record and lidar; a file whose frames cover less time than
its context name says is reported as cut short. Frames are checked as they are read
(``detector.data.frame_checks``): a pose that is not finite and rigid, or a timestamp that does not
increase, fails the segment naming the record; labels with NaN/inf values, non-positive sizes, a type
outside 0..4 or a repeated id are dropped and counted (summary, ``segment.json``'s ``dropped_labels``,
``stats``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import pyarrow as pa
from google.protobuf.message import DecodeError
from omegaconf import DictConfig

from data_tools.claims import SegmentBusy, claim_segment
from data_tools.parallel import map_segments
from data_tools.segment_checks import damaged_frame, format_nonfinite, lidar_totals, shortfall_warning
from detector import CONFIG_DIR
from detector.atomic import ensure_dir
from detector.config_checks import CONVERT_CHECKS, check_config
from detector.data import waymo_v2
from detector.data.frame import FrameFormatError
from detector.data.frame_checks import SegmentFrameChecks, format_dropped_labels, label_totals
from detector.data.frame_store import SEGMENT_META, SPLITS, FrameStoreError, read_segment, write_segment_meta
from detector.data.waymo_reader import iter_frames, read_context_name
from detector.errors import InputError, user_errors
from detector.output_paths import check_not_input

_FRAME_FILE = re.compile(r"^\d{4,}\.npz$")


@dataclass(frozen=True)
class SegmentJob:
    split: str
    path: Path  # the record file (v1), or the segment's lidar component file (v2)
    source: str  # its path relative to src, stored in segment.json
    format: str = "v1"  # "v1" or "v2"

    def v2_segment(self) -> waymo_v2.V2Segment:
        return waymo_v2.V2Segment(self.path.parent.parent.parent, self.split, self.path.stem)


@dataclass(frozen=True)
class SegmentResult:
    job: SegmentJob
    status: str  # "converted", "skipped" or "failed"
    segment: str = ""
    frames: int = 0
    error: str = ""
    warnings: tuple[str, ...] = ()


class SourceError(InputError):
    """A ``src`` folder whose layout the converter cannot take (e.g. a split holding both formats)."""


def find_records(src: str | Path) -> list[SegmentJob]:
    """Every ``src/<split>/*.tfrecord`` (v1) or v2 segment of ``src/<split>/<component>/``, splits in
    Waymo's order, files (v1) or segment names (v2) sorted."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"src={src}: no such folder")
    jobs = []
    for split in SPLITS:
        if not (src / split).is_dir():
            continue
        records = sorted((src / split).glob("*.tfrecord"))
        v2 = waymo_v2.split_segments(src, split) if waymo_v2.is_v2_split(src / split) else []
        if records and v2:
            raise SourceError(f"src={src}: {split}/ holds both v1 records ({records[0].name}, ...) and v2 component "
                              "folders; put them under separate roots and convert each")
        jobs += [SegmentJob(split, p, f"{split}/{p.name}") for p in records]
        jobs += [SegmentJob(split, s.path(waymo_v2.S.LIDAR), f"{split}/{waymo_v2.S.LIDAR}/{s.name}.parquet", "v2")
                 for s in v2]
    if not jobs:
        raise InputError(
            f"src={src}: no records; expected {', '.join(f'{s}/*.tfrecord' for s in SPLITS)} (Waymo v1) or "
            f"<split>/{{{','.join(waymo_v2.S.REQUIRED)},lidar_box}}/*.parquet (Waymo v2) under it")
    return jobs


class ShardError(InputError):
    """A ``shard=`` value that is not ``i/n`` with ``0 <= i < n``."""


def parse_shard(shard: str | None) -> tuple[int, int]:
    if shard is None or str(shard) in ("", "None", "null"):
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ShardError(f"shard={shard}: expected i/n with 0 <= i < n, e.g. shard=0/4")
    return int(m.group(1)), int(m.group(2))


def select_shard(jobs: list[SegmentJob], shard: str | None) -> list[SegmentJob]:
    """Job ``k`` of the sorted list belongs to shard ``k mod n``: disjoint shards that cover all files."""
    i, n = parse_shard(shard)
    return jobs[i::n]


def is_complete(seg_dir: Path, segment: str, job: SegmentJob) -> bool:
    return completeness(seg_dir, segment, job) == ""


def completeness(seg_dir: Path, segment: str, job: SegmentJob) -> str | None:
    """``""`` for a complete, intact segment; None when there is none yet; else why it is converted again."""
    try:
        info = read_segment(seg_dir, job.split)
    except FrameStoreError as e:
        return str(e)  # unreadable metadata: convert again
    if info is None:
        return None
    if info.name != segment or info.source != job.source:
        return f"{seg_dir}: converted from {info.source!r}, not {job.source!r}"
    return damaged_frame(info) or ""


def _clear_incomplete(seg_dir: Path) -> None:
    """Drop what a partial run may have left: metadata first, then temporary and frame files."""
    meta = seg_dir / SEGMENT_META
    if meta.exists():
        meta.unlink()
    for p in seg_dir.iterdir():
        if p.is_file() and (p.name.endswith(".tmp") and p.name.startswith(".") or _FRAME_FILE.match(p.name)):
            p.unlink()


def convert_segment(job: SegmentJob, dst: str | Path, second_return: bool = True, wait: bool = False) -> SegmentResult:
    """Convert one record file or v2 segment (or skip it when its segment is already complete), holding
    the segment's claim (``data_tools.claims``) while it does; a segment another converter holds is
    ``"busy"`` (``wait=True``: wait for it, then skip it if complete or convert it)."""
    try:
        if job.format == "v2":
            segment = job.path.stem
        else:
            segment = read_context_name(job.path)
        split_dir = Path(dst) / job.split
        split_dir.mkdir(parents=True, exist_ok=True)
        try:
            claim = claim_segment(split_dir, segment, wait=wait)
        except SegmentBusy as e:
            return SegmentResult(job, "busy", segment, error=str(e))
    except (InputError, DecodeError, OSError, pa.ArrowException) as e:
        return SegmentResult(job, "failed", error=f"{type(e).__name__}: {e}")
    with claim:
        return _convert_claimed(job, split_dir / segment, segment, second_return)


def _convert_claimed(job: SegmentJob, seg_dir: Path, segment: str, second_return: bool) -> SegmentResult:
    try:
        state = completeness(seg_dir, segment, job)
        if state == "":
            return SegmentResult(job, "skipped", segment, read_segment(seg_dir).num_frames)
        warnings = [f"repaired: {state}"] if state else []
        seg_dir.mkdir(parents=True, exist_ok=True)
        _clear_incomplete(seg_dir)
        timestamps, nonfinite, checks = [], {}, SegmentFrameChecks()
        if job.format == "v2":
            frames = waymo_v2.iter_frames(job.v2_segment(), second_return=second_return, nonfinite=nonfinite,
                                          checks=checks)
        else:
            frames = iter_frames(job.path, second_return=second_return, nonfinite=nonfinite, checks=checks)
        for frame in frames:
            if frame.segment != segment:
                raise FrameFormatError(f"{job.path}: record {frame.index} has context.name {frame.segment!r}, "
                                       f"the first record {segment!r}")
            frame.save_npz(seg_dir / f"{frame.index:04d}.npz")
            timestamps.append(frame.timestamp_micros)
        write_segment_meta(seg_dir, segment=segment, split=job.split, timestamps_micros=timestamps,
                           source=job.source, nonfinite_points=lidar_totals(nonfinite),
                           dropped_labels=label_totals(checks.dropped_labels))
        warnings += [w for w in (shortfall_warning(segment, str(job.path), timestamps),
                                 nonfinite and f"{job.path}: {format_nonfinite(nonfinite)}",
                                 checks.dropped_labels and
                                 f"{job.path}: {format_dropped_labels(checks.dropped_labels, checks.examples)}")
                     if w]
        return SegmentResult(job, "converted", segment, len(timestamps), warnings=tuple(warnings))
    except (InputError, DecodeError, OSError, pa.ArrowException) as e:
        if seg_dir.is_dir():
            _remove_failed(seg_dir)
        return SegmentResult(job, "failed", error=f"{type(e).__name__}: {e}")


def _remove_failed(seg_dir: Path) -> None:
    """A failed segment leaves nothing behind: its frames, temporary files and (now empty) folder."""
    try:
        _clear_incomplete(seg_dir)
        seg_dir.rmdir()
    except OSError:
        pass  # another file the user put there, or the disk refuses: the folder stays without segment.json


def _convert_star(args) -> SegmentResult:
    return convert_segment(*args)


def convert(src: str | Path, dst: str | Path, workers: int = 1, shard: str | None = None,
            second_return: bool = True, progress: bool = False, busy: str = "wait") -> list[SegmentResult]:
    """Convert every record file of this shard; returns one result per file, in job order. Segments
    another converter holds are left for the end; ``busy="wait"`` then waits for each (skipping it if
    the other finished it), ``busy="skip"`` leaves them to the other (status ``"busy"``)."""
    if busy not in ("wait", "skip"):
        raise InputError(f"busy={busy}: expected wait or skip")
    jobs = select_shard(find_records(src), shard)
    check_not_input(dst, [src], "dst", "src")
    ensure_dir(dst, "dst")
    args = [(job, str(dst), second_return) for job in jobs]
    results = map_segments(_convert_star, args, workers, "convert", progress)
    waiting = [i for i, r in enumerate(results) if r.status == "busy"]
    if waiting and busy == "wait":
        for i in waiting:
            print(f"convert_waymo: waiting: {results[i].error}", file=sys.stderr, flush=True)
        again = map_segments(_convert_star, [(*args[i], True) for i in waiting], workers, "convert (waited)", progress)
        for i, r in zip(waiting, again):
            results[i] = r
    return results


def summary(results: list[SegmentResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "skipped", "failed", "busy")}
    frames = sum(r.frames for r in results if r.status in ("converted", "skipped"))
    lines = [f"segments: {counts['converted']} converted, {counts['skipped']} already complete (skipped), "
             f"{counts['failed']} failed; {frames} frames in converted and skipped segments"
             + (f"; {counts['busy']} left to another converter (busy=skip)" if counts["busy"] else "")]
    lines += [f"WARNING {w}" for r in results for w in r.warnings]
    lines += [f"WARNING busy: {r.error}" for r in results if r.status == "busy"]
    lines += [f"FAILED {r.job.path}: {r.error}" for r in results if r.status == "failed"]
    return "\n".join(lines)


@hydra.main(config_path=CONFIG_DIR, config_name="convert_waymo", version_base="1.3")
@user_errors(prefix="convert_waymo")
def main(cfg: DictConfig) -> None:
    check_config(cfg, CONVERT_CHECKS)
    parse_shard(cfg.shard)
    results = convert(cfg.src, cfg.dst, workers=int(cfg.workers), shard=cfg.shard,
                      second_return=bool(cfg.second_return), progress=bool(cfg.progress),
                      busy=str(cfg.busy))
    text = summary(results)
    failed = any(r.status == "failed" for r in results)
    print(text, file=sys.stderr if failed or any(r.warnings or r.status == "busy" for r in results) else sys.stdout)
    if failed:
        sys.exit(2)


if __name__ == "__main__":
    main()
