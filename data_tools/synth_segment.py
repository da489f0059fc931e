"""One synthetic segment: scene -> ray-cast lidars -> genuine ``dataset_pb2.Frame`` records.

``synthesize_segment`` yields, per frame, the serialized record and a ``FrameTruth`` (the points the
synthesizer cast, in the vehicle frame, in the reader's order; and the labels), which the tests use
to check the reader end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from waymo_open_dataset import dataset_pb2, label_pb2

from data_tools.synth_lidar import CastScene, Detection, NoiseConfig, capture, make_rig, pose_matrices, sweep_times
from data_tools.synth_scene import (
    ACTOR_MATERIAL,
    GROUND,
    REFLECTIVITY,
    CityConfig,
    Scene,
    actor_world_mesh,
    ground_mesh,
    make_city_scene,
    make_scene,
)
from detector.data.waymo_reader import encode_matrix_float

#: The default generator version (``SegmentConfig.generator``): a version is raised whenever the same seed
#: and settings start giving other data, so that a store made by an older generator is not taken for this
#: one's (``scripts/bench/paper_table.py``, ``scripts/demo.sh``); every version listed in ``GENERATORS``
#: stays reproducible by its number. 2: the street world (``synth_scene.make_scene``), noise drawn per pixel
#: and per frame (the same data on any CPU to a few points); the demo's world.
GENERATOR = 2
#: The versions this synthesizer makes. 3: the Waymo-calibrated city (``synth_scene.make_city_scene``),
#: objects placed to 90 m, surfaces of their own reflectivity and a sensor that loses weak returns
#: (``synth_lidar.Detection``), calibrated to real Waymo label statistics (docs/studies/calibrated_world.md).
GENERATORS = (2, 3)
#: The calibrated world's sensor (generator 3).
CALIBRATED_DETECTION = Detection(dark_range=70.0)

FRAME_SECONDS = 0.1
LEVEL_2 = label_pb2.Label.DifficultyLevel.LEVEL_2
TOP = dataset_pb2.LaserName.TOP


@dataclass
class SegmentConfig:
    frames: int = 30
    generator: int = GENERATOR  # the world and sensor model: one of GENERATORS
    lidar: str = "demo"  # "demo" or "waymo" (see synth_lidar.make_rig)
    top_height: int | None = None
    top_width: int | None = None
    object_range: float = 45.0  # metres around the ego's path where objects are placed (generator 3: 90)
    label_range: float = 75.0  # objects whose centre is closer than this to the ego are labeled
    vehicle_density: float = 1.0
    pedestrian_density: float = 1.0  # generator 3: scales sidewalks, crowds and plazas
    wobble: float = 0.0  # amplitude (rad) of the ego body's roll and pitch oscillation
    nlz_prob: float = 0.5  # chance that a segment has a no-label zone (over a building block)
    zlib_level: int = 1  # any level reads the same; 1 compresses ~2x faster than 6 for 2% more bytes
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass
class FrameTruth:
    """What the synthesizer cast in one frame, in the vehicle frame of the frame pose."""

    points: np.ndarray  # (N, 3) float64, reader order: return 1 of every lidar by name, then return 2
    pose: np.ndarray  # (4, 4)
    boxes: np.ndarray  # (M, 7) float64
    types: np.ndarray
    ids: list[str]
    num_points: np.ndarray


def segment_name(rng: np.random.Generator, frames: int = 200) -> str:
    """A context name in Waymo's style, e.g. ``10017090168044687777_6380_000_6400_000``: the last two
    groups are the start and end offsets (seconds_milliseconds), ``frames`` at 10 Hz apart, so that the
    converter's check for segments cut short (``data_tools.segment_checks``) holds for synthetic data."""
    number = "".join(str(d) for d in rng.integers(0, 10, 19))
    start = int(rng.integers(100, 9000))
    end_ms = start * 1000 + round(frames * FRAME_SECONDS * 1000)
    return f"1{number}_{start}_000_{end_ms // 1000}_{end_ms % 1000:03d}"


