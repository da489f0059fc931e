"""Randomized tracking cases for the metric tests: objects moving through sequences, predictions with id
switches, fragmentations, occlusion gaps, duplicate ids, false positives and jittered boxes."""

from __future__ import annotations

import numpy as np

from detector.eval.submission import FrameObjects


def _frame(boxes, types, ids, scores=None, level=None):
    n = len(types)
    return FrameObjects(np.asarray(boxes, float).reshape(-1, 7), np.asarray(types, np.int64),
                        np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32),
                        np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, np.int64),
                        np.asarray([str(i) for i in ids], dtype=object),
                        np.zeros(n, np.int64) if level is None else np.asarray(level, np.int64))


def random_sequences(seed: int, num_sequences: int = 3, num_frames: int = 12, num_objects: int = 8,
                     crowded: bool = False) -> tuple[dict, dict]:
    """``(gt_frames, pred_frames)`` keyed ``(context, timestamp)`` as ``objects_to_frames(tracking=True)``
    makes them; boxes are float32-exact (the official op reads float32). ``crowded``: objects packed close
    so that predictions overlap several ground truths."""
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    sizes = {1: (4.5, 2.0, 1.6), 2: (0.8, 0.8, 1.8), 3: (0.6, 0.6, 2.0), 4: (1.8, 0.7, 1.7)}
    for s in range(num_sequences):
        ctx = f"seq{seed}_{s}"
        spread = 12.0 if crowded else 70.0
        types = rng.integers(1, 5, num_objects)
        start = rng.uniform(-spread, spread, (num_objects, 2))
        vel = rng.normal(0, 1.0, (num_objects, 2))
        heading = rng.uniform(-np.pi, np.pi, num_objects)
        pid = np.arange(num_objects) + 100 * s  # the prediction id of each object, switched below
        next_id = 1000 * (s + 1)
        present_from = rng.integers(0, num_frames // 2, num_objects)
        present_to = rng.integers(num_frames // 2, num_frames + 1, num_objects)
        for f in range(num_frames):
            ts = 1_000_000 + 100_000 * f
            if rng.random() < 0.2 and num_objects >= 2:  # an id switch between two objects
                a, b = rng.choice(num_objects, 2, replace=False)
                pid[a], pid[b] = pid[b], pid[a]
            if rng.random() < 0.2:  # a fragmentation: one object gets a fresh id
                pid[rng.integers(num_objects)] = next_id
                next_id += 1
            g_boxes, g_types, g_ids, g_lvl = [], [], [], []
            p_boxes, p_types, p_ids, p_scores = [], [], [], []
            for o in range(num_objects):
                if not present_from[o] <= f < present_to[o]:
                    continue
                xy = start[o] + vel[o] * 0.1 * f
                box = [xy[0], xy[1], 1.0, *sizes[int(types[o])], heading[o]]
                g_boxes.append(box)
                g_types.append(types[o])
                g_ids.append(f"gt{s}_{o}")
                g_lvl.append(rng.choice([0, 1, 2]))
                if rng.random() < 0.2:  # occluded: missed this frame
                    continue
                jit = np.r_[rng.normal(0, 0.04 if rng.random() < 0.8 else 0.4, 3), rng.normal(0, 0.02, 3),
                            rng.normal(0, 0.03)]
                p_boxes.append(np.asarray(box) + jit)
                p_types.append(types[o] if rng.random() < 0.95 else rng.integers(1, 5))
                p_ids.append(pid[o])
                p_scores.append(rng.random())
                if rng.random() < 0.08:  # a duplicate id in this frame
                    p_boxes.append(np.asarray(box) + rng.normal(0, 0.05, 7) * [1, 1, 0.2, 0.2, 0.2, 0.2, 0.2])
                    p_types.append(types[o])
                    p_ids.append(pid[rng.integers(num_objects)] if rng.random() < 0.5 else pid[o])
                    p_scores.append(rng.random())
            for _ in range(rng.poisson(1.0)):  # false positives, ids of their own or borrowed
                p_boxes.append([*rng.uniform(-spread, spread, 2), 1.0, *sizes[int(rng.integers(1, 5))],
                                rng.uniform(-np.pi, np.pi)])
                p_types.append(rng.integers(1, 5))
                p_ids.append(next_id if rng.random() < 0.7 else pid[rng.integers(num_objects)])
                next_id += 1
                p_scores.append(rng.random())
            if g_boxes:
                gb = np.asarray(g_boxes, np.float32).astype(np.float64)
                gt[(ctx, ts)] = _frame(gb, g_types, g_ids, level=g_lvl)
            if p_boxes:
                pb = np.asarray(p_boxes, np.float32).astype(np.float64)
                pb[:, 3:6] = np.abs(pb[:, 3:6]) + 0.1
                pred[(ctx, ts)] = _frame(pb, p_types, p_ids, scores=np.round(p_scores, 2))
    return gt, pred
