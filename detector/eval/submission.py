"""Waymo leaderboard files: ``metrics_pb2.Objects`` (.bin) reading, writing and conversion.

Ground-truth files use the same message; their objects carry ``num_lidar_points_in_box`` and
``detection_difficulty_level``. Objects are grouped into frames by the official key
``(context_name + "_" + camera_name, frame_timestamp_micros)``.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError
from waymo_open_dataset.protos import metrics_pb2

from detector.atomic import AtomicWriter, atomic_open
from detector.errors import InputError

FrameKey = tuple[str, int]
_CHECKED_OBJECTS = 100  # objects inspected for signs of a file of another message type


class SubmissionError(InputError):
    """A file that is not a readable ``metrics_pb2.Objects``; the message names the file."""


def read_objects(path: str | os.PathLike) -> metrics_pb2.Objects:
    """Parse a ``metrics_pb2.Objects`` file, refusing files of other message types."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    objects = metrics_pb2.Objects()
    try:
        objects.ParseFromString(data)
    except DecodeError as exc:
        raise SubmissionError(f"{path}: not a metrics_pb2.Objects file ({exc})") from exc
    suspicious = len(unknown_fields.UnknownFieldSet(objects)) > 0
    for obj in objects.objects[:_CHECKED_OBJECTS]:
        if (len(unknown_fields.UnknownFieldSet(obj)) or len(unknown_fields.UnknownFieldSet(obj.object))
                or not obj.object.HasField("box") or not obj.context_name):
            suspicious = True
            break
    if suspicious:
        raise SubmissionError(f"{path}: not a metrics_pb2.Objects file (unexpected fields, or objects "
                              "without a box or context_name)")
    return objects


def write_objects(path: str | os.PathLike, objects: metrics_pb2.Objects | list) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    if not isinstance(objects, metrics_pb2.Objects):
        objects = metrics_pb2.Objects(objects=list(objects))
    with atomic_open(path) as f:
        f.write(objects.SerializeToString())


def detections_to_objects(context_name: str, timestamp: int, boxes, scores, types,
                          ids=None) -> list[metrics_pb2.Object]:
    """Detections of one frame, boxes (K, 7) in Waymo's convention, as leaderboard objects; ``ids``
    (K track ids, e.g. ``Detections.track_ids``) become ``Object.object.id`` (the tracking format)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    scores = np.asarray(scores, np.float64).reshape(-1)
    types = np.asarray(types, np.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(types)):
        raise ValueError(f"{context_name}@{timestamp}: {len(boxes)} boxes, {len(scores)} scores, {len(types)} types")
    if ids is not None:
        ids = [str(i) for i in np.asarray(ids).reshape(-1).tolist()]
        if len(ids) != len(boxes):
            raise ValueError(f"{context_name}@{timestamp}: {len(boxes)} boxes, {len(ids)} track ids")
    out = []
    for k, (box, score, typ) in enumerate(zip(boxes.tolist(), scores.tolist(), types.tolist())):
        obj = metrics_pb2.Object(context_name=context_name, frame_timestamp_micros=int(timestamp), score=score)
        b = obj.object.box
        b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = box
        obj.object.type = typ
        if ids is not None:
            obj.object.id = ids[k]
        out.append(obj)
    return out


def ground_truth_to_objects(context_name: str, timestamp: int, boxes, types, num_points,
                            difficulty, ids=None, tracking_difficulty=None) -> list[metrics_pb2.Object]:
    """Labels of one frame as ground-truth objects (with point counts and difficulty levels; with
    ``ids`` the object ids and ``tracking_difficulty_level``, default: the detection difficulty)."""
    num_points = np.asarray(num_points, np.int64).reshape(-1)
    difficulty = np.asarray(difficulty, np.int64).reshape(-1)
    objs = detections_to_objects(context_name, timestamp, boxes, np.ones(len(num_points)), types, ids)
    tracking = difficulty if tracking_difficulty is None else np.asarray(tracking_difficulty, np.int64).reshape(-1)
    for obj, n, d, td in zip(objs, num_points.tolist(), difficulty.tolist(), tracking.tolist()):
        obj.ClearField("score")
        obj.object.num_lidar_points_in_box = n
        obj.object.detection_difficulty_level = d
        if ids is not None:
            obj.object.tracking_difficulty_level = td
    return objs


class ObjectsWriter(AtomicWriter):
    """Write a ``metrics_pb2.Objects`` file frame by frame, with bounded memory.

    Serialized ``Objects`` messages concatenate into one valid ``Objects`` (repeated fields append), so
    each frame's objects are appended as they come. The file appears under its name only when the
    writer closes without an error (temporary file, then rename); on an error it is removed.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.num_objects = 0

    def add(self, objects: list[metrics_pb2.Object]) -> None:
        if objects:
            self._write(metrics_pb2.Objects(objects=objects).SerializeToString())
            self.num_objects += len(objects)

    def add_detections(self, context_name: str, timestamp: int, boxes, scores, types, ids=None) -> None:
        self.add(detections_to_objects(context_name, timestamp, boxes, scores, types, ids))

    def add_ground_truth(self, context_name: str, timestamp: int, boxes, types, num_points, difficulty,
                         ids=None, tracking_difficulty=None) -> None:
        self.add(ground_truth_to_objects(context_name, timestamp, boxes, types, num_points, difficulty, ids,
                                         tracking_difficulty))


