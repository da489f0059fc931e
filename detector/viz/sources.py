"""Where the viewer's frames and boxes come from.

Frames: a frame-store segment folder (with ``segment.json``), a raw Waymo TFRecord, or a Waymo v2
segment (one of its component files, or ``<split folder>/<segment name>``), read in order
(``FrameSource.frames``) or one at a time (``FrameSource.load``: a TFRecord's record offsets are indexed
when it is opened, from the 12-byte record headers only). Predictions: a Waymo ``metrics_pb2.Objects``
file (``predictions.bin``), matched to frames by (context name = segment name, frame timestamp); or a
checkpoint, run in streaming mode over the shown frames.
"""

from __future__ import annotations

import importlib
import os
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.data.frame import Frame
from detector.data.frame_store import SEGMENT_META, read_segment
from detector.errors import InputError, UnavailableError
from detector.viz.scene import PredictedBoxes, SceneFrame, StateVoxels, TrailMemory, clean_scene

#: ``module:function`` that turns a checkpoint path into a ``Detector`` (``fn(path, map_location=...)``).
CHECKPOINT_LOADER = "detector.checkpoints:load_checkpoint"
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
#: ``fn(state) -> (centres (N, 3) metres, voxel size)`` for batch element 0 of a detector state; None:
#: ``detector_state_voxels`` of the loaded detector (``show_state=true`` with ``ckpt_path=``).
STATE_VOXELS_READER: Callable | None = None


class VisualizeInputError(InputError):
    """A missing or unreadable input of the viewer; the message names the file and what was expected."""


class CheckpointUnavailableError(UnavailableError):
    """``ckpt_path`` was given but this installation cannot load a detector from a checkpoint."""


