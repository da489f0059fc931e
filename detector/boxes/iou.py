"""Rotated IoU of Waymo 7-DoF boxes ``(cx, cy, cz, length, width, height, heading)``, vectorized.

The bird's-eye-view intersection is the area of box A clipped by the four half-planes of box B
(Sutherland-Hodgman). The clipping is branch-free and vectorized over pairs: a vertex outside the
clip line is replaced by its projection onto that line and every edge also emits its crossing point
(or a duplicate vertex), so each clip doubles a fixed-size vertex array instead of compacting it.
Projected vertices only add zero-area back-and-forth runs along the clip line, so the shoelace
area of the result is the area of the clipped polygon.

Pairs whose circumscribed circles (or height ranges, in 3D) do not overlap are never clipped.
As in the official Waymo metrics, a box with a length, width or height at most 0.01 m or at
least 1e6 m has IoU 0 with everything.
"""

from __future__ import annotations

import numpy as np

from detector.boxes.geometry import bev_corners, bev_radius

__all__ = ["MIN_BOX_DIM", "MAX_BOX_DIM", "valid_dims", "intersection_area_bev", "candidate_mask", "paired_iou",
           "bev_iou", "iou3d"]

#: Boxes with a dimension at or below this (metres) have IoU 0 (official ``kMinBoxDim``).
MIN_BOX_DIM = 1e-2
#: Boxes with a dimension at or above this have IoU 0 (official ``kMaxBoxDim``).
MAX_BOX_DIM = 1e6
_UNION_EPS = 1e-6
_CHUNK = 1024


def _as_boxes(boxes, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 7)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise ValueError(f"{name}: expected boxes of shape (N, 7), got {arr.shape}")
    return arr


def valid_dims(boxes: np.ndarray, use_height: bool = True) -> np.ndarray:
    """(N,) bool: the boxes whose sizes lie within (MIN_BOX_DIM, MAX_BOX_DIM) (the height only in 3D)."""
    dims = boxes[:, 3:6]
    small = dims[:, :3] if use_height else dims[:, :2]
    return (small > MIN_BOX_DIM).all(axis=1) & (dims < MAX_BOX_DIM).all(axis=1)


def _next(a: np.ndarray) -> np.ndarray:
    """The next vertex of each polygon (cyclic, along axis 1)."""
    return np.concatenate([a[:, 1:], a[:, :1]], axis=1)


def intersection_area_bev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BEV intersection area of paired boxes: a (P, 7), b (P, 7) -> (P,)."""
    if len(a) > _CHUNK:  # chunks keep the temporaries in cache: 2-3x faster on long inputs
        return np.concatenate([_intersection_area_bev(a[i:i + _CHUNK], b[i:i + _CHUNK])
                               for i in range(0, len(a), _CHUNK)])
    return _intersection_area_bev(a, b)


def _intersection_area_bev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    if n == 0:
        return np.zeros(0)
    # Work relative to the centre of A: smaller coordinates, less cancellation in the shoelace sum.
    ox, oy = a[:, 0:1], a[:, 1:2]
    ca, cb = bev_corners(a), bev_corners(b)
    x, y = ca[..., 0] - ox, ca[..., 1] - oy  # (P, V) polygon, V doubles at each clip
    bx, by = cb[..., 0] - ox, cb[..., 1] - oy
    for k in range(4):
        k1 = (k + 1) % 4
        x0, y0 = bx[:, k:k + 1], by[:, k:k + 1]
        ex, ey = bx[:, k1:k1 + 1] - x0, by[:, k1:k1 + 1] - y0
        length = np.hypot(ex, ey)
        length[length == 0] = 1.0
        # Inward unit normal of a counter-clockwise edge: the edge direction turned by +90 degrees.
        nx, ny = -ey / length, ex / length
        dist = (x - x0) * nx + (y - y0) * ny
        out = np.minimum(dist, 0.0)
        px, py = x - out * nx, y - out * ny  # vertices outside moved onto the clip line
        nxt = _next(dist)
        crossing = (dist >= 0) != (nxt >= 0)
        t = np.where(crossing, dist / np.where(crossing, dist - nxt, 1.0), 0.0)
        # Each edge emits its (projected) start vertex, then its crossing point, or the start
        # vertex again (a zero-length edge) when it does not cross the line.
        qx = np.where(crossing, x + t * (_next(x) - x), px)
        qy = np.where(crossing, y + t * (_next(y) - y), py)
        v = x.shape[1]
        x, y = np.empty((n, 2 * v)), np.empty((n, 2 * v))
        x[:, 0::2], x[:, 1::2] = px, qx
        y[:, 0::2], y[:, 1::2] = py, qy
    area2 = (x * _next(y) - _next(x) * y).sum(axis=1)
    return np.maximum(area2 * 0.5, 0.0)


def candidate_mask(a: np.ndarray, b: np.ndarray, use_height: bool = True) -> np.ndarray:
    """(N, M) bool: pairs that may overlap (circumscribed circles, and heights in 3D)."""
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    reach = bev_radius(a)[:, None] + bev_radius(b)[None, :]
    mask = dx * dx + dy * dy <= reach * reach
    if use_height:
        dz = np.abs(a[:, None, 2] - b[None, :, 2])
        mask &= dz <= 0.5 * (a[:, None, 5] + b[None, :, 5])
    mask &= valid_dims(a, use_height)[:, None] & valid_dims(b, use_height)[None, :]
    return mask


def paired_iou(a: np.ndarray, b: np.ndarray, use_height: bool = True) -> np.ndarray:
    """IoU of paired boxes a[i], b[i]: (P, 7), (P, 7) -> (P,), 3D (default) or BEV."""
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired boxes must have equal shapes, got {a.shape} and {b.shape}")
    area = intersection_area_bev(a, b)
    if use_height:
        za0, za1 = a[:, 2] - a[:, 5] * 0.5, a[:, 2] + a[:, 5] * 0.5
        zb0, zb1 = b[:, 2] - b[:, 5] * 0.5, b[:, 2] + b[:, 5] * 0.5
        dz = np.minimum(za1, zb1) - np.maximum(za0, zb0)
        inter = area * np.maximum(dz, 0.0)
        vol_a = a[:, 3] * a[:, 4] * a[:, 5]
        vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    else:
        inter = area
        vol_a = a[:, 3] * a[:, 4]
        vol_b = b[:, 3] * b[:, 4]
    union = vol_a + vol_b - inter
    ok = (union > _UNION_EPS) & valid_dims(a, use_height) & valid_dims(b, use_height)
    iou = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


def _dense_iou(a, b, use_height: bool) -> np.ndarray:
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    out = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return out
    ia, ib = np.nonzero(candidate_mask(a, b, use_height))
    if len(ia):
        out[ia, ib] = paired_iou(a[ia], b[ib], use_height)
    return out


def bev_iou(a, b) -> np.ndarray:
    """Bird's-eye-view rotated IoU matrix: a (N, 7), b (M, 7) -> (N, M) float64."""
    return _dense_iou(a, b, use_height=False)


def iou3d(a, b) -> np.ndarray:
    """3D IoU matrix (BEV rotated intersection x height overlap): a (N, 7), b (M, 7) -> (N, M)."""
    return _dense_iou(a, b, use_height=True)
