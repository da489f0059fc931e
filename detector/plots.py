"""Learning curves from Lightning's CSV logs: train and validation loss and validation AP."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure

from detector.atomic import atomic_path

PANELS = (("train/loss_epoch", "train loss"), ("val/loss", "validation loss"),
          ("val/AP_vehicle_level_1", "validation AP vehicle L1"))


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger's metrics.csv -> {column: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for k, v in row.items():
                if k in ("step", "epoch") or v in ("", None):
                    continue
                val = float(v)
                if math.isfinite(val):
                    series.setdefault(k, []).append((step, val))
    return series


def plot_learning_curves(runs: Mapping[str, str | os.PathLike], out_png: str | os.PathLike) -> Path:
    """One figure, one panel per quantity, one line per run (``runs``: name -> metrics.csv)."""
    data = {name: read_metrics_csv(p) for name, p in runs.items()}
    # a bare Figure (no pyplot): no backend switch, no global figure registry to clean up
    fig = Figure(figsize=(5 * len(PANELS), 3.6))
    axes = fig.subplots(1, len(PANELS))
    for ax, (key, title) in zip(axes, PANELS):
        for name, series in data.items():
            pts = series.get(key) or (series.get("train/loss_step") if key == "train/loss_epoch" else None)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=100)
    return out_png
