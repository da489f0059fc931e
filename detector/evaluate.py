"""Evaluate a checkpoint: ``python -m detector.evaluate experiment=NAME ckpt_path=PATH split=validation``.

Streams the detector over every segment of the split with its state carried, exactly as online, and
writes into the Hydra run dir:

- ``predictions.bin``: the detections as Waymo ``metrics_pb2.Objects`` (the leaderboard format);
- ``ground_truth.bin``: the split's labels in the same format (with ``num_lidar_points_in_box`` and
  difficulty), so that ``python -m detector.metrics ground_truth.bin predictions.bin`` reproduces
  ``metrics.json``;
- ``metrics.json``: AP/APH per official breakdown name.
"""

from __future__ import annotations

from detector.openmp import prefer_passive_wait

prefer_passive_wait()  # before torch loads, through the imports below (see detector/openmp.py)

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from detector.atomic import ensure_dir, write_json_atomic
from detector.checkpoints import load_detector
from detector.config import (
    CONFIG_DIR,
    check_checkpoint_fits_data,
    register_resolvers,
    running,
)
from detector.config_checks import EVALUATE_CHECKS
from detector.devices import pick_device
from detector.errors import InputError, user_errors
from detector.eval import ObjectsWriter, WaymoMetrics
from detector.eval.report import format_table
from detector.run_dir import check_fresh_run_dir
from detector.streaming import stream_segments

log = logging.getLogger(__name__)

#: What an evaluation writes into its run folder.
RESULTS = ("predictions.bin", "ground_truth.bin", "metrics.json")


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate as configured (``torch_threads`` applies while it runs, restored afterwards)."""
    with running(cfg, EVALUATE_CHECKS):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict:
    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    check_fresh_run_dir(out, RESULTS, "evaluation")  # (under Hydra the FreshRunDir callback checked it first)
    ensure_dir(out)
    reset_every = cfg.get("reset_every")
    if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
        raise InputError(f"reset_every={reset_every!r}: expected a whole number of frames >= 1, or null (never)")
    device = pick_device(cfg.device)
    check_checkpoint_fits_data(cfg.ckpt_path, cfg.data)
    model = load_detector(cfg.model, cfg.ckpt_path, device)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    frames = datamodule.test_dataloader()
    metrics = WaymoMetrics()
    n = 0
    with ObjectsWriter(out / "predictions.bin") as preds, ObjectsWriter(out / "ground_truth.bin") as gts:
        for r in tqdm(stream_segments(model, frames, device, reset_every), total=len(frames),
                      desc=f"evaluate {cfg.split}", unit="frame", file=sys.stderr):
            metrics.add_result(r)
            preds.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types)
            gts.add_ground_truth(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, r.gt_num_points,
                                 r.gt_difficulty)
            n += 1
            if cfg.get("max_frames") and n >= int(cfg.max_frames):
                break
    results = metrics.compute()
    write_json_atomic(out / "metrics.json", results)
    print(format_table(results))
    print(f"{n} frames of split '{cfg.split}'; wrote {out / 'predictions.bin'}, {out / 'ground_truth.bin'}, "
          f"{out / 'metrics.json'}")
    return {"output_dir": str(out), "frames": n, "metrics": results}


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
@user_errors(prefix="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
