"""Life cycle: which unmatched detections start tracks, which tracks die."""

from __future__ import annotations

import numpy as np


def births(scores: np.ndarray, unmatched: np.ndarray, birth_score: float) -> np.ndarray:
    """The unmatched detections (indices) confident enough to start a track."""
    return unmatched[scores[unmatched] >= birth_score]


def survivors(last_seen_s: np.ndarray, now_s: float, max_coast_s: float) -> np.ndarray:
    """Tracks kept: seen within ``max_coast_s`` seconds (coasting through a short occlusion)."""
    return (now_s - last_seen_s) <= max_coast_s + 1e-6
