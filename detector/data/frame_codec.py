"""The points of a frame file, compact: frame-store format 2.

Format 1 stored ``points`` as (N, 5) float32 (20 bytes a point: 6.8-7.1 MB a Waymo-size frame of both
returns). Format 2 stores, in the same ``.npz`` (a zip whose members carry CRCs, checked on every read):

- ``xyz_mm``: the coordinates rounded to millimetres (error at most 0.5 mm; the sensor's noise is
  centimetres), as differences between consecutive points of each axis (points come in scan order, so
  neighbours are close), int16 (N, 3), compressed with zstd; ``xyz_mm_escapes`` (K, 2) int64 holds the
  few differences beyond int16 (a jump between scan lines or lidars) as (flat index, difference);
- ``ie``: intensity and elongation as float16 (N, 2) (rounded to the nearest float16: within half a
  float16 step), zstd; a frame with a value beyond float16's range keeps float32 (``ie_f32``);
- ``nlz``: the no-label-zone flags bit-packed;
- ``num_points_stored``; every other array as in format 1.

About 1.9 MB a Waymo-size frame; loading decompresses at memory speed (docs/studies/cluster.md has the
figures). ``encode_points``/``decode_points`` are exact inverses up to that rounding, and deterministic:
the same points give the same bytes (the v1/v2 byte identity of converted stores holds).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

#: Members of a format-2 frame file that replace format 1's ``points`` (``nlz`` is packed when present).
POINT_ARRAYS = ("xyz_mm", "xyz_mm_escapes", "num_points_stored")
_CODEC = "zstd"
_LEVEL = 1
_F16_MAX = float(np.finfo(np.float16).max)
_I32_MM = (2**31 - 1) / 1000.0


def _compress(a: np.ndarray) -> np.ndarray:
    raw = np.ascontiguousarray(a).tobytes()
    return np.frombuffer(pa.Codec(_CODEC, compression_level=_LEVEL).compress(raw, asbytes=True), np.uint8)


def _decompress(blob: np.ndarray, dtype, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = pa.decompress(blob, decompressed_size=size, codec=_CODEC)  # a pyarrow buffer: no copy below
    return np.frombuffer(raw, dtype).reshape(shape)


def encode_points(points: np.ndarray, nlz: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Format-2 arrays of ``points`` (N, 5) float32 (finite, within +-2147 km) and ``nlz`` (N,) bool."""
    points = np.asarray(points, np.float32)
    n = len(points)
    xyz = points[:, :3]
    if n and not (np.isfinite(xyz).all() and np.abs(xyz).max() < _I32_MM):
        raise ValueError("frame points must be finite and within +-2147 km to be stored")
    mm = np.rint(xyz.astype(np.float64) * 1000.0).astype(np.int64)  # (N, 3)
    delta = np.diff(mm, axis=0, prepend=np.zeros((1, 3), np.int64))
    big = np.flatnonzero(np.abs(delta) > np.iinfo(np.int16).max)
    escapes = np.stack([big, delta.reshape(-1)[big]], axis=1).astype(np.int64).reshape(-1, 2)
    small = delta.reshape(-1).copy()
    small[big] = 0
    out = {"xyz_mm": _compress(small.astype(np.int16)), "xyz_mm_escapes": escapes,
           "num_points_stored": np.int64(n)}
    ie = np.ascontiguousarray(points[:, 3:5])
    if n and np.abs(ie).max() > _F16_MAX:
        out["ie_f32"] = _compress(ie)
    else:
        out["ie"] = _compress(ie.astype(np.float16))
    if nlz is not None:
        out["nlz_bits"] = np.packbits(np.asarray(nlz, bool))
    return out


def decode_points(z) -> tuple[np.ndarray, np.ndarray | None]:
    """``(points, nlz)`` from the format-2 members of ``z`` (an open ``np.load`` of the file)."""
    n = int(z["num_points_stored"])
    delta = torch.from_numpy(_decompress(z["xyz_mm"], np.int16, (n, 3)))
    escapes = z["xyz_mm_escapes"]
    if len(escapes):
        delta = delta.to(torch.int32)
        delta.view(-1)[torch.from_numpy(escapes[:, 0])] = torch.from_numpy(escapes[:, 1]).to(torch.int32)
    points = np.empty((n, 5), np.float32)
    # torch: a running sum down the rows and a multiply into the strided columns, each one pass
    torch.mul(torch.cumsum(delta, 0, dtype=torch.int32), 1e-3, out=torch.from_numpy(points)[:, :3])
    if "ie_f32" in z.files:
        points[:, 3:5] = _decompress(z["ie_f32"], np.float32, (n, 2))
    else:
        ie = torch.from_numpy(_decompress(z["ie"], np.float16, (n, 2))).float()  # contiguous: vectorised
        torch.from_numpy(points)[:, 3:5].copy_(ie)
    nlz = np.unpackbits(z["nlz_bits"], count=n).view(bool) if "nlz_bits" in z.files else None
    return points, nlz


def as_stored(points: np.ndarray) -> np.ndarray:
    """``points`` as a format-2 frame file gives them back (bit for bit), without writing one: what the
    model sees of a converted frame, for frames read straight from records (``detector.predict``)."""
    points = np.asarray(points, np.float32)
    if not np.isfinite(points[:, :3]).all():
        return points  # kept as they are (format 1)
    out = np.empty_like(points)
    mm = np.rint(points[:, :3].astype(np.float64) * 1000.0).astype(np.int32)
    out[:, :3] = np.multiply(mm, np.float32(1e-3), dtype=np.float32)
    ie = points[:, 3:5]
    out[:, 3:5] = ie if len(ie) and np.abs(ie).max() > _F16_MAX else ie.astype(np.float16)
    return out


def is_compact(names) -> bool:
    """Whether the members ``names`` of a frame file are format 2's."""
    return "xyz_mm" in names


__all__ = ["POINT_ARRAYS", "as_stored", "decode_points", "encode_points", "is_compact"]
