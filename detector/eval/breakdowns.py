"""Breakdown generators of the Waymo detection metrics: shard ids and the official shard names.

Supported: ONE_SHARD, ALL_BUT_SIGN, OBJECT_TYPE, RANGE and SIZE, i.e. every generator that shards
ground truth and predictions alike. The ground-truth-only ones (VELOCITY, CAMERA) change what
counts as a false positive and are not implemented; asking for them raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np
from waymo_open_dataset import label_pb2
from waymo_open_dataset.protos import breakdown_pb2

Breakdown = breakdown_pb2.Breakdown
Label = label_pb2.Label

#: Waymo object types in shard order (Label.Type 1..4).
OBJECT_TYPES = (Label.TYPE_VEHICLE, Label.TYPE_PEDESTRIAN, Label.TYPE_SIGN, Label.TYPE_CYCLIST)
NUM_TYPES = len(OBJECT_TYPES)
RANGE_EDGES = (30.0, 50.0)
RANGE_NAMES = ("[0, 30)", "[30, 50)", "[50, +inf)")
SIZE_LARGE = 7.0
SIZE_NAMES = ("small", "large")

SUPPORTED = (Breakdown.ONE_SHARD, Breakdown.ALL_BUT_SIGN, Breakdown.OBJECT_TYPE, Breakdown.RANGE, Breakdown.SIZE)


def check_supported(generator: int) -> None:
    if generator not in SUPPORTED:
        name = Breakdown.GeneratorId.Name(generator) if generator in Breakdown.GeneratorId.values() else generator
        supported = ", ".join(Breakdown.GeneratorId.Name(g) for g in SUPPORTED)
        raise ValueError(f"breakdown generator {name} is not supported (supported: {supported})")


def num_shards(generator: int) -> int:
    check_supported(generator)
    return {
        Breakdown.ONE_SHARD: 1,
        Breakdown.ALL_BUT_SIGN: 2,
        Breakdown.OBJECT_TYPE: NUM_TYPES,
        Breakdown.RANGE: 3 * NUM_TYPES,
        Breakdown.SIZE: 2 * NUM_TYPES,
    }[generator]


def shard_name(generator: int, shard: int) -> str:
    """The official name of one shard, e.g. ``RANGE_TYPE_VEHICLE_[30, 50)``."""
    check_supported(generator)
    gen = Breakdown.GeneratorId.Name(generator)
    if generator == Breakdown.ONE_SHARD:
        return gen
    if generator == Breakdown.ALL_BUT_SIGN:
        return ("ALL_BUT_SIGN", "SIGN")[shard]
    if generator == Breakdown.OBJECT_TYPE:
        return f"{gen}_{Label.Type.Name(OBJECT_TYPES[shard])}"
    per_type = 3 if generator == Breakdown.RANGE else 2
    names = RANGE_NAMES if generator == Breakdown.RANGE else SIZE_NAMES
    return f"{gen}_{Label.Type.Name(OBJECT_TYPES[shard // per_type])}_{names[shard % per_type]}"


def shard_ids(generator: int, boxes: np.ndarray, types: np.ndarray) -> np.ndarray:
    """(N,) shard of each object for one generator; -1 for objects in no shard (TYPE_UNKNOWN)."""
    check_supported(generator)
    types = np.asarray(types, dtype=np.int64)
    known = (types >= 1) & (types <= NUM_TYPES)
    if generator == Breakdown.ONE_SHARD:
        shard = np.zeros(len(types), dtype=np.int64)
    elif generator == Breakdown.ALL_BUT_SIGN:
        shard = (types == Label.TYPE_SIGN).astype(np.int64)
    elif generator == Breakdown.OBJECT_TYPE:
        shard = types - 1
    elif generator == Breakdown.RANGE:
        dist = np.sqrt((boxes[:, :3] ** 2).sum(axis=1))
        shard = 3 * (types - 1) + (dist >= RANGE_EDGES[0]) + (dist >= RANGE_EDGES[1])
    else:  # SIZE
        size = boxes[:, 3:6].max(axis=1) if len(boxes) else np.zeros(0)
        shard = 2 * (types - 1) + (size >= SIZE_LARGE)
    return np.where(known, shard, -1).astype(np.int64)
