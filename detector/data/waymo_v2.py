"""Waymo Open Dataset v2 (Apache Parquet components) -> ``Frame``, with pyarrow only (no TensorFlow).

Layout: ``<root>/<split>/<component>/<segment_context_name>.parquet``. A segment's frames are the
rows of ``vehicle_pose`` (one a frame), in timestamp order (v2 has no frame index); for each frame
the ``lidar`` rows of every laser in ``lidar_calibration`` and, for TOP, the ``lidar_pose`` row are
looked up by their keys ``(key.frame_timestamp_micros, key.laser_name)`` - never by row order or by
row group - and ``lidar_box`` rows give the labels (file order within a frame). Points come from the
same conversion as the v1 reader (``range_image.frame_points``): both returns, rolling-shutter
compensation of TOP from its pixel pose (which return 2 shares), NLZ flags from channel 3.

Memory: only the needed columns are read. The small components are read whole; ``lidar`` and
``lidar_pose`` (~1 GB of floats for a 200-frame segment) are streamed out of their row groups a few
rows at a time and kept while a coming frame needs them (``_BatchCache``), so memory holds a few
frames' range images whatever the segment length, row-group size or row order. Null rules of the released files: null speed and
acceleration (a label without metadata) read as NaN, null difficulty as 0 (UNKNOWN), a null point
count as 0, a null beam-inclination list as uniform beams, a null return 2 as no second return.
Integer keys of any width, float or double transforms, and both list child names (``item``,
``element``) read the same. A missing, truncated or malformed file raises ``FrameFormatError``
naming it.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from detector.data import waymo_v2_schema as S
from detector.data.frame import Frame, FrameFormatError
from detector.data.frame_checks import SegmentFrameChecks, check_poses
from detector.data.frame_store import SPLITS
from detector.data.range_image import TOP, LaserCalibration, LaserImages, frame_points, laser_label

#: Folders a v2 split may hold that the reader knows (any one marks a folder as a v2 split).
KNOWN_COMPONENTS = S.COMPONENTS + (S.STATS,)


@dataclass(frozen=True)
class V2Segment:
    """One v2 segment: ``root/split/<component>/name.parquet``."""

    root: Path
    split: str
    name: str

    def path(self, component: str) -> Path:
        return self.root / self.split / component / f"{self.name}.parquet"

    @property
    def labeled(self) -> bool:
        """Labels are required except in the test split (which has none)."""
        return self.split not in S.UNLABELED_SPLITS

    def components(self) -> tuple[str, ...]:
        """Components the reader opens: the required ones, plus ``lidar_box`` where labeled or present."""
        if self.labeled or self.path(S.LIDAR_BOX).is_file():
            return S.COMPONENTS
        return tuple(c for c in S.COMPONENTS if c != S.LIDAR_BOX)

    def missing(self) -> list[Path]:
        return [self.path(c) for c in self.components() if not self.path(c).is_file()]

    def num_frames(self) -> int | None:
        """Frames of the segment (rows of ``vehicle_pose``, one a frame) from the file's footer alone; None
        when that file is missing or unreadable (reading the frames then names the problem)."""
        try:
            return pq.ParquetFile(self.path(S.VEHICLE_POSE)).metadata.num_rows
        except (OSError, pa.ArrowException):
            return None

    def frames(self, second_return: bool = True, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        return iter_frames(self, second_return=second_return, start=start, stop=stop)

    def __str__(self) -> str:
        return f"{self.root / self.split}/<component>/{self.name}.parquet"


def is_v2_split(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (a split folder) holds v2 component folders."""
    folder = Path(folder)
    return any((folder / c).is_dir() for c in KNOWN_COMPONENTS)


def is_v2_root(root: str | os.PathLike) -> bool:
    return any(is_v2_split(Path(root) / s) for s in SPLITS)


