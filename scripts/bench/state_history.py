"""What the temporal state contributes: the AP of every trained model of a paper-table run when its
state starts afresh every N frames of a segment, against the state carried through whole segments.

    .venv/bin/python scripts/bench/state_history.py --work-dir work/paper_table/full \
        --out docs/tables/state_history_full.md

N = 1 runs each frame alone (a recurrent model then sees no history; concat sees one sweep), N = the
training clip length gives each frame at most the history it had in training, ``carried`` is how the
table evaluates (``detector.evaluate``). A single-frame model must score the same in every column (a
check of the streaming code). Reads ``<work-dir>/<model>/result.json`` written by
``scripts/bench/paper_table.py``: the same checkpoint and evaluation overrides, so ``carried`` repeats
the table's number. Writes ``--out`` (markdown) and ``<out>.json``.

For a recurrent model it also reports what the carried state holds (``state_coverage``), averaged over
the streamed frames: the state's sites after each frame, the share of them where that frame has no
point (memory of occluded or moved objects, or ghosts), and per class the share of the frame's voxels
inside labelled boxes that the state keeps: an object whose voxels are not kept reaches the next frame
with no history, as if it were background.

Why it stays: what the carried state adds or costs, per model of a paper-table run; it found the state bound
and forgetting that the LSTM's defaults now use (docs/studies/lstm-state.md, docs/studies/forget-after.md).
Tested in tests/cli/test_paper_table.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (class, level) pairs reported, AP and APH each.
REPORTED = (("VEHICLE", 1), ("VEHICLE", 2))


def history_metrics(model, frames: list, reset_every: int | None) -> dict:
    """Waymo metrics of ``model`` streamed over ``frames`` with its state reset every ``reset_every``."""
    from detector.eval import WaymoMetrics
    from detector.streaming import stream_segments

    metrics = WaymoMetrics()
    for r in stream_segments(model, frames, "cpu", reset_every):
        metrics.add_result(r)
    return metrics.compute()


def _site_keys(indices, width: int):
    """One integer per (batch, z, y, x) site, so that two site lists compare with ``torch.isin``."""
    return ((indices[:, 0].long() * width + indices[:, 1]) * width + indices[:, 2]) * width + indices[:, 3]


def state_coverage(model, frames: list) -> dict | None:
    """What a recurrent model's carried state holds over ``frames`` (see the module docstring); None for
    a model without a recurrent state."""
    import torch

    from detector.boxes import points_in_boxes
    from detector.streaming import stream

    classes = {1: "vehicle", 2: "pedestrian", 4: "cyclist"}
    kept, unsupported, counted = [], [], {c: [0, 0] for c in classes.values()}
    for step in stream(model, frames, "cpu"):
        state = step.state.temporal
        if state is None:
            return None
        frame = step.frame
        voxels = model.voxelizer(frame.points, frame.batch_size).indices
        width = int(max(voxels.max(), state.sites.max())) + 1
        frame_keys, state_keys = _site_keys(voxels, width), _site_keys(state.sites, width)
        in_state = torch.isin(frame_keys, state_keys)
        kept.append(state.num_sites)
        unsupported.append(float((~torch.isin(state_keys, frame_keys)).float().mean()) if state.num_sites else 0.0)
        centres = model.voxelizer.centers(voxels)
        gt = frame.boxes[:, 0] == 0
        for type_id, name in classes.items():
            boxes = frame.boxes[gt & (frame.types == type_id), 1:]
            if len(boxes) == 0:
                continue
            inside = points_in_boxes(centres, boxes).any(dim=1)
            counted[name][0] += int((inside & in_state).sum())
            counted[name][1] += int(inside.sum())
    return {"state_sites": sum(kept) / len(kept), "unsupported": sum(unsupported) / len(unsupported),
            "object_voxels_kept": {n: (k / t if t else None) for n, (k, t) in counted.items()}}


def load_results(work_dir: Path, models: list[str] | None) -> dict[str, dict]:
    found = {p.parent.name: p for p in sorted(work_dir.glob("*/result.json"))}
    if not found:
        raise SystemExit(f"{work_dir}: no <model>/result.json (run scripts/bench/paper_table.py first)")
    names = models or list(found)
    missing = [m for m in names if m not in found]
    if missing:
        raise SystemExit(f"{work_dir}: no finished run of {missing[0]} (have {sorted(found)})")
    return {m: json.loads(found[m].read_text()) for m in names}


def run(work_dir: Path, models: list[str] | None, resets: list[int | None], max_frames: int | None = None) -> dict:
    from hydra.utils import instantiate
    from paper_table import compose

    from detector.checkpoints import load_checkpoint

    results = load_results(work_dir, models)
    first = next(iter(results.values()))
    cfg = compose("evaluate", first["eval_overrides"] + ["ckpt_path=unused"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    frames = []
    for f in datamodule.test_dataloader():
        frames.append(f)
        if max_frames and len(frames) >= max_frames:
            break
    out: dict = {"work_dir": str(work_dir), "frames": len(frames), "clip_length": int(cfg.data.clip_length),
                 "resets": resets, "models": {}}
    for name, result in results.items():
        model = load_checkpoint(result["checkpoint"], "cpu")
        rows = {}
        for n in resets:
            t0 = time.perf_counter()
            metrics = history_metrics(model, frames, n)
            rows[str(n)] = {f"{cls}_LEVEL_{lv}": metrics[f"OBJECT_TYPE_TYPE_{cls}_LEVEL_{lv}"] for cls, lv in REPORTED}
            print(f"[{name}] reset every {n or 'never'}: vehicle L1 AP "
                  f"{100 * rows[str(n)]['VEHICLE_LEVEL_1']['AP']:.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        out["models"][name] = rows
        coverage = state_coverage(model, frames)
        if coverage is not None:
            out.setdefault("state_coverage", {})[name] = coverage
    return out


def format_table(report: dict) -> str:
    resets = report["resets"]
    cols = [("carried" if n is None else ("alone (N=1)" if n == 1 else f"N={n}")) for n in resets]
    lines = []
    for cls, lv in REPORTED:
        for key in ("AP", "APH"):
            lines += [f"{cls.lower()} LEVEL_{lv} {key} (%), state reset every N frames:", "",
                      "| model | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
            for name, rows in report["models"].items():
                lines.append(f"| {name} | " + " | ".join(f"{100 * rows[str(n)][f'{cls}_LEVEL_{lv}'][key]:.1f}"
                                                       for n in resets) + " |")
            lines.append("")
    coverage = report.get("state_coverage") or {}
    if coverage:
        lines += ["What the carried state holds, mean over the frames (state sites after a frame; % of them where "
                  "that frame has no point; % of the frame's voxels in labelled boxes of each class that the state "
                  "keeps):", "",
                  "| model | state sites | without a point now | vehicle voxels kept | pedestrian | cyclist |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, c in coverage.items():
            kept = [("-" if c["object_voxels_kept"][n] is None else f"{100 * c['object_voxels_kept'][n]:.0f}")
                    for n in ("vehicle", "pedestrian", "cyclist")]
            lines.append(f"| {name} | {c['state_sites']:.0f} | {100 * c['unsupported']:.0f} | "
                         + " | ".join(kept) + " |")
        lines.append("")
    return "\n".join(lines)


def parse_resets(text: str) -> list[int | None]:
    out: list[int | None] = []
    for word in text.split(","):
        word = word.strip()
        if word in ("never", "carried", "none"):
            out.append(None)
            continue
        if not word.isdigit() or int(word) < 1:
            raise SystemExit(f"--resets: {word!r} is neither a whole number >= 1 nor 'never'")
        out.append(int(word))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", required=True, help="a paper_table.py work dir (holds <model>/result.json)")
    ap.add_argument("--models", default=None, help="comma-separated (default: every finished run)")
    ap.add_argument("--resets", default="1,2,4,8,never",
                    help="N values, 'never' = the state carried (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--max-frames", type=int, default=None, help="only the first frames of the split (tests)")
    ap.add_argument("--out", default=None, help="markdown output (default <work-dir>/state_history.md)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir).resolve()
    models = [m for m in args.models.split(",") if m] if args.models else None
    report = run(work_dir, models, parse_resets(args.resets), args.max_frames)
    text = (f"```bash\npython scripts/bench/state_history.py --work-dir {args.work_dir} --resets {args.resets}\n```\n\n"
            f"{report['frames']} validation frames; training clips of {report['clip_length']} frames; "
            f"torch threads {torch.get_num_threads()}.\n\n" + format_table(report))
    out = Path(args.out or work_dir / "state_history.md").resolve()
    from paper_table import write_report

    write_report(out, text, report)
    return report


if __name__ == "__main__":
    main()
