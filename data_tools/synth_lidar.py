"""Synthetic lidars: the sensor rig, and ray casting of range images with Open3D's RaycastingScene.

Rays go through the centre of every range-image pixel, with the row and column conventions of
``detector.data.range_image``. The TOP lidar spins through the frame's 0.1 s: column ``c`` is cast
from the ego pose at its own time (the rolling shutter) and that pose is stored per pixel, quantised
to float32 before casting so that the record holds exactly the pose the ray came from. The short-range
lidars are cast from the frame pose (Waymo gives them no per-pixel pose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from waymo_open_dataset import dataset_pb2

from data_tools.synth_scene import POLE, REFLECTIVITY, SIGN, TREE, points_in_polygons
from detector.data.range_image import column_azimuths, row_inclinations, sensor_directions

SWEEP_SECONDS = 0.1
L = dataset_pb2.LaserName


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def pose_matrices(rpy_xyz: np.ndarray) -> np.ndarray:
    """(N, 4, 4) transforms of ``(roll, pitch, yaw, x, y, z)`` rows: rotation Rz(yaw) Ry(pitch) Rx(roll)."""
    rpy_xyz = np.asarray(rpy_xyz, np.float64).reshape(-1, 6)
    m = np.zeros((len(rpy_xyz), 4, 4))
    m[:, :3, :3] = _rot_z(rpy_xyz[:, 2]) @ _rot_y(rpy_xyz[:, 1]) @ _rot_x(rpy_xyz[:, 0])
    m[:, :3, 3] = rpy_xyz[:, 3:]
    m[:, 3, 3] = 1.0
    return m


@dataclass(frozen=True)
class LidarSpec:
    name: int  # dataset_pb2.LaserName
    height: int
    width: int
    extrinsic: np.ndarray  # (4, 4) sensor -> vehicle
    beam_inclinations: np.ndarray | None  # increasing; None: uniform between min and max
    inclination_min: float
    inclination_max: float
    max_range: float
    max_abs_azimuth: float | None = None  # sensor-frame azimuth limit of the field of view
    rolling_shutter: bool = False

    def row_inclinations(self) -> np.ndarray:
        return row_inclinations(self.beam_inclinations, self.inclination_min, self.inclination_max, self.height)


def _extrinsic(xyz, roll=0.0, pitch=0.0, yaw=0.0) -> np.ndarray:
    return pose_matrices([roll, pitch, yaw, *xyz])[0]


def top_beam_inclinations(height: int) -> np.ndarray:
    """Increasing, non-uniform: denser towards the horizon, from -17.6 to +2.4 degrees."""
    u = np.linspace(0.0, 1.0, height)
    return np.deg2rad(-17.6 + 20.0 * (1.0 - (1.0 - u) ** 1.6))


def banded_beam_inclinations(height: int) -> np.ndarray:
    """Increasing, in two bands as long-range lidars space them: the upper 9/16 of the beams every ~0.21
    degrees from -5 to +2.4 degrees (where far objects are), the rest every ~0.45 degrees below, to -17.6."""
    fine = int(round(height * 9 / 16))
    low = np.linspace(-17.6, -5.0, height - fine, endpoint=False)
    return np.deg2rad(np.concatenate([low, np.linspace(-5.0, 2.4, fine)]))


def make_rig(kind: str = "demo", top_height: int | None = None, top_width: int | None = None,
             top_beams: str = "smooth") -> list[LidarSpec]:
    """``demo``: TOP 64x1024 and FRONT 48x160; ``waymo``: TOP 64x2650 and four short-range 200x600.
    ``top_beams``: the TOP's beam inclinations, ``smooth`` (``top_beam_inclinations``) or ``banded``
    (``banded_beam_inclinations``, generator 3)."""
    if kind not in ("demo", "waymo"):
        raise ValueError(f"lidar rig {kind!r}: expected 'demo' or 'waymo'")
    beams = {"smooth": top_beam_inclinations, "banded": banded_beam_inclinations}
    if top_beams not in beams:
        raise ValueError(f"top_beams {top_beams!r}: expected one of {', '.join(beams)}")
    th, tw = (64, 2650) if kind == "waymo" else (64, 1024)
    th, tw = top_height or th, top_width or tw
    top = LidarSpec(L.TOP, th, tw, _extrinsic((1.43, 0.0, 2.184), roll=-0.003, pitch=0.004, yaw=0.1),
                    beams[top_beams](th), float(np.deg2rad(-17.6)), float(np.deg2rad(2.4)), 75.0,
                    rolling_shutter=True)
    short = dict(inclination_min=float(np.deg2rad(-90.0)), inclination_max=float(np.deg2rad(30.0)),
                 max_range=20.0, max_abs_azimuth=float(np.deg2rad(90.0)), beam_inclinations=None)
    sh, sw = (200, 600) if kind == "waymo" else (48, 160)
    front = LidarSpec(L.FRONT, sh, sw, _extrinsic((4.07, 0.0, 0.69), pitch=0.02), **short)
    if kind == "demo":
        return [top, front]
    return [top, front,
            LidarSpec(L.SIDE_LEFT, sh, sw, _extrinsic((3.25, 1.03, 0.98), yaw=np.pi / 2), **short),
            LidarSpec(L.SIDE_RIGHT, sh, sw, _extrinsic((3.25, -1.03, 0.98), yaw=-np.pi / 2), **short),
            LidarSpec(L.REAR, sh, sw, _extrinsic((-1.15, 0.0, 0.46), yaw=np.pi), **short)]


@dataclass
class CastScene:
    """One frame's world as a single triangle mesh with per-triangle material and object index."""

    scene: o3d.t.geometry.RaycastingScene
    material: np.ndarray
    object_index: np.ndarray
    albedo: np.ndarray | None = None  # per-triangle reflectivity (None: REFLECTIVITY of the material)

    @classmethod
    def build(cls, vertices: np.ndarray, triangles: np.ndarray, material: np.ndarray,
              object_index: np.ndarray, albedo: np.ndarray | None = None) -> CastScene:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                            o3d.core.Tensor(triangles.astype(np.uint32)))
        return cls(scene, material, object_index, albedo)

    def reflectivity(self, prim: np.ndarray) -> np.ndarray:
        return REFLECTIVITY[self.material[prim]] if self.albedo is None else self.albedo[prim]

    def cast(self, origins: np.ndarray, dirs: np.ndarray):
        rays = np.concatenate([origins, dirs], axis=-1).astype(np.float32).reshape(-1, 6)
        out = self.scene.cast_rays(o3d.core.Tensor(rays))
        t = out["t_hit"].numpy().astype(np.float64)
        prim = out["primitive_ids"].numpy().astype(np.int64)
        normals = out["primitive_normals"].numpy().astype(np.float64)
        return t, prim, normals


