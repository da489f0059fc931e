"""The head's quality switches: per-class loss normalisation, the lifted target floor, the direction
vote in NMS. Each is checked against its definition on hand-made inputs."""

import math

import numpy as np
import pytest
import torch

from detector.models.head import DetectionHead
from detector.models.losses import sigmoid_focal_loss
from detector.models.outputs import HeadOutput
from detector.models.targets import Targets, assign_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _output(n: int, seed: int = 0) -> HeadOutput:
    g = torch.Generator().manual_seed(seed)
    sites = torch.zeros((n, 4), dtype=torch.int32)
    return HeadOutput(sites, torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g),
                      torch.randn(n, 8, generator=g), torch.randn(n, generator=g))


def _targets(labels: list[int]) -> Targets:
    n = len(labels)
    boxes = torch.zeros((n, 7))
    boxes[:, 3:6] = torch.tensor([1.0, 1.0, 1.7])
    boxes[:, 6] = torch.linspace(-3, 3, n)
    return Targets(torch.tensor(labels), boxes)


def test_per_class_normalisation_weighs_each_class_by_its_own_positives():
    out = _output(12)
    # 6 vehicle sites, 2 pedestrian sites, 4 background
    t = _targets([0, 0, 0, 0, 0, 0, 1, 1, -1, -1, -1, -1])
    head_all = DetectionHead(16, loss_norm="all")
    head_pc = DetectionHead(16, loss_norm="per_class")
    onehot = torch.zeros(12, 3)
    onehot[torch.arange(8), t.labels[:8]] = 1
    focal = sigmoid_focal_loss(out.cls_logits, onehot, reduction="none")
    assert torch.isclose(head_all.loss(out, t)["cls"], focal.sum() / 8)
    want = (focal[:, 0].sum() / 6 + focal[:, 1].sum() / 2 + focal[:, 2].sum() / 1) / 3
    assert torch.isclose(head_pc.loss(out, t)["cls"], want)
    # box terms: the mean per class, averaged over the classes (a class's sites share 1/C)
    code, _ = head_all.coder.encode(t.boxes[:8], out.centres[:8], t.labels[:8])
    per_site = torch.nn.functional.smooth_l1_loss(out.box_reg[:8], code, beta=1 / 9, reduction="none").sum(1)
    assert torch.isclose(head_all.loss(out, t)["reg"], per_site.mean())
    assert torch.isclose(head_pc.loss(out, t)["reg"], (per_site[:6].mean() + per_site[6:].mean()) / 3)
    head_pcc = DetectionHead(16, loss_norm="per_class_cls")
    assert torch.isclose(head_pcc.loss(out, t)["cls"], want)
    assert torch.isclose(head_pcc.loss(out, t)["reg"], per_site.mean())
    with pytest.raises(ValueError, match="loss_norm"):
        DetectionHead(16, loss_norm="sites")


def test_margin_below_keeps_the_ground_layer_background():
    box = torch.tensor([[0.0, 0.0, 0.0, 0.85, 1.0, 1.0, 1.7, 0.0]])  # bottom at z = 0
    centres = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [0.6, 0.0, 0.4], [0.0, 0.0, 1.8], [0.0, 0.0, -0.2]])
    batch = torch.zeros(5, dtype=torch.long)
    types = torch.tensor([2])
    grown = assign_targets(centres, batch, box, types, [1, 2, 4], margin=0.25)
    assert grown.labels.tolist() == [1, 1, 1, 1, 1]
    lifted = assign_targets(centres, batch, box, types, [1, 2, 4], margin=0.25, margin_below=-0.1)
    # the voxels at ground level (centre z <= 0.1) are background, the body and the margin ring above are not
    assert lifted.labels.tolist() == [-1, -1, 1, 1, -1]


def test_pre_nms_per_class_keeps_the_few_sites_of_a_small_class():
    # 40 vehicle sites scored 0.9 spread along x, 3 pedestrian sites scored 0.3 elsewhere; pre_nms 10
    n_v, n_p = 40, 3
    centres = torch.cat([torch.stack([torch.arange(n_v) * 6.0, torch.zeros(n_v), torch.zeros(n_v)], 1),
                         torch.tensor([[0.0, 20.0, 0.0], [0.0, 25.0, 0.0], [0.0, 30.0, 0.0]])])
    logits = torch.full((n_v + n_p, 3), -10.0)
    logits[:n_v, 0] = math.log(0.9 / 0.1)
    logits[n_v:, 1] = math.log(0.3 / 0.7)
    out = HeadOutput(torch.zeros((n_v + n_p, 4), dtype=torch.int32), centres, logits,
                     torch.zeros((n_v + n_p, 8)), torch.zeros(n_v + n_p))
    shared = DetectionHead(16, pre_nms=10)
    per_class = DetectionHead(16, pre_nms=10, pre_nms_per_class=True)
    assert shared.decode(out, 1)[0].types.tolist() == [1] * 10
    det = per_class.decode(out, 1)[0]
    assert det.types.tolist() == [1] * 10 + [2] * 3


