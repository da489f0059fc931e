"""Evaluate a checkpoint: ``python -m detector.evaluate experiment=NAME ckpt_path=PATH split=validation``.

Streams the detector over every segment of the split with its state carried, exactly as online, and
writes into the Hydra run dir:

- ``predictions.bin``: the detections as Waymo ``metrics_pb2.Objects`` (the leaderboard format);
- ``ground_truth.bin``: the split's labels in the same format (with ``num_lidar_points_in_box`` and
  difficulty), so that ``python -m detector.metrics ground_truth.bin predictions.bin`` reproduces
  ``metrics.json``;
- ``metrics.json``: AP/APH per official breakdown name;
- with the tracker on (``tracker=default``; ``tracker=off``: none of this), the detections' track ids as
  ``Object.id`` in ``predictions.bin``, the labels' ids and tracking difficulty in ``ground_truth.bin``, and
  ``tracking_metrics.json``: MOTA, MOTP, MISS, MISMATCH, FP per official breakdown name, as
  ``python -m detector.metrics ground_truth.bin predictions.bin --tracking`` computes them.
"""

from __future__ import annotations

from detector.openmp import prefer_passive_wait

prefer_passive_wait()  # before torch loads, through the imports below (see detector/openmp.py)

import logging
import sys
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from detector.atomic import ensure_dir, write_json_atomic
from detector.checkpoints import check_checkpoint_fits_data, load_detector
from detector.config import CONFIG_DIR, register_resolvers, running
from detector.config_checks import EVALUATE_CHECKS
from detector.devices import pick_device
from detector.errors import InputError, user_errors
from detector.eval import ObjectsWriter, WaymoMetrics
from detector.eval.report import TRACKING_COLUMNS, format_table
from detector.eval.tracking_metrics import WaymoTrackingMetrics
from detector.eval.waymo_metrics import LEVEL_2_MAX_POINTS
from detector.runfolder import check_fresh_run_dir
from detector.streaming import stream_segments
from detector.tracking import tracker_config

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
    tracker = tracker_config(cfg.get("tracker"))
    tracking = tracker is not None and tracker.enabled
    metrics = WaymoMetrics()
    track_metrics = WaymoTrackingMetrics() if tracking else None
    n = 0
    with ObjectsWriter(out / "predictions.bin") as preds, ObjectsWriter(out / "ground_truth.bin") as gts:
        for r in tqdm(stream_segments(model, frames, device, reset_every, tracker), total=len(frames),
                      desc=f"evaluate {cfg.split}", unit="frame", file=sys.stderr):
            metrics.add_result(r)
            preds.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types, r.track_ids)
            gt_ids, level = None, None
            if tracking:
                gt_ids = r.gt_ids
                if gt_ids is None:
                    raise InputError(f"segment {r.segment!r}, frame {r.index}: the labels carry no object ids, "
                                     "which the tracking metrics need (tracker=off scores detection only)")
                # The tracking level as the detection metrics read an unset one: LEVEL_2 at <= 5 points.
                level = track_level(r.gt_difficulty, r.gt_num_points)
                track_metrics.add_frame(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, gt_ids, level,
                                        r.boxes, r.scores, r.types, r.track_ids)
            gts.add_ground_truth(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, r.gt_num_points,
                                 r.gt_difficulty, gt_ids, level)
            n += 1
            if cfg.get("max_frames") and n >= int(cfg.max_frames):
                break
    results = metrics.compute()
    write_json_atomic(out / "metrics.json", results)
    print(format_table(results))
    written = [out / "predictions.bin", out / "ground_truth.bin", out / "metrics.json"]
    track_results = None
    if tracking:
        track_results = track_metrics.compute()
        write_json_atomic(out / "tracking_metrics.json", track_results)
        print(format_table(track_results, TRACKING_COLUMNS))
        written.append(out / "tracking_metrics.json")
    print(f"{n} frames of split '{cfg.split}'; wrote {', '.join(map(str, written))}")
    return {"output_dir": str(out), "frames": n, "metrics": results, "tracking_metrics": track_results}


def track_level(difficulty, num_points):
    """Tracking difficulty levels of labels: their difficulty where set, else LEVEL_2 at <= 5 points."""
    difficulty = np.asarray(difficulty, np.int64)
    return np.where(difficulty == 0, np.where(np.asarray(num_points) <= LEVEL_2_MAX_POINTS, 2, 1), difficulty)


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
@user_errors(prefix="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
