"""The Hydra configs shipped in the package (``detector/configs/``) and what composing them needs.

- ``CONFIG_DIR``: the config folder, found from this file, so that no command depends on the working
  folder or on a source checkout (the configs are package data of a normal install);
- ``register_resolvers()``: the OmegaConf resolvers the configs use (``${voxel_features:...}``),
  registered by whoever composes configs (the entry points, ``compose``, ``build_model``), never at import;
- ``compose(name, overrides)``: a primary config (``train``, ``evaluate``, ...) outside a Hydra app;
- ``check_model_fits_data(cfg)``: the model's detection range and time-gap threshold are the data
  config's (the model configs read them by interpolation); an override of one side alone is refused;
- ``check_checkpoint_fits_data(path, data)``: a checkpoint trained on another range is refused;
- ``torch_threads(n)``: ``torch.set_num_threads`` for the duration of a command, restored afterwards;
- ``running(cfg, checks)``: all of the above that a command running the model does first, in one place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from detector import CONFIG_DIR
from detector.errors import UserError

__all__ = ["CONFIG_DIR", "SHARED_KEYS", "ConfigMismatchError", "register_resolvers", "compose", "check_model_fits_data",
           "check_checkpoint_fits_data", "running", "torch_threads", "voxel_features"]

#: Model config keys that must equal a data config key: (model key, data key).
SHARED_KEYS = (("model.voxelizer.point_range", "data.point_range"), ("model.max_gap_s", "data.max_gap_s"))


class ConfigMismatchError(UserError):
    """Two config keys that must agree (the model's range and the data's, ...) disagree."""


def voxel_features(voxelizer_target: str, temporal_target: str) -> int:
    """Voxel feature count the backbone sees: ``Voxelizer.num_features`` of the temporal module's point
    channels (7 for single-frame and recurrent models, 8 with the time-offset channel of ``concat``)."""
    from hydra.utils import get_class

    return int(get_class(voxelizer_target).num_features(int(get_class(temporal_target).point_channels)))


_RESOLVERS = {"voxel_features": voxel_features}


def register_resolvers() -> None:
    """Register the configs' resolvers with OmegaConf (idempotent; nothing else is touched)."""
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def compose(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The primary config ``name`` with Hydra ``overrides``, composed outside a Hydra app (tests, scripts)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides))


def _select(cfg, key: str):
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def check_model_fits_data(cfg: DictConfig) -> None:
    """Refuse a composed config whose model disagrees with its data on a shared key (``SHARED_KEYS``).

    The shipped model configs read these keys from the data config, so they can only disagree when one
    side was overridden alone (e.g. ``model.voxelizer.point_range=...`` without ``data.point_range``)."""
    register_resolvers()
    for model_key, data_key in SHARED_KEYS:
        if OmegaConf.select(cfg, model_key, default=None) is None or OmegaConf.select(cfg, data_key) is None:
            continue
        m, d = _select(cfg, model_key), _select(cfg, data_key)
        if not _same(m, d):
            raise ConfigMismatchError(
                f"{model_key}={m} but {data_key}={d}: they must agree (the model config reads {data_key}); "
                f"override {data_key} alone to change both")


def check_checkpoint_fits_data(ckpt_path: str | os.PathLike, data_cfg: DictConfig) -> None:
    """Refuse a checkpoint whose model was trained on another detection range than ``data_cfg.point_range``
    (its weights would load, and its detections be scored on points it never saw). A checkpoint that stores
    no model config has nothing to compare: the model is then the configured one."""
    from detector.checkpoints import stored_model_config

    trained = ((stored_model_config(ckpt_path) or {}).get("voxelizer") or {}).get("point_range")
    wanted = None if data_cfg is None else OmegaConf.select(data_cfg, "point_range")
    wanted = OmegaConf.to_container(wanted, resolve=True) if isinstance(wanted, ListConfig) else wanted
    if trained is None or wanted is None or _same(list(trained), list(wanted)):
        return
    raise ConfigMismatchError(
        f"{ckpt_path}: trained with model.voxelizer.point_range={list(trained)}, but data.point_range={list(wanted)} "
        f"here: pass data.point_range={list(trained)} (or the experiment the checkpoint was trained with)")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``n`` falsy: unchanged), the previous count after it."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def running(cfg: DictConfig, checks) -> Iterator[None]:
    """The preamble of ``train``, ``evaluate`` and ``predict``: resolvers registered, the config's values
    checked (``detector.config_checks.check_config(cfg, checks)``), the model's shared keys checked against
    the data's; then ``cfg.torch_threads`` applies while the block runs and is restored afterwards."""
    from detector.config_checks import check_config

    register_resolvers()
    check_config(cfg, checks)
    check_model_fits_data(cfg)
    with torch_threads(cfg.get("torch_threads")):
        yield
