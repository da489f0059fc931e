"""Seeded synthetic detection cases for metric checks and benchmarks (no sensor data involved).

Ground truth per frame: Waymo-like sizes per type, positions up to ~90 m (all RANGE shards), some
in tight groups (so one prediction can overlap two ground truths), lidar point counts including
<= 0 and <= 5, and some explicit difficulty levels. Predictions: noisy copies of most ground truths
(some duplicated, some exact copies, some with the heading flipped by pi or the wrong type, some
degenerate), plus false positives; a few overlap no-label zones. Some frames are empty or
one-sided. Generated in chunks of frames, so a full validation split never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Mean (length, width, height) and probability per Label.Type 1..4.
_SIZES = np.array([[4.6, 2.0, 1.7], [0.9, 0.9, 1.75], [0.7, 0.25, 0.8], [1.8, 0.8, 1.75]])
_TYPE_P = np.array([0.5, 0.35, 0.08, 0.07])


@dataclass
class FrameCase:
    """One frame's ground truth and predictions, in the argument order of ``WaymoMetrics.add_frame``."""

    key: tuple[str, int]
    gt_boxes: np.ndarray
    gt_types: np.ndarray
    gt_num_points: np.ndarray
    gt_difficulty: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_types: np.ndarray
    pred_overlap_nlz: np.ndarray

    def args(self) -> tuple:
        return (self.key, self.gt_boxes, self.gt_types, self.gt_num_points, self.gt_difficulty,
                self.pred_boxes, self.pred_scores, self.pred_types, self.pred_overlap_nlz)


def _boxes(rng, types, spread):
    n = len(types)
    r = spread * np.sqrt(rng.uniform(0.0, 1.0, n))
    a = rng.uniform(-np.pi, np.pi, n)
    dims = _SIZES[types - 1] * np.exp(rng.normal(0.0, 0.12, (n, 3)))
    z = rng.normal(0.0, 0.5, n) + dims[:, 2] * 0.5
    return np.c_[r * np.cos(a), r * np.sin(a), z, dims, rng.uniform(-np.pi, np.pi, n)]


