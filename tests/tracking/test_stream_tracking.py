"""The tracker in the streaming loop: ids on every detection, restarted per segment, switched off by
config, and (with a detector that sees the ground truth with noise) ids that stay on their objects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from detector.eval.tracking_metrics import WaymoTrackingMetrics
from detector.models import build_model
from detector.models.outputs import Detections
from detector.streaming import Stream, stream_segments
from detector.tracking import TrackerConfig
from tests.helpers.scenes import make_scene, make_stream_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NoisyTruth(torch.nn.Module):
    """A stand-in detector that reports each frame's labelled boxes with centre noise (what a good detector
    does), so that track ids can be checked against the labels' identities."""

    def __init__(self, noise_m: float = 0.1, seed: int = 0):
        super().__init__()
        self.noise = noise_m
        self.gen = torch.Generator().manual_seed(seed)

    def init_state(self, batch_size):
        return None

    def step(self, frame, state):
        boxes, types = frame.boxes_of(0)
        boxes = boxes.clone()
        boxes[:, :2] += self.noise * torch.randn(boxes[:, :2].shape, generator=self.gen)
        return [Detections(boxes, torch.full((len(boxes),), 0.9), types)], state


def _frames(num_frames=30, seed=3):
    frames = make_stream_frames([make_scene(seed)], num_frames=num_frames, num_points=3000, seed=seed)
    # the scene's objects come in the same order every frame: their index is their id
    return [replace(f, box_ids=[f"o{i}" for i in range(len(f.types))]) for f in frames]


def test_ids_stay_on_their_objects_through_a_stream():
    metrics = WaymoTrackingMetrics()
    for r in stream_segments(NoisyTruth(), _frames()):
        assert r.track_ids is not None and len(r.track_ids) == len(r.boxes)
        assert list(r.gt_ids) == [f"o{i}" for i in range(len(r.gt_types))]
        metrics.add_frame(r.segment, r.timestamp_micros, r.gt_boxes, r.gt_types, r.gt_ids,
                          np.ones(len(r.gt_ids)), r.boxes, r.scores, r.types, r.track_ids)
    res = metrics.results()
    for cls in ("VEHICLE", "PEDESTRIAN", "CYCLIST"):
        r = res[f"OBJECT_TYPE_TYPE_{cls}_LEVEL_2"]
        assert r.num_objects_gt > 0 and r.num_mismatches == 0, (cls, r)


def test_a_new_segment_restarts_ids_and_tracker_off_gives_none():
    frames = _frames(4)
    second = [replace(f, segments=["other"]) for f in frames]
    stream = Stream(NoisyTruth())
    ids = [stream.step(f).detections.track_ids for f in frames + second]
    assert ids[0].tolist() == list(range(1, len(ids[0]) + 1))
    assert ids[4].tolist() == ids[0].tolist() and ids[3].tolist() == ids[0].tolist()
    off = Stream(NoisyTruth(), tracker=TrackerConfig(enabled=False))
    assert off.step(frames[0]).detections.track_ids is None and off.tracks.motion is not None
    bare = Stream(NoisyTruth(), tracker=TrackerConfig(enabled=False, motion_heading=False))
    assert bare.tracks.tracker is None


def test_the_detector_streams_with_track_ids():
    model = build_model("lstm", ["model.head.score_threshold=0.0", "model.head.pre_nms=50"]).eval()
    for r in stream_segments(model, _frames(3)):
        assert r.track_ids.dtype == np.int64 and len(r.track_ids) == len(r.scores) > 0
        assert len(set(r.track_ids.tolist())) == len(r.track_ids)


class DoubledTruth(NoisyTruth):
    """Each labelled box twice: the second 0.2 m aside with a lower score (a detector's duplicate)."""

    def step(self, frame, state):
        boxes, types = frame.boxes_of(0)
        twin = boxes.clone()
        twin[:, 0] += 0.2
        scores = torch.cat([torch.full((len(boxes),), 0.9), torch.full((len(boxes),), 0.8)])
        return [Detections(torch.cat([boxes, twin]), scores, torch.cat([types, types]))], state


def test_duplicates_are_scored_down_and_the_output_stays_sorted():
    frames = _frames(3)
    out = [Stream(DoubledTruth()).step(f).detections for f in frames]
    for det in out:
        n = len(det) // 2
        assert torch.all(det.scores[:-1] >= det.scores[1:])
        assert torch.allclose(det.scores[n:], torch.tensor(0.08)) and torch.all(det.scores[:n] == 0.9)
    kept = Stream(DoubledTruth(), tracker=TrackerConfig(duplicate_score_scale=1.0)).step(frames[0]).detections
    assert torch.all(kept.scores >= 0.8)