def test_motion_heading_turns_moving_boxes_to_face_their_motion():
    from detector.models.motion_heading import MotionHeading
    from detector.models.outputs import Detections
    from tests.helpers.scenes import pose_matrix

    motion = MotionHeading()
    # world: a car driving +x at 8 m/s (the head says it faces -x), a parked car facing -x; the ego
    # drives +y at 5 m/s, turned by 90 degrees, so vehicle-frame and world headings differ
    results = []
    for f in range(4):
        t = 0.1 * f
        pose = pose_matrix(0.0, 5.0 * t, math.pi / 2)
        inv = torch.linalg.inv(torch.as_tensor(pose))
        world = torch.tensor([[10.0 + 8.0 * t, 20.0], [-5.0, 30.0]], dtype=torch.float64)
        local = (torch.cat([world, torch.zeros(2, 1), torch.ones(2, 1)], 1) @ inv.T)[:, :2]
        heading = math.pi - math.pi / 2  # world heading pi (wrong for the moving car), vehicle frame
        boxes = torch.tensor([[*local[0].tolist(), 0.8, 4.5, 2.0, 1.6, heading],
                              [*local[1].tolist(), 0.8, 4.5, 2.0, 1.6, heading]], dtype=torch.float32)
        det = Detections(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]))
        results.append(motion(det, pose, int(t * 1e6)))
    # one frame: no motion yet; frame 1: 0.8 m moved, under the vehicles' min_move (1 m)
    assert all(math.isclose(float(r.boxes[0, 6]), heading, abs_tol=1e-6) for r in results[:2])
    world_heading = [float(r.boxes[0, 6]) + math.pi / 2 for r in results[2:]]
    assert all(abs(math.remainder(h, 2 * math.pi)) < 1e-5 for h in world_heading)  # faces +x from frame 2
    assert all(math.isclose(float(r.boxes[1, 6]), heading, abs_tol=1e-6) for r in results)  # parked: unchanged
    motion.reset()
    assert math.isclose(float(motion(det, pose, 10**6).boxes[0, 6]), heading, abs_tol=1e-6)


def test_motion_heading_keeps_the_majority_front_of_a_parked_car():
    from detector.models.motion_heading import MotionHeading
    from detector.models.outputs import Detections
    from tests.helpers.scenes import pose_matrix

    # a parked car (world (-5, 30)) whose decoded front is +x in frames 0, 1, 3, 4 and -x in frame 2;
    # the ego drives +y, turned by 90 degrees
    fronts = [0.0, 0.0, math.pi, 0.0, 0.0]
    out = {True: [], False: []}
    for vote in (True, False):
        motion = MotionHeading(vote_static=vote)
        for f, world_heading in enumerate(fronts):
            t = 0.1 * f
            pose = pose_matrix(0.0, 5.0 * t, math.pi / 2)
            inv = torch.linalg.inv(torch.as_tensor(pose))
            local = (torch.tensor([[-5.0, 30.0, 0.0, 1.0]], dtype=torch.float64) @ inv.T)[0, :2]
            boxes = torch.tensor([[*local.tolist(), 0.8, 4.5, 2.0, 1.6, world_heading - math.pi / 2]])
            det = motion(Detections(boxes, torch.tensor([0.9]), torch.tensor([1])), pose, int(t * 1e6))
            out[vote].append(math.remainder(float(det.boxes[0, 6]) + math.pi / 2, 2 * math.pi))
    assert all(abs(h) < 1e-5 for h in out[True])  # the odd frame takes the majority's front
    assert abs(abs(out[False][2]) - math.pi) < 1e-5  # without the vote it keeps its own


@pytest.mark.parametrize("min_move", [{1: 1.0}, {}])
def test_motion_heading_does_not_take_a_parked_cars_wandering_box_for_motion(min_move):
    from detector.models.motion_heading import MotionHeading
    from detector.models.outputs import Detections

    # a parked car facing +x (world = vehicle frame) whose box centre wanders 0.3 m back and forth along
    # its axis, as a detector's does: 3 m/s over one frame, above the vehicles' min_speed
    motion = MotionHeading(min_move=min_move)
    pose = np.eye(4)
    headings = []
    for f, dx in enumerate([0.0, -0.3, 0.0, -0.3, 0.0, -0.3]):
        boxes = torch.tensor([[10.0 + dx, 5.0, 0.8, 4.5, 2.0, 1.6, 0.0]])
        det = motion(Detections(boxes, torch.tensor([0.9]), torch.tensor([1])), pose, int(0.1 * f * 1e6))
        headings.append(float(det.boxes[0, 6]))
    turned = [abs(abs(h) - math.pi) < 1e-5 for h in headings]
    if min_move:
        assert not any(turned)  # a 0.3 m wander is not a move: the box keeps its front
    else:
        assert turned[1]  # without min_move the first backward step reads as driving backwards


