"""The paper's comparison on the synthetic benchmark: single frame vs concatenation vs LSTM (vs GRU).

    .venv/bin/python scripts/bench/paper_table.py --quick            # the quick budget (4 epochs)
    .venv/bin/python scripts/bench/paper_table.py                    # full budget (16 epochs)
    .venv/bin/python scripts/bench/paper_table.py --quick --dry-run  # the plan, composed and checked
    .venv/bin/python scripts/bench/paper_table.py --data-only --data-root DIR  # the split and its calibration

``--generator`` picks the benchmark split by the synthesizer version that makes it (``BENCH_SPLITS``): 3 (the
default) the Waymo-calibrated split and the ``bench_calibrated_<model>`` experiments (+-75 m; the full budget
estimated at ~1.4 h for the three models on 2 idle cores, docs/studies/calibrated_world.md); 2 the street
split of the earlier tables (``docs/RESULTS.md``: quick <= 30 min, full ~50 min for three models on 2 idle
cores) and the ``bench_synthetic_<model>`` experiments (+-40 m).

1. The benchmark split, with fixed seeds: ``python -m data_tools.synthesize`` + ``python -m
   data_tools.convert_waymo`` into ``--data-root`` (default ``data/bench_calibrated``, with ``--generator 2``
   ``data/bench``: records in ``records/``, the frame store in ``synthetic/``, what the experiments read).
   Skipped when the store is complete and was made with the same options and generator (``bench_data.json``).
   Then its label statistics beside real Waymo labels (``--real``, a ``metrics_pb2.Objects`` file; see
   ``python -m data_tools.stats --compare``), printed and written to ``<data-root>/calibration.md``.
2. Every model trains with the same data, budget and seed (``experiment=<experiments>_<model>``; the
   full mode is the experiment configs as they are, ``--quick`` fewer epochs) and is evaluated on the
   validation split from its last checkpoint (``detector.evaluate``), plus the AP on objects occluded
   in the previous frames (``detector.eval.occlusion``). Results land in ``<work-dir>/<model>/``; a
   rerun reuses a model's finished result unless ``--fresh``; an unfinished one is trained again whole, or
   with ``--resume`` goes on from its run folder's last checkpoint (a run stopped by SIGTERM saves its current
   step: a long table can be split into sittings; the training time sums the sittings, ``sittings.json``).
3. Cost, in this one process: the same validation frames streamed through every trained model
   (state carried), per-frame time (median of interleaved rounds) and peak memory (CPU: peak RSS over
   the RSS before streaming; CUDA: peak allocated), as ratios to single_frame.
4. Writes ``--out`` (markdown tables + the exact commands), ``<out>.json`` and ``<out>.png`` (the
   learning curves of all runs) and prints the tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: The street benchmark split (generator 2): options of ``python -m data_tools.synthesize``
#: (configs/synthesize.yaml). Denser traffic (more, longer occlusions) and more sensor dropout than
#: the demo: temporal cues. Labels within 40 m, the small models' range: the metrics then count only objects a
#: model could see.
BENCH_DATA = {
    "segments": 10, "val_segments": 4, "frames": 40, "seed": 2020,
    "vehicle_density": 1.5, "object_range": 45.0, "label_range": 40.0,
    "noise.beam_dropout": 0.05, "noise.sector_dropout": 0.5,
}
#: The calibrated benchmark split (generator 3): the Waymo-calibrated city (``world=calibrated``: Waymo's
#: lidar rig, objects placed to 90 m, labels to 75 m), the sensor's own noise; as many frames as the street
#: split.
CALIBRATED_DATA = {"world": "calibrated", "segments": 10, "val_segments": 4, "frames": 40, "seed": 2034}


@dataclass(frozen=True)
class BenchSplit:
    generator: int  # the synthesizer version that makes it (recorded in bench_data.json)
    options: dict
    data_dir: str  # default --data-root, under the repository
    experiments: str  # experiment=<experiments>_<model>


BENCH_SPLITS = {2: BenchSplit(2, BENCH_DATA, "data/bench", "bench_synthetic"),
                3: BenchSplit(3, CALIBRATED_DATA, "data/bench_calibrated", "bench_calibrated")}
#: Real Waymo labels to calibrate against, where no --real is given (the first that exists).
REAL_LABELS = (ROOT.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin",
               ROOT.parent.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin")
#: Overrides of each mode on top of ``experiment=bench_synthetic_<model>`` (the full mode: none).
MODES = {
    "quick": {"models": ("single_frame", "concat", "lstm"),
              "overrides": ["trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2",
                            "trainer.limit_val_batches=40"]},
    "full": {"models": ("single_frame", "concat", "lstm", "gru"), "overrides": []},
}
BASELINE = "single_frame"
CLASSES = (("VEHICLE", "vehicle"), ("PEDESTRIAN", "pedestrian"), ("CYCLIST", "cyclist"))
TYPE_IDS = {"VEHICLE": 1, "PEDESTRIAN": 2, "CYCLIST": 4}


# -- data ---------------------------------------------------------------------------------------------
def synth_args(options: dict) -> list[str]:
    return [f"{k}={v}" for k, v in options.items()]


def data_commands(data_root: Path, options: dict, workers: int) -> list[list[str]]:
    py = sys.executable
    hydra_dir = f"hydra.run.dir={data_root / 'logs'}"
    return [
        [py, "-m", "data_tools.synthesize", f"out_dir={data_root / 'records'}", *synth_args(options),
         f"workers={workers}", "progress=false", hydra_dir],
        [py, "-m", "data_tools.convert_waymo", f"src={data_root / 'records'}", f"dst={data_root / 'synthetic'}",
         f"workers={workers}", "progress=false", hydra_dir],
    ]


def store_complete(data_root: Path, options: dict) -> bool:
    from detector.data.frame_store import FrameStoreError, list_segments

    try:
        segs = {s: list_segments(data_root / "synthetic", s) for s in ("training", "validation")}
    except FrameStoreError:
        return False
    want = {"training": int(options["segments"]), "validation": int(options["val_segments"])}
    return all(len(segs[s]) == want[s] and all(x.num_frames == int(options["frames"]) for x in segs[s]) for s in want)


def ensure_data(data_root: Path, options: dict, workers: int = 2, generator: int = 2) -> None:
    """Synthesize and convert the benchmark split unless the store is complete with these options."""
    from data_tools.synth_segment import GENERATORS

    if generator not in GENERATORS:
        raise SystemExit(f"generator {generator}: this synthesizer makes versions {GENERATORS}")
    manifest = data_root / "bench_data.json"
    wanted = {**options, "generator": generator}
    if manifest.is_file():
        made = json.loads(manifest.read_text())
        if made != wanted:
            raise SystemExit(f"{data_root} holds a benchmark split made with other options or by another version "
                             f"of the synthesizer ({made}); delete it or pass another --data-root (wanted {wanted})")
        if store_complete(data_root, options):
            print(f"benchmark split: {data_root / 'synthetic'} complete, reused", flush=True)
            return
    elif data_root.exists() and any(data_root.iterdir()):
        raise SystemExit(f"{data_root} exists without bench_data.json: not made by this script; "
                         "delete it or pass another --data-root")
    data_root.mkdir(parents=True, exist_ok=True)
    from detector.atomic import write_json_atomic

    write_json_atomic(manifest, wanted)
    for cmd in data_commands(data_root, options, workers):
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    if not store_complete(data_root, options):
        raise SystemExit(f"{data_root / 'synthetic'}: incomplete after conversion (see the messages above)")


def calibration_table(data_root: Path, real: str | None) -> str | None:
    """The split's label statistics beside real Waymo labels (``data_tools.stats``), printed and written to
    ``<data-root>/calibration.md``; None (and a note) where no real labels are found."""
    from data_tools.stats import calibration, compare, labels_from_ground_truth, labels_from_store
    from detector.atomic import atomic_open

    path = Path(real) if real else next((p for p in REAL_LABELS if p.is_file()), None)
    if path is None:
        print("calibration: no real labels (--real GT.bin) found; table skipped", flush=True)
        return None
    if not path.is_file():
        raise SystemExit(f"--real {path}: no such file")
    text, met, made = compare(calibration(labels_from_store(data_root / "synthetic")),
                              calibration(labels_from_ground_truth(path)))
    text = f"Real labels: `{path}`; split: `{data_root / 'synthetic'}`.\n\n" + text
    with atomic_open(data_root / "calibration.md", "w") as f:
        f.write(text)
    print(text + f"wrote {data_root / 'calibration.md'}", flush=True)
    return text


# -- training and evaluation ----------------------------------------------------------------------------
def compose(name: str, overrides: list[str]):
    from omegaconf import OmegaConf

    from detector.config import compose as compose_config

    cfg = compose_config(name, overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


@dataclass
class RunPlan:
    model: str
    train_overrides: list[str]
    eval_overrides: list[str]  # without ckpt_path
    work: Path

    def commands(self) -> list[str]:
        ckpt = self.work / "train" / "checkpoints" / "last.ckpt"
        return [f"python -m detector.train {' '.join(self.train_overrides)} hydra.run.dir={self.work / 'train'}",
                f"python -m detector.evaluate {' '.join(self.eval_overrides)} ckpt_path={ckpt} "
                f"hydra.run.dir={self.work / 'eval'}"]


def _for_eval(override: str) -> bool:
    """Overrides that evaluation needs too: those that shape the model or the data."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key.split(".", 1)[0] in ("model", "data", "paths", "torch_threads")