@dataclass
class NoiseConfig:
    range_noise: float = 0.02  # metres, Gaussian on every return
    pixel_dropout: float = 0.01  # chance that a pixel gives no return
    beam_dropout: float = 0.01  # chance that a TOP row is missing in a frame
    sector_dropout: float = 0.2  # chance that a frame loses an azimuth sector of the TOP lidar
    second_return: float = 0.03  # chance of a second return behind a first one (thin things: 0.5)


@dataclass(frozen=True)
class Detection:
    """When a return is strong enough to be detected (generator 3): the received power of a return goes as
    ``reflectivity * (0.35 + 0.65 cos(incidence)) / range^2`` and is detected above a threshold, with a
    log-normal spread per pixel. ``dark_range``: the range to which a surface of reflectivity 0.1 seen
    head-on is detected (at the median); 0.45 (a grey car) reaches 2.1x as far, ground at grazing incidence
    much less far. Real lidars lose dark cars and far ground the same way."""

    dark_range: float = 90.0
    spread: float = 0.35  # standard deviation of the log received power

    def detected(self, reflectivity: np.ndarray, cos: np.ndarray, distance: np.ndarray,
                 draws: np.ndarray) -> np.ndarray:
        power = reflectivity * (0.35 + 0.65 * cos) / np.maximum(distance, 0.3) ** 2
        threshold = 0.1 / self.dark_range ** 2
        return np.log(power / threshold) + self.spread * draws >= 0.0


