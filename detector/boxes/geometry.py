"""Geometry of Waymo 7-DoF boxes ``(cx, cy, cz, length, width, height, heading)``, one definition each.

A box is a row of an ``(N, 7)`` tensor or array in the vehicle frame: centre in metres, length along the
heading, width across it, height up; ``heading`` in radians counter-clockwise from +x. Its *axis angle*
is the heading with front and back alike (in (-pi/2, pi/2]); its *frame* has the origin at the centre, u
along the heading (or the axis), v across it (to the left) and w up.

The angle and rotation helpers work on torch tensors and numpy arrays alike (they use operators, and
``cos``/``sin`` of the argument's library); corners are numpy (drawing and the IoU's polygons), the
point tests torch (targets and the box stages).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "wrap_angle",
    "turn_around",
    "axis_angle",
    "heading_direction",
    "axis_change",
    "to_box_frame",
    "from_box_frame",
    "CORNER_SIGNS",
    "box_corners",
    "bev_corners",
    "bev_radius",
    "bev_half_extent",
    "points_in_boxes",
    "points_in_boxes_paired",
    "points_in_box_frames",
]


def _cos_sin(angle):
    if isinstance(angle, torch.Tensor):
        return torch.cos(angle), torch.sin(angle)
    return np.cos(angle), np.sin(angle)


def wrap_angle(theta):
    """Angle(s) into [-pi, pi) (tensor, array or number)."""
    if not isinstance(theta, torch.Tensor):
        theta = np.asarray(theta)
    return (theta + math.pi) % (2 * math.pi) - math.pi


def turn_around(heading):
    """Heading(s) turned by pi, into [-pi, pi): the same axis, the other front."""
    return (heading + 2 * math.pi) % (2 * math.pi) - math.pi


def axis_angle(heading: torch.Tensor) -> torch.Tensor:
    """The axis angle of heading(s), ``atan2(sin 2t, cos 2t) / 2`` in (-pi/2, pi/2]: front or back unknown."""
    return 0.5 * torch.atan2(torch.sin(2 * heading), torch.cos(2 * heading))


def heading_direction(heading: torch.Tensor) -> torch.Tensor:
    """The direction bit of heading(s), float 0/1: 1 where the heading is its axis angle + pi."""
    return (torch.cos(heading - axis_angle(heading)) < 0).float()


def axis_change(target, heading):
    """Axis-angle difference ``target - heading`` in [-pi/2, pi/2) (front and back alike)."""
    return (target - heading + 0.5 * math.pi) % math.pi - 0.5 * math.pi


def to_box_frame(dx, dy, angle):
    """Offsets ``(dx, dy)`` from a box centre in the vehicle frame -> ``(u, v)`` along and across a box
    whose u axis points at ``angle`` (broadcasting; tensors or arrays)."""
    c, s = _cos_sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def from_box_frame(x0, y0, u, v, angle):
    """Inverse of :func:`to_box_frame` plus the centre: the vehicle-frame ``(x, y)`` of the point ``(u, v)``
    of a box centred at ``(x0, y0)`` whose u axis points at ``angle``."""
    c, s = _cos_sin(angle)
    return x0 + c * u - s * v, y0 + s * u + c * v


#: Corners of a box in half-sizes ``(u, v, w)``: the bottom face front-left, front-right, rear-right,
#: rear-left, then the top face in the same order.
CORNER_SIGNS = np.array([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
                         [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]], np.float64) * 0.5
#: The footprint's corners counter-clockwise (rows of ``CORNER_SIGNS``): a positive-area polygon.
_BEV_CCW = [1, 0, 3, 2]


def _footprint(boxes: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, K) x and y of the footprint points ``signs`` (K, 2) (half-sizes) of boxes (M, 7)."""
    lx = signs[None, :, 0] * boxes[:, None, 3]
    ly = signs[None, :, 1] * boxes[:, None, 4]
    return from_box_frame(boxes[:, None, 0], boxes[:, None, 1], lx, ly, boxes[:, None, 6])


def box_corners(boxes) -> np.ndarray:
    """(M, 7) boxes -> (M, 8, 3) corners in the order of ``CORNER_SIGNS`` (float64)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    x, y = _footprint(boxes, CORNER_SIGNS[:, :2])
    return np.stack([x, y, boxes[:, None, 2] + CORNER_SIGNS[None, :, 2] * boxes[:, None, 5]], axis=-1)


def bev_corners(boxes) -> np.ndarray:
    """(M, 7) boxes -> (M, 4, 2) bird's-eye-view corners, counter-clockwise for positive length and width."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    return np.stack(_footprint(boxes, CORNER_SIGNS[_BEV_CCW, :2]), axis=-1)


def bev_radius(boxes):
    """(N,) circumradius of each box's footprint (N, 7): boxes whose centres are farther apart than the sum
    of their radii do not overlap."""
    hypot = torch.hypot if isinstance(boxes, torch.Tensor) else np.hypot
    return 0.5 * hypot(boxes[:, 3], boxes[:, 4])


