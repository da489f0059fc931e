"""``python -m data_tools.synthesize out_dir=DIR segments=N val_segments=M frames=F seed=S workers=K
[format=v1|v2|both]``

Writes synthetic segments as Waymo v1 TFRecords: ``out_dir/training/segment-<name>_with_camera_labels.tfrecord``
and likewise under ``out_dir/validation`` (``format=v1``, the default); or the same frames as Waymo v2
components, ``out_dir/training/<component>/<name>.parquet`` (``format=v2``, data_tools.waymo_v2_writer);
or both, v1 under ``out_dir/v1`` and v2 under ``out_dir/v2`` (``format=both``). Each file is written to a
temporary name and renamed when complete. Segment ``i`` of a split is drawn from
``SeedSequence([seed, split, i])`` alone, so the output does not depend on ``workers``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from data_tools.parallel import map_segments
from data_tools.synth_lidar import NoiseConfig
from data_tools.synth_segment import SegmentConfig, segment_name, synthesize_segment
from data_tools.waymo_v2_writer import V2SegmentWriter
from detector import CONFIG_DIR
from detector.atomic import ensure_dir
from detector.config_checks import SYNTHESIZE_CHECKS, check_config
from detector.data import waymo_v2_schema
from detector.data.tfrecord import TFRecordWriter
from detector.data.waymo_reader import parse_frame
from detector.errors import InputError, user_errors

SPLIT_CODES = {"training": 0, "validation": 1, "testing": 2}
FORMATS = ("v1", "v2", "both")


@dataclass(frozen=True)
class SegmentTask:
    out_dir: str
    split: str
    index: int
    seed: int
    config: SegmentConfig
    format: str = "v1"
    v2_row_group_frames: int = 5

    def seed_sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.seed, SPLIT_CODES[self.split], self.index])


def segment_file_name(name: str) -> str:
    return f"segment-{name}_with_camera_labels.tfrecord"


def format_roots(out_dir: str | Path, format: str) -> tuple[Path | None, Path | None]:
    """``(v1 root, v2 root)`` of ``format`` (None where that format is not written)."""
    if format not in FORMATS:
        raise ValueError(f"format={format}: expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    if format == "both":
        return out_dir / "v1", out_dir / "v2"
    return (out_dir, None) if format == "v1" else (None, out_dir)


def write_segment(task: SegmentTask) -> tuple[str, int]:
    """Synthesize one segment into its split folder(s); returns ``(path, frames)``, the path of the v1
    record file (``v1``, ``both``) or of the v2 ``lidar`` component file (``v2``)."""
    # the generator draws the name first too
    name = segment_name(np.random.default_rng(task.seed_sequence()), task.config.frames)
    v1_root, v2_root = format_roots(task.out_dir, task.format)
    v1 = TFRecordWriter(v1_root / task.split / segment_file_name(name)) if v1_root else None
    v2 = V2SegmentWriter(v2_root, task.split, name, task.v2_row_group_frames) if v2_root else None
    frames = 0
    try:
        for record, _ in synthesize_segment(task.config, task.seed_sequence()):
            if v1 is not None:
                v1.write(record)
            if v2 is not None:
                v2.add(parse_frame(record))
            frames += 1
    except BaseException:
        for w in (v1, v2):
            if w is not None:
                w.abort()
        raise
    if v1 is not None:
        v1.close()
    if v2 is not None:
        v2.close()
    path = v1.path if v1 is not None else v2.path(waymo_v2_schema.LIDAR)
    return str(path), frames


def segment_config(cfg: DictConfig) -> SegmentConfig:
    return SegmentConfig(
        frames=int(cfg.frames), generator=int(cfg.generator), lidar=str(cfg.lidar), top_height=cfg.top_height,
        top_width=cfg.top_width, object_range=float(cfg.object_range), label_range=float(cfg.label_range),
        vehicle_density=float(cfg.vehicle_density), pedestrian_density=float(cfg.pedestrian_density),
        wobble=float(cfg.wobble), nlz_prob=float(cfg.nlz_prob),
        zlib_level=int(cfg.zlib_level),
        noise=NoiseConfig(**{k: float(v) for k, v in cfg.noise.items()}),
    )


def synthesize(out_dir: str | Path, segments: int, val_segments: int, seed: int, config: SegmentConfig,
               workers: int = 1, progress: bool = False, format: str = "v1",
               v2_row_group_frames: int = 5) -> list[str]:
    """Write all segments; returns their paths (see ``write_segment``; training first, then validation,
    by index). ``format`` is ``v1``, ``v2`` or ``both`` (the same frames in both formats)."""
    if segments < 0 or val_segments < 0 or config.frames < 1:
        raise ValueError(f"segments={segments}, val_segments={val_segments}, frames={config.frames}: "
                         "need segments >= 0, val_segments >= 0, frames >= 1")
    roots = [r for r in format_roots(out_dir, format) if r is not None]
    tasks = [SegmentTask(str(out_dir), split, i, seed, config, format, v2_row_group_frames)
             for split, n in (("training", segments), ("validation", val_segments)) for i in range(n)]
    for root in roots:
        for split in ("training", "validation"):
            ensure_dir(root / split, key="out_dir")
    # the parent never casts rays, so forked workers inherit no Embree threads
    results = map_segments(write_segment, tasks, workers, "synthesize", progress)
    return [p for p, _ in results]


def check_arguments(cfg: DictConfig) -> None:
    """Every value checked, and ``out_dir`` a writable folder, before anything is made: bad input is one
    line naming the key, and leaves no folder behind."""
    check_config(cfg, SYNTHESIZE_CHECKS)
    out_dir = Path(str(cfg.out_dir))
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise InputError(f"out_dir={out_dir}: {existing} is a file, not a folder; name a folder (it is created "
                         "if missing)")
    ensure_dir(out_dir, "out_dir")  # a read-only or full disk refuses here, before any segment is drawn


@hydra.main(config_path=CONFIG_DIR, config_name="synthesize", version_base="1.3")
@user_errors(prefix="synthesize")
def main(cfg: DictConfig) -> None:
    check_arguments(cfg)
    paths = synthesize(cfg.out_dir, int(cfg.segments), int(cfg.val_segments), int(cfg.seed), segment_config(cfg),
                       workers=int(cfg.workers), progress=bool(cfg.progress), format=str(cfg.format),
                       v2_row_group_frames=int(cfg.v2_row_group_frames))
    print(f"wrote {len(paths)} segments x {cfg.frames} frames under {Path(cfg.out_dir).resolve()}", file=sys.stderr)


if __name__ == "__main__":
    main()
