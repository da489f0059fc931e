"""What the frame invariants cost (``detector.data.frame_checks``), as ratios in this one process:

- conversion: the checks of one frame (``check_pose`` of its pose, ``check_extrinsics`` of its lidars;
  ``SegmentFrameChecks``: timestamp
  order, labels finite, sizes positive, ids unique) against converting that frame
  (``convert_segment`` of a v1 segment, per frame), and ``convert_segment`` with the checks against
  the same with the checks replaced by no-ops (A/B, alternating, best of ``--repeats``);
- loading: ``SegmentInfo.load_frame`` (which now compares the file's timestamp with ``segment.json``,
  checks the pose and refuses labels the converter would drop) against ``Frame.load_npz`` of the same files;
- the converter's resume check: ``damaged_frame`` (zip CRCs and now each file's timestamp) against
  ``verify_frame_file`` alone (the CRCs, what it checked before).

    .venv/bin/python scripts/bench/frame_checks.py [--frames 6] [--repeats 3] [--lidar demo|waymo]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from data_tools import convert_waymo  # noqa: E402
from data_tools.segment_checks import damaged_frame  # noqa: E402
from data_tools.synth_segment import SegmentConfig  # noqa: E402
from data_tools.synthesize import synthesize  # noqa: E402
from detector.data import frame_checks, waymo_reader  # noqa: E402
from detector.data.frame import Frame, verify_frame_file  # noqa: E402
from detector.data.frame_store import list_segments  # noqa: E402
from detector.data.range_image import LaserCalibration  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


class _NoChecks(frame_checks.SegmentFrameChecks):
    def __call__(self, frame, where):
        return frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lidar", default="demo", choices=("demo", "waymo"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "src", 1, 0, 0, SegmentConfig(frames=args.frames, lidar=args.lidar), workers=1)
        (job,) = convert_waymo.find_records(tmp / "src")

        def convert_once():
            shutil.rmtree(tmp / "dst", ignore_errors=True)
            r = convert_waymo.convert_segment(job, tmp / "dst")
            assert r.status == "converted", r.error

        # A/B: the converter with the checks, and with them replaced by no-ops
        real = waymo_reader.check_pose, waymo_reader.check_extrinsics, convert_waymo.SegmentFrameChecks
        with_checks, without = [], []
        for _ in range(args.repeats):
            with_checks.append(best(convert_once, 1))
            waymo_reader.check_pose, waymo_reader.check_extrinsics, convert_waymo.SegmentFrameChecks = (
                lambda pose, where: None), (lambda calibrations, where: None), _NoChecks
            try:
                without.append(best(convert_once, 1))
            finally:
                waymo_reader.check_pose, waymo_reader.check_extrinsics, convert_waymo.SegmentFrameChecks = real
        convert_once()
        per_frame = min(with_checks) / args.frames

        # the checks alone, on the frames as read
        protos = [p for _, p in waymo_reader.iter_frame_protos(job.path)]
        frames = [waymo_reader.frame_from_proto(p, i) for i, p in enumerate(protos)]
        labels = sum(f.num_boxes for f in frames)
        calibrations = [[LaserCalibration(c.name, np.asarray(c.extrinsic.transform, np.float64), None, 0.0, 0.0)
                         for c in p.context.laser_calibrations] for p in protos]

        def checks_alone():
            checks = frame_checks.SegmentFrameChecks()
            for f, calib in zip(frames, calibrations):
                frame_checks.check_pose(f.pose, "bench")
                frame_checks.check_extrinsics(calib, "bench")
                checks(f, "bench")

        n_inner = 50
        checks_s = best(lambda: [checks_alone() for _ in range(n_inner)], args.repeats) / n_inner / args.frames

        # loading and the resume check
        (seg,) = list_segments(tmp / "dst", "training")
        load_plain = best(lambda: [Frame.load_npz(seg.frame_path(i)) for i in range(seg.num_frames)], args.repeats)
        load_checked = best(lambda: [seg.load_frame(i) for i in range(seg.num_frames)], args.repeats)
        crc_only = best(lambda: [verify_frame_file(seg.frame_path(i)) for i in range(seg.num_frames)], args.repeats)
        resume = best(lambda: damaged_frame(seg), args.repeats)
        loaded = [Frame.load_npz(seg.frame_path(i)) for i in range(seg.num_frames)]

        def load_checks_alone():  # what load_frame adds to load_npz
            for i, f in enumerate(loaded):
                assert f.timestamp_micros == seg.timestamps_micros[i]
                frame_checks.check_pose(f.pose, "bench")
                frame_checks.check_stored_labels(f, "bench")

        load_checks_s = best(lambda: [load_checks_alone() for _ in range(n_inner)], args.repeats)
        load_checks_s /= n_inner * args.frames

    print(f"segment: {args.frames} frames ({args.lidar} lidar), {labels / args.frames:.0f} labels a frame; "
          f"best of {args.repeats}, one process, OMP_NUM_THREADS=1")
    print(f"conversion: {per_frame * 1e3:.1f} ms a frame; the checks alone {checks_s * 1e6:.0f} us a frame = "
          f"{100 * checks_s / per_frame:.3f} % of it")
    print(f"conversion A/B: with checks {min(with_checks):.3f} s, without {min(without):.3f} s "
          f"(ratio {min(with_checks) / min(without):.3f}; runs with: {', '.join(f'{t:.3f}' for t in with_checks)}; "
          f"without: {', '.join(f'{t:.3f}' for t in without)})")
    print(f"loading: load_frame {1e3 * load_checked / args.frames:.2f} ms a frame vs Frame.load_npz "
          f"{1e3 * load_plain / args.frames:.2f} ms (ratio {load_checked / load_plain:.3f}); the checks alone "
          f"{load_checks_s * 1e6:.0f} us a frame = {100 * load_checks_s * args.frames / load_plain:.3f} % of loading")
    print(f"resume check: damaged_frame {1e3 * resume / args.frames:.2f} ms a frame vs verify_frame_file "
          f"{1e3 * crc_only / args.frames:.2f} ms (ratio {resume / crc_only:.3f})")


if __name__ == "__main__":
    main()