@dataclass
class LidarCapture:
    """What one lidar measured in one frame: range images ``(H, W, 4)`` [range, intensity, elongation,
    is_in_nlz] for both returns (range -1 where no return), the TOP per-pixel pose ``(H, W, 6)``, and
    the world coordinates of the points of each return in the reader's order (row-major, valid pixels)."""

    spec: LidarSpec
    returns: list[np.ndarray]
    pixel_pose: np.ndarray | None
    world_points: list[np.ndarray]


@dataclass
class PixelNoise:
    """One draw per pixel of a range image (flat, H*W) for each noisy quantity of a return. Drawn for
    every pixel whether it is hit or not, so that the random stream never depends on how many rays hit:
    a ray that hits on one machine and misses on another (the last bit of a ray cast, which differs
    between ray-caster builds and CPUs) changes that pixel alone, not every draw after it."""

    range: np.ndarray
    intensity: np.ndarray
    elongation: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, range_sigma: float) -> PixelNoise:
        return cls(rng.normal(0, range_sigma, n), rng.normal(0, 0.1, n), rng.normal(0, 0.02, n))


def _features(prim, normals, dirs, cast: CastScene, pixels: np.ndarray, noise: PixelNoise, weaker: float = 1.0):
    cos = np.abs(np.einsum("ij,ij->i", normals, dirs))
    intensity = cast.reflectivity(prim) * (0.35 + 0.65 * cos) * np.exp(noise.intensity[pixels]) * weaker
    elongation = np.clip(0.04 + 0.4 * (1.0 - cos) + noise.elongation[pixels], 0.0, None)
    return intensity, elongation


