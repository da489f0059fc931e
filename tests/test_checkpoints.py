"""Checkpoints as detectors: models saved before classes moved still load; a checkpoint of another model
is refused with the config keys that differ."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from detector.checkpoints import (
    checkpoint_version,
    load_checkpoint,
    load_detector,
    model_config_differences,
    upgrade_model_config,
)
from detector.config import compose
from detector.errors import InputError
from detector.models import instantiate_model
from tests.helpers.scenes import make_clip

TINY = ["model.backbone.channels=[8,16]", "model.backbone.out_channels=8", "model.temporal.hidden_channels=8",
        "model.temporal.gate_channels=8", "model.head.channels=8"]


def _model_cfg(model: str) -> dict:
    cfg = compose("train", overrides=[f"model={model}", *TINY])  # registers the config resolvers too
    return OmegaConf.to_container(cfg.model, resolve=True)


def _save(path, model_cfg: dict, model: torch.nn.Module) -> None:
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_cfg": model_cfg}}, path)


def _assert_same_outputs(model: torch.nn.Module, loaded: torch.nn.Module) -> None:
    clip = make_clip(num_frames=2, batch_size=1, num_points=3000, seed=1)
    with torch.no_grad():
        a = model(clip, decode=True)
        b = loaded(clip, decode=True)
    assert torch.equal(a.losses["loss"], b.losses["loss"])
    assert torch.equal(a.detections[-1][0].boxes, b.detections[-1][0].boxes)


def test_checkpoint_written_before_the_voxelizer_moved_loads(tmp_path, one_torch_thread):
    cfg = _model_cfg("lstm")
    torch.manual_seed(0)
    model = instantiate_model(cfg).eval()
    old = {**cfg, "voxelizer": {**cfg["voxelizer"], "_target_": "detector.data.voxelize.Voxelizer"}}
    _save(tmp_path / "old.ckpt", old, model)
    assert checkpoint_version(tmp_path / "old.ckpt") is None  # written before versions were stored: loads as before
    loaded = load_checkpoint(tmp_path / "old.ckpt")
    _assert_same_outputs(model, loaded)


def test_checkpoint_written_before_the_stage_list_loads(tmp_path, one_torch_thread):
    """Before ``box_stages``, the stages were the detector's ``box_refine`` / ``box_direction`` and heading
    from motion the head's ``motion_heading``: such a checkpoint loads into the same model, same outputs."""
    cfg = _model_cfg("lstm")
    torch.manual_seed(0)
    model = instantiate_model(cfg).eval()
    stages = cfg["box_stages"]
    old = {k: v for k, v in cfg.items() if k not in ("box_stages", "motion_heading")}
    removed = {"direction_vote": True, "direction_per_class": False, "direction_convs": 0, "direction_detach": False,
               "direction_relative": False}  # switches of the head then, measured no gain and since removed
    old = {**old, "head": {**cfg["head"], "motion_heading": True, **removed},
           "box_direction": stages["direction"], "box_refine": stages["refine"]}
    renamed = {"box_stages.refine.": "box_refine.", "box_stages.direction.": "box_direction."}
    weights = {}
    for k, v in model.state_dict().items():
        for new, was in renamed.items():
            k = k.replace(new, was) if k.startswith(new) else k
        weights[f"model.{k}"] = v
    assert any(k.startswith("model.box_refine.") for k in weights)
    torch.save({"state_dict": weights, "hyper_parameters": {"model_cfg": old}}, tmp_path / "old.ckpt")
    loaded = load_checkpoint(tmp_path / "old.ckpt")
    assert list(loaded.box_stages) == ["refine", "direction"] and loaded.motion_heading
    assert model_config_differences(old, cfg) == []
    with pytest.raises(InputError, match="direction_convs"):  # a branch whose weights have no place now
        upgrade_model_config({**old, "head": {**old["head"], "direction_convs": 1}})
    _assert_same_outputs(model, loaded)


def test_mismatched_checkpoint_names_the_differing_keys(tmp_path):
    cfg = _model_cfg("lstm")
    _save(tmp_path / "lstm.ckpt", cfg, instantiate_model(cfg))
    gru = _model_cfg("gru")
    assert any(d.startswith("temporal.cell: 'lstm'") for d in model_config_differences(cfg, gru))
    with pytest.raises(InputError, match=r"temporal\.cell: 'lstm' in the checkpoint vs 'gru' configured"):
        load_detector(gru, tmp_path / "lstm.ckpt")


def test_unreadable_checkpoints_are_named(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.ckpt: not a torch checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
