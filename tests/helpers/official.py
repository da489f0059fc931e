"""Bridge to the official TensorFlow metrics op, for cross-checks and benchmarks only.

The op lives in ``.venv-official`` (``scripts/setup_official.sh``): TensorFlow and its numpy pin
cannot share the project's venv. :func:`run_official_op` writes the inputs to an ``.npz``, runs this
file there as a script (``python tests/helpers/official.py IN.npz OUT.npz``, which imports only
numpy besides TensorFlow and the Waymo package) and reads the results back.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]  # runs as a script in .venv-official too: no package imports
#: The interpreter of the venv that has TensorFlow and the official package (``scripts/setup_official.sh``);
#: ``DETECTOR_OFFICIAL_PYTHON`` points elsewhere.
OFFICIAL_PYTHON = Path(os.environ.get("DETECTOR_OFFICIAL_PYTHON", REPO_ROOT / ".venv-official" / "bin" / "python"))


def official_available() -> bool:
    return OFFICIAL_PYTHON.exists()


@dataclass(frozen=True)
class ObjectArrays:
    """Objects of many frames as flat arrays, the op's input layout."""

    boxes: np.ndarray  # (N, 7)
    types: np.ndarray  # (N,)
    frame_ids: np.ndarray  # (N,) int64
    scores: np.ndarray | None = None  # (N,), predictions only
    overlap_nlz: np.ndarray | None = None  # (N,) bool, predictions only
    difficulty: np.ndarray | None = None  # (N,), ground truth only (1 or 2)


@dataclass(frozen=True)
class OfficialResult:
    names: list[str]
    ap: np.ndarray  # (B,)
    aph: np.ndarray  # (B,)
    pr: np.ndarray  # (B, C, 5): precision, recall, tp, fp, fn
    pr_ha: np.ndarray  # (B, C, 2): precision_ha, recall_ha
    seconds: float  # wall time of the op alone
    peak_rss_mib: float  # peak resident memory of the op's process

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {n: {"AP": float(a), "APH": float(h)} for n, a, h in zip(self.names, self.ap, self.aph)}


def official_inputs(gt_frames: dict, pred_frames: dict) -> tuple[ObjectArrays, ObjectArrays]:
    """Flat op inputs from ``{frame key: FrameObjects}`` maps, with the official tool's ground-truth
    rules applied (``num_points <= 0`` dropped; unset difficulty -> LEVEL_2 at <= 5 points)."""
    keys = sorted(set(gt_frames) | set(pred_frames))

    def flat(frames, is_gt):
        parts = [(i, frames[k]) for i, k in enumerate(keys) if k in frames]
        if not parts:
            z = np.zeros(0)
            return ObjectArrays(np.zeros((0, 7)), z.astype(np.int64), z.astype(np.int64), z.astype(np.float32),
                                z.astype(bool), z.astype(np.int64))
        ids = np.concatenate([np.full(len(f.types), i, np.int64) for i, f in parts])
        cat = {name: np.concatenate([getattr(f, name) for _, f in parts])
               for name in ("boxes", "types", "scores", "overlap_nlz", "num_points", "difficulty")}
        if not is_gt:
            return ObjectArrays(cat["boxes"], cat["types"], ids, cat["scores"], cat["overlap_nlz"])
        keep = cat["num_points"] > 0
        diff = np.where(cat["difficulty"] == 0, np.where(cat["num_points"] <= 5, 2, 1), cat["difficulty"])
        return ObjectArrays(cat["boxes"][keep], cat["types"][keep], ids[keep], difficulty=diff[keep])

    return flat(gt_frames, True), flat(pred_frames, False)


def run_official_op(gt: ObjectArrays, pred: ObjectArrays, config, timeout: float | None = None) -> OfficialResult:
    """Run ``py_metrics_ops.detection_metrics`` in ``.venv-official`` on the given arrays."""
    if not official_available():
        raise FileNotFoundError(f"{OFFICIAL_PYTHON} not found: run scripts/setup_official.sh")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            src,
            pred_bbox=np.asarray(pred.boxes, np.float32).reshape(-1, 7),
            pred_type=np.asarray(pred.types, np.uint8),
            pred_score=np.asarray(pred.scores, np.float32),
            pred_frame_id=np.asarray(pred.frame_ids, np.int64),
            pred_nlz=(np.zeros(len(pred.types), bool) if pred.overlap_nlz is None
                      else np.asarray(pred.overlap_nlz, bool)),
            gt_bbox=np.asarray(gt.boxes, np.float32).reshape(-1, 7),
            gt_type=np.asarray(gt.types, np.uint8),
            gt_frame_id=np.asarray(gt.frame_ids, np.int64),
            gt_difficulty=np.asarray(gt.difficulty, np.uint8),
            config=np.frombuffer(config.SerializeToString(), np.uint8),
        )
        out = _run_official(src, dst, timeout)
        return OfficialResult(
            names=[str(n) for n in out["names"]], ap=out["ap"], aph=out["aph"], pr=out["pr"],
            pr_ha=out["pr_ha"], seconds=float(out["seconds"]), peak_rss_mib=float(out["peak_rss_mib"]),
        )


