"""Where a temporal model can still gain: AP by the objects' point count, at the official and a loose IoU.

    .venv/bin/python scripts/bench/headroom.py data/bench/synthetic \
        single_frame=work/paper_table/full/single_frame/eval lstm=work/paper_table/full/lstm/eval \
        [--split validation] [--bins 6 20 50 150] [--loose-iou 0.1] [--moving 1.0] [--ranges 20 30]
        [--out FILE.json]

For each ``NAME=EVAL_DIR`` (a ``detector.evaluate`` output holding ``predictions.bin``, evaluated on
``--split`` of the frame store) and each class, LEVEL_1 AP over the ground truths whose ``num_points``
falls in each bin (the others removed, predictions that would have matched them ignored: the subset
computation of ``detector/eval/occlusion.py``; marking them LEVEL_2 would not do, as the official
LEVEL_1 still counts a detection of a LEVEL_2 object as a true positive), at the class's official IoU
(0.7 vehicle, 0.5 others) and at ``--loose-iou``. The row "all" keeps every object: the official
LEVEL_1 AP. AP at the loose IoU is how many objects a model finds at all, whatever the fit:
the gap between it and the official AP is what better fits could add, and one minus it what only
finding more objects could. A model that aggregates frames gains most where single frames hold few
points; this says how many objects live there on a split, and how much AP is left to take. Two more
rows split the objects by speed over ground (``--moving``, from each tracking id's centre in the frame
before, moved by the poses): a state moved by the ego poses only must follow a moving object itself;
and the last rows by distance from the ego (``--ranges``).

Why it stays: it says where a temporal model gains and how much AP is left to take on a split
(docs/studies/lstm-gain-headroom.md); the question comes back with every new split or model. Tested in
tests/cli/test_headroom.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import markdown_table, write_report  # noqa: E402

CLASSES = {1: "VEHICLE", 2: "PEDESTRIAN", 4: "CYCLIST"}
LEVEL_2 = 2  # label_pb2.Label.DifficultyLevel
LEVEL_2_MAX_POINTS = 5  # and fewer points: LEVEL_2 whatever the label says


def loose_config(iou: float):
    """The official metrics config with every class's IoU threshold set to ``iou``."""
    from detector.eval.config import default_config

    config = default_config()
    del config.iou_thresholds[:]
    config.iou_thresholds.extend([0.0, iou, iou, iou, iou])
    return config


def bin_edges(bins: list[int]) -> list[tuple[int, int | None]]:
    """``[6, 20, 50]`` -> ``[(6, 20), (20, 50), (50, None)]`` (lower bound inclusive); the first edge is
    LEVEL_1's lower bound (more than 5 points), so every bin counts at LEVEL_1."""
    if sorted(bins) != list(bins) or len(set(bins)) != len(bins) or not bins or bins[0] < 1:
        raise SystemExit(f"--bins {bins}: expected increasing point counts >= 1")
    return [(lo, hi) for lo, hi in zip(bins, [*bins[1:], None])]


def speeds(frames) -> list[np.ndarray]:
    """Per frame, each label's speed over ground in m/s from its tracking id's centre one frame before
    (or after, on a segment's first frame), both moved into world coordinates by the poses; NaN where
    the id is in neither neighbour."""
    out = []
    for i, f in enumerate(frames):
        v = np.full(len(f.ids), np.nan)
        world = f.boxes[:, :3] @ f.pose[:3, :3].T + f.pose[:3, 3]
        for j in (i - 1, i + 1):
            if not 0 <= j < len(frames) or frames[j].segment != f.segment:
                continue
            g = frames[j]
            index = {k: n for n, k in enumerate(g.ids)}
            dt = abs(f.timestamp_micros - g.timestamp_micros) * 1e-6
            for n, k in enumerate(f.ids):
                if np.isnan(v[n]) and k in index:
                    other = g.pose[:3, :3] @ g.boxes[index[k], :3] + g.pose[:3, 3]
                    v[n] = float(np.hypot(*(world[n, :2] - other[:2]))) / dt
        out.append(v)
    return out


