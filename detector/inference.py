"""Streaming inference over whole segments, shared by validation, evaluation, prediction and the viewer.

The detector runs frame by frame with its temporal state carried (``Detector.step``), exactly as it
would online; the state resets where a frame says so (segment start, timestamp gap).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from detector.data.batch import FrameBatch


@dataclass
class FrameResult:
    """Ground truth and detections of one frame, as numpy arrays (Waymo box convention)."""

    segment: str
    index: int
    timestamp_micros: int
    gt_boxes: np.ndarray
    gt_types: np.ndarray
    gt_num_points: np.ndarray
    gt_difficulty: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    types: np.ndarray


def stream_segments(model: torch.nn.Module, frames: Iterable[FrameBatch],
                    device: torch.device | str = "cpu", reset_every: int | None = None) -> Iterator[FrameResult]:
    """Run ``model.step`` over batch-size-1 frames in order; yield one ``FrameResult`` per frame. The
    state starts afresh at each new segment name, and where the model resets it (``frame.reset``, gaps).

    ``reset_every`` (diagnostics): also start the temporal state afresh every that many frames of a
    segment, so that no frame sees more than ``reset_every - 1`` earlier ones (1: every frame alone)."""
    if getattr(model, "bidirectional", False):
        raise ValueError("a bidirectional model is not causal: run it offline over whole segments "
                         "(Detector.offline_segment), not frame by frame")
    if reset_every is not None:
        reset_every = int(reset_every)
        if reset_every < 1:
            raise ValueError(f"reset_every must be >= 1 (or None: never), got {reset_every}")
    state = model.init_state(1)
    segment, since = None, 0
    with torch.no_grad():
        for frame in frames:
            if frame.batch_size != 1:
                raise ValueError(f"stream_segments expects batch size 1, got {frame.batch_size}")
            if frame.segments[0] != segment:  # a new segment never sees the last one's state
                segment, since, state = frame.segments[0], 0, model.init_state(1)
            elif bool(frame.reset[0]):
                since = 0
            if reset_every is not None and since % reset_every == 0:
                state = model.init_state(1)
            since += 1
            frame = frame.to(device)
            dets, state = model.step(frame, state)
            yield frame_result(frame, dets[0])


def frame_result(frame: FrameBatch, det) -> FrameResult:
    """Pair frame 0 of ``frame`` with its detections ``det`` (a ``Detections``)."""
    gt = frame.boxes[:, 0] == 0
    return FrameResult(
        segment=frame.segments[0],
        index=int(frame.indices[0]),
        timestamp_micros=int(frame.timestamps[0]),
        gt_boxes=frame.boxes[gt, 1:].double().cpu().numpy(),
        gt_types=frame.types[gt].cpu().numpy(),
        gt_num_points=frame.num_points[gt].cpu().numpy(),
        gt_difficulty=frame.difficulty[gt].cpu().numpy(),
        boxes=det.boxes.detach().double().cpu().numpy().reshape(-1, 7),
        scores=det.scores.detach().double().cpu().numpy().reshape(-1),
        types=det.types.detach().cpu().numpy().astype(np.int64).reshape(-1),
    )