def points_in_box_counts(points: np.ndarray, boxes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Number of ``points`` (N, 3) inside each box (M, 7) ``(cx, cy, cz, l, w, h, heading)``, boundary
    included; with ``weights`` (N, K) the (M, K) sums of the weights of the points inside instead."""
    w_ = np.ones((len(points), 1), np.int64) if weights is None else np.asarray(weights).reshape(len(points), -1)
    counts = np.zeros((len(boxes), w_.shape[1]), w_.dtype)
    order = np.argsort(points[:, 0], kind="stable")
    xs = points[order, 0]
    for i, (cx, cy, cz, l, w, h, hd) in enumerate(boxes):
        reach = 0.5 * np.hypot(l, w)
        lo, hi = np.searchsorted(xs, [cx - reach, cx + reach], side="left")
        cand = order[lo:hi]
        p = points[cand]
        dx, dy = p[:, 0] - cx, p[:, 1] - cy
        c, s = np.cos(hd), np.sin(hd)
        inside = ((np.abs(c * dx + s * dy) <= l / 2) & (np.abs(-s * dx + c * dy) <= w / 2)
                  & (np.abs(p[:, 2] - cz) <= h / 2))
        counts[i] = w_[cand[inside]].sum(axis=0)
    return counts if weights is not None else counts[:, 0]


def _context(name: str, rig) -> dataset_pb2.Context:
    ctx = dataset_pb2.Context(name=name)
    # Waymo does not list the calibrations in name order; neither do we (the reader sorts them).
    for spec in sorted(rig, key=lambda s: -s.name):
        c = ctx.laser_calibrations.add(name=spec.name, beam_inclination_min=spec.inclination_min,
                                       beam_inclination_max=spec.inclination_max)
        if spec.beam_inclinations is not None:
            c.beam_inclinations.extend(spec.beam_inclinations.tolist())
        c.extrinsic.transform.extend(spec.extrinsic.ravel().tolist())
    ctx.stats.time_of_day = "Day"
    ctx.stats.location = "location_synthetic"
    ctx.stats.weather = "sunny"
    return ctx


def _world_mesh(scene: Scene, states, ego_xy):
    v_parts, t_parts, mat_parts, obj_parts = [], [], [], []
    n = 0

    def add(v, t, material, obj):
        nonlocal n
        v_parts.append(v)
        t_parts.append(t + n)
        mat_parts.append(np.broadcast_to(material, len(t)))
        obj_parts.append(np.broadcast_to(obj, len(t)))
        n += len(v)

    gv, gt = ground_mesh(ego_xy)
    add(gv, gt, GROUND, -1)
    sv, st, smat = scene.static
    # Static triangles: one object per 12-triangle solid, so second returns can tell solids apart.
    add(sv, st, smat, -2 - np.arange(len(st)) // 12)
    for i, (actor, (center, heading)) in enumerate(zip(scene.actors, states)):
        add(actor_world_mesh(actor, center, heading), actor.mesh[1], ACTOR_MATERIAL[actor.type], i)
    albedo = None
    if scene.static_albedo is not None:  # surfaces of their own reflectivity (generator 3)
        albedo = np.concatenate([np.full(len(gt), REFLECTIVITY[GROUND]), scene.static_albedo]
                                + [np.full(len(a.mesh[1]), REFLECTIVITY[ACTOR_MATERIAL[a.type]] if a.albedo is None
                                           else a.albedo) for a in scene.actors])
    return CastScene.build(np.concatenate(v_parts), np.concatenate(t_parts), np.concatenate(mat_parts),
                           np.concatenate(obj_parts), albedo)


def make_world(cfg: SegmentConfig, rng: np.random.Generator) -> tuple[Scene, Detection | None]:
    """The scene and the sensor's detection model of generator ``cfg.generator``."""
    duration = cfg.frames * FRAME_SECONDS
    if cfg.generator == 2:
        return make_scene(rng, duration, cfg.object_range, cfg.vehicle_density, cfg.wobble, cfg.nlz_prob), None
    if cfg.generator == 3:
        city = CityConfig(object_range=cfg.object_range, vehicle_density=cfg.vehicle_density,
                          pedestrian_density=cfg.pedestrian_density, wobble=cfg.wobble, nlz_prob=cfg.nlz_prob)
        return make_city_scene(rng, duration, city), CALIBRATED_DETECTION
    raise ValueError(f"generator={cfg.generator}: this synthesizer makes versions {', '.join(map(str, GENERATORS))}")


def synthesize_segment(cfg: SegmentConfig, seed: np.random.SeedSequence | int, only: set[int] | None = None,
                       ) -> Iterator[tuple[bytes, FrameTruth]]:
    """Serialized ``dataset_pb2.Frame`` records of one segment, with what was cast (deterministic for ``seed``);
    ``only``: just the frames of these indices (each the same as in the whole segment)."""
    if cfg.generator not in GENERATORS:
        raise ValueError(f"generator={cfg.generator}: this synthesizer makes versions "
                         f"{', '.join(map(str, GENERATORS))}")
    rng = np.random.default_rng(seed)
    name = segment_name(rng, cfg.frames)  # drawn first: data_tools.synthesize names the file from it
    rig = make_rig(cfg.lidar, cfg.top_height, cfg.top_width, "banded" if cfg.generator >= 3 else "smooth")
    scene, detection = make_world(cfg, rng)
    context = _context(name, rig)
    start_micros = 1_550_000_000_000_000 + int(rng.integers(0, 10**13))
    rig_by_name = sorted(rig, key=lambda s: s.name)
    # one generator per frame: whatever a frame draws (its count can hang on the last bit of a ray cast,
    # which differs between ray-caster builds and CPUs) leaves every other frame's draws as they are
    frame_rngs = rng.spawn(cfg.frames)

    for i, frame_rng in enumerate(frame_rngs):
        if only is not None and i not in only:
            continue
        t = i * FRAME_SECONDS
        pose6 = scene.ego.rpy_xyz(scene.road, t)
        pose = pose_matrices(pose6)[0]
        states = [a.state(scene.road, t) for a in scene.actors]
        cast = _world_mesh(scene, states, pose6[0, 3:5])
        caps = {}
        for spec in rig_by_name:
            sweep = scene.ego.rpy_xyz(scene.road, t + sweep_times(spec.width)) if spec.rolling_shutter else pose6
            caps[spec.name] = capture(spec, cast, sweep, scene.no_label_zones, frame_rng, cfg.noise, detection)

        world_to_vehicle = np.linalg.inv(pose)
        world = np.concatenate([caps[s.name].world_points[k] for k in (0, 1) for s in rig_by_name])
        points = world @ world_to_vehicle[:3, :3].T + world_to_vehicle[:3, 3]
        is_top = np.concatenate([np.full(len(caps[s.name].world_points[k]), s.name == TOP)
                                 for k in (0, 1) for s in rig_by_name])

        boxes, keep = [], []
        for j, (actor, (center, heading)) in enumerate(zip(scene.actors, states)):
            c = world_to_vehicle[:3, :3] @ center + world_to_vehicle[:3, 3]
            if np.hypot(c[0], c[1]) > cfg.label_range:
                continue
            hd = (heading - pose6[0, 2] + np.pi) % (2 * np.pi) - np.pi
            boxes.append([c[0], c[1], c[2], *actor.size, hd])
            keep.append(j)
        boxes = np.array(boxes, np.float64).reshape(-1, 7)
        counts, top_counts = points_in_box_counts(points, boxes, np.c_[np.ones(len(points), np.int64), is_top]).T

        frame = dataset_pb2.Frame(timestamp_micros=start_micros + int(round(t * 1e6)))
        frame.context.CopyFrom(context)
        frame.pose.transform.extend(pose.ravel().tolist())
        for spec in rig_by_name:
            cap = caps[spec.name]
            laser = frame.lasers.add(name=spec.name)
            laser.ri_return1.range_image_compressed = encode_matrix_float(cap.returns[0], cfg.zlib_level)
            laser.ri_return2.range_image_compressed = encode_matrix_float(cap.returns[1], cfg.zlib_level)
            if cap.pixel_pose is not None:
                laser.ri_return1.range_image_pose_compressed = encode_matrix_float(cap.pixel_pose, cfg.zlib_level)
        type_counts: dict[int, int] = {}
        hard = frame_rng.random(len(keep)) < 0.5      # one draw per label, used where the count allows
        for j, box, n, n_top, hard_j in zip(keep, boxes, counts, top_counts, hard):
            actor = scene.actors[j]
            lab = frame.laser_labels.add(type=actor.type, id=actor.id, num_lidar_points_in_box=int(n),
                                         num_top_lidar_points_in_box=int(n_top))
            b = lab.box
            b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = map(float, box)
            if 0 < n <= 20 and hard_j:
                lab.detection_difficulty_level = LEVEL_2
            type_counts[actor.type] = type_counts.get(actor.type, 0) + 1
        for type_, count in sorted(type_counts.items()):
            frame.context.stats.laser_object_counts.add(type=type_, count=count)
        for k, poly in enumerate(scene.no_label_zones):
            z = frame.no_label_zones.add(id=f"nlz_{k}")
            z.x.extend(poly[:, 0].tolist())
            z.y.extend(poly[:, 1].tolist())

        yield frame.SerializeToString(), FrameTruth(points, pose, boxes, np.array([scene.actors[j].type for j in keep]),
                                                   [scene.actors[j].id for j in keep], counts)
