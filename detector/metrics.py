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

from detector.atomic import write_json_atomic
from detector.eval.report import format_table, plot_pr_curves
from detector.errors import InputError, user_errors
from detector.eval.submission import read_objects
from detector.eval.waymo_metrics import evaluate_objects_curves



@user_errors(returns=True)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("gt", help="ground truth, metrics_pb2.Objects (.bin)")
    parser.add_argument("pred", help="predictions, metrics_pb2.Objects (.bin)")
    parser.add_argument("--json", metavar="OUT.json", help="write {breakdown: {AP, APH}} here")
    parser.add_argument("--plot", metavar="PR.png", help="draw the precision/recall curves per class here")
    args = parser.parse_args(argv)
    gt = read_objects(args.gt)
    pred = read_objects(args.pred)
    if len(gt.objects) and not any(o.object.num_lidar_points_in_box > 0 for o in gt.objects):
        raise InputError(f"{args.gt}: no object has num_lidar_points_in_box > 0, so no ground truth is left "
                         "(is this a prediction file? the order is GT.bin PRED.bin)")
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
