"""kill -9 during training, at a random step or while a checkpoint is being saved: resuming from
``last.ckpt`` ends with exactly the weights of an uninterrupted run, and no partial file is left.
A damaged checkpoint is refused before training resumes from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detector import CONFIG_DIR
from detector.errors import InputError
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.faults import TINY_MODEL, flip_bytes, leftovers
from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: 2 clips of 2 frames, batch 1: 2 steps an epoch, 2 epochs; no validation, no logs.
EXTRA = ["data.num_workers=0", "data.batch_size=1", "data.clip_length=2", "data.stride=2", "trainer.max_epochs=2",
         "trainer.enable_progress_bar=false", "logging.tensorboard=false", "logging.csv=false", "logging.plot=false",
         "module.validation_metrics=false", "trainer.check_val_every_n_epoch=100", "data.augment.enabled=false"]


def train_cfg(store: str, out: str, extra: list[str] = ()):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo_synthetic", f"data.root={store}", *TINY_MODEL, *EXTRA,
                                          *extra])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = out
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(store, weights of an uninterrupted 2-epoch run)."""
    from detector.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed run (and module fixtures run before one_torch_thread)
    root = tmp_path_factory.mktemp("faults_training")
    _, store = make_tiny_dataset(root, segments=1, frames=4, seed=7, val_segments=1, top_width=512)
    full = train(train_cfg(str(store), str(root / "full")))
    torch.set_num_threads(threads)
    return store, torch.load(full["last_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]


_KILLED = """
import os, signal, sys, torch, lightning as L
sys.path.insert(0, {root!r})
from tests.faults.test_training import train_cfg
from detector.train import train
import detector.train as t

where, step = {where!r}, {step}

class Kill(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if where == "step" and trainer.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

if where == "save":  # the second epoch's last.ckpt is written in full under its temporary name, then: kill
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith("last.ckpt") and torch.load(src, weights_only=False)["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
    t.os.replace = replace
torch.set_num_threads(1)
train(train_cfg({store!r}, {out!r}), callbacks=[Kill()])
"""


@pytest.mark.parametrize("where", ["step", "save"])
def test_kill_9_then_resume_gives_identical_weights(run, tmp_path, where):
    from detector.train import train

    store, expected = run
    step = int(np.random.default_rng(0).integers(2, 4))  # a random step of the second epoch
    script = tmp_path / "killed.py"
    script.write_text(_KILLED.format(root=str(REPO_ROOT), where=where, step=step, store=str(store),
                                     out=str(tmp_path / "run")))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert r.returncode == -9, r.stderr[-3000:]
    ckpts = tmp_path / "run" / "checkpoints"
    last = ckpts / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0  # the whole previous one
    if where == "save":
        assert (ckpts / "last.ckpt.partial").is_file()  # what the kill left, never trusted
    resumed = train(train_cfg(str(store), str(tmp_path / "run"), [f"ckpt_path={last}"]))
    got = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert got.keys() == expected.keys()
    for k in got:
        assert torch.equal(got[k], expected[k]), k
    assert not leftovers(tmp_path / "run")


def test_resume_from_a_damaged_checkpoint_is_refused_before_training(run, tmp_path):
    from detector.train import train

    store, _ = run
    ckpt = tmp_path / "damaged.ckpt"
    torch.save({"state_dict": {"model.w": torch.arange(4096.0)}, "epoch": 0}, ckpt)
    flip_bytes(ckpt, ckpt.stat().st_size // 2, 16)
    with pytest.raises(InputError, match=f"{ckpt}: damaged checkpoint"):
        train(train_cfg(str(store), str(tmp_path / "out"), [f"ckpt_path={ckpt}"]))
    assert not (Path(tmp_path / "out") / "checkpoints").exists()
