"""``python -m data_tools.synthesize out_dir=DIR segments=N val_segments=M frames=F seed=S workers=K``

Writes synthetic segments as Waymo v1 TFRecords: ``out_dir/training/segment-<name>_with_camera_labels.tfrecord``
and likewise under ``out_dir/validation``. Each file is written to a temporary name and renamed when
complete. Segment ``i`` of a split is drawn from ``SeedSequence([seed, split, i])`` alone, so the
output does not depend on ``workers``.
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
from detector import CONFIG_DIR
from detector.data.tfrecord import TFRecordWriter

SPLIT_CODES = {"training": 0, "validation": 1, "testing": 2}


@dataclass(frozen=True)
class SegmentTask:
    out_dir: str
    split: str
    index: int
    seed: int
    config: SegmentConfig

    def seed_sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.seed, SPLIT_CODES[self.split], self.index])


def segment_file_name(name: str) -> str:
    return f"segment-{name}_with_camera_labels.tfrecord"


def write_segment(task: SegmentTask) -> tuple[str, int]:
    """Synthesize one segment into its split folder; returns ``(path, frames)``."""
    name = segment_name(np.random.default_rng(task.seed_sequence()), task.config.frames)  # drawn first there too
    path = Path(task.out_dir) / task.split / segment_file_name(name)
    with TFRecordWriter(path) as writer:
        for record, _ in synthesize_segment(task.config, task.seed_sequence()):
            writer.write(record)
    return str(path), writer.count


def segment_config(cfg: DictConfig) -> SegmentConfig:
    return SegmentConfig(
        frames=int(cfg.frames), lidar=str(cfg.lidar), top_height=cfg.top_height, top_width=cfg.top_width,
        object_range=float(cfg.object_range), label_range=float(cfg.label_range),
        vehicle_density=float(cfg.vehicle_density), wobble=float(cfg.wobble), nlz_prob=float(cfg.nlz_prob),
        zlib_level=int(cfg.zlib_level),
        noise=NoiseConfig(**{k: float(v) for k, v in cfg.noise.items()}),
    )


def synthesize(out_dir: str | Path, segments: int, val_segments: int, seed: int, config: SegmentConfig,
               workers: int = 1, progress: bool = False) -> list[str]:
    """Write all segments; returns the record paths (training first, then validation, by index)."""
    if segments < 0 or val_segments < 0 or config.frames < 1:
        raise ValueError(f"segments={segments}, val_segments={val_segments}, frames={config.frames}: "
                         "need segments >= 0, val_segments >= 0, frames >= 1")
    tasks = [SegmentTask(str(out_dir), split, i, seed, config)
             for split, n in (("training", segments), ("validation", val_segments)) for i in range(n)]
    for split in ("training", "validation"):
        (Path(out_dir) / split).mkdir(parents=True, exist_ok=True)
    # the parent never casts rays, so forked workers inherit no Embree threads
    results = map_segments(write_segment, tasks, workers, "synthesize", progress)
    return [p for p, _ in results]


@hydra.main(config_path=CONFIG_DIR, config_name="synthesize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    paths = synthesize(cfg.out_dir, int(cfg.segments), int(cfg.val_segments), int(cfg.seed), segment_config(cfg),
                       workers=int(cfg.workers), progress=bool(cfg.progress))
    print(f"wrote {len(paths)} segments x {cfg.frames} frames under {Path(cfg.out_dir).resolve()}", file=sys.stderr)


if __name__ == "__main__":
    main()