def _run_official(src: Path, dst: Path, timeout: float | None, **env_extra: str) -> dict[str, np.ndarray]:
    """This file run by ``.venv-official``'s Python on the inputs in ``src``; the arrays it wrote to ``dst``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    proc = subprocess.run([str(OFFICIAL_PYTHON), str(Path(__file__).resolve()), str(src), str(dst)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"official op failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    with np.load(dst) as out:
        return {k: out[k] for k in out.files}


@dataclass(frozen=True)
class TrackArrays:
    """Objects of many frames of many sequences as flat arrays, the tracking op's input layout."""

    boxes: np.ndarray  # (N, 7)
    types: np.ndarray  # (N,)
    frame_ids: np.ndarray  # (N,) int64, e.g. the timestamps
    sequence_ids: np.ndarray  # (N,) str
    object_ids: np.ndarray  # (N,) int64
    scores: np.ndarray | None = None  # predictions only
    overlap_nlz: np.ndarray | None = None  # predictions only


@dataclass(frozen=True)
class OfficialTrackingResult:
    names: list[str]
    values: np.ndarray  # (B, 6): MOTA, MOTP, MISS, MISMATCH, FP, score cutoff
    seconds: float

    def as_dict(self) -> dict[str, dict[str, float]]:
        keys = ("MOTA", "MOTP", "MISS", "MISMATCH", "FP")
        return {n: dict(zip(keys, map(float, v[:5]))) for n, v in zip(self.names, self.values)}


def tracking_inputs(gt_frames: dict, pred_frames: dict) -> tuple[TrackArrays, TrackArrays]:
    """Flat tracking-op inputs from ``{(context, timestamp): FrameObjects}`` maps read with ids
    (``objects_to_frames(..., tracking=True)``); string ids become integers, one code per string."""
    codes: dict[str, int] = {}

    def flat(frames, is_gt):
        keys = sorted(frames)
        n = sum(len(frames[k].types) for k in keys)
        if n == 0:
            return TrackArrays(np.zeros((0, 7)), np.zeros(0, np.int64), np.zeros(0, np.int64),
                               np.zeros(0, dtype=str), np.zeros(0, np.int64), np.zeros(0, np.float32),
                               np.zeros(0, bool))
        f = [frames[k] for k in keys]
        ids = np.array([codes.setdefault(str(x), len(codes)) for fr in f for x in fr.ids], np.int64)
        seq = np.concatenate([np.full(len(fr.types), k[0], dtype=object) for k, fr in zip(keys, f)]).astype(str)
        ts = np.concatenate([np.full(len(fr.types), k[1], np.int64) for k, fr in zip(keys, f)])
        boxes = np.concatenate([fr.boxes for fr in f])
        types = np.concatenate([fr.types for fr in f])
        if is_gt:
            return TrackArrays(boxes, types, ts, seq, ids)
        return TrackArrays(boxes, types, ts, seq, ids, np.concatenate([fr.scores for fr in f]),
                           np.concatenate([fr.overlap_nlz for fr in f]))

    return flat(gt_frames, True), flat(pred_frames, False)


