"""Evaluate a checkpoint: ``python -m detector.evaluate experiment=NAME ckpt_path=PATH split=validation``.

Streams the detector over every segment of the split with its state carried, exactly as online, and
writes into the Hydra run dir:

- ``predictions.bin``: the detections as Waymo ``metrics_pb2.Objects`` (the leaderboard format);
- ``ground_truth.bin``: the split's labels in the same format (with ``num_lidar_points_in_box`` and
  difficulty), so that ``python -m detector.metrics ground_truth.bin predictions.bin`` reproduces
  ``metrics.json``;
- ``metrics.json``: AP/APH per official breakdown name.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from detector.config import (CONFIG_DIR, check_checkpoint_fits_data, check_model_fits_data, register_resolvers,
                             torch_threads)
from detector.errors import UserError, check_checkpoint_file, user_errors
from detector.inference import stream_segments

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def load_detector(model_cfg: DictConfig | dict, ckpt_path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build the model of ``model_cfg`` and load a training checkpoint's weights into it.

    A checkpoint from a different model (another temporal mode, other channel counts) is refused with
    a message that names both, instead of a wall of missing keys.
    """
    from detector.lit_module import build_model

    path = check_checkpoint_file(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path}: unreadable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a checkpoint written by detector.train (no state_dict)")
    model = build_model(model_cfg)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        trained = (ckpt.get("hyper_parameters") or {}).get("model_cfg", {})
        raise UserError(
            f"{path} does not fit the configured model: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} differently shaped tensors (e.g. {(missing + unexpected + shapes)[:3]}). "
            f"It was trained with model temporal={_temporal_of(trained)!r}; the config asks for "
            f"temporal={_temporal_of(model_cfg)!r}. Pass the experiment/model the checkpoint was trained with."
        )
    model.load_state_dict(state)
    return model.to(device).eval()


def load_checkpoint(ckpt_path: str, map_location: torch.device | str = "cpu") -> torch.nn.Module:
    """The detector of a training checkpoint, built from the model config stored in it."""
    path = check_checkpoint_file(ckpt_path)
    try:
        hp = torch.load(path, map_location="cpu", weights_only=False).get("hyper_parameters") or {}
    except (RuntimeError, EOFError, OSError, AttributeError) as e:
        raise UserError(f"{path}: unreadable checkpoint ({e})") from e
    if "model_cfg" not in hp:
        raise UserError(f"{path}: no model config stored (not a checkpoint written by detector.train)")
    return load_detector(hp["model_cfg"], path, map_location)


def _temporal_of(model_cfg) -> str:
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    t = (model_cfg or {}).get("temporal")
    if isinstance(t, dict):
        return str(t.get("mode", t.get("_target_", "?")))
    return str(t)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate as configured (``torch_threads`` applies while it runs, restored afterwards)."""
    register_resolvers()
    check_model_fits_data(cfg)
    with torch_threads(cfg.get("torch_threads")):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict:
    from detector.eval import WaymoMetrics
    from detector.metrics import format_table
    from detector.eval.submission import ObjectsWriter

    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    reset_every = cfg.get("reset_every")
    if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
        raise UserError(f"reset_every={reset_every!r}: expected a whole number of frames >= 1, or null (never)")
    device = pick_device(cfg.device)
    check_checkpoint_fits_data(cfg.ckpt_path, cfg.data)
    model = load_detector(cfg.model, cfg.ckpt_path, device)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    frames = datamodule.test_dataloader()
    metrics = WaymoMetrics()
    n = 0
    with ObjectsWriter(out / "predictions.bin") as preds, ObjectsWriter(out / "ground_truth.bin") as gts:
        for r in tqdm(stream_segments(model, frames, device, reset_every), total=len(frames),
                      desc=f"evaluate {cfg.split}", unit="frame", file=sys.stderr):
            metrics.add_frame((r.segment, r.timestamp_micros), r.gt_boxes, r.gt_types, r.gt_num_points,
                              r.gt_difficulty, r.boxes, r.scores, r.types)
            preds.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types)
            gts.add_ground_truth(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, r.gt_num_points,
                                 r.gt_difficulty)
            n += 1
            if cfg.get("max_frames") and n >= int(cfg.max_frames):
                break
    results = metrics.compute()
    from detector.data.frame_store import write_json_atomic

    write_json_atomic(out / "metrics.json", results)
    print(format_table(results))
    print(f"{n} frames of split '{cfg.split}'; wrote {out / 'predictions.bin'}, {out / 'ground_truth.bin'}, "
          f"{out / 'metrics.json'}")
    return {"output_dir": str(out), "frames": n, "metrics": results}


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
