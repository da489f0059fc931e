"""Synthetic street scenes: a road, static structures, traffic and the ego vehicle, as functions of time.

Everything is laid out along a road of constant curvature (a straight road or an arc), in road
coordinates ``(s, d)``: ``s`` arc length along the centre line, ``d`` offset to the left. Lanes are
at ``d = -1.75, -5.25`` (the ego's direction) and ``+1.75, +5.25`` (oncoming); cyclists at
``|d| = 7.6``; parked vehicles at ``|d| = 9.6``; poles, signs and trees at ``|d| = 11.4``; pedestrians
in three sidewalk strips at ``|d| = 12.6, 13.6, 14.6``; low walls at ``|d| = 15.6``; buildings from
``|d| = 16.5`` outwards. Actors follow their row (so vehicles turn with the road) at one constant speed
per row, and the rows are spaced for the largest sizes, so that no two objects ever overlap. Their
label box is exactly the bounding box of their mesh, with the heading of their direction of travel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.data.frame import TYPE_CYCLIST, TYPE_PEDESTRIAN, TYPE_SIGN, TYPE_VEHICLE

# Materials: index into REFLECTIVITY (per-triangle material of the cast scene).
GROUND, BUILDING, WALL, POLE, SIGN, TREE, VEHICLE, PEDESTRIAN, CYCLIST = range(9)
REFLECTIVITY = np.array([0.08, 0.22, 0.3, 0.35, 1.1, 0.15, 0.45, 0.2, 0.3])
ACTOR_MATERIAL = {TYPE_VEHICLE: VEHICLE, TYPE_PEDESTRIAN: PEDESTRIAN, TYPE_CYCLIST: CYCLIST, TYPE_SIGN: SIGN}

_BOX_TRIANGLES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                           [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], np.int64)


def hexahedron(bottom: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mesh of a convex solid given its bottom and top quads (4, 3) each, counter-clockwise from above."""
    return np.concatenate([bottom, top]).astype(np.float64), _BOX_TRIANGLES.copy()


def box(x0, x1, y0, y1, z0, z1) -> tuple[np.ndarray, np.ndarray]:
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    return hexahedron(np.c_[quad, np.full(4, z0)], np.c_[quad, np.full(4, z1)])


def merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    verts, tris, n = [], [], 0
    for v, t in parts:
        verts.append(v)
        tris.append(t + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(tris)


# --- actor shapes, in the actor frame: origin at the box centre, x along the length --------------

def vehicle_mesh(l: float, w: float, h: float, boxy: bool) -> tuple[np.ndarray, np.ndarray]:
    """Wheels, a body and a cabin that together fill exactly the box ``l x w x h``."""
    z0 = -h / 2
    wheel_d = min(0.7, 0.38 * h)
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * 0.32 * l, sy * (w / 2 - 0.14)
            parts.append(box(cx - wheel_d / 2, cx + wheel_d / 2, cy - 0.14, cy + 0.14, z0, z0 + wheel_d))
    body_top = z0 + (0.75 if boxy else 0.58) * h
    parts.append(box(-l / 2, l / 2, -w / 2, w / 2, z0 + 0.55 * wheel_d, body_top))
    if boxy:  # van/truck: the cabin is the full front, cargo box behind at full height
        parts.append(box(-l / 2, l / 2 - 0.15 * l, -w / 2, w / 2, body_top, z0 + h))
    else:  # car: sloped windscreen and rear window
        cw = 0.44 * w
        bottom = np.array([[-0.36 * l, -cw, body_top], [0.22 * l, -cw, body_top],
                           [0.22 * l, cw, body_top], [-0.36 * l, cw, body_top]])
        top = np.array([[-0.24 * l, -0.9 * cw, z0 + h], [0.02 * l, -0.9 * cw, z0 + h],
                        [0.02 * l, 0.9 * cw, z0 + h], [-0.24 * l, 0.9 * cw, z0 + h]])
        parts.append(hexahedron(bottom, top))
    return merge(parts)


def pedestrian_mesh(l: float, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Legs in stride (spanning the length), torso, arms (spanning the width) and head."""
    z0 = -h / 2
    leg = 0.16
    hip = z0 + 0.48 * h
    parts = [box(-l / 2, -l / 2 + leg, -0.15, -0.02, z0, hip), box(l / 2 - leg, l / 2, 0.02, 0.15, z0, hip),
             box(-0.12, 0.12, -0.2, 0.2, hip, z0 + 0.82 * h),
             box(-0.07, 0.07, -w / 2, -w / 2 + 0.1, z0 + 0.5 * h, z0 + 0.8 * h),
             box(-0.07, 0.07, w / 2 - 0.1, w / 2, z0 + 0.5 * h, z0 + 0.8 * h),
             box(-0.1, 0.1, -0.09, 0.09, z0 + 0.85 * h, z0 + h)]
    return merge(parts)


def full_pedestrian_mesh(l: float, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """A fuller person than ``pedestrian_mesh`` (generator 3): legs in stride, a coat-wide torso, arms
    hanging at the sides (spanning the width), a head."""
    z0 = -h / 2
    hip = z0 + 0.47 * h
    tw, td = min(0.5, 0.75 * w), min(0.36, 0.6 * l)
    parts = [box(-l / 2, -l / 2 + 0.2, -0.2, 0.0, z0, hip), box(l / 2 - 0.2, l / 2, 0.0, 0.2, z0, hip),
             box(-td / 2, td / 2, -tw / 2, tw / 2, hip - 0.1, z0 + 0.83 * h),
             box(-0.09, 0.09, -w / 2, -tw / 2, z0 + 0.45 * h, z0 + 0.8 * h),
             box(-0.09, 0.09, tw / 2, w / 2, z0 + 0.45 * h, z0 + 0.8 * h),
             box(-0.11, 0.11, -0.1, 0.1, z0 + 0.83 * h, z0 + h)]
    return merge(parts)


def full_cyclist_mesh(l: float, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """A fuller cyclist than ``cyclist_mesh`` (generator 3): tyres 0.1 m wide, a frame, handlebars spanning
    the width, a rider with legs down to the pedals, a coat-wide torso, arms out to the handlebars' ends and a
    head."""
    z0 = -h / 2
    r = 0.34
    seat = z0 + 2 * r + 0.1
    parts = [box(-l / 2, -l / 2 + 2 * r, -0.05, 0.05, z0, z0 + 2 * r),
             box(l / 2 - 2 * r, l / 2, -0.05, 0.05, z0, z0 + 2 * r),
             box(-l / 2 + r, l / 2 - r, -0.05, 0.05, z0 + r, seat),
             box(l / 2 - r - 0.1, l / 2 - r, -w / 2, w / 2, seat, seat + 0.1),
             box(-0.25, 0.1, -0.2, -0.06, z0 + r, seat), box(-0.25, 0.1, 0.06, 0.2, z0 + r, seat),
             box(-0.3, 0.2, -0.24, 0.24, seat, z0 + h - 0.25),
             box(0.2, l / 2 - r, -w / 2, -w / 2 + 0.12, seat + 0.1, z0 + h - 0.4),
             box(0.2, l / 2 - r, w / 2 - 0.12, w / 2, seat + 0.1, z0 + h - 0.4),
             box(-0.1, 0.12, -0.1, 0.1, z0 + h - 0.25, z0 + h)]
    return merge(parts)


def cyclist_mesh(l: float, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Two wheels, a frame, handlebars spanning the width, and a rider."""
    z0 = -h / 2
    r = 0.34
    parts = [box(-l / 2, -l / 2 + 2 * r, -0.03, 0.03, z0, z0 + 2 * r),
             box(l / 2 - 2 * r, l / 2, -0.03, 0.03, z0, z0 + 2 * r),
             box(-l / 2 + r, l / 2 - r, -0.04, 0.04, z0 + r, z0 + 2 * r + 0.1),
             box(l / 2 - r - 0.1, l / 2 - r, -w / 2, w / 2, z0 + 2 * r + 0.1, z0 + 2 * r + 0.2),
             box(-0.25, 0.2, -0.18, 0.18, z0 + 2 * r + 0.1, z0 + h - 0.25),
             box(-0.05, 0.15, -0.1, 0.1, z0 + h - 0.25, z0 + h)]
    return merge(parts)


# --- the road --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoadPath:
    """A centre line of constant curvature from ``(x0, y0)`` with heading ``heading0``."""

    x0: float
    y0: float
    heading0: float
    curvature: float

    def at(self, s, d=0.0):
        """World ``(x, y, heading)`` of road coordinates ``(s, d)`` (arrays broadcast)."""
        s, d = np.asarray(s, np.float64), np.asarray(d, np.float64)
        k = self.curvature
        h = self.heading0 + k * s
        if abs(k) < 1e-9:
            c, sn = np.cos(self.heading0), np.sin(self.heading0)
            return self.x0 + s * c - d * sn, self.y0 + s * sn + d * c, h + 0 * d
        cx = self.x0 - np.sin(self.heading0) / k
        cy = self.y0 + np.cos(self.heading0) / k
        radius = 1.0 / k - d
        return cx + radius * np.sin(h), cy - radius * np.cos(h), h + 0 * d


@dataclass
class Actor:
    """A labeled object moving along the road: ``s(t) = s0 + speed * t`` at a fixed offset ``d0``.

    ``reverse`` turns it to face -s (oncoming traffic, some parked cars)."""

    type: int
    size: tuple[float, float, float]  # length, width, height
    s0: float
    d0: float
    speed: float = 0.0
    reverse: bool = False
    z0: float = 0.0  # height of the box bottom above the ground (signs)
    id: str = ""
    mesh: tuple[np.ndarray, np.ndarray] = field(default=None, repr=False)
    path: RoadPath | None = None  # the road it follows, if not the scene's main road (cross streets)
    yaw: float = 0.0  # heading offset from its direction of travel (cars parked across a lot's rows)
    albedo: float | None = None  # its surface reflectivity (None: its material's, REFLECTIVITY)

    def state(self, road: RoadPath, t: float) -> tuple[np.ndarray, float]:
        """World box centre (3,) and heading at time ``t``."""
        s = self.s0 + self.speed * t
        x, y, h = (self.path or road).at(s, self.d0)
        heading = float(h) + (np.pi if self.reverse else 0.0) + self.yaw
        return np.array([float(x), float(y), self.z0 + self.size[2] / 2]), heading


@dataclass
class Ego:
    """The ego vehicle drives along ``d`` with ``s(t) = speed t + accel t^2 / 2``; small body roll and
    pitch oscillations (``wobble`` rad) make the vehicle frame tilt like a real car's."""

    d: float
    speed: float
    accel: float
    wobble: float = 0.0
    phase: tuple[float, float] = (0.0, 0.0)

    def rpy_xyz(self, road: RoadPath, t) -> np.ndarray:
        """(N, 6) ``(roll, pitch, yaw, x, y, z)`` vehicle-to-world at times ``t`` (seconds)."""
        t = np.atleast_1d(np.asarray(t, np.float64))
        s = self.speed * t + 0.5 * self.accel * t * t
        x, y, yaw = road.at(s, self.d)
        roll = self.wobble * np.sin(2 * np.pi * 0.7 * t + self.phase[0])
        pitch = self.wobble * np.sin(2 * np.pi * 1.1 * t + self.phase[1])
        return np.stack([roll, pitch, yaw, x, y, np.zeros_like(t)], axis=-1)


@dataclass
class Scene:
    road: RoadPath
    ego: Ego
    actors: list[Actor]
    static: tuple[np.ndarray, np.ndarray, np.ndarray]  # vertices, triangles, per-triangle material
    no_label_zones: list[np.ndarray]  # world-frame polygons (K, 2)
    static_albedo: np.ndarray | None = None  # per static triangle (None: REFLECTIVITY of its material)


def _actor_mesh(type_: int, size, boxy, pedestrian, cyclist) -> tuple[np.ndarray, np.ndarray]:
    """The mesh of an actor of ``type_`` and box ``size`` (l, w, h) at the origin: a vehicle body (``boxy``),
    ``pedestrian(l, w, h)`` / ``cyclist(l, w, h)`` for those classes (each world has its own), a box else."""
    l, w, h = size
    if type_ == TYPE_VEHICLE:
        return vehicle_mesh(l, w, h, boxy)
    if type_ == TYPE_PEDESTRIAN:
        return pedestrian(l, w, h)
    if type_ == TYPE_CYCLIST:
        return cyclist(l, w, h)
    return box(-l / 2, l / 2, -w / 2, w / 2, -h / 2, h / 2)


def _placed(mesh, path, s: float, d: float, yaw_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``mesh`` (vertices, triangles) turned and moved to the point ``(s, d)`` of ``path`` (its heading there
    plus ``yaw_offset``), in world coordinates."""
    x, y, h = path.at(s, d)
    h = float(h) + yaw_offset
    v, t = mesh
    c, sn = np.cos(h), np.sin(h)
    return np.c_[c * v[:, 0] - sn * v[:, 1] + x, sn * v[:, 0] + c * v[:, 1] + y, v[:, 2]], t


def _track_id(rng: np.random.Generator) -> str:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    return "".join(rng.choice(alphabet, 22))


def _vehicle_size(rng) -> tuple[tuple[float, float, float], bool]:
    kind = rng.random()
    if kind < 0.72:  # car
        return (rng.uniform(4.0, 5.0), rng.uniform(1.75, 2.0), rng.uniform(1.4, 1.7)), False
    if kind < 0.95:  # van / SUV
        return (rng.uniform(4.6, 5.4), rng.uniform(1.9, 2.1), rng.uniform(1.75, 2.1)), True
    return (rng.uniform(7.5, 11.0), rng.uniform(2.4, 2.6), rng.uniform(2.9, 3.4)), True  # truck / bus


def _fill_row(rng, s_lo, s_hi, length_fn, gap_lo, gap_hi, keep=1.0):
    """Positions (centre s, length, extra) along a row with random gaps; ``keep`` thins the row."""
    out, s = [], s_lo + rng.uniform(0, gap_hi)
    while s < s_hi:
        length, extra = length_fn()
        if rng.random() < keep:
            out.append((s + length / 2, length, extra))
        s += length + rng.uniform(gap_lo, gap_hi)
    return out


def make_scene(rng: np.random.Generator, duration: float, object_range: float = 45.0,
               vehicle_density: float = 1.0, wobble: float = 0.0, nlz_prob: float = 0.5) -> Scene:
    """A random street scene for ``duration`` seconds of driving (deterministic for ``rng``)."""
    road = RoadPath(rng.uniform(-300, 300), rng.uniform(-300, 300), rng.uniform(-np.pi, np.pi),
                    float(rng.choice([0.0, 1.0]) * rng.uniform(-1 / 60, 1 / 60)))
    ego = Ego(d=-1.75, speed=rng.uniform(3.0, 11.0), accel=rng.uniform(-0.4, 0.6), wobble=wobble,
              phase=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)))
    ego_s_end = ego.speed * duration + 0.5 * ego.accel * duration ** 2
    s_lo, s_hi = -object_range, ego_s_end + object_range
    actors: list[Actor] = []

    def add(type_, size, s0, d0, **kw):
        mesh = _actor_mesh(type_, size, kw.pop("boxy", None), pedestrian_mesh, cyclist_mesh)
        actors.append(Actor(type_, tuple(size), s0, d0, id=_track_id(rng), mesh=mesh, **kw))

    def vehicle():
        size, boxy = _vehicle_size(rng)
        return size[0], (size, boxy)

    def cyclist():
        size = (rng.uniform(1.6, 1.95), rng.uniform(0.55, 0.8), rng.uniform(1.6, 1.85))
        return size[0], size

    def pedestrian():
        size = (rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0), rng.uniform(1.5, 1.95))
        return 0.8, size

    # Moving traffic: one speed per lane (no overtaking inside a lane).
    for d, direction in ((-1.75, 1), (-5.25, 1), (1.75, -1), (5.25, -1)):
        speed = ego.speed if d == ego.d else rng.uniform(3.0, 13.0)
        span = speed * duration + 10
        lo, hi = (s_lo - span, s_hi) if direction > 0 else (s_lo, s_hi + span)
        for s, _, (size, boxy) in _fill_row(rng, lo, hi, vehicle, 6.0, 26.0 / vehicle_density):
            if d == ego.d and -20.0 < s < 18.0:
                continue  # keep the ego's own place free (it may accelerate or brake a little)
            add(TYPE_VEHICLE, size, s, d, speed=direction * speed, reverse=direction < 0, boxy=boxy)

    # Parked vehicles along both curbs.
    for d in (-9.6, 9.6):
        for s, _, (size, boxy) in _fill_row(rng, s_lo, s_hi, vehicle, 0.8, 7.0, keep=min(1.0, 0.75 * vehicle_density)):
            add(TYPE_VEHICLE, size, s, d, reverse=bool(rng.random() < 0.3), boxy=boxy)

    # Cyclists in the bike lanes; pedestrians on the sidewalks, walking either way or standing.
    for d, direction in ((-7.6, 1), (7.6, -1)):
        speed = rng.uniform(2.5, 6.0)
        for s, _, size in _fill_row(rng, s_lo - speed * duration, s_hi + speed * duration, cyclist, 15.0, 70.0):
            add(TYPE_CYCLIST, size, s, d, speed=direction * speed, reverse=direction < 0)
    for side in (-1, 1):
        # Three sidewalk strips, 1 m apart: walking one way, the other way, standing.
        speeds = rng.permutation([rng.uniform(0.7, 1.6), -rng.uniform(0.7, 1.6), 0.0])
        for d, speed in zip((12.6, 13.6, 14.6), speeds):
            for s, _, size in _fill_row(rng, s_lo, s_hi, pedestrian, 1.0, 30.0, keep=0.8):
                add(TYPE_PEDESTRIAN, size, s, side * d, speed=speed,
                    reverse=bool(speed < 0 or (speed == 0 and rng.random() < 0.5)))

    # Static structures: buildings, low walls, poles (some with signs), trees.
    parts, mats = [], []

    def place(mesh, s, d, material, yaw_offset=0.0):
        parts.append(_placed(mesh, road, s, d, yaw_offset))
        mats.append(np.full(len(mesh[1]), material))

    for side in (-1, 1):
        for s, length, (depth, height, setback) in _fill_row(
                rng, s_lo - 20, s_hi + 20,
                lambda: (rng.uniform(8, 30), (rng.uniform(8, 20), rng.uniform(4, 22), rng.uniform(0, 5))),
                2.0, 10.0, keep=0.85):
            d_near = 16.5 + setback
            place(box(-length / 2, length / 2, -depth / 2, depth / 2, 0, height), s,
                  side * (d_near + depth / 2), BUILDING)
        for s, length, height in _fill_row(rng, s_lo, s_hi, lambda: (rng.uniform(5, 20), rng.uniform(1.0, 2.3)),
                                           3.0, 25.0, keep=0.5):
            place(box(-length / 2, length / 2, -0.15, 0.15, 0, height), s, side * 15.6, WALL)
        for s, _, kind in _fill_row(rng, s_lo, s_hi, lambda: (0.3, rng.random()), 10.0, 30.0):
            d = side * 11.4
            if kind < 0.25:  # tree: trunk and crown
                place(box(-0.15, 0.15, -0.15, 0.15, 0, 3.6), s, d, TREE)
                r = rng.uniform(1.0, 1.8)
                place(box(-r, r, -r, r, 3.6, 3.6 + 2 * r * rng.uniform(0.8, 1.2)), s, d, TREE)
                continue
            pole_h = rng.uniform(4.5, 8.0)
            place(box(-0.12, 0.12, -0.12, 0.12, 0, pole_h), s, d, POLE)
            if kind > 0.6:  # a sign plate facing the traffic, labeled
                size = (0.08, rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9))
                add(TYPE_SIGN, size, s - 0.2 * side, d - 0.0, z0=rng.uniform(2.0, 2.6),
                    reverse=side > 0)

    # No-label zone over part of a building block (beyond the walls: no actor inside), in the world frame.
    zones = []
    if rng.random() < nlz_prob:
        s0 = rng.uniform(-20.0, ego_s_end)  # next to the ego's path, so that it is seen
        side = rng.choice([-1, 1])
        ss = np.array([s0, s0 + 20, s0 + 20, s0])
        dd = side * np.array([16.0, 16.0, 40.0, 40.0])
        x, y, _ = road.at(ss, dd)
        zones.append(np.c_[x, y])

    v, t = merge(parts)
    return Scene(road, ego, actors, (v, t, np.concatenate(mats)), zones)


# --- generator 3: a city calibrated to Waymo's label statistics -----------------------------------------

#: Surface reflectivity of vehicle paints (black, dark, grey, light, white) and of clothing: the sensor of
#: generator 3 loses returns of dark surfaces at range (``synth_lidar.Detection``), as a real lidar does.
_PAINT = ((0.30, 0.04, 0.10), (0.25, 0.10, 0.25), (0.25, 0.25, 0.50), (0.20, 0.50, 0.90))
_CLOTHING = (0.2, 0.7)


@dataclass(frozen=True)
class StreetLayout:
    """Offsets ``|d|`` (m from the centre line) of a street's rows, the same on both sides."""

    lanes: tuple[float, ...]  # traffic lanes each way, inner first
    bike: float | None  # bike lane (None: none)
    parked: float
    poles: float  # poles, signs and trees
    walks: tuple[float, float, float]  # three sidewalk strips
    wall: float
    front: float  # where the lots (buildings, parking lots, plazas) start; a cross street's half corridor


#: An avenue (two lanes each way, bike lanes) and a street (one lane each way, no bike lane: sidewalks 5 m
#: nearer the ego). Cars up to 2.6 m wide, people up to 1 m: no two rows overlap.
AVENUE = StreetLayout((1.75, 5.25), 7.6, 9.6, 11.4, (12.6, 13.6, 14.6), 15.6, 16.5)
STREET = StreetLayout((1.75,), None, 4.85, 6.6, (7.8, 8.8, 9.8), 10.8, 11.7)


@dataclass(frozen=True)
class CityConfig:
    """The knobs of ``make_city_scene`` (its defaults are the calibrated world)."""

    object_range: float = 90.0  # metres before and after the ego's path where objects are placed
    vehicle_density: float = 1.0  # scales moving traffic, parked rows and lots
    pedestrian_density: float = 1.0  # scales sidewalks, corner crowds and plazas
    cross_street_gap: tuple[float, float] = (55.0, 120.0)  # metres between cross streets
    lot_kinds: tuple[float, float, float] = (0.5, 0.28, 0.22)  # chance of a building, parking lot, plaza
    street_share: float = 0.5  # chance that the scene is a street (STREET) rather than an avenue (AVENUE)
    wobble: float = 0.0
    nlz_prob: float = 0.5
    beside_share: float = 0.6  # chance that the other lane of the ego's direction keeps pace, a car beside it
    near_parked: float = 0.5  # the parked row on the ego's side along its path (elsewhere 0.2 x density)
    # the calibrated densities, which vehicle_density and pedestrian_density scale: real Waymo frames hold
    # ~15 vehicles and ~22 pedestrians within 75 m; at 1.0 / 1.0 this city held 39 and 46, its objects at
    # 10-30 m outnumbering those beside the ego and its far rows hiding each other
    vehicle_base: float = 0.6
    pedestrian_base: float = 0.3


def _paint(rng) -> float:
    p, lo, hi = _PAINT[min(int(np.searchsorted(np.cumsum([c[0] for c in _PAINT]), rng.random())), len(_PAINT) - 1)]
    return float(rng.uniform(lo, hi))


def make_city_scene(rng: np.random.Generator, duration: float, cfg: CityConfig = CityConfig()) -> Scene:
    """A random city scene for ``duration`` seconds of driving (deterministic for ``rng``): the main road of
    ``make_scene`` (four lanes of traffic, parked rows, bike lanes, three sidewalk strips a side) crossed by
    side streets every ``cross_street_gap`` metres, whose traffic waits at the crossing in queues or drives
    away from it, with parked rows, sidewalks and crowds waiting at the corners; between the streets, lots
    on both sides: buildings, parking lots (rows of cars parked across, seen between each other) or plazas
    (groups of people standing or strolling), each with a building behind. Objects are placed
    ``object_range`` metres before and after the ego's path, so that the edge of a 75 m label range is
    populated. Every actor keeps to its own row (lane, queue, parking row, sidewalk strip, crowd grid cell)
    so that no two ever overlap."""
    # a straight road (a grid city): cross streets then stay perpendicular to it all the way out
    road = RoadPath(rng.uniform(-300, 300), rng.uniform(-300, 300), rng.uniform(-np.pi, np.pi), 0.0)
    lay = STREET if rng.random() < cfg.street_share else AVENUE
    # the ego drives in the inner or the outer lane; it waits at a light a quarter of the time; its speed
    # changes by at most ~4 m over the segment, so that it keeps clear of the cars before and after it
    moving = rng.random() >= 0.25
    ego = Ego(d=-float(rng.choice(lay.lanes)), speed=rng.uniform(3.0, 13.0) if moving else 0.0,
              accel=rng.uniform(-0.3, 0.5) * min(1.0, (4.0 / max(duration, 1e-3)) ** 2) if moving else 0.0,
              wobble=cfg.wobble, phase=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)))
    reach = cfg.object_range
    ego_s_end = ego.speed * duration + 0.5 * ego.accel * duration ** 2
    s_lo, s_hi = -reach, ego_s_end + reach
    vd, pd = cfg.vehicle_density * cfg.vehicle_base, cfg.pedestrian_density * cfg.pedestrian_base
    actors: list[Actor] = []

    def add(type_, size, s0, d0, albedo, **kw):
        mesh = _actor_mesh(type_, size, kw.pop("boxy", None), full_pedestrian_mesh, full_cyclist_mesh)
        actors.append(Actor(type_, tuple(size), s0, d0, id=_track_id(rng), mesh=mesh, albedo=albedo, **kw))

    def vehicle():
        size, boxy = _vehicle_size(rng)
        return size[0], (size, boxy)

    def pedestrian_size(most=1.0):
        return (rng.uniform(0.55, most), rng.uniform(0.55, most), rng.uniform(1.5, 1.95))

    def cyclist():
        size = (rng.uniform(1.6, 1.95), rng.uniform(0.55, 0.8), rng.uniform(1.6, 1.85))
        return size[0], size

    def clothing():
        return float(rng.uniform(*_CLOTHING))

    # Cross streets: straight, across the main road, of its layout; a corridor of +-front along s is theirs.
    crossings = []
    s = s_lo + rng.uniform(0.0, cfg.cross_street_gap[1])
    while s < s_hi:
        crossings.append(s)
        s += rng.uniform(*cfg.cross_street_gap)
    half = lay.front

    def free(s0, s1):
        """True where [s0, s1] along the main road stays clear of every crossing's corridor."""
        return all(s1 < c - half or s0 > c + half for c in crossings)

    # Main road: moving traffic, one speed per lane; the ego's own place kept free.
    # The other lane of the ego's direction (avenues) keeps pace with the ego in most scenes, a car right
    # beside it (real near vehicles: 4 in 10 within 10 m of the ego, thousands of points each).
    for d, direction in [(-lane, 1) for lane in lay.lanes] + [(lane, -1) for lane in lay.lanes]:
        beside = direction > 0 and d != ego.d and rng.random() < cfg.beside_share
        speed = ego.speed if d == ego.d or beside else float(rng.choice([0.0, rng.uniform(3.0, 14.0)],
                                                                            p=[0.15, 0.85]))
        span = speed * duration + 10
        lo, hi = (s_lo - span, s_hi) if direction > 0 else (s_lo, s_hi + span)
        for s, length, (size, boxy) in _fill_row(rng, lo, hi, vehicle, 3.0 if speed == 0 else 6.0,
                                                 (4.0 if speed == 0 else 12.0) + 30.0 / vd):
            if d == ego.d and -12.0 < s < 10.0:  # the ego's own place (its speed drifts by <= 4 m)
                continue
            if beside and s + length / 2 > -9.0 and s - length / 2 < 9.0:  # the place beside the ego
                continue
            add(TYPE_VEHICLE, size, s, d, _paint(rng), speed=direction * speed, reverse=direction < 0, boxy=boxy)
        if beside:
            (l_, w_, h_), boxy = _vehicle_size(rng)
            add(TYPE_VEHICLE, (min(l_, 5.4), w_, h_), rng.uniform(-3.0, 3.0), d, _paint(rng), speed=speed,
                boxy=boxy)
    # Parked rows along both curbs, outside the crossings.
    # Along the ego's own path the curb on its side is parked fuller (cars passed a few metres away).
    for d in (-lay.parked, lay.parked):
        for s, length, (size, boxy) in _fill_row(rng, s_lo, s_hi, vehicle, 0.8, 7.0, keep=1.0):
            near = d < 0 and -15.0 < s < ego_s_end + 15.0
            if rng.random() < min(1.0, cfg.near_parked if near else 0.2 * vd) and free(s - length / 2, s + length / 2):
                add(TYPE_VEHICLE, size, s, d, _paint(rng), reverse=bool(rng.random() < 0.3), boxy=boxy)
    # Cyclists in the bike lanes.
    for d, direction in ((-lay.bike, 1), (lay.bike, -1)) if lay.bike else ():
        speed = rng.uniform(2.5, 6.0)
        for s, _, size in _fill_row(rng, s_lo - speed * duration, s_hi + speed * duration, cyclist, 12.0, 55.0):
            add(TYPE_CYCLIST, size, s, d, clothing(), speed=direction * speed, reverse=direction < 0)
    # Sidewalks: three strips a side (walking one way, the other, standing), across the crossings too.
    for side in (-1, 1):
        speeds = rng.permutation([rng.uniform(0.7, 1.6), -rng.uniform(0.7, 1.6), 0.0])
        for d, speed in zip(lay.walks, speeds):
            for s, _, size in _fill_row(rng, s_lo, s_hi, lambda: (0.8, pedestrian_size()), 1.0, 4.0 + 80.0 / pd,
                                        keep=0.8):
                add(TYPE_PEDESTRIAN, size, s, side * d, clothing(), speed=speed,
                    reverse=bool(speed < 0 or (speed == 0 and rng.random() < 0.5)))

    parts, mats, albedos = [], [], []

    def place(mesh, s, d, material, yaw_offset=0.0, path=None, albedo=None):
        parts.append(_placed(mesh, path or road, s, d, yaw_offset))
        n = len(mesh[1])
        mats.append(np.full(n, material))
        albedos.append(np.full(n, REFLECTIVITY[material] if albedo is None else albedo))

    def crowd(path, s0, s1, d0, d1, keep):
        """People standing on a 1.05 m grid over ``[s0, s1] x [d0, d1]`` of ``path``, turned up to 0.3 rad
        (at most 0.8 m across, so that two cells never overlap)."""
        for d in np.arange(min(d0, d1), max(d0, d1) - 1.0, 1.05):
            for s in np.arange(min(s0, s1), max(s0, s1) - 1.0, 1.05):
                if rng.random() < keep:
                    add(TYPE_PEDESTRIAN, pedestrian_size(0.8), s + 0.525, d + 0.525, clothing(), path=path,
                        reverse=bool(rng.random() < 0.5), yaw=float(rng.uniform(-0.3, 0.3)))

    # The cross streets: queues waiting at the crossing, traffic leaving it, parked rows, sidewalks, corners.
    for c in crossings:
        x, y, h = road.at(c, 0.0)
        cross = RoadPath(float(x), float(y), float(h) + np.pi / 2, 0.0)
        for sgn in (-1, 1):  # the half on the main road's left (+1) or right (-1)
            for d in lay.lanes:
                # inbound (towards the main road) on the right of their travel: d' = +d on the left half
                queue_d, out_d = sgn * d, -sgn * d
                s = half + 1.0
                for _ in range(int(rng.integers(0, int(3 * vd) + 1))):
                    (l_, w_, h_), boxy = _vehicle_size(rng)
                    add(TYPE_VEHICLE, (l_, w_, h_), sgn * (s + l_ / 2), queue_d, _paint(rng), path=cross,
                        reverse=sgn > 0, boxy=boxy)
                    s += l_ + rng.uniform(1.0, 3.5)
                speed = rng.uniform(4.0, 12.0)
                for s, _, (size, boxy) in _fill_row(rng, half + 1.5, 70.0, vehicle, 10.0, 10.0 + 90.0 / vd):
                    add(TYPE_VEHICLE, size, sgn * s, out_d, _paint(rng), path=cross, speed=sgn * speed,
                        reverse=sgn < 0, boxy=boxy)
            for d in (-lay.parked, lay.parked):
                for s, _, (size, boxy) in _fill_row(rng, half + 2.5, 50.0, vehicle, 0.8, 8.0, keep=min(1.0, 0.25 * vd)):
                    add(TYPE_VEHICLE, size, sgn * s, d, _paint(rng), path=cross, reverse=bool(rng.random() < 0.5),
                        boxy=boxy)
            for d in lay.walks:  # walking away from the crossing, or standing
                speed = float(rng.choice([0.0, rng.uniform(0.7, 1.6)]))
                for s, _, size in _fill_row(rng, half + 5.5, 60.0, lambda: (0.8, pedestrian_size()), 1.0,
                                            4.0 + 50.0 / pd, keep=0.8):
                    for side in (-1, 1):
                        add(TYPE_PEDESTRIAN, size if side < 0 else pedestrian_size(), sgn * s, side * d, clothing(),
                            path=cross, speed=sgn * speed, reverse=sgn < 0)
            for side in (-1, 1):  # people waiting at the corner to cross
                if rng.random() < 0.7:
                    edge = lay.poles - 0.2
                    crowd(cross, sgn * (half + 0.4), sgn * (half + 4.7), side * edge,
                          side * (edge + rng.uniform(2.1, 4.2)),
                          keep=0.22 * pd)
            for side in (-1, 1):  # poles and trees along the cross street
                for s, _, kind in _fill_row(rng, half + 6.5, reach + 20, lambda: (0.3, rng.random()), 10.0, 30.0):
                    _pole_or_tree(place, kind, sgn * s, side * lay.poles, rng, path=cross)

    # Lots between the crossings on both sides: building, parking lot or plaza, each with a building behind.
    for side in (-1, 1):
        for s, length, (kind, depth, setback) in _fill_row(
                rng, s_lo - 30, s_hi + 30,
                lambda: (rng.uniform(15, 45), (rng.random(), rng.uniform(18, 45), rng.uniform(0, 4))), 1.0, 6.0):
            s0, s1 = s - length / 2, s + length / 2
            if not free(s0, s1):
                continue
            d_near = lay.front + setback
            p_build, p_park, _ = cfg.lot_kinds
            if kind < p_build:
                place(box(-length / 2, length / 2, -depth / 2, depth / 2, 0, rng.uniform(4, 25)), s,
                      side * (d_near + depth / 2), BUILDING, albedo=rng.uniform(0.1, 0.35))
                if rng.random() < 0.5:
                    place(box(-length / 2, length / 2, -0.15, 0.15, 0, rng.uniform(1.0, 2.3)), s, side * lay.wall, WALL)
                continue
            if kind < p_build + p_park:  # rows of cars parked across, aisles between them
                d = lay.front + 0.7
                while d + 5.6 < lay.front + depth:
                    facing = bool(rng.random() < 0.5)
                    for p in np.arange(s0 + 1.5, s1 - 1.5, rng.uniform(2.6, 3.2)):
                        if rng.random() < min(1.0, 0.15 * vd):
                            (l_, w_, h_), boxy = _vehicle_size(rng)
                            l_ = min(l_, 5.4)
                            add(TYPE_VEHICLE, (l_, min(w_, 2.1), min(h_, 2.2)), p, side * (d + 2.7), _paint(rng),
                                yaw=np.pi / 2, reverse=facing, boxy=boxy)
                    d += 5.6 + rng.uniform(5.5, 7.0)
            else:  # plaza: groups of people, one in each part of it
                groups = int(rng.integers(1, 4))
                for k in range(groups):
                    g0, g1 = s0 + k * length / groups, s0 + (k + 1) * length / groups
                    gs = rng.uniform(g0, max(g0, g1 - 4.0))
                    gd = rng.uniform(lay.front + 0.5, lay.front + depth - 6.0)
                    crowd(road, gs, min(g1, gs + rng.uniform(3.2, 8.0)), side * gd, side * (gd + rng.uniform(2.2, 5.5)),
                          keep=0.25 * pd)
            back = rng.uniform(8, 20)
            place(box(-length / 2, length / 2, -back / 2, back / 2, 0, rng.uniform(4, 25)), s,
                  side * (lay.front + depth + back / 2 + 0.5), BUILDING, albedo=rng.uniform(0.1, 0.35))

    # Poles (some with signs) and trees along the main road, outside the crossings.
    for side in (-1, 1):
        for s, _, kind in _fill_row(rng, s_lo, s_hi, lambda: (0.3, rng.random()), 8.0, 25.0):
            if free(s - 1.0, s + 1.0):
                sign = _pole_or_tree(place, kind, s, side * lay.poles, rng)
                if sign is not None:
                    add(TYPE_SIGN, sign[0], s - 0.2 * side, side * lay.poles, 1.1, z0=sign[1], reverse=side > 0)

    zones = []
    if rng.random() < cfg.nlz_prob:
        s0 = rng.uniform(-20.0, ego_s_end)
        sd = rng.choice([-1, 1])
        ss = np.array([s0, s0 + 20, s0 + 20, s0])
        dd = sd * np.array([lay.front - 0.5, lay.front - 0.5, lay.front + 23.5, lay.front + 23.5])
        x, y, _ = road.at(ss, dd)
        zones.append(np.c_[x, y])
        # nothing labelled inside a no-label zone: the actors of the lots and streets under it stay away
        times = np.linspace(0.0, duration, 9)
        inside = [any(points_in_polygons(a.state(road, t)[0][None, :2], zones)[0] for t in times) for a in actors]
        actors = [a for a, out in zip(actors, inside) if not out]
    v, t = merge(parts)
    return Scene(road, ego, actors, (v, t, np.concatenate(mats)), zones, np.concatenate(albedos))


def _pole_or_tree(place, kind: float, s: float, d: float, rng, path=None):
    """A tree (a quarter), or a pole, with a sign plate on 4 in 10 poles: returns the plate's (size, z0)."""
    if kind < 0.25:
        place(box(-0.15, 0.15, -0.15, 0.15, 0, 3.6), s, d, TREE, path=path)
        r = rng.uniform(1.0, 1.8)
        place(box(-r, r, -r, r, 3.6, 3.6 + 2 * r * rng.uniform(0.8, 1.2)), s, d, TREE, path=path)
        return None
    place(box(-0.12, 0.12, -0.12, 0.12, 0, rng.uniform(4.5, 8.0)), s, d, POLE, path=path)
    if kind > 0.6 and path is None:
        return (0.08, rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9)), rng.uniform(2.0, 2.6)
    return None


def ground_mesh(center_xy: np.ndarray, half: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    cx, cy = center_xy
    v = np.array([[cx - half, cy - half, 0], [cx + half, cy - half, 0], [cx + half, cy + half, 0],
                  [cx - half, cy + half, 0]], np.float64)
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int64)


def actor_world_mesh(actor: Actor, center: np.ndarray, heading: float) -> np.ndarray:
    """World vertices of ``actor``'s mesh with its box centre at ``center`` and yaw ``heading``."""
    v = actor.mesh[0]
    c, s = np.cos(heading), np.sin(heading)
    return np.c_[c * v[:, 0] - s * v[:, 1] + center[0], s * v[:, 0] + c * v[:, 1] + center[1], v[:, 2] + center[2]]


def points_in_polygons(xy: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """Even-odd rule: (N,) bool, True where a point lies inside any polygon."""
    inside = np.zeros(len(xy), bool)
    for poly in polygons:
        hit = np.zeros(len(xy), bool)
        x, y = xy[:, 0], xy[:, 1]
        for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
            crosses = (y1 > y) != (y2 > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            hit ^= crosses & (x < xc)
        inside |= hit
    return inside