def split_segments(root: str | os.PathLike, split: str) -> list[V2Segment]:
    """Segments of one split: every name that has a file in any component the reader uses, sorted, so
    that a segment missing from one component is still listed (and fails, naming the file)."""
    folder = Path(root) / split
    names = {p.stem for c in S.COMPONENTS if (folder / c).is_dir() for p in (folder / c).glob("*.parquet")
             if not p.name.startswith(".")}
    return [V2Segment(Path(root), split, n) for n in sorted(names)]


def find_segments(root: str | os.PathLike) -> list[V2Segment]:
    """Every segment of a v2 root, splits in Waymo's order."""
    return [s for split in SPLITS if is_v2_split(Path(root) / split) for s in split_segments(root, split)]


def segment_from_path(path: str | os.PathLike) -> V2Segment | None:
    """The segment of one component file (``root/split/component/name.parquet``), or of
    ``root/split/name`` (a split folder and a segment name); None when ``path`` is neither."""
    path = Path(path)
    if path.suffix == ".parquet" and path.parent.name in KNOWN_COMPONENTS:
        return V2Segment(path.parent.parent.parent, path.parent.parent.name, path.stem)
    if not path.exists() and is_v2_split(path.parent):
        seg = V2Segment(path.parent.parent, path.parent.name, path.name)
        if any(seg.path(c).exists() for c in KNOWN_COMPONENTS):
            return seg
    return None


# --- reading columns --------------------------------------------------------------------------------

class _File:
    """One component file, opened with errors that name it."""

    def __init__(self, segment: V2Segment, component: str):
        self.component = component
        self.path = segment.path(component)
        if not self.path.is_file():
            raise FrameFormatError(f"segment {segment.name}: no {component} file {self.path}")
        try:
            self.file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise FrameFormatError(f"{self.path}: not a readable parquet file ({e})") from e
        self.columns = set(self.file.schema_arrow.names)
        meta = self.file.metadata
        self.row_group_rows = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], np.int64)

    def require(self, columns) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise FrameFormatError(f"{self.path}: no column {missing[0]!r} (a {self.component} file has it; "
                                   f"this one has {len(self.columns)} columns: {sorted(self.columns)[:8]} ...)")

    def read(self, columns: list[str], row_group: int | None = None) -> pa.Table:
        self.require(columns)
        try:
            if row_group is None:
                return self.file.read(columns=columns, use_threads=False)
            return self.file.read_row_group(row_group, columns=columns, use_threads=False)
        except (pa.ArrowException, OSError) as e:
            where = "" if row_group is None else f" row group {row_group}"
            raise FrameFormatError(f"{self.path}{where}: unreadable ({e})") from e

    def close(self) -> None:
        self.file.close()


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        return col.cast(col.type.value_type)
    return col


def _no_nulls(col: pa.ChunkedArray, name: str, f: _File) -> None:
    if col.null_count:
        row = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
        raise FrameFormatError(f"{f.path}: column {name!r} is null in row {row}")


def _int_column(table: pa.Table, name: str, f: _File, null: int | None = None) -> np.ndarray:
    col = _plain(table.column(name))
    if null is None:
        _no_nulls(col, name, f)
    elif col.null_count:
        col = pc.fill_null(col, null)
    if not pa.types.is_integer(col.type):
        raise FrameFormatError(f"{f.path}: column {name!r} is {col.type}, expected an integer")
    return col.to_numpy().astype(np.int64)


def _float_column(table: pa.Table, name: str, f: _File, required: bool = True) -> np.ndarray:
    col = _plain(table.column(name))
    if required:
        _no_nulls(col, name, f)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise FrameFormatError(f"{f.path}: column {name!r} is {col.type}, expected a number")
    return col.to_numpy().astype(np.float64)  # nulls (where allowed) become NaN


def _string_column(table: pa.Table, name: str, f: _File) -> np.ndarray:
    col = _plain(table.column(name))
    _no_nulls(col, name, f)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise FrameFormatError(f"{f.path}: column {name!r} is {col.type}, expected a string")
    return np.array(col.to_pylist(), dtype=object)


