"""Model parts on small hand-made inputs: voxelizer, U-Net, box code, targets, NMS, top-K, losses."""

import math

import pytest
import torch

from detector.boxes import points_in_boxes
from detector.models.backbone import SparseUNet
from detector.models.box_coding import BoxCoder
from detector.models.losses import sigmoid_focal_loss
from detector.models.targets import assign_targets
from detector.models.temporal import top_k_per_stream
from detector.models.voxelizer import Voxelizer

VOX = Voxelizer([0.5, 0.5, 0.5], [-10.0, -10.0, -2.0, 10.0, 10.0, 2.0])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_voxelizer_means_layout_and_range():
    pts = torch.tensor(
        [
            [0, 0.1, 0.1, 0.1, 1.0, 0.0],
            [0, 0.3, 0.3, 0.3, 3.0, 0.2],  # same voxel as the first
            [1, 0.1, 0.1, 0.1, 0.0, 0.0],  # same cell, other stream
            [0, 10.0, 0.0, 0.0, 0.0, 0.0],  # x == upper bound: outside
            [0, -3.0, 5.0, -1.9, 0.5, 0.1],
        ]
    )
    x = VOX(pts, batch_size=2)
    assert x.indices.dtype == torch.int32 and x.indices.is_contiguous()
    assert x.spatial_shape == [8, 40, 40] and x.batch_size == 2
    assert x.features.shape == (3, VOX.num_features(5))
    rows = {tuple(r): i for i, r in enumerate(x.indices.tolist())}
    first = x.features[rows[(0, 4, 20, 20)]]
    # offset from the voxel centre (0.25, 0.25, 0.25) in voxel units, height, tanh(intensity), elongation
    assert torch.allclose(first[:3], torch.tensor([-0.05, -0.05, -0.05]) / 0.5, atol=1e-6)
    assert torch.isclose(first[3], torch.tensor(0.2 / VOX.z_scale))
    assert torch.isclose(first[4], torch.tanh(torch.tensor(2.0)))
    assert torch.isclose(first[5], torch.tensor(0.1))
    assert first[6] > x.features[rows[(1, 4, 20, 20)]][6]  # two points weigh more than one
    assert torch.allclose(VOX.centers(torch.tensor([[0, 4, 20, 20]])), torch.tensor([[0.25, 0.25, 0.25]]))
    # deterministic: same input, same output, any order of the points
    perm = torch.randperm(len(pts))
    y = VOX(pts[perm], batch_size=2)
    assert torch.equal(x.indices, y.indices) and torch.allclose(x.features, y.features)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_compiled_voxelizer_equals_the_torch_path(threads):
    """The compiled voxel means (``detector.ops.sites``) give the torch path's sites and features: points
    on cell faces and on the range's bounds, outside it, NaN, two streams, many points per cell."""
    from detector.ops import cpu_kernels
    from detector.ops.sites import compiled_voxel_means
    from detector.ops.sparse_conv import use_cpu_backend

    if cpu_kernels.load() is None:
        pytest.skip("compiled CPU kernels not built or not supported here")
    gen = torch.Generator().manual_seed(3)
    n = 20000
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([24.0, 24.0, 5.0]) - torch.tensor([12.0, 12.0, 2.5])
    xyz[:2000] = torch.round(xyz[:2000] * 2) / 2  # on cell faces (and some on the range's bounds)
    xyz[2000:2010, 0] = 10.0  # the upper bound: outside
    xyz[2010:2020, 1] = -10.0  # the lower bound: inside
    xyz[2020:2025, 2] = float("nan")
    xyz[5000:15000] = xyz[:10000] * 0.1  # many points in few cells
    pts = torch.cat([torch.randint(0, 2, (n, 1), generator=gen).float(), xyz, torch.randn(n, 2, generator=gen)], 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert compiled_voxel_means(pts)
        ours = VOX(pts, batch_size=2)
        with use_cpu_backend("torch"):
            assert not compiled_voxel_means(pts)
            ref = VOX(pts, batch_size=2)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ours.indices, ref.indices) and ours.indices.dtype == torch.int32
    assert torch.allclose(ours.features, ref.features, atol=2e-6, rtol=1e-6)
    # points that need a gradient take the torch path (the kernel's means have none)
    assert not compiled_voxel_means(pts.clone().requires_grad_(True))


