"""Predict on raw records: ``python -m detector.predict experiment=NAME ckpt_path=PATH input=DIR``.

Reads Waymo v1 segment records or v2 segments directly (no conversion, no TensorFlow; ``input=`` as
``detector.data.segments.find_segments`` takes it), prepares each frame exactly
as the data module does (non-finite points dropped, points cropped to the model's range), streams
the detector with its state carried through each segment, and writes ``predictions.bin``
(``metrics_pb2.Objects``, the leaderboard format) atomically; with the tracker on (``tracker=default``),
each detection's track id is its ``Object.id`` (the tracking submission format).
"""

from __future__ import annotations

from detector.openmp import prefer_passive_wait

prefer_passive_wait()  # before torch loads, through the imports below (see detector/openmp.py)

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from detector.atomic import check_writable, ensure_dir
from detector.checkpoints import check_checkpoint_fits_data, load_detector
from detector.config import CONFIG_DIR, register_resolvers, running
from detector.config_checks import PREDICT_CHECKS
from detector.data.segments import check_unique_names, find_segments, input_files, segment_frame_batches
from detector.devices import pick_device
from detector.errors import user_errors
from detector.eval import ObjectsWriter
from detector.output_paths import check_not_input
from detector.streaming import stream_segments
from detector.tracking import tracker_config

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> dict:
    """Predict as configured (``torch_threads`` applies while it runs, restored afterwards)."""
    with running(cfg, PREDICT_CHECKS):
        return _predict(cfg)


def _predict(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    out = Path(cfg.out) if cfg.get("out") else run_dir / "predictions.bin"
    records = find_segments(cfg.input)
    check_not_input(out, [cfg.input, cfg.ckpt_path, *input_files(records)], "out", "input")
    ensure_dir(out.parent)
    check_writable(out)
    device = pick_device(cfg.device)
    check_checkpoint_fits_data(cfg.ckpt_path, cfg.data)
    check_unique_names(records)  # reads each file's first record
    model = load_detector(cfg.model, cfg.ckpt_path, device)
    frames = segment_frame_batches(records, cfg.data.get("point_range"), cfg.data.get("max_gap_s"), cfg.second_return)
    tracker = tracker_config(cfg.get("tracker"))
    n = 0
    with ObjectsWriter(out) as writer:
        for r in tqdm(stream_segments(model, frames, device, tracker=tracker), desc="predict", unit="frame",
                      file=sys.stderr):
            writer.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types, r.track_ids)
            n += 1
    print(f"{n} frames of {len(records)} segments; wrote {writer.num_objects} detections to {out}")
    return {"predictions": str(out), "frames": n, "objects": writer.num_objects}


@hydra.main(config_path=CONFIG_DIR, config_name="predict", version_base="1.3")
@user_errors(prefix="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