def plan_runs(mode: str, models: list[str], data_root: Path, work_dir: Path, seed: int, threads: int | None,
              device: str, extra: list[str], experiments: str = "bench_synthetic") -> list[RunPlan]:
    common = [f"paths.data_root={data_root}"] + ([f"torch_threads={threads}"] if threads else [])
    runs = []
    for m in models:
        exp = [f"experiment={experiments}_{m}"]
        train = exp + common + [f"seed={seed}"] + MODES[mode]["overrides"] + \
            (["trainer=gpu"] if device == "cuda" else []) + \
            ["trainer.enable_progress_bar=false"] + extra
        evaluate = exp + common + ["split=validation", f"device={device}"] + [o for o in extra if _for_eval(o)]
        runs.append(RunPlan(m, train, evaluate, work_dir / m))
    return runs


class StepTimer(L.Callback):
    """Wall time of every training step (forward, backward, optimizer)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._t0)


def _sittings(run: RunPlan) -> list[dict]:
    path = run.work / "sittings.json"
    return json.loads(path.read_text()) if path.is_file() else []


def run_model(run: RunPlan, data_root: Path, label_range: float, fresh: bool, resume: bool = False) -> dict:
    """Train, evaluate and score the occlusion subset of one model; reuse a finished result. ``resume``: an
    unfinished training goes on from its run folder's checkpoint (the sittings' times are summed)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from detector.atomic import write_json_atomic
    from detector.eval.occlusion import occluded_metrics
    from detector.evaluate import evaluate
    from detector.preemption import EXIT_PREEMPTED, Preempted
    from detector.train import train

    result_path = run.work / "result.json"
    if result_path.is_file() and not fresh:
        done = json.loads(result_path.read_text())
        if done.get("train_overrides") == run.train_overrides and done.get("eval_overrides") == run.eval_overrides:
            print(f"[{run.model}] reusing {result_path}", flush=True)
            return done
    # a run killed earlier restarts whole (its training time must be whole), unless resumed
    for stale in ("eval",) if resume else ("train", "eval", "sittings.json"):
        if (run.work / stale).is_dir():
            shutil.rmtree(run.work / stale)
        elif (run.work / stale).exists():
            (run.work / stale).unlink()
    sittings = _sittings(run) if resume else []
    print(f"[{run.model}] training: {run.commands()[0]}"
          + (f" (resumed: {len(sittings)} sitting(s) before)" if sittings else ""), flush=True)
    cfg = compose("train", run.train_overrides)
    cfg.output_dir = str(run.work / "train")
    cfg.resume = resume  # train's own: go on from the run folder's checkpoints/last.ckpt
    timer = StepTimer()
    t0 = time.perf_counter()
    try:
        trained = train(cfg, callbacks=[timer])
    except (Preempted, SIGTERMException) as e:
        run.work.mkdir(parents=True, exist_ok=True)
        before = sum(x["steps"] for x in sittings)  # the step that was stopped is finished and saved
        steps = e.step - before if isinstance(e, Preempted) else 0
        write_json_atomic(run.work / "sittings.json", sittings + [
            {"seconds": time.perf_counter() - t0, "steps": steps, "ended": "stopped"}])
        raise SystemExit(f"[{run.model}] training stopped ({e}); its step is saved: run the same command with "
                         f"--resume to go on (exit status {EXIT_PREEMPTED})") from e
    sittings = sittings + [{"seconds": time.perf_counter() - t0, "steps": len(timer.times), "ended": "done"}]
    write_json_atomic(run.work / "sittings.json", sittings)
    train_s = sum(x["seconds"] for x in sittings)
    ckpt = trained["last_checkpoint"]
    ecfg = compose("evaluate", run.eval_overrides + [f"ckpt_path={ckpt}"])
    ecfg.output_dir = str(run.work / "eval")
    t0 = time.perf_counter()
    evaluated = evaluate(ecfg)
    eval_s = time.perf_counter() - t0
    occ = occluded_metrics(data_root / "synthetic", "validation", run.work / "eval" / "predictions.bin",
                           label_range=label_range)
    steps = timer.times[2:] or timer.times  # the first steps warm up allocators and rule-book caches
    result = {
        "model": run.model, "train_overrides": run.train_overrides, "eval_overrides": run.eval_overrides,
        "checkpoint": ckpt, "metrics_csv": str(run.work / "train" / "logs" / "csv" / "metrics.csv"),
        "train_s": train_s, "train_steps": sum(x["steps"] for x in sittings),
        "train_step_s": statistics.median(steps), "sittings": len(sittings),
        "eval_s": eval_s, "eval_frames": evaluated["frames"], "metrics": evaluated["metrics"],
        "occluded": {"metrics": occ.metrics, "num_objects": {str(t): n for t, n in occ.num_objects.items()},
                     "k": occ.k},
    }
    write_json_atomic(result_path, result)
    return result


