"""Clip augmentation: one transform per clip, world kept consistent through the poses, boxes follow."""

import math

import numpy as np
import pytest
import torch

from tests.helpers.stores import ego_poses, make_segment
from detector.data.augment import AugmentConfig, GlobalTransform, sample_transform
from detector.data.clips import ClipDataset
from detector.data.frame import Frame

TRANSFORMS = [
    GlobalTransform(angle=0.5, scale=1.1, flip=True, translation=(0.3, -0.2, 0.1)),
    GlobalTransform(angle=-1.2, scale=0.9, flip=False, translation=(0.0, 0.0, 0.0)),
    GlobalTransform(angle=2.9, scale=1.0, flip=True, translation=(-1.0, 0.5, 0.0)),
]


def points_in_box_frame(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """xyz of points in the box's own axes (origin at the centre, x along the heading)."""
    c, s = math.cos(box[6]), math.sin(box[6])
    d = points[:, :3] - box[:3]
    return np.column_stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]])


@pytest.mark.parametrize("tf", TRANSFORMS)
def test_static_world_point_keeps_one_world_position(tf):
    poses = ego_poses(6, seed=3)
    world = np.random.default_rng(0).uniform(-30, 30, (50, 3)) + poses[0, :3, 3]
    world_aug = []
    for pose in poses:
        inv = np.linalg.inv(pose)
        p_v = (world @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)
        frame = tf.apply_frame(Frame(points=np.column_stack([p_v, np.zeros((50, 2))]), pose=pose,
                                     timestamp_micros=0))
        r = frame.pose[:3, :3]
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1.0)
        assert np.allclose(frame.pose[3], [0, 0, 0, 1])
        world_aug.append(frame.points[:, :3].astype(np.float64) @ r.T + frame.pose[:3, 3])
    for w in world_aug[1:]:
        np.testing.assert_allclose(w, world_aug[0], atol=2e-4)
    # the augmented world is the original scaled (and mirrored with the flip): distances scale by s
    d_orig = np.linalg.norm(world[1:] - world[0], axis=1)
    d_aug = np.linalg.norm(world_aug[0][1:] - world_aug[0][0], axis=1)
    np.testing.assert_allclose(d_aug, tf.scale * d_orig, rtol=1e-5)


@pytest.mark.parametrize("tf", TRANSFORMS)
def test_boxes_still_contain_their_points(tf):
    rng = np.random.default_rng(1)
    boxes = np.column_stack([rng.uniform(-20, 20, (6, 2)), rng.uniform(-1, 1, 6), rng.uniform(3, 5, 6),
                             rng.uniform(0.6, 1.0, 6), rng.uniform(1.4, 2.0, 6), rng.uniform(-np.pi, np.pi, 6)])
    inside, outside = [], []
    for b in boxes:  # points inside each box, and points just outside its long sides
        local = rng.uniform(-0.45, 0.45, (40, 3)) * b[3:6]
        shell = local.copy()
        shell[:, 1] = np.sign(shell[:, 1] + 1e-9) * b[4] * 0.8
        c, s = math.cos(b[6]), math.sin(b[6])
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        inside.append(local @ rot.T + b[:3])
        outside.append(shell @ rot.T + b[:3])
    new_boxes = tf.apply_boxes(boxes.astype(np.float32))
    for k in range(len(boxes)):
        for pts, expect_inside in ((inside[k], True), (outside[k], False)):
            moved = tf.apply_points(np.column_stack([pts, np.zeros((len(pts), 2))]).astype(np.float32))
            loc = points_in_box_frame(moved, new_boxes[k].astype(np.float64))
            within = np.all(np.abs(loc) <= new_boxes[k, 3:6] / 2 + 1e-4, axis=1)
            assert within.all() if expect_inside else not within.any()
    np.testing.assert_allclose(new_boxes[:, 3:6], boxes[:, 3:6] * tf.scale, rtol=1e-6)
    assert np.all((new_boxes[:, 6] >= -np.pi) & (new_boxes[:, 6] < np.pi))


def test_flip_mirrors_y_and_negates_heading():
    tf = GlobalTransform(angle=0.0, scale=1.0, flip=True)
    box = np.array([[3.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.4]], np.float32)
    out = tf.apply_boxes(box)
    np.testing.assert_allclose(out[0], [3.0, -2.0, 0.5, 4.0, 2.0, 1.5, -0.4], atol=1e-6)
    pts = tf.apply_points(np.array([[1.0, 2.0, 3.0, 0.7, 0.1]], np.float32))
    np.testing.assert_allclose(pts[0], [1.0, -2.0, 3.0, 0.7, 0.1])


