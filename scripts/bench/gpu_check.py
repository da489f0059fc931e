"""The GPU path in one run (``scripts/gpu_check.sh``): what a lent GPU machine measures and checks, printed
as a markdown block for docs/RESULTS.md ("GPU path") and saved as JSON.

Sections (each one runs even when an earlier one failed; the exit status is 1 if any failed):

1. ``gpu tests``: ``pytest -m gpu`` on the CUDA tests (CUDA vs CPU on 8 small configs, spconv under autocast);
2. ``train step``: one training step (forward, backward, AdamW) of ``waymo_lstm``, ``waymo_concat`` and
   ``waymo_single_frame`` at paper scale on a clip of 4 Waymo-size frames x batch 2, in float32 without
   and with TF32, ``bf16-mixed`` and ``16-mixed`` (with a ``GradScaler``): median ms/step, peak memory, and
   the first step's loss next to float32's (each precision starts from the same weights);
3. ``lightning``: ``detector.train`` with ``trainer=gpu`` on a small synthesized store, validation included;
4. ``checkpoint``: that run's checkpoint loaded and streamed on CUDA by ``detector.evaluate``;
5. ``inference``: per-frame time of the paper-scale LSTM streaming Waymo-size frames (``Detector.step``).

``--cpu`` runs the same sections on the CPU at tiny sizes (narrow models, 3,000 points, fewer steps): the
proof, here, that the script works, not a measurement.

    python scripts/bench/gpu_check.py [--cpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = ("waymo_lstm", "waymo_concat", "waymo_single_frame")
#: Waymo-size frames (as scripts/bench/model.py's ``waymo`` scale): 180k points within 75 m
WAYMO = dict(num_points=180000, radius=74.0, scene_radius=70.0, vehicles=40, pedestrians=20, cyclists=6, clutter=25)
#: the --cpu proof: narrow paper models on a small range
TINY = dict(num_points=3000, radius=38.0, scene_radius=35.0, vehicles=6, pedestrians=3, cyclists=2, clutter=4)
NARROW = ["model.backbone.channels=[8,8,8,8,8,8]", "model.backbone.out_channels=8", "model.head.channels=8",
          "data.point_range=[-40,-40,-2,40,40,4]"]
NARROW_LSTM = ["model.temporal.hidden_channels=8", "model.temporal.gate_channels=8", "model.temporal.top_k=2000"]
#: the trainer precisions of section 2: (name, autocast dtype or None, TF32, GradScaler)
PRECISIONS = {
    "32-true": (None, False, False),
    "32-true+tf32": (None, True, False),
    "bf16-mixed": ("bfloat16", True, False),
    "16-mixed": ("float16", True, True),
}
TINY_TRAIN = ["model.backbone.channels=[8,16]", "model.backbone.out_channels=8", "model.temporal.hidden_channels=8",
              "model.temporal.gate_channels=8", "model.head.channels=8",
              "model.head.score_threshold=[0.01,0.01,0.01]"]


def _frames(scale: dict, n: int, batch: int, seed: int):
    from tests.helpers.scenes import make_scene, make_stream_frames

    scenes = [make_scene(seed * 10 + b, num_vehicles=scale["vehicles"], num_pedestrians=scale["pedestrians"],
                         num_cyclists=scale["cyclists"], num_clutter=scale["clutter"], radius=scale["scene_radius"],
                         ego_speed=10.0, ego_yaw_rate=0.1) for b in range(batch)]
    return make_stream_frames(scenes, n, scale["num_points"], seed=seed, radius=scale["radius"])


def _model(name: str, cpu: bool):
    from detector.models import build_model

    overrides = (NARROW + (NARROW_LSTM if name == "waymo_lstm" else [])) if cpu else []
    return build_model(name, overrides, data="synthetic" if cpu else None)


class Section:
    """One section's rows and status."""

    def __init__(self, name: str):
        self.name, self.ok, self.rows, self.note = name, True, [], ""


