"""v1 frames -> Waymo Open Dataset v2 components (Apache Parquet), the way the released files hold them.

``V2SegmentWriter`` takes the ``dataset_pb2.Frame`` protos of one segment, in order, and writes
``<root>/<split>/<component>/<segment>.parquet`` for the components that LiDAR detection uses
(``lidar``, ``lidar_calibration``, ``lidar_pose``, ``vehicle_pose``, ``lidar_box``) and ``stats``, with
the column names and Arrow types of the ``waymo_open_dataset.v2`` component dataclasses and the
null rules of the official v1 -> v2 extraction: a label without ``metadata`` has null speed and
acceleration, one with neither difficulty set has both difficulty columns null, a beam-inclination
list is null when the calibration has none, and return 2 is null when the laser has no second return.

Frames are written in row groups of ``row_group_frames`` frames, so memory holds one row group and
files have several (as the released ``lidar`` files do). Every file is written under a hidden
temporary name in its folder and renamed when the segment is complete; ``abort`` removes them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from waymo_open_dataset import dataset_pb2

from detector.atomic import CloseOrAbort
from detector.data import waymo_v2_schema as S
from detector.data.waymo_reader import decode_matrix_float

_RANGE_IMAGE = (pa.list_(pa.float32()), pa.list_(pa.int32(), 3))
_TRANSFORM = pa.list_(pa.float64(), 16)


def _schema(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in fields])


def _range_image_fields(prefix: str) -> list[tuple[str, pa.DataType]]:
    return [(prefix + S.VALUES, _RANGE_IMAGE[0]), (prefix + S.SHAPE, _RANGE_IMAGE[1])]


_LASER_KEYS = [(S.KEY_SEGMENT, pa.string()), (S.KEY_TIMESTAMP, pa.int64()), (S.KEY_LASER, pa.int8())]
_FRAME_KEYS = [(S.KEY_SEGMENT, pa.string()), (S.KEY_TIMESTAMP, pa.int64())]

#: Arrow schema of each component, as ``Component.schema()`` of ``waymo_open_dataset.v2`` gives it.
SCHEMAS = {
    S.LIDAR: _schema(_LASER_KEYS + _range_image_fields(S.LIDAR_RETURN[0]) + _range_image_fields(S.LIDAR_RETURN[1])),
    S.LIDAR_POSE: _schema(_LASER_KEYS + _range_image_fields(S.POSE_RETURN1)),
    S.LIDAR_CALIBRATION: _schema([(S.KEY_SEGMENT, pa.string()), (S.KEY_LASER, pa.int8()), (S.EXTRINSIC, _TRANSFORM),
                                  (S.INCLINATION_MIN, pa.float64()), (S.INCLINATION_MAX, pa.float64()),
                                  (S.INCLINATION_VALUES, pa.list_(pa.float64()))]),
    S.VEHICLE_POSE: _schema(_FRAME_KEYS + [(S.WORLD_FROM_VEHICLE, _TRANSFORM)]),
    S.LIDAR_BOX: _schema(_FRAME_KEYS + [(S.KEY_OBJECT, pa.string())]
                         + [(c, pa.float64()) for c in S.BOX_FIELDS]
                         + [(S.BOX_TYPE, pa.int8()), (S.BOX_NUM_POINTS, pa.int64()), (S.BOX_NUM_TOP_POINTS, pa.int64())]
                         + [(c, pa.float64()) for c in S.BOX_SPEED + S.BOX_ACCELERATION]
                         + [(S.BOX_DIFFICULTY_DETECTION, pa.int8()), (S.BOX_DIFFICULTY_TRACKING, pa.int8())]),
    S.STATS: _schema(_FRAME_KEYS + [(c, pa.string()) for c in S.STATS_FIELDS]
                     + [(S.STATS_LIDAR_COUNTS[0], pa.list_(pa.int8())), (S.STATS_LIDAR_COUNTS[1], pa.list_(pa.int32())),
                        (S.STATS_CAMERA_COUNTS[0], pa.list_(pa.int8())),
                        (S.STATS_CAMERA_COUNTS[1], pa.list_(pa.int32()))]),
}
WRITTEN = (S.LIDAR, S.LIDAR_POSE, S.LIDAR_CALIBRATION, S.VEHICLE_POSE, S.LIDAR_BOX, S.STATS)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def component_path(root: str | os.PathLike, split: str, component: str, segment: str) -> Path:
    return Path(root) / split / component / f"{segment}.parquet"


def _float_lists(arrays: list[np.ndarray | None], type_: pa.DataType) -> pa.Array:
    """A list column from flat arrays (None: a null row), built without Python loops over values."""
    dtype = type_.value_type.to_pandas_dtype()
    sizes = np.array([0 if a is None else a.size for a in arrays], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    parts = [np.asarray(a, dtype).ravel() for a in arrays if a is not None]
    values = np.concatenate(parts) if parts else np.zeros(0, dtype)
    mask = pa.array([a is None for a in arrays]) if any(a is None for a in arrays) else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=type_, mask=mask)


def _shapes(shapes: list[tuple[int, ...] | None]) -> pa.Array:
    return pa.array([None if s is None else [int(d) for d in s] for s in shapes], _RANGE_IMAGE[1])


class V2SegmentWriter(CloseOrAbort):
    """Write one segment's v1 frame protos as v2 component files (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, split: str, segment: str, row_group_frames: int = 5,
                 compression: str = "snappy"):
        if row_group_frames < 1:
            raise ValueError(f"row_group_frames={row_group_frames}: need at least 1")
        self.root, self.split, self.segment = Path(root), split, segment
        self.row_group_frames = row_group_frames
        self.frames = 0
        self._calibrations: list[dataset_pb2.LaserCalibration] | None = None
        self._rows: dict[str, dict[str, list]] = {}
        self._pending = 0
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._tmp: dict[str, Path] = {}
        try:
            for component in WRITTEN:
                path = self.path(component)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                self._tmp[component] = Path(tmp)
                self._writers[component] = pq.ParquetWriter(tmp, SCHEMAS[component], compression=compression)
        except BaseException:
            self.abort()
            raise
        self._reset_rows()

    def path(self, component: str) -> Path:
        return component_path(self.root, self.split, component, self.segment)

    def _reset_rows(self) -> None:
        self._rows = {c: {f.name: [] for f in SCHEMAS[c]} for c in WRITTEN}
        self._pending = 0

    def add(self, frame: dataset_pb2.Frame) -> None:
        """Append one frame (its ``context.name`` must be the segment's)."""
        if frame.context.name != self.segment:
            raise ValueError(f"frame of segment {frame.context.name!r} given to the writer of {self.segment!r}")
        if self._calibrations is None:
            self._calibrations = list(frame.context.laser_calibrations)
        where = f"{self.segment} frame {self.frames}"
        ts = int(frame.timestamp_micros)
        lidar, pose = self._rows[S.LIDAR], self._rows[S.LIDAR_POSE]
        for laser in frame.lasers:
            images = [decode_matrix_float(ri.range_image_compressed, f"{where} laser {laser.name} return {k}")
                      if ri.range_image_compressed else None
                      for k, ri in enumerate((laser.ri_return1, laser.ri_return2), start=1)]
            if all(im is None for im in images):
                continue  # as the official extraction: no row for a laser without range images
            for col, values in ((S.KEY_SEGMENT, self.segment), (S.KEY_TIMESTAMP, ts), (S.KEY_LASER, laser.name)):
                lidar[col].append(values)
            for prefix, im in zip(S.LIDAR_RETURN, images):
                lidar[prefix + S.VALUES].append(im)
                lidar[prefix + S.SHAPE].append(None if im is None else im.shape)
            if laser.ri_return1.range_image_pose_compressed:
                p = decode_matrix_float(laser.ri_return1.range_image_pose_compressed, f"{where} laser pose")
                for col, values in ((S.KEY_SEGMENT, self.segment), (S.KEY_TIMESTAMP, ts), (S.KEY_LASER, laser.name),
                                    (S.POSE_RETURN1 + S.VALUES, p), (S.POSE_RETURN1 + S.SHAPE, p.shape)):
                    pose[col].append(values)
        vp = self._rows[S.VEHICLE_POSE]
        vp[S.KEY_SEGMENT].append(self.segment)
        vp[S.KEY_TIMESTAMP].append(ts)
        vp[S.WORLD_FROM_VEHICLE].append(list(frame.pose.transform))
        box = self._rows[S.LIDAR_BOX]
        for label in frame.laser_labels:
            if not label.HasField("box"):
                continue
            b = label.box
            values = [self.segment, ts, label.id, b.center_x, b.center_y, b.center_z, b.length, b.width, b.height,
                      b.heading, label.type, label.num_lidar_points_in_box, label.num_top_lidar_points_in_box]
            if label.HasField("metadata"):
                m = label.metadata
                values += [m.speed_x, m.speed_y, m.speed_z, m.accel_x, m.accel_y, m.accel_z]
            else:
                values += [None] * 6
            if label.HasField("detection_difficulty_level") or label.HasField("tracking_difficulty_level"):
                values += [label.detection_difficulty_level, label.tracking_difficulty_level]
            else:
                values += [None, None]
            for col, v in zip(box, values):
                box[col].append(v)
        st = self._rows[S.STATS]
        stats = frame.context.stats
        counts = [([c.type for c in cs], [c.count for c in cs]) if cs else (None, None)
                  for cs in (stats.laser_object_counts, stats.camera_object_counts)]
        for col, v in zip(st, [self.segment, ts, stats.time_of_day, stats.location, stats.weather,
                               *counts[0], *counts[1]]):
            st[col].append(v)
        self.frames += 1
        self._pending += 1
        if self._pending >= self.row_group_frames:
            self._flush()

    def _table(self, component: str) -> pa.Table:
        schema = SCHEMAS[component]
        rows = self._rows[component]
        arrays = []
        for f in schema:
            col = rows[f.name]
            if f.name.endswith(S.VALUES) and component in (S.LIDAR, S.LIDAR_POSE):
                arrays.append(_float_lists(col, f.type))
            elif f.name.endswith(S.SHAPE) and component in (S.LIDAR, S.LIDAR_POSE):
                arrays.append(_shapes(col))
            else:
                arrays.append(pa.array(col, f.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _flush(self) -> None:
        if self._pending == 0:
            return
        for component in (S.LIDAR, S.LIDAR_POSE, S.VEHICLE_POSE, S.LIDAR_BOX, S.STATS):
            table = self._table(component)
            if table.num_rows:
                self._writers[component].write_table(table)
        self._reset_rows()

    def _write_calibrations(self) -> None:
        cal = sorted(self._calibrations or [], key=lambda c: c.name)
        table = pa.Table.from_arrays([
            pa.array([self.segment] * len(cal), pa.string()),
            pa.array([c.name for c in cal], pa.int8()),
            pa.array([list(c.extrinsic.transform) for c in cal], _TRANSFORM),
            pa.array([c.beam_inclination_min for c in cal], pa.float64()),
            pa.array([c.beam_inclination_max for c in cal], pa.float64()),
            pa.array([list(c.beam_inclinations) if c.beam_inclinations else None for c in cal], pa.list_(pa.float64())),
        ], schema=SCHEMAS[S.LIDAR_CALIBRATION])
        self._writers[S.LIDAR_CALIBRATION].write_table(table)

    def close(self) -> dict[str, Path]:
        """Write what is left, then move every file into place; returns ``{component: path}``."""
        try:
            self._flush()
            self._write_calibrations()
            for w in self._writers.values():
                w.close()
        except BaseException:
            self.abort()
            raise
        paths = {}
        for component, tmp in self._tmp.items():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
            os.replace(tmp, self.path(component))
            paths[component] = self.path(component)
        self._tmp = {}
        self._writers = {}
        return paths

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except (OSError, pa.ArrowException):
                pass  # the file is being removed anyway
        self._writers = {}
        for tmp in self._tmp.values():
            if tmp.exists():
                tmp.unlink()
        self._tmp = {}



def write_v2_segment(frames, root: str | os.PathLike, split: str, row_group_frames: int = 5) -> dict[str, Path]:
    """Write an iterable of ``dataset_pb2.Frame`` (one segment, in order) as v2 components."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("no frames to write")
    with V2SegmentWriter(root, split, first.context.name, row_group_frames) as writer:
        writer.add(first)
        for frame in it:
            writer.add(frame)
    return {c: writer.path(c) for c in WRITTEN}


__all__ = ["SCHEMAS", "WRITTEN", "V2SegmentWriter", "component_path", "write_v2_segment"]