def test_voxelizer_rejects_bad_input():
    with pytest.raises(ValueError, match="voxel_size"):
        Voxelizer([0.5, 0.5], [-1, -1, -1, 1, 1, 1])
    with pytest.raises(ValueError, match="point_range"):
        Voxelizer([0.5] * 3, [1, -1, -1, -1, 1, 1])
    with pytest.raises(ValueError, match="points must be"):
        VOX(torch.zeros(4, 3), 1)


def test_unet_keeps_the_input_sites():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.zeros(400, 1), torch.rand(400, 3, generator=g) * 8 - 4, torch.rand(400, 2, generator=g)], 1)
    x = VOX(pts, 1)
    net = SparseUNet(VOX.num_features(5), [8, 16, 32], blocks=[1, 2, 1], out_channels=12)
    y = net(x)
    assert torch.equal(y.indices, x.indices) and y.features.shape == (x.indices.shape[0], 12)
    y.features.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="channels"):
        net(x.replace_feature(x.features[:, :3]))


def test_box_code_round_trip_and_direction():
    coder = BoxCoder([[4.7, 2.1, 1.7], [0.9, 0.9, 1.75]])
    boxes = torch.tensor(
        [
            [3.0, -1.0, 0.8, 4.5, 2.0, 1.6, 0.3],
            [3.0, -1.0, 0.8, 4.5, 2.0, 1.6, 0.3 + math.pi],  # same box, facing back
            [-2.0, 5.0, 1.0, 0.8, 0.7, 1.8, -3.1],
            [0.0, 0.0, 1.0, 4.0, 2.0, 1.5, math.pi / 2],
        ]
    )
    centres = boxes[:, :3] + torch.tensor([[0.4, -0.2, 0.1]])
    cls = torch.tensor([0, 0, 1, 0])
    code, direction = coder.encode(boxes, centres, cls)
    assert direction[0] != direction[1]
    assert torch.allclose(code[0], code[1], atol=1e-6)  # only the direction bit tells them apart
    logits = direction * 20 - 10
    decoded = coder.decode(code, logits, centres, cls)
    assert torch.allclose(decoded[:, :6], boxes[:, :6], atol=1e-5)
    d = torch.remainder(decoded[:, 6] - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert d.abs().max() < 1e-5
    assert (decoded[:, 6] >= -math.pi).all() and (decoded[:, 6] < math.pi).all()


def test_targets_inside_boxes_nearest_centre_and_untrained_types():
    boxes = torch.tensor(
        [
            [0, 0.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0],  # vehicle
            [0, 1.5, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0],  # pedestrian overlapping its front
            [1, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0],  # a sign (type 3): not trained
        ]
    )
    types = torch.tensor([1, 2, 3])
    centres = torch.tensor([[-1.5, 0.0, 1.0], [1.6, 0.1, 1.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]])
    batch = torch.tensor([0, 0, 0, 1])
    t = assign_targets(centres, batch, boxes, types, classes=[1, 2, 4], margin=0.0)
    assert t.labels.tolist() == [0, 1, -1, -1]
    assert torch.equal(t.boxes[0], boxes[0, 1:]) and torch.equal(t.boxes[1], boxes[1, 1:])
    assert t.num_positive == 2
    # the exact test agrees with the dense one
    dense = points_in_boxes(centres[:3], boxes[:2, 1:])
    assert dense.tolist() == [[True, False], [True, True], [False, False]]
    # a rotated box: a point along its length is inside, the same distance sideways is not
    rot = torch.tensor([[0.0, 0.0, 0.0, 4.0, 1.0, 2.0, math.pi / 2]])
    assert points_in_boxes(torch.tensor([[0.0, 1.8, 0.0], [1.8, 0.0, 0.0]]), rot)[:, 0].tolist() == [True, False]


def test_top_k_per_stream():
    batch = torch.tensor([0, 0, 0, 1, 1, 2])
    score = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.2, 0.0])
    assert top_k_per_stream(batch, score, 2).tolist() == [1, 2, 3, 4, 5]
    assert top_k_per_stream(batch, score, 1).tolist() == [1, 3, 5]


def test_focal_loss_down_weights_easy_examples():
    targets = torch.tensor([1.0, 0.0])
    easy = sigmoid_focal_loss(torch.tensor([4.0, -4.0]), targets)
    hard = sigmoid_focal_loss(torch.tensor([-4.0, 4.0]), targets)
    assert easy < 1e-3 < hard
