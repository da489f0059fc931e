"""The LightningModule: clips in, losses out for training; segments streamed for validation.

Validation runs the detector exactly as evaluation does: frame by frame over whole segments with
the temporal state carried (``detector.streaming``), and scores the detections with the Waymo
metrics (``detector.eval``). Under DDP every rank streams its own whole segments; the metric counts
are merged across ranks at epoch end.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from detector.data.batch import ClipBatch, FrameBatch
from detector.data.datamodule import NoFrames
from detector.models import instantiate_model
from detector.streaming import SegmentBuffer, Stream
from detector.version import CHECKPOINT_KEY, __version__

#: The breakdown that drives model selection and the progress bar.
MAIN_METRIC = "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"


class DetectorModule(L.LightningModule):
    """Wraps a ``Detector`` built from ``model_cfg`` (kept in the checkpoint so that evaluation can
    rebuild the exact model from the checkpoint alone)."""

    def __init__(self, model_cfg: dict, lr: float = 2e-3, weight_decay: float = 1e-2,
                 scheduler: str = "onecycle", warmup_pct: float = 0.1, grad_clip: float | None = None,
                 validation_metrics: bool = True) -> None:
        super().__init__()
        if isinstance(model_cfg, DictConfig):
            model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
        self.save_hyperparameters()
        self.model = instantiate_model(model_cfg)
        self._metrics = None
        self._val_stream: Stream | None = None
        self._val_losses: list[float] = []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The package version that wrote the checkpoint, beside its model config (``detector.checkpoints.
        checkpoint_version`` reads it)."""
        checkpoint[CHECKPOINT_KEY] = __version__

    # -- training ---------------------------------------------------------------------------------
    def forward(self, clip: ClipBatch, decode: bool = False):
        return self.model(clip, decode=decode)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, (ClipBatch, FrameBatch)):
            return batch.to(device)
        if isinstance(batch, NoFrames):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: ClipBatch, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        losses = out.losses
        bs = batch.batch_size
        self.log("train/loss", losses["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        for k, v in losses.items():
            if k != "loss":
                self.log(f"train/{k}", v, on_step=True, on_epoch=False, batch_size=bs)
        opt = self.optimizers(use_pl_optimizer=False)
        self.log("lr", opt.param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=bs)
        return losses["loss"]

    def on_before_optimizer_step(self, optimizer) -> None:
        # the total gradient norm before Lightning clips it (trainer.gradient_clip_val): how often and by
        # how much a loss term's gradient drives the clipping shows in the learning curves
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr)
        if hp.scheduler == "none":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        if hp.scheduler == "onecycle":
            # OneCycleLR divides by its warm-up length (warmup_pct * total_steps - 1): a short run (e.g.
            # trainer.max_steps=10 at warmup_pct 0.1) must still have a warm-up of at least one step
            total = max(total, 2, math.floor(1.0 / hp.warmup_pct) + 1 if hp.warmup_pct > 0 else 2)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=total,
                                                        pct_start=hp.warmup_pct, anneal_strategy="cos",
                                                        div_factor=10.0, final_div_factor=100.0)
        elif hp.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        else:
            raise ValueError(f"unknown scheduler {hp.scheduler!r} (onecycle, cosine, none)")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- validation: streaming over whole segments --------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        from detector.eval import WaymoMetrics

        self._metrics = WaymoMetrics()
        # a bidirectional model sees whole segments (a segment's steps come when it ends)
        bidirectional = getattr(self.model, "bidirectional", False)
        self._val_stream = SegmentBuffer(self.model, device=None) if bidirectional else Stream(self.model, device=None)
        self._val_losses = []

    def validation_step(self, frame: FrameBatch | NoFrames, batch_idx: int) -> None:
        if isinstance(frame, NoFrames):  # a DDP rank without validation segments: nothing to stream
            return
        # with labels, also the loss of this frame given the carried state (no gradient)
        with_losses = bool(len(frame.boxes))
        if isinstance(self._val_stream, SegmentBuffer):
            self._record(self._val_stream.add(frame, return_losses=with_losses))
        else:
            self._record([self._val_stream.step(frame, return_losses=with_losses)])

    def _record(self, steps) -> None:
        for step in steps:
            if step.losses is not None:
                self._val_losses.append(float(step.losses["loss"]))
            if self.hparams.validation_metrics:
                self._metrics.add_result(step.result())

    def on_validation_epoch_end(self) -> None:
        if isinstance(self._val_stream, SegmentBuffer):
            self._record(self._val_stream.finish())
        metrics = self._metrics
        losses = self._val_losses
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (metrics, losses))
            metrics = gathered[0][0]
            for other, _ in gathered[1:]:
                metrics.merge(other)
            losses = [v for _, ls in gathered for v in ls]
        if losses:
            self.log("val/loss", sum(losses) / len(losses))
        if self.hparams.validation_metrics:
            results = metrics.compute()
            for key in ("OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1", "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2",
                        "OBJECT_TYPE_TYPE_PEDESTRIAN_LEVEL_1", "OBJECT_TYPE_TYPE_CYCLIST_LEVEL_1"):
                if key in results:
                    short = key.replace("OBJECT_TYPE_TYPE_", "").lower()
                    self.log(f"val/AP_{short}", results[key]["AP"], prog_bar=key == MAIN_METRIC)
                    self.log(f"val/APH_{short}", results[key]["APH"])
        self._metrics = None
        self._val_stream = None
