"""Preemption: SIGTERM or SIGUSR1 during training saves the step running, exits with status 75, and the
same command again resumes from the run folder's own checkpoint and ends with the weights of an
uninterrupted run (bitwise on CPU). Real signals, real processes, one process and DDP (gloo)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detector.preemption import EXIT_PREEMPTED, MARKER
from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.faults import TINY_MODEL
from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: 2 training segments x 6 frames, clips of 3, batches of 1: 4 steps an epoch, 2 epochs.
ARGS = ["experiment=demo_synthetic", "data.num_workers=0", "data.batch_size=1", "data.clip_length=3",
        "data.stride=3", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logging.tensorboard=false",
        "logging.plot=false", "module.validation_metrics=false", "trainer.check_val_every_n_epoch=100",
        "torch_threads=1", *TINY_MODEL]
STEPS = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("preempt"), segments=2, frames=6, seed=0, val_segments=1)[1]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


#: ``detector.train``'s command line, with a callback that sends ``sig`` to this process (rank ``rank``)
#: when training reaches global step ``at``: a real signal at a known step.
SIGNALLING = """
import os, signal, sys
import lightning as L
from detector import train as T

AT, SIG, RANK = {at}, signal.{sig}, {rank}

class SignalAt(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == AT and trainer.global_rank == RANK and not os.environ.get("SIGNALLED"):
            os.environ["SIGNALLED"] = "1"
            os.kill(os.getpid(), SIG)

_train = T.train
T.train = lambda cfg: _train(cfg, callbacks=[SignalAt()])
if __name__ == "__main__":
    T.main()
"""


def _train_cli(args: list[str], run_dir: Path | None, cwd: Path, signal_at: tuple[int, str, int] | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    extra = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    if signal_at is None:
        cmd = [sys.executable, "-m", "detector.train", *args, *extra]
    else:
        script = cwd / "signalling_train.py"
        script.write_text(SIGNALLING.format(at=signal_at[0], sig=signal_at[1], rank=signal_at[2]))
        cmd = [sys.executable, str(script), *args, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(), timeout=timeout)


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("full")
    r = _train_cli([f"data.root={store}", *ARGS], cwd / "run", cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    last = cwd / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == STEPS
    return last


@pytest.mark.slow
@pytest.mark.parametrize("sig,at", [("SIGTERM", 5), ("SIGUSR1", 2)])
def test_signal_saves_the_step_and_the_same_command_resumes_exactly(store, uninterrupted, tmp_path, sig, at):
    run = tmp_path / "run"
    args = [f"data.root={store}", *ARGS]
    r = _train_cli(args, run, tmp_path, signal_at=(at, sig, 0))
    assert r.returncode == EXIT_PREEMPTED, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    said = r.stdout + r.stderr
    assert f"stopped by {sig} after step {at + 1}" in said and "run the same command again" in said
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == at + 1  # the step running when the signal came is kept: 0 steps lost
    assert (run / "checkpoints" / MARKER).is_file() and not list(run.rglob("*.partial"))

    r = _train_cli(args, run, tmp_path)  # the same command, no ckpt_path
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert f"resuming from the run folder's own checkpoint {run / 'checkpoints' / 'last.ckpt'}" in log
    assert not (run / "checkpoints" / MARKER).exists()
    _assert_same_weights(run / "checkpoints" / "last.ckpt", uninterrupted)


@pytest.mark.slow
def test_external_sigterm_on_the_plain_command_and_the_default_run_folder(store, uninterrupted, tmp_path):
    """The scheduler's view: the plain command in its default time-stamped folder, SIGTERM from outside
    once the first epoch is saved; the same command again finds that folder and finishes there."""
    args = [f"data.root={store}", *ARGS, "trainer.max_epochs=2"]
    proc = subprocess.Popen([sys.executable, "-m", "detector.train", *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(tmp_path.glob("outputs/train/*/checkpoints/last.ckpt")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal came (a very fast machine)")
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    (run,) = list((tmp_path / "outputs" / "train").iterdir())
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 4 <= stopped_at < STEPS

    time.sleep(1.1)  # a later second: the default folder of the rerun is another one
    r = _train_cli(args, None, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"continuing the preempted run in outputs/train/{run.name}" in r.stderr
    assert [p.name for p in (tmp_path / "outputs" / "train").iterdir()] == [run.name]
    assert "resuming from the run folder's own checkpoint" in (run / "train.log").read_text()
    _assert_same_weights(run / "checkpoints" / "last.ckpt", uninterrupted)


def test_a_finished_run_is_not_continued(store, tmp_path):
    """Without a signal no marker stays behind, so a later identical command starts its own folder."""
    from detector.preemption import find_preempted_run

    args = [f"data.root={store}", *ARGS, "trainer.max_epochs=1", "trainer.limit_train_batches=1"]
    r = _train_cli(args, None, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = list((tmp_path / "outputs" / "train").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "checkpoints" / MARKER).exists()
    assert find_preempted_run(tmp_path / "outputs" / "train", args) is None


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]


@pytest.mark.slow
def test_ddp_signal_on_one_rank_stops_both_and_resumes_exactly(store, tmp_path):
    """Two gloo processes; SIGTERM reaches rank 1 only: both stop after the same step (exit 75), the
    checkpoint holds it, and the same command again ends with the weights of an uninterrupted DDP run."""
    args = [f"data.root={store}", *ARGS, *DDP]
    full = _train_cli(args, tmp_path / "full", tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    run = tmp_path / "run"
    r = _train_cli(args, run, tmp_path, signal_at=(1, "SIGTERM", 1))
    assert r.returncode == EXIT_PREEMPTED, r.stderr[-3000:]
    assert re.search(r"stopped by (SIGTERM|a signal on another rank) after step 2", r.stdout + r.stderr), r.stdout
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 2

    r = _train_cli(args, run, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_weights(run / "checkpoints" / "last.ckpt", tmp_path / "full" / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_slurm_sigusr1_saves_the_step_and_requeues(store, tmp_path):
    """trainer=slurm: SIGUSR1 saves the step and Lightning's SLURM handler requeues the job. SLURM is not
    installed here: the job's environment variables are set and ``scontrol`` is a script on PATH that
    records its arguments (what the real one would be asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "train"}
    run = tmp_path / "runs" / "4242"
    script = tmp_path / "signalling_train.py"
    script.write_text(SIGNALLING.format(at=2, sig="SIGUSR1", rank=0))
    args = [f"data.root={store}", *ARGS, "trainer=slurm", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.sync_batchnorm=false", f"hydra.run.dir={run}"]
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=600)
    assert r.returncode == EXIT_PREEMPTED, r.stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 3
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # Lightning's copy of the same step is removed
