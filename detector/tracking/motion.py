"""The motion model: a constant-velocity Kalman filter over each track's bird's-eye centre, vectorized
over tracks (the x and y axes share one 2x2 covariance per track: same noise, same updates)."""

from __future__ import annotations

import numpy as np


class ConstantVelocity:
    """Arrays of all tracks: ``pos`` (T, 3) world centre, ``vel`` (T, 2) world m/s, ``cov`` (T, 2, 2) the
    [position, velocity] covariance of each bird's-eye axis. ``q``: acceleration noise (m^2/s^3), ``r``:
    centre measurement noise (m^2)."""

    def __init__(self, q: float, r: float):
        self.q, self.r = float(q), float(r)
        self.pos = np.zeros((0, 3))
        self.vel = np.zeros((0, 2))
        self.cov = np.zeros((0, 2, 2))

    def __len__(self) -> int:
        return len(self.pos)

    def predict(self, dt: float) -> None:
        """Move every track ``dt`` seconds ahead."""
        if not len(self.pos) or dt == 0:
            return
        self.pos[:, :2] += self.vel * dt
        p = self.cov
        p00 = p[:, 0, 0] + 2 * dt * p[:, 0, 1] + dt * dt * p[:, 1, 1] + self.q * dt ** 3 / 3
        p01 = p[:, 0, 1] + dt * p[:, 1, 1] + self.q * dt * dt / 2
        p11 = p[:, 1, 1] + self.q * dt
        self.cov = np.stack([np.stack([p00, p01], -1), np.stack([p01, p11], -1)], -2)

    def update(self, rows: np.ndarray, centres: np.ndarray) -> None:
        """Correct tracks ``rows`` with measured world centres (N, 3); z is taken as measured."""
        if not len(rows):
            return
        p = self.cov[rows]
        s = p[:, 0, 0] + self.r
        k0, k1 = p[:, 0, 0] / s, p[:, 0, 1] / s
        innov = centres[:, :2] - self.pos[rows, :2]
        self.pos[rows, :2] += k0[:, None] * innov
        self.pos[rows, 2] = centres[:, 2]
        self.vel[rows] += k1[:, None] * innov
        p00 = (1 - k0) * p[:, 0, 0]
        p01 = (1 - k0) * p[:, 0, 1]
        p11 = p[:, 1, 1] - k1 * p[:, 0, 1]
        self.cov[rows] = np.stack([np.stack([p00, p01], -1), np.stack([p01, p11], -1)], -2)

    def add(self, centres: np.ndarray, speed_var: float) -> None:
        """New tracks at world centres (N, 3), at rest with velocity variance ``speed_var``."""
        n = len(centres)
        cov = np.zeros((n, 2, 2))
        cov[:, 0, 0] = self.r
        cov[:, 1, 1] = speed_var
        self.pos = np.concatenate([self.pos, centres])
        self.vel = np.concatenate([self.vel, np.zeros((n, 2))])
        self.cov = np.concatenate([self.cov, cov])

    def keep(self, mask: np.ndarray) -> None:
        self.pos, self.vel, self.cov = self.pos[mask], self.vel[mask], self.cov[mask]
