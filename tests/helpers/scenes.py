"""Small synthetic LiDAR clips built directly as ``FrameBatch``/``ClipBatch`` for model tests and
benchmarks (no ray casting, no files): a flat ground, labelled boxes (vehicles, pedestrians, cyclists;
some moving) and unlabelled clutter, seen from a moving, turning ego vehicle.

Points lie on the faces of each box that face the sensor (2.0 m above the vehicle origin) with a
density falling with distance, and on the ground with a density falling with range, roughly like a
spinning LiDAR. With ``bonnets=True`` a vehicle's front third is cut down to a bonnet at 60% of its
height, so that its front can be told from its back (a plain box looks the same both ways). It is
meant to be cheap and deterministic, not to replace the data module's synthesizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from detector.data.batch import ClipBatch, FrameBatch

__all__ = ["SceneObject", "Scene", "car_boxes_and_points", "car_points", "make_scene", "make_clip",
           "make_stream_frames", "pose_matrix"]

SENSOR_HEIGHT = 2.0
_SIZES = {1: (4.6, 2.0, 1.6), 2: (0.8, 0.8, 1.75), 4: (1.8, 0.7, 1.7)}
_SPEEDS = {1: 6.0, 2: 1.2, 4: 4.0}


def pose_matrix(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """4x4 float64 pose: rotation by ``yaw`` about z, then translation."""
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = [x, y, z]
    return m


@dataclass
class SceneObject:
    """A box in world coordinates at time 0, moving along its heading at ``speed`` m/s.
    ``type`` 0 means unlabelled clutter (walls, poles)."""

    box: np.ndarray  # (7,) world frame
    type: int
    speed: float


@dataclass
class Scene:
    objects: list[SceneObject]
    ego_start: np.ndarray  # (x, y, yaw) world
    ego_speed: float
    ego_yaw_rate: float

    def ego_pose(self, t: float) -> np.ndarray:
        x0, y0, yaw0 = self.ego_start
        if abs(self.ego_yaw_rate) < 1e-9:
            return pose_matrix(x0 + self.ego_speed * t * math.cos(yaw0), y0 + self.ego_speed * t * math.sin(yaw0), yaw0)
        yaw = yaw0 + self.ego_yaw_rate * t
        r = self.ego_speed / self.ego_yaw_rate
        return pose_matrix(x0 + r * (math.sin(yaw) - math.sin(yaw0)), y0 - r * (math.cos(yaw) - math.cos(yaw0)), yaw)

    def boxes_world(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.stack([o.box for o in self.objects]).copy() if self.objects else np.zeros((0, 7))
        speeds = np.array([o.speed for o in self.objects])
        boxes[:, 0] += speeds * t * np.cos(boxes[:, 6])
        boxes[:, 1] += speeds * t * np.sin(boxes[:, 6])
        return boxes, np.array([o.type for o in self.objects], dtype=np.int64)


def make_scene(
    seed: int,
    num_vehicles: int = 8,
    num_pedestrians: int = 4,
    num_cyclists: int = 2,
    num_clutter: int = 6,
    radius: float = 30.0,
    ego_speed: float = 8.0,
    ego_yaw_rate: float = 0.15,
) -> Scene:
    """Random non-overlapping objects within ``radius`` of the ego start (placed at the world origin
    region with a random heading)."""
    rng = np.random.default_rng(seed)
    ego = np.array([rng.uniform(-50, 50), rng.uniform(-50, 50), rng.uniform(-math.pi, math.pi)])
    objects: list[SceneObject] = []
    placed: list[tuple[float, float, float]] = [(ego[0], ego[1], 3.5)]
    wanted = [1] * num_vehicles + [2] * num_pedestrians + [4] * num_cyclists + [0] * num_clutter
    for typ in wanted:
        for _ in range(100):
            r = rng.uniform(5.0, radius)
            a = rng.uniform(-math.pi, math.pi)
            x, y = ego[0] + r * math.cos(a), ego[1] + r * math.sin(a)
            if typ == 0:
                if rng.random() < 0.5:
                    size = (rng.uniform(4, 10), rng.uniform(0.3, 0.6), rng.uniform(2.0, 4.0))  # wall
                else:
                    size = (0.3, 0.3, rng.uniform(3.0, 6.0))  # pole
            else:
                base = _SIZES[typ]
                size = tuple(v * rng.uniform(0.9, 1.1) for v in base)
            rad = 0.5 * math.hypot(size[0], size[1]) + 0.5
            if all(math.hypot(x - px, y - py) > rad + pr for px, py, pr in placed):
                break
        else:
            continue
        placed.append((x, y, rad))
        heading = rng.uniform(-math.pi, math.pi)
        speed = 0.0 if typ == 0 or rng.random() < 0.5 else _SPEEDS[typ] * rng.uniform(0.5, 1.0)
        box = np.array([x, y, size[2] / 2, size[0], size[1], size[2], heading])
        objects.append(SceneObject(box, typ, speed))
    return Scene(objects, ego, ego_speed, ego_yaw_rate)


def _to_vehicle(boxes_world: np.ndarray, pose: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(pose)
    out = boxes_world.copy()
    centres = np.c_[boxes_world[:, :3], np.ones(len(boxes_world))] @ inv.T
    out[:, :3] = centres[:, :3]
    yaw = math.atan2(pose[1, 0], pose[0, 0])
    out[:, 6] = (boxes_world[:, 6] - yaw + math.pi) % (2 * math.pi) - math.pi
    return out


def _box_surface_points(box: np.ndarray, rng: np.random.Generator, density: float, bonnet: bool = False) -> np.ndarray:
    """Points on the sensor-facing side faces and the top of a box (vehicle frame)."""
    cx, cy, cz, length, width, height, heading = box
    c, s = math.cos(heading), math.sin(heading)
    sensor = np.array([0.0, 0.0, SENSOR_HEIGHT])
    dist = max(math.hypot(cx, cy), 1.0)
    # (normal in box frame, face centre offset, extents along two in-face axes)
    ex, ey, ez = np.eye(3)
    faces = [
        (ex, np.array([length / 2, 0, 0]), (ey, width), (ez, height)),
        (-ex, np.array([-length / 2, 0, 0]), (ey, width), (ez, height)),
        (ey, np.array([0, width / 2, 0]), (ex, length), (ez, height)),
        (-ey, np.array([0, -width / 2, 0]), (ex, length), (ez, height)),
        (ez, np.array([0, 0, height / 2]), (ex, length), (ey, width)),
    ]
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    centre = np.array([cx, cy, cz])
    out = []
    for normal, offset, (u, lu), (v, lv) in faces:
        n_w = rot @ normal
        face_c = centre + rot @ offset
        to_sensor = sensor - face_c
        cosang = float(n_w @ to_sensor) / (np.linalg.norm(to_sensor) + 1e-9)
        if cosang <= 0.05:
            continue
        area = lu * lv
        k = int(rng.poisson(density * area * cosang / dist**2))
        if k == 0:
            continue
        a = rng.uniform(-0.5, 0.5, (k, 1)) * lu
        b = rng.uniform(-0.5, 0.5, (k, 1)) * lv
        local = offset + a * u + b * v + rng.normal(0, 0.02, (k, 3))
        if bonnet:  # the front third (x > l/6) ends at 60% of the height
            front = local[:, 0] > length / 6
            local[front, 2] = np.minimum(local[front, 2], 0.1 * height)
        out.append(local @ rot.T + centre)
    return np.concatenate(out) if out else np.zeros((0, 3))


def _frame_points(
    boxes: np.ndarray, rng: np.random.Generator, num_points: int, radius: float, object_density: float,
    bonnets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 5) and per-box point counts for boxes (M, 7) in the vehicle frame."""
    obj_pts, counts, intens = [], [], []
    for i, box in enumerate(boxes):
        p = _box_surface_points(box, rng, object_density, bool(bonnets is not None and bonnets[i]))
        obj_pts.append(p)
        counts.append(len(p))
        intens.append(np.full(len(p), rng.uniform(0.2, 0.8)))
    obj = np.concatenate(obj_pts) if obj_pts else np.zeros((0, 3))
    n_ground = max(num_points - len(obj), 0)
    r = 2.5 + (radius - 2.5) * rng.random(n_ground) ** 2
    a = rng.uniform(-math.pi, math.pi, n_ground)
    ground = np.c_[r * np.cos(a), r * np.sin(a), rng.normal(0, 0.03, n_ground)]
    if len(boxes):
        d = ground[:, None, :2] - boxes[None, :, :2]
        cs, sn = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        lx = np.abs(d[..., 0] * cs + d[..., 1] * sn)
        ly = np.abs(-d[..., 0] * sn + d[..., 1] * cs)
        under = ((lx < boxes[:, 3] / 2) & (ly < boxes[:, 4] / 2)).any(axis=1)
        ground = ground[~under]
    xyz = np.concatenate([obj, ground])
    intensity = np.concatenate([*intens, np.full(len(ground), 0.1)]) if intens else np.full(len(ground), 0.1)
    pts = np.c_[xyz, intensity, np.zeros(len(xyz))].astype(np.float32)
    return pts, np.array(counts, dtype=np.int64)


