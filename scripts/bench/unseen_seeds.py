"""A checkpoint on synthetic scenes it never saw: validation segments made with other seeds.

    .venv/bin/python scripts/bench/unseen_seeds.py --ckpt work/demo/train/checkpoints/last.ckpt \
        --seeds 101 102 103 --out work/unseen/demo.json

For each seed S it synthesizes ``segments=0 val_segments=2 frames=30 seed=S`` with the demo's generator
settings (``configs/synthesize.yaml``), converts the records to a frame store (both cached under
``--cache``, so a re-run only evaluates), streams the checkpoint over the validation split exactly as
``detector.evaluate`` does (state carried frame to frame, the experiment's evaluation settings) and
prints per-seed and mean/min/max LEVEL_1 AP/APH per class. The segments of seed S are checked to
differ from every segment of the training seed (``--train-seed``), so no scene is scored that the
model trained or was validated on. ``--run DIR`` takes ``DIR/checkpoints/last.ckpt``.

Why it stays: the unseen-scene figures of docs/RESULTS.md, "Detection quality"; every change to the detector
is checked on fresh seeds with it (docs/studies/demo-history.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import markdown_table, write_report  # noqa: E402

CLASSES = ("VEHICLE", "PEDESTRIAN", "CYCLIST")


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from detector import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


def split_segment_names(seed: int, split: str, count: int) -> list[str]:
    """Context names of segments ``0..count-1`` of ``split`` for ``seed`` (what ``synthesize`` would name them)."""
    import numpy as np

    from data_tools.synth_segment import segment_name
    from data_tools.synthesize import SPLIT_CODES

    return [segment_name(np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], i])))
            for i in range(count)]


def make_store(seed: int, cache: Path, val_segments: int, frames: int, extra: list[str]) -> Path:
    """``cache/seed_<S>_g<generator>/store`` with the validation segments of ``seed`` (made once, then
    reused by the same version of the synthesizer)."""
    from data_tools.convert_waymo import convert, summary
    from data_tools.synth_segment import GENERATOR
    from data_tools.synthesize import segment_config, synthesize

    base = cache / f"seed_{seed}_g{GENERATOR}"
    store, records, done = base / "store", base / "records", base / "store" / ".done"
    if done.is_file():
        return store
    cfg = compose("synthesize", [f"out_dir={records}", "segments=0", f"val_segments={val_segments}",
                                 f"frames={frames}", f"seed={seed}", "workers=1", *extra])
    t0 = time.perf_counter()
    synthesize(records, 0, val_segments, seed, segment_config(cfg), workers=1)
    results = convert(records, store, workers=1)
    if any(r.status == "failed" for r in results):
        raise SystemExit(f"seed {seed}: conversion failed\n{summary(results)}")
    done.write_text(json.dumps({"seed": seed, "val_segments": val_segments, "frames": frames, "extra": extra}))
    print(f"[seed {seed}] synthesized and converted in {time.perf_counter() - t0:.0f} s -> {store}", flush=True)
    return store


def evaluate_store(model, store: Path, experiment: str, eval_overrides: list[str]) -> dict:
    """Waymo metrics of ``model`` streamed over the validation split of ``store`` (as ``detector.evaluate``)."""
    from hydra.utils import instantiate

    from detector.eval import WaymoMetrics
    from detector.streaming import stream_segments

    cfg = compose("evaluate", [f"experiment={experiment}", f"data.root={store}", "ckpt_path=unused",
                               "split=validation", *eval_overrides])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    metrics = WaymoMetrics()
    frames = 0
    for r in stream_segments(model, datamodule.test_dataloader(), "cpu"):
        metrics.add_result(r)
        frames += 1
    return {"frames": frames, "metrics": metrics.compute()}


def level1(metrics: dict) -> dict[str, dict[str, float]]:
    return {c: metrics[f"OBJECT_TYPE_TYPE_{c}_LEVEL_1"] for c in CLASSES}


def spread(per_seed: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict = {}
    for c in CLASSES:
        out[c] = {}
        for k in ("AP", "APH"):
            vals = [r["level_1"][c][k] for r in per_seed.values()]
            out[c][k] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
    return out


def format_report(result: dict) -> str:
    rows = [[seed, *(f"{r['level_1'][c]['AP']:.3f} / {r['level_1'][c]['APH']:.3f}" for c in CLASSES)]
            for seed, r in result["seeds"].items()]
    rows += [[f"**{stat}**", *(f"{result['spread'][c]['AP'][stat]:.3f} / {result['spread'][c]['APH'][stat]:.3f}"
                               for c in CLASSES)] for stat in ("mean", "min", "max")]
    return markdown_table(["seed", *(f"{c.lower()} AP / APH" for c in CLASSES)], rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prepare-only", action="store_true", help="only synthesize and convert the seeds")
    src.add_argument("--ckpt", type=Path, help="a checkpoint written by detector.train")
    src.add_argument("--run", type=Path, help="a training run dir (its checkpoints/last.ckpt)")
    p.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    p.add_argument("--experiment", default="demo_synthetic", help="evaluation settings (data config) to use")
    p.add_argument("--cache", type=Path, default=ROOT / "work" / "unseen_seeds", help="synthesized seeds live here")
    p.add_argument("--val-segments", type=int, default=2)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--train-seed", type=int, default=0, help="the seed the checkpoint trained on (must differ)")
    p.add_argument("--train-segments", type=int, default=8)
    p.add_argument("--synth", nargs="*", default=[], help="extra data_tools.synthesize overrides (key=value)")
    p.add_argument("--eval", nargs="*", default=[], help="extra detector.evaluate overrides (key=value)")
    p.add_argument("--head", nargs="*", default=[],
                   help="decoding settings of the head to change before evaluating (name=JSON value), e.g. "
                        "direction_vote=true score_threshold=[0.1,0.05,0.05]")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the result as JSON here (and a .md next to it)")
    args = p.parse_args(argv)

    import torch

    from detector.checkpoints import load_checkpoint

    torch.set_num_threads(args.torch_threads)
    ckpt = args.ckpt if args.ckpt is not None else args.run / "checkpoints" / "last.ckpt" if args.run else None
    if args.train_seed in args.seeds:
        raise SystemExit(f"--seeds {args.seeds} include the training seed {args.train_seed}")
    seen = set(split_segment_names(args.train_seed, "training", args.train_segments)
               + split_segment_names(args.train_seed, "validation", args.val_segments))
    if args.prepare_only:
        for seed in args.seeds:
            make_store(seed, args.cache, args.val_segments, args.frames, args.synth)
        return {}
    model = load_checkpoint(ckpt, "cpu")
    model.eval()
    for kv in args.head:
        name, _, value = kv.partition("=")
        if not hasattr(model.head, name):
            raise SystemExit(f"--head {kv}: the head has no setting {name!r}")
        new = json.loads(value)
        current = getattr(model.head, name)
        if isinstance(current, list) and not isinstance(new, list):  # a per-class setting given once for all
            new = [new] * len(current)
        setattr(model.head, name, new)
    result: dict = {"checkpoint": str(ckpt), "experiment": args.experiment, "seeds": {}, "synth": args.synth,
                    "eval": args.eval, "head": args.head, "val_segments": args.val_segments, "frames": args.frames}
    for seed in args.seeds:
        names = split_segment_names(seed, "validation", args.val_segments)
        if seen & set(names):
            raise SystemExit(f"seed {seed}: segments {sorted(seen & set(names))} are also in the training seed's data")
        store = make_store(seed, args.cache, args.val_segments, args.frames, args.synth)
        t0 = time.perf_counter()
        r = evaluate_store(model, store, args.experiment, args.eval)
        r["level_1"] = level1(r.pop("metrics"))
        r["segments"] = names
        result["seeds"][str(seed)] = r
        cells = ", ".join(f"{c.lower()} {r['level_1'][c]['AP']:.3f}/{r['level_1'][c]['APH']:.3f}" for c in CLASSES)
        print(f"[seed {seed}] {r['frames']} frames, L1 AP/APH: {cells} ({time.perf_counter() - t0:.0f} s)", flush=True)
    result["spread"] = spread(result["seeds"])
    text = format_report(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_report(args.out, result, f"checkpoint: {ckpt}\n\n{text}")
    return result


if __name__ == "__main__":
    main()