@dataclass
class FrameObjects:
    """The objects of one frame as arrays (fields of predictions or ground truth; both are kept)."""

    boxes: np.ndarray  # (N, 7) float64
    types: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float32
    overlap_nlz: np.ndarray  # (N,) bool
    num_points: np.ndarray  # (N,) int64
    difficulty: np.ndarray  # (N,) int64, 0 when unset
    #: read with ``tracking=True`` only: ``Object.object.id`` (N,) str ("" when unset) and
    #: ``tracking_difficulty_level`` (N,) int64
    ids: np.ndarray | None = None
    tracking_difficulty: np.ndarray | None = None

    @classmethod
    def empty(cls, tracking: bool = False) -> FrameObjects:
        z = np.zeros(0, np.int64)
        return cls(np.zeros((0, 7)), z, np.zeros(0, np.float32), np.zeros(0, bool), z, z,
                   np.zeros(0, dtype=object) if tracking else None, z if tracking else None)

    def subset(self, keep: np.ndarray) -> FrameObjects:
        """The objects selected by ``keep`` (a mask or indices), every field alike."""
        return FrameObjects(self.boxes[keep], self.types[keep], self.scores[keep], self.overlap_nlz[keep],
                            self.num_points[keep], self.difficulty[keep],
                            None if self.ids is None else self.ids[keep],
                            None if self.tracking_difficulty is None else self.tracking_difficulty[keep])


def frame_key(obj: metrics_pb2.Object) -> FrameKey:
    """The official frame key: (context name + "_" + camera name number, timestamp)."""
    return f"{obj.context_name}_{obj.camera_name}", obj.frame_timestamp_micros


def objects_to_frames(objects: metrics_pb2.Objects | list, tracking: bool = False) -> dict[FrameKey, FrameObjects]:
    """Group objects by frame key, in order of first appearance; arrays keep the file's order.

    ``tracking``: key frames as the official tracking tool does, by ``(context_name, timestamp)`` (its
    sequence is the context), and read each object's ``id`` and ``tracking_difficulty_level`` too.
    Values go through flat 8-byte buffers, not Python tuples: a validation split has ~10M objects.
    """
    items = objects.objects if isinstance(objects, metrics_pb2.Objects) else objects
    keys: dict[FrameKey, int] = {}
    frame_of = array("q")
    values = array("d")
    ids: list[str] = []
    for obj in items:
        o = obj.object
        b = o.box
        key = ((obj.context_name if tracking else f"{obj.context_name}_{obj.camera_name}"), obj.frame_timestamp_micros)
        frame_of.append(keys.setdefault(key, len(keys)))
        values.extend((b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading, o.type,
                       obj.score, obj.overlap_with_nlz, o.num_lidar_points_in_box,
                       o.tracking_difficulty_level if tracking else o.detection_difficulty_level))
        if tracking:
            ids.append(o.id)
    table = np.frombuffer(values, dtype=np.float64).reshape(-1, 12)
    frame = np.frombuffer(frame_of, dtype=np.int64)
    order = np.argsort(frame, kind="stable")
    table = table[order]
    id_arr = np.array(ids, dtype=object)[order] if tracking else None
    bounds = np.r_[0, np.cumsum(np.bincount(frame, minlength=len(keys)))]
    frames = {}
    for key, i in keys.items():
        a, z = bounds[i], bounds[i + 1]
        t = table[a:z]
        level = t[:, 11].astype(np.int64)
        frames[key] = FrameObjects(boxes=t[:, :7].copy(), types=t[:, 7].astype(np.int64),
                                   scores=t[:, 8].astype(np.float32), overlap_nlz=t[:, 9].astype(bool),
                                   num_points=t[:, 10].astype(np.int64),
                                   difficulty=np.zeros_like(level) if tracking else level,
                                   ids=id_arr[a:z] if tracking else None,
                                   tracking_difficulty=level if tracking else None)
    return frames
