"""``python -m detector.visualize``: look at a segment, its labels and the detector's boxes.

    python -m detector.visualize input=data/x/validation/SEG predictions=predictions.bin
    python -m detector.visualize input=SEG.tfrecord headless=true out=frame.png frame=10
    python -m detector.visualize input=SEG headless=true out=segment.gif frames=[0,40]

Bad inputs end with a one-line message on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

from detector.openmp import prefer_passive_wait

prefer_passive_wait()  # before torch loads, through the imports below (see detector/openmp.py)

import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import hydra
from omegaconf import DictConfig

from detector import CONFIG_DIR
from detector.errors import user_errors
from detector.output_paths import check_not_input
from detector.viz import sources
from detector.viz.camera import birds_eye_camera, chase_camera
from detector.viz.headless import check_output_path, render_scenes, write_images
from detector.viz.interactive import NO_DISPLAY_MESSAGE, NoDisplayError, ViewOptions, display_available, run_interactive
from detector.viz.loader import SceneLoader
from detector.viz.scene import SceneOptions
from detector.viz.sources import VisualizeInputError


@dataclass
class VisualizeResult:
    mode: str  # "png" | "gif" | "mp4" | "interactive"
    out: Path | None
    frames: int
    seconds: float


def scene_options(cfg: DictConfig) -> SceneOptions:
    vr = cfg.value_range
    return SceneOptions(
        color_by=cfg.color_by, cmap=cfg.cmap, value_range=tuple(vr) if vr is not None else None,
        max_points=cfg.max_points, show_gt=cfg.show_gt, show_pred=cfg.show_pred,
        show_scores=cfg.show_scores and cfg.labels != "off", show_state=cfg.show_state,
        score_threshold=cfg.score_threshold, point_size=cfg.point_size, line_width=cfg.line_width,
        classes=tuple(cfg.classes) if cfg.classes is not None else None,
        max_labels=int(cfg.max_labels) if cfg.labels == "nearest" else None)


def view_options(cfg: DictConfig, title: str) -> ViewOptions:
    return ViewOptions(
        title=title, width=cfg.width, height=cfg.height, fps=cfg.fps, camera=cfg.camera, range_m=cfg.range_m,
        follow=cfg.follow, play=cfg.play, quit_at_end=cfg.quit_at_end,
        trace=Path(cfg.trace) if cfg.trace else None,
        label_mode=cfg.labels if cfg.show_scores else "off", nearest_labels=int(cfg.max_labels))


def frame_range(cfg: DictConfig) -> tuple[int, int | None]:
    if cfg.frames is None:
        return 0, None
    fr = list(cfg.frames)
    if len(fr) != 2:
        raise VisualizeInputError(f"frames={fr}: expected [start, stop] (stop may be null)")
    return int(fr[0]), (None if fr[1] is None else int(fr[1]))


def _check_options(cfg: DictConfig) -> None:
    if cfg.renderer not in ("open3d", "matplotlib"):
        raise VisualizeInputError(f"renderer={cfg.renderer}: expected open3d or matplotlib")
    if cfg.camera not in ("bev", "chase"):
        raise VisualizeInputError(f"camera={cfg.camera}: expected bev or chase")
    if cfg.renderer == "matplotlib" and cfg.camera != "bev":
        raise VisualizeInputError("renderer=matplotlib draws the bird's-eye view only (camera=bev)")
    if cfg.show_state and not cfg.ckpt_path:
        raise VisualizeInputError("show_state=true shows the running detector's state: it needs ckpt_path=")
    if cfg.width < 16 or cfg.height < 16:
        raise VisualizeInputError(f"image size {cfg.width}x{cfg.height}: at least 16x16")
    if cfg.labels not in ("nearest", "all", "off"):
        raise VisualizeInputError(f"labels={cfg.labels}: expected nearest, all or off")
    if cfg.max_labels < 0 or cfg.readahead < 0:
        raise VisualizeInputError("max_labels and readahead must be >= 0")
    if cfg.fps <= 0:
        raise VisualizeInputError(f"fps={cfg.fps}: must be positive")


def visualize(cfg: DictConfig) -> VisualizeResult:
    _check_options(cfg)
    headless = bool(cfg.headless)
    if headless and not cfg.out:
        raise VisualizeInputError("headless=true needs out=FILE.png (one frame) or out=FILE.gif|.mp4")
    if cfg.out and not headless:
        raise VisualizeInputError(f"out={cfg.out} is written by the offscreen renderer: add headless=true")
    if not headless and cfg.renderer == "matplotlib":
        raise VisualizeInputError("renderer=matplotlib renders to a file: add headless=true out=FILE.png")
    if headless:
        check_not_input(cfg.out, [cfg.input, cfg.predictions, cfg.ckpt_path], "out", "input/predictions/ckpt_path")
    out = check_output_path(cfg.out) if headless else None
    source = sources.open_source(cfg.input)
    predictions = sources.load_predictions(cfg.predictions) if cfg.predictions else None
    if not headless and not display_available():
        raise NoDisplayError(NO_DISPLAY_MESSAGE)
    start, stop = frame_range(cfg)
    opts = scene_options(cfg)
    state_voxels = (sources.STATE_VOXELS_READER or True) if cfg.show_state else None
    if not headless:
        # frames are read on demand while the window is open: nothing is read before it is drawn
        loader = SceneLoader(source, start, stop, predictions=predictions, ckpt_path=cfg.ckpt_path,
                             ckpt_loader=cfg.ckpt_loader, device=cfg.device, state_voxels=state_voxels,
                             readahead=cfg.readahead)
        t0 = time.perf_counter()
        with loader:
            viewer = run_interactive(loader, opts, view_options(cfg, source.name))
        return VisualizeResult("interactive", None, viewer.drawn_count, time.perf_counter() - t0)

    single = out is not None and out.suffix.lower() == ".png"
    trail_frames = int(cfg.get("trail_frames", 10))
    if trail_frames < 0:
        raise VisualizeInputError(f"trail_frames={trail_frames}: expected a whole number of frames >= 0")
    if single:
        # a temporal detector needs the frames before the shown one: stream from `start` on
        # (and tracked predictions the frames of their trails)
        trail_start = max(0, cfg.frame - trail_frames) if predictions is not None else cfg.frame
        start, stop = (min(start, cfg.frame) if cfg.ckpt_path else trail_start), cfg.frame + 1
    scenes = sources.iter_scene_frames(
        source, start, stop, predictions=predictions, ckpt_path=cfg.ckpt_path, ckpt_loader=cfg.ckpt_loader,
        device=cfg.device, state_voxels=state_voxels, trail_frames=trail_frames)
    if single:
        scenes = islice(scenes, stop - start - 1, None)
    t0 = time.perf_counter()
    if cfg.renderer == "matplotlib":
        from detector.viz.bev import BevFraming, render_bev_scenes

        images = render_bev_scenes(scenes, opts, BevFraming(cfg.width, cfg.height, cfg.range_m))
    else:
        camera = (birds_eye_camera(cfg.width, cfg.height, cfg.range_m) if cfg.camera == "bev"
                  else chase_camera(cfg.width, cfg.height))
        images = render_scenes(scenes, camera, opts)
    count = write_images(out, images, fps=cfg.fps)
    return VisualizeResult(out.suffix.lower().lstrip("."), out, count, time.perf_counter() - t0)


@hydra.main(config_path=CONFIG_DIR, config_name="visualize", version_base="1.3")
@user_errors(prefix="visualize")
def main(cfg: DictConfig) -> None:
    if cfg.renderer == "open3d":
        import open3d as o3d

        # its notices (e.g. the headless fallback when there is no X server) are not errors
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    result = visualize(cfg)
    if result.out is not None:
        print(f"wrote {result.out} ({result.frames} frame{'s' if result.frames != 1 else ''}, "
              f"{result.seconds:.1f} s)")


if __name__ == "__main__":
    main()
