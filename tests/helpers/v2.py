"""Waymo v2 test data: synthesized segments written in both formats, and rewrites of component files
(shuffled rows, other row groups, other writer settings and column types) with pyarrow.

    from tests.helpers.v2 import synth_pair, rewrite_component
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.synth_segment import SegmentConfig, synthesize_segment
from data_tools.waymo_v2_writer import write_v2_segment
from detector.data.waymo_reader import parse_frame
from detector.data.waymo_v2 import V2Segment


def synth_pair(root: Path, frames: int = 4, seed: int = 3, split: str = "training", row_group_frames: int = 2,
               **options) -> tuple[list, V2Segment]:
    """Synthesize one segment; return its v1 ``dataset_pb2.Frame`` protos and the same frames written
    as v2 components under ``root/split``."""
    protos = [parse_frame(r) for r, _ in synthesize_segment(SegmentConfig(frames=frames, **options), seed)]
    write_v2_segment(protos, root, split, row_group_frames=row_group_frames)
    return protos, V2Segment(Path(root), split, protos[0].context.name)


def rewrite_component(path: Path, transform=None, row_group_size: int | None = None, **write_options) -> pa.Table:
    """Read ``path``, apply ``transform(table) -> table``, write it back in place (row groups of
    ``row_group_size`` rows; other ``pq.write_table`` options as given). Returns the written table."""
    table = pq.read_table(path)
    if transform is not None:
        table = transform(table)
    pq.write_table(table, path, row_group_size=row_group_size, **write_options)
    return table


def shuffle_rows(seed: int):
    def fn(table: pa.Table) -> pa.Table:
        return table.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))
    return fn


def replace_column(name: str, fn):
    """A transform that replaces column ``name`` by ``fn(column)``."""
    def transform(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index(name)
        return table.set_column(i, name, fn(table.column(name)))
    return transform
