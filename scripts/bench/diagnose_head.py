"""Why a class is (not) detected: per-class positives, scores, reachable IoU and heading direction.

    .venv/bin/python scripts/bench/diagnose_head.py --ckpt RUN/checkpoints/last.ckpt --store work/demo/store \
        [--split validation] [--max-frames 60] [--out work/diag/run.json]

Streams the checkpoint over the split (state carried, as ``detector.evaluate``) and, per class, over
the labelled objects with at least one point whose centre lies in the model's range:

- ``pos_sites``: head sites the target rule makes positive for the object (median, mean, share with 0);
- ``site_score``: the trained class's probability on those sites (median over objects of the
  object's best site, and of its mean site);
- ``best_site_iou``: per object, the best 3D IoU of the boxes decoded at its own positive sites (what
  the regression can reach before NMS), share at or above the class's IoU threshold;
- ``det_recall``: share of objects matched (IoU at threshold, same class) by a decoded detection of any
  score, and the median score of those matches;
- ``dir_acc_sites``: share of positive sites whose decoded heading is within 90 degrees of the truth;
  ``dir_acc_dets``: the same for the matched detections, after the stream's motion heading when the
  head has it on; ``_moving`` / ``_static``: the same split by the object's own world speed (from the
  labels and the poses, ``_world_speeds``; moving at >= 0.5 m/s, static below 0.2 m/s, others in neither);
- ``detections``: detections of the class emitted (after the score threshold and NMS);
- ``long_*``: positives, best site IoU and recall of the objects at least ``LONG_M`` long (trucks, buses);
- ``static_*``: per static object (its world position), how many have their matched detections' heading
  right in >= 80% / <= 20% of their frames, the share right under a causal majority vote over each
  object's frames, and the share of static detections facing +x of the vehicle frame.

Why it stays: the diagnosis that found the parked cars' fronts and the motion heading's errors
(docs/studies/direction-bit.md, docs/studies/motion-heading-parked-cars.md); the first tool to run when a
class's AP or APH drops.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import write_report  # noqa: E402

NAMES = {1: "vehicle", 2: "pedestrian", 4: "cyclist"}
IOU_THRESHOLD = {1: 0.7, 2: 0.5, 4: 0.5}
LONG_M = 6.5  # objects at least this long (trucks and buses among the vehicles) are also reported apart


def _heading_ok(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    d = np.abs((pred - gt + math.pi) % (2 * math.pi) - math.pi)
    return d < math.pi / 2


def _world_speeds(frame, pose: np.ndarray, stamp: int, last_seen: dict) -> np.ndarray:
    """Per labelled object, its world BEV speed (m/s) since the previous frame: the distance to the
    nearest object of its type there (objects never overlap, and none moves 2 m between frames; nan
    when none is that near). ``last_seen`` holds the previous frame's (world xy, types, seconds)."""
    boxes = frame.boxes[:, 1:].double().numpy()
    types = frame.types.numpy()
    world = boxes[:, :2] @ pose[:2, :2].T + pose[:2, 3]
    t = stamp * 1e-6
    speeds = np.full(len(boxes), np.nan)
    if last_seen and t > last_seen["t"]:
        for j in range(len(boxes)):
            prev = last_seen["xy"][last_seen["types"] == types[j]]
            if len(prev):
                d = float(np.min(np.hypot(*(prev - world[j]).T)))
                if d < 2.0:
                    speeds[j] = d / (t - last_seen["t"])
    last_seen.update(xy=world, types=types, t=t)
    return speeds


def _static_report(objects: dict[tuple, list[bool]], facing_x: list[bool]) -> dict:
    """Whether a static object's heading errors are per object or per frame: its share of right frames,
    and what a causal majority vote over its frames so far would give."""
    shares = np.array([np.mean(o) for o in objects.values()])
    frames = sum(len(o) for o in objects.values())
    vote = 0
    for o in objects.values():
        tally = 0
        for ok in o:
            tally += 1 if ok else -1
            vote += tally > 0 or (tally == 0 and ok)
    return {"static_objects": len(objects),
            "static_objects_right_80": int((shares >= 0.8).sum()),
            "static_objects_right_20": int((shares <= 0.2).sum()),

            "dir_acc_dets_static_vote": vote / frames if frames else float("nan"),
            "static_dets_facing_x": float(np.mean(facing_x)) if facing_x else float("nan")}