def run_official_tracking_op(gt: TrackArrays, pred: TrackArrays, config,
                             timeout: float | None = None) -> OfficialTrackingResult:
    """Run ``py_metrics_ops.tracking_metrics`` in ``.venv-official`` on the given arrays (every ground
    truth with difficulty unset: the op cannot take tracking difficulty)."""
    if not official_available():
        raise FileNotFoundError(f"{OFFICIAL_PYTHON} not found: run scripts/setup_official.sh")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            src,
            kind=np.array("tracking"),
            pred_bbox=np.asarray(pred.boxes, np.float32).reshape(-1, 7),
            pred_type=np.asarray(pred.types, np.uint8),
            pred_score=np.asarray(pred.scores, np.float32),
            pred_frame_id=np.asarray(pred.frame_ids, np.int64),
            pred_sequence_id=np.asarray(pred.sequence_ids, str),
            pred_object_id=np.asarray(pred.object_ids, np.int64),
            pred_nlz=(np.zeros(len(pred.types), bool) if pred.overlap_nlz is None
                      else np.asarray(pred.overlap_nlz, bool)),
            gt_bbox=np.asarray(gt.boxes, np.float32).reshape(-1, 7),
            gt_type=np.asarray(gt.types, np.uint8),
            gt_frame_id=np.asarray(gt.frame_ids, np.int64),
            gt_sequence_id=np.asarray(gt.sequence_ids, str),
            gt_object_id=np.asarray(gt.object_ids, np.int64),
            config=np.frombuffer(config.SerializeToString(), np.uint8),
        )
        out = _run_official(src, dst, timeout, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
        return OfficialTrackingResult([str(n) for n in out["names"]], out["values"], float(out["seconds"]))


def _main_tracking(data: dict, config, dst: str) -> None:  # runs inside .venv-official
    import tensorflow as tf
    from waymo_open_dataset.metrics.ops import py_metrics_ops
    from waymo_open_dataset.metrics.python import config_util_py

    start = time.perf_counter()
    out = py_metrics_ops.tracking_metrics(
        prediction_bbox=tf.constant(data["pred_bbox"]),
        prediction_type=tf.constant(data["pred_type"]),
        prediction_score=tf.constant(data["pred_score"]),
        prediction_frame_id=tf.constant(data["pred_frame_id"]),
        prediction_sequence_id=tf.constant(data["pred_sequence_id"].astype(object).astype(bytes)),
        prediction_object_id=tf.constant(data["pred_object_id"]),
        prediction_overlap_nlz=tf.constant(data["pred_nlz"]),
        ground_truth_bbox=tf.constant(data["gt_bbox"]),
        ground_truth_type=tf.constant(data["gt_type"]),
        ground_truth_frame_id=tf.constant(data["gt_frame_id"]),
        ground_truth_sequence_id=tf.constant(data["gt_sequence_id"].astype(object).astype(bytes)),
        ground_truth_object_id=tf.constant(data["gt_object_id"]),
        ground_truth_difficulty=tf.zeros(len(data["gt_type"]), tf.uint8),
        config=config.SerializeToString(),
    )
    seconds = time.perf_counter() - start
    values = np.stack([t.numpy() for t in out[:6]], axis=1)
    np.savez(dst, names=np.array(config_util_py.get_breakdown_names_from_config(config)), values=values,
             seconds=seconds)


def _main(src: str, dst: str) -> None:  # runs inside .venv-official
    import tensorflow as tf
    from waymo_open_dataset.metrics.ops import py_metrics_ops
    from waymo_open_dataset.metrics.python import config_util_py
    from waymo_open_dataset.protos import metrics_pb2

    data = dict(np.load(src))
    config = metrics_pb2.Config()
    config.ParseFromString(data.pop("config").tobytes())
    if "kind" in data and str(data["kind"]) == "tracking":
        _main_tracking(data, config, dst)
        return
    start = time.perf_counter()
    ap, aph, _, pr, pr_ha, _, _ = py_metrics_ops.detection_metrics(
        prediction_bbox=tf.constant(data["pred_bbox"]),
        prediction_type=tf.constant(data["pred_type"]),
        prediction_score=tf.constant(data["pred_score"]),
        prediction_frame_id=tf.constant(data["pred_frame_id"]),
        prediction_overlap_nlz=tf.constant(data["pred_nlz"]),
        ground_truth_bbox=tf.constant(data["gt_bbox"]),
        ground_truth_type=tf.constant(data["gt_type"]),
        ground_truth_frame_id=tf.constant(data["gt_frame_id"]),
        ground_truth_difficulty=tf.constant(data["gt_difficulty"]),
        config=config.SerializeToString(),
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    np.savez(dst, names=np.array(config_util_py.get_breakdown_names_from_config(config)), ap=ap.numpy(),
             aph=aph.numpy(), pr=pr.numpy(), pr_ha=pr_ha.numpy(), seconds=seconds, peak_rss_mib=peak)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: .venv-official/bin/python detector/eval/official.py IN.npz OUT.npz")
    _main(sys.argv[1], sys.argv[2])
