"""Speed of the TensorFlow-free reader on Waymo-size frames, per core.

Synthesizes ``--frames`` frames with the ``waymo`` rig (TOP 64x2650 plus four short-range 200x600
lidars, both returns), then, in this one process and on one thread, times:

- ``decode``: CRC-checked record reading, proto parsing and zlib decompression of every range image
  (the floor any converter pays);
- ``reader``: ``iter_frames`` - all of the above plus points of all lidars and both returns in the
  vehicle frame with rolling-shutter compensation, labels and NLZ flags;
- ``crc``: the CRC-32C in use (google-crc32c where installed) and the numpy fallback against the
  byte-serial definition, on the same records; ``decode``/``reader`` are also timed with the numpy
  CRC swapped in (the fallback where google-crc32c does not install);
- ``official`` (only when ``.venv-official`` exists): the official TensorFlow ``frame_utils``
  conversion of the same records (range images -> cartesian points of both returns, masked), run in
  a child process on one thread; the ratio is printed against ``reader``.

    .venv/bin/python scripts/bench/convert.py [--frames 6] [--repeats 3] [--records DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: frames/s here is frames/s per core

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from data_tools.synth_segment import SegmentConfig, synthesize_segment  # noqa: E402
from detector.data import tfrecord  # noqa: E402
from detector.data.tfrecord import (_crc_register_serial, crc32c, crc32c_numpy, iter_records,  # noqa: E402
                                    write_tfrecord)
from detector.data.waymo_reader import iter_frames, parse_frame  # noqa: E402
from waymo_open_dataset import dataset_pb2  # noqa: E402

OFFICIAL_PY = ROOT / ".venv-official" / "bin" / "python"

OFFICIAL_SCRIPT = r"""
import json, sys, time, zlib
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from waymo_open_dataset import dataset_pb2
from waymo_open_dataset.utils import frame_utils

def convert(data):
    frame = dataset_pb2.Frame()
    frame.ParseFromString(data)
    images, pose = {}, dataset_pb2.MatrixFloat()
    for laser in frame.lasers:
        images[laser.name] = []
        for ri in (laser.ri_return1, laser.ri_return2):
            m = dataset_pb2.MatrixFloat()
            m.ParseFromString(zlib.decompress(ri.range_image_compressed))
            images[laser.name].append(m)
        if laser.name == dataset_pb2.LaserName.TOP:
            pose.ParseFromString(zlib.decompress(laser.ri_return1.range_image_pose_compressed))
    n = 0
    for k in (0, 1):
        cart = frame_utils.convert_range_image_to_cartesian(frame, images, pose, ri_index=k,
                                                             keep_polar_features=True)
        for c in frame.context.laser_calibrations:
            ri = np.array(images[c.name][k].data, np.float32).reshape(images[c.name][k].shape.dims)
            n += len(cart[c.name].numpy()[ri[..., 0] > 0])
    return n

records = [tf.compat.as_bytes(r.numpy()) for r in tf.data.TFRecordDataset(sys.argv[1])]
convert(records[0])  # warm-up (graph tracing)
best = None
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    points = sum(convert(r) for r in records)
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "frames": len(records), "points": points}))
"""


def _best(fn, repeats: int) -> float:
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best


def _decode_only(path: Path) -> int:
    n = 0
    for data in iter_records(path):
        frame = parse_frame(data)
        for laser in frame.lasers:
            for ri in (laser.ri_return1, laser.ri_return2):
                m = dataset_pb2.MatrixFloat()
                m.ParseFromString(zlib.decompress(ri.range_image_compressed))
                n += len(m.data)
            if ri.range_image_pose_compressed:
                zlib.decompress(laser.ri_return1.range_image_pose_compressed)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--records", type=Path, default=None, help="keep the synthetic records here")
    args = ap.parse_args()

    work = args.records or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    path = work / f"waymo_size_{args.frames}.tfrecord"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        cfg = SegmentConfig(frames=args.frames, lidar="waymo", zlib_level=6)
        write_tfrecord(path, (r for r, _ in synthesize_segment(cfg, 0)))
        print(f"synthesized {args.frames} Waymo-size frames in {time.perf_counter() - t:.1f} s -> {path}")
    size_mb = path.stat().st_size / 1e6
    frames = list(iter_frames(path))
    n_points = sum(len(f.points) for f in frames)
    print(f"records: {len(frames)} frames, {size_mb / len(frames):.2f} MB/frame, {n_points / len(frames):,.0f} points/frame "
          f"(5 lidars, 2 returns); python {platform.python_version()}, {platform.processor() or platform.machine()}")

    t_decode = _best(lambda: _decode_only(path), args.repeats)
    t_reader = _best(lambda: sum(len(f.points) for f in iter_frames(path)), args.repeats)
    in_use = tfrecord.crc32c
    tfrecord.crc32c = crc32c_numpy  # masked_crc32c looks the module's crc32c up at call time
    try:
        t_decode_np = _best(lambda: _decode_only(path), args.repeats)
        t_reader_np = _best(lambda: sum(len(f.points) for f in iter_frames(path)), args.repeats)
    finally:
        tfrecord.crc32c = in_use
    data = [d for d in iter_records(path)]
    t_crc = _best(lambda: [crc32c(d) for d in data], args.repeats)
    t_crc_np = _best(lambda: [crc32c_numpy(d) for d in data], args.repeats)
    if [crc32c(d) for d in data] != [crc32c_numpy(d) for d in data]:
        raise SystemExit("CRC-32C backends disagree")
    sample = data[0][:2_000_000]
    t_serial = _best(lambda: _crc_register_serial(sample, 0xFFFFFFFF), 1) * sum(map(len, data)) / len(sample)

    n = len(frames)
    rows = [("decode (read+CRC+parse+zlib)", t_decode), ("reader (iter_frames)", t_reader),
            ("decode, numpy CRC", t_decode_np), ("reader, numpy CRC", t_reader_np)]
    print(f"\n{'variant':<34}{'frames/s/core':>14}{'ms/frame':>10}{'vs reader':>10}")
    for name, t in rows:
        print(f"{name:<34}{n / t:>14.2f}{1e3 * t / n:>10.1f}{t_reader / t:>10.2f}")
    mb = sum(map(len, data)) / 1e6
    print(f"\nCRC-32C {tfrecord.CRC32C_BACKEND}: {mb / t_crc:.0f} MB/s; numpy: {mb / t_crc_np:.0f} MB/s; "
          f"byte-serial python: {mb / t_serial:.1f} MB/s")

    if OFFICIAL_PY.exists():
        script = work / "official_convert.py"
        script.write_text(OFFICIAL_SCRIPT)
        out = subprocess.run([str(OFFICIAL_PY), str(script), str(path), str(args.repeats)], check=True,
                             capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        off = json.loads(out.stdout.strip().splitlines()[-1])
        if off["points"] != n_points:
            print(f"WARNING: official conversion gives {off['points']} points, ours {n_points}")
        print(f"{'official TF frame_utils':<34}{n / off['seconds']:>14.2f}{1e3 * off['seconds'] / n:>10.1f}"
              f"{t_reader / off['seconds']:>10.2f}")
        print(f"reader is {off['seconds'] / t_reader:.2f}x the speed of the official conversion (same records, 1 core)")
    else:
        print(f"\n(no {OFFICIAL_PY.relative_to(ROOT)}: official TF comparison skipped)")


if __name__ == "__main__":
    main()
