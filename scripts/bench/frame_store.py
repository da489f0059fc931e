"""Frame-store format 1 (float32 points) against format 2 (``detector.data.frame_codec``): bytes a frame
and load time, in one process, on the frames of a converted store.

    python scripts/bench/frame_store.py STORE [--repeats 15] [--cold]

Each frame is written in both formats into a temporary folder beside nothing else; loads alternate
between the two (``Frame.load_npz``: zip CRCs checked, arrays decoded) and the median of ``--repeats``
is reported per format with their ratio, as wall time and as this process's CPU time (on a machine
shared with other jobs the CPU time is the steadier figure). ``--cold`` drops each file from the page
cache before each load (``posix_fadvise(DONTNEED)``), as a first read from a disk would be. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from detector.data.frame import Frame


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--max-frames", type=int, default=6)
    args = ap.parse_args()
    frames = sorted(Path(args.store).rglob("[0-9][0-9][0-9][0-9].npz"))[: args.max_frames]
    if not frames:
        raise SystemExit(f"frame_store.py: no frame files under {args.store}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.store) as tmp:
        for src in frames:
            f = Frame.load_npz(src)
            v1, v2 = Path(tmp) / "v1.npz", Path(tmp) / "v2.npz"
            f.save_npz(v1, compact=False)
            f.save_npz(v2, compact=True)
            back = Frame.load_npz(v2)
            times = {"v1": [], "v2": []}
            cpu = {"v1": [], "v2": []}
            for _ in range(args.repeats):
                for name, path in (("v1", v1), ("v2", v2)):
                    if args.cold:
                        _drop_cache(path)
                    t0, c0 = time.perf_counter(), time.process_time()
                    Frame.load_npz(path)
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
            ie_step = np.spacing(np.abs(f.points[:, 3:5]).astype(np.float16)).astype(np.float32)
            rows.append({
                "frame": str(src), "points": len(f.points),
                "bytes_v1": v1.stat().st_size, "bytes_v2": v2.stat().st_size,
                "load_ms_v1": 1e3 * float(np.median(times["v1"])), "load_ms_v2": 1e3 * float(np.median(times["v2"])),
                "load_cpu_ms_v1": 1e3 * float(np.median(cpu["v1"])),
                "load_cpu_ms_v2": 1e3 * float(np.median(cpu["v2"])),
                "xyz_max_error_mm": 1e3 * float(np.abs(back.points[:, :3] - f.points[:, :3]).max()),
                "ie_max_error_in_half_f16_steps": float(
                    (np.abs(back.points[:, 3:5] - f.points[:, 3:5]) / (ie_step / 2)).max()),
            })
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "frame"}
    summary["load_ratio_v2_over_v1"] = summary["load_ms_v2"] / summary["load_ms_v1"]
    summary["load_cpu_ratio_v2_over_v1"] = summary["load_cpu_ms_v2"] / summary["load_cpu_ms_v1"]
    summary["frames"] = len(rows)
    summary["cold"] = bool(args.cold)
    print(json.dumps({"summary": summary, "frames": rows}, indent=1))


if __name__ == "__main__":
    main()