@dataclass(frozen=True)
class FrameSource:
    """A segment to show: ``kind`` is ``"segment"`` (frame store), ``"tfrecord"`` or ``"v2"`` (``path`` is
    then the segment's ``lidar`` component file)."""

    path: Path
    kind: str
    name: str
    num_frames: int | None  # None: not known before reading the file through
    #: byte offsets of a TFRecord's records (``open_source`` indexes them); None for a frame store
    offsets: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    #: frame timestamps where known without reading the frames (a frame store's ``segment.json``)
    timestamps_micros: tuple[int, ...] | None = field(default=None, repr=False, compare=False)

    def load(self, index: int) -> Frame:
        """Frame ``index`` alone (random access)."""
        if self.num_frames is not None and not 0 <= index < self.num_frames:
            raise VisualizeInputError(f"{self.path}: frame {index} out of range (segment has "
                                      f"{self.num_frames} frames)")
        if self.kind == "segment":
            return Frame.load_npz(self.path / f"{index:04d}.npz", segment=self.name, index=index)
        if self.kind == "v2":
            from detector.data.segments import RawSegment

            for frame in RawSegment(self.path, "v2").frames(start=index, stop=index + 1):
                return frame
            raise VisualizeInputError(f"{self.path}: no frame {index}")
        from detector.data.waymo_reader import frame_from_proto, parse_frame

        if self.offsets is None:
            raise VisualizeInputError(f"{self.path}: no record index (open it with open_source)")
        offset = self.offsets[index]
        where = f"{self.path}: record {index} at byte offset {offset}"
        return frame_from_proto(parse_frame(_read_record_at(self.path, offset), where), index=index, where=where)

    def placeholder(self, index: int) -> Frame:
        """An empty frame standing in for an unreadable one: segment, index and the known timestamp."""
        ts = self.timestamps_micros
        return Frame(points=np.zeros((0, 5), np.float32), pose=np.eye(4),
                     timestamp_micros=ts[index] if ts is not None and 0 <= index < len(ts) else 0,
                     segment=self.name, index=index)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames ``start <= index < stop`` in order."""
        if start < 0 or (stop is not None and stop < start):
            raise VisualizeInputError(f"{self.path}: bad frame range [{start}, {stop})")
        if self.kind == "segment":
            info = read_segment(self.path)
            end = info.num_frames if stop is None else min(stop, info.num_frames)
            if start >= info.num_frames:
                raise VisualizeInputError(f"{self.path}: frame {start} out of range (segment has "
                                          f"{info.num_frames} frames)")
            for i in range(start, end):
                yield info.load_frame(i)
            return
        from detector.data.segments import RawSegment

        count = 0
        for frame in RawSegment(self.path, "v2" if self.kind == "v2" else "v1").frames(start=start, stop=stop):
            count += 1
            yield frame
        if count == 0:
            raise VisualizeInputError(f"{self.path}: no {'frame' if self.kind == 'v2' else 'record'} at index "
                                      f"{start} or after")


def open_source(path: str | os.PathLike | None) -> FrameSource:
    """A frame-store segment folder, a ``.tfrecord`` file or a v2 segment; a clear error for anything else."""
    if path is None or str(path) == "":
        raise VisualizeInputError("no input: set input=PATH to a frame-store segment folder (holding "
                                  f"{SEGMENT_META}), to a Waymo .tfrecord file or to a Waymo v2 segment")
    path = Path(path)
    from detector.data import waymo_v2

    v2 = waymo_v2.segment_from_path(path)
    if v2 is not None:
        return FrameSource(v2.path("lidar"), "v2", v2.name, v2.num_frames())
    if path.is_dir() and waymo_v2.is_v2_split(path):
        names = [s.name for s in waymo_v2.split_segments(path.parent, path.name)]
        raise VisualizeInputError(f"input={path}: a Waymo v2 split with {len(names)} segments; name one as "
                                  f"input={path}/SEGMENT (e.g. {names[0] if names else '...'})")
    if not path.exists():
        raise VisualizeInputError(f"input={path}: no such file or folder")
    if path.is_dir():
        info = read_segment(path)
        if info is None:
            subdirs = sorted(p.name for p in path.iterdir() if p.is_dir())[:5]
            hint = f" (it holds folders {subdirs}: point input= at one segment folder)" if subdirs else ""
            raise VisualizeInputError(f"input={path}: not a frame-store segment: no {SEGMENT_META}{hint}")
        return FrameSource(path, "segment", info.name, info.num_frames,
                           timestamps_micros=tuple(info.timestamps_micros))
    if path.suffix.lower() in TFRECORD_SUFFIXES or ".tfrecord" in path.name:
        from detector.data.waymo_reader import read_context_name

        name = read_context_name(path)
        offsets = record_offsets(path)
        return FrameSource(path, "tfrecord", name, len(offsets), offsets=offsets)
    raise VisualizeInputError(f"input={path}: expected a frame-store segment folder, a .tfrecord file or a Waymo "
                              "v2 segment (<root>/<split>/<component>/<segment>.parquet or <root>/<split>/<segment>)")


def record_offsets(path: Path) -> tuple[int, ...]:
    """Byte offsets of the records of a TFRecord, from their headers (length and its CRC checked; the
    data is skipped, its CRC is checked when the record is read)."""
    from detector.data.tfrecord import RecordError, masked_crc32c

    offsets, size = [], path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise RecordError(path, offset, f"truncated header ({len(header)} of 12 bytes)")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != length_crc:
                raise RecordError(path, offset, "length CRC mismatch")
            if offset + 16 + length > size:
                raise RecordError(path, offset, f"truncated data ({size - offset - 12} of {length + 4} bytes)")
            offsets.append(offset)
            offset += 16 + length
            f.seek(offset)
    return tuple(offsets)


def _read_record_at(path: Path, offset: int) -> bytes:
    """The data of the record at ``offset``, its CRCs checked."""
    from detector.data.tfrecord import RecordError, masked_crc32c

    with open(path, "rb") as f:
        f.seek(offset)
        header = f.read(12)
        if len(header) < 12:
            raise RecordError(path, offset, f"truncated header ({len(header)} of 12 bytes)")
        (length,) = struct.unpack("<Q", header[:8])
        if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
            raise RecordError(path, offset, "length CRC mismatch")
        data, footer = f.read(length), f.read(4)
    if len(data) < length or len(footer) < 4:
        raise RecordError(path, offset, f"truncated data ({len(data)} of {length} bytes)")
    if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise RecordError(path, offset, f"data CRC mismatch ({length} bytes)")
    return data


class PredictionIndex:
    """Predicted boxes of a ``metrics_pb2.Objects`` file, by (context name, timestamp)."""

    def __init__(self, path: Path, by_frame: dict[tuple[str, int], PredictedBoxes]):
        self.path = path
        self.by_frame = by_frame
        self.contexts = {c for c, _ in by_frame}

    def check_segment(self, segment: str) -> None:
        if segment not in self.contexts:
            present = sorted(self.contexts)
            raise VisualizeInputError(
                f"predictions={self.path}: no objects for segment {segment!r} "
                f"({len(present)} context names present, e.g. {present[:3]})")

    def for_frame(self, frame: Frame) -> PredictedBoxes:
        """The frame's boxes; none (empty) where the file has no object at this timestamp."""
        return self.by_frame.get((frame.segment, frame.timestamp_micros), PredictedBoxes())


