"""Training checkpoints as detectors: checked, built from the model config they carry, loaded.

A checkpoint written by ``detector.train`` holds the resolved model config (``hyper_parameters.
model_cfg``) next to the weights, so ``load_checkpoint(path)`` rebuilds the exact model from the file
alone; ``load_detector(model_cfg, path)`` loads the weights into a configured model and refuses a
checkpoint of another model with the config keys that differ; ``check_checkpoint_fits_data(path, data)``
refuses a checkpoint trained on another detection range than the data config's.

Layering: this module sits above ``detector.config`` and ``detector.models`` (it builds models from
configs); neither of them imports it.
Since 0.2.0 a checkpoint also holds the package version that wrote it (``checkpoint_version``); older
checkpoints load the same without it.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from detector.config import ConfigMismatchError, values_agree
from detector.errors import InputError
from detector.version import CHECKPOINT_KEY

__all__ = ["check_checkpoint_file", "check_checkpoint_fits_data", "checkpoint_version", "verify_checkpoint_crcs",
           "load_checkpoint", "load_detector", "model_config_differences", "stored_model_config",
           "upgrade_model_config", "upgrade_state_dict"]

#: ``_target_`` paths of classes that moved, as stored in checkpoints written before the move.
MOVED_TARGETS = {
    "detector.data.voxelize.Voxelizer": "detector.models.voxelizer.Voxelizer",
}
#: the ``Detector``'s box stages as named arguments before they became the ordered ``box_stages``: the old
#: key, its entry, in the order they were applied
MOVED_BOX_STAGES = {"box_refine": "refine", "box_direction": "direction"}
DETECTOR_TARGET = "detector.models.detector.Detector"
#: head switches removed after they measured no gain (docs/RESULTS.md, "The direction bit"): a checkpoint
#: with one off loads without it; one trained with a removed branch on cannot (its weights have no place).
#: ``direction_vote`` only changed decoding: it is dropped whatever its value.
REMOVED_HEAD_SWITCHES = ("direction_per_class", "direction_convs", "direction_detach", "direction_relative")
DROPPED_DECODING_SWITCHES = ("direction_vote",)


def _upgrade_detector(node: dict) -> dict:
    """A ``Detector`` config node of before the stage list: ``box_refine`` / ``box_direction`` become
    ``box_stages`` entries, ``head.motion_heading`` the model's ``motion_heading``; the removed head
    switches dropped (``REMOVED_HEAD_SWITCHES``, ``DROPPED_DECODING_SWITCHES``)."""
    if any(k in node for k in MOVED_BOX_STAGES):
        stages = {new: node.pop(old) for old, new in MOVED_BOX_STAGES.items() if old in node}
        node["box_stages"] = {**stages, **(node.get("box_stages") or {})}
    head = node.get("head")
    if isinstance(head, dict):
        if "motion_heading" in head:
            node["motion_heading"] = bool(head.pop("motion_heading"))
        for key in DROPPED_DECODING_SWITCHES:
            head.pop(key, None)
        for key in REMOVED_HEAD_SWITCHES:
            if head.pop(key, None):
                raise InputError(f"model.head.{key} is on in this model, and that branch was removed from the "
                                 "head (measured: no gain; docs/RESULTS.md, \"The direction bit\")")
    return node


def upgrade_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detector's weights (keys without the ``model.`` prefix) with the moved stages' keys renamed
    (``box_refine.*`` -> ``box_stages.refine.*``, see ``MOVED_BOX_STAGES``)."""
    out = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        out[f"box_stages.{MOVED_BOX_STAGES[head]}.{rest}" if head in MOVED_BOX_STAGES else k] = v
    return out


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """A readable Lightning checkpoint, or an ``InputError`` naming the path."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint not found: {p}")
    if not zipfile.is_zipfile(p):
        raise InputError(f"{p}: not a torch checkpoint (not a zip archive)")
    verify_checkpoint_crcs(p)
    return p


def verify_checkpoint_crcs(path: Path) -> None:
    """Every member of the checkpoint's zip against its CRC-32, before torch reads a single weight: a
    damaged file is refused instead of loading flipped bytes into the model. Reads the file once."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from e
    if bad is not None:
        raise InputError(f"{path}: damaged checkpoint: {bad} fails its CRC-32 check (copy it again, or use "
                         "another checkpoint of the run)")