def subsets(frames, bins: list[int], moving: float, ranges: list[float]) -> dict[str, list]:
    """Row name -> ``[(frame, mask)]``: every object (the official LEVEL_1 metrics), each point-count
    bin, still and moving objects, each distance band (BEV distance of the box centre from the ego)."""
    speed = speeds(frames)
    top = np.iinfo(np.int64).max
    rows = {"all": [(f, np.ones(len(f.ids), bool)) for f in frames]}
    for lo, hi in bin_edges(bins):
        rows[f"{lo}-{hi - 1}" if hi else f">={lo}"] = [
            (f, (f.num_points >= lo) & (f.num_points < (hi or top))) for f in frames]
    rows[f"still (< {moving:g} m/s)"] = [(f, (f.num_points >= bins[0]) & (v < moving)) for f, v in zip(frames, speed)]
    rows[f"moving (>= {moving:g} m/s)"] = [(f, (f.num_points >= bins[0]) & (v >= moving))
                                          for f, v in zip(frames, speed)]
    edges = [0.0, *ranges, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows[f"{lo:g}-{hi:g} m" if np.isfinite(hi) else f">={lo:g} m"] = [
            (f, (f.num_points >= bins[0]) & (lo <= (d := np.hypot(f.boxes[:, 0], f.boxes[:, 1]))) & (d < hi))
            for f in frames]
    return rows


def level_1(f) -> np.ndarray:
    """The labels of a frame that count at LEVEL_1: more than 5 points and not marked LEVEL_2."""
    return (f.num_points > LEVEL_2_MAX_POINTS) & (f.difficulty != LEVEL_2)


def table(frames, predictions: dict[str, dict], bins: list[int], loose_iou: float, moving: float,
          ranges: list[float] = ()) -> dict:
    """``{"bins": [row names], "models": {name: {row: {class: {objects, official, iou X}}}}}`` for
    each model's predictions (frame key -> ``FrameObjects``) on ``frames`` (``FrameLabels``);
    ``objects``: the row's labels that count at LEVEL_1."""
    from detector.eval.occlusion import subset_metrics

    rows = subsets(frames, bins, moving, list(ranges))
    configs = {"official": None, f"iou {loose_iou:g}": loose_config(loose_iou)}
    out: dict = {"loose_iou": loose_iou, "bins": list(rows), "models": {}}
    for name, preds in predictions.items():
        model: dict = {}
        for label, masks in rows.items():
            row: dict = {}
            for cname, config in configs.items():
                metrics, _ = subset_metrics(masks, preds, config)
                result = metrics.compute()
                for typ, cls in CLASSES.items():
                    n = sum(int((m & level_1(f) & (f.types == typ)).sum()) for f, m in masks)
                    entry = row.setdefault(cls, {"objects": n})
                    entry[cname] = float(result[f"OBJECT_TYPE_TYPE_{cls}_LEVEL_1"]["AP"])
            model[label] = row
        out["models"][name] = model
    return out


def headroom(store_root: Path, split: str, eval_dirs: dict[str, Path], bins: list[int],
             loose_iou: float, moving: float, ranges: list[float]) -> dict:
    """:func:`table` for the ``predictions.bin`` of each evaluation directory on a frame-store split."""
    from detector.data.frame_store import list_segments
    from detector.eval.occlusion import load_labels, predictions_by_frame
    from detector.eval.submission import read_objects

    segments = list_segments(store_root, split)
    if not segments:
        raise SystemExit(f"{store_root / split}: no complete segments")
    frames = [f for seg in segments for f in load_labels(seg)]
    predictions = {}
    for name, eval_dir in eval_dirs.items():
        path = eval_dir / "predictions.bin"
        if not path.is_file():
            raise SystemExit(f"{name}={eval_dir}: no predictions.bin (a detector.evaluate output directory)")
        preds = predictions_by_frame(read_objects(path), str(path))
        unknown = set(preds) - {f.key for f in frames}
        if unknown:
            raise SystemExit(f"{path}: {len(unknown)} frames are not in {store_root / split} (another split?)")
        predictions[name] = preds
    return {"store": str(store_root), "split": split, **table(frames, predictions, bins, loose_iou, moving, ranges)}


def markdown(result: dict) -> str:
    names = list(result["models"])
    loose = f"iou {result['loose_iou']:g}"
    lines = []
    for cls in CLASSES.values():
        first, models = result["models"][names[0]], result["models"]
        rows = [[b, f"{first[b][cls]['objects']:,}",
                 *(f"{100 * models[n][b][cls]['official']:.1f} / {100 * models[n][b][cls][loose]:.1f}" for n in names)]
                for b in result["bins"]]
        lines += [f"**{cls.lower()}** (LEVEL_1 AP in %, official IoU / IoU {result['loose_iou']:g})", "",
                  markdown_table(["points", "objects", *names], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store", type=Path, help="frame-store root (e.g. data/bench/synthetic)")
    p.add_argument("runs", nargs="+", metavar="NAME=EVAL_DIR", help="detector.evaluate output directories")
    p.add_argument("--split", default="validation")
    p.add_argument("--bins", type=int, nargs="+", default=[6, 20, 50, 150],
                   help="lower edges of the point-count bins (the first: LEVEL_1's 6)")
    p.add_argument("--loose-iou", type=float, default=0.1)
    p.add_argument("--moving", type=float, default=1.0, help="speed (m/s) from which an object counts as moving")
    p.add_argument("--ranges", type=float, nargs="*", default=[20.0, 30.0],
                   help="edges of the distance bands (m, BEV distance from the ego)")
    p.add_argument("--out", type=Path, help="also write the result as JSON here (its tables beside it, .md)")
    args = p.parse_args(argv)
    runs: dict[str, Path] = {}
    for kv in args.runs:
        name, sep, path = kv.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{kv}: expected NAME=EVAL_DIR")
        runs[name] = Path(path)
    result = headroom(args.store, args.split, runs, args.bins, args.loose_iou, args.moving, args.ranges)
    print(markdown(result))
    if args.out:
        write_report(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
