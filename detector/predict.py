"""Predict on raw records: ``python -m detector.predict experiment=NAME ckpt_path=PATH input=DIR``.

Reads Waymo v1 segment records directly (no conversion, no TensorFlow), prepares each frame exactly
as the data module does (non-finite points dropped, points cropped to the model's range), streams
the detector with its state carried through each segment, and writes ``predictions.bin``
(``metrics_pb2.Objects``, the leaderboard format) atomically.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from detector.config import (CONFIG_DIR, check_checkpoint_fits_data, check_model_fits_data, register_resolvers,
                             torch_threads)
from detector.data.batch import FrameBatch
from detector.data.clips import drop_nonfinite_points, frame_resets, prepare_frame
from detector.data.collate import collate_frames
from detector.atomic import ensure_dir
from detector.checkpoints import load_detector
from detector.devices import pick_device
from detector.config_checks import PREDICT_CHECKS, check_config
from detector.errors import InputError, user_errors
from detector.eval import ObjectsWriter
from detector.streaming import stream_segments

log = logging.getLogger(__name__)


def find_records(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise InputError(f"input not found: {p}")
    records = sorted(q for q in p.rglob("*") if q.suffix in (".tfrecord", ".tfrecords") and q.is_file())
    if not records:
        raise InputError(f"{p}: no .tfrecord files in this folder (searched recursively)")
    return records


def record_frames(records: list[Path], point_range, max_gap_s: float | None,
                  second_return: bool = True) -> Iterator[FrameBatch]:
    """Every frame of every record, prepared as for evaluation, with ``reset`` at segment starts and gaps."""
    from detector.data.waymo_reader import iter_frames

    for path in records:
        frames = []
        for frame in iter_frames(path, second_return=second_return):
            frame, dropped = drop_nonfinite_points(frame)
            if dropped:
                log.warning("%s frame %d: dropped %d points with NaN/inf values", path, frame.index, dropped)
            frames.append(prepare_frame(frame, point_range, classes=None, keep_boxes_outside_range=True))
            # a segment is ~200 frames: holding one segment's prepared frames keeps the gap logic simple
        resets = frame_resets([f.timestamp_micros for f in frames], max_gap_s)
        for f, r in zip(frames, resets):
            yield collate_frames([f], [bool(r)])


def predict(cfg: DictConfig) -> dict:
    """Predict as configured (``torch_threads`` applies while it runs, restored afterwards)."""
    register_resolvers()
    check_config(cfg, PREDICT_CHECKS)
    check_model_fits_data(cfg)
    with torch_threads(cfg.get("torch_threads")):
        return _predict(cfg)


def _predict(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    out = Path(cfg.out) if cfg.get("out") else run_dir / "predictions.bin"
    ensure_dir(out.parent)
    records = find_records(cfg.input)
    device = pick_device(cfg.device)
    check_checkpoint_fits_data(cfg.ckpt_path, cfg.data)
    model = load_detector(cfg.model, cfg.ckpt_path, device)
    frames = record_frames(records, cfg.data.get("point_range"), cfg.data.get("max_gap_s"), cfg.second_return)
    n = 0
    with ObjectsWriter(out) as writer:
        for r in tqdm(stream_segments(model, frames, device), desc="predict", unit="frame", file=sys.stderr):
            writer.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types)
            n += 1
    print(f"{n} frames of {len(records)} records; wrote {writer.num_objects} detections to {out}")
    return {"predictions": str(out), "frames": n, "objects": writer.num_objects}


@hydra.main(config_path=CONFIG_DIR, config_name="predict", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
