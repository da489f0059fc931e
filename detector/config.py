"""The Hydra configs (``configs/``; ``detector/configs`` in an installed package) and what composing them needs.

- ``CONFIG_DIR``: the config folder, found from this file, so that no command depends on the working
  folder or on a source checkout (the configs are package data of a normal install);
- ``register_resolvers()``: the OmegaConf resolvers the configs use (``${voxel_features:...}``),
  registered by whoever composes configs (the entry points, ``compose``, ``build_model``), never at import;
- ``compose(name, overrides)``: a primary config (``train``, ``evaluate``, ...) outside a Hydra app;
- ``check_model_fits_data(cfg)``: the model's detection range and time-gap threshold are the data
  config's (the model configs read them by interpolation); an override of one side alone is refused;
- ``torch_threads(n)``: ``torch.set_num_threads`` for the duration of a command, restored afterwards;
- ``running(cfg, checks)``: all of the above that a command running the model does first, in one place
  (and ``tf32``: TF32 for the float32 math on CUDA, ``detector.ops.precision``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from detector import CONFIG_DIR
from detector.errors import UserError

__all__ = ["CONFIG_DIR", "SHARED_KEYS", "ConfigMismatchError", "register_resolvers", "compose", "check_model_fits_data",
           "running", "torch_threads", "values_agree", "voxel_features"]

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


def values_agree(a, b) -> bool:
    """Whether two config values are equal, numbers compared as floats and lists element by element."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_agree(x, y) for x, y in zip(a, b))
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
        if not values_agree(m, d):
            raise ConfigMismatchError(
                f"{model_key}={m} but {data_key}={d}: they must agree (the model config reads {data_key}); "
                f"override {data_key} alone to change both")


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
    the data's; then ``cfg.torch_threads`` and ``cfg.tf32`` (``detector.ops.precision.allow_tf32``: TF32 for
    float32 on CUDA) apply while the block runs and are restored afterwards."""
    from detector.config_checks import check_config

    register_resolvers()
    check_config(cfg, checks)
    check_model_fits_data(cfg)
    from detector.ops.precision import allow_tf32

    with torch_threads(cfg.get("torch_threads")), allow_tf32(cfg.get("tf32")):
        yield
