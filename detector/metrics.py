"""Waymo detection metrics of a prediction file against a ground-truth file, without TensorFlow.

    python -m detector.metrics GT.bin PRED.bin [--json OUT.json] [--plot PR.png] [--skip-invalid] [--strict]

Both files are ``metrics_pb2.Objects`` (the leaderboard format). Prints AP/APH per class and
difficulty level, then per range; ``--json`` writes ``{breakdown name: {"AP": .., "APH": ..}}`` with
the official breakdown names; ``--plot`` draws the precision/recall curves per class.

Objects with NaN/inf values, non-positive box sizes or unknown types are refused with the file, the
frame and the object index (``--skip-invalid``: left out and counted). Predictions on frames absent
from the ground truth, and a ground truth without objects, are warned about with counts
(``--strict``: an error).
"""

from __future__ import annotations

import argparse
import os
import sys

from detector.atomic import check_writable, write_json_atomic
from detector.errors import InputError, user_errors
from detector.eval.object_checks import check_frames, frame_coverage
from detector.eval.report import format_table, plot_pr_curves
from detector.eval.submission import objects_to_frames, read_objects
from detector.eval.waymo_metrics import evaluate_frames_curves
from detector.output_paths import check_not_input


def read_checked(gt_path: str, pred_path: str, skip_invalid: bool, strict: bool):
    """Both files read, grouped by frame and checked (see the module docstring); warnings go to stderr."""
    gt = check_frames(objects_to_frames(read_objects(gt_path)), gt_path, ground_truth=True, skip_invalid=skip_invalid)
    pred = check_frames(objects_to_frames(read_objects(pred_path)), pred_path, ground_truth=False,
                        skip_invalid=skip_invalid)
    for path, check in ((gt_path, gt), (pred_path, pred)):
        if check.invalid:
            print(f"warning: {path}: left out {check.invalid} invalid objects (--skip-invalid), e.g. "
                  f"{check.problems[0]}", file=sys.stderr)
    warnings = frame_coverage(gt.frames, pred.frames).warnings(gt_path, pred_path)
    if warnings and strict:
        raise InputError(warnings[0] + " (--strict)")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return gt.frames, pred.frames


@user_errors(prefix="metrics", returns=True)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("gt", help="ground truth, metrics_pb2.Objects (.bin)")
    parser.add_argument("pred", help="predictions, metrics_pb2.Objects (.bin)")
    parser.add_argument("--json", metavar="OUT.json", help="write {breakdown: {AP, APH}} here")
    parser.add_argument("--plot", metavar="PR.png", help="draw the precision/recall curves per class here")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave out objects with NaN/inf values or non-positive sizes (counted) "
                             "instead of refusing")
    parser.add_argument("--strict", action="store_true",
                        help="make the warnings (empty ground truth, predictions on frames absent from it) errors")
    args = parser.parse_args(argv)
    for key, out in (("--json", args.json), ("--plot", args.plot)):
        if out:
            check_not_input(out, [args.gt, args.pred], key, "GT/PRED")
            check_writable(out)  # before the work, not after the table printed
    gt, pred = read_checked(args.gt, args.pred, args.skip_invalid, args.strict)
    num_gt, num_pred = (sum(len(f.boxes) for f in frames.values()) for frames in (gt, pred))
    if num_gt and not any((f.num_points > 0).any() for f in gt.values()):
        raise InputError(f"{args.gt}: no object has num_lidar_points_in_box > 0, so no ground truth is left "
                         "(is this a prediction file? the order is GT.bin PRED.bin)")
    metrics = evaluate_frames_curves(gt, pred)
    curves = metrics.pr_curves()
    results = {name: {"AP": c.ap, "APH": c.aph} for name, c in curves.items()}
    print(f"{metrics.num_frames} frames, {num_gt} ground-truth objects, {num_pred} predictions\n")
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
