"""The detector online: frames in time order, the temporal state carried from one to the next.

One loop serves validation, evaluation, prediction, the viewer and the benchmarks. ``Stream`` owns the
state of one stream of batch-size-1 frames and starts it afresh at a new segment name (a new segment
never sees the last one's state), where the model resets it (``frame.reset``, timestamp gaps: see
``Detector.step``) and, for diagnostics, every ``reset_every`` frames. ``stream`` and
``stream_segments`` iterate it over a sequence of frames.

A bidirectional model (``Detector.bidirectional``) looks at later frames too and cannot stream:
``SegmentBuffer`` takes the same frames in the same order, holds those of one segment and, when the
segment ends (a frame of another segment, or ``finish``), runs ``Detector.offline_segment`` over it and
hands back one ``StreamStep`` per frame, as a stream would have. Memory: the segment's input frames and
the model's bounded per-frame states (``offline_segment`` recomputes the backward steps), never a segment
of features. ``stream`` (so validation, ``detector.evaluate`` and ``detector.predict``) takes this path for
such models, so their metrics and predictions are written like any other model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from detector.data.batch import FrameBatch
from detector.models.motion_heading import MotionHeading

__all__ = ["FrameResult", "SegmentBuffer", "Stream", "StreamStep", "frame_result", "motion_heading_of", "stream",
           "stream_segments"]


def motion_heading_of(model: torch.nn.Module) -> MotionHeading | None:
    """The motion-heading step a stream of ``model`` applies (None when the model has it off:
    ``Detector.motion_heading``); its tracks break at the model's own gap threshold."""
    if not getattr(model, "motion_heading", False):
        return None
    gap = getattr(model, "max_gap_s", None)
    return MotionHeading() if gap is None else MotionHeading(max_gap_s=float(gap))


def _frames_or_none(reset_every: int | None) -> int | None:
    if reset_every is not None:
        reset_every = int(reset_every)
        if reset_every < 1:
            raise ValueError(f"reset_every must be >= 1 (or None: never), got {reset_every}")
    return reset_every


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

    @property
    def key(self) -> tuple[str, int]:
        """The frame's key in the Waymo metrics: (context name, frame timestamp)."""
        return self.segment, self.timestamp_micros


@dataclass
class StreamStep:
    """One frame of a stream: the frame (on the stream's device), its detections (``Detections`` of
    batch element 0), the state carried to the next frame and, when asked for, the frame's losses."""

    frame: FrameBatch
    detections: object
    state: object
    losses: dict[str, torch.Tensor] | None = None

    def result(self) -> FrameResult:
        return frame_result(self.frame, self.detections)