def _chunk(rng, first_frame, n_frames, gt_mean, pred_mean, hard):
    n_gt = rng.poisson(gt_mean, n_frames)
    n_fp_target = rng.poisson(max(pred_mean - gt_mean, 0), n_frames)
    if hard:  # some empty and one-sided frames
        kind = rng.uniform(size=n_frames)
        n_gt[kind < 0.05] = 0
        n_fp_target[kind < 0.1] = 0
    g_frame = np.repeat(np.arange(n_frames), n_gt)
    g_types = rng.choice(4, size=len(g_frame), p=_TYPE_P) + 1
    g_boxes = _boxes(rng, g_types, 90.0)
    # Tight groups: a ground truth next to the previous one of the same frame.
    grouped = np.r_[False, (g_frame[1:] == g_frame[:-1]) & (rng.uniform(size=len(g_frame) - 1) < 0.12)]
    idx = np.nonzero(grouped)[0]
    g_types[idx] = g_types[idx - 1]
    g_boxes[idx, 3:6] = g_boxes[idx - 1, 3:6] * np.exp(rng.normal(0, 0.05, (len(idx), 3)))
    low = 0.15 if hard else 0.75  # hard: overlapping ground truths, several-to-several matchings
    step = rng.uniform(low, 1.05, len(idx)) * g_boxes[idx, 4]
    ang = g_boxes[idx - 1, 6] + np.pi / 2
    g_boxes[idx, :3] = g_boxes[idx - 1, :3] + np.c_[step * np.cos(ang), step * np.sin(ang), np.zeros(len(idx))]
    g_boxes[idx, 6] = g_boxes[idx - 1, 6] + rng.normal(0, 0.05, len(idx))
    g_points = np.where(rng.uniform(size=len(g_frame)) < 0.1, rng.integers(-1, 1, len(g_frame)),
                        rng.geometric(0.02, len(g_frame)))
    g_diff = np.where(rng.uniform(size=len(g_frame)) < 0.1, rng.integers(1, 3, len(g_frame)), 0)

    # Detections of ground truths: most once, some twice.
    det = rng.uniform(size=len(g_frame)) < 0.8
    src = np.nonzero(det)[0]
    src = np.r_[src, src[rng.uniform(size=len(src)) < 0.25]]
    p_boxes = g_boxes[src].copy()
    scale = p_boxes[:, 3:6]
    p_boxes[:, :2] += rng.normal(0, 0.08, (len(src), 2)) * scale[:, :2]
    p_boxes[:, 2] += rng.normal(0, 0.08, len(src)) * scale[:, 2]
    p_boxes[:, 3:6] *= np.exp(rng.normal(0, 0.07, (len(src), 3)))
    p_boxes[:, 6] += rng.normal(0, 0.15, len(src)) + np.pi * (rng.uniform(size=len(src)) < 0.1)
    p_types = g_types[src].copy()
    wrong = rng.uniform(size=len(src)) < 0.04
    p_types[wrong] = rng.integers(1, 5, wrong.sum())
    p_scores = rng.beta(5, 2, len(src))
    p_frame = g_frame[src]
    if hard:
        # Exact copies: ties in the matching; a copy turned by pi has the same footprint and
        # heading accuracy 0, so which of two tied copies matches shows in APH.
        exact = rng.uniform(size=len(src)) < 0.08
        p_boxes[exact] = g_boxes[src[exact]]
        p_boxes[exact, 6] += np.pi * (rng.uniform(size=exact.sum()) < 0.5)
        p_types[exact] = g_types[src[exact]]
        degenerate = rng.uniform(size=len(src)) < 0.01
        p_boxes[degenerate, 4] = 0.005
    # False positives.
    f_frame = np.repeat(np.arange(n_frames), n_fp_target)
    f_types = rng.choice(4, size=len(f_frame), p=_TYPE_P) + 1
    f_boxes = _boxes(rng, f_types, 90.0)
    p_boxes = np.r_[p_boxes, f_boxes]
    p_types = np.r_[p_types, f_types]
    p_scores = np.r_[p_scores, rng.beta(2, 5, len(f_frame))]
    p_frame = np.r_[p_frame, f_frame]
    p_nlz = rng.uniform(size=len(p_frame)) < 0.03
    if hard:
        p_scores[rng.uniform(size=len(p_scores)) < 0.02] = 1.0  # passes every cutoff

    # Per-frame order: shuffle so detections are not sorted by ground truth.
    order = np.lexsort((rng.uniform(size=len(p_frame)), p_frame))
    p_boxes, p_types, p_scores, p_frame, p_nlz = (p_boxes[order], p_types[order], p_scores[order], p_frame[order],
                                                  p_nlz[order])
    g_split = np.cumsum(np.bincount(g_frame, minlength=n_frames))[:-1]
    p_split = np.cumsum(np.bincount(p_frame, minlength=n_frames))[:-1]
    parts_g = [np.split(a, g_split) for a in (g_boxes, g_types, g_points, g_diff)]
    parts_p = [np.split(a, p_split) for a in (p_boxes, p_scores.astype(np.float32), p_types, p_nlz)]
    for i in range(n_frames):
        frame = first_frame + i
        yield FrameCase((f"synthetic_{frame // 200:05d}", 1_000_000 + 100_000 * (frame % 200)),
                        parts_g[0][i], parts_g[1][i], parts_g[2][i], parts_g[3][i],
                        parts_p[0][i], parts_p[1][i], parts_p[2][i], parts_p[3][i])


def synthetic_frames(num_frames: int, gt_per_frame: float = 60, pred_per_frame: float = 200, seed: int = 0,
                     hard: bool = False, chunk: int = 500) -> Iterator[FrameCase]:
    """Yield ``num_frames`` seeded frames; ``hard`` adds ties, degenerate boxes and empty frames."""
    rng = np.random.default_rng(seed)
    for start in range(0, num_frames, chunk):
        yield from _chunk(rng, start, min(chunk, num_frames - start), gt_per_frame, pred_per_frame, hard)
