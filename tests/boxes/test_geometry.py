"""The box geometry: the frame rotation and its inverse, corners, angle wrapping on tensors and arrays."""

import math

import numpy as np
import torch

from detector.boxes import (
    axis_angle,
    axis_change,
    bev_corners,
    box_corners,
    from_box_frame,
    heading_direction,
    points_in_box_frames,
    points_in_boxes,
    to_box_frame,
    turn_around,
    wrap_angle,
)


def _boxes(n: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-20, 20, (n, 3)), rng.uniform(0.5, 5, (n, 3)), rng.uniform(-4, 4, n)]


def test_frame_rotation_round_trip_on_arrays_and_tensors():
    rng = np.random.default_rng(1)
    dx, dy, a = rng.normal(size=50), rng.normal(size=50), rng.uniform(-4, 4, 50)
    u, v = to_box_frame(dx, dy, a)
    x, y = from_box_frame(0.0, 0.0, u, v, a)
    np.testing.assert_allclose(np.c_[x, y], np.c_[dx, dy], atol=1e-12)
    ut, vt = to_box_frame(torch.tensor(dx), torch.tensor(dy), torch.tensor(a))
    np.testing.assert_array_equal(np.c_[ut.numpy(), vt.numpy()], np.c_[u, v])
    # the u axis points along the heading: a point 1 m ahead of a box turned by 90 degrees is at +y
    np.testing.assert_allclose(from_box_frame(1.0, 2.0, 1.0, 0.0, math.pi / 2), (1.0, 3.0), atol=1e-12)


def test_corners_lie_on_the_box_faces_and_the_footprint_is_counter_clockwise():
    boxes = _boxes()
    corners = box_corners(boxes)
    assert corners.shape == (16, 8, 3)
    for b, c in zip(boxes, corners):
        u, v = to_box_frame(c[:, 0] - b[0], c[:, 1] - b[1], b[6])
        np.testing.assert_allclose(np.abs(u), b[3] / 2, atol=1e-9)
        np.testing.assert_allclose(np.abs(v), b[4] / 2, atol=1e-9)
        np.testing.assert_allclose(np.abs(c[:, 2] - b[2]), b[5] / 2, atol=1e-9)
        assert u[0] > 0 and v[0] > 0  # the first corner: front-left
    poly = bev_corners(boxes)
    x, y = poly[..., 0], poly[..., 1]
    area = 0.5 * (x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1)
    np.testing.assert_allclose(area, boxes[:, 3] * boxes[:, 4], rtol=1e-9)  # positive: counter-clockwise
    np.testing.assert_array_equal(poly, corners[:, [1, 0, 3, 2], :2])


def test_angles_wrap_alike_on_tensors_arrays_and_numbers():
    a = np.linspace(-10, 10, 101)
    w = wrap_angle(a)
    assert (w >= -math.pi).all() and (w < math.pi).all()
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
    np.testing.assert_array_equal(wrap_angle(torch.tensor(a)).numpy(), w)
    assert float(wrap_angle(3 * math.pi)) == -math.pi
    np.testing.assert_allclose(np.cos(turn_around(a)), -np.cos(a), atol=1e-12)
    t = torch.tensor(a)
    ax = axis_angle(t)
    assert bool(((ax > -math.pi / 2 - 1e-12) & (ax <= math.pi / 2 + 1e-12)).all())
    turned = ax + math.pi * heading_direction(t)
    np.testing.assert_allclose(torch.cos(turned - t).numpy(), 1.0, atol=1e-9)
    d = axis_change(t + 0.1, t)
    np.testing.assert_allclose(d.numpy(), 0.1, atol=1e-9)
    np.testing.assert_allclose(axis_change(t + math.pi + 0.1, t).numpy(), 0.1, atol=1e-9)


def test_points_in_box_frames_agrees_with_the_dense_test():
    torch.manual_seed(0)
    boxes = torch.tensor(_boxes(8, 3), dtype=torch.float32)
    points = torch.rand(4000, 3) * torch.tensor([40.0, 40.0, 40.0]) - 20.0
    box, uvw = points_in_box_frames(points, boxes, (0.0, 0.0, 0.0))
    dense = points_in_boxes(points, boxes)
    assert torch.bincount(box, minlength=8).tolist() == dense.sum(0).tolist()
    assert bool((uvw.abs() < 1).all())
