"""A virtual X display for running the interactive viewer where there is no screen (tests, benchmarks,
screenshots for the docs): ``VirtualDisplay`` starts ``Xvfb`` on a free display number and stops it,
``screenshot`` grabs the screen with ``xwd`` and decodes it, ``send_keys`` types keys with ``xdotool``.

Debian packages: ``xvfb`` (Xvfb), ``x11-apps`` (xwd), ``xdotool`` (installed by ``scripts/setup.sh``
when it runs as root on Debian).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np

TOOLS = {"Xvfb": "xvfb", "xwd": "x11-apps", "xdotool": "xdotool"}


class DisplayUnavailable(RuntimeError):
    """No virtual display can run here; the message says what is missing."""


def missing_tools(tools=tuple(TOOLS)) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


class VirtualDisplay:
    """``Xvfb`` on the first free display number from ``first``; a context manager.

    ``env`` is ``os.environ`` with ``DISPLAY`` set to it (and ``WAYLAND_DISPLAY`` removed)."""

    def __init__(self, width: int = 1600, height: int = 1200, first: int = 90, timeout: float = 15.0):
        missing = missing_tools(("Xvfb",))
        if missing:
            raise DisplayUnavailable(f"no {', '.join(missing)} (Debian: apt-get install "
                                     f"{' '.join(TOOLS[t] for t in missing)})")
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        for number in range(first, first + 50):
            if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
                continue
            # -dpi 96: a UI scale of 1 (Xvfb's own default makes Open3D scale its widgets by 0.75)
            proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", f"{width}x{height}x24", "-dpi", "96",
                                     "-nolisten", "tcp", "-noreset"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if Path(f"/tmp/.X11-unix/X{number}").exists():
                    self.proc, self.display = proc, f":{number}"
                    break
                time.sleep(0.05)
            if self.proc is not None:
                break
            err = b""
            if proc.poll() is None:
                proc.kill()
            else:
                err = proc.stderr.read() if proc.stderr else b""
            proc.wait()
            if b"already active" not in err and b"Server is already" not in err:
                raise DisplayUnavailable(f"Xvfb :{number} did not start: {err.decode(errors='replace')[-500:]}")
        if self.proc is None:
            raise DisplayUnavailable(f"no free X display number in [{first}, {first + 50})")
        self.env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        self.env["DISPLAY"] = self.display

    def __enter__(self) -> VirtualDisplay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def screenshot(self) -> np.ndarray:
        """The whole screen as an (H, W, 3) uint8 RGB image."""
        out = subprocess.run(["xwd", "-root", "-silent", "-display", self.display], capture_output=True,
                             timeout=30, check=False)
        if out.returncode != 0:
            raise DisplayUnavailable(f"xwd failed on {self.display}: {out.stderr.decode(errors='replace')[-300:]}")
        return read_xwd(out.stdout)

    def send_keys(self, *keys: str, at: tuple[int, int] | None = None) -> None:
        """Type ``keys`` (xdotool names: ``space``, ``Right``, ``Home``, ``b`` ...) into the window under
        the pointer, moved to ``at`` (screen pixels) first when given."""
        cmd = ["xdotool"]
        if at is not None:
            cmd += ["mousemove", str(int(at[0])), str(int(at[1]))]
        cmd += ["key", "--delay", "50", *keys]
        subprocess.run(cmd, env=self.env, check=True, timeout=30, capture_output=True)


def read_xwd(data: bytes) -> np.ndarray:
    """Decode an X Window Dump (ZPixmap, TrueColor, 24 or 32 bits a pixel) into (H, W, 3) uint8 RGB."""
    if len(data) < 100:
        raise ValueError(f"not an xwd image ({len(data)} bytes)")
    f = struct.unpack(">25I", data[:100])
    header_size, version, pixmap_format, _depth, width, height = f[:6]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = f[7], f[11], f[12], f[19]
    masks = f[14:17]
    if version != 7 or pixmap_format != 2:
        raise ValueError(f"unsupported xwd image (version {version}, format {pixmap_format})")
    step = bits_per_pixel // 8  # rows are bytes_per_line long (Xvfb pads 24-bit rows to 32 bits a pixel)
    if step not in (3, 4) or bytes_per_line < width * step:
        raise ValueError(f"unsupported xwd pixel size ({bits_per_pixel} bits)")
    offset = header_size + 12 * ncolors
    raw = np.frombuffer(data, np.uint8, count=bytes_per_line * height, offset=offset)
    raw = raw.reshape(height, bytes_per_line)[:, :width * step].reshape(height, width, step)
    order = range(step) if byte_order == 0 else range(step - 1, -1, -1)
    pixels = np.zeros((height, width), np.uint32)
    for k, b in enumerate(order):
        pixels |= raw[..., b].astype(np.uint32) << np.uint32(8 * k)
    channels = []
    for mask in masks:
        shift = (mask & -mask).bit_length() - 1
        channels.append(((pixels & np.uint32(mask)) >> np.uint32(shift)).astype(np.uint8))
    return np.stack(channels, axis=-1)


class ViewerSession:
    """``python -m detector.visualize`` in a window on ``display``, followed through its trace file.

    ``overrides`` are the command's ``key=value`` arguments (``trace=`` is added). ``wait_drawn`` waits
    for the next drawn frame matching a condition; ``screen_xy`` maps scene points (the shown frame's
    vehicle frame) to screen pixels with the camera the trace reports."""

    def __init__(self, display: VirtualDisplay, overrides: list[str], trace: Path, python: str | None = None,
                 cwd: str | os.PathLike | None = None, log: Path | None = None):
        import sys

        self.display, self.trace = display, Path(trace)
        self.trace.unlink(missing_ok=True)
        self.t_start = time.time()
        self._log = open(log, "wb") if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen([python or sys.executable, "-m", "detector.visualize", *overrides,
                                      f"trace={self.trace}"], env=display.env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self._seen = 0

    def __enter__(self) -> ViewerSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def records(self) -> list[dict]:
        import json

        if not self.trace.exists():
            return []
        return [json.loads(line) for line in self.trace.read_text().splitlines() if line.strip()]

    def wait_drawn(self, condition=lambda r: True, timeout: float = 60.0, new: bool = True) -> dict:
        """The first drawn-frame record (after those already returned, with ``new``) meeting ``condition``."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records()
            for i in range(self._seen if new else 0, len(recs)):
                if condition(recs[i]):
                    self._seen = i + 1
                    return recs[i]
            if self.proc.poll() is not None and self.proc.returncode != 0:
                raise RuntimeError(f"the viewer exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no drawn frame meeting the condition within {timeout} s "
                                   f"({len(recs)} drawn so far)")
            time.sleep(0.05)

    def settle(self, quiet: float = 0.6, timeout: float = 20.0) -> dict:
        """Wait until no frame has been drawn for ``quiet`` seconds; the last record."""
        deadline = time.monotonic() + timeout
        last, since = len(self.records()), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            n = len(self.records())
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet and n:
                break
        self._seen = last
        return self.records()[-1]

    @staticmethod
    def screen_xy(record: dict, xyz: np.ndarray) -> np.ndarray:
        """Scene points (N, 3) -> screen pixels (N, 2), by the trace's camera and window placement."""
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        pose = np.asarray(record["relative_pose"])
        world = xyz @ pose[:3, :3].T + pose[:3, 3]
        clip = np.c_[world, np.ones(len(world))] @ (np.asarray(record["projection_matrix"])
                                                    @ np.asarray(record["view_matrix"])).T
        ndc = clip[:, :3] / clip[:, 3:4]
        sx, sy, sw, sh = record["scene_rect"]
        wx, wy = record["window_rect"][:2]
        u = wx + sx + (ndc[:, 0] + 1) / 2 * sw
        v = wy + sy + (1 - ndc[:, 1]) / 2 * sh
        return np.stack([u, v], axis=1)

    def window_image(self, record: dict) -> np.ndarray:
        """The screen cropped to the viewer window."""
        x, y, w, h = record["window_rect"]
        return self.display.screenshot()[y:y + h, x:x + w]

    def keys(self, record: dict, *keys: str) -> None:
        """Type ``keys`` with the pointer over the middle of the 3D view."""
        sx, sy, sw, sh = record["scene_rect"]
        wx, wy = record["window_rect"][:2]
        self.display.send_keys(*keys, at=(wx + sx + sw // 2, wy + sy + sh // 2))

    def close(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode


__all__ = ["TOOLS", "DisplayUnavailable", "missing_tools", "VirtualDisplay", "read_xwd", "ViewerSession"]
