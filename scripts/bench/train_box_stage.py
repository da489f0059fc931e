"""Train one box stage alone and add it to a copy of a checkpoint: what the stage buys on the same detections.

    .venv/bin/python scripts/bench/train_box_stage.py --ckpt work/demo/train/checkpoints/last.ckpt \
        --store work/demo/store --stage refine --out work/ckpts/with_refine.ckpt [--epochs 3] \
        [--set apply_to=[1] max_points=64]

The box stages (``model.box_stages``: ``refine``, ``direction``) train on labelled boxes with no gradient
into the backbone, so one can be trained after the fact: this streams the experiment's training clips
of ``--store`` (its data settings, augmentation included), feeds the frames of each clip the stage trains on
(its ``train_frames``) to its loss as ``Detector.forward`` does, and optimises it alone with the experiment's optimiser
settings (AdamW, its learning rate and weight decay, one-cycle over all steps). The stage's config is
the one in today's model config (``detector/configs/model/<--model>.yaml``) with ``--set`` changes;
the output is the checkpoint with the stage's weights and config added (a stage already there is
replaced), evaluable by ``detector.evaluate`` and ``unseen_seeds.py``. The rest of the detector is
untouched, so a comparison against the input checkpoint differs only by the stage. (Inside a full
training, gradient clipping over all weights couples the stage to the detector; here it is unclipped.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STAGES = ("refine", "direction")


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", type=Path, required=True, help="a checkpoint written by detector.train")
    p.add_argument("--store", type=Path, required=True, help="the frame store to train on (its training split)")
    p.add_argument("--stage", choices=STAGES, default="refine")
    p.add_argument("--out", type=Path, required=True, help="the new checkpoint")
    p.add_argument("--experiment", default="demo_synthetic")
    p.add_argument("--model", default="lstm", help="the model config whose stage settings are used")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--set", nargs="*", default=[], help="stage settings to change (key=json value)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from detector import CONFIG_DIR
    from detector.atomic import atomic_path
    from detector.checkpoints import check_checkpoint_file, upgrade_model_config, upgrade_state_dict
    from detector.config import register_resolvers

    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    register_resolvers()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", [f"experiment={args.experiment}", f"model={args.model}", f"data.root={args.store}",
                                f"seed={args.seed}"])
    stages_cfg = OmegaConf.to_container(cfg.model, resolve=True).get("box_stages") or {}
    stage_cfg = stages_cfg.get(args.stage)
    if stage_cfg is None:
        raise SystemExit(f"model {args.model}: {args.stage} is null (no stage to train)")
    for kv in args.set:
        key, _, value = kv.partition("=")
        stage_cfg[key] = json.loads(value)
    ckpt = torch.load(check_checkpoint_file(args.ckpt), map_location="cpu", weights_only=False)
    # a checkpoint of before the stage list: its config and weights in today's layout
    model_cfg = upgrade_model_config(ckpt["hyper_parameters"]["model_cfg"])
    weights = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    other = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("model.")}
    ckpt["state_dict"] = {**other, **{f"model.{k}": v for k, v in upgrade_state_dict(weights).items()}}
    head_classes = model_cfg["head"]["classes"]
    if list(stage_cfg["classes"]) != list(head_classes):
        raise SystemExit(f"{args.ckpt}: head classes {head_classes} differ from the stage's {stage_cfg['classes']}")
    stage = instantiate(stage_cfg)
    stage.train()
    datamodule = instantiate(cfg.data, seed=args.seed)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    steps = args.epochs * len(loader)
    opt = torch.optim.AdamW(stage.parameters(), lr=float(cfg.module.lr), weight_decay=float(cfg.module.weight_decay))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(cfg.module.lr), total_steps=steps,
                                                pct_start=float(cfg.module.warmup_pct))
    t0, running = time.perf_counter(), None
    with tqdm(total=steps, desc=f"train {args.stage}", unit="step") as bar:
        for epoch in range(args.epochs):
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            for clip in loader:
                loss = stage.clip_loss(clip.frames)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                value = loss.item()
                running = value if running is None else 0.98 * running + 0.02 * value
                bar.set_postfix(loss=f"{running:.3f}")
                bar.update()
    prefix = f"model.box_stages.{args.stage}."
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(prefix)}
    state.update({prefix + k: v for k, v in stage.state_dict().items()})
    ckpt["state_dict"] = state
    # the stage in its place in the model config's order (a stage the checkpoint has keeps its place)
    have = model_cfg.get("box_stages") or {}
    order = list(have) + [k for k in stages_cfg if k not in have]
    order.sort(key=lambda k: list(stages_cfg).index(k) if k in stages_cfg else len(stages_cfg))
    model_cfg["box_stages"] = {k: (stage_cfg if k == args.stage else have.get(k)) for k in order}
    ckpt["hyper_parameters"]["model_cfg"] = model_cfg
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        torch.save(ckpt, tmp)
    print(f"{args.stage}: {steps} steps in {time.perf_counter() - t0:.0f} s, final loss {running:.3f} -> {args.out}")
    return args.out


if __name__ == "__main__":
    main()
