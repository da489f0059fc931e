"""Pinhole cameras for the rendered views, with the projection the renderer uses.

Conventions (OpenCV): the extrinsic maps world (here: the vehicle frame of the shown frame) to camera
coordinates with x right, y down, z forward; pixel ``(u, v) = (fx x / z + cx, fy y / z + cy)``, u to the
right, v down, pixel centres at integer + 0.5. The same record drives Open3D's offscreen renderer
(``setup_camera(intrinsic, extrinsic, w, h)``), the text overlays and the tests.

The bird's-eye view is a pinhole camera far above the scene with a narrow field of view: nearly
orthographic (at the default altitude, 10 x the range, a 3 m tall box top is 0.75 % larger than its
footprint), and with the vehicle's +x pointing up in the image and +y to the left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    width: int
    height: int
    intrinsic: np.ndarray  # (3, 3)
    extrinsic: np.ndarray  # (4, 4) world -> camera

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"camera image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "intrinsic", np.asarray(self.intrinsic, np.float64).reshape(3, 3))
        object.__setattr__(self, "extrinsic", np.asarray(self.extrinsic, np.float64).reshape(4, 4))

    @property
    def focal_y(self) -> float:
        return float(self.intrinsic[1, 1])

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) and depth along the view axis (N,)."""
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        cam = xyz @ self.extrinsic[:3, :3].T + self.extrinsic[:3, 3]
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam[:, :2] / depth[:, None]) * np.diag(self.intrinsic)[:2] + self.intrinsic[:2, 2]
        return uv, depth

    def line_width_parameter(self, pixels: float) -> float:
        """Open3D's ``unlitLine`` width for lines ``pixels`` wide on screen.

        Measured with the Filament (Vulkan) renderer: the drawn width scales with the projection's
        vertical focal term, ``pixels ~= line_width * fy / height``; this inverts that.
        """
        return float(pixels) * self.height / self.focal_y


def birds_eye_camera(width: int, height: int, range_m: float, center_xy: tuple[float, float] = (0.0, 0.0),
                     altitude: float | None = None) -> PinholeCamera:
    """Top-down view: ``range_m`` metres from ``center_xy`` to the nearer image border; +x up, +y left."""
    if range_m <= 0:
        raise ValueError(f"range_m must be positive, got {range_m}")
    altitude = 10.0 * range_m if altitude is None else float(altitude)
    f = 0.5 * min(width, height) * altitude / range_m
    intrinsic = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    # camera x (right) = -y world, camera y (down) = -x world, camera z (forward) = -z world
    rot = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1]], np.float64)
    eye = np.array([center_xy[0], center_xy[1], altitude])
    return PinholeCamera(width, height, intrinsic, _extrinsic(rot, eye))


def look_at_camera(width: int, height: int, eye, target, fov_y_deg: float = 60.0,
                   up=(0.0, 0.0, 1.0)) -> PinholeCamera:
    """Perspective camera at ``eye`` looking at ``target`` with world ``up`` pointing up in the image."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) == 0:
        raise ValueError("camera eye and target coincide")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("camera looks along its up vector")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    f = 0.5 * height / np.tan(np.radians(fov_y_deg) / 2)
    intrinsic = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    return PinholeCamera(width, height, intrinsic, _extrinsic(np.stack([right, down, forward]), eye))


def chase_camera(width: int, height: int, distance: float = 25.0, elevation: float = 12.0,
                 look_ahead: float = 15.0, fov_y_deg: float = 60.0) -> PinholeCamera:
    """Behind and above the ego vehicle, looking forward along +x."""
    return look_at_camera(width, height, eye=(-distance, 0.0, elevation), target=(look_ahead, 0.0, 0.0),
                          fov_y_deg=fov_y_deg)


def _extrinsic(rot: np.ndarray, eye: np.ndarray) -> np.ndarray:
    ext = np.eye(4)
    ext[:3, :3] = rot
    ext[:3, 3] = -rot @ eye
    return ext


__all__ = ["PinholeCamera", "birds_eye_camera", "look_at_camera", "chase_camera"]