class Stream:
    """The online detector over one stream of batch-size-1 frames (see the module docstring).

    ``device=None`` leaves frames where they are (Lightning has already moved them)."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = "cpu",
                 reset_every: int | None = None) -> None:
        if getattr(model, "bidirectional", False):
            raise ValueError("a bidirectional model is not causal: run it offline over whole segments "
                             "(stream() or SegmentBuffer, Detector.offline_segment), not frame by frame")
        reset_every = _frames_or_none(reset_every)
        self.model = model
        self.device = device
        self.reset_every = reset_every
        self.motion = motion_heading_of(model)
        self.reset()


    def reset(self) -> None:
        """Forget the state: the next frame starts afresh."""
        self.state = None
        self.segment: str | None = None
        self._since = 0
        if self.motion is not None:
            self.motion.reset()

    @torch.no_grad()
    def step(self, frame: FrameBatch, return_losses: bool = False) -> StreamStep:
        if frame.batch_size != 1:
            raise ValueError(f"a stream takes frames of batch size 1, got {frame.batch_size}")
        if frame.segments[0] != self.segment or self.state is None:  # a new segment starts afresh
            self.reset()
            self.segment, self.state = frame.segments[0], self.model.init_state(1)
        elif bool(frame.reset[0]):
            self._since = 0
        if self.reset_every is not None and self._since % self.reset_every == 0:
            self.state = self.model.init_state(1)
        self._since += 1
        if self.device is not None:
            frame = frame.to(self.device)
        losses = None
        if return_losses:
            dets, self.state, losses = self.model.step(frame, self.state, return_losses=True)
        else:
            dets, self.state = self.model.step(frame, self.state)
        det = dets[0]
        if self.motion is not None:
            det = self.motion(det, frame.poses[0].cpu().numpy(), int(frame.timestamps[0]))
        return StreamStep(frame, det, self.state, losses)


def stream(model: torch.nn.Module, frames: Iterable[FrameBatch], device: torch.device | str | None = "cpu",
           reset_every: int | None = None) -> Iterator[StreamStep]:
    """``Stream(model, device, reset_every).step`` over ``frames`` in order; for a bidirectional model the
    steps of a ``SegmentBuffer``, a segment at a time."""
    if getattr(model, "bidirectional", False):
        buffer = SegmentBuffer(model, device, reset_every)
        for frame in frames:
            yield from buffer.add(frame)
        yield from buffer.finish()
        return
    s = Stream(model, device, reset_every)
    for frame in frames:
        yield s.step(frame)


class SegmentBuffer:
    """See the module docstring. ``reset_every`` (diagnostics): each run of that many frames of a
    segment is a segment of its own (no frame sees more than ``reset_every - 1`` others on either side)."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = "cpu",
                 reset_every: int | None = None) -> None:
        reset_every = _frames_or_none(reset_every)
        self.model = model
        self.device = device
        self.reset_every = reset_every
        self.motion = motion_heading_of(model)
        self._frames: list[FrameBatch] = []
        self._losses = False

    def add(self, frame: FrameBatch, return_losses: bool = False) -> list[StreamStep]:
        """Take the next frame; the steps of the segment it ends (empty while the segment goes on).
        ``return_losses``: the segment's steps carry their frames' losses (when any of its frames asks)."""
        if frame.batch_size != 1:
            raise ValueError(f"a stream takes frames of batch size 1, got {frame.batch_size}")
        done = []
        if self._frames and frame.segments[0] != self._frames[0].segments[0]:
            done = self.finish()
        if self.device is not None:
            frame = frame.to(self.device)
        self._frames.append(frame)
        self._losses = self._losses or return_losses
        return done

    def finish(self) -> list[StreamStep]:
        """The steps of the frames held (the segment so far), which are then let go."""
        frames, losses = self._frames, self._losses
        self._frames, self._losses = [], False
        if not frames:
            return []
        k = self.reset_every or len(frames)
        steps = []
        for start in range(0, len(frames), k):
            steps += self._run(frames[start:start + k], losses)
        return steps

    @torch.no_grad()
    def _run(self, frames: list[FrameBatch], return_losses: bool) -> list[StreamStep]:
        if return_losses:
            detections, losses = self.model.offline_segment(frames, return_losses=True)
        else:
            detections, losses = self.model.offline_segment(frames), [None] * len(frames)
        if self.motion is not None:
            self.motion.reset()
        steps = []
        for frame, dets, loss in zip(frames, detections, losses):
            det = dets[0]
            if self.motion is not None:
                det = self.motion(det, frame.poses[0].cpu().numpy(), int(frame.timestamps[0]))
            steps.append(StreamStep(frame, det, None, loss))
        return steps


def stream_segments(model: torch.nn.Module, frames: Iterable[FrameBatch],
                    device: torch.device | str | None = "cpu", reset_every: int | None = None) -> Iterator[FrameResult]:
    """``stream`` with each step as a ``FrameResult`` (ground truth and detections as numpy arrays).

    ``reset_every`` (diagnostics): also start the temporal state afresh every that many frames of a
    segment, so that no frame sees more than ``reset_every - 1`` earlier ones (1: every frame alone)."""
    for step in stream(model, frames, device, reset_every):
        yield step.result()


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
