"""The box-refinement stage: its residual code, one answer for both readings of a box's axis, learning
to move jittered car boxes back onto their points, and its place in the Detector (loss and decoding)."""

import math

import pytest
import torch

from detector.boxes.iou import paired_iou
from detector.models import Detections, build_model
from detector.models.box_refine import BoxRefine, apply_residuals, box_residuals, sweep_xyz_age
from detector.models.box_stage import jitter_boxes
from detector.models.detector import Detector
from detector.models.state import Sweep
from tests.helpers.box_stages import fit_on_cars
from tests.helpers.scenes import car_boxes_and_points, make_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(paired_iou(a.double().numpy(), b.double().numpy()))


def test_residuals_take_a_box_to_its_truth_and_keep_its_front():
    boxes, _ = car_boxes_and_points(20, seed=3)
    moved = jitter_boxes(boxes, torch.Generator().manual_seed(0), (0.1, 0.1, 0.05), 0.2, (0.1, 0.1, 0.1),
                         relative=True)
    back = apply_residuals(moved, box_residuals(moved, boxes))
    torch.testing.assert_close(back[:, :6], boxes[:, :6], atol=1e-4, rtol=1e-4)
    # the heading comes back to the truth's, on the side of the moved box's front
    assert (torch.cos(back[:, 6] - boxes[:, 6]) > 0.9999).all()
    turned = moved.clone()
    turned[:, 6] += math.pi
    back_turned = apply_residuals(turned, box_residuals(turned, boxes))
    torch.testing.assert_close(back_turned[:, :6], boxes[:, :6], atol=1e-4, rtol=1e-4)
    assert (torch.cos(back_turned[:, 6] - boxes[:, 6]) < -0.9999).all()  # the front stays the input's


def test_a_box_and_its_turn_by_pi_are_moved_to_the_same_place():
    boxes, points = car_boxes_and_points(6, seed=4)
    stage = BoxRefine([1, 2, 4]).eval()
    for p in stage.parameters():  # large random weights: residuals far from 0
        torch.nn.init.normal_(p, std=0.3)
    turned = boxes.clone()
    turned[:, 6] = turned[:, 6] + math.pi
    cls = torch.zeros(6, dtype=torch.long)
    a, _ = stage.residuals(points, boxes, cls)
    b, _ = stage.residuals(points, turned, cls)
    assert a.abs().max() > 1e-3
    pa = apply_residuals(boxes, a * stage.scale)
    pb = apply_residuals(turned, b * stage.scale)
    torch.testing.assert_close(pa[:, :6], pb[:, :6], atol=1e-4, rtol=1e-4)
    assert (torch.cos(pa[:, 6] - pb[:, 6]) < -0.9999).all()


def test_stage_learns_to_move_jittered_boxes_onto_their_points():
    stage = fit_on_cars(BoxRefine([1, 2, 4], apply_to=[1]), steps=150)
    boxes, points = car_boxes_and_points(40, seed=7)
    seen = jitter_boxes(boxes, torch.Generator().manual_seed(1), stage.jitter_centre, stage.jitter_heading,
                        stage.jitter_size, relative=True)
    # a pedestrian on a car (not applied to) and a car far from any point (too few points: kept)
    extra = torch.tensor([[boxes[0, 0], boxes[0, 1], 0.85, 0.9, 0.9, 1.7, 2.0],
                          [500.0, 500.0, 0.85, 4.6, 2.0, 1.7, 1.0]])
    dets = Detections(torch.cat([seen, extra]), torch.ones(42), torch.tensor([1] * 40 + [2, 1]))
    out = stage.apply(points, dets)
    before, after = _iou(seen, boxes), _iou(out.boxes[:40], boxes)
    assert float(after.mean()) >= float(before.mean()) + 0.08, (float(before.mean()), float(after.mean()))
    assert float((after >= 0.7).float().mean()) >= float((before >= 0.7).float().mean()) + 0.2
    torch.testing.assert_close(out.boxes[40:], extra)
    torch.testing.assert_close(out.scores, dets.scores)


def test_stage_refuses_bad_settings():
    with pytest.raises(ValueError, match="apply_to"):
        BoxRefine([1, 2, 4], apply_to=[3])
    with pytest.raises(ValueError, match="jitter"):
        BoxRefine([1, 2, 4], jitter_heading=0.0)


