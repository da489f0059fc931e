"""Offscreen rendering of scene frames to PNG, GIF or MP4 (no display needed).

Open3D's ``OffscreenRenderer`` draws with Filament; on a machine without a GPU it runs on Mesa's
software Vulkan driver (llvmpipe). Post-processing (tone mapping) is switched off so unlit colours come
out exactly as given; scores and the caption are drawn on the image afterwards with Pillow at the
positions the camera projects them to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from detector.atomic import atomic_path
from detector.errors import UnavailableError
from detector.viz.camera import PinholeCamera
from detector.viz.scene import (
    SceneFrame,
    SceneGeometry,
    SceneLabel,
    SceneOptions,
    build_scene,
    clean_scene,
    frame_caption,
    score_labels,
)

IMAGE_SUFFIXES = (".png",)
ANIMATION_SUFFIXES = (".gif", ".mp4")


class RenderError(UnavailableError):
    """Rendering or writing the output failed; the message says what to install or change."""


def make_material(kind: str, opts: SceneOptions, camera: PinholeCamera | None = None):
    """Unlit materials: points (``point_size`` px) and lines (``line_width`` px on screen)."""
    from open3d.visualization import rendering

    mat = rendering.MaterialRecord()
    if kind == "points":
        mat.shader = "defaultUnlit"
        mat.point_size = float(opts.point_size)
    elif kind == "lines":
        mat.shader = "unlitLine"
        mat.line_width = camera.line_width_parameter(opts.line_width) if camera else float(opts.line_width)
    else:
        raise ValueError(f"unknown geometry kind {kind!r}")
    return mat


class OffscreenView:
    """One offscreen renderer with a fixed camera; ``render`` draws a list of scene geometries.

    Use it as a context manager (or call ``close``): Filament aborts the process at exit when a
    renderer still holds geometry, and when two renderers are alive at once.
    """

    def __init__(self, camera: PinholeCamera, opts: SceneOptions, background=(0.0, 0.0, 0.0)):
        from open3d.visualization import rendering

        try:
            self._renderer = rendering.OffscreenRenderer(camera.width, camera.height)
        except RuntimeError as e:
            raise RenderError(
                f"Open3D could not create an offscreen renderer ({e}). Headless rendering needs a Vulkan "
                "loader and driver: on Debian/Ubuntu `apt-get install libvulkan1 mesa-vulkan-drivers`; "
                "or use renderer=matplotlib") from e
        self._renderer.scene.view.set_post_processing(False)
        self._renderer.scene.set_background(list(background) + [1.0])
        self.camera = camera
        self.opts = opts
        self._materials = {k: make_material(k, opts, camera) for k in ("points", "lines")}

    def __enter__(self) -> OffscreenView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.scene.clear_geometry()
            self._renderer = None

    def render(self, geometries: list[SceneGeometry], labels: Iterable[SceneLabel] = (),
               caption: str | None = None) -> np.ndarray:
        if self._renderer is None:
            raise RenderError("render() on a closed OffscreenView")
        scene = self._renderer.scene
        scene.clear_geometry()
        for g in geometries:
            scene.add_geometry(g.name, g.geometry, self._materials[g.kind])
        # after the geometry: near/far planes are fitted to the scene's bounds here
        self._renderer.setup_camera(self.camera.intrinsic, self.camera.extrinsic,
                                    self.camera.width, self.camera.height)
        image = np.array(self._renderer.render_to_image(), dtype=np.uint8)
        return draw_overlay(image, self.camera, labels, caption)

    def render_scene(self, scene: SceneFrame) -> np.ndarray:
        scene = clean_scene(scene)
        return self.render(build_scene(scene, self.opts), score_labels(scene, self.opts),
                           frame_caption(scene, self.opts))


def draw_overlay(image: np.ndarray, camera: PinholeCamera, labels: Iterable[SceneLabel],
                 caption: str | None) -> np.ndarray:
    """Text on the rendered image: each label just right of and above its projected anchor, the
    caption in the top-left corner on a dark band."""
    from PIL import Image, ImageDraw, ImageFont

    labels = list(labels)
    if not labels and not caption:
        return image
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=max(10, camera.height // 48))
    if labels:
        uv, depth = camera.project(np.stack([lab.position for lab in labels]))
        for lab, (u, v), d in zip(labels, uv, depth):
            if d > 0 and 0 <= u < camera.width and 0 <= v < camera.height:
                draw.text((u + 3, v - 3), lab.text, fill=_rgb255(lab.color), font=font, anchor="ld")
    if caption:
        box = draw.textbbox((4, 4), caption, font=font)
        draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
        draw.text((4, 4), caption, fill=(230, 230, 230), font=font)
    return np.asarray(pil)


def _rgb255(color) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in color)


def render_scenes(scenes: Iterable[SceneFrame], camera: PinholeCamera, opts: SceneOptions) -> Iterator[np.ndarray]:
    with OffscreenView(camera, opts) as view:
        for scene in scenes:
            yield view.render_scene(scene)


def check_output_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES + ANIMATION_SUFFIXES:
        raise RenderError(f"out={out}: unsupported file type {out.suffix!r}; use .png (one frame), "
                          ".gif or .mp4 (the whole selection)")
    if out.suffix.lower() == ".mp4":
        _require_ffmpeg()
    return out


def _require_ffmpeg() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        raise RenderError("writing .mp4 needs the imageio-ffmpeg package (`pip install imageio-ffmpeg`); "
                          "out=FILE.gif works without it") from e


def write_images(out: str | os.PathLike, images: Iterable[np.ndarray], fps: float = 10.0) -> int:
    """Write one image (.png) or an animation (.gif, .mp4), atomically; returns the frames written.

    Images are consumed one at a time (a long segment is never held in memory as a whole)."""
    import imageio.v2 as imageio

    out = check_output_path(out)
    suffix = out.suffix.lower()
    count = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, keep_suffix=True) as tmp_path:  # writers pick the format from the suffix
        tmp = str(tmp_path)
        if suffix == ".png":
            for image in images:
                if count:
                    raise RenderError(f"out={out}: a .png holds one frame; use .gif or .mp4 for several")
                imageio.imwrite(tmp, image)
                count += 1
        else:
            kwargs = ({"duration": 1000.0 / fps, "loop": 0} if suffix == ".gif"
                      else {"fps": fps, "codec": "libx264", "macro_block_size": 2, "quality": 7})
            writer = imageio.get_writer(tmp, mode="I", **kwargs)
            try:
                for image in images:
                    writer.append_data(image)
                    count += 1
            finally:
                writer.close()
        if count == 0:
            raise RenderError(f"out={out}: no frames to write")
    return count


__all__ = ["RenderError", "OffscreenView", "make_material", "draw_overlay", "render_scenes",
           "check_output_path", "write_images", "IMAGE_SUFFIXES", "ANIMATION_SUFFIXES"]
