"""Bird's-eye plot with matplotlib: a light alternative to the Open3D renderer for reports.

Same framing as ``camera.birds_eye_camera``: the vehicle's +x points up, +y to the left, ``range_m``
metres from ``center_xy`` to the nearer image border. Points are splatted into an image (higher points
drawn last), box footprints and heading lines are drawn over it without anti-aliasing, so each box
edge carries its class colour exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.viz.scene import (
    GT_COLORS,
    PRED_COLORS,
    SceneFrame,
    SceneOptions,
    box_corners,
    class_colors,
    clean_scene,
    frame_caption,
    point_colors,
    score_labels,
    subsample_points,
    trail_segments,
    visible_ground_truth,
    visible_predictions,
)


@dataclass(frozen=True)
class BevFraming:
    width: int
    height: int
    range_m: float
    center_xy: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.range_m <= 0:
            raise ValueError(f"bad bird's-eye framing {self.width}x{self.height}, range {self.range_m}")

    @property
    def metres_per_pixel(self) -> float:
        return 2.0 * self.range_m / min(self.width, self.height)

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Vehicle-frame (N, 2) x, y in metres -> (N, 2) pixel u (right), v (down)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        u = self.width / 2 - (xy[:, 1] - self.center_xy[1]) / self.metres_per_pixel
        v = self.height / 2 - (xy[:, 0] - self.center_xy[0]) / self.metres_per_pixel
        return np.stack([u, v], axis=1)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of the image in plot coordinates (horizontal = y, vertical = x)."""
        half_h = self.width / 2 * self.metres_per_pixel
        half_v = self.height / 2 * self.metres_per_pixel
        cx, cy = self.center_xy
        return cy + half_h, cy - half_h, cx - half_v, cx + half_v


def splat_points(points: np.ndarray, colors: np.ndarray, framing: BevFraming, size: int = 1,
                 background=(0, 0, 0)) -> np.ndarray:
    """(H, W, 3) uint8 image with each point a ``size`` x ``size`` square; higher points on top."""
    image = np.empty((framing.height, framing.width, 3), np.uint8)
    image[:] = np.asarray(background, np.uint8)
    if not len(points):
        return image
    order = np.argsort(points[:, 2], kind="stable")
    uv = np.floor(framing.to_pixels(points[order, :2])).astype(np.int64)
    rgb = np.round(255 * colors[order]).astype(np.uint8)
    lo = -(size // 2)
    for du in range(lo, lo + size):
        for dv in range(lo, lo + size):
            u, v = uv[:, 0] + du, uv[:, 1] + dv
            ok = (u >= 0) & (u < framing.width) & (v >= 0) & (v < framing.height)
            image[v[ok], u[ok]] = rgb[ok]  # later (higher) points overwrite earlier ones
    return image


def render_bev(scene: SceneFrame, opts: SceneOptions, framing: BevFraming) -> np.ndarray:
    """The bird's-eye plot of one frame as an (H, W, 3) uint8 image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(framing.width / dpi, framing.height / dpi), dpi=dpi, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    left, right, bottom, top = framing.extent
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)

    scene = clean_scene(scene)
    frame = scene.frame
    pts = subsample_points(frame.points, opts.max_points, seed=frame.index)
    image = splat_points(pts, point_colors(pts, opts.color_by, opts.cmap, opts.value_range), framing,
                         size=max(1, int(round(opts.point_size / 2))))
    ax.imshow(image, extent=framing.extent, origin="upper", interpolation="nearest", aspect="auto")

    lw = opts.line_width * 72.0 / dpi  # points
    gt_boxes, gt_types = visible_ground_truth(scene, opts)
    _draw_boxes(ax, gt_boxes, class_colors(gt_types, GT_COLORS), lw)
    preds = visible_predictions(scene, opts)
    if preds is not None:
        _draw_boxes(ax, preds.boxes, class_colors(preds.types, PRED_COLORS), lw)
        for seg, color in zip(*trail_segments(preds)):
            ax.plot(seg[:, 1], seg[:, 0], color=color, lw=lw, antialiased=False, alpha=0.8)
    if opts.show_state and scene.state is not None:
        c = np.asarray(scene.state.centers).reshape(-1, 3)
        ax.scatter(c[:, 1], c[:, 0], s=4, marker="s", facecolors="none", edgecolors=[(0.55, 0.35, 1.0)],
                   linewidths=0.6)
    fontsize = max(6.0, framing.height / 48 * 72 / dpi)
    for lab in score_labels(scene, opts):
        ax.text(lab.position[1], lab.position[0], " " + lab.text, color=lab.color, fontsize=fontsize,
                ha="left", va="bottom", clip_on=True)
    ax.text(0.01, 0.99, frame_caption(scene, opts), transform=ax.transAxes, color=(0.9, 0.9, 0.9),
            fontsize=fontsize, ha="left", va="top", backgroundcolor="black")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _draw_boxes(ax, boxes: np.ndarray, colors: np.ndarray, lw: float) -> None:
    """Footprint (bottom face) outline and a heading line from the centre to the front edge."""
    corners = box_corners(boxes)[:, :4, :2]  # (M, 4, 2): front-left, front-right, rear-right, rear-left
    for quad, color in zip(corners, colors):
        ring = np.concatenate([quad, quad[:1]])
        ax.plot(ring[:, 1], ring[:, 0], color=color, lw=lw, antialiased=False, solid_capstyle="butt")
        center, front = quad.mean(axis=0), 0.5 * (quad[0] + quad[1])
        ax.plot([center[1], front[1]], [center[0], front[0]], color=color, lw=lw, antialiased=False)


def render_bev_scenes(scenes, opts: SceneOptions, framing: BevFraming):
    for scene in scenes:
        yield render_bev(scene, opts, framing)


__all__ = ["BevFraming", "splat_points", "render_bev", "render_bev_scenes"]
