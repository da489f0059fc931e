"""The detector online: frames in time order, the temporal state carried from one to the next.

One loop serves validation, evaluation, prediction, the viewer and the benchmarks. ``Stream`` owns the
state of one stream of batch-size-1 frames and starts it afresh at a new segment name (a new segment
never sees the last one's state), where the model resets it (``frame.reset``, timestamp gaps: see
``Detector.step``) and, for diagnostics, every ``reset_every`` frames. After the detector's decoding,
the stream's tracker (``detector.tracking``, settings ``TrackerConfig``: the ``tracker`` config group)
gives every detection a track id (``Detections.track_ids``) and the motion-heading step turns moving
boxes by their tracks' motion. ``stream`` and ``stream_segments`` iterate it over a sequence of frames.


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
from dataclasses import dataclass, replace

import numpy as np
import torch

from detector.data.batch import FrameBatch
from detector.models.motion_heading import MotionHeading
from detector.models.outputs import Detections
from detector.tracking import Tracker, TrackerConfig

__all__ = ["FrameResult", "SegmentBuffer", "Stream", "StreamStep", "frame_result", "motion_heading_of", "stream",
           "stream_segments", "tracker_config_of"]


def tracker_config_of(model: torch.nn.Module, config: TrackerConfig | None = None) -> TrackerConfig:
    """The tracker settings of a stream of ``model``: ``config`` (default ``TrackerConfig()``); a motion
    heading left unset (None) follows the model's ``motion_heading`` (``Detector.motion_heading``; a model
    without one: on); the tracks break at the model's own gap threshold."""
    config = TrackerConfig() if config is None else config
    if config.motion_heading is None:
        flag = getattr(model, "motion_heading", None)
        config = replace(config, motion_heading=True if flag is None else bool(flag))
    gap = getattr(model, "max_gap_s", None)
    return config if gap is None else replace(config, max_gap_s=float(gap))


