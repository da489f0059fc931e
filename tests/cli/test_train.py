"""Training, evaluation and prediction entry points on a tiny synthetic dataset (real configs, CPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from detector import CONFIG_DIR
from detector.config import compose
from detector.data.frame_store import list_segments
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.paths import REPO_ROOT

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
#: A small, fast model for the entry-point tests (the real config, narrower).
TINY = ["model.backbone.channels=[8,16]", "model.backbone.out_channels=8", "model.temporal.hidden_channels=8",
        "model.temporal.gate_channels=8", "model.head.channels=8", "model.head.score_threshold=[0.01,0.01,0.01]"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    _, store = make_tiny_dataset(tmp_path_factory.mktemp("tiny"), segments=2, frames=6, seed=0, val_segments=1)
    return store


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _compose(name: str, overrides: list[str]):
    return compose(name, overrides)


def _train_cfg(store: Path, out: Path, extra: list[str] = ()):
    cfg = _compose("train", ["experiment=demo_synthetic", f"data.root={store}", "data.num_workers=0",
                             "data.batch_size=2", "data.clip_length=3", "data.stride=3", "trainer.max_epochs=1",
                             "trainer.enable_progress_bar=false", "logging.tensorboard=false", *TINY, *extra])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(out)
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_every_command(experiment):
    for name in ("train", "evaluate", "predict"):
        extra = {"train": [], "evaluate": ["ckpt_path=x"], "predict": ["ckpt_path=x", "input=x"]}[name]
        cfg = _compose(name, [f"experiment={experiment}", *extra])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        assert cfg.model._target_ == "detector.models.detector.Detector"
        assert cfg.model.voxelizer.point_range == cfg.data.point_range, "model and data ranges must agree"


def test_train_evaluate_predict_end_to_end(store, tmp_path):
    from detector.checkpoints import load_checkpoint
    from detector.evaluate import evaluate
    from detector.predict import predict
    from detector.train import train

    cfg = _train_cfg(store, tmp_path / "train", ["trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"])
    result = train(cfg)
    ckpt = Path(result["last_checkpoint"])
    assert ckpt.is_file() and Path(result["best_checkpoint"]).is_file()
    assert Path(result["learning_curves"]).is_file()
    csv = (tmp_path / "train" / "logs" / "csv" / "metrics.csv").read_text()
    assert "val/AP_vehicle_level_1" in csv and "val/loss" in csv and "train/loss_epoch" in csv
    assert load_checkpoint(str(ckpt)).temporal_mode == "lstm"

    ecfg = _compose("evaluate", ["experiment=demo_synthetic", f"data.root={store}", f"ckpt_path={ckpt}",
                                 "device=cpu", *TINY])
    OmegaConf.set_struct(ecfg, False)
    ecfg.output_dir = str(tmp_path / "eval")
    res = evaluate(ecfg)
    n_val = sum(s.num_frames for s in list_segments(store, "validation"))
    assert res["frames"] == n_val
    out = tmp_path / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == res["metrics"] and "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in metrics
    assert "RANGE_TYPE_PEDESTRIAN_[30, 50)_LEVEL_2" in metrics

    # the metrics CLI on the written files gives metrics.json
    cli = subprocess.run([sys.executable, "-m", "detector.metrics", str(out / "ground_truth.bin"),
                          str(out / "predictions.bin"), "--json", str(tmp_path / "cli.json")],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads((tmp_path / "cli.json").read_text())
    for k, v in metrics.items():
        assert from_cli[k]["AP"] == pytest.approx(v["AP"], abs=1e-6), k
        assert from_cli[k]["APH"] == pytest.approx(v["APH"], abs=1e-6), k

    # the viewer runs the checkpoint itself and reads the LSTM's state sites (show_state=true)
    from detector.viz.sources import detections_from_checkpoint

    seg = list_segments(store, "validation")[0]
    shown = list(detections_from_checkpoint(ckpt, seg.frames(), state_voxels=True))
    assert len(shown) == seg.num_frames
    sizes = [len(sv.centers) for _, _, sv in shown]
    assert sizes[-1] > 0 and all(np.isfinite(sv.centers).all() for _, _, sv in shown)
    lo, hi = np.array(ecfg.model.voxelizer.point_range[:3]), np.array(ecfg.model.voxelizer.point_range[3:])
    assert all(((sv.centers >= lo) & (sv.centers <= hi)).all() for _, _, sv in shown)

    # predict straight from the validation records gives the same detections as evaluation
    from detector.eval import read_objects

    pcfg = _compose("predict", ["experiment=demo_synthetic", f"ckpt_path={ckpt}", "device=cpu",
                                f"input={store.parent / 'records' / 'validation'}", *TINY])
    OmegaConf.set_struct(pcfg, False)
    pcfg.output_dir = str(tmp_path / "pred")
    pres = predict(pcfg)
    assert pres["frames"] == n_val
    a = read_objects(out / "predictions.bin").objects
    b = read_objects(pres["predictions"]).objects
    assert len(a) == len(b) and len(a) > 0
    assert [o.object.box.center_x for o in a] == pytest.approx([o.object.box.center_x for o in b], abs=1e-4)


def test_resume_after_kill_continues_exactly(store, tmp_path):
    """A 2-epoch run killed (SIGKILL) after its first epoch and resumed from last.ckpt ends with exactly
    the weights of an uninterrupted 2-epoch run."""
    from detector.train import train

    extra = ["trainer.max_epochs=2", "logging.plot=false", "module.validation_metrics=false",
             "trainer.check_val_every_n_epoch=100"]
    full = train(_train_cfg(store, tmp_path / "full", extra))

    script = tmp_path / "killed_run.py"
    script.write_text(f"""
