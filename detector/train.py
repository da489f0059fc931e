"""Train a detector: ``python -m detector.train experiment=NAME [overrides]``.

Writes into the Hydra run dir: ``checkpoints/last.ckpt`` and ``checkpoints/best-*.ckpt``, CSV and
TensorBoard logs (``logs/``), ``learning_curves.png``. ``ckpt_path=PATH`` resumes a run: model,
optimizer, scheduler, epoch and step are restored, and since every random draw of the data
pipeline is a function of (seed, epoch, clip), a run resumed from an epoch-end checkpoint ends with
the same weights as an uninterrupted one.

Preemption (``detector/preemption.py``): SIGTERM or SIGUSR1 during training saves the current step to
``checkpoints/last.ckpt`` and exits with status 75 (``EXIT_PREEMPTED``); with ``ckpt_path`` unset, a run
folder holding ``checkpoints/last.ckpt`` is resumed from it, so the same command again goes on where it
stopped (give ``hydra.run.dir``, or let the default time-stamped folder be found: ``RunFolderCheck``).
"""

from __future__ import annotations

from detector.openmp import prefer_passive_wait

prefer_passive_wait()  # before torch loads, through the imports below (see detector/openmp.py)

import logging
import os
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from detector.atomic import ensure_dir, output_error
from detector.checkpoints import check_checkpoint_file
from detector.config import CONFIG_DIR, register_resolvers, running
from detector.config_checks import TRAIN_CHECKS
from detector.errors import UserError, user_errors
from detector.lit_module import DetectorModule
from detector.output_paths import check_not_input
from detector.preemption import EXIT_PREEMPTED, Preempted, PreemptionCheckpoint, resume_checkpoint

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's run dir when run through Hydra, else ``cfg.output_dir`` (tests compose configs)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("output_dir") or "outputs/train")


class CheckpointWriteError(UserError):
    """Another rank could not write a checkpoint: this rank stops too."""


class AtomicCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose files appear whole: written under a temporary name, then renamed,
    so a run killed while saving never leaves a half-written ``last.ckpt`` that a resume would trust;
    the ``.partial`` file such a kill leaves is removed when the next run starts."""

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for name in os.listdir(self.dirpath):
                if name.endswith(".ckpt.partial"):
                    os.unlink(os.path.join(self.dirpath, name))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.partial"
        # rank 0 writes; a write error is held until every rank is past Lightning's barrier, then all ranks
        # learn of it and stop (under DDP, a raise on rank 0 alone would leave the others at that barrier)
        strategy, failed = trainer.strategy, []
        save = strategy.save_checkpoint

        def save_or_hold(checkpoint, path, storage_options=None):
            try:
                save(checkpoint, path, storage_options=storage_options)
            except OSError as e:
                failed.append(e)

        strategy.save_checkpoint = save_or_hold
        try:
            super()._save_checkpoint(trainer, tmp)
        finally:
            del strategy.save_checkpoint  # the class's method again
        if strategy.reduce_boolean_decision(bool(failed), all=False):
            if not failed:
                raise CheckpointWriteError(f"{filepath}: not written by rank 0 (its error is in its log)")
            e = failed[0]  # a full or read-only disk: no partial file stays, the last good one is kept
            if os.path.exists(tmp):
                os.unlink(tmp)
            err = output_error(filepath, e)
            if err is e:
                raise e
            raise err from e
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_checkpoint_saved = filepath


def build_trainer(cfg: DictConfig, out: Path, callbacks: list | None = None) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = []
    if cfg.logging.csv:
        loggers.append(CSVLogger(str(out), name="logs", version="csv"))
    if cfg.logging.tensorboard:
        loggers.append(TensorBoardLogger(str(out), name="logs", version="tensorboard"))
    ck = cfg.checkpoint
    cbs = [AtomicCheckpoint(dirpath=str(out / "checkpoints"), filename="last", save_last=False,
                           every_n_train_steps=ck.every_n_train_steps, save_on_train_epoch_end=True,
                           enable_version_counter=False)]
    if cfg.module.validation_metrics and ck.monitor:
        cbs.append(AtomicCheckpoint(dirpath=str(out / "checkpoints"), filename="best-{epoch:02d}",
                                   monitor=ck.monitor, mode=ck.mode, save_top_k=1, auto_insert_metric_name=False))
    cbs.append(PreemptionCheckpoint(out / "checkpoints"))
    cbs += list(callbacks or [])
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=cbs, default_root_dir=str(out))


def train(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Run training as configured; returns paths of what it wrote and the last validation metrics.
    ``torch_threads`` applies while it runs; the process's thread count is restored afterwards."""
    with running(cfg, TRAIN_CHECKS):
        return _train(cfg, callbacks)


def _train(cfg: DictConfig, callbacks: list | None) -> dict:
    L.seed_everything(int(cfg.seed), workers=True)
    out = output_dir(cfg)
    check_not_input(out, [OmegaConf.select(cfg, "data.root")], "hydra.run.dir", "data.root")
    ensure_dir(out)
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path and cfg.get("resume", True) and (own := resume_checkpoint(out)) is not None:
        ckpt_path = str(own)
        log.info("resuming from the run folder's own checkpoint %s (ckpt_path not given)", own)
    if ckpt_path:
        check_checkpoint_file(ckpt_path)
    datamodule = instantiate(cfg.data, seed=int(cfg.seed))
    module = DetectorModule(model_cfg=OmegaConf.to_container(cfg.model, resolve=True), **cfg.module)
    trainer = build_trainer(cfg, out, callbacks)
    if trainer.is_global_zero:  # every rank runs this; one writes
        OmegaConf.save(cfg, out / "train_config.yaml", resolve=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    last = out / "checkpoints" / "last.ckpt"
    result = {"output_dir": str(out), "last_checkpoint": str(last) if last.is_file() else None,
              "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}}
    best = [c for c in trainer.callbacks if getattr(c, "monitor", None)]
    if best and best[0].best_model_path:
        result["best_checkpoint"] = best[0].best_model_path
    if cfg.logging.plot and cfg.logging.csv and trainer.is_global_zero:
        csv_path = out / "logs" / "csv" / "metrics.csv"
        if csv_path.is_file():
            from detector.plots import plot_learning_curves

            result["learning_curves"] = str(plot_learning_curves({"run": csv_path}, out / "learning_curves.png"))
    if trainer.is_global_zero:
        if result["last_checkpoint"] is None:
            log.warning("nothing was trained (no training batch ran): no checkpoint was written")
        log.info("training done: %s", result)
        print(f"outputs: {out}")
    return result


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
@user_errors(prefix="train")
def main(cfg: DictConfig) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        train(cfg)
    except (Preempted, SIGTERMException) as e:  # SIGTERMException: a signal before the first step
        log.warning("training %s; run the same command again to resume (exit status %d)",
                    e if isinstance(e, Preempted) else "stopped by SIGTERM before its first step", EXIT_PREEMPTED)
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    register_resolvers()
    main()