def _check_segment(table: pa.Table, f: _File, name: str) -> None:
    values = _plain(table.column(S.KEY_SEGMENT))
    _no_nulls(values, S.KEY_SEGMENT, f)
    others = [v for v in pc.unique(values).to_pylist() if v != name]
    if others:
        raise FrameFormatError(f"{f.path}: rows of segment {others[0]!r}; the file name says {name!r}")


def _list_values(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat values and per-row lengths of a list, large-list or fixed-size-list array (None: fixed)."""
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy(zero_copy_only=False), None
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        offsets = array.offsets.to_numpy()
        return array.flatten().to_numpy(zero_copy_only=False), np.diff(offsets)
    raise TypeError(f"{array.type} is not a list type")


def _fixed_rows(table: pa.Table, name: str, size: int, f: _File) -> np.ndarray:
    """(rows, size) float64 of a list column whose every row holds ``size`` numbers (a 4x4 transform)."""
    col = table.column(name)
    _no_nulls(col, name, f)
    array = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    try:
        values, lengths = _list_values(array)
    except TypeError as e:
        raise FrameFormatError(f"{f.path}: column {name!r}: {e}") from e
    n = len(array)
    if (lengths is not None and (lengths != size).any()) or values.size != n * size:
        bad = int(np.flatnonzero(lengths != size)[0]) if lengths is not None and (lengths != size).any() else 0
        raise FrameFormatError(f"{f.path}: column {name!r} row {bad}: expected {size} values")
    return values.astype(np.float64).reshape(n, size)


def _row_list(col: pa.ChunkedArray, row: int) -> np.ndarray | None:
    """One row of a list column as a flat numpy array (zero-copy where the type allows), None if null."""
    scalar = col[row]
    if not scalar.is_valid:
        return None
    return scalar.values.to_numpy(zero_copy_only=False)


def _range_image(table: pa.Table | pa.RecordBatch, prefix: str, row: int, what: str, f: _File) -> np.ndarray | None:
    values = _row_list(table.column(prefix + S.VALUES), row)
    shape = _row_list(table.column(prefix + S.SHAPE), row)
    if values is None:
        return None
    if shape is None or len(shape) != 3 or (np.asarray(shape) < 0).any():
        got = None if shape is None else shape.tolist()
        raise FrameFormatError(f"{f.path}: {what}: shape {got}, expected [H, W, C]")
    shape = tuple(int(d) for d in shape)
    if int(np.prod(shape)) != values.size or shape[2] < 1:
        raise FrameFormatError(f"{f.path}: {what}: {values.size} values do not fill shape {list(shape)}")
    return values.astype(np.float32, copy=False).reshape(shape)


# --- the small components ---------------------------------------------------------------------------

def read_calibrations(f: _File, segment: str) -> list[LaserCalibration]:
    optional = [S.INCLINATION_VALUES] if S.INCLINATION_VALUES in f.columns else []
    t = f.read([S.KEY_SEGMENT, S.KEY_LASER, S.EXTRINSIC, S.INCLINATION_MIN, S.INCLINATION_MAX] + optional)
    _check_segment(t, f, segment)
    names = _int_column(t, S.KEY_LASER, f)
    if len(names) == 0:
        raise FrameFormatError(f"{f.path}: no lidar calibrations")
    if len(set(names.tolist())) != len(names):
        dup = next(n for n in names.tolist() if names.tolist().count(n) > 1)
        raise FrameFormatError(f"{f.path}: laser {laser_label(dup)} is calibrated twice")
    extrinsics = _fixed_rows(t, S.EXTRINSIC, 16, f).reshape(-1, 4, 4)
    check_poses(extrinsics, (f"{f.path}: row {i} (laser {laser_label(n)}): {S.EXTRINSIC}"
                             for i, n in enumerate(names.tolist())))
    lo, hi = _float_column(t, S.INCLINATION_MIN, f), _float_column(t, S.INCLINATION_MAX, f)
    values = t.column(S.INCLINATION_VALUES) if optional else None
    out = []
    for i, name in enumerate(names.tolist()):
        incl = _row_list(values, i) if values is not None else None
        out.append(LaserCalibration(int(name), extrinsics[i], None if incl is None else incl.astype(np.float64),
                                    float(lo[i]), float(hi[i])))
    return sorted(out, key=lambda c: c.name)


def read_vehicle_poses(f: _File, segment: str) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps (F,) sorted, poses (F, 4, 4))``: one row a frame."""
    t = f.read([S.KEY_SEGMENT, S.KEY_TIMESTAMP, S.WORLD_FROM_VEHICLE])
    _check_segment(t, f, segment)
    ts = _int_column(t, S.KEY_TIMESTAMP, f)
    poses = _fixed_rows(t, S.WORLD_FROM_VEHICLE, 16, f).reshape(-1, 4, 4)
    order = np.argsort(ts, kind="stable")
    ts, poses = ts[order], poses[order]
    if len(ts) == 0:
        raise FrameFormatError(f"{f.path}: no frames")
    dup = np.flatnonzero(np.diff(ts) == 0)
    if len(dup):
        raise FrameFormatError(f"{f.path}: two rows for frame timestamp {ts[dup[0]]}")
    check_poses(poses, (f"{f.path}: row {r} (frame timestamp {t}): {S.WORLD_FROM_VEHICLE}"
                        for r, t in zip(order.tolist(), ts.tolist())))
    return ts, poses


@dataclass
class V2Labels:
    """One segment's ``lidar_box`` rows as aligned arrays (file row order)."""

    timestamps: np.ndarray  # (M,) int64
    ids: np.ndarray  # (M,) str
    boxes: np.ndarray  # (M, 7) float64 cx, cy, cz, length, width, height, heading
    types: np.ndarray  # (M,) int64
    num_points: np.ndarray  # (M,) int64, null -> 0
    num_top_points: np.ndarray  # (M,) int64, null -> 0
    difficulty: np.ndarray  # (M,) int64 detection difficulty, null -> 0 (UNKNOWN)
    tracking_difficulty: np.ndarray  # (M,) int64, null -> 0
    speed: np.ndarray  # (M, 3) float64, NaN where null (no metadata)
    acceleration: np.ndarray  # (M, 3) float64, NaN where null
    _rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.timestamps, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(self.timestamps[order]) != 0]) if len(order) else []
        bounds = list(starts) + [len(order)]
        self._rows = {int(self.timestamps[order[a]]): order[a:b] for a, b in zip(bounds[:-1], bounds[1:])}

    @classmethod
    def empty(cls) -> "V2Labels":
        z = np.zeros(0, np.int64)
        return cls(z, np.zeros(0, object), np.zeros((0, 7)), z, z, z, z, z, np.zeros((0, 3)), np.zeros((0, 3)))

    def rows(self, timestamp: int) -> np.ndarray:
        return self._rows.get(int(timestamp), np.zeros(0, np.int64))


