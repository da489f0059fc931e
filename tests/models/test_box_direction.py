"""The box-direction stage: its grid of a box's points, the antisymmetric logit, learning the front of
a car-like shape from labelled boxes, and its place in the Detector (loss and decoding)."""

import math

import pytest
import torch

from detector.models import Detections, build_model
from detector.models.box_direction import BoxDirection, box_grid_counts
from detector.models.detector import Detector
from tests.helpers.box_stages import fit_on_cars
from tests.helpers.scenes import car_boxes_and_points as _cars
from tests.helpers.scenes import make_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_grid_counts_each_point_in_its_cell_of_the_box_frame():
    a = math.pi / 3
    box = torch.tensor([[10.0, -3.0, 1.0, 4.0, 2.0, 2.0, a]])
    # in the box frame (u along the axis, v across to its left): u = +1.5, v = +0.5, z 0.5 above the
    # centre; and one point beyond the grid; margins 0 so the grid is the box
    u, v = 1.5, 0.5
    points = torch.tensor([[10.0 + u * math.cos(a) - v * math.sin(a), -3.0 + u * math.sin(a) + v * math.cos(a), 1.5],
                           [10.0, 3.0, 1.0]])

    grid = box_grid_counts(points, box, (4, 2, 2), (0.0, 0.0, 0.0))
    assert grid.shape == (1, 4, 2, 2)
    assert grid.sum() == 1
    # u = 1.5 of half-length 2 -> cell 3 of 4; v = 0.5 of half-width 1 -> cell 1 of 2; z -> cell 1 of 2
    assert grid[0, 3, 1, 1] == 1



def test_grid_is_the_same_for_a_box_and_its_turn_by_pi_and_the_logit_is_antisymmetric():
    boxes, points = _cars(3, seed=1)
    turned = boxes.clone()
    turned[:, 6] = turned[:, 6] + math.pi
    a, b = box_grid_counts(points, boxes, (12, 4, 6), (0.2, 0.4, 0.2)), box_grid_counts(
        points, turned, (12, 4, 6), (0.2, 0.4, 0.2))
    torch.testing.assert_close(a, b)  # the grid depends on the box's axis only
    stage = BoxDirection([1, 2, 4])
    cls = torch.zeros(3, dtype=torch.long)
    torch.testing.assert_close(stage.logits(a, cls), -stage.logits(torch.flip(a, dims=(1, 2)), cls))
    # the target says which way along the axis the heading points: opposite for the turned boxes
    assert torch.equal(BoxDirection.target(boxes), 1 - BoxDirection.target(turned))


@pytest.mark.parametrize("encoder", ["grid", "points"])
def test_stage_learns_the_front_from_labelled_boxes_and_sets_the_heading_of_detections(encoder):
    stage = fit_on_cars(BoxDirection([1, 2, 4], apply_to=[1], encoder=encoder), steps=120)
    boxes, points = _cars(40, seed=7)
    # detections with the right axis but every front reversed, plus a pedestrian (not applied to) and a
    # car far from any point (keeps its own heading)
    wrong = boxes.clone()
    wrong[:, 6] = wrong[:, 6] + math.pi
    extra = torch.tensor([[boxes[0, 0], boxes[0, 1], 0.85, 0.9, 0.9, 1.7, 2.0],
                          [500.0, 500.0, 0.85, 4.6, 2.0, 1.7, 1.0]])
    dets = Detections(torch.cat([wrong, extra]), torch.ones(42), torch.tensor([1] * 40 + [2, 1]))
    out = stage.apply(points, dets)
    right = torch.cos(out.boxes[:40, 6] - boxes[:, 6]) > 0.99
    assert right.float().mean() >= 0.95, float(right.float().mean())
    torch.testing.assert_close(out.boxes[40:], extra)  # the pedestrian and the empty box keep theirs
    torch.testing.assert_close(out.boxes[:, :6], dets.boxes[:, :6])  # only the heading changes
    assert (out.boxes[:, 6] >= -math.pi).all() and (out.boxes[:, 6] < math.pi).all()


def test_points_encoder_gives_a_box_and_its_turn_by_pi_opposite_logits():
    boxes, points = _cars(1, seed=1)
    turned = boxes.clone()
    turned[:, 6] = turned[:, 6] + math.pi
    cls = torch.zeros(1, dtype=torch.long)
    stage = BoxDirection([1, 2, 4], encoder="points", max_points=50)
    a, count = stage.front_logits(points, boxes, cls)
    torch.testing.assert_close(a, stage.front_logits(points, turned, cls)[0])  # the axis' frame, not the front's
    assert int(count[0]) == len(points) > 50  # it counted them all and read the evenly spaced 50
    # the points turned by pi about the box's centre: the network's two readings swap, the logit changes sign
    stage.max_points = 10_000
    mirrored = points.clone()
    mirrored[:, :2] = 2 * boxes[0, :2] - points[:, :2]
    torch.testing.assert_close(stage.front_logits(points, boxes, cls)[0], -stage.front_logits(mirrored, boxes, cls)[0])


def test_stage_refuses_classes_it_does_not_train_and_bad_settings():
    with pytest.raises(ValueError, match="apply_to"):
        BoxDirection([1, 2, 4], apply_to=[3])
    with pytest.raises(ValueError, match="train_frames"):
        BoxDirection([1, 2, 4], train_frames="first")
    with pytest.raises(ValueError, match="encoder"):
        BoxDirection([1, 2, 4], encoder="voxels")
    with pytest.raises(ValueError, match="max_points"):
        BoxDirection([1, 2, 4], encoder="points", max_points=0)


@pytest.mark.parametrize("train_frames", ["last", "all"])
def test_stage_loss_reads_the_clip_frames_it_trains_on(train_frames):
    clip = make_clip(num_frames=3, batch_size=2, num_points=2500, seed=0)
    stage = BoxDirection([1, 2, 4], min_points=1, train_frames=train_frames).eval()  # eval: no jitter
    per_frame = [stage.loss(f.points, f.boxes, f.types, f.num_points) for f in clip.frames]
    want = torch.stack(per_frame).mean() if train_frames == "all" else per_frame[-1]
    torch.testing.assert_close(stage.clip_loss(clip.frames), want)
    assert len(stage.training_frames(clip.frames)) == (3 if train_frames == "all" else 1)


def test_detector_adds_the_stage_loss_and_checks_its_classes():
    model = build_model("lstm")
    assert model.box_stages["direction"].classes == model.head.classes
    clip = make_clip(num_frames=2, batch_size=2, num_points=2500, seed=0)
    out = model(clip)
    assert "dir_box" in out.losses and torch.isfinite(out.losses["dir_box"])
    out.losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.box_stages["direction"].parameters())
    with pytest.raises(ValueError, match="box_stages.direction.classes"):
        Detector(model.voxelizer, model.backbone, model.temporal, model.head,
                 box_stages={"direction": BoxDirection([1])})
