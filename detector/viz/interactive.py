"""Interactive viewer: Open3D's O3DVisualizer playing a segment frame by frame.

Every frame's geometries are added with ``time = position in the selection``, so the visualizer's own
time slider and play/pause button step through the segment (one time unit a frame). The "Previous
frame" / "Next frame" actions step by one; the score labels follow the shown frame. Geometry groups
("points", "ground truth", "predictions", "state") can be switched on and off in the side panel.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from detector.viz.scene import SceneFrame, SceneOptions, build_scene, frame_caption, score_labels
from detector.errors import UnavailableError

NO_DISPLAY_MESSAGE = (
    "no display: neither $DISPLAY nor $WAYLAND_DISPLAY is set, so no viewer window can open. "
    "Render to a file instead, e.g. `python -m detector.visualize input=... headless=true out=view.png` "
    "(one frame) or `out=view.gif` / `out=view.mp4` (the whole selection).")


class NoDisplayError(UnavailableError):
    pass


def display_available() -> bool:
    """On Linux and other X11/Wayland systems a window needs $DISPLAY or $WAYLAND_DISPLAY."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class SequenceViewer:
    """An ``O3DVisualizer`` holding all frames of ``scenes`` (needs ``gui.Application`` initialized)."""

    def __init__(self, scenes: Sequence[SceneFrame], opts: SceneOptions, title: str = "detections",
                 fps: float = 10.0, width: int = 1280, height: int = 960):
        import open3d.visualization as vis

        from detector.viz.headless import make_material

        if not scenes:
            raise ValueError("SequenceViewer: no frames to show")
        self.scenes = list(scenes)
        self.opts = opts
        self.window = vis.O3DVisualizer(title, width, height)
        materials = {k: make_material(k, opts) for k in ("points", "lines")}
        self.geometry_names: list[list[str]] = []
        for t, scene in enumerate(self.scenes):
            names = []
            for g in build_scene(scene, opts):
                name = f"{g.name} {t:04d}"
                self.window.add_geometry(name, g.geometry, materials[g.kind], group=g.group, time=float(t))
                names.append(name)
            self.geometry_names.append(names)
        self.window.point_size = int(round(opts.point_size))
        self.window.line_width = int(round(opts.line_width))
        self.window.show_settings = True
        self.window.animation_time_step = 1.0
        self.window.animation_frame_delay = 1.0 / fps
        self.window.set_on_animation_frame(self._on_time)
        self.window.add_action("Previous frame", lambda _vis: self.step(-1))
        self.window.add_action("Next frame", lambda _vis: self.step(1))
        self.shown = -1
        self.shown_labels: list[str] = []
        self.window.setup_camera(60.0, [15.0, 0.0, 0.0], [-25.0, 0.0, 15.0], [0.0, 0.0, 1.0])
        self.show(0)

    def __len__(self) -> int:
        return len(self.scenes)

    def _on_time(self, _vis, time: float) -> None:
        self._update_labels(int(round(time)))

    def _update_labels(self, index: int) -> None:
        index = min(max(index, 0), len(self.scenes) - 1)
        if index == self.shown:
            return
        self.window.clear_3d_labels()
        scene = self.scenes[index]
        self.shown_labels = [lab.text for lab in score_labels(scene, self.opts)]
        for lab in score_labels(scene, self.opts):
            self.window.add_3d_label(lab.position, lab.text)
        self.window.title = frame_caption(scene, self.opts)
        self.shown = index

    def show(self, index: int) -> None:
        """Show frame ``index`` (clamped to the selection)."""
        index = min(max(int(index), 0), len(self.scenes) - 1)
        self.window.current_time = float(index)  # calls _on_time through the visualizer
        self._update_labels(index)

    def step(self, delta: int) -> None:
        self.show(self.shown + delta)


def run_interactive(scenes: Sequence[SceneFrame], opts: SceneOptions, title: str = "detections",
                    fps: float = 10.0) -> None:
    """Open the viewer window and block until it is closed."""
    if not display_available():
        raise NoDisplayError(NO_DISPLAY_MESSAGE)
    import open3d.visualization.gui as gui

    app = gui.Application.instance
    app.initialize()
    viewer = SequenceViewer(scenes, opts, title=title, fps=fps)
    app.add_window(viewer.window)
    app.run()


__all__ = ["NO_DISPLAY_MESSAGE", "NoDisplayError", "display_available", "SequenceViewer", "run_interactive"]
