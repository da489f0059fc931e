"""Waymo 7-DoF boxes ``(cx, cy, cz, length, width, height, heading)``: the one place their geometry lives.

``detector.boxes.geometry``: angles (wrapping, the axis angle, the direction bit), rotation into and out of
a box's frame, corners and bird's-eye-view polygons, points in boxes; ``detector.boxes.iou``: rotated
BEV and 3D IoU (numpy, exact polygon clipping). The model (targets, NMS, the box stages), the
evaluation, the data augmentation and the viewer all use these; nothing here imports from the rest of
``detector``.
"""

from __future__ import annotations

from detector.boxes.geometry import (
    CORNER_SIGNS,
    axis_angle,
    axis_change,
    bev_corners,
    bev_half_extent,
    bev_radius,
    box_corners,
    from_box_frame,
    heading_direction,
    points_in_box_frames,
    points_in_boxes,
    points_in_boxes_paired,
    to_box_frame,
    turn_around,
    wrap_angle,
)
from detector.boxes.iou import bev_iou, intersection_area_bev, iou3d, paired_iou

__all__ = [
    "CORNER_SIGNS",
    "axis_angle",
    "axis_change",
    "bev_corners",
    "bev_half_extent",
    "bev_radius",
    "box_corners",
    "from_box_frame",
    "heading_direction",
    "points_in_box_frames",
    "points_in_boxes",
    "points_in_boxes_paired",
    "to_box_frame",
    "turn_around",
    "wrap_angle",
    "bev_iou",
    "intersection_area_bev",
    "iou3d",
    "paired_iou",
]