def bev_half_extent(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) half-sizes along x and y of the axis-aligned rectangle around each box's footprint (N, 7)."""
    c, s = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
    hx = 0.5 * (boxes[:, 3] * c + boxes[:, 4] * s)
    hy = 0.5 * (boxes[:, 3] * s + boxes[:, 4] * c)
    return np.stack([hx, hy], axis=1)


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """(N, M) bool: point (N, 3) inside box (M, 7), each box grown by ``margin`` on every side."""
    d = points[:, None, :] - boxes[None, :, :3]
    lx, ly = to_box_frame(d[..., 0], d[..., 1], boxes[:, 6])
    half = boxes[:, 3:6] * 0.5 + margin
    return (lx.abs() <= half[:, 0]) & (ly.abs() <= half[:, 1]) & (d[..., 2].abs() <= half[:, 2])


def points_in_boxes_paired(
    points: torch.Tensor, boxes: torch.Tensor, margin: float = 0.0, margin_below: float | None = None
) -> torch.Tensor:
    """(P,) bool: point i (P, 3) inside box i (P, 7) grown by ``margin`` (downwards by ``margin_below``,
    default ``margin``)."""
    d = points - boxes[:, :3]
    lx, ly = to_box_frame(d[:, 0], d[:, 1], boxes[:, 6])
    half = boxes[:, 3:6] * 0.5 + margin
    below = half[:, 2] if margin_below is None else boxes[:, 5] * 0.5 + margin_below
    return (lx.abs() <= half[:, 0]) & (ly.abs() <= half[:, 1]) & (d[:, 2] <= half[:, 2]) & (d[:, 2] >= -below)


#: width (m) of the x strips of the candidate search, and the key offset between strips (beyond any |y|)
_STRIP_M = 1.0
_KEY_SPAN = 1.0e6


def points_in_box_frames(
    points: torch.Tensor, boxes: torch.Tensor, margin: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The points (P, 3 + E) in each box's (K, 7) grown extent, in its axis frame: ``(box (n,), uvw (n, 3 + E))``.

    ``uvw`` are the coordinates along the axis (the axis angle, so the frame does not depend on which end
    is the front), across it and up from the box centre, divided by ``(1 + margin[i])`` half-sizes, so each
    lies in (-1, 1), then the point's E further columns as they are (a sweep's age); a point in two grown
    boxes appears twice.
    """
    k = int(boxes.shape[0])
    empty = (torch.zeros(0, dtype=torch.long, device=boxes.device), boxes.new_zeros(0, points.shape[1]))
    if k == 0 or points.shape[0] == 0:
        return empty
    half = 0.5 * boxes[:, 3:6] * (1.0 + torch.as_tensor(margin, dtype=boxes.dtype, device=boxes.device))
    reach = torch.hypot(half[:, 0], half[:, 1])
    # candidates: the points within each box's circumradius square, found as runs of the points sorted by
    # (x strip of _STRIP_M, y): one run per strip the square crosses
    strip = torch.floor(points[:, 0].double() / _STRIP_M)
    keys, order = torch.sort(strip * _KEY_SPAN + points[:, 1].double())
    bx, by, r = boxes[:, 0].double(), boxes[:, 1].double(), reach.double()
    first = torch.floor((bx - r) / _STRIP_M)
    strips = (torch.floor((bx + r) / _STRIP_M) - first).long() + 1
    pair_box = torch.repeat_interleave(torch.arange(k, device=boxes.device), strips)
    pair_strip = first[pair_box] + (torch.arange(pair_box.numel(), device=boxes.device)
                                    - (torch.cumsum(strips, 0) - strips)[pair_box])
    lo = torch.searchsorted(keys, pair_strip * _KEY_SPAN + (by - r)[pair_box])
    hi = torch.searchsorted(keys, pair_strip * _KEY_SPAN + (by + r)[pair_box], right=True)
    n = (hi - lo).clamp(min=0)
    total = int(n.sum())
    if total == 0:
        return empty
    pair = torch.repeat_interleave(torch.arange(pair_box.numel(), device=boxes.device), n)
    start = torch.cumsum(n, 0) - n
    pos = torch.arange(total, device=boxes.device) - start[pair] + lo[pair]
    box = pair_box[pair]
    p = points[order[pos]]
    b = boxes[box]
    u, v = to_box_frame(p[:, 0] - b[:, 0], p[:, 1] - b[:, 1], axis_angle(b[:, 6]))
    h = half[box]
    uvw = torch.stack([u / h[:, 0], v / h[:, 1], (p[:, 2] - b[:, 2]) / h[:, 2]], 1)
    inside = (uvw.abs() < 1).all(dim=1)
    return box[inside], torch.cat([uvw, p[:, 3:].to(uvw.dtype)], 1)[inside]
