"""Render speed of the two headless renderers on one segment, in one process.

    python -m scripts.bench.viewer SEGMENT_DIR_OR_TFRECORD [--frames 5] [--width 1280 --height 960]

Prints seconds per frame of the Open3D offscreen renderer (bird's eye and chase) and of the matplotlib
bird's-eye plot, and their ratios to the Open3D bird's-eye time (the baseline, measured in the same
process). Each renderer renders the frames ``--repeats`` times, interleaved with the others; the best
repeat counts (the machine's cores are shared). Renderer creation is timed apart from the frames.

Why it stays: the headless render figures of docs/RESULTS.md, "Viewer" (measured 2026-11-27, due a rerun); the
only timing of ``headless=true`` renders (docs/studies/viewer-timing.md).
"""

from __future__ import annotations

import argparse
import time

from detector.viz.bev import BevFraming, render_bev
from detector.viz.camera import birds_eye_camera, chase_camera
from detector.viz.headless import OffscreenView
from detector.viz.scene import SceneOptions
from detector.viz.sources import iter_scene_frames, open_source


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=960)
    p.add_argument("--range-m", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    scenes = list(iter_scene_frames(open_source(args.input), 0, args.frames))
    opts = SceneOptions()
    points = sum(len(s.frame.points) for s in scenes) / len(scenes)
    print(f"{len(scenes)} frames, {points:.0f} points a frame, {args.width}x{args.height}")
    cameras = {"open3d bev": birds_eye_camera(args.width, args.height, args.range_m),
               "open3d chase": chase_camera(args.width, args.height)}
    framing = BevFraming(args.width, args.height, args.range_m)
    results: dict[str, float] = {}
    created: list[float] = []

    def keep_best(name: str, seconds: float, table: dict[str, float]) -> None:
        table[name] = min(seconds, table.get(name, float("inf")))

    for _ in range(args.repeats):
        for name, camera in cameras.items():
            t0 = time.perf_counter()
            with OffscreenView(camera, opts) as view:
                created.append(time.perf_counter() - t0)
                view.render_scene(scenes[0])  # warm-up (shader compilation)
                t1 = time.perf_counter()
                for s in scenes:
                    view.render_scene(s)
                keep_best(name, (time.perf_counter() - t1) / len(scenes), results)
        t1 = time.perf_counter()
        for s in scenes:
            render_bev(s, opts, framing)
        keep_best("matplotlib bev", (time.perf_counter() - t1) / len(scenes), results)
    print(f"first offscreen renderer (starts the engine) {created[0]:.2f} s, later ones "
          f"{min(created[1:] or created):.2f} s")
    base = results["open3d bev"]
    for name, sec in results.items():
        print(f"{name:15s} {sec:6.3f} s/frame   ratio to open3d bev {sec / base:5.2f}")


if __name__ == "__main__":
    main()