def read_labels(f: _File, segment: str) -> V2Labels:
    required = [S.KEY_SEGMENT, S.KEY_TIMESTAMP, S.KEY_OBJECT, *S.BOX_FIELDS, S.BOX_TYPE]
    optional = [c for c in (S.BOX_NUM_POINTS, S.BOX_NUM_TOP_POINTS, *S.BOX_SPEED, *S.BOX_ACCELERATION,
                            S.BOX_DIFFICULTY_DETECTION, S.BOX_DIFFICULTY_TRACKING) if c in f.columns]
    t = f.read(required + optional)
    _check_segment(t, f, segment)
    m = t.num_rows

    def ints(name):
        return _int_column(t, name, f, null=0) if name in optional else np.zeros(m, np.int64)

    def vec(names):
        return (np.stack([_float_column(t, n, f, required=False) for n in names], axis=-1) if names[0] in optional
                else np.full((m, 3), np.nan))

    return V2Labels(
        timestamps=_int_column(t, S.KEY_TIMESTAMP, f),
        ids=_string_column(t, S.KEY_OBJECT, f),
        boxes=np.stack([_float_column(t, n, f) for n in S.BOX_FIELDS], axis=-1).reshape(m, 7),
        types=_int_column(t, S.BOX_TYPE, f),
        num_points=ints(S.BOX_NUM_POINTS),
        num_top_points=ints(S.BOX_NUM_TOP_POINTS),
        difficulty=ints(S.BOX_DIFFICULTY_DETECTION),
        tracking_difficulty=ints(S.BOX_DIFFICULTY_TRACKING),
        speed=vec(S.BOX_SPEED),
        acceleration=vec(S.BOX_ACCELERATION),
    )


