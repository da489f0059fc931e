"""Preemption-safe training: a stop signal ends the step, saves it, and the same command resumes.

Cluster schedulers stop a job with SIGTERM (SLURM also sends a chosen signal, SIGUSR1 here, some time
before a time limit, ``#SBATCH --signal=USR1@120``). During ``detector.train``:

- ``PreemptionCheckpoint`` (a Lightning callback every training run has) catches SIGTERM and SIGUSR1
  from the first training step on. The step running when the signal comes is finished; at its end every
  rank agrees (one all-reduce of a flag per step, so a signal that reached one rank only stops them all
  at the same step), ``<run folder>/checkpoints/last.ckpt`` is written atomically with that step,
  ``checkpoints/preempted.json`` records the signal and the step, and training raises ``Preempted``;
  ``detector.train`` then exits with status ``EXIT_PREEMPTED`` (75, ``EX_TEMPFAIL``: "try again"),
  never 0. No step is lost. Under ``trainer=slurm`` (Lightning's ``SLURMEnvironment`` with
  ``auto_requeue``) SIGUSR1 then hands over to Lightning's handler, which requeues the job.
- ``resume_checkpoint(run_dir)``: with ``ckpt_path`` unset, a run folder that holds
  ``checkpoints/last.ckpt`` is resumed from it (the log says so). A run folder given by
  ``hydra.run.dir`` is found again by the same command; with the default time-stamped folder
  (``outputs/train/<time>``), ``find_preempted_run`` finds the newest preempted run of the same
  command line (the same overrides) next to it and the run goes on there (``RunFolderCheck``).
- ``ClipSampler`` skips the clips of the steps already done when a run resumes inside an epoch
  (``ClipSampler.skip_clips``), so that a resumed run sees the same clips in the same order as an
  uninterrupted one and ends with the same weights (bitwise on CPU).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import lightning as L

from detector.atomic import output_error, write_json_atomic

log = logging.getLogger(__name__)

#: Exit status of a training run stopped by a signal after saving its checkpoint (``os.EX_TEMPFAIL``).
EXIT_PREEMPTED = 75
#: The signals that stop training with a checkpoint.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: Written next to ``last.ckpt`` when a signal stopped the run; removed when the run finishes.
MARKER = "preempted.json"


class Preempted(Exception):
    """Training stopped by a signal after its checkpoint was saved; ``detector.train`` exits with
    ``EXIT_PREEMPTED``."""

    def __init__(self, signal_name: str, step: int, checkpoint: str) -> None:
        super().__init__(f"stopped by {signal_name} after step {step}; saved {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


def save_atomic(trainer: L.Trainer, path: str | os.PathLike) -> None:
    """``trainer.save_checkpoint(path)`` written under a temporary name and renamed (every rank calls
    it; rank 0 writes); a refused write is an ``OutputError`` naming ``path`` and leaves nothing."""
    path = os.fspath(path)
    tmp = f"{path}.partial"
    try:
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        err = output_error(path, e)
        if err is e:
            raise
        raise err from e
    trainer.strategy.barrier("preemption_checkpoint")


class PreemptionCheckpoint(L.Callback):
    """SIGTERM/SIGUSR1 during training: finish the step, save ``<dirpath>/last.ckpt``, raise ``Preempted``.

    Also remembers where in the epoch training is (``state_dict``: epoch and batches done), so that a run
    resumed from any checkpoint written inside an epoch skips the clips already trained on."""

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.dirpath = Path(dirpath)
        self._signal: int | None = None
        self._previous: dict[int, object] = {}
        self._position = {"epoch": 0, "batches": 0}
        self._resume_position: dict | None = None

    # -- where in the epoch -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return dict(self._position)

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_position = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._install()
        pos = self._resume_position
        if pos and pos["batches"] > 0 and pos["epoch"] == trainer.current_epoch:
            loader = trainer.train_dataloader
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "skip_clips"):
                sampler.skip_clips(pos["epoch"], pos["batches"] * int(loader.batch_size))
                log.info("resuming inside epoch %d: skipping the %d batches already trained on",
                         pos["epoch"], pos["batches"])
            else:
                log.warning("resuming inside epoch %d with a sampler that cannot skip (%s): the epoch's "
                            "first batches are seen again", pos["epoch"], type(sampler).__name__)
        self._resume_position = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self._position = {"epoch": trainer.current_epoch, "batches": 0}

    # -- signals ----------------------------------------------------------------------------------------
    def _handler(self, signum, frame) -> None:
        if self._signal is None:
            self._signal = signum
            log.info("received %s: stopping after the current training step", signal.Signals(signum).name)

    def _install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for s in STOP_SIGNALS:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handler)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._position = {"epoch": trainer.current_epoch, "batches": batch_idx + 1}
        accumulate = int(trainer.accumulate_grad_batches)
        if accumulate > 1 and (batch_idx + 1) % accumulate and batch_idx + 1 != trainer.num_training_batches:
            return  # inside a gradient-accumulation window: stop after its optimizer step, not before
        stop = trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False)
        if not stop:
            return
        name = signal.Signals(self._signal).name if self._signal is not None else "a signal on another rank"
        path = self.dirpath / "last.ckpt"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("preemption_dir")
        save_atomic(trainer, path)
        if trainer.is_global_zero:
            write_json_atomic(self.dirpath / MARKER, {"signal": name, "global_step": trainer.global_step,
                                                      "epoch": trainer.current_epoch, "checkpoint": path.name,
                                                      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self._restore()
        requeue = self._previous_requeue(trainer)
        if requeue is not None:  # trainer=slurm: Lightning's handler requeues the job (scontrol requeue)
            hpc = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
            requeue(self._signal, None)
            if trainer.is_global_zero and os.path.exists(hpc):
                os.unlink(hpc)  # its copy of the same step: the resumed run reads last.ckpt
        raise Preempted(name, trainer.global_step, str(path))

    def _previous_requeue(self, trainer: L.Trainer):
        """Lightning's SLURM requeue handler, for a SIGUSR1 under ``SLURMEnvironment(auto_requeue=True)``."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = trainer._accelerator_connector.cluster_environment
        if self._signal != signal.SIGUSR1 or not (isinstance(env, SLURMEnvironment) and env.auto_requeue):
            return None
        return trainer._signal_connector._slurm_sigusr_handler_fn

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._restore()
        if trainer.is_global_zero and (self.dirpath / MARKER).exists():
            (self.dirpath / MARKER).unlink()

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._restore()


def resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run folder's own ``checkpoints/last.ckpt`` when it has one (a preempted or killed run), else None."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def find_preempted_run(runs: str | os.PathLike, overrides: list[str]) -> Path | None:
    """The newest run folder under ``runs`` (``outputs/train``) that a signal stopped (``checkpoints/
    preempted.json``) and whose command line had the same ``overrides`` (``.hydra/overrides.yaml``)."""
    from omegaconf import OmegaConf

    runs = Path(runs)
    if not runs.is_dir():
        return None
    found = []
    for marker in runs.glob(f"*/checkpoints/{MARKER}"):
        run = marker.parent.parent
        saved = run / ".hydra" / "overrides.yaml"
        if not saved.is_file() or not (run / "checkpoints" / "last.ckpt").is_file():
            continue
        try:
            if list(OmegaConf.to_container(OmegaConf.load(saved))) != list(overrides):
                continue
            json.loads(marker.read_text())
        except Exception:  # noqa: BLE001 - a damaged marker or overrides file: not a run to continue
            continue
        found.append((marker.stat().st_mtime, run))
    return max(found)[1] if found else None


__all__ = ["EXIT_PREEMPTED", "MARKER", "STOP_SIGNALS", "Preempted", "PreemptionCheckpoint", "find_preempted_run",
           "resume_checkpoint", "save_atomic"]