import os, signal, sys, torch, lightning as L
sys.path.insert(0, {REPO_ROOT!r})
from tests.cli.test_train import _train_cfg
from detector.train import train

class KillAtSecondEpoch(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

torch.set_num_threads(1)
train(_train_cfg({str(store)!r}, {str(tmp_path / 'run')!r}, {extra!r}), callbacks=[KillAtSecondEpoch()])
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert r.returncode == -9, r.stderr[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
    resumed = train(_train_cfg(store, tmp_path / "run", [*extra, f"ckpt_path={last}"]))

    a = torch.load(full["last_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _cli(module: str, *args: str, cwd: str | os.PathLike) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args, "hydra.run.dir=" + str(Path(cwd) / "run")],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_bad_input_gives_one_clear_message(store, tmp_path):
    r = _cli("detector.evaluate", "experiment=demo_synthetic", f"data.root={store}",
             f"ckpt_path={tmp_path / 'missing.ckpt'}", cwd=tmp_path)
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr

    (tmp_path / "empty" / "validation").mkdir(parents=True)
    fake = tmp_path / "fake.ckpt"
    fake.write_text("not a checkpoint")
    r = _cli("detector.evaluate", "experiment=demo_synthetic", f"data.root={tmp_path / 'empty'}",
             f"ckpt_path={fake}", cwd=tmp_path)
    assert r.returncode == 2 and "not a torch checkpoint" in r.stderr

    r = _cli("detector.evaluate", "experiment=demo_synthetic", f"data.root={store}",
             f"ckpt_path={fake}", "reset_every=0", cwd=tmp_path)
    assert r.returncode == 2 and "reset_every=0" in r.stderr and "Traceback" not in r.stderr

    r = _cli("detector.train", "experiment=demo_synthetic", f"data.root={tmp_path / 'empty'}",
             "trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode == 2 and "empty/training" in r.stderr and "Traceback" not in r.stderr

    r = _cli("detector.train", "experiment=demo_synthetic", "trainer.max_epoch=1", cwd=tmp_path)
    assert r.returncode != 0 and "max_epoch" in r.stderr and "Traceback" not in r.stderr


def test_mismatched_checkpoint_is_refused(store, tmp_path):
    from detector.checkpoints import load_detector
    from detector.errors import UserError
    from detector.train import train

    res = train(_train_cfg(store, tmp_path / "t", ["logging.plot=false", "module.validation_metrics=false",
                                                    "trainer.limit_train_batches=1"]))
    cfg = _compose("train", ["model=single_frame"])
    with pytest.raises(UserError, match="does not fit the configured model"):
        load_detector(cfg.model, res["last_checkpoint"])


def test_ddp_on_cpu_agrees_on_weights(store, tmp_path):
    """Two gloo processes train a few steps on different clips; both end with identical weights."""
    script = tmp_path / "ddp_run.py"
    script.write_text(f"""
import sys, torch, lightning as L
sys.path.insert(0, {REPO_ROOT!r})
from tests.cli.test_train import _train_cfg, TINY
from detector.train import train

class Checksum(L.Callback):
    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten().double() for p in module.parameters()])
        # one write() of a short line is atomic on a pipe, so the two ranks' lines stay whole
        sys.stdout.write(f"CHECKSUM {{trainer.global_rank}} {{trainer.world_size}} {{trainer.global_step}} "
                         f"{{float(flat.sum())!r}} {{float(flat.abs().sum())!r}}\\n")
        sys.stdout.flush()

if __name__ == "__main__":
    torch.set_num_threads(1)
    cfg = _train_cfg({str(store)!r}, {str(tmp_path / 'ddp')!r}, ["trainer=ddp", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.sync_batchnorm=false", "trainer.limit_train_batches=2", "logging.plot=false",
        "module.validation_metrics=false", "trainer.check_val_every_n_epoch=100", "trainer.enable_progress_bar=false"])
    train(cfg, callbacks=[Checksum()])
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # the two processes share stdout: their lines may interleave, so parse by pattern
    rows = [m.split() for m in re.findall(r"CHECKSUM (\d+ \d+ \d+ \S+ \S+)", r.stdout)]
    assert sorted(int(row[0]) for row in rows) == [0, 1], r.stdout[-2000:]
    assert all(row[1] == "2" and int(row[2]) > 0 for row in rows)
    assert rows[0][3:] == rows[1][3:], "ranks disagree on the weights"