def read_segment_labels(segment: V2Segment) -> V2Labels:
    """The ``lidar_box`` component of ``segment`` (empty for an unlabeled split without the file)."""
    if S.LIDAR_BOX not in segment.components():
        return V2Labels.empty()
    f = _File(segment, S.LIDAR_BOX)
    try:
        return read_labels(f, segment.name)
    finally:
        f.close()


# --- the large components: rows located by key, row groups streamed ----------------------------------

class _RowIndex:
    """Where each ``(timestamp, laser)`` row of a laser component is: ``(row group, row in group)``."""

    def __init__(self, f: _File, segment: str):
        t = f.read([S.KEY_SEGMENT, S.KEY_TIMESTAMP, S.KEY_LASER])
        _check_segment(t, f, segment)
        ts, lasers = _int_column(t, S.KEY_TIMESTAMP, f), _int_column(t, S.KEY_LASER, f)
        groups = np.repeat(np.arange(len(f.row_group_rows)), f.row_group_rows)
        starts = np.concatenate([[0], np.cumsum(f.row_group_rows)[:-1]]).astype(np.int64)
        if len(groups) != len(ts):
            raise FrameFormatError(f"{f.path}: {len(ts)} rows read, the row groups hold {len(groups)}")
        self.where: dict[tuple[int, int], tuple[int, int]] = {}
        for r, key in enumerate(zip(ts.tolist(), lasers.tolist())):
            if key in self.where:
                raise FrameFormatError(f"{f.path}: two rows for frame timestamp {key[0]}, laser {laser_label(key[1])}")
            g = int(groups[r])
            self.where[key] = (g, r - int(starts[g]))
        self.timestamps = set(ts.tolist())

    def locate(self, f: _File, timestamp: int, laser: int) -> tuple[int, int]:
        try:
            return self.where[(timestamp, laser)]
        except KeyError:
            raise FrameFormatError(f"{f.path}: no row for frame timestamp {timestamp}, laser {laser_label(laser)}") \
                from None