def test_sampled_transform_respects_ranges_and_seed():
    cfg = AugmentConfig(rotation=0.3, scale=(0.9, 1.2), flip_prob=0.5, translate_std=(0.2, 0.2, 0.0))
    torch.manual_seed(7)
    a = [sample_transform(cfg) for _ in range(200)]
    torch.manual_seed(7)
    b = [sample_transform(cfg) for _ in range(200)]
    assert a == b
    assert all(abs(t.angle) <= 0.3 and 0.9 <= t.scale <= 1.2 and t.translation[2] == 0.0 for t in a)
    flips = sum(t.flip for t in a)
    assert 60 < flips < 140
    assert len({t.angle for t in a}) == 200


def test_config_from_mapping_and_errors():
    cfg = AugmentConfig.from_any({"rotation": 0.1, "scale": [0.9, 1.1], "flip_prob": 0.0})
    assert cfg.scale == (0.9, 1.1) and cfg.rotation == 0.1
    assert AugmentConfig.from_any({"enabled": False}) is None
    assert AugmentConfig.from_any(None) is None
    with pytest.raises(TypeError, match="rotaton"):
        AugmentConfig.from_any({"rotaton": 0.1})
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))


def test_clip_dataset_applies_one_transform_to_every_frame(tmp_path):
    rng = np.random.default_rng(5)
    world = rng.uniform(-25, 25, (30, 3))
    world[:, 2] = rng.uniform(-1, 2, 30)
    make_segment(tmp_path, "training", "seg", 6, seed=2, num_points=100, static_world=world + [0, 0, 0])
    plain = ClipDataset(tmp_path, "training", clip_length=5, stride=1, classes=None)
    aug = ClipDataset(tmp_path, "training", clip_length=5, stride=1, classes=None,
                      augment=AugmentConfig(rotation=math.pi, scale=(0.8, 1.2), flip_prob=0.5,
                                            translate_std=(0.5, 0.5, 0.1)))
    for i in range(len(aug)):
        clip_p, clip_a = plain[i], aug[i]
        tf = clip_a.transform
        a = tf.matrix()
        world_pos = []
        for fp, fa in zip(clip_p.frames, clip_a.frames):
            # the same A maps every frame's original points to its augmented points
            expect = fp.points[:, :3].astype(np.float64) @ a[:3, :3].T + a[:3, 3]
            np.testing.assert_allclose(fa.points[:, :3], expect, atol=1e-4)
            np.testing.assert_array_equal(fa.points[:, 3:], fp.points[:, 3:])
            np.testing.assert_allclose(fa.boxes, tf.apply_boxes(fp.boxes), atol=1e-5)
            static = fa.points[:30, :3].astype(np.float64)
            world_pos.append(static @ fa.pose[:3, :3].T + fa.pose[:3, 3])
        for w in world_pos[1:]:  # frame files keep millimetres (0.5 mm each frame), scaled by up to 1.2
            np.testing.assert_allclose(w, world_pos[0], atol=1.5e-3)
        # relative poses carry augmented points of frame t-1 onto those of frame t
        f0, f1 = clip_a.frames[0], clip_a.frames[1]
        rel = np.linalg.inv(f1.pose) @ f0.pose
        moved = f0.points[:30, :3].astype(np.float64) @ rel[:3, :3].T + rel[:3, 3]
        np.testing.assert_allclose(moved, f1.points[:30, :3], atol=1.5e-3)  # millimetres in the files


def test_clip_augmentation_is_a_function_of_seed_epoch_and_clip(tmp_path):
    make_segment(tmp_path, "training", "seg", 8, seed=4, num_points=20)
    cfg = AugmentConfig(rotation=math.pi, translate_std=(0.5, 0.5, 0.1))
    ds = ClipDataset(tmp_path, "training", clip_length=2, stride=1, augment=cfg, seed=11)
    again = ClipDataset(tmp_path, "training", clip_length=2, stride=1, augment=cfg, seed=11)
    torch.manual_seed(123)  # the global RNG plays no part
    assert [ds[i].transform for i in range(len(ds))] == [again[(i, 0)].transform for i in range(len(ds))]
    epoch1 = [ds[(i, 1)].transform for i in range(len(ds))]
    ds.set_epoch(1)
    assert [ds[i].transform for i in range(len(ds))] == epoch1
    assert len({t.angle for t in epoch1} | {ds[(i, 0)].transform.angle for i in range(len(ds))}) == 2 * len(ds)
    other_seed = ClipDataset(tmp_path, "training", clip_length=2, stride=1, augment=cfg, seed=12)
    assert other_seed[(0, 1)].transform != epoch1[0]