def make_stream_frames(
    scenes: list[Scene],
    num_frames: int,
    num_points: int = 8000,
    seed: int = 0,
    dt: float = 0.1,
    radius: float = 38.0,
    object_density: float = 3000.0,
    start_time: float = 0.0,
    first_reset: bool = True,
    bonnets: bool = False,
) -> list[FrameBatch]:
    """``num_frames`` consecutive frames of B = len(scenes) streams (stream b sees scene b)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(num_frames):
        time_s = start_time + t * dt
        pts_all, boxes_all, types_all, npts_all, poses = [], [], [], [], []
        for b, scene in enumerate(scenes):
            pose = scene.ego_pose(time_s)
            boxes_w, types = scene.boxes_world(time_s)
            boxes_v = _to_vehicle(boxes_w, pose)
            pts, counts = _frame_points(boxes_v, rng, num_points, radius, object_density,
                                        types == 1 if bonnets else None)
            pts_all.append(np.c_[np.full(len(pts), b, np.float32), pts])
            labelled = types > 0
            boxes_all.append(np.c_[np.full(labelled.sum(), b), boxes_v[labelled]])
            types_all.append(types[labelled])
            npts_all.append(counts[labelled])
            poses.append(pose)
        m = sum(len(x) for x in types_all)
        frames.append(
            FrameBatch(
                points=torch.from_numpy(np.concatenate(pts_all).astype(np.float32)),
                poses=torch.from_numpy(np.stack(poses)),
                timestamps=torch.tensor([int(round(time_s * 1e6))] * len(scenes), dtype=torch.long),
                reset=torch.tensor([first_reset and t == 0] * len(scenes)),
                boxes=torch.from_numpy(np.concatenate(boxes_all).astype(np.float32)).reshape(m, 8),
                types=torch.from_numpy(np.concatenate(types_all)),
                num_points=torch.from_numpy(np.concatenate(npts_all)),
                difficulty=torch.ones(m, dtype=torch.long),
                segments=[f"synthetic-{b}" for b in range(len(scenes))],
                indices=[t] * len(scenes),
            )
        )
    return frames


def make_clip(
    num_frames: int = 4, batch_size: int = 2, num_points: int = 8000, seed: int = 0, bonnets: bool = False,
    **scene_kwargs,
) -> ClipBatch:
    """A clip of ``num_frames`` frames of ``batch_size`` random scenes (seeded)."""
    scenes = [make_scene(seed * 1000 + b, **scene_kwargs) for b in range(batch_size)]
    return ClipBatch(make_stream_frames(scenes, num_frames, num_points, seed=seed, bonnets=bonnets))


def car_points(box: torch.Tensor, g: torch.Generator, n: int = 300) -> torch.Tensor:
    """Points on a car-like shape in ``box`` (7,): a low body over the whole length and a cabin on its rear
    half reaching the roof, seen from all around (the front is the +length end of the heading)."""
    l, w, h = (float(v) for v in box[3:6])
    u = torch.rand(n, generator=g) - 0.5
    v = torch.rand(n, generator=g) - 0.5
    top = torch.where(u < 0.05, torch.full_like(u, 1.0), torch.full_like(u, 0.5))  # cabin: rear half
    z = torch.rand(n, generator=g) * top
    # each point pushed out to one face of its slab: the sides, the hood or the roof
    face = torch.randint(0, 3, (n,), generator=g)
    v = torch.where(face == 0, torch.sign(v) * 0.5, v)
    z = torch.where(face == 1, top, z)
    local = torch.stack([u * l, v * w, z * h - h / 2], dim=1)
    c, s = math.cos(float(box[6])), math.sin(float(box[6]))
    x = box[0] + c * local[:, 0] - s * local[:, 1]
    y = box[1] + s * local[:, 0] + c * local[:, 1]
    return torch.stack([x, y, box[2] + local[:, 2]], dim=1)


def car_boxes_and_points(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` car boxes (random places and headings over the full circle) and their points."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.zeros(k, 7)
    boxes[:, 0] = torch.arange(k) * 8.0 + torch.rand(k, generator=g)
    boxes[:, 1] = torch.rand(k, generator=g) * 20 - 10
    boxes[:, 2] = 0.85
    boxes[:, 3:6] = torch.tensor([4.6, 2.0, 1.7]) * (0.9 + 0.2 * torch.rand(k, 1, generator=g))
    boxes[:, 6] = torch.rand(k, generator=g) * 2 * math.pi - math.pi
    points = torch.cat([car_points(b, g) for b in boxes])
    return boxes, points
