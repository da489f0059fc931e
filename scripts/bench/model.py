"""Per-frame cost of the temporal modes: single frame (``none``), concatenation of K = 3 previous
sweeps (``concat``) and the sparse-conv LSTM (``lstm``), as ratios to ``none`` in one run.

For every scale and model a child process streams the same seeded synthetic frames (one stream,
``Detector.step``, the state carried) and reports:

- per-frame inference time: median over ``--frames`` frames after ``--warmup`` frames (so ``concat``
  holds its 3 sweeps and ``lstm`` its state);
- peak memory: CPU, in a second child (not timed), its peak RSS while streaming (warm-up included)
  over its RSS just before (Linux: the peak is reset through ``/proc/self/clear_refs``; glibc is
  told to mmap every block of 64 KiB or more so that freed tensors leave the RSS); model and data
  are in the baseline, the frames being generated once by the parent. CUDA: the peak of ``torch.cuda.max_memory_allocated`` over the
  allocation before streaming;
- with ``--train``, the time of one training step (forward + backward + Adam) on a clip of 4 frames
  x batch 2 at the same scale (best of the 2nd and 3rd steps).

Scales (points per frame, detection range): ``synthetic`` 60k points within 40 m (what the
project's demo lidar gives in range), ``waymo`` 180k points within 75 m (a Waymo frame).
Configs: ``small`` (the shipped CPU configs: single_frame, concat, lstm) or ``paper``
(waymo_single_frame, waymo_concat, waymo_lstm); default small on CPU, paper on CUDA.

    .venv/bin/python scripts/bench/model.py [--device cpu|cuda] [--scales synthetic,waymo]
        [--configs small|paper] [--frames 8] [--warmup 3] [--threads 1] [--train] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("none", "concat", "lstm")
CONFIGS = {
    "small": {"none": "single_frame", "concat": "concat", "lstm": "lstm"},
    "paper": {"none": "waymo_single_frame", "concat": "waymo_concat", "lstm": "waymo_lstm"},
}
SCALES = {
    "synthetic": dict(num_points=60000, radius=38.0, scene_radius=35.0, vehicles=12, pedestrians=6, cyclists=3, clutter=8),
    "waymo": dict(num_points=180000, radius=74.0, scene_radius=70.0, vehicles=40, pedestrians=20, cyclists=6, clutter=25),
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(spec: dict) -> dict:
    """Runs in a fresh process: build, generate, stream, measure."""
    threads = str(spec["threads"])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads
    import statistics
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    from detector.models import build_model

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    scale = SCALES[spec["scale"]]
    # the model's detection range must hold the scale's points
    extra = []
    if spec["configs"] == "small" and spec["scale"] == "waymo":
        extra = ["model.voxelizer.point_range=[-75.2,-75.2,-3.0,75.2,75.2,4.0]"]
    model = build_model(spec["config"], extra).to(device).eval()
    data = torch.load(spec["data"], weights_only=False)
    frames = [f.to(device) for f in data["stream"]]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _status_kb("VmRSS") * 1024
    state = model.init_state(1, device)
    for f in frames[: spec["warmup"]]:
        _, state = model.step(f, state)
    times, voxels = [], []
    for f in frames[spec["warmup"] :]:
        sync()
        t0 = time.perf_counter()
        _, state = model.step(f, state)
        sync()
        times.append(time.perf_counter() - t0)
        voxels.append(int(model.voxelizer(model.temporal.points(f, state), 1).indices.shape[0]))
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kb("VmHWM") * 1024 - base
    out = {
        "points_per_frame": int(frames[-1].points.shape[0]),
        "ms_per_frame": 1000 * statistics.median(times),
        "peak_mb": peak / 2**20,
        "voxels_per_frame": statistics.mean(voxels),
        "state_kb": state.nbytes() / 1024,
    }
    if spec["train"]:
        model.train()
        clip = data["clip"].to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        steps = []
        for i in range(3):
            sync()
            t0 = time.perf_counter()
            loss = model(clip).losses["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync()
            steps.append(time.perf_counter() - t0)
        out["train_step_s"] = min(steps[1:])
    return out


def _run_child(spec: dict) -> dict:
    env = dict(os.environ)
    if spec["measure"] == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{spec['scale']}/{spec['config']} ({spec['measure']}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _make_data(scale: str, frames: int, train: bool, path: Path) -> None:
    """The seeded frames every model of a scale sees: one stream, and a 4 x 2 training clip."""
    sys.path.insert(0, str(ROOT))
    import torch

    from detector.data.batch import ClipBatch
    from detector.models.testing import make_scene, make_stream_frames

    cfg = SCALES[scale]
    scene = make_scene(
        7, num_vehicles=cfg["vehicles"], num_pedestrians=cfg["pedestrians"], num_cyclists=cfg["cyclists"],
        num_clutter=cfg["clutter"], radius=cfg["scene_radius"], ego_speed=10.0, ego_yaw_rate=0.1,
    )
    data = {"stream": make_stream_frames([scene], frames, cfg["num_points"], seed=3, radius=cfg["radius"])}
    if train:
        scenes = [
            make_scene(
                s, num_vehicles=cfg["vehicles"], num_pedestrians=cfg["pedestrians"], num_cyclists=cfg["cyclists"],
                num_clutter=cfg["clutter"], radius=cfg["scene_radius"],
            )
            for s in (1, 2)
        ]
        data["clip"] = ClipBatch(make_stream_frames(scenes, 4, cfg["num_points"], seed=4, radius=cfg["radius"]))
    torch.save(data, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--scales", default="synthetic,waymo")
    ap.add_argument("--configs", default=None, choices=list(CONFIGS), help="default: small on cpu, paper on cuda")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train", action="store_true", help="also time a training step (clip 4 x batch 2)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    configs = args.configs or ("paper" if args.device == "cuda" else "small")
    models = [m for m in args.models.split(",") if m]
    if "none" not in models:
        models.insert(0, "none")
    results: dict[str, dict[str, dict]] = {}
    tmpdir = tempfile.TemporaryDirectory(prefix="bench_model_")
    for scale in args.scales.split(","):
        if scale not in SCALES:
            raise SystemExit(f"unknown scale {scale!r}; expected one of {list(SCALES)}")
        results[scale] = {}
        train = args.train
        data = Path(tmpdir.name) / f"{scale}.pt"
        _make_data(scale, args.warmup + args.frames, train, data)
        for name in models:
            spec = dict(
                scale=scale, config=CONFIGS[configs][name], configs=configs, device=args.device, data=str(data),
                frames=args.frames, warmup=args.warmup, threads=args.threads, train=train,
            )
            timed = _run_child(dict(spec, measure="time"))
            if args.device == "cpu":
                # memory in a second child whose allocator returns freed blocks (slower, so not timed)
                timed["peak_mb"] = _run_child(dict(spec, measure="memory", train=False))["peak_mb"]
            results[scale][name] = timed
            print(f"  {scale:9s} {name:6s} {results[scale][name]}", file=sys.stderr, flush=True)
    tmpdir.cleanup()

    print(f"device={args.device} configs={configs} threads={args.threads} frames={args.frames} (after {args.warmup} warm-up)")
    header = "| scale | model | points/frame | voxels/frame | ms/frame | x none | peak MB | x none | state KB |"
    if args.train:
        header += " train step s (4x2) | x none |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for scale, rows in results.items():
        ref = rows["none"]
        for name, r in rows.items():
            line = (
                f"| {scale} | {name} | {r['points_per_frame']} | {r['voxels_per_frame']:.0f} | {r['ms_per_frame']:.1f} | "
                f"{r['ms_per_frame'] / ref['ms_per_frame']:.2f} | {r['peak_mb']:.1f} | "
                f"{r['peak_mb'] / max(ref['peak_mb'], 1e-9):.2f} | {r['state_kb']:.0f} |"
            )
            if args.train:
                line += f" {r['train_step_s']:.2f} | {r['train_step_s'] / ref['train_step_s']:.2f} |"
            print(line)
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
