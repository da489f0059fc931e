"""The detector: sparse 3D U-Net backbone, sparse-convolutional recurrent fusion with an
ego-motion-aligned state, detection head (see docs/MODEL.md)."""

from __future__ import annotations

from collections.abc import Sequence

from detector.models.detector import Detector
from detector.models.outputs import ClipOutput, Detections, HeadOutput
from detector.models.state import State, Sweep
from detector.models.temporal import RecurrentState, SweepHistory

__all__ = ["Detector", "Detections", "ClipOutput", "HeadOutput", "State", "RecurrentState", "Sweep", "SweepHistory",
           "build_model", "instantiate_model"]


def instantiate_model(model_cfg) -> Detector:
    """The ``Detector`` of a model config node (a ``DictConfig`` or a plain dict with ``_target_`` keys,
    as stored in checkpoints)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(model_cfg) if isinstance(model_cfg, dict) else model_cfg
    return instantiate(cfg, _convert_="partial")


def build_model(name: str = "lstm", overrides: Sequence[str] = (), data: str | None = None) -> Detector:
    """Instantiate ``configs/model/<name>.yaml`` with Hydra overrides such as
    ``"model.temporal.top_k=64"`` (keys start with ``model.`` or ``data.``). The model reads its range and
    time-gap threshold from a data config: ``data`` (``configs/data/<data>.yaml``; default: ``waymo``
    for the ``waymo_*`` models, ``synthetic`` for the others); change the range with ``data.point_range=``.
    Works inside or outside a Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from detector.config import CONFIG_DIR, check_model_fits_data, register_resolvers

    register_resolvers()
    data = data or ("waymo" if name.startswith("waymo_") else "synthetic")
    ov = [f"+data={data}", f"+model={name}", *overrides]
    if GlobalHydra.instance().is_initialized():
        cfg = compose(overrides=ov)
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(overrides=ov)
    check_model_fits_data(cfg)
    return instantiate_model(cfg.model)