def capture(spec: LidarSpec, cast: CastScene, sweep_rpy_xyz: np.ndarray, nlz_polygons, rng: np.random.Generator,
            noise: NoiseConfig, detection: Detection | None = None) -> LidarCapture:
    """Cast one lidar. ``sweep_rpy_xyz``: (W, 6) ego pose of each column (rolling shutter) or (1, 6).
    ``detection``: drop returns too weak to detect (generator 3; None: every hit within range returns)."""
    h, w = spec.height, spec.width
    pose6 = np.asarray(sweep_rpy_xyz, np.float64).reshape(-1, 6)
    if spec.rolling_shutter:
        pose6 = pose6.astype(np.float32).astype(np.float64)  # exactly what the record will hold
    col_pose = pose_matrices(pose6) @ spec.extrinsic  # sensor -> world, per column (or one)
    if len(col_pose) == 1:
        col_pose = np.broadcast_to(col_pose, (w, 4, 4))
    dirs_sensor = sensor_directions(spec.row_inclinations(), column_azimuths(w, spec.extrinsic))
    rot = col_pose[:, :3, :3]
    dirs = np.stack([sum(rot[None, :, i, j] * dirs_sensor[..., j] for j in range(3)) for i in range(3)], axis=-1)
    origins = np.broadcast_to(col_pose[None, :, :3, 3], (h, w, 3))

    t, prim, normals = cast.cast(origins, dirs)
    t = t.reshape(h, w)
    valid = np.isfinite(t) & (t <= spec.max_range) & (t > 0.3)
    if spec.max_abs_azimuth is not None:
        az = column_azimuths(w, spec.extrinsic)
        az = (az + np.pi) % (2 * np.pi) - np.pi
        valid &= (np.abs(az) <= spec.max_abs_azimuth)[None, :]
    valid &= rng.random((h, w)) >= noise.pixel_dropout
    if spec.rolling_shutter:
        valid &= (rng.random(h) >= noise.beam_dropout)[:, None]
        if rng.random() < noise.sector_dropout:
            start, width = rng.integers(0, w), int(w * rng.uniform(0.03, 0.12))
            cols = (start + np.arange(width)) % w
            valid[:, cols] = False

    n = h * w
    first, second = PixelNoise.draw(rng, n, noise.range_noise), PixelNoise.draw(rng, n, noise.range_noise)
    second_draw = rng.random(n)

    dirs_flat = dirs.reshape(-1, 3)
    origins_flat = origins.reshape(-1, 3)
    if detection is not None:  # one draw per pixel, hit or not (see PixelNoise)
        power_draw = rng.normal(0.0, 1.0, n)
        hit = np.flatnonzero(valid)
        cos = np.abs(np.einsum("ij,ij->i", normals[hit], dirs_flat[hit]))
        np.put(valid, hit, detection.detected(cast.reflectivity(prim[hit]), cos, t.ravel()[hit], power_draw[hit]))
    idx = np.flatnonzero(valid)
    r1 = quantize_range(t.ravel()[idx] + first.range[idx])
    keep = r1 > 0
    idx, r1 = idx[keep], r1[keep]
    world1 = origins_flat[idx] + r1[:, None].astype(np.float64) * dirs_flat[idx]
    inten1, elong1 = _features(prim[idx], normals[idx], dirs_flat[idx], cast, idx, first)
    img1 = _image(h, w, idx, r1, inten1, elong1, points_in_polygons(world1[:, :2], nlz_polygons))

    # Second returns: continue the ray past the first hit; keep it if it meets another object.
    thin = np.isin(cast.material[prim[idx]], (POLE, SIGN, TREE))
    pick = second_draw[idx] < np.where(thin, 0.5, noise.second_return)
    idx2 = idx[pick]
    start = t.ravel()[idx2] + 0.3
    t2, prim2, normals2 = cast.cast(origins_flat[idx2] + start[:, None] * dirs_flat[idx2], dirs_flat[idx2])
    ok = np.isfinite(t2) & (start + t2 <= spec.max_range)
    ok[ok] = cast.object_index[prim2[ok]] != cast.object_index[prim[idx2][ok]]
    idx2, r2 = idx2[ok], quantize_range(start[ok] + t2[ok] + second.range[idx2[ok]])
    world2 = origins_flat[idx2] + r2[:, None].astype(np.float64) * dirs_flat[idx2]
    inten2, elong2 = _features(prim2[ok], normals2[ok], dirs_flat[idx2], cast, idx2, second, weaker=0.5)
    img2 = _image(h, w, idx2, r2, inten2, elong2, points_in_polygons(world2[:, :2], nlz_polygons))

    pixel_pose = None
    if spec.rolling_shutter:
        pixel_pose = np.broadcast_to(pose6.astype(np.float32)[None], (h, w, 6)).copy()
    # Reader order is row-major over valid pixels: flat indices are already sorted.
    return LidarCapture(spec, [img1, img2], pixel_pose, [world1, world2])


def quantize_range(r: np.ndarray) -> np.ndarray:
    """Ranges on a 1/256 m grid, as float32 (real lidars quantise too; the records compress 3x better)."""
    return (np.round(np.asarray(r, np.float64) * 256.0) / 256.0).astype(np.float32)


def _image(h, w, idx, rng_, inten, elong, nlz) -> np.ndarray:
    img = np.full((h * w, 4), -1.0, np.float32)
    img[idx, 0] = rng_
    # Intensity keeps the upper 16 bits of its float32 (7 mantissa bits); elongation a 1/256 grid.
    img[idx, 1] = (np.asarray(inten, np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    img[idx, 2] = np.round(np.asarray(elong) * 256.0) / 256.0
    img[idx, 3] = np.where(nlz, 1.0, -1.0)
    return img.reshape(h, w, 4)


def sweep_times(width: int) -> np.ndarray:
    """Offset (s) of each TOP column from the frame timestamp: the sweep is centred on it."""
    return ((np.arange(width) + 0.5) / width - 0.5) * SWEEP_SECONDS
