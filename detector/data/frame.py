"""The converted frame: one LiDAR sweep with its pose and labels, as a typed record of numpy arrays.

This is the contract between the reader/converter and everything downstream (clips, model, metrics,
viewer). Boxes follow Waymo's ``Label.Box`` exactly: ``(cx, cy, cz, length, width, height, heading)``
in the vehicle frame of this frame, heading in radians counter-clockwise from +x.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa

from detector.atomic import atomic_open
from detector.data.frame_codec import POINT_ARRAYS, decode_points, encode_points, is_compact
from detector.errors import InputError

#: Columns of ``Frame.points``.
POINT_FEATURES = ("x", "y", "z", "intensity", "elongation")
#: Waymo ``Label.Type`` ids.
TYPE_UNKNOWN, TYPE_VEHICLE, TYPE_PEDESTRIAN, TYPE_SIGN, TYPE_CYCLIST = 0, 1, 2, 3, 4
TYPE_NAMES = {1: "VEHICLE", 2: "PEDESTRIAN", 3: "SIGN", 4: "CYCLIST"}

#: Arrays written to, and required in, a frame-store ``.npz`` file.
NPZ_ARRAYS = ("points", "pose", "timestamp_micros", "boxes", "types", "ids", "num_points", "difficulty")


class FrameFormatError(InputError):
    """A frame file or record that does not hold what the contract says; the message names it."""


@dataclass
class Frame:
    """One sweep. ``points`` (N, 5) float32 ``[x, y, z, intensity, elongation]`` in the vehicle frame;
    ``pose`` (4, 4) float64 vehicle-to-world; labels are aligned arrays of length M."""

    points: np.ndarray
    pose: np.ndarray
    timestamp_micros: int
    segment: str = ""
    index: int = 0
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))
    types: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype="<U64"))
    num_points: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficulty: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    #: optional per-point flag (N,) bool: the point lies in a no-label zone
    nlz: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, np.float32).reshape(-1, len(POINT_FEATURES))
        self.pose = np.asarray(self.pose, np.float64).reshape(4, 4)
        self.timestamp_micros = int(self.timestamp_micros)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 7)
        m = len(self.boxes)
        self.types = np.asarray(self.types, np.int64).reshape(m)
        self.ids = np.asarray(self.ids).astype(str).reshape(m)
        self.num_points = np.asarray(self.num_points, np.int64).reshape(m)
        self.difficulty = np.asarray(self.difficulty, np.int64).reshape(m)
        if self.nlz is not None:
            self.nlz = np.asarray(self.nlz, bool).reshape(len(self.points))

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    def save_npz(self, path: str | os.PathLike, compact: bool = True) -> None:
        """Write atomically: a temporary file in the same folder, then rename. ``compact``: the points in
        frame-store format 2 (``detector.data.frame_codec``: millimetres, float16 intensity and
        elongation, compressed); False, or points with NaN/inf coordinates (which the converter drops):
        format 1 (float32 ``points``, as stores written before)."""
        path = Path(path)
        arrays = {name: getattr(self, name) for name in NPZ_ARRAYS}
        arrays["timestamp_micros"] = np.int64(self.timestamp_micros)
        if compact and np.isfinite(self.points[:, :3]).all():  # (non-finite points: format 1, as they are)
            del arrays["points"]
            arrays.update(encode_points(self.points, self.nlz))
        elif self.nlz is not None:
            arrays["nlz"] = self.nlz
        with atomic_open(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load_npz(cls, path: str | os.PathLike, segment: str | None = None, index: int | None = None) -> "Frame":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _required(z.files) if k not in z.files]
                if missing:
                    raise FrameFormatError(f"{path}: missing arrays {missing} (has {sorted(z.files)})")
                if is_compact(z.files):
                    data = {k: z[k] for k in NPZ_ARRAYS if k != "points"}
                    data["points"], nlz = decode_points(z)
                else:
                    data = {k: z[k] for k in NPZ_ARRAYS}
                    nlz = z["nlz"] if "nlz" in z.files else None
        except FrameFormatError:
            raise
        except FileNotFoundError as e:
            raise FrameFormatError(f"{path}: frame file missing (convert the segment again)") from e
        except _DAMAGE as e:  # the zip CRC of every array is checked as it is read
            raise FrameFormatError(f"{path}: damaged frame file ({type(e).__name__}: {e}); convert the "
                                   "segment again (python -m data_tools.convert_waymo repairs it)") from e
        return cls(
            points=data["points"],
            pose=data["pose"],
            timestamp_micros=int(data["timestamp_micros"]),
            segment=segment if segment is not None else path.parent.name,
            index=index if index is not None else _index_from_name(path),
            boxes=data["boxes"],
            types=data["types"],
            ids=data["ids"],
            num_points=data["num_points"],
            difficulty=data["difficulty"],
            nlz=nlz,
        )

    def equals(self, other: "Frame", atol: float = 0.0) -> bool:
        """Field-wise comparison (arrays with ``atol``), for tests and resume checks."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or a.shape != b.shape:
                    return False
                if a.dtype.kind in "fc":
                    if not np.allclose(a, b, atol=atol, rtol=0):
                        return False
                elif not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True


#: What reading a truncated or bit-flipped ``.npz`` raises (zip structure, CRC, npy header, deflate).
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError, struct.error,
           zlib.error, NotImplementedError, pa.ArrowException)


def verify_frame_file(path: str | os.PathLike) -> None:
    """Check a frame file whole: a zip whose every member matches its CRC and which holds the frame
    arrays; a ``FrameFormatError`` naming the path otherwise. Reads the file once (about as costly as
    loading it); the converter's resume check uses it so that a damaged file gets its segment redone."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
    except FileNotFoundError as e:
        raise FrameFormatError(f"{path}: frame file missing") from e
    except _DAMAGE as e:
        raise FrameFormatError(f"{path}: damaged frame file ({type(e).__name__}: {e})") from e
    if bad is not None:
        raise FrameFormatError(f"{path}: damaged frame file (CRC mismatch in {bad})")
    missing = [k for k in _required(names) if k not in names]
    if missing:
        raise FrameFormatError(f"{path}: missing arrays {missing}")


def _required(names) -> tuple[str, ...]:
    """The arrays a frame file with members ``names`` must hold: format 1's, or format 2's points."""
    if is_compact(names):
        return tuple(k for k in NPZ_ARRAYS if k != "points") + POINT_ARRAYS
    return NPZ_ARRAYS


def _index_from_name(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return 0
