"""Evaluation: rotated 3D IoU, the Waymo detection metrics (AP/APH), submission files."""

from detector.eval.iou import bev_iou, iou3d, paired_iou

__all__ = ["bev_iou", "iou3d", "paired_iou"]