def _read_objects(path: Path):
    """``detector.eval.submission.read_objects`` where present, else a plain protobuf parse."""
    try:
        from detector.eval.submission import SubmissionError, read_objects
    except ModuleNotFoundError as e:
        if e.name != "detector.eval.submission":
            raise
        from google.protobuf.message import DecodeError
        from waymo_open_dataset.protos import metrics_pb2

        objects = metrics_pb2.Objects()
        try:
            objects.ParseFromString(path.read_bytes())
        except DecodeError as err:
            raise VisualizeInputError(f"predictions={path}: not a metrics_pb2.Objects file ({err})") from err
        return objects
    try:
        return read_objects(path)
    except SubmissionError as err:
        raise VisualizeInputError(f"predictions={err}") from err


def load_predictions(path: str | os.PathLike) -> PredictionIndex:
    path = Path(path)
    if not path.is_file():
        raise VisualizeInputError(f"predictions={path}: no such file")
    rows: dict[tuple[str, int], list] = defaultdict(list)
    for o in _read_objects(path).objects:
        b = o.object.box
        rows[(o.context_name, int(o.frame_timestamp_micros))].append(
            (b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading,
             o.object.type, o.score, o.object.id))
    tracked = any(r[9] for frame_rows in rows.values() for r in frame_rows)
    by_frame = {}
    for key, r in rows.items():
        a = np.asarray([x[:9] for x in r], np.float64)
        ids = np.asarray([x[9] for x in r], dtype=str) if tracked else None
        by_frame[key] = PredictedBoxes(a[:, :7], a[:, 7].astype(np.int64), a[:, 8], ids)
    return PredictionIndex(path, by_frame)


def resolve_checkpoint_loader(spec: str = CHECKPOINT_LOADER) -> Callable:
    module_name, _, attr = spec.partition(":")
    advice = ("; pass predictions=FILE.bin (a metrics_pb2.Objects file) instead, or set "
              "ckpt_loader=module:function to a loader that returns a Detector")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise CheckpointUnavailableError(
                f"ckpt_path needs the checkpoint loader {spec}, but module {e.name} is not in this "
                f"installation{advice}") from e
        raise
    loader = getattr(module, attr, None)
    if loader is None:
        raise CheckpointUnavailableError(f"ckpt_path needs the checkpoint loader {spec}, but {module_name} "
                                         f"has no {attr!r}{advice}")
    return loader


