"""Per-frame cost of the temporal modes: single frame (``none``), concatenation of K = 3 previous
sweeps (``concat``) and the sparse-conv LSTM (``lstm``), as ratios to ``none`` in one run.

For every scale, the models stream the same frames (one stream, ``Detector.step``, the state
carried) and the script reports:

- per-frame inference time: median over ``--frames`` frames after ``--warmup`` frames (so ``concat``
  holds its 3 sweeps and ``lstm`` its state); all models run in one child process, interleaved frame
  by frame, so that a load change on a shared machine affects them alike;
- peak memory, one child per model (not timed): CPU, the child's peak RSS while streaming (warm-up
  included) over its RSS just before (Linux: the peak is reset through ``/proc/self/clear_refs``;
  glibc is told to mmap every block of 64 KiB or more so that freed tensors leave the RSS); model
  and data are in the baseline, the frames being generated once by the parent. CUDA: the peak of
  ``torch.cuda.max_memory_allocated`` over the allocation before streaming;
- with ``--train``, the time of one training step (forward + backward + Adam) on a clip of 4 frames
  x batch 2 at the same scale (best of the 2nd and 3rd steps, models interleaved step by step).

Scales (points per frame, detection range): ``synthetic`` 60k points within 40 m (what the
project's demo lidar gives in range), ``waymo`` 180k points within 75 m (a Waymo frame), both from
``tests.helpers.scenes`` (boxes and ground only, so more spread out than a real sweep); and
``records``: the frames of a Waymo-format ``--records`` file (e.g. one made by
``python -m data_tools.synthesize``), cropped to [-40, 40] m x [-40, 40] m x [-3, 4] m as the synthetic
data config does, the training clip being its first 4 frames twice (batch 2).
Configs: ``small`` (the shipped CPU configs: single_frame, concat, lstm) or ``paper``
(waymo_single_frame, waymo_concat, waymo_lstm); default small on CPU, paper on CUDA.

    .venv/bin/python scripts/bench/model.py [--device cpu|cuda] [--scales synthetic,waymo]
        [--configs small|paper] [--frames 8] [--warmup 3] [--threads 1] [--train] [--json OUT]
        [--records SEGMENT.tfrecord  (with --scales records)]

Why it stays: the per-frame cost of the three temporal modes on CPU and GPU in docs/RESULTS.md, "Model cost";
the one benchmark that runs the paper-scale configs on a GPU (docs/studies/model-cost.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import THREAD_VARIABLES, child_json, markdown_table, write_report  # noqa: E402

MODELS = ("none", "concat", "lstm")
CONFIGS = {
    "small": {"none": "single_frame", "concat": "concat", "lstm": "lstm"},
    "paper": {"none": "waymo_single_frame", "concat": "waymo_concat", "lstm": "waymo_lstm"},
}
RECORDS_RANGE = (-40.0, -40.0, -3.0, 40.0, 40.0, 4.0)
SCALES = {
    "synthetic": dict(num_points=60000, radius=38.0, scene_radius=35.0,
                      vehicles=12, pedestrians=6, cyclists=3, clutter=8),
    "waymo": dict(num_points=180000, radius=74.0, scene_radius=70.0,
                  vehicles=40, pedestrians=20, cyclists=6, clutter=25),
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(spec: dict) -> dict:
    """Runs in a fresh process. ``measure == "time"``: every model of ``spec["configs_list"]``
    interleaved frame by frame (and step by step when training), so that a load change on a shared
    machine hits them alike. ``measure == "memory"``: one model, its streaming peak."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(spec["threads"])
    import statistics
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    from detector.models import build_model

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    # the model's detection range must hold the scale's points
    extra = []
    if spec["configs"] == "small" and spec["scale"] == "waymo":
        extra = ["data.point_range=[-75.2,-75.2,-3.0,75.2,75.2,4.0]"]
    names = spec["models"]
    models = {n: build_model(CONFIGS[spec["configs"]][n], extra).to(device).eval() for n in names}
    data = torch.load(spec["data"], weights_only=False)
    frames = [f.to(device) for f in data["stream"]]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    sync()
    if spec["measure"] == "memory":
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
            base = _status_kb("VmRSS") * 1024
    states = {n: m.init_state(1, device) for n, m in models.items()}
    times = {n: [] for n in names}
    voxels = {n: [] for n in names}
    for i, f in enumerate(frames):
        for n, m in models.items():
            if i >= spec["warmup"]:
                voxels[n].append(int(m.voxelizer(m.temporal.points(f, states[n]), 1).indices.shape[0]))
            sync()
            t0 = time.perf_counter()
            _, states[n] = m.step(f, states[n])
            sync()
            if i >= spec["warmup"]:
                times[n].append(time.perf_counter() - t0)
    out = {
        n: {
            "points_per_frame": int(frames[-1].points.shape[0]),
            "ms_per_frame": 1000 * statistics.median(times[n]),
            "voxels_per_frame": statistics.mean(voxels[n]),
            "state_kb": states[n].nbytes() / 1024,
        }
        for n in names
    }
    if spec["measure"] == "memory":
        peak = torch.cuda.max_memory_allocated() - base if cuda else _status_kb("VmHWM") * 1024 - base
        out[names[0]]["peak_mb"] = peak / 2**20
    if spec["train"]:
        clip = data["clip"].to(device)
        opts = {n: torch.optim.Adam(m.parameters(), lr=1e-4) for n, m in models.items()}
        steps = {n: [] for n in names}
        for _ in range(3):
            for n, m in models.items():
                m.train()
                sync()
                t0 = time.perf_counter()
                loss = m(clip).losses["loss"]
                opts[n].zero_grad()
                loss.backward()
                opts[n].step()
                sync()
                steps[n].append(time.perf_counter() - t0)
        for n in names:
            out[n]["train_step_s"] = min(steps[n][1:])
    return out


