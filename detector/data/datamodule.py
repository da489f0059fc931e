"""The LightningDataModule: training clips, and segments streamed in order for validation/test/predict.

- ``train_dataloader``: ``ClipDataset`` (augmented) + ``ClipSampler`` (shuffled, DDP-aware, whole clips
  per rank, the same count on every rank) -> ``ClipBatch`` of ``clip_length`` frames x ``batch_size`` clips.
  Clip order and augmentation are functions of ``(seed, epoch, clip)`` only: the same for any number of
  workers, and repeated by a run resumed at an epoch boundary.
- ``val/test/predict_dataloader``: ``SegmentDataset`` -> one ``FrameBatch`` per step (batch size 1), every
  frame of this rank's whole segments in order, ``reset`` at segment starts and on gaps. Under DDP the
  segments are split across ranks whole, so ranks may run different numbers of steps: do not sync
  across ranks per step (no ``sync_dist`` on step-level logs), reduce metrics at epoch end. A rank that
  owns no segment (more ranks than segments) validates one ``NoFrames`` item instead of an empty loader,
  which Lightning refuses and whose rank would skip the epoch-end merge (and DDP's buffer broadcast at the
  first validation step) that the others wait in.

Boxes: training drops boxes whose centre lies outside ``point_range`` (unless
``keep_boxes_outside_range``); the streamed splits keep them by default (``eval_keep_boxes_outside_range``)
so that metrics count every labelled object of ``classes``, as the official evaluation does.

The Trainer must run with ``use_distributed_sampler=False`` so that Lightning keeps these samplers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightning as L
from torch.utils.data import DataLoader, SequentialSampler

from detector.data.augment import AugmentConfig
from detector.data.clips import DEFAULT_CLASSES, ClipDataset, SegmentDataset
from detector.data.frame_store import check_store_splits
from detector.data.collate import collate_clips, collate_stream
from detector.data.sampler import ClipSampler, distributed_context


@dataclass
class NoFrames:
    """The one item of the validation loader of a DDP rank that owns no segment of the split: its
    ``validation_step`` streams nothing, and the rank still reaches the collectives of the others."""

    split: str
    rank: int


def _collate_no_frames(items: Sequence[NoFrames]) -> NoFrames:
    return items[0]


class ClipDataModule(L.LightningDataModule):
    """Frame store at ``root`` (``root/<split>/<segment>/...``); see the module docstring.

    ``augment``: an ``AugmentConfig``, a mapping of its fields (Hydra), or None. ``stride`` defaults to
    ``clip_length`` (non-overlapping clips). ``predict_split`` None means the test split.
    """

    def __init__(self, root: str | os.PathLike, clip_length: int = 4, batch_size: int = 2, num_workers: int = 0,
                 augment: AugmentConfig | Mapping | None = None, stride: int | None = None,
                 max_gap_s: float | None = 0.5, point_range: Sequence[float] | None = None,
                 classes: Sequence[int] | None = DEFAULT_CLASSES, keep_boxes_outside_range: bool = False,
                 eval_keep_boxes_outside_range: bool = True, train_split: str = "training", val_split: str = "validation", test_split: str = "validation",
                 predict_split: str | None = None, seed: int = 0, drop_last: bool = False,
                 pin_memory: bool = False, persistent_workers: bool = False) -> None:
        super().__init__()
        self.root = os.fspath(root)
        self.clip_length = int(clip_length)
        self.stride = None if stride is None else int(stride)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = AugmentConfig.from_any(augment)
        self.max_gap_s = None if max_gap_s is None else float(max_gap_s)
        self.point_range = None if point_range is None else [float(v) for v in point_range]
        self.classes = None if classes is None else [int(c) for c in classes]
        self.keep_boxes_outside_range = bool(keep_boxes_outside_range)
        self.eval_keep_boxes_outside_range = bool(eval_keep_boxes_outside_range)
        self.splits = {"train": train_split, "val": val_split, "test": test_split,
                       "predict": predict_split or test_split}
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.train_set: ClipDataset | None = None
        self.stream_sets: dict[str, SegmentDataset] = {}

    # ----------------------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return distributed_context(trainer.world_size, trainer.global_rank)
        return distributed_context()

    def _frame_kwargs(self, stream: bool = False) -> dict:
        keep = self.eval_keep_boxes_outside_range if stream else self.keep_boxes_outside_range
        return dict(max_gap_s=self.max_gap_s, point_range=self.point_range, classes=self.classes,
                    keep_boxes_outside_range=keep)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",),
                  None: ("train", "val", "test")}[stage]
        check_store_splits(self.root, [self.splits[name] for name in wanted])  # no segment in two splits
        if "train" in wanted and self.train_set is None:
            self.train_set = ClipDataset(self.root, self.splits["train"], clip_length=self.clip_length,
                                         stride=self.stride, augment=self.augment, seed=self.seed,
                                         **self._frame_kwargs())
        num_replicas, rank = self._rank()
        for name in wanted:
            if name != "train" and name not in self.stream_sets:
                self.stream_sets[name] = SegmentDataset(self.root, self.splits[name], num_replicas=num_replicas,
                                                        rank=rank, **self._frame_kwargs(stream=True))

    def _loader_kwargs(self) -> dict:
        return dict(num_workers=self.num_workers, pin_memory=self.pin_memory,
                    persistent_workers=self.persistent_workers)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        num_replicas, rank = self._rank()
        sampler = ClipSampler(self.train_set, shuffle=True, seed=self.seed, num_replicas=num_replicas, rank=rank,
                              drop_last=self.drop_last, with_epoch=True)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_clips,
                          drop_last=self.drop_last, **self._loader_kwargs())

    def _stream_loader(self, name: str) -> DataLoader:
        if name not in self.stream_sets:
            self.setup({"val": "validate", "test": "test", "predict": "predict"}[name])
        ds = self.stream_sets[name]
        num_replicas, rank = self._rank()
        if len(ds) == 0 and num_replicas > 1 and name == "val":
            return DataLoader([NoFrames(self.splits[name], rank)], batch_size=1, collate_fn=_collate_no_frames)
        return DataLoader(ds, batch_size=1, sampler=SequentialSampler(ds), collate_fn=collate_stream,
                          **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self._stream_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._stream_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._stream_loader("predict")


__all__ = ["ClipDataModule", "NoFrames"]
