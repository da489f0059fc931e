"""Interactive viewer: an Open3D window playing a segment frame by frame, frames read on demand.

``ViewerWindow`` is a ``gui.Application`` window holding a ``SceneWidget`` (the 3D view), a caption
(top left, always shown), a legend (bottom left), a side panel (layers, point colours, classes, score
threshold, camera, the key bindings) and a bottom bar (first/previous/play/next/last, frame slider).

Only the shown frame's geometry is in the scene: the points are one fixed-capacity point cloud whose
buffers are overwritten in place each frame (``Scene.update_geometry``; unused slots repeat a shown
point), the boxes and state sites are replaced. Frames come from a ``SceneLoader`` (a background thread
reading the wanted frame and a few after it), so the window opens after the first frame and memory does
not grow while playing. The camera is never reset when stepping: with *follow ego* on (the default)
everything is drawn in the shown frame's vehicle frame, so the view travels with the ego; off, frames are
placed by their poses (relative to the frame shown when it was switched off) and the view stays put in
the world while the ego moves through it.

Keys: space play/pause, left/right previous/next frame, page up/down 10 frames back/ahead, home/end
first/last frame, B bird's-eye view, C chase view, F follow the ego on/off, I points by intensity or
height, G ground truth, P predictions, S the LSTM state sites, L score labels (nearest, all, off),
1-4 vehicles/pedestrians/signs/cyclists on/off, [ and ] score threshold -/+ 0.05, H side panel, Q or
Esc quit. Ctrl + left click selects the box nearest to the clicked ground point: its label is always
shown and its details are in the caption (it is followed from frame to frame).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from detector.errors import UnavailableError
from detector.viz.camera import PinholeCamera, birds_eye_camera, chase_camera
from detector.viz.loader import LoadedFrame, SceneLoader
from detector.viz.scene import (
    GT_COLORS,
    PRED_COLORS,
    STATE_COLOR,
    SceneFrame,
    SceneOptions,
    box_lines,
    class_colors,
    point_colors,
    score_labels,
    subsample_points,
    visible_ground_truth,
    visible_predictions,
)

NO_DISPLAY_MESSAGE = (
    "no display: neither $DISPLAY nor $WAYLAND_DISPLAY is set, so no viewer window can open. "
    "Render to a file instead, e.g. `python -m detector.visualize input=... headless=true out=view.png` "
    "(one frame) or `out=view.gif` / `out=view.mp4` (the whole selection).")

CLASS_NAMES = {1: "vehicle", 2: "pedestrian", 3: "sign", 4: "cyclist"}
LABEL_MODES = ("nearest", "all", "off")
POINT_CAPACITY_HEADROOM = 1.25  # the point buffer is re-made this much larger when a frame outgrows it
POINT_SLOTS = 3  # point buffers used in turn (see ViewerWindow._fill_slot)
#: After each change the window keeps redrawing, every FLUSH_EVERY_S for FLUSH_S seconds: Filament skips
#: a frame while the GPU is behind (a software renderer, a busy machine), so the last change reaches the
#: screen only with a redraw asked for after the renderer has caught up.
FLUSH_S = 4.0
FLUSH_EVERY_S = 0.1
#: ... then once every FLUSH_TAIL_EVERY_S up to FLUSH_TAIL_S after the change: on a loaded machine the
#: software renderer's first frames (shader compilation included) took longer than FLUSH_S, and a window
#: that stops asking for redraws then shows nothing until the user moves the mouse.
FLUSH_TAIL_S = 60.0
FLUSH_TAIL_EVERY_S = 1.0


class NoDisplayError(UnavailableError):
    pass


def display_available() -> bool:
    """On Linux and other X11/Wayland systems a window needs $DISPLAY or $WAYLAND_DISPLAY."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass
class ViewOptions:
    """The window's own settings (what is drawn is ``SceneOptions``)."""

    title: str = "detections"
    width: int = 1280
    height: int = 960
    fps: float = 10.0
    camera: str = "bev"  # bev | chase: the view at start (B / C keys later)
    range_m: float = 60.0  # bird's eye: metres from the ego to the nearer border of the view
    follow: bool = True
    play: bool = False  # start playing
    quit_at_end: bool = False  # close the window after the last frame (with play: one pass, then exit)
    trace: Path | None = None  # JSON lines, one per drawn frame: time, frame, memory, camera
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    label_mode: str = "nearest"  # nearest (``nearest_labels`` of them, to the view's centre) | all | off
    nearest_labels: int = 5

    def __post_init__(self) -> None:
        if self.camera not in ("bev", "chase"):
            raise ValueError(f"camera must be 'bev' or 'chase', got {self.camera!r}")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass
class PointArrays:
    """A frame's points ready for the GPU: xyz (N, 3) and colours (N, 3), float32."""

    xyz: np.ndarray
    colors: np.ndarray


def point_arrays(scene: SceneFrame, opts: SceneOptions) -> PointArrays:
    pts = subsample_points(scene.frame.points, opts.max_points, seed=scene.frame.index)
    return PointArrays(np.ascontiguousarray(pts[:, :3], np.float32),
                       point_colors(pts, opts.color_by, opts.cmap, opts.value_range, dtype=np.float32))


