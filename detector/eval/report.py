"""Reports of Waymo metrics: the AP/APH table printed by the entry points, precision/recall plots."""

from __future__ import annotations

import os

from detector.atomic import atomic_path
from detector.eval.waymo_metrics import PRCurve

__all__ = ["TRACKING_COLUMNS", "format_table", "plot_pr_curves"]

#: The columns of the tracking table (``detector.eval.tracking_metrics``).
TRACKING_COLUMNS = ("MOTA", "MOTP", "MISS", "MISMATCH", "FP")


def _split(name: str) -> tuple[str, ...]:
    """``OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1`` -> (VEHICLE, LEVEL_1); ranges keep their interval."""
    for prefix in ("OBJECT_TYPE_TYPE_", "RANGE_TYPE_"):
        if name.startswith(prefix):
            rest, level = name[len(prefix):].rsplit("_", 2)[0], "_".join(name.rsplit("_", 2)[1:])
            return tuple(rest.split("_", 1)) + (level,)
    return (name,)


def format_table(results: dict[str, dict[str, float]], columns: tuple[str, ...] = ("AP", "APH")) -> str:
    """Class x level x ``columns`` (AP/APH; the tracking metrics: ``TRACKING_COLUMNS``), then class x range
    x level, then any other breakdown."""
    groups = {"OBJECT_TYPE_": ("class", "level"), "RANGE_": ("class", "range", "level"), "": ("breakdown",)}
    lines = []
    taken: set[str] = set()
    for prefix, header in groups.items():
        rows = [(_split(n) if prefix else (n,), v) for n, v in results.items()
                if n.startswith(prefix) and n not in taken]
        taken.update(n for n in results if n.startswith(prefix))
        if not rows:
            continue
        widths = [max(len(h), *(len(r[0][i]) for r in rows)) + 2 for i, h in enumerate(header)]
        cw = max(8, *(len(c) + 2 for c in columns))
        lines.append("".join(f"{h:<{w}}" for h, w in zip(header, widths)) + "".join(f"{c:>{cw}}" for c in columns))
        for cols, v in rows:
            lines.append("".join(f"{c:<{w}}" for c, w in zip(cols, widths))
                         + "".join(f"{v[c]:>{cw}.4f}" for c in columns))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_pr_curves(curves: dict[str, PRCurve], path: str | os.PathLike) -> None:
    """One panel per class (OBJECT_TYPE breakdowns), one line per difficulty level; atomic write."""
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    prefix = "OBJECT_TYPE_TYPE_"
    by_class: dict[str, list[PRCurve]] = {}
    for name, curve in curves.items():
        if name.startswith(prefix):
            by_class.setdefault(name[len(prefix):].rsplit("_LEVEL_", 1)[0], []).append(curve)
    if not by_class:
        raise ValueError("no OBJECT_TYPE breakdown to plot")
    fig = Figure(figsize=(4 * len(by_class), 4))
    axes = fig.subplots(1, len(by_class), squeeze=False)
    for ax, (cls, cls_curves) in zip(axes[0], by_class.items()):
        for c in cls_curves:
            level = c.name.rsplit("_", 2)[-2:]
            ax.plot(c.recall, c.precision, label=f"{'_'.join(level)}  AP {c.ap:.3f}")
            ax.plot(c.recall, c.precision_ha, linestyle="--", label=f"{'_'.join(level)}  APH {c.aph:.3f}")
        ax.set(title=cls, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=100)