def test_multi_label_decodes_a_class_that_is_never_the_best_of_its_sites():

    centres = torch.tensor([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]])
    logits = torch.full((2, 3), -10.0)
    logits[0, 0] = 2.0  # a vehicle
    logits[1, 0], logits[1, 1] = math.log(0.4 / 0.6), math.log(0.3 / 0.7)  # a pedestrian, vehicle logit higher
    out = HeadOutput(torch.zeros((2, 4), dtype=torch.int32), centres, logits, torch.zeros((2, 8)), torch.zeros(2))
    assert sorted(DetectionHead(16).decode(out, 1)[0].types.tolist()) == [1, 1]
    det = DetectionHead(16, multi_label=True).decode(out, 1)[0]
    assert det.types.tolist() == [1, 1, 2] and torch.allclose(det.scores, torch.tensor([0.8808, 0.4, 0.3]), atol=1e-4)


def test_iou_branch_learns_the_iou_of_each_sites_decoded_box():
    head = DetectionHead(16, iou_weight=1.0)
    # two vehicle sites: one whose code decodes exactly to its box (IoU 1), one shifted 1 m in x
    box = torch.tensor([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    centres = torch.tensor([[10.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0])
    code, direction = head.coder.encode(box.repeat(2, 1), centres, labels)
    code[1, :3] = 0.0  # the second site predicts its own centre: 1 m behind the object
    logits = torch.full((2, 3), -10.0)
    out = HeadOutput(torch.zeros((2, 4), dtype=torch.int32), centres, logits, code, (direction * 2 - 1) * 5,
                     torch.zeros((2, 3), requires_grad=True))
    targets = Targets(labels, box.repeat(2, 1))
    iou = head._iou_targets(out, targets, torch.tensor([True, True]))
    # same box: 1; shifted 1 m in x: (cos 0.3, sin 0.3) m along and across the 4 x 2 box, same height
    assert iou[0].item() == pytest.approx(1.0, abs=1e-5)
    inter = (4.0 - math.cos(0.3)) * (2.0 - math.sin(0.3))
    assert iou[1].item() == pytest.approx(inter / (16.0 - inter), abs=1e-5)
    losses = head.loss(out, targets)
    assert set(losses) == {"loss", "cls", "reg", "dir", "iou"}
    losses["iou"].backward()
    # BCE against the IoU for the site's own class (vehicle), against 0 for the others (no pedestrian or
    # cyclist is there), averaged over the positives: d/dlogit = (sigmoid(0) - target) / 2
    assert torch.allclose(out.iou_logits.grad[:, 0], (0.5 - iou) / 2, atol=1e-6)
    assert torch.allclose(out.iou_logits.grad[:, 1:], torch.full((2, 2), 0.25), atol=1e-6)
    # at most iou_max_sites positives take part (the rest get no IoU gradient)
    out.iou_logits.grad = None
    DetectionHead(16, iou_weight=1.0, iou_max_sites=1).loss(out, targets)["iou"].backward()
    assert int((out.iou_logits.grad.abs().sum(dim=1) != 0).sum()) == 1


def test_iou_power_ranks_the_better_fitting_box_first():
    centres = torch.tensor([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    logits = torch.full((2, 3), -10.0)
    logits[:, 0] = torch.tensor([math.log(0.6 / 0.4), math.log(0.5 / 0.5)])  # the first more confident
    iou_logits = torch.full((2, 3), -5.0)
    iou_logits[:, 0] = torch.tensor([math.log(0.3 / 0.7), math.log(0.9 / 0.1)])  # the second fits far better
    out = HeadOutput(torch.zeros((2, 4), dtype=torch.int32), centres, logits, torch.zeros((2, 8)),
                     torch.zeros(2), iou_logits)
    plain = DetectionHead(16, iou_weight=1.0).decode(out, 1)[0]
    assert plain.boxes[0, 0].item() == pytest.approx(0.0) and plain.scores[0].item() == pytest.approx(0.6)
    det = DetectionHead(16, iou_weight=1.0, iou_power=0.5).decode(out, 1)[0]
    assert det.boxes[0, 0].item() == pytest.approx(30.0)
    assert det.scores.tolist() == pytest.approx([(0.5 * 0.9) ** 0.5, (0.6 * 0.3) ** 0.5], abs=1e-5)
    with pytest.raises(ValueError, match="iou_power needs the IoU branch"):
        DetectionHead(16, iou_power=0.5)


