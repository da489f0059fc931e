"""Speed and memory of the TensorFlow-free Waymo detection metrics, against the official op.

Cases (all with the official default config: OBJECT_TYPE and RANGE, LEVEL_1/LEVEL_2, 101 cutoffs):

- ``fake``: the official fake files (``../shared/waymo_fake``), ours from parsed objects;
- ``subset``: the first ``--official-frames`` frames of the synthetic case, ours and the official op
  on the same float32 arrays (the ratio is measured here; the op is far too slow for the full case
  on a shared 2-core machine);
- ``files``: ``--files-frames`` synthetic frames written as leaderboard ``.bin`` files, then scored by
  ``python -m detector.metrics`` in a fresh process (wall time and peak RSS, start-up included);
- ``full``: ``--frames`` synthetic frames (default 40,000, a validation split: ~60 ground truths and
  ~200 predictions a frame), streamed through ``WaymoMetrics.add_frame``; the synthetic data is
  generated in chunks and its time is not counted.

Ours runs on one thread in this process; the official op (``.venv-official``, when present) runs in
a child process with TensorFlow's default thread pool (all cores). Peak memory: ours as the growth
of this process's peak RSS during the run, the op as its child's peak RSS (TensorFlow included).

    .venv/bin/python scripts/bench/metrics.py [--cases fake,subset,files,full] [--frames 40000]
        [--official-frames 500] [--files-frames 2000] [--json OUT]
    .venv/bin/python scripts/bench/metrics.py --official-fake-constants   # values for the tests

Why it stays: the agreement with the official op and the speed in docs/RESULTS.md, "Metrics", and
``--official-fake-constants`` prints the constants tests/eval/test_official.py pins (docs/studies/metrics-vs-
official.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import one_thread, peak_rss_mib, timed_command, write_report  # noqa: E402

one_thread()

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from detector.eval import WaymoMetrics, default_config, evaluate_objects, objects_to_frames, read_objects  # noqa: E402
from detector.eval.submission import FrameObjects  # noqa: E402
from tests.helpers.metric_cases import synthetic_frames  # noqa: E402
from tests.helpers.official import official_available, official_inputs, run_official_op  # noqa: E402

FAKE_DIR = ROOT.parent / "shared" / "waymo_fake"


def _max_diff(ours: dict, official: dict) -> float:
    return max(max(abs(ours[n]["AP"] - v["AP"]), abs(ours[n]["APH"] - v["APH"])) for n, v in official.items())


def bench_fake() -> dict:
    gt, pred = read_objects(FAKE_DIR / "fake_ground_truths.bin"), read_objects(FAKE_DIR / "fake_predictions.bin")
    start = time.perf_counter()
    ours = evaluate_objects(gt, pred)
    row = {"case": "fake", "frames": 20, "ours_s": time.perf_counter() - start}
    if official_available():
        off = run_official_op(*official_inputs(objects_to_frames(gt), objects_to_frames(pred)), default_config())
        row.update(official_s=off.seconds, official_peak_mib=off.peak_rss_mib,
                   max_abs_diff=_max_diff(ours, off.as_dict()))
    return row


def bench_subset(frames: int, seed: int) -> dict:
    cases = list(synthetic_frames(frames, 60, 200, seed=seed))
    for c in cases:  # the op takes float32; both sides get the same values
        c.gt_boxes, c.pred_boxes = c.gt_boxes.astype(np.float32), c.pred_boxes.astype(np.float32)
    start = time.perf_counter()
    m = WaymoMetrics()
    for c in cases:
        m.add_frame(*c.args())
    ours = m.compute()
    row = {"case": "subset", "frames": frames, "ours_s": time.perf_counter() - start,
           "gt_boxes": int(sum(len(c.gt_types) for c in cases)),
           "pred_boxes": int(sum(len(c.pred_types) for c in cases))}
    if official_available():
        gt = {c.key: FrameObjects(c.gt_boxes, c.gt_types, np.ones(len(c.gt_types), np.float32),
                                  np.zeros(len(c.gt_types), bool), c.gt_num_points, c.gt_difficulty) for c in cases}
        pd = {c.key: FrameObjects(c.pred_boxes, c.pred_types, c.pred_scores, c.pred_overlap_nlz,
                                  np.zeros(len(c.pred_types), np.int64), np.zeros(len(c.pred_types), np.int64))
              for c in cases}
        off = run_official_op(*official_inputs(gt, pd), default_config())
        row.update(official_s=off.seconds, official_peak_mib=off.peak_rss_mib,
                   max_abs_diff=_max_diff(ours, off.as_dict()))
    return row


def bench_full(frames: int, seed: int) -> dict:
    rss_before = peak_rss_mib()
    m = WaymoMetrics()
    ours_s = 0.0
    n_gt = n_pred = 0
    for c in synthetic_frames(frames, 60, 200, seed=seed):
        args = c.args()
        n_gt += len(c.gt_types)
        n_pred += len(c.pred_types)
        start = time.perf_counter()
        m.add_frame(*args)
        ours_s += time.perf_counter() - start
    start = time.perf_counter()
    m.compute()
    ours_s += time.perf_counter() - start
    return {"case": "full", "frames": frames, "ours_s": ours_s, "gt_boxes": n_gt, "pred_boxes": n_pred,
            "ours_peak_growth_mib": peak_rss_mib() - rss_before}


def bench_files(frames: int, seed: int) -> dict:
    import tempfile

    from waymo_open_dataset.protos import metrics_pb2

    from detector.eval import detections_to_objects, write_objects

    with tempfile.TemporaryDirectory() as tmp:
        gt, pred = metrics_pb2.Objects(), metrics_pb2.Objects()
        for c in synthetic_frames(frames, 60, 200, seed=seed):
            ctx, ts = c.key
            objs = detections_to_objects(ctx, ts, c.gt_boxes, np.ones(len(c.gt_types)), c.gt_types)
            for o, npts, diff in zip(objs, c.gt_num_points, c.gt_difficulty):
                o.object.num_lidar_points_in_box, o.object.detection_difficulty_level = int(npts), int(diff)
            gt.objects.extend(objs)
            pred.objects.extend(detections_to_objects(ctx, ts, c.pred_boxes, c.pred_scores, c.pred_types))
        n_gt, n_pred = len(gt.objects), len(pred.objects)
        write_objects(Path(tmp) / "gt.bin", gt)
        write_objects(Path(tmp) / "pred.bin", pred)
        del gt, pred
        # The CLI itself, in a fresh process: its wall time and peak RSS (imports included).
        seconds, _ = timed_command([sys.executable, "-m", "detector.metrics", str(Path(tmp) / "gt.bin"),
                                    str(Path(tmp) / "pred.bin")])
        peak = peak_rss_mib(children=True)
        return {"case": "files", "frames": frames, "ours_s": seconds, "gt_boxes": n_gt, "pred_boxes": n_pred,
                "cli_peak_rss_mib": peak}


def official_fake_constants() -> None:
    gt, pred = read_objects(FAKE_DIR / "fake_ground_truths.bin"), read_objects(FAKE_DIR / "fake_predictions.bin")
    off = run_official_op(*official_inputs(objects_to_frames(gt), objects_to_frames(pred)), default_config())
    for name, a, h in zip(off.names, off.ap, off.aph):
        print(f'    "{name}": ({float(a)!r}, {float(h)!r}),')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40_000, help="frames of the full-size case")
    parser.add_argument("--official-frames", type=int, default=500, help="frames of the case run by both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files-frames", type=int, default=2000, help="frames of the .bin file case")
    parser.add_argument("--cases", default="fake,subset,files,full", help="comma list of fake, subset, files, full")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--official-fake-constants", action="store_true",
                        help="print the official op's AP/APH on the fake files and exit")
    args = parser.parse_args()
    if args.official_fake_constants:
        official_fake_constants()
        return
    cases = set(args.cases.split(","))
    rows = []
    if "files" in cases:  # first: the peak RSS of children must be the CLI's, not the op's
        rows.append(bench_files(args.files_frames, args.seed))
    if "fake" in cases and FAKE_DIR.exists():
        rows.append(bench_fake())
    if "subset" in cases:
        rows.append(bench_subset(args.official_frames, args.seed))
    if "full" in cases:
        rows.append(bench_full(args.frames, args.seed))
    if not official_available():
        print("(no .venv-official: official op not run; scripts/setup_official.sh makes it)")
    for r in rows:
        line = f"{r['case']:>6}: {r['frames']:>6} frames  ours {r['ours_s']:8.2f} s"
        if "official_s" in r:
            line += (f"  official {r['official_s']:8.2f} s  official/ours {r['official_s'] / r['ours_s']:6.1f}x"
                     f"  official peak {r['official_peak_mib']:.0f} MiB  max |dAP|,|dAPH| {r['max_abs_diff']:.1e}")
        if "cli_peak_rss_mib" in r:
            line += (f"  ({r['gt_boxes']} gt, {r['pred_boxes']} pred boxes; "
                     f"python -m detector.metrics peak RSS {r['cli_peak_rss_mib']:.0f} MiB)")
        if "ours_peak_growth_mib" in r:
            line += (f"  ({r['gt_boxes']} gt, {r['pred_boxes']} pred boxes; "
                     f"peak RSS growth {r['ours_peak_growth_mib']:.0f} MiB)")
        print(line, flush=True)
    if args.json:
        write_report(Path(args.json), rows)


if __name__ == "__main__":
    main()
