"""Tracking quality of a checkpoint: the Waymo tracking metrics of its streamed detections, tracked by the
stream's tracker, on a frame store's validation split and on fresh synthetic seeds; the same checkpoint
with its temporal state started afresh every frame (``reset_every=1``: each frame alone) as the
single-frame comparison, or a single-frame checkpoint given with ``--single``.

    .venv/bin/python scripts/bench/tracking_quality.py --ckpt work/demo/train/checkpoints/last.ckpt \
        --store work/demo/store [--seeds 171 172] [--single SINGLE.ckpt] [--out work/tracking/quality.json]

Per run and class: MOTA, mismatches (count and ratio), misses and false positives at LEVEL_1 and LEVEL_2
(the official best-MOTA cutoff), and the detection AP at LEVEL_1. Ground truth as ``detector.evaluate``
writes it: every label, tracking level 2 at <= 5 points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

CLASSES = ("VEHICLE", "PEDESTRIAN", "CYCLIST")


def evaluate_tracks(model, store: Path, experiment: str, reset_every: int | None, write: Path | None = None) -> dict:
    """Detection AP and tracking metrics of ``model`` streamed over the validation split of ``store``;
    ``write``: also write ``predictions.bin`` and ``ground_truth.bin`` there (as ``detector.evaluate``)."""
    from contextlib import ExitStack

    from hydra.utils import instantiate
    from unseen_seeds import compose

    from detector.eval import ObjectsWriter, WaymoMetrics
    from detector.eval.tracking_metrics import WaymoTrackingMetrics
    from detector.evaluate import track_level
    from detector.streaming import stream_segments
    from detector.tracking import tracker_config

    cfg = compose("evaluate", [f"experiment={experiment}", f"data.root={store}", "ckpt_path=unused",
                               "split=validation"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    det, trk = WaymoMetrics(), WaymoTrackingMetrics()
    frames = 0
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if write is not None:
            write.mkdir(parents=True, exist_ok=True)
            preds = stack.enter_context(ObjectsWriter(write / "predictions.bin"))
            gts = stack.enter_context(ObjectsWriter(write / "ground_truth.bin"))
        for r in stream_segments(model, datamodule.test_dataloader(), "cpu", reset_every,
                                 tracker_config(cfg.tracker)):
            level = track_level(r.gt_difficulty, r.gt_num_points)
            det.add_result(r)
            trk.add_frame(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, r.gt_ids, level, r.boxes, r.scores,
                          r.types, r.track_ids)
            if write is not None:
                preds.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types, r.track_ids)
                gts.add_ground_truth(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, r.gt_num_points,
                                     r.gt_difficulty, r.gt_ids, level)
            frames += 1
    ap = det.compute()
    out = {"frames": frames, "seconds": time.perf_counter() - t0}
    for cls in CLASSES:
        l1 = ap[f"OBJECT_TYPE_TYPE_{cls}_LEVEL_1"]
        row = {"AP_L1": l1["AP"], "APH_L1": l1["APH"]}
        for level in ("LEVEL_1", "LEVEL_2"):
            r = trk.results()[f"OBJECT_TYPE_TYPE_{cls}_{level}"]
            row[level] = {"MOTA": r.mota, "MOTP": r.motp, "MISS": r.miss, "MISMATCH": r.mismatch, "FP": r.fp,
                          "mismatches": r.num_mismatches, "objects": r.num_objects_gt, "cutoff": r.score_cutoff}
        out[cls] = row
    return out


def table(results: dict) -> str:
    lines = ["| data | run | class | AP L1 | MOTA L1 | MOTA L2 | mismatches L2 (ratio) | miss L2 | FP L2 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for data, runs in results.items():
        for run, r in runs.items():
            for cls in CLASSES:
                c = r[cls]
                l1, l2 = c["LEVEL_1"], c["LEVEL_2"]
                lines.append(f"| {data} | {run} | {cls.lower()} | {c['AP_L1']:.3f} | {l1['MOTA']:.3f} | "
                             f"{l2['MOTA']:.3f} | {l2['mismatches']} ({l2['MISMATCH']:.4f}) | {l2['MISS']:.3f} | "
                             f"{l2['FP']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--single", type=Path, help="a single-frame checkpoint to compare (default: --ckpt with "
                                               "reset_every=1)")
    p.add_argument("--store", type=Path, help="a frame store whose validation split is scored")
    p.add_argument("--seeds", type=int, nargs="*", default=[])
    p.add_argument("--cache", type=Path, default=ROOT / "work" / "unseen_seeds")
    p.add_argument("--experiment", default="demo_synthetic")
    p.add_argument("--out", type=Path)
    p.add_argument("--write", type=Path, help="write the LSTM run's predictions.bin/ground_truth.bin of each "
                                              "data set into a folder of this one")
    args = p.parse_args()

    import torch
    from unseen_seeds import make_store

    from detector.checkpoints import load_checkpoint

    torch.set_num_threads(1)
    model = load_checkpoint(args.ckpt, "cpu").eval()
    single = load_checkpoint(args.single, "cpu").eval() if args.single else None
    stores = {}
    if args.store:
        stores["demo validation"] = args.store
    for seed in args.seeds:
        stores[f"seed {seed}"] = make_store(seed, args.cache, 2, 30, [])
    results: dict = {}
    for name, store in stores.items():
        write = args.write / name.replace(" ", "_") if args.write else None
        runs = {"LSTM": evaluate_tracks(model, store, args.experiment, None, write)}
        runs["single-frame" if single else "LSTM, reset every frame"] = (
            evaluate_tracks(single, store, args.experiment, None) if single
            else evaluate_tracks(model, store, args.experiment, 1))
        results[name] = runs
        print(table({name: runs}), flush=True)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.ckpt), "results": results}, indent=1))
        args.out.with_suffix(".md").write_text(table(results) + "\n")


if __name__ == "__main__":
    main()
