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
  a child process on one thread; the ratio is printed against ``reader``;
- ``v2``: the same frames written as Waymo v2 parquet components (``data_tools.waymo_v2_writer``, row
  groups of ``--row-group-frames`` frames) and read by ``detector.data.waymo_v2.iter_frames``, timed in
  this process against ``reader`` (runs interleaved, best of ``--repeats`` each); then peak RSS: each reader
  run in a child process over a longer
  segment (the frames repeated ``--long`` times, new timestamps) in both formats, and for contrast a
  child that loads the whole v2 ``lidar`` table at once (what a non-streaming reader would hold).

    .venv/bin/python scripts/bench/convert.py [--frames 6] [--repeats 3] [--records DIR] [--long 10] [--no-official]

Why it stays: the reader's speed against the official conversion and v1 against v2 are the figures of
docs/RESULTS.md, "Conversion"; rerun when the reader, the CRC or the v2 schema changes
(docs/studies/conversion.md, docs/studies/waymo-v2-reader.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import best_of, child_json, one_thread  # noqa: E402

one_thread()  # one core: frames/s here is frames/s per core

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import pyarrow as pa  # noqa: E402
from waymo_open_dataset import dataset_pb2  # noqa: E402

from data_tools.synth_segment import SegmentConfig, synthesize_segment  # noqa: E402
from data_tools.waymo_v2_writer import V2SegmentWriter  # noqa: E402
from detector.data import tfrecord, waymo_v2  # noqa: E402
from detector.data.tfrecord import _crc_register_serial, crc32c, crc32c_numpy, iter_records, write_tfrecord  # noqa: E402
from detector.data.waymo_reader import iter_frames, parse_frame  # noqa: E402

OFFICIAL_PY = ROOT / ".venv-official" / "bin" / "python"

#: the official conversion, run in .venv-official
OFFICIAL_POINTS = ROOT / "tests" / "helpers" / "official_points.py"


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


#: A reader run in a child process that imports only what reading needs, so that its memory is the
#: reader's: prints JSON with the resident set after imports and its peak (Linux /proc/self/status).
CHILD_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
pa.set_cpu_count(1)
pa.set_io_thread_count(1)
from detector.data import waymo_v2
from detector.data.waymo_reader import iter_frames

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
kind, path = sys.argv[1], Path(sys.argv[2])
base = status("VmRSS")
t = time.perf_counter()
frames = points = 0
if kind == "v1":
    for f in iter_frames(path):
        frames, points = frames + 1, points + len(f.points)
elif kind == "v2":
    seg = waymo_v2.V2Segment(path.parent.parent.parent, path.parent.parent.name, path.stem)
    for f in waymo_v2.iter_frames(seg):
        frames, points = frames + 1, points + len(f.points)
else:  # the whole lidar table at once, as a reader that does not stream would hold it
    table = pq.read_table(path, use_threads=False)
    frames = len(set(table.column(waymo_v2.S.KEY_TIMESTAMP).to_pylist()))
print(json.dumps({"seconds": time.perf_counter() - t, "frames": frames, "points": points,
                  "base_rss_mib": base, "peak_rss_mib": status("VmHWM")}))
"""


def _run_child(kind: str, path: Path) -> dict:
    return child_json([sys.executable, "-c", CHILD_SCRIPT, kind, str(path), str(ROOT)])


def _write_both(protos, work: Path, name: str, times: int, row_group_frames: int) -> tuple[Path, Path]:
    """The frames ``times`` over (timestamps continued at 10 Hz) as one v1 record file and one v2 segment."""
    record = work / f"{name}.tfrecord"
    root = work / f"{name}_v2"
    step = 100_000
    copies = []
    for k in range(times):
        for i, p in enumerate(protos):
            q = dataset_pb2.Frame()
            q.CopyFrom(p)
            q.timestamp_micros = protos[0].timestamp_micros + (k * len(protos) + i) * step
            copies.append(q)
    if not record.exists():
        write_tfrecord(record, (q.SerializeToString() for q in copies))
    seg = waymo_v2.V2Segment(root, "training", protos[0].context.name)
    if not seg.path(waymo_v2.S.LIDAR).exists():
        with V2SegmentWriter(root, "training", seg.name, row_group_frames) as w:
            for q in copies:
                w.add(q)
    return record, seg.path(waymo_v2.S.LIDAR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--records", type=Path, default=None, help="keep the synthetic records here")
    ap.add_argument("--row-group-frames", type=int, default=5, help="v2: frames per parquet row group")
    ap.add_argument("--long", type=int, default=10, help="peak RSS: the frames repeated this many times")
    ap.add_argument("--no-official", action="store_true", help="skip the official TensorFlow conversion")
    args = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

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
    print(f"records: {len(frames)} frames, {size_mb / len(frames):.2f} MB/frame, "
          f"{n_points / len(frames):,.0f} points/frame "
          f"(5 lidars, 2 returns); python {platform.python_version()}, {platform.processor() or platform.machine()}")

    t_decode = best_of(lambda: _decode_only(path), args.repeats)
    t_reader = best_of(lambda: sum(len(f.points) for f in iter_frames(path)), args.repeats)
    in_use = tfrecord.crc32c
    tfrecord.crc32c = crc32c_numpy  # masked_crc32c looks the module's crc32c up at call time
    try:
        t_decode_np = best_of(lambda: _decode_only(path), args.repeats)
        t_reader_np = best_of(lambda: sum(len(f.points) for f in iter_frames(path)), args.repeats)
    finally:
        tfrecord.crc32c = in_use
    data = [d for d in iter_records(path)]
    t_crc = best_of(lambda: [crc32c(d) for d in data], args.repeats)
    t_crc_np = best_of(lambda: [crc32c_numpy(d) for d in data], args.repeats)
    if [crc32c(d) for d in data] != [crc32c_numpy(d) for d in data]:
        raise SystemExit("CRC-32C backends disagree")
    sample = data[0][:2_000_000]
    t_serial = best_of(lambda: _crc_register_serial(sample, 0xFFFFFFFF), 1) * sum(map(len, data)) / len(sample)

    n = len(frames)
    rows = [("decode (read+CRC+parse+zlib)", t_decode), ("reader (iter_frames)", t_reader),
            ("decode, numpy CRC", t_decode_np), ("reader, numpy CRC", t_reader_np)]
    print(f"\n{'variant':<34}{'frames/s/core':>14}{'ms/frame':>10}{'vs reader':>10}")
    for name, t in rows:
        print(f"{name:<34}{n / t:>14.2f}{1e3 * t / n:>10.1f}{t_reader / t:>10.2f}")
    mb = sum(map(len, data)) / 1e6
    print(f"\nCRC-32C {tfrecord.CRC32C_BACKEND}: {mb / t_crc:.0f} MB/s; numpy: {mb / t_crc_np:.0f} MB/s; "
          f"byte-serial python: {mb / t_serial:.1f} MB/s")

    if OFFICIAL_PY.exists() and not args.no_official:
        off = child_json([str(OFFICIAL_PY), str(OFFICIAL_POINTS), "time", str(path), str(args.repeats)],
                         env={"CUDA_VISIBLE_DEVICES": ""})
        if off["points"] != n_points:
            print(f"WARNING: official conversion gives {off['points']} points, ours {n_points}")
        print(f"{'official TF frame_utils':<34}{n / off['seconds']:>14.2f}{1e3 * off['seconds'] / n:>10.1f}"
              f"{t_reader / off['seconds']:>10.2f}")
        print(f"reader is {off['seconds'] / t_reader:.2f}x the speed of the official conversion (same records, 1 core)")
    elif not args.no_official:
        print(f"\n(no {OFFICIAL_PY.relative_to(ROOT)}: official TF comparison skipped)")

    # --- Waymo v2: the same frames as parquet components ---
    protos = [parse_frame(d) for d in data]
    _, v2_short = _write_both(protos, work, f"v2_{args.frames}", 1, args.row_group_frames)
    seg = waymo_v2.V2Segment(v2_short.parent.parent.parent, "training", v2_short.stem)
    v2_frames = list(waymo_v2.iter_frames(seg))
    assert len(v2_frames) == n and all(a.equals(b) for a, b in zip(frames, v2_frames)), "v2 frames differ from v1"
    # v1 and v2 interleaved, best of each: both see the same machine load
    t_v1 = t_v2 = float("inf")
    for _ in range(args.repeats):
        t_v1 = min(t_v1, best_of(lambda: sum(len(f.points) for f in iter_frames(path)), 1))
        t_v2 = min(t_v2, best_of(lambda: sum(len(f.points) for f in waymo_v2.iter_frames(seg)), 1))
    v2_mb = sum(p.stat().st_size for p in seg.root.rglob("*.parquet")) / 1e6
    print(f"\nv2 components: {v2_mb / n:.2f} MB/frame on disk (snappy, {args.row_group_frames} frames a row group); "
          f"frames identical to v1")
    print(f"{'variant':<34}{'frames/s/core':>14}{'ms/frame':>10}{'vs reader':>10}")
    for name, t in (("reader v1 (iter_frames)", t_v1), ("reader v2 (waymo_v2.iter_frames)", t_v2)):
        print(f"{name:<34}{n / t:>14.2f}{1e3 * t / n:>10.1f}{t_v1 / t:>10.2f}")

    record, lidar = _write_both(protos, work, f"long_{args.frames}x{args.long}", args.long, args.row_group_frames)
    print(f"\npeak RSS, one child process each (base: resident after imports); {n} and {n * args.long} frames:")
    print(f"{'variant':<34}{'frames':>8}{'base MiB':>10}{'peak MiB':>10}{'peak-base':>10}{'frames/s':>10}")
    for kind, short_path, long_path in (("v1", path, record), ("v2", v2_short, lidar), ("v2-table", v2_short, lidar)):
        for p in (short_path, long_path):
            r = _run_child(kind, p)
            label = {"v1": "reader v1", "v2": "reader v2 (streamed)", "v2-table": "whole v2 lidar table (read)"}
            print(f"{label[kind]:<34}{r['frames']:>8}{r['base_rss_mib']:>10.0f}{r['peak_rss_mib']:>10.0f}"
                  f"{r['peak_rss_mib'] - r['base_rss_mib']:>10.0f}{r['frames'] / r['seconds']:>10.2f}")


if __name__ == "__main__":
    main()