def _read(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, AttributeError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: unreadable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a checkpoint written by detector.train (no state_dict)")
    return ckpt


def stored_model_config(ckpt_path: str | os.PathLike) -> dict | None:
    """The model config a training checkpoint holds (``hyper_parameters.model_cfg``; None without one), read
    without loading the weights into memory (memory-mapped)."""
    path = check_checkpoint_file(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{path}: unreadable checkpoint ({e})") from e
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    model_cfg = hp.get("model_cfg") if isinstance(hp, dict) else None
    if model_cfg is None:
        return None
    return OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)


def check_checkpoint_fits_data(ckpt_path: str | os.PathLike, data_cfg: DictConfig | None) -> None:
    """Refuse a checkpoint whose model was trained on another detection range than ``data_cfg.point_range``
    (its weights would load, and its detections be scored on points it never saw) with a
    ``ConfigMismatchError``. A checkpoint that stores no model config has nothing to compare: the model is
    then the configured one."""
    trained = ((stored_model_config(ckpt_path) or {}).get("voxelizer") or {}).get("point_range")
    wanted = None if data_cfg is None else OmegaConf.select(data_cfg, "point_range")
    wanted = OmegaConf.to_container(wanted, resolve=True) if isinstance(wanted, ListConfig) else wanted
    if trained is None or wanted is None or values_agree(list(trained), list(wanted)):
        return
    raise ConfigMismatchError(
        f"{ckpt_path}: trained with model.voxelizer.point_range={list(trained)}, but data.point_range={list(wanted)} "
        f"here: pass data.point_range={list(trained)} (or the experiment the checkpoint was trained with)")


def checkpoint_version(ckpt_path: str | os.PathLike) -> str | None:
    """The version of this package that wrote a training checkpoint (``detector.__version__`` at the time);
    None for a checkpoint written before versions were stored (0.1.0). Read memory-mapped, weights untouched."""
    path = check_checkpoint_file(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{path}: unreadable checkpoint ({e})") from e
    version = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    return str(version) if version is not None else None


def upgrade_model_config(model_cfg):
    """``model_cfg`` (a plain container) with moved classes' ``_target_`` paths replaced (``MOVED_TARGETS``)
    and a detector's moved keys put where they are now (``MOVED_BOX_STAGES``, ``head.motion_heading``)."""
    if isinstance(model_cfg, Mapping):
        out = {k: upgrade_model_config(v) for k, v in model_cfg.items()}
        if out.get("_target_") in MOVED_TARGETS:
            out["_target_"] = MOVED_TARGETS[out["_target_"]]
        if out.get("_target_") == DETECTOR_TARGET:
            out = _upgrade_detector(out)
        return out
    if isinstance(model_cfg, list):
        return [upgrade_model_config(v) for v in model_cfg]
    return model_cfg


def _plain(cfg) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg or {})


def _flatten(cfg, prefix: str = "") -> dict[str, object]:
    if isinstance(cfg, Mapping):
        out: dict[str, object] = {}
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def model_config_differences(trained, asked) -> list[str]:
    """``"key: trained value vs asked value"`` for every model config key whose values differ."""
    a = _flatten(upgrade_model_config(_plain(trained)))
    b = _flatten(upgrade_model_config(_plain(asked)))
    return [f"{k}: {a.get(k, '<absent>')!r} in the checkpoint vs {b.get(k, '<absent>')!r} configured"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def load_detector(model_cfg: DictConfig | dict, ckpt_path: str | os.PathLike,
                  device: torch.device | str = "cpu", ckpt: dict | None = None) -> torch.nn.Module:
    """Build the model of ``model_cfg`` and load a training checkpoint's weights into it, in eval mode.

    A checkpoint from a different model (another temporal mode, other channel counts) is refused with
    the model config keys that differ, instead of a wall of missing keys.
    """
    from detector.models import instantiate_model

    path = check_checkpoint_file(ckpt_path)
    ckpt = _read(path) if ckpt is None else ckpt
    model = instantiate_model(upgrade_model_config(_plain(model_cfg)))
    state = upgrade_state_dict({k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        trained = (ckpt.get("hyper_parameters") or {}).get("model_cfg")
        diffs = model_config_differences(trained, model_cfg) if trained else []
        what = ("; the model configs differ in " + "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")
                if diffs else "; the checkpoint stores no model config to compare")
        raise InputError(
            f"{path} does not fit the configured model: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} differently shaped tensors (e.g. {(missing + unexpected + shapes)[:3]}){what}. "
            "Pass the experiment/model the checkpoint was trained with.")
    model.load_state_dict(state)
    return model.to(device).eval()


def load_checkpoint(ckpt_path: str | os.PathLike, map_location: torch.device | str = "cpu") -> torch.nn.Module:
    """The detector of a training checkpoint, built from the model config stored in it."""
    path = check_checkpoint_file(ckpt_path)
    ckpt = _read(path)
    hp = ckpt.get("hyper_parameters") or {}
    if "model_cfg" not in hp:
        raise InputError(f"{path}: no model config stored (not a checkpoint written by detector.train)")
    return load_detector(hp["model_cfg"], path, map_location, ckpt=ckpt)
