"""The metrics configuration: the official ``metrics_pb2.Config`` and its validated, typed form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from waymo_open_dataset import label_pb2
from waymo_open_dataset.protos import breakdown_pb2, metrics_pb2

from detector.eval import breakdowns

Label = label_pb2.Label
Breakdown = breakdown_pb2.Breakdown

#: IoU thresholds indexed by Label.Type (unknown, vehicle, pedestrian, sign, cyclist).
DEFAULT_IOU_THRESHOLDS = (0.0, 0.7, 0.5, 0.5, 0.5)


def default_config() -> metrics_pb2.Config:
    """The official default 3D detection config: OBJECT_TYPE and RANGE breakdowns at LEVEL_1 and
    LEVEL_2, Hungarian matching, IoU 0.7 vehicle / 0.5 others, score cutoffs 0, 0.01, ..., 0.99, 1."""
    config = metrics_pb2.Config()
    for generator in (Breakdown.OBJECT_TYPE, Breakdown.RANGE):
        config.breakdown_generator_ids.append(generator)
        config.difficulties.add().levels.extend([Label.LEVEL_1, Label.LEVEL_2])
    config.matcher_type = metrics_pb2.MatcherProto.TYPE_HUNGARIAN
    config.iou_thresholds.extend(DEFAULT_IOU_THRESHOLDS)
    config.box_type = Label.Box.TYPE_3D
    # The official tool computes i * 0.01 in double and stores it as float.
    config.score_cutoffs.extend([i * 0.01 for i in range(100)] + [1.0])
    return config


@dataclass(frozen=True)
class MetricsSpec:
    """What the computation needs from a config, validated once."""

    generators: tuple[int, ...]
    levels: tuple[tuple[int, ...], ...]  # difficulty levels per generator
    score_cutoffs: np.ndarray  # (C,) float32, non-decreasing
    iou_thresholds: np.ndarray  # (5,) float32 indexed by Label.Type
    use_height: bool  # TYPE_3D (True) or TYPE_2D (False)
    desired_recall_delta: float
    min_precision: float
    min_heading_accuracy: float
    breakdown_names: tuple[str, ...]  # official names, generator x shard x level order

    @classmethod
    def from_config(cls, config: metrics_pb2.Config | None = None) -> MetricsSpec:
        config = default_config() if config is None else config
        if not isinstance(config, metrics_pb2.Config):
            raise TypeError(f"config must be a metrics_pb2.Config, got {type(config).__name__}")
        if config.matcher_type != metrics_pb2.MatcherProto.TYPE_HUNGARIAN:
            raise ValueError("config.matcher_type: only TYPE_HUNGARIAN is supported")
        if config.box_type not in (Label.Box.TYPE_3D, Label.Box.TYPE_2D):
            raise ValueError("config.box_type: only TYPE_3D and TYPE_2D are supported")
        if config.let_metric_config.enabled:
            raise ValueError("config.let_metric_config: LET metrics are not supported")
        if len(config.score_cutoffs) == 0:
            raise ValueError("config.score_cutoffs must be set (estimated cutoffs are not supported)")
        cutoffs = np.asarray(config.score_cutoffs, dtype=np.float32)
        if np.any(np.diff(cutoffs) < 0):
            raise ValueError("config.score_cutoffs must be non-decreasing")
        thresholds = np.asarray(config.iou_thresholds, dtype=np.float32)
        if len(thresholds) != breakdowns.NUM_TYPES + 1:
            raise ValueError(f"config.iou_thresholds needs {breakdowns.NUM_TYPES + 1} values (one per Label.Type)")
        if np.any(thresholds[1:] <= 0) or np.any(thresholds > 1):
            raise ValueError("config.iou_thresholds of the object types must lie in (0, 1]")
        if len(config.breakdown_generator_ids) == 0:
            raise ValueError("config.breakdown_generator_ids is empty")
        if len(config.difficulties) != len(config.breakdown_generator_ids):
            raise ValueError("config.difficulties needs one entry per breakdown generator")
        generators = tuple(int(g) for g in config.breakdown_generator_ids)
        levels = []
        for d in config.difficulties:
            lv = tuple(int(x) for x in d.levels) or (Label.LEVEL_2,)
            levels.append(lv)
        names = []
        for gen, lv in zip(generators, levels):
            for shard in range(breakdowns.num_shards(gen)):
                for level in lv:
                    names.append(f"{breakdowns.shard_name(gen, shard)}_{Label.DifficultyLevel.Name(level)}")
        return cls(
            generators=generators,
            levels=tuple(levels),
            score_cutoffs=cutoffs,
            iou_thresholds=thresholds,
            use_height=config.box_type == Label.Box.TYPE_3D,
            desired_recall_delta=float(np.float32(config.desired_recall_delta)),
            min_precision=float(np.float32(config.min_precision)),
            min_heading_accuracy=float(np.float32(config.min_heading_accuracy)),
            breakdown_names=tuple(names),
        )
