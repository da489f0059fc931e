"""Tracker settings compared on one checkpoint's cached detections: the detector streams once over a frame
store's validation split (detections, poses and labels cached), then each setting re-tracks the cache and
is scored (tracking MOTA and mismatches per class and level, detection AP LEVEL_1 of the output scores).

    .venv/bin/python scripts/bench/tracking_tune.py --ckpt CKPT --store STORE [--cache work/tracking/cache.pkl]

Settings (each the default ``TrackerConfig`` with one change): ``default``, ``no-duplicates``
(``duplicate_score_scale=1``, ``duplicate_m`` of 0: the first tracker), ``no-groups``, ``gates+50%``,
``process-noise-1``, ``coast-1s``, ``birth-0.5``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

CLASSES = ("VEHICLE", "PEDESTRIAN", "CYCLIST")


def cache_detections(ckpt: Path, store: Path, experiment: str) -> list[dict]:
    import torch
    from hydra.utils import instantiate
    from unseen_seeds import compose

    from detector.checkpoints import load_checkpoint
    from detector.evaluate import track_level
    from detector.streaming import Stream
    from detector.tracking import TrackerConfig

    torch.set_num_threads(1)
    model = load_checkpoint(ckpt, "cpu").eval()
    cfg = compose("evaluate", [f"experiment={experiment}", f"data.root={store}", "ckpt_path=unused"])
    dm = instantiate(cfg.data)
    dm.setup("test")
    stream = Stream(model, "cpu", None, TrackerConfig(enabled=False, motion_heading=False))  # raw detections
    rows = []
    for frame in dm.test_dataloader():
        r = stream.step(frame).result()
        rows.append(dict(seg=r.segment, ts=r.timestamp_micros, pose=frame.poses[0].numpy().astype(np.float64),
                         boxes=r.boxes, scores=r.scores, types=r.types, gt_boxes=r.gt_boxes, gt_types=r.gt_types,
                         gt_ids=r.gt_ids, gt_points=r.gt_num_points, gt_difficulty=r.gt_difficulty,
                         level=track_level(r.gt_difficulty, r.gt_num_points)))
    return rows


def score(rows: list[dict], config) -> dict:
    from detector.eval import WaymoMetrics
    from detector.eval.tracking_metrics import WaymoTrackingMetrics
    from detector.tracking import Tracker

    tracker, tracks, ap = Tracker(config), WaymoTrackingMetrics(), WaymoMetrics()
    segment = None
    for r in rows:
        if r["seg"] != segment:
            tracker.restart()
            segment = r["seg"]
        state = tracker.update(r["boxes"], r["scores"], r["types"], r["pose"], r["ts"])
        scores = r["scores"] * np.where(state.duplicate, config.duplicate_score_scale, 1.0)  # as the stream does
        tracks.add_frame(r["seg"], r["ts"], r["gt_boxes"], r["gt_types"], r["gt_ids"], r["level"], r["boxes"],
                         scores, r["types"], state.track_ids)
        ap.add_frame((r["seg"], r["ts"]), r["gt_boxes"], r["gt_types"], r["gt_points"], r["gt_difficulty"],
                     r["boxes"], scores, r["types"])
    res, det = tracks.results(), ap.compute()
    out = {}
    for c in CLASSES:
        for level in ("LEVEL_1", "LEVEL_2"):
            t = res[f"OBJECT_TYPE_TYPE_{c}_{level}"]
            out[f"{c.lower()} {level}"] = {"MOTA": round(t.mota, 3), "mismatches": t.num_mismatches}
        out[f"{c.lower()} AP L1"] = round(det[f"OBJECT_TYPE_TYPE_{c}_LEVEL_1"]["AP"], 3)
    return out


def settings() -> dict:
    from detector.tracking import TrackerConfig as T

    gates = dict(vehicle=2.5 * 1.5, pedestrian=1.0 * 1.5, sign=1.0 * 1.5, cyclist=1.5 * 1.5)
    return {"default": T(), "no-duplicates": T(duplicate_score_scale=1.0, duplicate_m={}),
            "no-groups": T(class_groups=()), "gates+50%": T(gate_m=gates), "process-noise-1": T(process_noise=1.0),
            "coast-1s": T(max_coast_s=1.0), "birth-0.5": T(birth_score=0.5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--experiment", default="demo_synthetic")
    p.add_argument("--cache", type=Path, default=ROOT / "work" / "tracking" / "tune_cache.pkl")
    args = p.parse_args()
    if args.cache.is_file():
        rows = pickle.loads(args.cache.read_bytes())
    else:
        rows = cache_detections(args.ckpt, args.store, args.experiment)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        args.cache.write_bytes(pickle.dumps(rows))
    for name, config in settings().items():
        print(name, score(rows, config), flush=True)


if __name__ == "__main__":
    main()
