"""Ego-motion alignment of the sparse temporal state: moving, re-voxelizing, joining."""

import math

import numpy as np
import pytest
import torch

from detector.models.grid import relative_transforms, union_sites
from detector.models.temporal import RecurrentState
from detector.models.voxelizer import Voxelizer
from tests.helpers.scenes import pose_matrix

VOXEL = 0.4
VOX = Voxelizer([VOXEL] * 3, [-40.0, -40.0, -3.0, 40.0, 40.0, 4.0])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _static_world(seed: int = 0) -> np.ndarray:
    """World points: a ground patch, two walls and a few blocks, all near world (10, 5)."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-5, 25, (3000, 2)) + [0, -10], np.zeros(3000)]
    wall = np.c_[rng.uniform(0, 20, 800), np.full(800, 12.1), rng.uniform(0, 3, 800)]
    blocks = rng.uniform(0, 1, (1500, 3)) * [2, 2, 1.5] + rng.integers(0, 4, (1500, 1)) * [4.0, 3.0, 0.0] + [2, -4, 0]
    return np.concatenate([ground, wall, blocks])


def _state_in_frame(world: np.ndarray, pose: np.ndarray) -> RecurrentState:
    """Voxelize the world seen from ``pose`` (vehicle->world); the "hidden" feature of each site is
    the mean world position of its points (so where it came from can be checked after moving)."""
    local = (np.c_[world, np.ones(len(world))] @ np.linalg.inv(pose).T)[:, :3]
    xyz = torch.from_numpy(local).float()
    cell, inside = VOX.coords(xyz)
    sites = torch.cat([torch.zeros((len(xyz), 1), dtype=torch.long), cell], 1)[inside]
    feats = torch.from_numpy(world).float()[inside]
    uniq, (mean_world, mem), _, _ = VOX.pool(sites, [feats, -feats])
    return RecurrentState(uniq, [mean_world], [mem])


def _to_frame(world_xyz: torch.Tensor, pose: np.ndarray) -> torch.Tensor:
    inv = torch.from_numpy(np.linalg.inv(pose))
    return (world_xyz.double() @ inv[:3, :3].T + inv[:3, 3]).float()


def test_identity_poses_leave_the_state_unchanged():
    state = _state_in_frame(_static_world(), pose_matrix(3.0, -2.0, 0.3))
    eye = torch.eye(4, dtype=torch.float64)[None]
    moved = state.moved(relative_transforms(eye, eye), VOX)
    assert torch.equal(moved.sites, state.sites)
    assert moved.sites.dtype == torch.int32 and moved.sites.is_contiguous()
    assert torch.equal(moved.hidden[0], state.hidden[0])
    assert torch.equal(moved.memory[0], state.memory[0])
    # the same pose twice is also the identity
    pose = torch.from_numpy(pose_matrix(3.0, -2.0, 0.3))[None]
    again = state.moved(relative_transforms(pose, pose), VOX)
    assert torch.equal(again.sites, state.sites)
    assert torch.allclose(again.hidden[0], state.hidden[0])


def test_translation_by_whole_voxels_is_exact():
    world = _static_world(1)
    # keep points clear of cell borders (float rounding would flip a few of them otherwise)
    lo = np.array(VOX.point_range[:3])
    jitter = np.random.default_rng(5).uniform(-0.4, 0.4, world.shape)
    world = (np.floor((world - lo) / VOXEL) + 0.5 + jitter) * VOXEL + lo
    p1 = pose_matrix(0.0, 0.0, 0.0)
    p2 = pose_matrix(5 * VOXEL, -3 * VOXEL, 0.0)  # the ego moved 2.0 m forward, 1.2 m right
    s1, s2 = _state_in_frame(world, p1), _state_in_frame(world, p2)
    moved = s1.moved(relative_transforms(torch.from_numpy(p2)[None], torch.from_numpy(p1)[None]), VOX)
    assert torch.equal(moved.sites, s2.sites)
    assert torch.allclose(moved.hidden[0], s2.hidden[0], atol=1e-4)


def test_moved_state_lands_on_the_voxels_of_the_same_world_points():
    """A static world seen from a moving, turning ego: after moving the frame-1 state into frame 2,
    every site carries world points that lie in (or next to) it, and every site is within one voxel of
    a frame-2 voxel of the same points."""
    world = _static_world(2)
    p1 = pose_matrix(0.3, -0.2, 0.1)
    p2 = pose_matrix(3.1, 1.4, 0.1 + math.radians(23.0))
    s1, s2 = _state_in_frame(world, p1), _state_in_frame(world, p2)
    transforms = relative_transforms(torch.from_numpy(p2)[None], torch.from_numpy(p1)[None])
    moved = s1.moved(transforms, VOX)
    assert 0.7 * s1.num_sites < moved.num_sites <= s1.num_sites  # a rotation merges some sites

    # features travel with their sites: the carried world position, seen from frame 2, lies within
    # sqrt(3) voxels of the moved voxel centre (half a voxel before and half a voxel after the move)
    centres = VOX.centers(moved.sites)
    carried = _to_frame(moved.hidden[0], p2)
    assert (carried - centres).norm(dim=1).max() <= math.sqrt(3) * VOXEL + 1e-4
    assert torch.allclose(moved.memory[0], -moved.hidden[0], atol=1e-5)

    # every moved site has a frame-2 voxel of the same world within one cell (Chebyshev)
    current = {tuple(r) for r in s2.sites[:, 1:].tolist()}
    offsets = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for z, y, x in moved.sites[:, 1:].tolist():
        assert any((z + a, y + b, x + c) in current for a, b, c in offsets)

    # and most land exactly on one (only rounding at cell borders differs)
    exact = sum(tuple(r) in current for r in moved.sites[:, 1:].tolist())
    assert exact >= 0.6 * moved.num_sites


def test_sites_leaving_the_grid_are_dropped_and_batches_move_independently():
    sites = torch.tensor([[0, 5, 100, 100], [1, 5, 100, 100], [1, 5, 100, 199]], dtype=torch.int32)
    t = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    t[1, 0, 3] = 10.0  # stream 1 moves its sites 10 m along +x
    moved, inside = VOX.move(sites, t)
    assert inside.tolist() == [True, True, False]  # x index 199 + 25 cells is beyond the grid
    assert moved[0].tolist() == [0, 5, 100, 100]
    assert moved[1].tolist() == [1, 5, 100, 125]


def test_coinciding_sites_average_and_union_marks_missing_rows():
    state = RecurrentState(
        torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2]], dtype=torch.int32),
        [torch.tensor([[1.0], [3.0]])],
        [None],
        torch.tensor([3, 1], dtype=torch.int32),
    )
    # squeeze x by half about the grid origin: cells 1 and 2 both map to one cell
    t = torch.eye(4, dtype=torch.float64)[None].clone()
    lo = torch.tensor(VOX.point_range[:3], dtype=torch.float64)
    t[0, 0, 0] = 0.3
    t[0, :3, 3] = lo - torch.diag(t[0, :3, :3]) * lo
    moved = state.moved(t, VOX)
    assert moved.num_sites == 1 and moved.hidden[0].item() == 2.0 and moved.memory == [None]
    assert moved.age.tolist() == [1]  # the youngest of the sites that fell together
    assert moved.sites.tolist() == [[0, 1, 1, 0]]

    current = torch.tensor([[0, 2, 2, 2], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.int32)
    union, (rows_cur, rows_state) = union_sites([current, moved.sites], VOX.spatial_shape)
    assert union.shape[0] == 3 and union.dtype == torch.int32 and union.is_contiguous()
    assert torch.equal(union[rows_cur], current)
    assert torch.equal(union[rows_state], moved.sites)
    assert rows_state.tolist() == [rows_cur[1].item()]  # the shared site is one row