def motion_heading_of(model: torch.nn.Module, config: TrackerConfig | None = None) -> MotionHeading | None:
    """The motion-heading step a stream of ``model`` applies (None when the tracker settings have it off)."""
    config = tracker_config_of(model, config)
    return MotionHeading(max_gap_s=config.max_gap_s) if config.motion_heading else None


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
    track_ids: np.ndarray | None = None  # (K,) int64, when the stream's tracker is on
    gt_ids: np.ndarray | None = None  # (M,) str, the labels' object ids

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

    ``device=None`` leaves frames where they are (Lightning has already moved them). ``tracker``: the
    tracker's settings (see ``tracker_config_of``); the tracker runs when it is enabled (track ids) or
    the motion heading needs it."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = "cpu",
                 reset_every: int | None = None, tracker: TrackerConfig | None = None) -> None:
        if getattr(model, "bidirectional", False):
            raise ValueError("a bidirectional model is not causal: run it offline over whole segments "
                             "(stream() or SegmentBuffer, Detector.offline_segment), not frame by frame")
        reset_every = _frames_or_none(reset_every)
        self.model = model
        self.device = device
        self.reset_every = reset_every
        self.tracks = _Tracks(model, tracker)
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next frame starts afresh."""
        self.state = None
        self.segment: str | None = None
        self._since = 0
        self.tracks.restart()

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
        return StreamStep(frame, self.tracks(dets[0], frame), self.state, losses)


class _Tracks:
    """What follows the detector's decoding in a stream: the tracker (track ids, duplicates scored down)
    and the motion-heading step that reads its tracks; one per stream, restarted with each segment."""

    def __init__(self, model: torch.nn.Module, tracker: TrackerConfig | None) -> None:
        self.config = tracker_config_of(model, tracker)
        self.motion = motion_heading_of(model, self.config)
        run = self.config.enabled or self.motion is not None
        self.tracker = Tracker(self.config) if run else None

    def restart(self) -> None:
        if self.motion is not None:
            self.motion.reset()
        if self.tracker is not None:
            self.tracker.restart()

    def __call__(self, det, frame: FrameBatch):
        """``det`` (the detections of frame 0 of ``frame``) with track ids and motion headings."""
        if self.tracker is None:
            return det
        pose, ts = frame.poses[0].cpu().numpy(), int(frame.timestamps[0])
        tracks = self.tracker.update(_numpy(det.boxes), _numpy(det.scores), _numpy(det.types), pose, ts)
        torch_out = isinstance(det, Detections)
        if self.motion is not None and torch_out:
            det = self.motion.apply(det, tracks, pose, ts)
        if self.config.enabled and hasattr(det, "track_ids"):
            ids = tracks.track_ids
            det = replace(det, track_ids=torch.as_tensor(ids, device=det.scores.device) if torch_out else ids)
            det = _scale_duplicates(det, tracks.duplicate, self.config.duplicate_score_scale)
        return det


def _scale_duplicates(det, duplicate: np.ndarray | None, scale: float):
    """``det`` with the scores of duplicate detections times ``scale``, re-sorted by score (descending)."""
    if duplicate is None or scale == 1.0 or not duplicate.any():
        return det
    if isinstance(det, Detections):
        factor = torch.as_tensor(np.where(duplicate, scale, 1.0), dtype=det.scores.dtype, device=det.scores.device)
        scores = det.scores * factor
        order = torch.argsort(scores, descending=True, stable=True)
        return Detections(det.boxes[order], scores[order], det.types[order], det.track_ids[order])
    scores = np.asarray(det.scores) * np.where(duplicate, scale, 1.0)
    order = np.argsort(-scores, kind="stable")
    return replace(det, boxes=np.asarray(det.boxes)[order], scores=scores[order], types=np.asarray(det.types)[order],
                   track_ids=np.asarray(det.track_ids)[order])


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def stream(model: torch.nn.Module, frames: Iterable[FrameBatch], device: torch.device | str | None = "cpu",
           reset_every: int | None = None, tracker: TrackerConfig | None = None) -> Iterator[StreamStep]:
    """``Stream(model, device, reset_every, tracker).step`` over ``frames`` in order; for a bidirectional
    model the steps of a ``SegmentBuffer``, a segment at a time."""
    if getattr(model, "bidirectional", False):
        buffer = SegmentBuffer(model, device, reset_every, tracker)
        for frame in frames:
            yield from buffer.add(frame)
        yield from buffer.finish()
        return
    s = Stream(model, device, reset_every, tracker)
    for frame in frames:
        yield s.step(frame)


class SegmentBuffer:
    """See the module docstring. ``reset_every`` (diagnostics): each run of that many frames of a
    segment is a segment of its own (no frame sees more than ``reset_every - 1`` others on either side)."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = "cpu",
                 reset_every: int | None = None, tracker: TrackerConfig | None = None) -> None:
        reset_every = _frames_or_none(reset_every)
        self.model = model
        self.device = device
        self.reset_every = reset_every
        self.tracks = _Tracks(model, tracker)
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
        self.tracks.restart()
        return [StreamStep(frame, self.tracks(dets[0], frame), None, loss)
                for frame, dets, loss in zip(frames, detections, losses)]


def stream_segments(model: torch.nn.Module, frames: Iterable[FrameBatch],
                    device: torch.device | str | None = "cpu", reset_every: int | None = None,
                    tracker: TrackerConfig | None = None) -> Iterator[FrameResult]:
    """``stream`` with each step as a ``FrameResult`` (ground truth and detections as numpy arrays).

    ``reset_every`` (diagnostics): also start the temporal state afresh every that many frames of a
    segment, so that no frame sees more than ``reset_every - 1`` earlier ones (1: every frame alone)."""
    for step in stream(model, frames, device, reset_every, tracker):
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
        track_ids=None if det.track_ids is None else det.track_ids.detach().cpu().numpy().astype(np.int64).reshape(-1),
        gt_ids=(np.asarray([frame.box_ids[i] for i in np.flatnonzero(gt.cpu().numpy())], dtype=str)
                if len(frame.box_ids) == len(gt) else None),
    )