def test_detector_adds_the_stage_loss_and_checks_its_classes():
    model = build_model("lstm")
    stage = model.box_stages["refine"]
    assert isinstance(stage, BoxRefine) and stage.classes == model.head.classes
    assert "refine" not in build_model("lstm_paper_head").box_stages
    clip = make_clip(num_frames=2, batch_size=2, num_points=2500, seed=0)
    out = model(clip)
    assert "refine_box" in out.losses and torch.isfinite(out.losses["refine_box"])
    out.losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.box_stages["refine"].parameters())
    model.eval()
    state = model.init_state(2)
    dets, _ = model.step(clip.frames[0], state)
    assert len(dets) == 2
    with pytest.raises(ValueError, match="box_stages.refine.classes"):
        Detector(model.voxelizer, model.backbone, model.temporal, model.head, box_stages={"refine": BoxRefine([1])})


def test_sweep_points_are_moved_by_the_poses_and_carry_their_age():
    # the ego drove 2 m forward between the sweeps: a point 10 m ahead then is 8 m ahead now
    now = torch.tensor([[0.0, 5.0, 1.0, 0.5, 0.2, 0.0]])
    before = Sweep(torch.tensor([[0.0, 10.0, 0.0, 0.5, 0.3, 0.0]]), torch.eye(4, dtype=torch.float64)[None],
                   torch.tensor([1_000_000]))
    pose = torch.eye(4, dtype=torch.float64)
    pose[0, 3] = 2.0
    got = sweep_xyz_age(now, pose[None], torch.tensor([1_100_000]), [before])
    torch.testing.assert_close(got, torch.tensor([[0.0, 5.0, 1.0, 0.5, 0.0], [0.0, 8.0, 0.0, 0.5, 0.1]]))


def test_a_stage_of_two_frames_reads_the_sweep_before_in_training_and_streaming():
    # the single-frame network: what differs between a frame streamed and the same frame alone is then the
    # stage's sweep before; every site a candidate, so there are boxes to move
    model = build_model("single_frame", ["model.box_stages.refine.frames=2", "model.head.score_threshold=[0.0,0.0,0.0]",
                                         "+model.box_stages.refine.min_points=1"])
    assert model.box_stages["refine"].frames == 2 and model.box_stages["direction"].frames == 1
    for p in model.box_stages["refine"].parameters():  # large random weights: residuals far from 0
        torch.nn.init.normal_(p, std=0.3)
    model.eval()
    clip = make_clip(num_frames=3, batch_size=2, num_points=2500, seed=0)
    f0, f1, f2 = clip.frames
    # training: the last frame's loss reads its points and the frame before's
    swept = sweep_xyz_age(f2.points, f2.poses, f2.timestamps, [Sweep(f1.points, f1.poses, f1.timestamps)])
    torch.testing.assert_close(model.box_stages["refine"].clip_loss(clip.frames),
                               model.box_stages["refine"].loss(swept, f2.boxes, f2.types, f2.num_points))
    assert not torch.allclose(model.box_stages["refine"].clip_loss(clip.frames),
                              model.box_stages["refine"].loss(sweep_xyz_age(f2.points, f2.poses, f2.timestamps, []),
                                                    f2.boxes, f2.types, f2.num_points))
    # streaming keeps this frame's sweep and the one before (not more), and decodes as the clip does
    state = model.init_state(2)
    streamed = []
    for f in clip.frames:
        dets, state = model.step(f, state)
        streamed.append(dets)
    assert len(state.box_sweeps) == 2 and state.box_sweeps[0].points is f2.points
    decoded = model(clip, decode=True, compute_loss=False).detections
    for a, b in zip(streamed, decoded):
        for da, db in zip(a, b):
            torch.testing.assert_close(da.boxes, db.boxes)
    # the sweep before matters: the same frame decoded alone moves its boxes elsewhere
    alone, _ = model.step(f2, model.init_state(2))
    assert all(len(d.boxes) > 0 for d in alone)
    assert all(not torch.allclose(x.boxes, y.boxes) for x, y in zip(alone, streamed[-1]))
    torch.testing.assert_close(torch.cat([d.scores for d in alone]), torch.cat([d.scores for d in streamed[-1]]))
    # a reset stream forgets its sweeps
    kept = state.drop_streams(torch.tensor([True, False]))
    assert all((s.points[:, 0] == 1).all() for s in kept.box_sweeps)
    with pytest.raises(ValueError, match="frames"):
        BoxRefine([1, 2, 4], frames=0)
