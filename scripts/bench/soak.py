"""Soak: does resident memory stay flat over a long training run and a long stream of frames?

    python scripts/bench/soak.py --out DIR [--steps 2000] [--frames 1000] [--store STORE] [--quick]

1. Training: ``detector.train`` in this process (the demo experiment with a narrow model on a small
   synthetic store, or ``--store``), ``--steps`` optimizer steps with validation (Waymo metrics) every
   ``--val-every`` epochs and the CSV logger on; the process's RSS is sampled every ``--sample-every``
   steps.
2. Streaming: the trained checkpoint streams the validation split's frames in order, segment after
   segment and round again, until ``--frames`` frames; RSS sampled every ``--sample-every`` frames. Each
   frame's result is made (``frame_result``) and dropped: what an online user of ``Stream`` keeps.

Growth of a phase = (median RSS over its last 10 % of samples) / (median RSS over the 10 % of samples
right after warm-up, the first ``--warmup`` of the phase) - 1. Writes ``soak.json`` (samples, growth,
settings) and ``soak.png`` (both curves, warm-up shaded) into ``--out``; prints the JSON summary.
``--quick``: 200 steps and 200 frames (a check that it runs, not a measurement).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TINY_MODEL = ["model.backbone.channels=[8,16]", "model.backbone.out_channels=8", "model.temporal.hidden_channels=8",
              "model.temporal.gate_channels=8", "model.head.channels=8", "model.head.score_threshold=[0.01,0.01,0.01]"]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def growth(samples: list[tuple[int, float]], warmup: float) -> dict:
    """Growth after warm-up (module docstring) of ``(x, rss_mb)`` samples in order."""
    rss = np.array([s[1] for s in samples])
    n = len(rss)
    start = int(round(n * warmup))
    w = max(1, n // 10)
    base = float(np.median(rss[start:start + w]))
    end = float(np.median(rss[-w:]))
    return {"rss_after_warmup_mb": base, "rss_end_mb": end, "growth": end / base - 1.0,
            "rss_max_after_warmup_mb": float(rss[start:].max()), "samples": n, "warmup_samples": start}


def make_store(root: Path, top_width: int = 512, seed: int = 0) -> Path:
    from data_tools.convert_waymo import convert
    from data_tools.synth_segment import SegmentConfig
    from data_tools.synthesize import synthesize

    if not (root / "store").is_dir():
        synthesize(root / "records", 4, 2, seed, SegmentConfig(frames=10, top_width=top_width), workers=1)
        convert(root / "records", root / "store")
    return root / "store"


def soak_training(store: Path, out: Path, steps: int, val_every: int, every: int) -> tuple[list, dict]:
    import lightning as L
    from omegaconf import OmegaConf

    from detector.config import compose
    from detector.train import train

    samples: list[tuple[int, float]] = []
    validations: list[int] = []

    class Sampler(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step % every == 0:
                samples.append((trainer.global_step, rss_mb()))

        def on_validation_end(self, trainer, module):
            validations.append(trainer.global_step)

    cfg = compose("train", ["experiment=demo_synthetic", f"data.root={store}", "data.num_workers=0",
                            "data.batch_size=1", "data.clip_length=3", "data.stride=3", f"trainer.max_steps={steps}",
                            "trainer.max_epochs=-1", f"trainer.check_val_every_n_epoch={val_every}",
                            "trainer.enable_progress_bar=false", "logging.tensorboard=false", "logging.plot=false",
                            "torch_threads=1", *TINY_MODEL])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(out / "train")
    t0 = time.time()
    result = train(cfg, callbacks=[Sampler()])
    return samples, {"validations_at_steps": validations, "seconds": time.time() - t0,
                     "checkpoint": result["last_checkpoint"], "cfg": cfg}


def soak_streaming(cfg, ckpt: str, frames: int, every: int) -> tuple[list, dict]:
    import torch
    from hydra.utils import instantiate

    from detector.checkpoints import load_detector
    from detector.streaming import Stream, frame_result

    torch.set_num_threads(1)
    model = load_detector(cfg.model, ckpt, "cpu")
    dm = instantiate(cfg.data)
    dm.setup("validate")
    samples: list[tuple[int, float]] = []
    stream = Stream(model, "cpu")
    n, rounds, t0 = 0, 0, time.time()
    while n < frames:
        rounds += 1
        for batch in dm.val_dataloader():
            step = stream.step(batch)
            frame_result(step.frame, step.detections)
            n += 1
            if n % every == 0:
                samples.append((n, rss_mb()))
            if n >= frames:
                break
    return samples, {"rounds_over_the_split": rounds, "seconds": time.time() - t0}


def plot(path: Path, train_s: list, stream_s: list, warmup: float, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detector.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, s, name, key in ((axes[0], train_s, "training step", "training"),
                             (axes[1], stream_s, "streamed frame", "streaming")):
        x = [a for a, _ in s]
        y = [b for _, b in s]
        ax.plot(x, y, lw=1)
        if s:
            ax.axvspan(x[0], x[min(len(x) - 1, int(round(len(x) * warmup)))], color="0.9", label="warm-up")
        g = summary[key]["growth"] * 100
        ax.set_title(f"{key}: RSS {g:+.1f} % after warm-up")
        ax.set_xlabel(name)
        ax.set_ylabel("resident memory (MiB)")
        ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--val-every", type=int, default=10, help="validation every this many epochs")
    ap.add_argument("--sample-every", type=int, default=10)
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of each phase counted as warm-up")
    ap.add_argument("--top-width", type=int, default=512, help="TOP lidar columns of the synthesized store")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.frames, args.val_every, args.sample_every = 200, 200, 5, 5
    from detector.atomic import write_json_atomic
    from detector.config import register_resolvers

    register_resolvers()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = Path(args.store) if args.store else make_store(out / "data", args.top_width)
    gc.collect()
    train_s, train_info = soak_training(store, out, args.steps, args.val_every, args.sample_every)
    cfg = train_info.pop("cfg")
    write_json_atomic(out / "soak.json", {"training": {**growth(train_s, args.warmup), **train_info},
                                          "samples": {"training": train_s}, "partial": "training only"})
    stream_s, stream_info = soak_streaming(cfg, train_info["checkpoint"], args.frames, args.sample_every)
    summary = {"training": {**growth(train_s, args.warmup), **train_info, "steps": args.steps},
               "streaming": {**growth(stream_s, args.warmup), **stream_info, "frames": args.frames},
               "settings": {k: v for k, v in vars(args).items()}, "store": str(store),
               "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    write_json_atomic(out / "soak.json", {**summary, "samples": {"training": train_s, "streaming": stream_s}})
    plot(out / "soak.png", train_s, stream_s, args.warmup, summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