@contextlib.contextmanager
def _section(results: list[Section], name: str):
    sec = Section(name)
    results.append(sec)
    t0 = time.perf_counter()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        yield sec
    except Exception as e:  # reported in the table and the exit status; the next section still runs
        sec.ok = False
        sec.note = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        traceback.print_exc()
    print(f"[gpu_check] {name}: {'ok' if sec.ok else 'FAILED'} ({time.perf_counter() - t0:.0f} s)", flush=True)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_tests(sec: Section, cpu: bool) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "tests/ops/test_gpu.py", "tests/models/test_gpu.py", "tests/ops/test_precision.py"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = [line for line in r.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
    sec.rows.append({"command": "pytest -m gpu " + " ".join(cmd[-3:]),
                     "result": tail[0]})
    # 5: nothing collected; without CUDA the gpu tests skip (rc 0)
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-2000:], sep="\n")
        raise RuntimeError(f"pytest exit {r.returncode}: {tail[0]}")


def train_steps(sec: Section, device, cpu: bool) -> None:
    import torch

    from detector.data.batch import ClipBatch
    from detector.ops.precision import allow_tf32

    scale = TINY if cpu else WAYMO
    clip = ClipBatch(_frames(scale, 4, 2, seed=4)).to(device)
    steps = 2 if cpu else 4  # the first one warms up (spconv picks its kernels), the others are timed
    precisions = ["32-true", "bf16-mixed"] if cpu else list(PRECISIONS)
    for name in CONFIGS:
        torch.manual_seed(0)
        base = _model(name, cpu).to(device)
        start = copy.deepcopy(base.state_dict())
        ref_loss = None
        for prec in precisions:
            dtype, tf32, scaled = PRECISIONS[prec]
            model = base
            model.load_state_dict(start)  # the same weights (and box-stage draw counter) for every precision
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler(device.type) if scaled else None
            times, first = [], None
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            with allow_tf32(tf32 if device.type == "cuda" else None):
                for i in range(steps):
                    _sync(device)
                    t0 = time.perf_counter()
                    ctx = (torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype
                           else contextlib.nullcontext())
                    with ctx:
                        loss = model(clip).losses["loss"]
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                    if i == 0:
                        first = float(loss)
            if not torch.isfinite(torch.tensor(first)):
                raise RuntimeError(f"{name} {prec}: first loss {first}")
            if ref_loss is None:
                ref_loss = first
            row = {"model": name, "precision": prec, "ms_per_step": 1000 * statistics.median(times[1:]),
                   "first_loss": first, "loss_vs_fp32": first / ref_loss - 1.0,
                   "points_per_frame": int(clip.frames[0].points.shape[0] / clip.batch_size)}
            if device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            sec.rows.append(row)
            print(f"[gpu_check]   {row}", flush=True)
        del base, start
    bad = [r for r in sec.rows if abs(r["loss_vs_fp32"]) > 0.02]
    if bad:
        raise RuntimeError(f"first-step loss off float32's by > 2%: {[(r['model'], r['precision']) for r in bad]}")


def lightning_run(sec: Section, work: Path, cpu: bool) -> Path:
    from omegaconf import OmegaConf

    from detector.config import compose
    from detector.train import train
    from tests.helpers.datasets import make_tiny_dataset

    _, store = make_tiny_dataset(work / "data", segments=2, frames=6, seed=0, val_segments=1)
    cfg = compose("train", ["experiment=demo_synthetic", f"data.root={store}", "data.num_workers=0",
                            f"trainer={'cpu' if cpu else 'gpu'}", "data.batch_size=2", "data.clip_length=3",
                            "data.stride=3", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
                            "trainer.enable_progress_bar=false", "logging.tensorboard=false", "logging.plot=false",
                            *(TINY_TRAIN if cpu else [])])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(work / "train")
    t0 = time.perf_counter()
    res = train(cfg)
    m = res["metrics"]
    sec.rows.append({"trainer": "cpu" if cpu else "gpu", "epochs": 2, "seconds": time.perf_counter() - t0,
                     "train_loss": m.get("train/loss_epoch"), "val_loss": m.get("val/loss"),
                     "val_AP_vehicle_L1": m.get("val/AP_vehicle_level_1")})
    if "val/loss" not in m:
        raise RuntimeError("no validation metrics logged")
    return Path(res["last_checkpoint"]), store