def _motion_kind(speed: float) -> str | None:

    if not np.isfinite(speed):
        return None
    return "moving" if speed >= 0.5 else "static" if speed < 0.2 else None


def diagnose(model, frames, point_range) -> dict:
    import torch

    from detector.boxes.iou import iou3d, paired_iou
    from detector.streaming import motion_heading_of

    keys = ("pos", "best_score", "mean_score", "site_iou", "match", "match_score", "dir_sites", "dir_dets",
            "dir_sites_moving", "dir_sites_static", "dir_dets_moving", "dir_dets_static",
            "long_pos", "long_site_iou", "long_match", "static_facing_x")
    acc: dict[int, dict[str, list]] = {t: {k: [] for k in keys} for t in model.classes}
    # per static object (segment, world position to 1 m): its matched detections' heading right or not
    static_objects: dict[int, dict[tuple, list[bool]]] = {t: {} for t in model.classes}
    emitted = {t: 0 for t in model.classes}
    xmin, ymin, _, xmax, ymax, _ = point_range
    state, segment, last_seen = None, None, {}
    motion = motion_heading_of(model)
    with torch.no_grad():
        for frame in frames:
            if state is None or frame.segments[0] != segment:
                state, segment, last_seen = model.init_state(1), frame.segments[0], {}
                if motion is not None:
                    motion.reset()
            out, state = model._causal_frame(frame, state)
            state = state.detach()
            det = model._decode(out, frame)[0]  # the head and the box-direction stage, as Detector.step
            pose = frame.poses[0].double().numpy()
            stamp = int(frame.timestamps[0])
            if motion is not None:
                det = motion(det, pose, stamp)
            speeds = _world_speeds(frame, pose, stamp, last_seen)
            targets = model.head.targets(out, frame.boxes, frame.types)
            labels = targets.labels.numpy()
            probs = torch.sigmoid(out.cls_logits).numpy()
            cls_idx = torch.clamp(targets.labels, min=0)
            dir_logits = model.head.direction_logits(out, torch.arange(len(cls_idx)), cls_idx)
            site_boxes = model.head.coder.decode(out.box_reg, dir_logits, out.centres, cls_idx).numpy()
            gt_boxes = frame.boxes[:, 1:].double().numpy()
            gt_world = gt_boxes[:, :2] @ pose[:2, :2].T + pose[:2, 3]
            gt_types = frame.types.numpy()
            npts = frame.num_points.numpy()
            tb = targets.boxes.numpy()
            dboxes, dscores, dtypes = det.boxes.double().numpy(), det.scores.numpy(), det.types.numpy()
            for t in emitted:
                emitted[t] += int((dtypes == t).sum())
            for j in range(len(gt_boxes)):
                t = int(gt_types[j])
                if t not in acc or npts[j] <= 0:
                    continue
                cx, cy = gt_boxes[j, 0], gt_boxes[j, 1]
                if not (xmin <= cx <= xmax and ymin <= cy <= ymax):
                    continue
                k = model.classes.index(t)
                a = acc[t]
                # sites assigned to this object: positive of its class with exactly its box as target
                mine = (labels == k) & np.all(np.abs(tb - gt_boxes[j].astype(np.float32)) < 1e-4, axis=1)
                a["pos"].append(int(mine.sum()))
                long = gt_boxes[j, 3] >= LONG_M
                if long:
                    a["long_pos"].append(int(mine.sum()))
                if mine.any():
                    s = probs[mine, k]
                    a["best_score"].append(float(s.max()))
                    a["mean_score"].append(float(s.mean()))
                    ious = paired_iou(site_boxes[mine].astype(np.float64),
                                      np.broadcast_to(gt_boxes[j], (int(mine.sum()), 7)))
                    a["site_iou"].append(float(ious.max()))
                    if long:
                        a["long_site_iou"].append(float(ious.max()))
                    ok_sites = _heading_ok(site_boxes[mine, 6], gt_boxes[j, 6]).tolist()
                    a["dir_sites"].extend(ok_sites)
                    if (kind := _motion_kind(speeds[j])) is not None:
                        a[f"dir_sites_{kind}"].extend(ok_sites)
                same = dtypes == t
                ok = False
                if same.any():
                    ious = iou3d(dboxes[same], gt_boxes[j:j + 1])[:, 0]
                    best = int(np.argmax(ious))
                    ok = bool(ious[best] >= IOU_THRESHOLD[t])
                    if ok:
                        a["match_score"].append(float(dscores[same][best]))
                        ok_det = bool(_heading_ok(dboxes[same][best, 6:7], gt_boxes[j, 6:7])[0])
                        a["dir_dets"].append(ok_det)
                        if (kind := _motion_kind(speeds[j])) is not None:
                            a[f"dir_dets_{kind}"].append(ok_det)
                        if kind == "static":
                            a["static_facing_x"].append(bool(math.cos(dboxes[same][best, 6]) > 0))
                            where = (segment, *np.round(gt_world[j]).astype(int).tolist())
                            static_objects[t].setdefault(where, []).append(ok_det)
                a["match"].append(ok)
                if long:
                    a["long_match"].append(ok)

    report = {}
    for t, a in acc.items():
        pos = np.array(a["pos"])
        med = lambda v: float(np.median(v)) if len(v) else float("nan")  # noqa: E731
        mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
        report[NAMES.get(t, str(t))] = {
            "objects": int(len(pos)),
            "pos_sites_median": med(pos), "pos_sites_mean": mean(pos),
            "pos_sites_zero_share": mean(pos == 0),
            "site_score_best_median": med(a["best_score"]), "site_score_mean_median": med(a["mean_score"]),
            "best_site_iou_median": med(a["site_iou"]),
            "best_site_iou_at_threshold_share": mean(np.array(a["site_iou"]) >= IOU_THRESHOLD[t]),
            "det_recall": mean(a["match"]), "det_match_score_median": med(a["match_score"]),
            "dir_acc_sites": mean(a["dir_sites"]), "dir_acc_dets": mean(a["dir_dets"]),
            **{f"dir_acc_{w}_{k}": mean(a[f"dir_{w}_{k}"]) for w in ("sites", "dets") for k in ("moving", "static")},
            "matched_moving": len(a["dir_dets_moving"]), "matched_static": len(a["dir_dets_static"]),
            "long_objects": len(a["long_pos"]), "long_pos_sites_median": med(a["long_pos"]),
            "long_best_site_iou_median": med(a["long_site_iou"]),
            "long_best_site_iou_at_threshold_share": mean(np.array(a["long_site_iou"]) >= IOU_THRESHOLD[t]),
            "long_det_recall": mean(a["long_match"]),
            **_static_report(static_objects[t], a["static_facing_x"]),
            "detections": emitted[t],
        }
    return report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--experiment", default="demo_synthetic")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--eval", nargs="*", default=[], help="extra evaluation overrides (key=value)")
    p.add_argument("--head", nargs="*", default=[], help="head attributes to set before decoding (name=value)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import torch
    from hydra.utils import instantiate
    from unseen_seeds import compose

    from detector.checkpoints import load_checkpoint

    torch.set_num_threads(1)
    model = load_checkpoint(args.ckpt, "cpu")
    model.eval()
    for kv in args.head:
        name, value = kv.split("=", 1)
        setattr(model.head, name, json.loads(value))
    cfg = compose("evaluate", [f"experiment={args.experiment}", f"data.root={args.store}", "ckpt_path=unused",
                               f"split={args.split}", *args.eval])
    dm = instantiate(cfg.data)
    dm.setup("test")
    frames = []
    for f in dm.test_dataloader():
        frames.append(f)
        if args.max_frames and len(frames) >= args.max_frames:
            break
    report = diagnose(model, frames, list(cfg.data.point_range))
    for name, r in report.items():
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_report(args.out, {"checkpoint": str(args.ckpt), "store": str(args.store), "report": report})
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
