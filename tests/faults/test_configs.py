"""Bad config values: refused where the entry points read them, the key named, before any work."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detector import CONFIG_DIR, evaluate, train
from detector.config_checks import EVALUATE_CHECKS, PREDICT_CHECKS, TRAIN_CHECKS, ConfigValueError, check_config
from tests.helpers.faults import assert_one_line_error, run_hydra


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.fixture(scope="module")
def train_cfg():
    return _compose("train", ["experiment=demo_synthetic"])


@pytest.mark.parametrize("key,value", [
    ("trainer.max_epochs", "abc"), ("trainer.max_epochs", -2), ("trainer.max_steps", 1.5), ("trainer.devices", 0),
    ("trainer.limit_train_batches", 1.5), ("trainer.check_val_every_n_epoch", 0), ("data.batch_size", 0),
    ("data.batch_size", True), ("data.clip_length", -1), ("data.stride", 0), ("data.num_workers", -2),
    ("data.max_gap_s", 0), ("data.classes", [1, 7]), ("module.lr", 0), ("module.lr", "fast"),
    ("module.scheduler", "linear"), ("checkpoint.every_n_train_steps", 0), ("seed", "x"), ("torch_threads", 0),
])
def test_bad_train_values_name_the_key(train_cfg, key, value):
    cfg = train_cfg.copy()
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigValueError,
                       match=rf"^{re.escape(key)}={re.escape(repr(value))}: expected .*{key}=\.\.\.$"):
        check_config(cfg, TRAIN_CHECKS)


@pytest.mark.parametrize("name,checks,extra", [
    ("train", TRAIN_CHECKS, []), ("evaluate", EVALUATE_CHECKS, ["ckpt_path=x"]),
    ("predict", PREDICT_CHECKS, ["ckpt_path=x", "input=x"]),
])
def test_shipped_configs_pass(name, checks, extra):
    for experiment in ("demo_synthetic", "waymo_lstm"):
        check_config(_compose(name, [f"experiment={experiment}", *extra]), checks)


@pytest.mark.parametrize("override", ["max_frames=0", "split=valid", "data.batch_size=-1"])
def test_bad_evaluate_values_name_the_key(override):
    cfg = _compose("evaluate", ["experiment=demo_synthetic", "ckpt_path=x", override])
    with pytest.raises(ConfigValueError, match=rf"^{override.split('=')[0]}="):
        check_config(cfg, EVALUATE_CHECKS)


def test_cli_max_epochs_abc_is_one_line(tmp_path, capsys):
    """What was a Lightning TypeError: exit 2, the key named, nothing written."""
    code, out, err = run_hydra(train.main, ["experiment=demo_synthetic", f"data.root={tmp_path}",
                                            "trainer.max_epochs=abc"], tmp_path, capsys)
    assert_one_line_error(code, err, "trainer.max_epochs='abc'", "whole number", prefix="train")
    assert not (tmp_path / "hydra_run" / "checkpoints").exists()


def test_cli_evaluate_max_frames_zero(tmp_path, capsys):
    code, out, err = run_hydra(evaluate.main, ["experiment=demo_synthetic", f"ckpt_path={tmp_path / 'x.ckpt'}",
                                               "max_frames=0"], tmp_path, capsys)
    assert_one_line_error(code, err, "max_frames=0", prefix="evaluate")
