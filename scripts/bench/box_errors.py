"""How well the boxes fit: AP at several IoU thresholds and the box errors of matched detections.

    .venv/bin/python scripts/bench/box_errors.py work/demo/evaluate [--thresholds 0.5 0.6 0.7] [--out FILE.json]

Reads an evaluation's ``ground_truth.bin`` and ``predictions.bin`` (``detector.evaluate``'s output) and
prints, per class, LEVEL_1 AP by the official computation with the class's IoU threshold set to each
of ``--thresholds`` (the official ones are 0.7 vehicle, 0.5 others), then, for every labelled object
with points, the nearest detection of its type within 2 m (BEV centre): the share of those matches at
or above the class's official IoU, and the median absolute error of each box component in the truth's
axis frame (centre along / across the axis and up, length, width, height, axis angle), over all matches
and over those below the official IoU; vehicles at least 6.5 m long (trucks, buses) apart; and the share
of matches whose front is right (heading within 90 degrees of the truth's), over all and over the still
objects (labelled speed below 0.5 m/s, where labels have a speed: the fronts motion cannot tell).

Why it stays: the one measure of box fit (AP at IoU 0.5–0.7, median errors of matched boxes) that the official
metrics do not give; any change to the head or the box stages is judged with it (docs/studies/box-refinement-
stage.md). Tested in tests/cli/test_box_errors.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import write_report  # noqa: E402

CLASSES = {1: "VEHICLE", 2: "PEDESTRIAN", 4: "CYCLIST"}
OFFICIAL_IOU = {1: 0.7, 2: 0.5, 4: 0.5}
COMPONENTS = ("along", "across", "up", "length", "width", "height", "axis_angle")
LONG_M = 6.5
MATCH_M = 2.0
STILL_MPS = 0.5


def _read(path: Path):
    from waymo_open_dataset.protos import metrics_pb2

    if not path.is_file():
        raise SystemExit(f"{path}: not found (an evaluation directory holds ground_truth.bin and predictions.bin)")
    objects = metrics_pb2.Objects()
    objects.ParseFromString(path.read_bytes())
    return objects


def ap_at_thresholds(gt, pred, thresholds: list[float]) -> dict[str, dict[str, float]]:
    """``{class: {threshold: LEVEL_1 AP}}`` with each class's IoU threshold set to each value in turn."""
    from detector.eval.config import default_config
    from detector.eval.waymo_metrics import evaluate_objects

    out: dict[str, dict[str, float]] = {c: {} for c in CLASSES.values()}
    for thr in thresholds:
        config = default_config()
        del config.iou_thresholds[:]
        config.iou_thresholds.extend([0.0, thr, thr, thr, thr])
        metrics = evaluate_objects(gt, pred, config)
        for name in CLASSES.values():
            out[name][f"{thr:g}"] = metrics[f"OBJECT_TYPE_TYPE_{name}_LEVEL_1"]["AP"]
    return out


def _by_frame(objects, with_points: bool) -> dict[tuple, dict[int, np.ndarray]]:
    frames: dict[tuple, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for o in objects.objects:
        if o.object.type not in CLASSES or (with_points and o.object.num_lidar_points_in_box < 1):
            continue
        b = o.object.box
        frames[(o.context_name, o.frame_timestamp_micros)][o.object.type].append(
            [b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading,
             float(np.hypot(o.object.metadata.speed_x, o.object.metadata.speed_y))
             if o.object.HasField("metadata") else np.nan])
    return {k: {t: np.asarray(v, np.float64) for t, v in d.items()} for k, d in frames.items()}


def box_errors(gt, pred) -> dict[str, dict]:
    """Per class (and long vehicles): matches, share at the official IoU, median absolute errors."""
    from detector.boxes.iou import paired_iou

    truth, dets = _by_frame(gt, with_points=True), _by_frame(pred, with_points=False)
    rows: dict[int, list] = defaultdict(list)
    for key, per_type in truth.items():
        for typ, g in per_type.items():
            p = dets.get(key, {}).get(typ)
            if p is None or len(p) == 0:
                continue
            dist = np.hypot(p[None, :, 0] - g[:, None, 0], p[None, :, 1] - g[:, None, 1])
            j = dist.argmin(axis=1)
            near = dist[np.arange(len(g)), j] <= MATCH_M
            g, m = g[near], p[j[near]]
            if len(g) == 0:
                continue
            iou = paired_iou(m[:, :7], g[:, :7])
            c, s = np.cos(g[:, 6]), np.sin(g[:, 6])
            dx, dy = m[:, 0] - g[:, 0], m[:, 1] - g[:, 1]
            axis = (m[:, 6] - g[:, 6] + np.pi / 2) % np.pi - np.pi / 2
            err = np.stack([c * dx + s * dy, -s * dx + c * dy, m[:, 2] - g[:, 2], *(m[:, 3:6] - g[:, 3:6]).T, axis], 1)
            front = (np.cos(m[:, 6] - g[:, 6]) > 0).astype(np.float64)
            rows[typ].append(np.concatenate([iou[:, None], err, g[:, 3:4], front[:, None], g[:, 7:8]], 1))
    out: dict[str, dict] = {}
    for typ, name in CLASSES.items():
        if not rows[typ]:
            continue
        r = np.concatenate(rows[typ])
        groups = {name: r}
        if typ == 1:
            groups[f"{name} (>= {LONG_M:g} m)"] = r[r[:, 8] >= LONG_M]
        for label, sub in groups.items():
            if len(sub) == 0:
                continue
            ok = sub[:, 0] >= OFFICIAL_IOU[typ]
            still = sub[:, 10] < STILL_MPS
            out[label] = {
                "matches": int(len(sub)), "at_official_iou": float(ok.mean()),
                "front_right": float(sub[:, 9].mean()),
                "still_matches": int(still.sum()),
                "still_front_right": float(sub[still, 9].mean()) if still.any() else None,
                "median_abs": {k: float(np.median(np.abs(sub[:, 1 + i]))) for i, k in enumerate(COMPONENTS)},
                "median_abs_below": ({k: float(np.median(np.abs(sub[~ok, 1 + i]))) for i, k in enumerate(COMPONENTS)}
                                     if (~ok).any() else {}),
            }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("eval_dir", type=Path, help="a detector.evaluate output directory")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    gt, pred = _read(args.eval_dir / "ground_truth.bin"), _read(args.eval_dir / "predictions.bin")
    result = {"eval_dir": str(args.eval_dir), "ap": ap_at_thresholds(gt, pred, args.thresholds),
              "errors": box_errors(gt, pred)}
    print("LEVEL_1 AP at IoU " + " / ".join(f"{t:g}" for t in args.thresholds))
    for name, aps in result["ap"].items():
        print(f"  {name:<11} " + " / ".join(f"{v:.3f}" for v in aps.values()))
    print("matched (nearest within 2 m): share at the official IoU; median |error| (below the official IoU)")
    for label, e in result["errors"].items():
        parts = [f"{k} {v:.3f}" + (f" ({e['median_abs_below'][k]:.3f})" if e["median_abs_below"] else "")
                 for k, v in e["median_abs"].items()]
        still = (f", still {e['still_front_right']:.3f} of {e['still_matches']}"
                 if e["still_front_right"] is not None else "")
        print(f"  {label}: {e['matches']} matches, {e['at_official_iou']:.3f} at IoU, front right "
              f"{e['front_right']:.3f}{still}; " + ", ".join(parts))
    if args.out:
        write_report(args.out, result)
    return result


if __name__ == "__main__":
    main()
