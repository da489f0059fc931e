"""Waymo detection metrics of a prediction file against a ground-truth file, without TensorFlow.

    python -m detector.metrics GT.bin PRED.bin [--json OUT.json] [--plot PR.png]

Both files are ``metrics_pb2.Objects`` (the leaderboard format). Prints AP/APH per class and
difficulty level, then per range; ``--json`` writes ``{breakdown name: {"AP": .., "APH": ..}}`` with
the official breakdown names; ``--plot`` draws the precision/recall curves per class.
"""

from __future__ import annotations

import argparse
import os
import sys

from detector.data.frame_store import write_json_atomic
from detector.atomic import atomic_path
from detector.eval.metrics import PRCurve, evaluate_objects_curves
from detector.eval.submission import SubmissionError, read_objects

def _split(name: str) -> tuple[str, ...]:
    """``OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1`` -> (VEHICLE, LEVEL_1); ranges keep their interval."""
    for prefix in ("OBJECT_TYPE_TYPE_", "RANGE_TYPE_"):
        if name.startswith(prefix):
            rest, level = name[len(prefix):].rsplit("_", 2)[0], "_".join(name.rsplit("_", 2)[1:])
            return tuple(rest.split("_", 1)) + (level,)
    return (name,)


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Class x level x AP/APH, then class x range x level, then any other breakdown."""
    groups = {"OBJECT_TYPE_": ("class", "level"), "RANGE_": ("class", "range", "level"), "": ("breakdown",)}
    lines = []
    taken: set[str] = set()
    for prefix, header in groups.items():
        rows = [(_split(n) if prefix else (n,), v) for n, v in results.items()
                if n.startswith(prefix) and n not in taken]
        taken.update(n for n in results if n.startswith(prefix))
        if not rows:
            continue
        widths = [max(len(h), *(len(r[0][i]) for r in rows)) + 2 for i, h in enumerate(header)]
        lines.append("".join(f"{h:<{w}}" for h, w in zip(header, widths)) + f"{'AP':>8}{'APH':>8}")
        for cols, v in rows:
            lines.append("".join(f"{c:<{w}}" for c, w in zip(cols, widths)) + f"{v['AP']:>8.4f}{v['APH']:>8.4f}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_pr_curves(curves: dict[str, PRCurve], path: str | os.PathLike) -> None:
    """One panel per class (OBJECT_TYPE breakdowns), one line per difficulty level; atomic write."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot, no backend switch

    prefix = "OBJECT_TYPE_TYPE_"
    by_class: dict[str, list[PRCurve]] = {}
    for name, curve in curves.items():
        if name.startswith(prefix):
            by_class.setdefault(name[len(prefix):].rsplit("_LEVEL_", 1)[0], []).append(curve)
    if not by_class:
        raise ValueError("no OBJECT_TYPE breakdown to plot")
    fig = Figure(figsize=(4 * len(by_class), 4))
    axes = fig.subplots(1, len(by_class), squeeze=False)
    for ax, (cls, cls_curves) in zip(axes[0], by_class.items()):
        for c in cls_curves:
            level = c.name.rsplit("_", 2)[-2:]
            ax.plot(c.recall, c.precision, label=f"{'_'.join(level)}  AP {c.ap:.3f}")
            ax.plot(c.recall, c.precision_ha, linestyle="--", label=f"{'_'.join(level)}  APH {c.aph:.3f}")
        ax.set(title=cls, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("gt", help="ground truth, metrics_pb2.Objects (.bin)")
    parser.add_argument("pred", help="predictions, metrics_pb2.Objects (.bin)")
    parser.add_argument("--json", metavar="OUT.json", help="write {breakdown: {AP, APH}} here")
    parser.add_argument("--plot", metavar="PR.png", help="draw the precision/recall curves per class here")
    args = parser.parse_args(argv)
    try:
        gt = read_objects(args.gt)
        pred = read_objects(args.pred)
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(gt.objects) and not any(o.object.num_lidar_points_in_box > 0 for o in gt.objects):
        print(f"error: {args.gt}: no object has num_lidar_points_in_box > 0, so no ground truth is left "
              "(is this a prediction file? the order is GT.bin PRED.bin)", file=sys.stderr)
        return 2
    metrics = evaluate_objects_curves(gt, pred)
    curves = metrics.pr_curves()
    results = {name: {"AP": c.ap, "APH": c.aph} for name, c in curves.items()}
    print(f"{metrics.num_frames} frames, {len(gt.objects)} ground-truth objects, {len(pred.objects)} predictions\n")
    print(format_table(results), end="")
    if args.json:
        write_json_atomic(args.json, results)
        os.chmod(args.json, 0o644)
        print(f"\nwrote {args.json}")
    if args.plot:
        plot_pr_curves(curves, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
