"""What one shown frame is made of, and its Open3D geometries.

Everything is drawn in the vehicle frame of the shown frame (Waymo boxes ``(cx, cy, cz, length, width,
height, heading)``). A box is its 12 edges plus a heading marker: a line on the top face from the centre
to the middle of the front edge, and a cross on the front face. Ground truth is drawn with solid lines,
predictions dashed (each line cut into 4k+1 pieces, the even ones drawn: both ends and the middle show).

Broken data shows what it can: ``clean_scene`` drops points and boxes with non-finite values (one inf
point would otherwise make the renderer's scene bounds infinite, and nothing but the points is drawn)
and records what it dropped in ``SceneFrame.warnings``, shown in the caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from detector.boxes import CORNER_SIGNS, box_corners
from detector.data.frame import TYPE_NAMES, Frame

#: Ground-truth and predicted box colours per Waymo ``Label.Type`` (RGB in [0, 1]); 0 = other/unknown.
GT_COLORS = {
    0: (1.0, 1.0, 1.0),
    1: (0.10, 0.85, 0.10),  # vehicle: green
    2: (0.95, 0.85, 0.10),  # pedestrian: yellow
    3: (0.70, 0.45, 1.00),  # sign: lavender
    4: (0.10, 0.85, 0.85),  # cyclist: cyan
}
PRED_COLORS = {
    0: (0.85, 0.85, 0.85),
    1: (1.00, 0.20, 0.20),  # vehicle: red
    2: (1.00, 0.55, 0.00),  # pedestrian: orange
    3: (1.00, 0.30, 0.90),  # sign: magenta
    4: (0.25, 0.45, 1.00),  # cyclist: blue
}
STATE_COLOR = (0.55, 0.35, 1.0)
SHORT_NAMES = {1: "VEH", 2: "PED", 3: "SIGN", 4: "CYC"}

#: Corner order: bottom face (z-) then top face (z+); in each, front-left, front-right, rear-right,
#: rear-left (front = +x of the box, left = +y).
BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7]])
#: Edges of the top face (front, right, rear, left), as indices into ``BOX_EDGES``.
TOP_EDGES = (4, 5, 6, 7)
SEGMENTS_PER_BOX = len(BOX_EDGES) + 3


@dataclass
class PredictedBoxes:
    """Detections of one frame: ``boxes`` (K, 7) Waymo convention, ``types`` (K,), ``scores`` (K,); from a
    tracker, ``track_ids`` (K,) str and ``trails`` (K arrays (n, 3): the track's earlier centres, oldest
    first, in this frame's vehicle frame; see ``TrailMemory``)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))
    types: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    track_ids: np.ndarray | None = None
    trails: list | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 7)
        k = len(self.boxes)
        self.types = np.asarray(self.types, np.int64).reshape(k)
        self.scores = np.asarray(self.scores, np.float32).reshape(k)
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids).astype(str).reshape(k)
        if self.trails is not None and len(self.trails) != k:
            raise ValueError(f"{k} boxes but {len(self.trails)} trails")

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, keep: np.ndarray) -> PredictedBoxes:
        """The boxes selected by the mask ``keep``, with their ids and trails."""
        keep = np.asarray(keep, bool)
        return PredictedBoxes(self.boxes[keep], self.types[keep], self.scores[keep],
                              None if self.track_ids is None else self.track_ids[keep],
                              None if self.trails is None else [t for t, k in zip(self.trails, keep) if k])

    def above(self, threshold: float) -> PredictedBoxes:
        return self.subset(self.scores >= threshold)


