"""Waymo v1 perception records -> ``Frame``, without TensorFlow.

Points: every lidar of the context (sorted by laser name: TOP, FRONT, SIDE_LEFT, SIDE_RIGHT, REAR),
first return of all lidars, then second return of all lidars; within a range image in row-major
order. Columns ``[x, y, z, intensity, elongation]`` in the vehicle frame of the frame's pose; the
range image's channel 3 (``is_in_nlz``, 1 inside a no-label zone, -1 outside) becomes ``Frame.nlz``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
from google.protobuf.message import DecodeError
from waymo_open_dataset import dataset_pb2

from detector.data.frame import Frame, FrameFormatError
from detector.data.frame_checks import SegmentFrameChecks, check_extrinsics, check_pose
from detector.data.range_image import TOP, LaserCalibration, LaserImages, frame_points
from detector.data.tfrecord import iter_records_with_offsets


def decode_matrix_float(compressed: bytes, what: str) -> np.ndarray:
    """A zlib-compressed ``MatrixFloat`` as an array of its ``shape.dims``; ``what`` names it in errors."""
    try:
        raw = zlib.decompress(compressed)
    except zlib.error as e:
        raise FrameFormatError(f"{what}: not zlib data ({e})") from e
    m = dataset_pb2.MatrixFloat()
    try:
        m.ParseFromString(raw)
    except DecodeError as e:
        raise FrameFormatError(f"{what}: not a MatrixFloat ({e})") from e
    return matrix_to_array(m, what)


def matrix_to_array(m: dataset_pb2.MatrixFloat, what: str) -> np.ndarray:
    dims = tuple(m.shape.dims)
    data = np.asarray(m.data, np.float32)
    if not dims or int(np.prod(dims)) != data.size:
        raise FrameFormatError(f"{what}: {data.size} values do not fill shape {list(dims)}")
    return data.reshape(dims)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def serialize_matrix_float(array: np.ndarray) -> bytes:
    """``MatrixFloat(data=array.ravel(), shape.dims=array.shape).SerializeToString()``, written directly
    (field 1: packed little-endian floats; field 2: MatrixShape with one varint field per dim), because
    filling the repeated field from Python costs ~40 ms for a Waymo-size range image."""
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    shape = b"".join(b"\x08" + _varint(int(d)) for d in array.shape)
    head = [b"\x0a", _varint(len(data)), data] if data else []  # an empty packed field is omitted
    return b"".join(head + [b"\x12", _varint(len(shape)), shape])


def encode_matrix_float(array: np.ndarray, level: int = 6) -> bytes:
    """Inverse of ``decode_matrix_float``: zlib of the serialized ``MatrixFloat``."""
    return zlib.compress(serialize_matrix_float(array), level)


def _range_image(ri: dataset_pb2.RangeImage, what: str) -> np.ndarray | None:
    if ri.range_image_compressed:
        arr = decode_matrix_float(ri.range_image_compressed, what)
    elif ri.range_image.data:
        arr = matrix_to_array(ri.range_image, what)
    else:
        return None
    if arr.ndim != 3 or arr.shape[2] < 1:
        raise FrameFormatError(f"{what}: range image of shape {arr.shape}, expected (H, W, C)")
    return arr


def decode_lasers(frame: dataset_pb2.Frame, where: str = "frame") -> dict[int, LaserImages]:
    out: dict[int, LaserImages] = {}
    for laser in frame.lasers:
        lname = dataset_pb2.LaserName.Name.Name(laser.name)
        returns = []
        for k, ri in enumerate((laser.ri_return1, laser.ri_return2), start=1):
            img = _range_image(ri, f"{where}: laser {lname} return {k}")
            if img is None:
                break
            returns.append(img)
        pose = None
        if laser.name == TOP and laser.ri_return1.range_image_pose_compressed:
            pose = decode_matrix_float(laser.ri_return1.range_image_pose_compressed,
                                       f"{where}: laser TOP range_image_pose")
        out[laser.name] = LaserImages(laser.name, returns, pose)
    return out


def frame_from_proto(frame: dataset_pb2.Frame, index: int = 0, where: str = "frame",
                     second_return: bool = True, nonfinite: dict[str, int] | None = None) -> Frame:
    """Convert one ``dataset_pb2.Frame`` (``where`` names it in errors, e.g. ``file record 3``).

    Points with a NaN or infinite coordinate, intensity or elongation are dropped; ``nonfinite``, when
    given, receives how many per lidar name (e.g. ``{"TOP": 12}``)."""
    frame_pose = np.asarray(frame.pose.transform, np.float64)
    if frame_pose.size != 16:
        raise FrameFormatError(f"{where}: pose.transform has {frame_pose.size} values, expected 16")
    frame_pose = frame_pose.reshape(4, 4)
    check_pose(frame_pose, f"{where}: pose.transform")  # before the points are moved by it
    lasers = decode_lasers(frame, where)
    if not frame.context.laser_calibrations and lasers:
        raise FrameFormatError(f"{where}: lasers present but context.laser_calibrations is empty")
    calibrations = [LaserCalibration(c.name, np.asarray(c.extrinsic.transform, np.float64),
                                     np.asarray(c.beam_inclinations, np.float64), c.beam_inclination_min,
                                     c.beam_inclination_max) for c in frame.context.laser_calibrations]
    check_extrinsics(calibrations, f"{where}: context.laser_calibrations")
    points, nlz = frame_points(calibrations, lasers, frame_pose, where, second_return, nonfinite=nonfinite)

    labels = frame.laser_labels
    boxes = np.array([[l.box.center_x, l.box.center_y, l.box.center_z, l.box.length, l.box.width,
                       l.box.height, l.box.heading] for l in labels], np.float64).reshape(-1, 7)
    return Frame(
        points=points,
        pose=frame_pose,
        timestamp_micros=frame.timestamp_micros,
        segment=frame.context.name,
        index=index,
        boxes=boxes.astype(np.float32),
        types=np.array([l.type for l in labels], np.int64),
        ids=np.array([l.id for l in labels], dtype=str) if len(labels) else np.zeros(0, "<U64"),
        num_points=np.array([l.num_lidar_points_in_box for l in labels], np.int64),
        difficulty=np.array([l.detection_difficulty_level for l in labels], np.int64),
        nlz=nlz,
    )


def parse_frame(data: bytes, where: str = "record") -> dataset_pb2.Frame:
    frame = dataset_pb2.Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError as e:
        raise FrameFormatError(f"{where}: not a dataset_pb2.Frame ({e})") from e
    return frame


def iter_frame_protos(tfrecord_path: str | os.PathLike) -> Iterator[tuple[int, dataset_pb2.Frame]]:
    """``(byte_offset, Frame proto)`` of every record; CRC errors raise ``RecordError``."""
    for i, (offset, data) in enumerate(iter_records_with_offsets(tfrecord_path)):
        yield offset, parse_frame(data, f"{tfrecord_path}: record {i} at byte offset {offset}")


def iter_frames(tfrecord_path: str | os.PathLike, second_return: bool = True,
                nonfinite: dict[int, dict[str, int]] | None = None, start: int = 0, stop: int | None = None,
                checks: SegmentFrameChecks | None = None) -> Iterator[Frame]:
    """Frames ``start <= index < stop`` of one segment file, in record order (``Frame.index`` counts
    records from 0), checked (``detector.data.frame_checks``: rigid poses, strictly increasing
    timestamps; invalid labels dropped and counted in ``checks.dropped_labels``). ``nonfinite``, when
    given, receives ``{record index: {lidar name: points dropped}}`` for the records that had NaN/inf points."""
    path = Path(tfrecord_path)
    checks = SegmentFrameChecks() if checks is None else checks
    for i, (offset, proto) in enumerate(iter_frame_protos(path)):
        if i < start:
            continue
        if stop is not None and i >= stop:
            return
        where = f"{path}: record {i} at byte offset {offset}"
        dropped: dict[str, int] = {}
        frame = frame_from_proto(proto, index=i, where=where, second_return=second_return, nonfinite=dropped)
        if dropped and nonfinite is not None:
            nonfinite[i] = dropped
        yield checks(frame, where)


def read_context_name(tfrecord_path: str | os.PathLike) -> str:
    """The segment name (``context.name`` of the first record); reads one record only."""
    for _, proto in iter_frame_protos(tfrecord_path):
        if not proto.context.name:
            raise FrameFormatError(f"{tfrecord_path}: first record has an empty context.name")
        return proto.context.name
    raise FrameFormatError(f"{tfrecord_path}: no records")


__all__ = [
    "decode_matrix_float", "encode_matrix_float", "serialize_matrix_float", "matrix_to_array", "LaserImages", "decode_lasers",
    "frame_from_proto", "parse_frame", "iter_frame_protos", "iter_frames", "read_context_name",
]
