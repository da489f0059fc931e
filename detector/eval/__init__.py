"""Evaluation: rotated 3D IoU, the Waymo detection metrics (AP/APH), submission files."""

from detector.boxes.iou import bev_iou, iou3d, paired_iou
from detector.eval.config import MetricsSpec, default_config
from detector.eval.submission import (
    FrameObjects,
    ObjectsWriter,
    SubmissionError,
    detections_to_objects,
    frame_key,
    ground_truth_to_objects,
    objects_to_frames,
    read_objects,
    write_objects,
)
from detector.eval.waymo_metrics import (
    PRCurve,
    WaymoMetrics,
    evaluate_objects,
    evaluate_objects_curves,
    mean_average_precision,
)

__all__ = [
    "FrameObjects", "ObjectsWriter", "ground_truth_to_objects", "MetricsSpec", "PRCurve", "SubmissionError",
    "WaymoMetrics", "bev_iou", "default_config",
    "detections_to_objects", "evaluate_objects", "evaluate_objects_curves", "frame_key", "iou3d",
    "mean_average_precision", "objects_to_frames", "paired_iou", "read_objects", "write_objects",
]