def legend_image(show_state: bool, scale: float = 1.0) -> np.ndarray:
    """The legend as an RGB image: per class a solid line (ground truth) and a dashed one (predictions)
    in their colours; the state sites' colour when shown."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(round(13 * scale)))
    row, pad, col = int(18 * scale), int(6 * scale), int(86 * scale)
    rows = [("", None, None)] + [(CLASS_NAMES[t], GT_COLORS[t], PRED_COLORS[t]) for t in CLASS_NAMES]
    height = pad * 2 + row * (len(rows) + (1 if show_state else 0))
    img = Image.new("RGB", (col + int(120 * scale), height), (12, 12, 16))
    draw = ImageDraw.Draw(img)
    x_gt, x_pred, seg = col, col + int(60 * scale), int(44 * scale)
    draw.text((x_gt, pad), "truth", fill=(220, 220, 220), font=font)
    draw.text((x_pred, pad), "pred", fill=(220, 220, 220), font=font)
    width = max(2, int(round(2 * scale)))
    for r, (name, gt, pred) in enumerate(rows[1:], start=1):
        y = pad + r * row
        yc = y + row // 2
        draw.text((pad, y), name, fill=(220, 220, 220), font=font)
        draw.line((x_gt, yc, x_gt + seg, yc), fill=_rgb255(gt), width=width)
        dash = max(3, seg // 7)
        for x in range(x_pred, x_pred + seg, 2 * dash):
            draw.line((x, yc, min(x + dash, x_pred + seg), yc), fill=_rgb255(pred), width=width)
    if show_state:
        y = pad + len(rows) * row
        draw.text((pad, y), "LSTM state", fill=(220, 220, 220), font=font)
        s = row - 6
        draw.rectangle((x_gt, y + 3, x_gt + s, y + 3 + s), outline=_rgb255(STATE_COLOR), width=width)
    return np.asarray(img)


def _rgb255(color) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in color)


def _memory_mb() -> float | None:
    """Resident memory of this process (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class ViewerWindow:
    """The viewer window over ``loader`` (needs ``gui.Application.instance.initialize()`` first)."""

    def __init__(self, loader: SceneLoader, opts: SceneOptions, view: ViewOptions | None = None):
        import open3d.visualization.gui as gui
        import open3d.visualization.rendering as rendering

        self.gui, self.rendering = gui, rendering
        self.loader, self.view = loader, view or ViewOptions()
        self.opts = opts
        self.has_state = bool(opts.show_state)
        self.show_points = True
        self.label_mode = self.view.label_mode
        self.playing = False
        self.follow = self.view.follow
        self.world_ref: np.ndarray | None = None  # pose of the frame shown when follow was switched off
        self.position = 0  # the wanted frame
        self.shown: LoadedFrame | None = None
        self.selected: tuple[str, np.ndarray] | None = None  # ("pred" | "gt", world xyz of the box)
        self.shown_labels: list[str] = []
        self.drawn_count = 0
        self._point_capacity = 0
        self._slots: list = []
        self._retired_slots: list = []
        self._slot_index = 0
        self._labels3d = []
        self._next_step_at = 0.0
        self._draw_countdown = -1
        self._flush_until = 0.0
        self._flush_tail_until = 0.0
        self._last_redraw = 0.0
        self._closed = False
        self._t_created = time.time()
        loader.set_prepare(self._prepare_fn())

        self.window = gui.Application.instance.create_window(self.view.title, self.view.width, self.view.height)
        w = self.window
        em = w.theme.font_size
        self.em = em
        self.widget = gui.SceneWidget()
        self.widget.scene = rendering.Open3DScene(w.renderer)
        scene = self.widget.scene
        scene.set_background([*self.view.background, 1.0])
        scene.show_skybox(False)
        scene.show_axes(False)
        scene.view.set_post_processing(False)  # unlit colours come out as given
        scene.downsample_threshold = 2**31 - 1  # no extra downsampled copy of every frame's points
        self.widget.set_on_mouse(self._on_mouse)
        # the 3D view is drawn with every window redraw (the window redraws only after a change)
        self.widget.enable_scene_caching(False)
        w.add_child(self.widget)

        self.caption_panel = gui.Vert(0, gui.Margins(int(0.5 * em), int(0.3 * em), int(0.5 * em), int(0.3 * em)))
        self.caption_panel.background_color = gui.Color(0.0, 0.0, 0.0, 0.7)
        self.caption = gui.Label("loading ...")
        self.caption.text_color = gui.Color(0.93, 0.93, 0.93)
        self.caption_panel.add_child(self.caption)
        w.add_child(self.caption_panel)

        import open3d as o3d

        self._legend_np = legend_image(self.has_state, scale=em / 16.0)
        self.legend = gui.ImageWidget(o3d.geometry.Image(self._legend_np))
        w.add_child(self.legend)

        self._build_panel(gui, em)
        self._build_bar(gui, em)
        w.set_on_layout(self._on_layout)
        w.set_on_key(self._on_key)
        w.set_on_tick_event(self._on_tick)
        w.set_on_close(self._on_close)

        self._materials = {}
        self._camera_kind = self.view.camera
        self._camera_ready = False
        self.goto(0)
        if self.view.play:
            self.set_playing(True)

    # ----------------------------------------------------------------- widgets
    def _build_panel(self, gui, em) -> None:
        margin = int(0.5 * em)
        self.panel = gui.ScrollableVert(int(0.25 * em), gui.Margins(margin, margin, margin, margin))

        def section(title):
            c = gui.CollapsableVert(title, int(0.25 * em), gui.Margins(int(0.5 * em), 0, 0, 0))
            self.panel.add_child(c)
            return c

        layers = section("Layers")
        self.cb_points = self._checkbox(gui, layers, "Points", True, lambda v: self.set_layer("points", v))
        self.cb_gt = self._checkbox(gui, layers, "Ground truth (solid)", self.opts.show_gt,
                                    lambda v: self.set_layer("gt", v))
        self.cb_pred = self._checkbox(gui, layers, "Predictions (dashed)", self.opts.show_pred,
                                      lambda v: self.set_layer("pred", v))
        self.cb_state = self._checkbox(gui, layers, "LSTM state sites", self.opts.show_state,
                                       lambda v: self.set_layer("state", v))
        self.cb_state.enabled = self.has_state
        row = gui.Horiz(int(0.25 * em))
        row.add_child(gui.Label("Score labels"))
        self.combo_labels = gui.Combobox()
        for m in LABEL_MODES:
            self.combo_labels.add_item(m)
        self.combo_labels.selected_index = LABEL_MODES.index(self.label_mode)
        self.combo_labels.set_on_selection_changed(lambda text, i: self.set_label_mode(LABEL_MODES[i]))
        row.add_child(self.combo_labels)
        layers.add_child(row)
        row = gui.Horiz(int(0.25 * em))
        row.add_child(gui.Label("Points by"))
        self.combo_color = gui.Combobox()
        for m in ("height", "intensity"):
            self.combo_color.add_item(m)
        self.combo_color.selected_index = 0 if self.opts.color_by == "height" else 1
        self.combo_color.set_on_selection_changed(lambda text, i: self.set_color_by(text))
        row.add_child(self.combo_color)
        layers.add_child(row)

        classes = section("Classes")
        shown = set(self.opts.classes) if self.opts.classes is not None else set(CLASS_NAMES)
        self.cb_classes = {}
        for k, (t, name) in enumerate(CLASS_NAMES.items(), start=1):
            self.cb_classes[t] = self._checkbox(gui, classes, f"{k}  {name}", t in shown,
                                                lambda v, t=t: self.set_class(t, v))
        row = gui.Horiz(int(0.25 * em))
        row.add_child(gui.Label("Score >="))
        self.slider_score = gui.Slider(gui.Slider.DOUBLE)
        self.slider_score.set_limits(0.0, 1.0)
        self.slider_score.double_value = float(self.opts.score_threshold)
        self.slider_score.set_on_value_changed(self.set_score_threshold)
        row.add_child(self.slider_score)
        classes.add_child(row)

        cam = section("Camera")
        row = gui.Horiz(int(0.25 * em))
        for text, kind in (("Bird's eye (B)", "bev"), ("Chase (C)", "chase")):
            b = gui.Button(text)
            b.set_on_clicked(lambda kind=kind: self.set_camera(kind))
            row.add_child(b)
        cam.add_child(row)
        self.cb_follow = self._checkbox(gui, cam, "Follow the ego (F)", self.follow, self.set_follow)

        keys = section("Keys")
        keys.add_child(gui.Label(
            "space  play / pause\n<- ->  previous / next frame\nPgUp PgDn  10 frames\nHome End  first / last\n"
            "B C  bird's eye / chase view\nF  follow the ego\nI  points by intensity / height\n"
            "G P S  truth / predictions / state\nL  labels: nearest, all, off\n1-4  classes\n"
            "[ ]  score threshold -/+ 0.05\nCtrl+click  select a box\nH  this panel    Q Esc  quit"))
        keys.set_is_open(True)
        self.window.add_child(self.panel)

    def _checkbox(self, gui, parent, text, checked, on_checked):
        cb = gui.Checkbox(text)
        cb.checked = bool(checked)
        cb.set_on_checked(on_checked)
        parent.add_child(cb)
        return cb

    def _build_bar(self, gui, em) -> None:
        self.bar = gui.Horiz(int(0.3 * em), gui.Margins(int(0.5 * em), int(0.25 * em), int(0.5 * em), int(0.25 * em)))
        for text, action in (("|<", lambda: self.goto(0)), ("<", lambda: self.step(-1))):
            b = gui.Button(text)
            b.set_on_clicked(action)
            self.bar.add_child(b)
        self.play_button = gui.Button("Play")
        self.play_button.set_on_clicked(lambda: self.set_playing(not self.playing))
        self.bar.add_child(self.play_button)
        for text, action in ((">", lambda: self.step(1)), (">|", lambda: self.goto(len(self.loader) - 1))):
            b = gui.Button(text)
            b.set_on_clicked(action)
            self.bar.add_child(b)
        self.slider = gui.Slider(gui.Slider.INT)
        self.slider.set_limits(0, max(len(self.loader) - 1, 0))
        self.slider.set_on_value_changed(lambda v: self.goto(int(v)))
        self.bar.add_child(self.slider)
        self.frame_label = gui.Label(f"{1:>5} / {len(self.loader)}")
        self.bar.add_child(self.frame_label)
        self.window.add_child(self.bar)

    def _on_layout(self, ctx) -> None:
        gui = self.gui
        r = self.window.content_rect
        em = self.em
        panel_w = int(17 * em) if self.panel.visible else 0
        bar_h = self.bar.calc_preferred_size(ctx, gui.Widget.Constraints()).height
        scene_rect = gui.Rect(r.x, r.y, r.width - panel_w, r.height - bar_h)
        self.widget.frame = scene_rect
        self.panel.frame = gui.Rect(r.x + r.width - panel_w, r.y, panel_w, r.height - bar_h)
        self.bar.frame = gui.Rect(r.x, r.y + r.height - bar_h, r.width, bar_h)
        pref = self.caption_panel.calc_preferred_size(ctx, gui.Widget.Constraints())
        self.caption_panel.frame = gui.Rect(scene_rect.x, scene_rect.y, min(pref.width, scene_rect.width),
                                            pref.height)
        lh, lw = self._legend_np.shape[:2]
        self.legend.frame = gui.Rect(scene_rect.x, scene_rect.y + scene_rect.height - lh, lw, lh)
        if not self._camera_ready and scene_rect.width > 0 and scene_rect.height > 0:
            self._camera_ready = True
            self.set_camera(self._camera_kind)

    # ----------------------------------------------------------------- actions
    def goto(self, position: int, direction: int | None = None) -> None:
        """Show frame ``position`` of the selection (clamped) as soon as it is read."""
        position = min(max(int(position), 0), len(self.loader) - 1)
        if direction is None:
            direction = 1 if position >= self.position else -1
        self.position = position
        self.loader.request(position, direction)
        self.slider.int_value = position
        self.frame_label.text = f"{position + 1:>5} / {len(self.loader)}"
        item = self.loader.get(position)
        if item is not None:
            self._show(item)

    def step(self, delta: int) -> None:
        self.set_playing(False)
        self.goto(self.position + delta, 1 if delta >= 0 else -1)

    def set_playing(self, playing: bool) -> None:
        if playing and self.position >= len(self.loader) - 1 and not self.view.quit_at_end:
            self.goto(0)
        if bool(playing) != self.playing and self.shown is not None:
            self._draw_countdown = 1  # a trace line with the new state
        self.playing = bool(playing)
        self.play_button.text = "Pause" if self.playing else "Play"
        self._next_step_at = time.monotonic() + 1.0 / self.view.fps
        self._update_caption()

    def set_layer(self, layer: str, on: bool) -> None:
        if layer == "points":
            self.show_points = bool(on)
            self.cb_points.checked = self.show_points
        elif layer == "gt":
            self.opts = replace(self.opts, show_gt=bool(on))
            self.cb_gt.checked = bool(on)
        elif layer == "pred":
            self.opts = replace(self.opts, show_pred=bool(on))
            self.cb_pred.checked = bool(on)
        elif layer == "state":
            self.opts = replace(self.opts, show_state=bool(on) and self.has_state)
            self.cb_state.checked = self.opts.show_state
        else:
            raise ValueError(f"unknown layer {layer!r}")
        self._redraw_frame()

    def set_label_mode(self, mode: str) -> None:
        if mode not in LABEL_MODES:
            raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
        self.label_mode = mode
        self.combo_labels.selected_index = LABEL_MODES.index(mode)
        self._update_labels()

    def set_color_by(self, color_by: str) -> None:
        self.opts = replace(self.opts, color_by=color_by)
        self.combo_color.selected_index = 0 if color_by == "height" else 1
        self.loader.set_prepare(self._prepare_fn())
        if self.shown is not None:  # the shown frame now; the held ones are redone on the loader's thread
            self.shown = replace(self.shown, prepared=point_arrays(self.shown.scene, self.opts))
            self._update_points()
            self.widget.force_redraw()
            self.window.post_redraw()

    def set_class(self, type_id: int, on: bool) -> None:
        shown = set(self.opts.classes) if self.opts.classes is not None else set(CLASS_NAMES)
        shown = shown | {type_id} if on else shown - {type_id}
        self.opts = replace(self.opts, classes=None if shown >= set(CLASS_NAMES) else tuple(sorted(shown)))
        self.cb_classes[type_id].checked = bool(on)
        self._redraw_frame()

    def set_score_threshold(self, value: float) -> None:
        value = float(min(max(value, 0.0), 1.0))
        self.opts = replace(self.opts, score_threshold=value)
        self.slider_score.double_value = value
        self._redraw_frame()

    def set_follow(self, on: bool) -> None:
        """Follow the ego (vehicle frame) or stay in the world; the view on screen does not jump."""
        on = bool(on)
        if on == self.follow:
            return
        current = self._relative_pose()
        self.follow = on
        self.cb_follow.checked = on
        if on:
            self._move_camera(np.linalg.inv(current))  # the world placement is undone: carry the camera
            self.world_ref = None
        else:
            self.world_ref = self._pose()
        self._redraw_frame()

    def set_camera(self, kind: str) -> None:
        """The bird's-eye or chase view of the ego of the shown frame."""
        if kind not in ("bev", "chase"):
            raise ValueError(f"camera must be 'bev' or 'chase', got {kind!r}")
        self._camera_kind = kind
        rect = self.widget.frame
        w, h = max(rect.width, 1), max(rect.height, 1)
        cam = (birds_eye_camera(w, h, self.view.range_m, altitude=2.0 * self.view.range_m) if kind == "bev"
               else chase_camera(w, h))
        self._apply_camera(cam)

    def _apply_camera(self, cam: PinholeCamera) -> None:
        import open3d as o3d

        rendering = self.rendering
        rot, t = cam.extrinsic[:3, :3], cam.extrinsic[:3, 3]
        eye = -rot.T @ t
        forward, up = rot.T @ np.array([0.0, 0.0, 1.0]), rot.T @ np.array([0.0, -1.0, 0.0])
        center = eye + forward * (abs(eye[2]) / max(abs(forward[2]), 1e-6) if forward[2] < 0 else 30.0)
        pose = self._relative_pose()
        eye, center = (pose[:3, :3] @ p + pose[:3, 3] for p in (eye, center))
        up = pose[:3, :3] @ up
        fov = math.degrees(2 * math.atan(0.5 * cam.height / cam.focal_y))
        bounds = o3d.geometry.AxisAlignedBoundingBox(center - 150.0, center + 150.0)
        self.widget.setup_camera(fov, bounds, center.astype(np.float32))
        self.widget.scene.camera.set_projection(fov, cam.width / cam.height, 0.3, 3000.0,
                                                rendering.Camera.FovType.Vertical)
        self.widget.look_at(center.astype(np.float32), eye.astype(np.float32), up.astype(np.float32))
        self._line_width = float(self.opts.line_width) * cam.height / cam.focal_y
        self._materials = {}
        self._redraw_frame()

    def _move_camera(self, transform: np.ndarray) -> None:
        """Move the camera rigidly by ``transform`` (4x4) in the scene."""
        cam = self.widget.scene.camera
        model = np.asarray(cam.get_model_matrix(), np.float64)  # camera -> scene; looks along -z, up +y
        moved = transform @ model
        eye, forward, up = moved[:3, 3], -moved[:3, 2], moved[:3, 1]
        old_eye = model[:3, 3]
        dist = float(np.linalg.norm(np.asarray(self.widget.center_of_rotation, np.float64) - old_eye)) or 30.0
        self.widget.look_at((eye + forward * dist).astype(np.float32), eye.astype(np.float32),
                            up.astype(np.float32))

    def close(self) -> None:
        """Close the window (and so end the application's loop). The close itself is posted to the
        main loop: closing a window from inside its own tick or key callback crashes Open3D 0.20."""
        if not self._closed:
            self._on_close()
            self.gui.Application.instance.post_to_main_thread(self.window, self.window.close)

    # ----------------------------------------------------------------- events
    def _on_key(self, event) -> bool:
        gui = self.gui
        if event.type != gui.KeyEvent.Type.DOWN:
            return False
        k, K = event.key, gui.KeyName
        actions = {
            K.SPACE: lambda: self.set_playing(not self.playing),
            K.LEFT: lambda: self.step(-1), K.RIGHT: lambda: self.step(1),
            K.PAGE_UP: lambda: self.step(-10), K.PAGE_DOWN: lambda: self.step(10),
            K.HOME: lambda: (self.set_playing(False), self.goto(0)),
            K.END: lambda: (self.set_playing(False), self.goto(len(self.loader) - 1)),
            K.B: lambda: self.set_camera("bev"), K.C: lambda: self.set_camera("chase"),
            K.F: lambda: self.set_follow(not self.follow),
            K.I: lambda: self.set_color_by("intensity" if self.opts.color_by == "height" else "height"),
            K.G: lambda: self.set_layer("gt", not self.opts.show_gt),
            K.P: lambda: self.set_layer("pred", not self.opts.show_pred),
            K.S: lambda: self.set_layer("state", not self.opts.show_state),
            K.L: lambda: self.set_label_mode(LABEL_MODES[(LABEL_MODES.index(self.label_mode) + 1) % 3]),
            K.LEFT_BRACKET: lambda: self.set_score_threshold(self.opts.score_threshold - 0.05),
            K.RIGHT_BRACKET: lambda: self.set_score_threshold(self.opts.score_threshold + 0.05),
            K.H: self._toggle_panel,
            K.Q: self.close, K.ESCAPE: self.close,
        }
        for digit, t in ((K.ONE, 1), (K.TWO, 2), (K.THREE, 3), (K.FOUR, 4)):
            actions[digit] = lambda t=t: self.set_class(t, not self.cb_classes[t].checked)
        action = actions.get(k)
        if action is None:
            return False
        action()
        self.window.post_redraw()
        self._flush_after_change()
        return True

    def _toggle_panel(self) -> None:
        self.panel.visible = not self.panel.visible
        self.window.set_needs_layout()

    def _on_mouse(self, event):
        gui = self.gui
        if (event.type == gui.MouseEvent.Type.BUTTON_DOWN and event.is_button_down(gui.MouseButton.LEFT)
                and event.is_modifier_down(gui.KeyModifier.CTRL)):
            self._select_at(event.x - self.widget.frame.x, event.y - self.widget.frame.y)
            return gui.Widget.EventCallbackResult.CONSUMED
        return gui.Widget.EventCallbackResult.IGNORED

    def _on_tick(self) -> bool:
        changed = False
        if self.shown is None or self.shown.position != self.position:
            item = self.loader.get(self.position)
            if item is not None:
                self._show(item)
                changed = True
        now = time.monotonic()
        shown_now = self.shown is not None and self.shown.position == self.position
        if self.playing and shown_now and now >= self._next_step_at:
            if self.position < len(self.loader) - 1:
                # at most fps; when reading falls behind, the next frame is shown as soon as it is read
                self._next_step_at = max(self._next_step_at + 1.0 / self.view.fps, now)
                self.goto(self.position + 1, 1)
                changed = True
            else:
                self.set_playing(False)
                if self.view.quit_at_end:
                    if self._draw_countdown > 0:  # the last frame's trace line
                        self._drawn()
                    self._draw_countdown = -1
                    self.close()
                    return False
        if self._draw_countdown > 0:
            self._draw_countdown -= 1
            if self._draw_countdown == 0:
                self._drawn()
        status = self.loader.status()
        if status != getattr(self, "_last_status", None):
            self._last_status = status
            self._update_caption()
        if changed:
            self._flush_after_change(now)
        elif now < self._flush_until and now - self._last_redraw >= FLUSH_EVERY_S:
            changed = True
        elif now < self._flush_tail_until and now - self._last_redraw >= FLUSH_TAIL_EVERY_S:
            changed = True
        if changed:
            self._last_redraw = now
        return changed

    def _flush_after_change(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._flush_until = now + FLUSH_S
        self._flush_tail_until = now + FLUSH_TAIL_S

    def _on_close(self) -> bool:
        if not self._closed:
            self._closed = True
            self.playing = False
            for lab in self._labels3d:
                self.widget.remove_3d_label(lab)
            self._labels3d = []
            self.loader.close()
        return True

    # ----------------------------------------------------------------- drawing
    def _prepare_fn(self):
        opts = self.opts
        return lambda scene: point_arrays(scene, opts)

    def _show(self, item: LoadedFrame) -> None:
        self.shown = item
        self._redraw_frame()
        self._draw_countdown = 1  # the next tick: the redraw asked for by this one has happened

    def _pose(self) -> np.ndarray:
        return self.shown.scene.frame.pose if self.shown is not None else np.eye(4)

    def _relative_pose(self) -> np.ndarray:
        """Where the shown frame's vehicle frame sits in the scene: identity when following the ego."""
        if self.follow or self.world_ref is None:
            return np.eye(4)
        return np.linalg.inv(self.world_ref) @ self._pose()

    def _material(self, kind: str):
        if kind not in self._materials:
            mat = self.rendering.MaterialRecord()
            if kind == "points":
                mat.shader = "defaultUnlit"
                mat.point_size = float(self.opts.point_size)
            else:
                mat.shader = "unlitLine"
                mat.line_width = getattr(self, "_line_width", float(self.opts.line_width))
            self._materials[kind] = mat
        return self._materials[kind]

    def _redraw_frame(self) -> None:
        """(Re)build the shown frame's geometry for the current options."""
        if self.shown is None or not self._camera_ready:
            return
        scene3d = self.widget.scene
        self._update_points()
        scene = self.shown.scene
        pose = self._relative_pose()
        gt_boxes, gt_types = visible_ground_truth(scene, self.opts)
        preds = visible_predictions(scene, self.opts)
        layers = [("ground_truth", gt_boxes, class_colors(gt_types, GT_COLORS), False)]
        if preds is not None:
            layers.append(("predictions", preds.boxes, class_colors(preds.types, PRED_COLORS),
                           self.opts.dashed_predictions))
        for name in ("ground_truth", "predictions", "state"):
            if scene3d.has_geometry(name):
                scene3d.remove_geometry(name)
        from detector.viz.scene import lines_geometry, state_geometry

        for name, boxes, colors, dash in layers:
            if len(boxes):
                scene3d.add_geometry(name, lines_geometry(*box_lines(boxes, colors, dash)), self._material("lines"))
                scene3d.set_geometry_transform(name, pose)
        if self.opts.show_state and scene.state is not None and len(scene.state.centers):
            scene3d.add_geometry("state", state_geometry(scene.state.centers, scene.state.voxel_size),
                                 self._material("lines"))
            scene3d.set_geometry_transform("state", pose)
        self._update_labels()
        self._update_caption()
        self._draw_countdown = 1
        self.widget.force_redraw()  # the widget caches its last image: geometry changes need a new one
        self.window.post_redraw()
        self._flush_after_change()

    def _update_points(self) -> None:
        import open3d as o3d

        scene3d = self.widget.scene
        arrays = self.shown.prepared if self.shown is not None else None
        if not isinstance(arrays, PointArrays):
            return
        n = len(arrays.xyz)
        if n == 0 or not self.show_points:
            if scene3d.has_geometry("points"):
                scene3d.show_geometry("points", False)
            return
        if n > self._point_capacity or not scene3d.has_geometry("points"):
            if scene3d.has_geometry("points"):
                scene3d.remove_geometry("points")
            self._point_capacity = int(math.ceil(n * POINT_CAPACITY_HEADROOM))
            # the old buffers may still be read by Filament: they are kept (this happens rarely)
            self._retired_slots.extend(self._slots)
            self._slots = [self._point_slot(o3d, self._point_capacity) for _ in range(POINT_SLOTS)]
            slot = self._fill_slot(arrays)
            scene3d.add_geometry("points", slot[2], self._material("points"), False)
        else:
            slot = self._fill_slot(arrays)
            rendering = self.rendering
            scene3d.scene.update_geometry("points", slot[2], rendering.Scene.UPDATE_POINTS_FLAG
                                          | rendering.Scene.UPDATE_COLORS_FLAG)
        scene3d.show_geometry("points", True)
        scene3d.set_geometry_transform("points", self._relative_pose())

    @staticmethod
    def _point_slot(o3d, capacity: int):
        xyz = np.zeros((capacity, 3), np.float32)
        colors = np.zeros((capacity, 3), np.float32)
        pc = o3d.t.geometry.PointCloud(o3d.core.Tensor.from_numpy(xyz))
        pc.point.colors = o3d.core.Tensor.from_numpy(colors)
        return xyz, colors, pc

    def _fill_slot(self, arrays: PointArrays):
        """The next point buffer, filled with the frame's points, then copies of its first point.

        Filament copies an updated point buffer later, on its own thread, straight from this memory
        (no completion callback in Open3D 0.20's ``update_geometry``), so the buffers are allocated once
        and live as long as the window; a ring of them keeps a frame's copy from racing the next fill."""
        self._slot_index = (self._slot_index + 1) % len(self._slots)
        xyz, colors, _ = slot = self._slots[self._slot_index]
        n = len(arrays.xyz)
        xyz[:n], colors[:n] = arrays.xyz, arrays.colors
        xyz[n:], colors[n:] = arrays.xyz[0], arrays.colors[0]
        return slot

    def _view_target(self) -> np.ndarray:
        """The ground point the view is centred on, in the shown frame's vehicle frame (x, y)."""
        model = np.asarray(self.widget.scene.camera.get_model_matrix(), np.float64)
        eye, forward = model[:3, 3], -model[:3, 2]
        point = eye + forward * (-eye[2] / forward[2]) if forward[2] < -1e-3 else eye
        inv = np.linalg.inv(self._relative_pose())
        return (inv[:3, :3] @ point + inv[:3, 3])[:2]

    def _selected_index(self, preds) -> int | None:
        """The shown prediction nearest the selection (within 3 m), following it from frame to frame."""
        if self.selected is None or preds is None or not len(preds) or self.selected[0] != "pred":
            return None
        world = self.selected[1]
        inv = np.linalg.inv(self._pose())
        local = inv[:3, :3] @ world + inv[:3, 3]
        d = np.hypot(preds.boxes[:, 0] - local[0], preds.boxes[:, 1] - local[1])
        i = int(np.argmin(d))
        if d[i] > 3.0:
            return None
        pose = self._pose()
        self.selected = ("pred", pose[:3, :3] @ preds.boxes[i, :3].astype(np.float64) + pose[:3, 3])
        return i

    def _update_labels(self) -> None:
        for lab in self._labels3d:
            self.widget.remove_3d_label(lab)
        self._labels3d = []
        self.shown_labels = []
        if self.shown is None:
            return
        scene = self.shown.scene
        preds = visible_predictions(scene, self.opts)
        selected = self._selected_index(preds)
        if self.label_mode == "off":
            if selected is None:
                return
            opts = replace(self.opts, max_labels=0, show_scores=True)
        else:
            opts = replace(self.opts, show_scores=True,
                           max_labels=None if self.label_mode == "all" else self.view.nearest_labels)
        pose = self._relative_pose()
        for lab in score_labels(scene, opts, near=tuple(self._view_target()), selected=selected):
            pos = pose[:3, :3] @ lab.position + pose[:3, 3]
            label = self.widget.add_3d_label(pos.astype(np.float32), lab.text)
            label.color = self.gui.Color(*lab.color)
            self._labels3d.append(label)
            self.shown_labels.append(lab.text)

    def _select_at(self, x: float, y: float) -> None:
        """Select the box (prediction first, else ground truth) nearest the ground point under (x, y)."""
        if self.shown is None:
            return
        rect = self.widget.frame
        cam = self.widget.scene.camera
        near = np.asarray(cam.unproject(x, y, 0.1, rect.width, rect.height), np.float64).reshape(3)
        far = np.asarray(cam.unproject(x, y, 0.9, rect.width, rect.height), np.float64).reshape(3)
        inv = np.linalg.inv(self._relative_pose())
        near, far = (inv[:3, :3] @ p + inv[:3, 3] for p in (near, far))
        direction = far - near
        if abs(direction[2]) < 1e-9:
            return
        ground = near + direction * ((0.8 - near[2]) / direction[2])  # box centres are about 0.8 m up
        scene = self.shown.scene
        pose = self._pose()
        best = None
        for kind, boxes in (("pred", None if (p := visible_predictions(scene, self.opts)) is None else p.boxes),
                            ("gt", visible_ground_truth(scene, self.opts)[0])):
            if boxes is None or not len(boxes):
                continue
            d = np.hypot(boxes[:, 0] - ground[0], boxes[:, 1] - ground[1])
            i = int(np.argmin(d))
            if d[i] <= max(3.0, 0.5 * float(boxes[i, 3])) and (best is None or d[i] < best[0] - 0.5):
                best = (float(d[i]), kind, boxes[i])
        self.selected = None if best is None else (best[1], pose[:3, :3] @ best[2][:3].astype(np.float64) + pose[:3, 3])
        self._selected_box = None if best is None else (best[1], best[2])
        self._update_labels()
        self._update_caption()
        self.window.post_redraw()

    def caption_text(self) -> str:
        if self.shown is None:
            return f"{self.view.title}\nloading frame {self.position + 1} of {len(self.loader)} ..."
        scene, opts = self.shown.scene, self.opts
        frame = scene.frame
        n_gt = len(visible_ground_truth(scene, opts)[0])
        preds = visible_predictions(scene, opts)
        lines = [f"{frame.segment}",
                 f"frame {frame.index}  ({self.shown.position + 1} of {len(self.loader)})   "
                 f"t = {frame.timestamp_micros} us",
                 f"{len(frame.points):,} points   truth {n_gt if opts.show_gt else 'off'}   " + (
                     f"pred {len(preds)} (score >= {opts.score_threshold:.2f})" if preds is not None
                     else ("pred off" if scene.predictions is not None else "no predictions"))]
        mode = "playing" if self.playing else "paused"
        if self.shown.position != self.position:
            mode += f", loading frame {self.position + 1}"
        lines.append(f"{mode}   camera {'follows the ego' if self.follow else 'fixed in the world'}"
                     f"   points by {opts.color_by}")
        status = self.loader.status()
        if status:
            lines.append(status)
        sel = getattr(self, "_selected_box", None)
        if self.selected is not None and sel is not None:
            kind, b = sel
            lines.append(f"selected {'prediction' if kind == 'pred' else 'truth'}: {b[3]:.1f} x {b[4]:.1f} x "
                         f"{b[5]:.1f} m at ({b[0]:.1f}, {b[1]:.1f}) m, heading {math.degrees(b[6]):.0f} deg")
        if scene.error:
            lines.append(f"UNREADABLE FRAME: {scene.error}")
        lines.extend(f"WARNING: {w}" for w in scene.warnings)
        return "\n".join(lines)

    def _update_caption(self) -> None:
        text = self.caption_text()
        if text != self.caption.text:
            self.caption.text = text
            self.window.set_needs_layout()

    def _drawn(self) -> None:
        """The shown frame has been drawn: count it and write the trace line."""
        self.drawn_count += 1
        if self.view.trace is None or self.shown is None:
            return
        cam = self.widget.scene.camera
        rect, os_frame = self.widget.frame, self.window.os_frame
        record = {
            "event": "drawn", "time": time.time(), "position": self.shown.position,
            "index": self.shown.scene.frame.index, "playing": self.playing, "rss_mb": _memory_mb(),
            "held": self.loader.held(), "caption": self.caption.text, "labels": self.shown_labels,
            "view_matrix": np.asarray(cam.get_view_matrix()).tolist(),
            "projection_matrix": np.asarray(cam.get_projection_matrix()).tolist(),
            "scene_rect": [rect.x, rect.y, rect.width, rect.height],
            "window_rect": [os_frame.x, os_frame.y, os_frame.width, os_frame.height],
            "follow": self.follow, "relative_pose": self._relative_pose().tolist(),
            "opts": {"show_gt": self.opts.show_gt, "show_pred": self.opts.show_pred,
                     "show_state": self.opts.show_state, "color_by": self.opts.color_by,
                     "score_threshold": self.opts.score_threshold,
                     "classes": list(self.opts.classes) if self.opts.classes is not None else None},
        }
        with open(self.view.trace, "a") as f:
            f.write(json.dumps(record) + "\n")


def run_interactive(loader: SceneLoader, opts: SceneOptions, view: ViewOptions | None = None) -> ViewerWindow:
    """Open the viewer window and block until it is closed."""
    if not display_available():
        raise NoDisplayError(NO_DISPLAY_MESSAGE)
    import open3d.visualization.gui as gui

    app = gui.Application.instance
    app.initialize()
    viewer = ViewerWindow(loader, opts, view)
    app.run()
    return viewer


__all__ = ["NO_DISPLAY_MESSAGE", "NoDisplayError", "display_available", "ViewOptions", "ViewerWindow",
           "PointArrays", "point_arrays", "legend_image", "run_interactive", "CLASS_NAMES", "LABEL_MODES"]
