"""Rotated BEV / 3D IoU against closed-form cases and a plain per-pair polygon clipper."""

import numpy as np
import pytest

from detector.boxes.geometry import bev_corners
from detector.boxes.iou import bev_iou, intersection_area_bev, iou3d, paired_iou


def _reference_area(pa: np.ndarray, pb: np.ndarray) -> float:
    """Sutherland-Hodgman on Python lists, one pair at a time."""
    poly = [p for p in pa]
    for k in range(4):
        p0, p1 = pb[k], pb[(k + 1) % 4]
        def side(p, p0=p0, p1=p1):
            return (p1[0] - p0[0]) * (p[1] - p0[1]) - (p1[1] - p0[1]) * (p[0] - p0[0])

        out = []
        for i, cur in enumerate(poly):
            nxt = poly[(i + 1) % len(poly)]
            sc, sn = side(cur), side(nxt)
            if sc >= 0:
                out.append(cur)
            if (sc >= 0) != (sn >= 0):
                out.append(cur + sc / (sc - sn) * (nxt - cur))
        poly = out
        if not poly:
            return 0.0
    if len(poly) < 3:
        return 0.0
    p = np.array(poly)
    return 0.5 * abs(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]))


def _random_boxes(rng, n, spread=3.0):
    return np.c_[rng.uniform(-spread, spread, (n, 3)), rng.uniform(0.3, 4.0, (n, 3)), rng.uniform(-4, 4, n)]


def test_intersection_area_matches_reference_clipper():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 400), _random_boxes(rng, 400)
    got = intersection_area_bev(a, b)
    ca, cb = bev_corners(a), bev_corners(b)
    ref = np.array([_reference_area(ca[i], cb[i]) for i in range(len(a))])
    assert (ref > 0).sum() > 100  # the draw has plenty of overlapping pairs
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_closed_form_cases():
    square = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    rotated = square.copy()
    rotated[0, 6] = np.pi / 4
    # A square and the same square turned 45 degrees: a regular octagon, IoU = 1/sqrt(2).
    assert bev_iou(square, rotated)[0, 0] == pytest.approx(1 / np.sqrt(2), abs=1e-12)
    assert iou3d(square, rotated)[0, 0] == pytest.approx(1 / np.sqrt(2), abs=1e-12)

    box = np.array([[10.0, -4.0, 1.0, 4.0, 2.0, 1.5, 0.7]])
    half = box.copy()
    half[0, :2] += 0.5 * 4.0 * np.array([np.cos(0.7), np.sin(0.7)])  # slid by half its length
    assert bev_iou(box, half)[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    touching = box.copy()
    touching[0, :2] += 4.0 * np.array([np.cos(0.7), np.sin(0.7)])
    assert bev_iou(box, touching)[0, 0] == pytest.approx(0.0, abs=1e-12)

    raised = box.copy()
    raised[0, 2] += 0.75  # half the height: 3D IoU = 0.75 / 2.25
    assert iou3d(box, raised)[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    assert bev_iou(box, raised)[0, 0] == pytest.approx(1.0, abs=1e-12)
    flipped = box.copy()
    flipped[0, 6] += np.pi  # heading does not change the footprint
    assert iou3d(box, flipped)[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_identical_boxes_and_degenerate_dims():
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 5)
    np.testing.assert_allclose(np.diag(iou3d(boxes, boxes)), 1.0, atol=1e-12)
    thin = boxes.copy()
    thin[:, 4] = 0.01  # width at the official minimum: IoU 0 with everything
    assert not iou3d(thin, thin).any()
    flat = boxes.copy()
    flat[:, 5] = 0.0  # zero height: 0 in 3D, a normal footprint in BEV
    assert not iou3d(flat, flat).any()
    np.testing.assert_allclose(np.diag(bev_iou(flat, flat)), 1.0, atol=1e-12)


def test_dense_matches_paired_and_is_symmetric():
    rng = np.random.default_rng(2)
    a, b = _random_boxes(rng, 40, spread=6), _random_boxes(rng, 30, spread=6)
    dense = iou3d(a, b)
    ia, ib = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    np.testing.assert_allclose(dense, paired_iou(a[ia.ravel()], b[ib.ravel()]).reshape(40, 30), atol=1e-12)
    np.testing.assert_allclose(dense, iou3d(b, a).T, atol=1e-12)
    assert (dense > 0).sum() > 20


def test_shapes_and_errors():
    assert iou3d(np.zeros((0, 7)), np.zeros((3, 7))).shape == (0, 3)
    assert bev_iou(np.zeros((2, 7)) + 1, []).shape == (2, 0)
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        iou3d(np.zeros((2, 6)), np.zeros((2, 7)))
