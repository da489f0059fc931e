"""The calibration table of the calibrated world (generator 3) from a few frames of many segments, in about a
minute: the quick loop for tuning the scenes and the sensor before the acceptance command
(``paper_table.py --data-only``) makes the whole split.

    .venv/bin/python scripts/bench/calibration_probe.py --segments 24 --frames 5,20,35 --seed 500

Synthesizes frames ``--frames`` of segments seeded ``--seed`` .. ``--seed + --segments - 1`` (40-frame
segments, each frame the same as in the whole segment) and prints ``data_tools.stats``' table against the
real labels, then, per class, where the labels within 30 m lie (0-10 / 10-20 / 20-30 m: count, median points).

Why it stays: docs/studies/calibrated_world.md's tuning steps were measured with it; rerun it on other seeds
before trusting a change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: Where the real labels lie (as paper_table.REAL_LABELS: beside the repository, or beside its worktrees).
REAL = next((p for p in (ROOT.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin",
                         ROOT.parent.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin") if p.is_file()),
            ROOT.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="calibration_probe.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=24)
    ap.add_argument("--frames", default="5,20,35", help="frame indices of each 40-frame segment")
    ap.add_argument("--seed", type=int, default=500, help="the first segment's seed")
    ap.add_argument("--vehicle-density", type=float, default=1.0)
    ap.add_argument("--pedestrian-density", type=float, default=1.0)
    ap.add_argument("--real", default=str(REAL), metavar="GT.bin", help="real labels (metrics_pb2.Objects)")
    args = ap.parse_args(argv)

    import numpy as np
    from waymo_open_dataset import dataset_pb2

    from data_tools import stats
    from data_tools.synth_segment import SegmentConfig, synthesize_segment
    from detector.errors import InputError

    try:
        frames = {int(x) for x in args.frames.split(",")}
    except ValueError:
        print(f"calibration_probe.py: --frames {args.frames!r}: not comma-separated frame indices", file=sys.stderr)
        return 2
    if not all(0 <= f < 40 for f in frames):
        print(f"calibration_probe.py: --frames {args.frames}: indices must lie in 0..39", file=sys.stderr)
        return 2
    try:
        real = stats.calibration(stats.labels_from_ground_truth(args.real))
    except InputError as e:
        print(f"calibration_probe.py: {e}", file=sys.stderr)
        return 2
    cfg = SegmentConfig(frames=40, generator=3, lidar="waymo", object_range=90.0, label_range=75.0,
                        vehicle_density=args.vehicle_density, pedestrian_density=args.pedestrian_density)
    parts, count, t0 = [], 0, time.perf_counter()
    for k in range(args.segments):
        for record, _ in synthesize_segment(cfg, args.seed + k, only=frames):
            frame = dataset_pb2.Frame.FromString(record)
            labels = frame.laser_labels
            parts.append((np.array([lab.type for lab in labels], np.int64),
                          np.array([np.hypot(lab.box.center_x, lab.box.center_y) for lab in labels]),
                          np.array([lab.num_lidar_points_in_box for lab in labels], np.int64),
                          np.array([lab.detection_difficulty_level for lab in labels], np.int64)))
            count += 1
    labels = stats.Labels.concat(parts, count, "probe")
    print(stats.compare(stats.calibration(labels), real)[0])
    for t, name in ((1, "vehicles"), (2, "pedestrians")):
        mine = (labels.types == t) & (labels.distance < 30)
        d, n = labels.distance[mine], labels.points[mine]
        rows = []
        for a in (0, 10, 20):
            ring = (d >= a) & (d < a + 10)
            rows.append((int(ring.sum()), float(np.median(n[ring])) if ring.any() else float("nan")))
        print(f"{name} within 30 m, 0-10 / 10-20 / 20-30 m: "
              + " / ".join(f"{c} labels, median {m:.0f}" for c, m in rows) + f" ({count} frames)")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