def _run_child(spec: dict) -> dict:
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"} if spec["measure"] == "memory" else {}
    return child_json([sys.executable, __file__, "--child", json.dumps(spec)], env=env)


def _records_data(records: str, frames: int, train: bool) -> dict:
    from detector.data.batch import ClipBatch
    from detector.data.clips import prepare_frame
    from detector.data.collate import collate_frames
    from detector.data.waymo_reader import iter_frames

    raw = [prepare_frame(f, RECORDS_RANGE, (1, 2, 4), False) for f in iter_frames(records)]
    if len(raw) < max(frames, 4):
        raise SystemExit(f"{records}: {len(raw)} frames, the benchmark needs {max(frames, 4)}")
    data = {"stream": [collate_frames([f], [i == 0]) for i, f in enumerate(raw[:frames])]}
    if train:
        data["clip"] = ClipBatch([collate_frames([f, f], [i == 0] * 2) for i, f in enumerate(raw[:4])])
    return data


def _make_data(scale: str, frames: int, train: bool, path: Path, records: str | None) -> None:
    """The seeded frames every model of a scale sees: one stream, and a 4 x 2 training clip."""
    sys.path.insert(0, str(ROOT))
    import torch

    from detector.data.batch import ClipBatch
    from tests.helpers.scenes import make_scene, make_stream_frames

    if scale == "records":
        if not records:
            raise SystemExit("--scales records needs --records FILE.tfrecord")
        torch.save(_records_data(records, frames, train), path)
        return

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
    ap.add_argument("--records", default=None, help="a Waymo-format .tfrecord for --scales records")
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
        if scale not in SCALES and scale != "records":
            raise SystemExit(f"unknown scale {scale!r}; expected one of {[*SCALES, 'records']}")
        results[scale] = {}
        train = args.train
        data = Path(tmpdir.name) / f"{scale}.pt"
        _make_data(scale, args.warmup + args.frames, train, data, args.records)
        spec = dict(
            scale=scale, configs=configs, device=args.device, data=str(data), frames=args.frames,
            warmup=args.warmup, threads=args.threads,
        )
        results[scale] = _run_child(dict(spec, models=models, measure="time", train=train))
        for name in models:
            # memory: one model per child (on CPU one whose allocator returns freed blocks; not timed)
            peak = _run_child(dict(spec, models=[name], measure="memory", train=False))[name]["peak_mb"]
            results[scale][name]["peak_mb"] = peak
            print(f"  {scale:9s} {name:6s} {results[scale][name]}", file=sys.stderr, flush=True)
    tmpdir.cleanup()

    print(f"device={args.device} configs={configs} threads={args.threads} frames={args.frames} "
          f"(after {args.warmup} warm-up)")
    header = ["scale", "model", "points/frame", "voxels/frame", "ms/frame", "x none", "peak MB", "x none", "state KB"]
    if args.train:
        header += ["train step s (4x2)", "x none"]
    table = []
    for scale, rows in results.items():
        ref = rows["none"]
        for name, r in rows.items():
            row = [scale, name, r["points_per_frame"], f"{r['voxels_per_frame']:.0f}", f"{r['ms_per_frame']:.1f}",
                   f"{r['ms_per_frame'] / ref['ms_per_frame']:.2f}", f"{r['peak_mb']:.1f}",
                   f"{r['peak_mb'] / max(ref['peak_mb'], 1e-9):.2f}", f"{r['state_kb']:.0f}"]
            if args.train:
                row += [f"{r['train_step_s']:.2f}", f"{r['train_step_s'] / ref['train_step_s']:.2f}"]
            table.append(row)
    print(markdown_table(header, table))
    if args.json:
        write_report(Path(args.json), {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