class TrailMemory:
    """Short trails of tracked predictions: the world centres of each track id over the last ``length``
    frames of a segment, shown in each frame's vehicle frame. Feed it the frames in order."""

    def __init__(self, length: int = 10):
        self.length = int(length)
        self.segment: str | None = None
        self.index: int | None = None
        self.world: dict[str, list[np.ndarray]] = {}

    def add(self, scene: SceneFrame) -> SceneFrame:
        preds, frame = scene.predictions, scene.frame
        if preds is None or preds.track_ids is None or self.length <= 0:
            return scene
        if frame.segment != self.segment or self.index is None or frame.index != self.index + 1:
            self.world = {}  # a new segment, or a jump: trails start afresh
        self.segment, self.index = frame.segment, frame.index
        pose = np.asarray(frame.pose, np.float64)
        centres = preds.boxes[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
        inv = np.linalg.inv(pose)
        trails = []
        seen = {}
        for tid, c in zip(preds.track_ids.tolist(), centres):
            past = self.world.get(tid, [])
            trails.append((np.asarray(past).reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32))
            seen[tid] = (past + [c])[-self.length:]
        self.world = seen
        return replace(scene, predictions=replace(preds, trails=trails))


@dataclass
class StateVoxels:
    """Sites of the detector's temporal state: voxel centres (N, 3) in metres, vehicle frame."""

    centers: np.ndarray
    voxel_size: float | tuple[float, float, float]


@dataclass
class SceneFrame:
    """One shown frame: the LiDAR frame with its labels, optional predictions and state voxels.

    ``warnings``: what ``clean_scene`` dropped; ``error``: why the frame could not be read (the frame is
    then an empty placeholder with the segment, index and, where known, timestamp)."""

    frame: Frame
    predictions: PredictedBoxes | None = None
    state: StateVoxels | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class SceneOptions:
    color_by: str = "height"  # "height" | "intensity"
    cmap: str = "bone"
    value_range: tuple[float, float] | None = None  # colour map limits; None: height [-2, 4], intensity 1-99 %
    max_points: int | None = None  # random subsample (seeded) above this many points
    show_gt: bool = True
    show_pred: bool = True
    show_scores: bool = True
    show_state: bool = False
    score_threshold: float = 0.0
    point_size: float = 2.0
    line_width: float = 2.0  # on-screen pixels
    classes: tuple[int, ...] | None = None  # Waymo types shown (ground truth and predictions); None: all
    max_labels: int | None = None  # score labels of the nearest this many predictions; None: all
    dashed_predictions: bool = True

    def __post_init__(self) -> None:
        if self.color_by not in ("height", "intensity"):
            raise ValueError(f"color_by must be 'height' or 'intensity', got {self.color_by!r}")
        if self.classes is not None:
            self.classes = tuple(int(c) for c in self.classes)
        if self.max_labels is not None and self.max_labels < 0:
            raise ValueError(f"max_labels must be >= 0 or None, got {self.max_labels}")


@dataclass
class SceneGeometry:
    """A named Open3D geometry, the kind of material it takes ("points" or "lines") and its group."""

    name: str
    geometry: object
    kind: str
    group: str


@dataclass
class SceneLabel:
    position: np.ndarray  # (3,) metres, vehicle frame
    text: str
    color: tuple[float, float, float]


def box_segments(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes -> (M, 15, 2, 3) line segments: 12 edges, then the heading marker (top-centre to
    front-edge middle, and the two diagonals of the front face)."""
    corners = box_corners(boxes)
    edges = corners[:, BOX_EDGES]  # (M, 12, 2, 3)
    top_center = corners[:, 4:8].mean(axis=1)
    front_top_mid = 0.5 * (corners[:, 4] + corners[:, 5])
    marker = np.stack([
        np.stack([top_center, front_top_mid], axis=1),
        np.stack([corners[:, 0], corners[:, 5]], axis=1),
        np.stack([corners[:, 1], corners[:, 4]], axis=1),
    ], axis=1)
    return np.concatenate([edges, marker], axis=1)


def dashed(segments: np.ndarray, dash: float = 0.35) -> np.ndarray:
    """(S, 2, 3) line segments -> dashes (D, 2, 3): each segment cut into 4k+1 equal pieces about
    ``dash`` metres long (at least 5), the even pieces kept, so both ends and the middle are drawn."""
    segments = np.asarray(segments, np.float64).reshape(-1, 2, 3)
    if not len(segments):
        return segments
    length = np.linalg.norm(segments[:, 1] - segments[:, 0], axis=1)
    k = np.maximum(1, np.round(length / (4 * dash))).astype(np.int64)
    pieces = 4 * k + 1
    out = []
    for n in np.unique(pieces):
        sel = segments[pieces == n]
        t = np.arange(0, n, 2, dtype=np.float64) / n  # start of each kept piece
        a = sel[:, None, 0] + t[None, :, None] * (sel[:, None, 1] - sel[:, None, 0])
        b = a + (sel[:, None, 1] - sel[:, None, 0]) / n
        out.append(np.stack([a, b], axis=2).reshape(-1, 2, 3))
    return np.concatenate(out)


def class_colors(types: np.ndarray, palette: dict[int, tuple[float, float, float]]) -> np.ndarray:
    """(M,) Waymo types -> (M, 3) colours; unknown ids take the palette's entry 0."""
    return np.array([palette.get(int(t), palette[0]) for t in np.asarray(types).reshape(-1)],
                    np.float64).reshape(-1, 3)


def point_colors(points: np.ndarray, color_by: str = "height", cmap: str = "bone",
                 value_range: tuple[float, float] | None = None, dtype=np.float64) -> np.ndarray:
    """(N, >=4) points -> (N, 3) colours from z (``height``) or column 3 (``intensity``)."""
    if color_by == "height":
        values = points[:, 2]
        lo, hi = value_range if value_range is not None else (-2.0, 4.0)
    elif color_by == "intensity":
        values = points[:, 3]
        if value_range is not None:
            lo, hi = value_range
        elif len(values):
            lo, hi = np.percentile(values, [1, 99])
        else:
            lo, hi = 0.0, 1.0
    else:
        raise ValueError(f"color_by must be 'height' or 'intensity', got {color_by!r}")
    t = np.clip((values - lo) / max(float(hi - lo), 1e-9), 0.0, 1.0)
    return _colormap_table(cmap, np.dtype(dtype).str)[(t * (COLORMAP_LEVELS - 1) + 0.5).astype(np.intp)]


#: Colour-map entries looked up per point (a table, not the map, per point: 340k points take ~5 ms).
COLORMAP_LEVELS = 1024


@lru_cache(maxsize=16)
def _colormap_table(cmap: str, dtype: str) -> np.ndarray:
    from matplotlib import colormaps

    # the lower fifth of a dark map is near-black on the black background: start at 0.2
    table = colormaps[cmap](0.2 + 0.8 * np.linspace(0.0, 1.0, COLORMAP_LEVELS))[:, :3].astype(dtype)
    table.flags.writeable = False
    return table


def subsample_points(points: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    if max_points is None or len(points) <= max_points:
        return points
    keep = np.random.default_rng(seed).choice(len(points), size=max_points, replace=False)
    return points[np.sort(keep)]


def points_geometry(points: np.ndarray, colors: np.ndarray):
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)[:, :3]))
    pcd.colors = o3d.utility.Vector3dVector(np.asarray(colors, np.float64))
    return pcd