# -- cost: the same frames through every trained model ------------------------------------------------------
@dataclass
class Cost:
    ms_per_frame: float
    peak_mb: float | None
    state_kb: float
    frames_timed: int
    memory_note: str = ""
    times_ms: list[float] = field(default_factory=list)
    #: CPU time of the process per frame (all its threads), median: on a shared machine the wall time
    #: holds the waits for a core, this does not (at one thread it is the idle machine's wall time)
    cpu_ms_per_frame: float | None = None
    cpu_times_ms: list[float] = field(default_factory=list)


def _stream(model, frames: list, device: str, timed: list | None = None, warmup: int = 0,
            cpu_timed: list | None = None):
    """``model.step`` over ``frames`` from a fresh state; per-frame ms (after ``warmup``) into ``timed``,
    the process's CPU ms per frame into ``cpu_timed``."""
    import torch

    cuda = torch.device(device).type == "cuda"
    state = model.init_state(1, torch.device(device))
    with torch.no_grad():
        for i, f in enumerate(frames):
            if cuda:
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            _, state = model.step(f, state)
            if cuda:
                torch.cuda.synchronize()
            if timed is not None and i >= warmup:
                timed.append(1000 * (time.perf_counter() - t0))
                if cpu_timed is not None:
                    cpu_timed.append(1000 * (time.process_time() - c0))
    return state