def checkpoint_stream(sec: Section, ckpt: Path, store: Path, work: Path, cpu: bool) -> None:
    from omegaconf import OmegaConf

    from detector.config import compose
    from detector.evaluate import evaluate

    cfg = compose("evaluate", ["experiment=demo_synthetic", f"data.root={store}", f"ckpt_path={ckpt}",
                               f"device={'cpu' if cpu else 'cuda'}", *(TINY_TRAIN if cpu else [])])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(work / "eval")
    t0 = time.perf_counter()
    res = evaluate(cfg)
    metrics = res.get("metrics", res) if isinstance(res, dict) else {}
    ap = None
    if isinstance(metrics, dict):
        v = metrics.get("OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1")
        ap = v.get("AP") if isinstance(v, dict) else None
    sec.rows.append({"device": "cpu" if cpu else "cuda", "seconds": time.perf_counter() - t0,
                     "AP_vehicle_L1": ap, "wrote": sorted(p.name for p in (work / "eval").iterdir())})


def inference(sec: Section, device, cpu: bool) -> None:
    import torch

    from detector.ops.precision import allow_tf32

    scale = TINY if cpu else WAYMO
    warm, n = (2, 3) if cpu else (3, 10)
    frames = [f.to(device) for f in _frames(scale, warm + n, 1, seed=3)]
    torch.manual_seed(0)
    model = _model("waymo_lstm", cpu).to(device).eval()
    for prec, tf32 in (("32-true", False), ("32-true+tf32", True)):
        state = model.init_state(1, device)
        times = []
        with torch.no_grad(), allow_tf32(tf32 if device.type == "cuda" else None):
            for i, f in enumerate(frames):
                _sync(device)
                t0 = time.perf_counter()
                dets, state = model.step(f, state)
                _sync(device)
                if i >= warm:
                    times.append(time.perf_counter() - t0)
        sec.rows.append({"model": "waymo_lstm", "precision": prec, "points_per_frame": int(frames[-1].points.shape[0]),
                         "ms_per_frame": 1000 * statistics.median(times), "detections": int(len(dets[0]))})


def markdown(results: list[Section], env: dict) -> str:
    lines = [f"GPU check, {env['date']}: {env['device']}, torch {env['torch']}, spconv {env['spconv']}"
             f"{' (--cpu: tiny sizes, a dry run of the script, not a measurement)' if env['cpu'] else ''}", ""]
    for sec in results:
        lines.append(f"**{sec.name}**: {'ok' if sec.ok else 'FAILED: ' + sec.note}")
        if sec.rows:
            keys = list(dict.fromkeys(k for r in sec.rows for k in r))
            lines.append("")
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            for r in sec.rows:
                cells = []
                for k in keys:
                    v = r.get(k, "")
                    cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the same sections on the CPU at tiny sizes")
    ap.add_argument("--out", default=None, help="folder for gpu_check.md and gpu_check.json")
    ap.add_argument("--skip", default="",
                    help="comma-separated sections to skip (tests,train,lightning,stream,inference)")
    args = ap.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (use --cpu for the CPU dry run)", file=sys.stderr)
        return 2
    if args.cpu:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import spconv

    device = torch.device("cpu" if args.cpu else "cuda")
    env = {"date": time.strftime("%Y-%m-%d"), "cpu": args.cpu, "torch": torch.__version__,
           "spconv": getattr(spconv, "__version__", "?"),
           "device": "CPU" if args.cpu else torch.cuda.get_device_name(0)}
    skip = set(filter(None, args.skip.split(",")))
    results: list[Section] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "tests" not in skip:
            with _section(results, "gpu tests") as sec:
                gpu_tests(sec, args.cpu)
        if "train" not in skip:
            with _section(results, "train step (paper-scale models, Waymo-size clip 4 x 2)") as sec:
                train_steps(sec, device, args.cpu)
        ckpt = store = None
        if "lightning" not in skip:
            with _section(results, f"Lightning trainer={'cpu' if args.cpu else 'gpu'} with validation") as sec:
                ckpt, store = lightning_run(sec, work, args.cpu)
        if "stream" not in skip and ckpt is not None:
            with _section(results, "checkpoint loaded and streamed (detector.evaluate)") as sec:
                checkpoint_stream(sec, ckpt, store, work, args.cpu)
        if "inference" not in skip:
            with _section(results, "per-frame inference, paper-scale LSTM, Waymo-size frame") as sec:
                inference(sec, device, args.cpu)
    text = markdown(results, env)
    print("\n<!-- gpu_check begin -->\n" + text + "\n<!-- gpu_check end -->")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(text + "\n")
        (out / "gpu_check.json").write_text(json.dumps(
            {"env": env, "sections": [{"name": s.name, "ok": s.ok, "note": s.note, "rows": s.rows} for s in results]},
            indent=1, default=str))
    return 0 if all(s.ok for s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
