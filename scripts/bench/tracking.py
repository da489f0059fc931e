"""Cost of the online tracker per frame, and speed of the TensorFlow-free tracking metrics against the
official op (``py_metrics_ops.tracking_metrics`` in ``.venv-official``) on the same input.

- ``tracker``: ``Tracker.update`` on ``--detections`` detections a frame (60 % vehicles, 30 % pedestrians,
  10 % cyclists moving at their class's speeds, centre noise 0.1 m, 5 % missed, the ego driving and turning)
  for ``--frames`` frames, one thread; the median and 95th percentile of the per-frame time.
- ``fake``: the official fake files (two sequences, 20 frames), ours on the parsed objects and the op on
  the same float32 arrays;
- ``random``: ``--sequences`` randomized sequences (``tests/helpers/tracking_cases.py``: id switches,
  fragmentations, occlusions, repeated ids, false positives) of 40 frames and 30 objects each.

Ours runs on one thread in this process; the op runs in a child with TensorFlow's thread pool (all cores),
its time measured around the op alone (TensorFlow's start-up not counted).

- ``files``: a ``ground_truth.bin``/``predictions.bin`` pair (``--files GT PRED``), e.g. what
  ``detector.evaluate`` (or ``scripts/bench/tracking_quality.py --write``) wrote with the tracker on.

    .venv/bin/python scripts/bench/tracking.py [--cases tracker,fake,random] [--detections 200] [--json OUT]
    .venv/bin/python scripts/bench/tracking.py --cases files --files GT.bin PRED.bin
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from detector.eval import default_config  # noqa: E402
from detector.eval.submission import objects_to_frames, read_objects  # noqa: E402
from detector.eval.tracking_metrics import evaluate_tracking_frames  # noqa: E402
from detector.tracking import Tracker  # noqa: E402


def bench_tracker(num_dets: int, frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    types = np.r_[np.full(int(num_dets * 0.6), 1), np.full(int(num_dets * 0.3), 2)]
    types = np.r_[types, np.full(num_dets - len(types), 4)]
    speed = {1: 10.0, 2: 1.4, 4: 5.0}
    pos = rng.uniform(-75, 75, (num_dets, 2))
    head = rng.uniform(-np.pi, np.pi, num_dets)
    vel = (np.stack([np.cos(head), np.sin(head)], 1) * np.array([speed[t] for t in types])[:, None]
           * rng.random((num_dets, 1)))
    sizes = {1: (4.5, 2.0, 1.6), 2: (0.8, 0.8, 1.8), 4: (1.8, 0.7, 1.7)}
    dims = np.array([sizes[t] for t in types])
    tracker = Tracker()
    times = []
    for f in range(frames):
        t = 0.1 * f
        yaw = 0.05 * t
        pose = np.eye(4)
        pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        pose[:2, 3] = [8.0 * t, 0.0]
        world = pos + vel * t + rng.normal(0, 0.1, pos.shape)
        local = (world - pose[:2, 3]) @ pose[:2, :2]
        seen = rng.random(num_dets) > 0.05
        boxes = np.c_[local, np.full(num_dets, 0.8), dims, head - yaw][seen]
        scores = rng.uniform(0.3, 1.0, num_dets)[seen]
        start, cpu = time.perf_counter(), time.thread_time()
        tracker.update(boxes, scores, types[seen], pose, int(round(t * 1e6)))
        times.append((time.perf_counter() - start, time.thread_time() - cpu))
    wall, cpu = (np.array(x[10:]) * 1e3 for x in zip(*times))  # after the tracks have formed
    # wall time includes waiting for a core on a shared machine; the thread's CPU time does not
    return {"detections": num_dets, "frames": frames, "median_ms": float(np.median(wall)),
            "p95_ms": float(np.percentile(wall, 95)), "mean_ms": float(wall.mean()),
            "cpu_median_ms": float(np.median(cpu)), "cpu_p95_ms": float(np.percentile(cpu, 95)),
            "cpu_mean_ms": float(cpu.mean()), "tracks_at_end": len(tracker)}


def bench_metrics(gt, pred) -> dict:
    from tests.helpers.official import official_available, run_official_tracking_op, tracking_inputs

    for frames in (gt, pred):
        for f in frames.values():
            f.boxes = f.boxes.astype(np.float32).astype(np.float64)
    start = time.perf_counter()
    ours = evaluate_tracking_frames(gt, pred).compute()
    ours_s = time.perf_counter() - start
    out = {"frames": len(set(gt) | set(pred)), "gt_objects": sum(len(f.types) for f in gt.values()),
           "predictions": sum(len(f.types) for f in pred.values()), "ours_s": ours_s}
    if official_available():
        off = run_official_tracking_op(*tracking_inputs(gt, pred), default_config(), timeout=3600)
        theirs = off.as_dict()
        out["official_s"] = off.seconds
        out["speed_ratio"] = off.seconds / ours_s
        out["max_abs_diff_level_2"] = max(abs(ours[n][k] - theirs[n][k]) for n in theirs if n.endswith("LEVEL_2")
                                          for k in theirs[n])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="tracker,fake,random")
    parser.add_argument("--detections", type=int, default=200)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--files", nargs=2, metavar=("GT", "PRED"))
    parser.add_argument("--json")
    args = parser.parse_args()
    cases = args.cases.split(",")
    results = {}
    if "tracker" in cases:
        results["tracker"] = bench_tracker(args.detections, args.frames)
        print("tracker", json.dumps(results["tracker"]), flush=True)
    if "fake" in cases:
        fake = ROOT.parent / "shared" / "waymo_fake"
        fake = fake if fake.is_dir() else Path("/work/shared/waymo_fake")
        gt = objects_to_frames(read_objects(fake / "fake_ground_truths.bin"), tracking=True)
        pred = objects_to_frames(read_objects(fake / "fake_predictions.bin"), tracking=True)
        results["fake"] = bench_metrics(gt, pred)
        print("fake", json.dumps(results["fake"]), flush=True)
    if "random" in cases:
        from tests.helpers.tracking_cases import random_sequences

        gt, pred = random_sequences(123, num_sequences=args.sequences, num_frames=40, num_objects=30)
        results["random"] = bench_metrics(gt, pred)
        print("random", json.dumps(results["random"]), flush=True)
    if "files" in cases:
        gt = objects_to_frames(read_objects(args.files[0]), tracking=True)
        pred = objects_to_frames(read_objects(args.files[1]), tracking=True)
        results["files"] = bench_metrics(gt, pred)
        print("files", json.dumps(results["files"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