class _BatchCache:
    """Rows of one file in batches of ``batch_rows`` rows, streamed out of their row groups
    (``ParquetFile.iter_batches``: memory holds a batch, not a row group). A batch is kept from when it
    is read until the last frame that needs it; a row group's stream reads forward, keeping the
    batches it passes that a later frame needs, and starts again from the group's first batch when a
    frame needs one it has passed and dropped. Beyond ``capacity`` batches the one needed farthest
    ahead is dropped (read again when needed). Units are ``(row group, batch index)``."""

    def __init__(self, f: _File, columns: list[str], uses: list[set[tuple[int, int]]], capacity: int,
                 batch_rows: int):
        self.f, self.columns, self.uses, self.capacity, self.batch_rows = f, columns, uses, capacity, batch_rows
        self.pending: dict[tuple[int, int], deque[int]] = defaultdict(deque)
        for step, units in enumerate(uses):
            for u in sorted(units):
                self.pending[u].append(step)
        self.batches: dict[tuple[int, int], pa.RecordBatch] = {}
        self.streams: dict[int, tuple[Iterator[pa.RecordBatch], int]] = {}  # group -> (iterator, next batch)
        self.reads = 0  # batches decoded

    def _next_use(self, unit: tuple[int, int]) -> int:
        q = self.pending.get(unit)
        return q[0] if q else 1 << 62

    def _keep(self, unit: tuple[int, int], batch: pa.RecordBatch, need: set) -> None:
        while len(self.batches) >= max(self.capacity, len(need)):
            victims = [u for u in self.batches if u not in need]
            if not victims:
                break
            del self.batches[max(victims, key=self._next_use)]
        self.batches[unit] = batch

    def _stream(self, group: int) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.f.file.iter_batches(batch_size=self.batch_rows, row_groups=[group], columns=self.columns,
                                                use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise FrameFormatError(f"{self.f.path} row group {group}: unreadable ({e})") from e

    def get(self, unit: tuple[int, int], step: int) -> pa.RecordBatch:
        batch = self.batches.get(unit)
        if batch is not None:
            return batch
        group, index = unit
        it, pos = self.streams.get(group, (None, 1 << 62))
        if it is None or pos > index:
            it, pos = self._stream(group), 0
        need = self.uses[step]
        while pos <= index:
            batch = next(it, None)
            expected = min(self.batch_rows, int(self.f.row_group_rows[group]) - pos * self.batch_rows)
            if batch is None or batch.num_rows != expected:
                got = 0 if batch is None else batch.num_rows  # a damaged page can end a stream early, silently
                raise FrameFormatError(f"{self.f.path} row group {group}: unreadable (batch {pos} of "
                                       f"{self.batch_rows} rows has {got}, expected {expected})")
            self.reads += 1
            if pos == index or self.pending.get((group, pos)):
                self._keep((group, pos), batch, need)
            pos += 1
        self.streams[group] = (it, pos)
        return self.batches[unit]

    def finish(self, step: int) -> None:
        for u in self.uses[step]:
            q = self.pending[u]
            while q and q[0] <= step:
                q.popleft()
            if not q:
                self.batches.pop(u, None)
        # a stream no later frame reads from is closed (it holds its row group's buffered bytes)
        for group in [g for g in self.streams if not any(self.pending.get((g, k)) for k in
                                                         range(-(-int(self.f.row_group_rows[g]) // self.batch_rows)))]:
            del self.streams[group]


def iter_frames(segment: V2Segment, second_return: bool = True, start: int = 0, stop: int | None = None,
                batch_rows: int = 5, cache_batches: int = 4,
                nonfinite: dict[int, dict[str, int]] | None = None,
                checks: SegmentFrameChecks | None = None) -> Iterator[Frame]:
    """Frames ``start <= index < stop`` of one v2 segment in timestamp order (``Frame.index`` counts
    all its frames from 0). Points with NaN/inf values are dropped; ``nonfinite``, when given, receives
    ``{frame index: {lidar name: points dropped}}`` for the frames that had any (as the v1 reader does).
    Poses and labels are checked as the v1 reader checks them (``detector.data.frame_checks``; invalid
    labels dropped and counted in ``checks.dropped_labels``).

    Every component file is opened and the small ones read (and checked against each other) before
    the first frame is yielded; range images are then streamed out of their row groups in batches of
    ``batch_rows`` rows, at most ``cache_batches`` batches (or those one frame spans) held at a time.
    """
    name = segment.name
    checks = SegmentFrameChecks() if checks is None else checks
    with ExitStack() as stack:
        files = {}
        for c in segment.components():
            files[c] = _File(segment, c)
            stack.callback(files[c].close)
        calibrations = read_calibrations(files[S.LIDAR_CALIBRATION], name)
        timestamps, poses = read_vehicle_poses(files[S.VEHICLE_POSE], name)
        labels = read_labels(files[S.LIDAR_BOX], name) if S.LIDAR_BOX in files else V2Labels.empty()
        known = set(timestamps.tolist())
        lidar, pose_file = files[S.LIDAR], files[S.LIDAR_POSE]
        lidar_rows, pose_rows = _RowIndex(lidar, name), _RowIndex(pose_file, name)
        for f, stamps in ((lidar, lidar_rows.timestamps), (pose_file, pose_rows.timestamps),
                          (files.get(S.LIDAR_BOX), set(labels.timestamps.tolist()))):
            extra = sorted(stamps - known)
            if extra:
                raise FrameFormatError(f"{f.path}: rows for frame timestamp {extra[0]}, which "
                                       f"{files[S.VEHICLE_POSE].path} does not have")
        names = [c.name for c in calibrations]
        lidar_at = [{n: lidar_rows.locate(lidar, t, n) for n in names} for t in timestamps.tolist()]
        pose_at = [pose_rows.locate(pose_file, t, TOP) if TOP in names else None for t in timestamps.tolist()]
        shown = range(len(timestamps))[start:stop]
        lidar_at, pose_at = [lidar_at[i] for i in shown], [pose_at[i] for i in shown]

        returns = S.LIDAR_RETURN if second_return else S.LIDAR_RETURN[:1]

        def unit(g_row):
            return g_row[0], g_row[1] // batch_rows

        lidar_columns = [p + s for p in returns for s in (S.VALUES, S.SHAPE)]
        pose_columns = [S.POSE_RETURN1 + S.VALUES, S.POSE_RETURN1 + S.SHAPE]
        lidar.require(lidar_columns)
        pose_file.require(pose_columns)
        lidar_cache = _BatchCache(lidar, lidar_columns,
                                  [{unit(x) for x in at.values()} for at in lidar_at], cache_batches, batch_rows)
        pose_cache = _BatchCache(pose_file, pose_columns,
                                 [set() if p is None else {unit(p)} for p in pose_at], cache_batches, batch_rows)
        for step, i in enumerate(shown):
            ts = int(timestamps[i])
            where = f"{name} frame timestamp {ts}"
            lasers = {}
            for n in names:
                g, row = lidar_at[step][n]
                table = lidar_cache.get((g, row // batch_rows), step)
                row %= batch_rows
                images = []
                for k, prefix in enumerate(returns, start=1):
                    img = _range_image(table, prefix, row, f"{where}, laser {laser_label(n)} return {k}", lidar)
                    if img is None:
                        break
                    images.append(img)
                pixel_pose = None
                if n == TOP:
                    pg, prow = pose_at[step]
                    pixel_pose = _range_image(pose_cache.get((pg, prow // batch_rows), step), S.POSE_RETURN1,
                                              prow % batch_rows,
                                              f"{where}, laser TOP pose", pose_file)
                lasers[n] = LaserImages(n, images, pixel_pose)
            dropped: dict[str, int] = {}
            points, nlz = frame_points(calibrations, lasers, poses[i], f"{lidar.path}: {where}", second_return,
                                       pose_what="lidar_pose row", nonfinite=dropped)
            if dropped and nonfinite is not None:
                nonfinite[i] = dropped
            del lasers
            lidar_cache.finish(step)
            pose_cache.finish(step)
            rows = labels.rows(ts)
            yield checks(Frame(
                points=points, pose=poses[i], timestamp_micros=ts, segment=name, index=i,
                boxes=labels.boxes[rows].astype(np.float32), types=labels.types[rows],
                ids=labels.ids[rows].astype(str) if len(rows) else np.zeros(0, "<U64"),
                num_points=labels.num_points[rows], difficulty=labels.difficulty[rows], nlz=nlz,
            ), f"{files[S.LIDAR_BOX].path if S.LIDAR_BOX in files else lidar.path}: {where}")


__all__ = [
    "KNOWN_COMPONENTS", "V2Segment", "V2Labels", "is_v2_split", "is_v2_root", "split_segments", "find_segments",
    "segment_from_path", "read_calibrations", "read_vehicle_poses", "read_labels", "read_segment_labels",
    "iter_frames",
]