def measure_time(models: dict, frames: list, device: str = "cpu", warmup: int = 3,
                 rounds: int = 3, cpu_times: dict | None = None) -> dict[str, list[float]]:
    """Per-frame ms of every model over ``rounds`` interleaved rounds (each from a fresh state; the first
    ``warmup`` frames of a round untimed, so concat holds its sweeps and the LSTM its state); the process's
    CPU ms per frame into ``cpu_times[name]`` when given."""
    if len(frames) <= warmup:
        raise ValueError(f"{len(frames)} frames for {warmup} warm-up frames: need more")
    frames = [f.to(device) for f in frames]
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            _stream(model, frames, device, times[name], warmup,
                    None if cpu_times is None else cpu_times.setdefault(name, []))
    return times


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field_name}")


def measure_memory(models: dict, frames: list, device: str = "cpu") -> dict[str, dict]:
    """Peak memory of streaming ``frames`` through each model, over the memory just before: CUDA, peak
    allocated; CPU, peak RSS (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), meaningful when
    glibc returns freed blocks (the process runs with ``MALLOC_MMAP_THRESHOLD_``, see ``memory_child``).
    Every model streams once before any is measured, so one-time allocations count for none."""
    import torch

    cuda = torch.device(device).type == "cuda"
    frames = [f.to(device) for f in frames]
    for model in models.values():
        _stream(model, frames[:2], device)
    out = {}
    for name, model in models.items():
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            state = _stream(model, frames, device)
            peak, note = (torch.cuda.max_memory_allocated() - base) / 2**20, ""
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now
                base = _status_kb("VmRSS")
                state = _stream(model, frames, device)
                peak, note = (_status_kb("VmHWM") - base) / 1024, ""
            except OSError as e:
                state = _stream(model, frames, device)
                peak, note = None, f"peak RSS not measurable here ({e})"
        out[name] = {"peak_mb": peak, "state_kb": state.nbytes() / 1024, "note": note}
    return out


