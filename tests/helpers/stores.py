"""Tiny frame stores written directly with ``Frame.save_npz`` + ``write_segment_meta`` (for clip tests).

The ego moves forward at 10 m/s and turns (yaw, and a little roll/pitch) at 10 Hz; optional static world
points are seen from every frame, so augmentation tests can check that they keep one world position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.data.frame import Frame
from detector.data.frame_store import write_segment_meta

STEP_MICROS = 100_000


def rot(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def ego_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) vehicle-to-world poses of a moving, turning ego."""
    rng = np.random.default_rng(seed)
    yaw, pos = rng.uniform(-np.pi, np.pi), np.array([rng.uniform(-100, 100), rng.uniform(-100, 100), 1.0])
    poses = np.zeros((n, 4, 4))
    for t in range(n):
        poses[t] = np.eye(4)
        poses[t, :3, :3] = rot(0.01 * np.sin(t), 0.02 * np.cos(t), yaw)
        poses[t, :3, 3] = pos
        yaw += 0.08
        pos = pos + np.array([np.cos(yaw), np.sin(yaw), 0.01])
    return poses


def make_segment(root: Path, split: str, name: str, num_frames: int, seed: int = 0, *,
                 num_points: int = 300, gaps_before: tuple[int, ...] = (), static_world: np.ndarray | None = None,
                 empty_frames: tuple[int, ...] = (), nonfinite: dict[int, int] | None = None) -> Path:
    """Write one segment; returns its folder.

    gaps_before: frame indices preceded by a 1 s timestamp gap. static_world: (K, 3) world points put
    first in every frame's points. empty_frames: frames with no points. nonfinite: frame -> number of
    points given a NaN/inf value.
    """
    rng = np.random.default_rng(seed)
    seg_dir = Path(root) / split / name
    seg_dir.mkdir(parents=True, exist_ok=True)
    poses = ego_poses(num_frames, seed)
    ts, t_now = [], 1_500_000_000_000_000 + seed * 10_000_000
    types = np.array([1, 2, 3, 4, 1], np.int64)
    base_boxes = np.column_stack([
        rng.uniform(-25, 25, 5), rng.uniform(-25, 25, 5), rng.uniform(-0.5, 1.0, 5),
        [4.5, 0.8, 0.6, 1.8, 4.0], [1.9, 0.8, 0.6, 0.7, 1.8], [1.6, 1.8, 2.5, 1.7, 1.5],
        rng.uniform(-np.pi, np.pi, 5)])
    for i in range(num_frames):
        if i in gaps_before:
            t_now += 1_000_000
        ts.append(t_now)
        t_now += STEP_MICROS
        pts = np.column_stack([rng.uniform(-35, 35, (num_points, 2)), rng.uniform(-2, 3, num_points),
                               rng.uniform(0, 1, num_points), rng.uniform(0, 0.5, num_points)])
        if static_world is not None:
            inv = np.linalg.inv(poses[i])
            sv = static_world @ inv[:3, :3].T + inv[:3, 3]
            pts = np.vstack([np.column_stack([sv, np.full(len(sv), 0.5), np.zeros(len(sv))]), pts])
        if i in empty_frames:
            pts = np.zeros((0, 5))
        if nonfinite and i in nonfinite:
            k = nonfinite[i]
            pts[:k:2, 0] = np.nan
            pts[1:k:2, 3] = np.inf
        boxes = base_boxes.copy()
        boxes[:, 0] += 0.3 * i
        Frame(points=pts.astype(np.float32), pose=poses[i], timestamp_micros=ts[-1], segment=name, index=i,
              boxes=boxes, types=types, ids=[f"obj{j}" for j in range(5)], num_points=[10, 5, 3, 8, 0],
              difficulty=[1, 1, 1, 2, 2]).save_npz(seg_dir / f"{i:04d}.npz")
    write_segment_meta(seg_dir, segment=name, split=split, timestamps_micros=ts, source=f"test:{name}")
    return seg_dir