def box_lines(boxes: np.ndarray, colors: np.ndarray, dash: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """M boxes (edges and heading markers) in their colours (M, 3) -> line segments (S, 2, 3) and their
    colours (S, 3); ``dash``: each line as dashes (``dashed``)."""
    segs = box_segments(boxes)  # (M, 15, 2, 3)
    colors = np.asarray(colors, np.float64).reshape(-1, 3)
    if not dash:
        return segs.reshape(-1, 2, 3), np.repeat(colors, SEGMENTS_PER_BOX, axis=0)
    pieces = [dashed(segs[b]) for b in range(len(segs))]
    if not pieces:
        return np.zeros((0, 2, 3)), np.zeros((0, 3))
    color_rows = np.repeat(colors, [len(p) for p in pieces], axis=0)
    return np.concatenate(pieces), color_rows


def lines_geometry(segments: np.ndarray, colors: np.ndarray):
    """One LineSet of independent segments (S, 2, 3) with colours (S, 3)."""
    import open3d as o3d

    segments = np.asarray(segments, np.float64).reshape(-1, 2, 3)
    ls = o3d.geometry.LineSet()
    ls.points = o3d.utility.Vector3dVector(segments.reshape(-1, 3))
    ls.lines = o3d.utility.Vector2iVector(np.arange(2 * len(segments)).reshape(-1, 2))
    ls.colors = o3d.utility.Vector3dVector(np.asarray(colors, np.float64).reshape(-1, 3))
    return ls


def boxes_geometry(boxes: np.ndarray, colors: np.ndarray, dash: bool = False):
    """One LineSet for M boxes (edges and heading markers), each box in its colour (M, 3)."""
    return lines_geometry(*box_lines(boxes, colors, dash))


def state_geometry(coords_xyz: np.ndarray, voxel_size, color=STATE_COLOR, fill: float = 0.8):
    """Wireframe cubes at the temporal state's voxel centres (N, 3) metres, ``fill`` x the voxel size,
    as one LineSet: they show which cells the model remembers without hiding the points inside.

    (Wireframes rather than translucent cubes: Open3D's transparent shader crashes the software
    Vulkan renderer used for headless output.)"""
    import open3d as o3d

    centers = np.asarray(coords_xyz, np.float64).reshape(-1, 3)
    size = np.broadcast_to(np.asarray(voxel_size, np.float64), (3,)) * fill
    verts = (centers[:, None, :] + CORNER_SIGNS[None] * size).reshape(-1, 3)
    lines = (BOX_EDGES[None] + 8 * np.arange(len(centers))[:, None, None]).reshape(-1, 2)
    ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(verts), o3d.utility.Vector2iVector(lines))
    ls.paint_uniform_color(np.asarray(color, np.float64))
    return ls


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def clean_scene(scene: SceneFrame) -> SceneFrame:
    """``scene`` without points, boxes and state sites holding non-finite values; what was dropped is
    added to ``warnings``. Returns ``scene`` itself when everything is finite."""
    frame, warnings = scene.frame, list(scene.warnings)
    if (np.isfinite(frame.points.sum(dtype=np.float64)) and np.isfinite(frame.boxes.sum(dtype=np.float64))
            and (scene.predictions is None or np.isfinite(scene.predictions.boxes.sum(dtype=np.float64)
                                                          + scene.predictions.scores.sum(dtype=np.float64)))
            and (scene.state is None or np.isfinite(np.sum(scene.state.centers, dtype=np.float64)))):
        return scene  # a float64 sum of float32 values cannot overflow: it is finite iff all values are
    ok_points = np.isfinite(frame.points).all(axis=1)
    ok_boxes = np.isfinite(frame.boxes).all(axis=1)
    preds, state = scene.predictions, scene.state
    ok_preds = None if preds is None else np.isfinite(preds.boxes).all(axis=1) & np.isfinite(preds.scores)
    ok_state = None if state is None else np.isfinite(np.asarray(state.centers, np.float64)).all(axis=1)
    if (ok_points.all() and ok_boxes.all() and (ok_preds is None or ok_preds.all())
            and (ok_state is None or ok_state.all())):
        return scene
    if not ok_points.all():
        warnings.append(f"dropped {_plural(int((~ok_points).sum()), 'point')} with non-finite values")
    if not ok_boxes.all():
        warnings.append(f"dropped {_plural(int((~ok_boxes).sum()), 'ground-truth box')} with non-finite values")
    if ok_preds is not None and not ok_preds.all():
        warnings.append(f"dropped {_plural(int((~ok_preds).sum()), 'prediction')} with non-finite values")
        preds = preds.subset(ok_preds)
    if ok_state is not None and not ok_state.all():
        warnings.append(f"dropped {_plural(int((~ok_state).sum()), 'state site')} with non-finite values")
        state = StateVoxels(np.asarray(state.centers)[ok_state], state.voxel_size)
    frame = replace(frame, points=frame.points[ok_points], boxes=frame.boxes[ok_boxes],
                    types=frame.types[ok_boxes], ids=frame.ids[ok_boxes], num_points=frame.num_points[ok_boxes],
                    difficulty=frame.difficulty[ok_boxes],
                    nlz=None if frame.nlz is None else frame.nlz[ok_points])
    return SceneFrame(frame, preds, state, tuple(warnings), scene.error)