def cost_frames(eval_overrides: list[str], count: int) -> list:
    """The first ``count`` frames of the validation split, prepared exactly as for evaluation."""
    from hydra.utils import instantiate

    cfg = compose("evaluate", eval_overrides + ["ckpt_path=unused"])
    dm = instantiate(cfg.data)
    dm.setup("test")
    frames = []
    for f in dm.test_dataloader():
        frames.append(f)
        if len(frames) >= count:
            break
    return frames


def _load_models(checkpoints: dict[str, str], device: str) -> dict:
    from detector.checkpoints import load_checkpoint

    return {name: load_checkpoint(path, device) for name, path in checkpoints.items()}


def memory_child(spec: dict) -> dict:
    """Runs in a fresh process started with ``MALLOC_MMAP_THRESHOLD_=65536``: every block of 64 KiB or
    more is its own mapping and leaves the RSS when freed, so peaks of successive models do not hide in
    memory an earlier one freed. (Not used for timing: fresh mappings cost page faults.)"""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    models = _load_models(spec["checkpoints"], spec["device"])
    return measure_memory(models, cost_frames(spec["eval_overrides"], spec["frames"]), spec["device"])


def measure_costs(checkpoints: dict[str, str], eval_overrides: list[str], frames_wanted: int, rounds: int,
                  device: str, threads: int | None) -> tuple[dict[str, Cost], int]:
    """Time in this process (interleaved rounds over the same frames); memory in one child process for
    all models on CPU (see ``memory_child``), here on CUDA."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    models = _load_models(checkpoints, device)
    frames = cost_frames(eval_overrides, frames_wanted)
    cpu_times: dict[str, list[float]] = {}
    times = measure_time(models, frames, device, rounds=rounds, cpu_times=cpu_times)
    if torch.device(device).type == "cuda":
        memory = measure_memory(models, frames, device)
    else:
        spec = {"checkpoints": checkpoints, "eval_overrides": eval_overrides, "frames": frames_wanted,
                "device": device, "threads": threads}
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        proc = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True,
                              text=True, cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"memory measurement failed:\n{proc.stderr[-4000:]}")
        memory = json.loads(proc.stdout.strip().splitlines()[-1])
    costs = {name: Cost(ms_per_frame=statistics.median(times[name]), peak_mb=memory[name]["peak_mb"],
                        state_kb=memory[name]["state_kb"], frames_timed=len(times[name]),
                        memory_note=memory[name]["note"], times_ms=times[name],
                        cpu_ms_per_frame=statistics.median(cpu_times[name]), cpu_times_ms=cpu_times[name])
             for name in models}
    return costs, len(frames)


# -- the tables -------------------------------------------------------------------------------------------
def _ap(metrics: dict, cls: str, level: int, key: str = "AP") -> float:
    return 100.0 * metrics[f"OBJECT_TYPE_TYPE_{cls}_LEVEL_{level}"][key]


def _ratio(value: float | None, ref: float | None) -> str:
    return "n/a" if value is None or not ref else f"{value / ref:.2f}"


def format_tables(results: dict[str, dict], costs: dict[str, Cost], meta: dict) -> str:
    """Markdown: the commands, the quality table, the cost table, the learning-curve plot, the targets."""
    base = BASELINE if BASELINE in results else next(iter(results))
    lines = ["```bash", meta["command"], "```", "", meta["description"], "",
             "Per model (`RUN` = " + meta["work_dir"] + "/<model>):", "", "```bash"]
    for r in results.values():
        train_cmd = "python -m detector.train " + " ".join(r["train_overrides"]) + " hydra.run.dir=RUN/train"
        eval_cmd = ("python -m detector.evaluate " + " ".join(r["eval_overrides"])
                    + " ckpt_path=RUN/train/checkpoints/last.ckpt hydra.run.dir=RUN/eval")
        lines += [train_cmd.replace(meta["data_root"], "DATA"), eval_cmd.replace(meta["data_root"], "DATA")]
    lines += ["```", "", f"`DATA` = {meta['data_root']}. AP and APH in %, validation split "
              f"({next(iter(results.values()))['eval_frames']} frames), last checkpoint.", ""]
    head = "| model |" + "".join(f" {c} L{lv} AP | {c} L{lv} APH |" for _, c in CLASSES for lv in (1, 2))
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, r in results.items():
        cells = [f"{_ap(r['metrics'], cls, lv, k):.1f}" for cls, _ in CLASSES for lv in (1, 2) for k in ("AP", "APH")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    k = next(iter(results.values()))["occluded"]["k"]
    lines += ["", f"Occluded = AP (LEVEL_1, %) on objects that had no points or no label in at least one of the "
              f"{k} previous frames and have points now (`detector/eval/occlusion.py`; n = such objects). Cost: "
              f"the first {meta['cost_frames']} validation frames streamed through each trained model "
              f"({meta['device']}, state carried): time per frame, the median of {meta['cost_rounds']} rounds "
              "interleaved in one process (3 warm-up frames a round), wall and the process's CPU time "
              "(all threads; on a shared machine the wall time also holds the waits for a core); peak "
              "memory while streaming over the memory just before (CPU: peak RSS, all models in one child "
              "process whose allocator returns freed blocks; CUDA: peak allocated), weights excluded; "
              "state KB: the temporal state after the "
              "last frame; training: wall time of the whole run and median step. Ratios to " + base + ".", ""]
    head = ("| model | occluded vehicle AP (n) | occluded pedestrian AP (n) | occluded cyclist AP (n) "
            "| ms/frame | ratio | CPU ms/frame | ratio "
            "| peak MB | ratio | state KB | train s | ratio | train step s | steps |")
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    bc = costs.get(base)
    for name, r in results.items():
        occ, n = r["occluded"]["metrics"], r["occluded"]["num_objects"]
        c = costs.get(name)
        occ_cells = [f"{_ap(occ, cls, 1):.1f} ({n.get(str(TYPE_IDS[cls]), 0)})"
                     for cls, _ in CLASSES]
        cost_cells = (["n/a"] * 7 if c is None else
                      [f"{c.ms_per_frame:.1f}", _ratio(c.ms_per_frame, bc and bc.ms_per_frame),
                       "n/a" if c.cpu_ms_per_frame is None else f"{c.cpu_ms_per_frame:.1f}",
                       _ratio(c.cpu_ms_per_frame, bc and bc.cpu_ms_per_frame),
                       "n/a" if c.peak_mb is None else f"{c.peak_mb:.1f}", _ratio(c.peak_mb, bc and bc.peak_mb),
                       f"{c.state_kb:.0f}"])
        lines.append(f"| {name} | " + " | ".join(occ_cells + cost_cells + [
            f"{r['train_s']:.0f}", _ratio(r["train_s"], results[base]["train_s"]),
            f"{r['train_step_s']:.2f}", str(r["train_steps"])]) + " |")
    if meta.get("png"):
        lines += ["", f"Learning curves of all runs: `{meta['png']}`."]
    lines += ["", "Targets:", ""] + [f"- {t}" for t in target_lines(results, costs)]
    return "\n".join(lines) + "\n"


def target_lines(results: dict[str, dict], costs: dict[str, Cost]) -> list[str]:
    out = []
    if "lstm" not in results:
        return ["no lstm run: targets not checked"]
    lstm = _ap(results["lstm"]["metrics"], "VEHICLE", 1)
    for other, need, what in (("single_frame", 7.5, "LSTM >= single frame + 7.5 AP"),
                              ("concat", 0.0, "LSTM >= concat")):
        if other in results:
            d = lstm - _ap(results[other]["metrics"], "VEHICLE", 1)
            out.append(f"{what} (vehicle LEVEL_1): {d:+.1f} AP — {'met' if d >= need else 'not met'}")
    if "lstm" in costs:
        lc = costs["lstm"]
        cpu = "" if lc.cpu_ms_per_frame is None else f", CPU {lc.cpu_ms_per_frame:.0f} ms"
        out.append(f"LSTM per-frame time <= 100 ms (sensor rate): wall {lc.ms_per_frame:.0f} ms{cpu} — "
                   f"{'met' if lc.ms_per_frame <= 100 else 'not met'} (wall; on a shared machine see the CPU time)")
    if "concat" in costs and "lstm" in costs:
        c, lc = costs["concat"], costs["lstm"]
        t = lc.ms_per_frame / c.ms_per_frame
        out.append(f"LSTM per-frame time <= 0.5x concat: {t:.2f}x — {'met' if t <= 0.5 else 'not met'}")
        if c.peak_mb and lc.peak_mb is not None:
            m = lc.peak_mb / c.peak_mb
            out.append(f"LSTM peak memory <= 0.5x concat: {m:.2f}x — {'met' if m <= 0.5 else 'not met'}")
    return out


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the <= 30 min budget (fewer epochs, 3 models)")
    ap.add_argument("--models", default=None, help="comma-separated: single_frame,concat,lstm,gru (default by mode)")
    ap.add_argument("--out", default=None, help="markdown output (default <work-dir>/paper_table.md); "
                                                ".json and .png are written next to it")
    ap.add_argument("--generator", type=int, default=3, choices=sorted(BENCH_SPLITS),
                    help="the benchmark split by its synthesizer version: 3 calibrated (default), 2 street")
    ap.add_argument("--data-root", default=None, help="default data/bench_calibrated (--generator 2: data/bench)")
    ap.add_argument("--real", default=None, metavar="GT.bin",
                    help="real Waymo labels (metrics_pb2.Objects) to compare the split with (default: REAL_LABELS)")
    ap.add_argument("--work-dir", default=None, help="default work/paper_table/<quick|full>")
    ap.add_argument("--seed", type=int, default=0, help="training seed (the data seed is fixed in BENCH_DATA)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=2, help="processes for synthesis and conversion")
    ap.add_argument("--cost-frames", type=int, default=40, help="validation frames streamed for the cost table")
    ap.add_argument("--cost-rounds", type=int, default=3)
    ap.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE",
                    help="change a benchmark-split option (tests); the split is then another one")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Hydra override of every training (and evaluation, for model.*/data.* keys)")
    ap.add_argument("--fresh", action="store_true", help="retrain models whose result exists")
    ap.add_argument("--resume", action="store_true",
                    help="an unfinished training goes on from its run folder's checkpoint (not trained again whole)")
    ap.add_argument("--dry-run", action="store_true", help="compose every config, print the plan, run nothing")
    ap.add_argument("--data-only", action="store_true", help="make the benchmark split, then stop")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return {}
    mode = "quick" if args.quick else "full"
    from detector import CONFIG_DIR

    split = BENCH_SPLITS[args.generator]
    known = {p.stem.removeprefix(f"{split.experiments}_")
             for p in (Path(CONFIG_DIR) / "experiment").glob(f"{split.experiments}_*.yaml")}
    # by default the mode's models that the split has experiments for (the calibrated split: no gru yet)
    models = [m for m in (args.models or ",".join(m for m in MODES[mode]["models"] if m in known)).split(",") if m]
    unknown = [m for m in models if m not in known]
    if unknown:
        raise SystemExit(f"--models: no experiment {split.experiments}_{unknown[0]} (have {sorted(known)})")
    options = dict(split.options)
    for kv in args.synth:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"--synth {kv}: expected KEY=VALUE (an option of python -m data_tools.synthesize)")
        options[key] = type(options[key])(value) if key in options else value
    data_root = Path(args.data_root or ROOT / split.data_dir).resolve()
    work_dir = Path(args.work_dir or ROOT / "work" / "paper_table"
                    / (mode if args.generator == 2 else f"{mode}_g{args.generator}")).resolve()
    out = Path(args.out or work_dir / "paper_table.md").resolve()
    runs = plan_runs(mode, models, data_root, work_dir, args.seed, args.threads, args.device, list(args.set),
                     split.experiments)

    command = " ".join(["python scripts/bench/paper_table.py"] + (["--quick"] if args.quick else [])
                       + ([f"--generator {args.generator}"] if args.generator != 3 else [])
                       + ([f"--models {args.models}"] if args.models else []))
    print(f"mode {mode}: models {models}; data {data_root} ({options}); work {work_dir}")
    for cmd in data_commands(data_root, options, args.workers):
        print("  data: " + " ".join(cmd[1:]))
    for run in runs:
        for c in run.commands():
            print(f"  {run.model}: {c}")
        compose("train", run.train_overrides)  # fail now, not after an hour, on a config that does not compose
        compose("evaluate", run.eval_overrides + ["ckpt_path=unused"])
    if args.dry_run:
        if store_complete(data_root, options):
            from hydra.utils import instantiate

            cfg = compose("train", runs[0].train_overrides)
            steps = len(instantiate(cfg.data, seed=args.seed).train_dataloader())
            print(f"  {steps} training steps an epoch x {cfg.trainer.max_epochs} epochs per model")
        return {"runs": [asdict(r) | {"work": str(r.work)} for r in runs], "data": options}

    t_start = time.perf_counter()
    ensure_data(data_root, options, args.workers, split.generator)
    table = calibration_table(data_root, args.real)
    if args.data_only:
        return {"data": options, "generator": split.generator, "seconds": time.perf_counter() - t_start,
                "calibration": table}
    label_range = float(options.get("label_range", 75.0))  # the synthesizer's default
    results = {run.model: run_model(run, data_root, label_range, args.fresh, args.resume) for run in runs}

    import torch

    costs, n_frames = measure_costs({n: r["checkpoint"] for n, r in results.items()}, runs[0].eval_overrides,
                                    args.cost_frames, args.cost_rounds, args.device, args.threads)

    from detector.plots import plot_learning_curves

    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot_learning_curves({n: r["metrics_csv"] for n, r in results.items()}, out.with_suffix(".png"))
    meta = {
        "command": command, "work_dir": str(work_dir), "data_root": str(data_root), "device": args.device,
        "cost_frames": n_frames, "cost_rounds": args.cost_rounds, "png": png.name,
        "description": (f"Mode `{mode}`, seed {args.seed}, torch threads {torch.get_num_threads()}. Benchmark split: "
                        + ", ".join(f"{k}={v}" for k, v in options.items())
                        + f". Whole script: {time.perf_counter() - t_start:.0f} s."),
    }
    report = {"meta": meta, "results": results, "costs": {k: asdict(v) for k, v in costs.items()}}
    write_report(out, format_tables(results, costs, meta), report, png)
    return report


def write_report(out: Path, text: str, report: dict, *also: Path) -> None:
    """``out`` (markdown) and ``<out>.json``, each written whole or not at all; print the text."""
    from detector.atomic import atomic_open, write_json_atomic

    with atomic_open(out, "w") as f:
        f.write(text)
    write_json_atomic(out.with_suffix(".json"), report)
    print(text)
    print("wrote " + ", ".join(str(p) for p in (out, out.with_suffix(".json"), *also)))


if __name__ == "__main__":
    main()