def stream_detections(detector, frames: Iterable[Frame], device: str = "cpu",
                      state_voxels: Callable | None = None
                      ) -> Iterator[tuple[Frame, PredictedBoxes, StateVoxels | None]]:
    """Run ``detector`` online over ``frames`` (one segment, in order): ``init_state(1)``, then
    ``step(frame_batch, state) -> (detections per batch element, state)`` with ``reset`` on the first
    frame. ``state_voxels(state) -> (centres (N, 3) metres, voxel size)`` extracts the state's sites."""
    from detector.data.collate import collate_frames
    from detector.streaming import Stream

    if hasattr(detector, "eval"):
        detector.eval()
    stream = Stream(detector, device)
    for i, frame in enumerate(frames):
        step = stream.step(collate_frames([frame], [i == 0]))
        d = step.detections
        ids = getattr(d, "track_ids", None)
        boxes = PredictedBoxes(_numpy(d.boxes), _numpy(d.types), _numpy(d.scores),
                               None if ids is None else _numpy(ids))
        voxels = None
        if state_voxels is not None:
            centers, size = state_voxels(step.state)
            voxels = StateVoxels(_numpy(centers).reshape(-1, 3), size)
        yield frame, boxes, voxels


def detections_from_checkpoint(ckpt_path: str | os.PathLike, frames: Iterable[Frame],
                               loader: str = CHECKPOINT_LOADER, device: str = "cpu",
                               state_voxels: Callable | None = None
                               ) -> Iterator[tuple[Frame, PredictedBoxes, StateVoxels | None]]:
    """Load the detector of ``ckpt_path`` with ``loader`` and stream it over ``frames``."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise VisualizeInputError(f"ckpt_path={ckpt_path}: no such file")
    detector = resolve_checkpoint_loader(loader)(ckpt_path, map_location=device)
    if hasattr(detector, "to"):
        detector = detector.to(device)
    if state_voxels is True:
        state_voxels = detector_state_voxels(detector)
    return stream_detections(detector, frames, device=device, state_voxels=state_voxels)


def detector_state_voxels(detector) -> Callable:
    """``fn(state) -> (centres (N, 3) metres, voxel size)``: the recurrent state's sites of stream 0
    as voxel centres of ``detector``'s grid (none for models without a recurrent state)."""
    vox = detector.voxelizer
    size = float(min(vox.voxel_size))

    def read(state):
        sites = getattr(getattr(state, "temporal", None), "sites", None)  # a recurrent mode's state
        if sites is None or len(sites) == 0:
            return np.zeros((0, 3), np.float32), size
        sites = sites[sites[:, 0] == 0]
        return vox.centers(sites).detach().cpu().numpy(), size

    return read


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def iter_scene_frames(source: FrameSource, start: int = 0, stop: int | None = None,
                      predictions: PredictionIndex | None = None, ckpt_path: str | None = None,
                      ckpt_loader: str = CHECKPOINT_LOADER, device: str = "cpu",
                      state_voxels: Callable | None = None, trail_frames: int = 10) -> Iterator[SceneFrame]:
    """The frames of ``source`` in [start, stop) with their predictions (file or checkpoint); tracked
    predictions (ids) get trails of their last ``trail_frames`` centres."""
    if predictions is not None and ckpt_path:
        raise VisualizeInputError("give predictions= or ckpt_path=, not both")
    if predictions is not None:
        predictions.check_segment(source.name)
    frames = source.frames(start, stop)
    trails = TrailMemory(trail_frames)
    if ckpt_path:
        for frame, boxes, voxels in detections_from_checkpoint(ckpt_path, frames, ckpt_loader, device,
                                                               state_voxels):
            yield trails.add(clean_scene(SceneFrame(frame, boxes, voxels)))
        return
    for frame in frames:
        yield trails.add(clean_scene(SceneFrame(frame, predictions.for_frame(frame) if predictions is not None
                                                else None)))


__all__ = [
    "CHECKPOINT_LOADER", "STATE_VOXELS_READER", "VisualizeInputError", "CheckpointUnavailableError", "FrameSource",
    "open_source",
    "record_offsets",
    "PredictionIndex", "load_predictions", "resolve_checkpoint_loader", "stream_detections",
    "detections_from_checkpoint", "iter_scene_frames",
]
