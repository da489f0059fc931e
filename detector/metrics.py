"""Waymo detection metrics of a prediction file against a ground-truth file, without TensorFlow.

    python -m detector.metrics GT.bin PRED.bin [--tracking] [--json OUT.json] [--plot PR.png] [--skip-invalid]
                               [--strict]

Both files are ``metrics_pb2.Objects`` (the leaderboard format). Prints AP/APH per class and
difficulty level, then per range; ``--json`` writes ``{breakdown name: {"AP": .., "APH": ..}}`` with
the official breakdown names; ``--plot`` draws the precision/recall curves per class.

``--tracking`` scores the Waymo tracking metrics instead, as the official ``compute_tracking_metrics_main``
does (sequence = context name, frames in timestamp order, object ids from ``Object.object.id``, every
ground truth kept, levels by ``tracking_difficulty_level``): MOTA, MOTP, MISS, MISMATCH, FP per class and
level, then per range; ``--json`` writes ``{breakdown name: {"MOTA", "MOTP", "MISS", "MISMATCH", "FP"}}``.
Objects without an id are refused (file, frame, object); a prediction id repeated within a frame is
scored as the official computation does (the first counts, the others are ignored) and warned about
(``--strict``: an error); a repeated ground-truth id is refused.

Objects with NaN/inf values, non-positive box sizes or unknown types are refused with the file, the
frame and the object index (``--skip-invalid``: left out and counted). Predictions on frames absent
from the ground truth, and a ground truth without objects, are warned about with counts
(``--strict``: an error).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from detector.atomic import check_writable, write_json_atomic
from detector.errors import InputError, user_errors
from detector.eval.object_checks import check_frames, frame_coverage
from detector.eval.report import TRACKING_COLUMNS, format_table, plot_pr_curves
from detector.eval.submission import objects_to_frames, read_objects
from detector.eval.tracking_metrics import duplicate_ids, evaluate_tracking_frames
from detector.eval.waymo_metrics import evaluate_frames_curves
from detector.output_paths import check_not_input


def read_checked(gt_path: str, pred_path: str, skip_invalid: bool, strict: bool, tracking: bool = False):
    """Both files read, grouped by frame and checked (see the module docstring); warnings go to stderr."""
    gt = check_frames(objects_to_frames(read_objects(gt_path), tracking), gt_path, ground_truth=True,
                      skip_invalid=skip_invalid)
    pred = check_frames(objects_to_frames(read_objects(pred_path), tracking), pred_path, ground_truth=False,
                        skip_invalid=skip_invalid)
    for path, check in ((gt_path, gt), (pred_path, pred)):
        if check.invalid:
            print(f"warning: {path}: left out {check.invalid} invalid objects (--skip-invalid), e.g. "
                  f"{check.problems[0]}", file=sys.stderr)
    warnings = frame_coverage(gt.frames, pred.frames).warnings(gt_path, pred_path)
    if tracking:
        warnings += check_ids(gt.frames, gt_path, ground_truth=True) + check_ids(pred.frames, pred_path,
                                                                                  ground_truth=False)
    if warnings and strict:
        raise InputError(warnings[0] + " (--strict)")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return gt.frames, pred.frames


def check_ids(frames: dict, path: str, ground_truth: bool) -> list[str]:
    """Tracking ids: every object needs one (``InputError`` naming the file, frame and object); a ground-truth
    id repeated in a frame is an error, a prediction id repeated is a warning (returned)."""
    kind = "ground-truth object" if ground_truth else "prediction"
    with_id = sum(int((f.ids != "").sum()) for f in frames.values())
    total = sum(len(f.ids) for f in frames.values())
    if total and with_id == 0:
        raise InputError(f"{path}: no object has an id (Object.object.id), which --tracking needs: write the "
                         "track ids (e.g. detector.evaluate/predict with tracker=default)")
    extra_total, first = 0, None
    for key, f in frames.items():
        missing = np.flatnonzero(f.ids == "")
        if len(missing):
            raise InputError(f"{path}: {kind} {int(missing[0])} of frame ({key[0]!r}, {key[1]}) has no id "
                             f"(Object.object.id) while {with_id} of {total} objects have one")
        extra, dup = duplicate_ids(f.ids)
        if extra and ground_truth:
            raise InputError(f"{path}: ground-truth id {dup!r} repeats in frame ({key[0]!r}, {key[1]}): an object "
                             "id must be unique within a frame")
        if extra:
            extra_total += extra
            first = first or (key, dup)
    if not extra_total:
        return []
    return [f"{path}: {extra_total} predictions repeat an id already used in their frame, first id {first[1]!r} "
            f"in frame ({first[0][0]!r}, {first[0][1]}); scored as the official computation does (of the "
            "predictions of one class sharing an id in a frame, the first counts, the others are ignored)"]


@user_errors(prefix="metrics", returns=True)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("gt", help="ground truth, metrics_pb2.Objects (.bin)")
    parser.add_argument("pred", help="predictions, metrics_pb2.Objects (.bin)")
    parser.add_argument("--tracking", action="store_true",
                        help="score the Waymo tracking metrics (MOTA, MOTP, MISS, MISMATCH, FP) from the object ids")
    parser.add_argument("--json", metavar="OUT.json",
                        help="write {breakdown: {AP, APH}} (--tracking: {MOTA, MOTP, MISS, MISMATCH, FP}) here")
    parser.add_argument("--plot", metavar="PR.png", help="draw the precision/recall curves per class here")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave out objects with NaN/inf values or non-positive sizes (counted) "
                             "instead of refusing")
    parser.add_argument("--strict", action="store_true",
                        help="make the warnings (empty ground truth, predictions on frames absent from it, "
                             "--tracking: prediction ids repeated within a frame) errors")
    args = parser.parse_args(argv)
    if args.tracking and args.plot:
        raise InputError("--plot draws detection precision/recall curves; it does not go with --tracking")
    for key, out in (("--json", args.json), ("--plot", args.plot)):
        if out:
            check_not_input(out, [args.gt, args.pred], key, "GT/PRED")
            check_writable(out)  # before the work, not after the table printed
    gt, pred = read_checked(args.gt, args.pred, args.skip_invalid, args.strict, args.tracking)
    num_gt, num_pred = (sum(len(f.boxes) for f in frames.values()) for frames in (gt, pred))
    if args.tracking:
        metrics = evaluate_tracking_frames(gt, pred)
        results = metrics.compute()
        sequences = len({k[0] for k in set(gt) | set(pred)})
        print(f"{metrics.num_frames} frames of {sequences} sequences, {num_gt} ground-truth objects, "
              f"{num_pred} predictions\n")
        print(format_table(results, TRACKING_COLUMNS), end="")
        if args.json:
            write_json_atomic(args.json, results)
            os.chmod(args.json, 0o644)
            print(f"\nwrote {args.json}")
        return 0
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
