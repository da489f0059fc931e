"""How far a tiny change in the ray caster moves the synthetic data: every hit distance scaled by
``1 + eps`` (the size of a float32 rounding, as another CPU's or build's ray caster may give).

    .venv/bin/python scripts/bench/synth_stability.py --seed 1 --frames 10 --eps 3e-7

Synthesizes one segment with the benchmark's generator settings (``paper_table.BENCH_DATA``) twice, exact
and nudged, and prints per frame the difference in the number of points and the number of labelled
objects whose ``num_lidar_points_in_box`` differs. A generator whose random draws hang on how many rays
hit turns the first changed pixel into a different rest of the segment; one that draws per pixel and per
frame changes a few points.

Why it stays: the check behind the synthesizer's claim that a seed gives the same segments on every machine
(docs/studies/synthesizer-determinism.md); tests/tools/test_synthesize.py runs it. Rerun when the synthesizer
changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def truths(seed: int, frames: int, eps: float) -> list[tuple[int, object]]:
    from data_tools import synth_lidar
    from data_tools.synth_lidar import NoiseConfig
    from data_tools.synth_segment import SegmentConfig, synthesize_segment
    from scripts.bench.paper_table import BENCH_DATA

    cast = synth_lidar.CastScene.cast

    def nudged(self, origins, dirs):
        t, prim, normals = cast(self, origins, dirs)
        return t * (1.0 + eps), prim, normals

    cfg = SegmentConfig(frames=frames, vehicle_density=BENCH_DATA["vehicle_density"],
                        object_range=BENCH_DATA["object_range"], label_range=BENCH_DATA["label_range"],
                        noise=NoiseConfig(beam_dropout=BENCH_DATA["noise.beam_dropout"],
                                          sector_dropout=BENCH_DATA["noise.sector_dropout"]))
    synth_lidar.CastScene.cast = nudged
    try:
        return [(len(t.points), t.num_points) for _, t in synthesize_segment(cfg, seed)]
    finally:
        synth_lidar.CastScene.cast = cast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--eps", type=float, default=3e-7, help="relative change of every hit distance")
    args = parser.parse_args(argv)
    exact, moved = truths(args.seed, args.frames, 0.0), truths(args.seed, args.frames, args.eps)
    print(f"seed {args.seed}, eps {args.eps:g}: per frame, points of difference / objects whose point count differs")
    for i, ((n_a, c_a), (n_b, c_b)) in enumerate(zip(exact, moved)):
        objects = int((c_a != c_b).sum()) if c_a.shape == c_b.shape else "labels differ"
        print(f"frame {i:3d}: {abs(n_a - n_b):6d} of {n_a} points, {objects} of {len(c_a)} objects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