def visible_ground_truth(scene: SceneFrame, opts: SceneOptions) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (M, 7) and types (M,) of the ground truth shown (``show_gt``, class filter)."""
    frame = scene.frame
    if not opts.show_gt:
        return frame.boxes[:0], frame.types[:0]
    if opts.classes is None:
        return frame.boxes, frame.types
    keep = np.isin(frame.types, opts.classes)
    return frame.boxes[keep], frame.types[keep]


def build_scene(scene: SceneFrame, opts: SceneOptions) -> list[SceneGeometry]:
    """The geometries of one frame: points, ground truth, predictions (above the score threshold) and,
    when asked and present, the state voxels. Non-finite values are dropped first (``clean_scene``)."""
    scene = clean_scene(scene)
    frame = scene.frame
    out = []
    pts = subsample_points(frame.points, opts.max_points, seed=frame.index)
    out.append(SceneGeometry("points", points_geometry(
        pts, point_colors(pts, opts.color_by, opts.cmap, opts.value_range)), "points", "points"))
    gt_boxes, gt_types = visible_ground_truth(scene, opts)
    if len(gt_boxes):
        out.append(SceneGeometry("ground_truth", boxes_geometry(
            gt_boxes, class_colors(gt_types, GT_COLORS)), "lines", "ground truth"))
    preds = visible_predictions(scene, opts)
    if preds is not None and len(preds):
        out.append(SceneGeometry("predictions", boxes_geometry(
            preds.boxes, class_colors(preds.types, PRED_COLORS), dash=opts.dashed_predictions),
            "lines", "predictions"))
        segments, colors = trail_segments(preds)
        if len(segments):
            out.append(SceneGeometry("trails", lines_geometry(segments, colors), "lines", "predictions"))
    if opts.show_state and scene.state is not None and len(scene.state.centers):
        out.append(SceneGeometry("state", state_geometry(scene.state.centers, scene.state.voxel_size),
                                 "lines", "state"))
    return out


def trail_segments(preds: PredictedBoxes) -> tuple[np.ndarray, np.ndarray]:
    """Line segments (S, 2, 3) from each track's earlier centres to its box's centre, and their colours."""
    if preds.trails is None:
        return np.zeros((0, 2, 3)), np.zeros((0, 3))
    segs, cols = [], []
    for trail, box, t in zip(preds.trails, preds.boxes, preds.types):
        if not len(trail):
            continue
        path = np.vstack([trail, box[None, :3]])
        segs.append(np.stack([path[:-1], path[1:]], axis=1))
        cols.append(np.tile(PRED_COLORS.get(int(t), PRED_COLORS[0]), (len(path) - 1, 1)))
    if not segs:
        return np.zeros((0, 2, 3)), np.zeros((0, 3))
    return np.concatenate(segs), np.concatenate(cols)


def visible_predictions(scene: SceneFrame, opts: SceneOptions) -> PredictedBoxes | None:
    """Predictions shown: at or above the score threshold, of the shown classes."""
    if not opts.show_pred or scene.predictions is None:
        return None
    preds = scene.predictions.above(opts.score_threshold)
    if opts.classes is not None:
        preds = preds.subset(np.isin(preds.types, opts.classes))
    return preds


def score_labels(scene: SceneFrame, opts: SceneOptions, near: tuple[float, float] = (0.0, 0.0),
                 selected: int | None = None) -> list[SceneLabel]:
    """A label ``"VEH 0.87"`` (``"VEH 0.87 #12"`` with track id 12) above the top centre of shown
    predictions: the ``max_labels`` nearest to ``near`` (x, y metres; the ego by default), plus prediction
    ``selected`` (an index into ``visible_predictions``) whatever its distance."""
    preds = visible_predictions(scene, opts)
    if not opts.show_scores or preds is None or not len(preds):
        return []
    order = np.argsort(np.hypot(preds.boxes[:, 0] - near[0], preds.boxes[:, 1] - near[1]), kind="stable")
    chosen = set(order[:opts.max_labels].tolist() if opts.max_labels is not None else order.tolist())
    if selected is not None and 0 <= selected < len(preds):
        chosen.add(int(selected))
    labels = []
    for i in sorted(chosen):
        box, t, s = preds.boxes[i], preds.types[i], preds.scores[i]
        pos = np.array([box[0], box[1], box[2] + box[5] / 2], np.float64)
        track = "" if preds.track_ids is None else f" #{preds.track_ids[i]}"
        labels.append(SceneLabel(pos, f"{SHORT_NAMES.get(int(t), TYPE_NAMES.get(int(t), str(t)))} {s:.2f}{track}",
                                 PRED_COLORS.get(int(t), PRED_COLORS[0])))
    return labels


def frame_caption(scene: SceneFrame, opts: SceneOptions) -> str:
    """One line: segment, frame index, timestamp, counts; then any warning or the read error."""
    frame = scene.frame
    parts = [f"{frame.segment} #{frame.index}", f"t={frame.timestamp_micros}", f"{len(frame.points)} pts"]
    if opts.show_gt:
        parts.append(f"GT {len(visible_ground_truth(scene, opts)[0])}")
    preds = visible_predictions(scene, opts)
    if preds is not None:
        parts.append(f"pred {len(preds)}")
    if scene.error:
        parts.append(f"UNREADABLE: {scene.error}")
    parts.extend(f"WARNING: {w}" for w in scene.warnings)
    return "  ".join(parts)


__all__ = [
    "GT_COLORS", "PRED_COLORS", "STATE_COLOR", "BOX_EDGES", "TOP_EDGES", "SEGMENTS_PER_BOX",
    "PredictedBoxes", "TrailMemory", "trail_segments", "StateVoxels", "SceneFrame", "SceneOptions",
    "SceneGeometry", "SceneLabel",
    "box_corners", "box_segments", "dashed", "box_lines", "lines_geometry", "clean_scene",
    "visible_ground_truth", "class_colors", "point_colors", "subsample_points", "points_geometry",
    "boxes_geometry", "state_geometry", "build_scene", "visible_predictions", "score_labels",
    "frame_caption",
]
