"""The interactive viewer on a whole segment: time to a drawn window, peak memory, playback rate.

    python -m scripts.bench.viewer_window SEGMENT_DIR_OR_TFRECORD [--repeats 1] [--width 1280 --height 960]

Runs the real command, ``python -m detector.visualize input=SEGMENT play=true quit_at_end=true``, in a
window on its own virtual display (Xvfb), and measures from outside:

- **first drawn**: from starting the command to the first screenshot (xwd, every 0.2 s) whose 3D view
  shows the first frame's points (more than 2 % of it not black);
- **peak memory**: the command's peak resident set size (``getrusage`` of the waited-for child), and
  its resident memory at frames 10, 100 and the last (the window's trace);
- **playback**: frames shown per second over the whole segment (the trace's drawn frames, first to
  last), the window asking for 10 frames/s.

Baselines, in the same command: the import floor (``python -c "import detector.visualize, open3d"``,
no window) and reading every frame of the segment with the viewer's own reader and point colouring,
no window (frames/s): the playback rate can at best approach it.

Why it stays: the viewer's targets (first frame ≤ 8 s, peak ≤ 1.5 GB, ≥ 5 frames/s) in docs/RESULTS.md,
"Viewer"; rerun on a quiet machine when the viewer changes (docs/studies/viewer-timing.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from detector.viz.interactive import point_arrays  # noqa: E402
from detector.viz.loader import SceneLoader  # noqa: E402
from detector.viz.scene import SceneOptions  # noqa: E402
from detector.viz.sources import open_source  # noqa: E402
from detector.viz.xdisplay import ViewerSession, VirtualDisplay  # noqa: E402
from scripts.bench._harness import load_average, peak_rss_mib, timed_command  # noqa: E402


def import_floor() -> float:
    return timed_command([sys.executable, "-c", "import detector.visualize, open3d"])[0]


def read_rate(path: str) -> tuple[float, int]:
    """Frames/s reading the whole segment through the viewer's loader (read-ahead thread, colours)."""
    source = open_source(path)
    opts = SceneOptions()
    with SceneLoader(source, readahead=3, prepare=lambda s: point_arrays(s, opts)) as loader:
        t0 = time.perf_counter()
        for pos in range(len(loader)):
            loader.wait(pos, timeout=120)
        return len(loader) / (time.perf_counter() - t0), len(loader)


def run_window(path: str, width: int, height: int, workdir: Path, play: bool) -> dict:
    """One run of the command: with ``play``, it plays the segment once and exits; without, it is the
    plain command, closed with the Q key once its first frame is on screen."""
    with VirtualDisplay(width + 100, height + 100) as display:
        trace = workdir / "trace.jsonl"
        t0 = time.time()
        extra = ["play=true", "quit_at_end=true"] if play else []
        session = ViewerSession(display, [f"input={path}", *extra, f"width={width}", f"height={height}"], trace,
                                cwd=REPO, log=workdir / "viewer.log")
        first_drawn = None
        while first_drawn is None and session.proc.poll() is None:
            image = display.screenshot()
            recs = session.records()
            if recs:
                r = recs[0]
                x, y, w, h = r["scene_rect"]
                wx, wy = r["window_rect"][:2]
                view = image[wy + y + 80:wy + y + h, wx + x:wx + x + w]  # below the caption
                if (view.max(axis=-1) > 40).mean() > 0.02:
                    first_drawn = time.time() - t0
                    if not play:
                        session.keys(r, "q")
                    break
            time.sleep(0.2)
        session.proc.wait(timeout=1800)
        peak_mb = peak_rss_mib(children=True)  # the viewer is the big child
        rc = session.close()
        recs = session.records()
    if rc != 0:
        raise RuntimeError(f"the viewer exited with status {rc}; see {workdir / 'viewer.log'}")
    times = np.array([r["time"] for r in recs])
    result = {"first_drawn_s": first_drawn, "first_trace_s": float(times[0] - t0), "peak_rss_mb": peak_mb}
    if play:
        positions = [r["position"] for r in recs]
        rss = {r["position"]: r["rss_mb"] for r in recs}
        last = max(positions)
        result.update(frames=last + 1, drawn_records=len(recs), playback_fps=last / float(times[-1] - times[0]),
                      rss_mb_at={k: rss.get(k) for k in (10, 100, last)})
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=960)
    args = p.parse_args(argv)

    floor = import_floor()
    rate, n = read_rate(args.input)
    print(f"baselines: import floor {floor:.2f} s; reading {n} frames without a window {rate:.1f} frames/s",
          flush=True)
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            r = run_window(args.input, args.width, args.height, Path(tmp), play=False)
        print(json.dumps(r), flush=True)
        print(f"run {k}, the plain command: first frame on screen after {r['first_drawn_s']:.2f} s "
              f"({r['first_drawn_s'] / floor:.2f} x the import floor; the window asked for it at "
              f"{r['first_trace_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB, load average {load_average()}",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            r = run_window(args.input, args.width, args.height, Path(tmp), play=True)
        print(json.dumps(r), flush=True)
        print(f"run {k}, play=true quit_at_end=true: first frame on screen after {r['first_drawn_s']:.2f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, playback {r['playback_fps']:.2f} frames/s over "
              f"{r['frames']} frames ({r['playback_fps'] / rate:.2f} x reading alone), RSS at frames "
              + ", ".join(f"{f}: {m:.0f} MB" for f, m in r["rss_mb_at"].items() if m is not None)
              + f", load average {load_average()}", flush=True)


if __name__ == "__main__":
    main()
