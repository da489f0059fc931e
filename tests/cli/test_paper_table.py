"""The paper table: the occlusion breakdown on hand-made frames with known answers, and the table
script (plan, tables, and a micro run of every phase on a tiny synthetic benchmark split)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from detector import CONFIG_DIR
from detector.data.frame import Frame
from detector.data.frame_store import write_segment_meta
from detector.eval import WaymoMetrics, detections_to_objects, write_objects
from detector.eval.occlusion import FrameLabels, occluded_metrics, previously_occluded, subset_metrics
from detector.eval.occlusion import main as occlusion_cli
from detector.eval.submission import FrameObjects
from tests.helpers.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location("paper_table", Path(REPO_ROOT) / "scripts" / "bench" / "paper_table.py")
paper_table = importlib.util.module_from_spec(_spec)
sys.modules["paper_table"] = paper_table  # dataclasses look their module up while the file executes
_spec.loader.exec_module(paper_table)
_spec = importlib.util.spec_from_file_location("state_history",
                                               Path(REPO_ROOT) / "scripts" / "bench" / "state_history.py")
state_history = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(state_history)

CAR = (4.5, 2.0, 1.6)


def _pose(x: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    p = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    p[:2, :2] = [[c, -s], [s, c]]
    p[0, 3] = x
    return p


def _labels(index: int, objects: dict[str, tuple[float, float, int]], pose=None, segment: str = "seg") -> FrameLabels:
    """``objects``: id -> (x, y, num_points); vehicles of one size, heading 0."""
    ids = list(objects)
    boxes = np.array([[x, y, 0.8, *CAR, 0.0] for x, y, _ in objects.values()]).reshape(-1, 7)
    return FrameLabels(segment=segment, index=index, timestamp_micros=1000 + 100_000 * index,
                       pose=_pose() if pose is None else pose, boxes=boxes, types=np.ones(len(ids), np.int64),
                       ids=np.array(ids, dtype=str), num_points=np.array([n for *_, n in objects.values()], np.int64),
                       difficulty=np.zeros(len(ids), np.int64))


def test_previously_occluded_known_answers():
    # a: points at every frame but 1 -> occluded-before at 2, 3, 4 (k=3), no longer at 5
    # b: unlabelled at frame 1 while near -> the same
    # c: unlabelled at frame 1 but 100 m away (beyond the labelled range) -> never
    # d: no points at frame 3 itself -> not in the subset at 3 (nothing to detect), in it at 4
    # e: appears first at frame 4, close: unlabelled in 1..3 while in range -> occluded-before
    near, far = (10.0, 0.0), (100.0, 0.0)
    frames = [
        _labels(0, {"a": (*near, 50), "b": (12.0, 5.0, 40), "c": (*far, 3), "d": (20.0, 3.0, 30)}),
        _labels(1, {"a": (*near, 0), "d": (20.0, 3.0, 30)}),
        _labels(2, {"a": (*near, 50), "b": (12.0, 5.0, 40), "c": (*far, 3), "d": (20.0, 3.0, 30)}),
        _labels(3, {"a": (*near, 50), "b": (12.0, 5.0, 40), "c": (*far, 3), "d": (20.0, 3.0, 0)}),
        _labels(4, {"a": (*near, 50), "b": (12.0, 5.0, 40), "c": (*far, 3), "d": (20.0, 3.0, 30), "e": (5.0, 5.0, 9)}),
        _labels(5, {"a": (*near, 50), "b": (12.0, 5.0, 40), "c": (*far, 3), "d": (20.0, 3.0, 30), "e": (5.0, 5.0, 9)}),
    ]
    got = [{str(i) for i, m in zip(f.ids, mask) if m} for f, mask in zip(frames, previously_occluded(frames, k=3))]
    assert got == [set(), set(), {"a", "b"}, {"a", "b"}, {"a", "b", "d", "e"}, {"d", "e"}]
    # k = 1 looks at the previous frame only
    got1 = [{str(i) for i, m in zip(f.ids, mask) if m} for f, mask in zip(frames, previously_occluded(frames, k=1))]
    assert got1 == [set(), set(), {"a", "b"}, set(), {"d", "e"}, set()]


def test_range_is_judged_in_the_earlier_vehicle_frame():
    # The ego drove 60 m between the frames: the object 10 m ahead now was 70 m ahead then (in range)
    # with a 75 m labelled range, out of range with a 65 m one.
    frames = [_labels(0, {"x": (0.0, 0.0, 5)}, pose=_pose(0.0)),
              _labels(1, {"y": (10.0, 0.0, 5)}, pose=_pose(60.0))]
    assert previously_occluded(frames, label_range=75.0)[1].tolist() == [True]
    assert previously_occluded(frames, label_range=65.0)[1].tolist() == [False]
    # turned ego: 10 m ahead of a car at x=60 facing +y is (60, 10) in the world, 60.83 m from the first ego
    frames[1].pose = _pose(60.0, np.pi / 2)
    assert previously_occluded(frames, label_range=61.0)[1].tolist() == [True]
    assert previously_occluded(frames, label_range=60.5)[1].tolist() == [False]


def test_duplicate_ids_are_refused():
    f = _labels(0, {"a": (1.0, 1.0, 3)})
    f.ids = np.array(["a"], str)
    g = _labels(1, {"a": (1.0, 1.0, 3), "b": (8.0, 1.0, 3)})
    g.ids = np.array(["a", "a"], str)
    with pytest.raises(ValueError, match="frame 1: duplicate tracking ids"):
        previously_occluded([f, g])


def _box(x, y):
    return [x, y, 0.8, *CAR, 0.0]


def _preds(boxes, scores, types=None, nlz=None) -> FrameObjects:
    n = len(boxes)
    return FrameObjects(boxes=np.array(boxes, float).reshape(-1, 7),
                        types=np.ones(n, np.int64) if types is None else np.array(types, np.int64),
                        scores=np.array(scores, np.float32), overlap_nlz=np.zeros(n, bool) if nlz is None else nlz,
                        num_points=np.zeros(n, np.int64), difficulty=np.zeros(n, np.int64))


def test_subset_metrics_ignore_predictions_of_removed_objects():
    f = _labels(0, {"hidden_before": (10.0, 0.0, 50), "always_seen": (20.0, 5.0, 50)})
    keep = np.array([True, False])
    # the best-scored prediction sits on the removed object: without the flag it would be a false
    # positive at the top of the ranking (AP 0.5); with it, AP 1.0
    preds = {f.key: _preds([_box(20.0, 5.0), _box(10.0, 0.0)], [0.9, 0.8])}
    metrics, counts = subset_metrics([(f, keep)], preds)
    res = metrics.compute()
    assert res["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] == pytest.approx(1.0)
    assert counts == {1: 1}
    naive = WaymoMetrics()
    naive.add_frame(f.key, f.boxes[keep], f.types[keep], f.num_points[keep], f.difficulty[keep],
                    preds[f.key].boxes, preds[f.key].scores, preds[f.key].types)
    assert naive.compute()["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] == pytest.approx(0.5)

    # a prediction of another type on the removed object, or a poor overlap, stays a false positive
    for other in ([_box(20.0, 5.0)], [2]), ([_box(21.5, 5.0)], [1]):
        preds = {f.key: _preds(other[0] + [_box(10.0, 0.0)], [0.9, 0.8], types=other[1] + [1])}
        res = subset_metrics([(f, keep)], preds)[0].compute()
        assert res["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] == pytest.approx(0.5 if other[1] == [1] else 1.0)


def test_subset_of_everything_equals_the_full_metrics():
    rng = np.random.default_rng(0)
    frames, preds, full = [], {}, WaymoMetrics()
    for i in range(4):
        objs = {f"o{j}": (float(rng.uniform(-30, 30)), float(rng.uniform(-30, 30)), int(rng.integers(0, 30)))
                for j in range(8)}
        f = _labels(i, objs)
        jitter = f.boxes + rng.normal(0, 0.15, f.boxes.shape) * [1, 1, 0, 0, 0, 0, 1]
        p = _preds(np.r_[jitter, [_box(0.0, 40.0)]], rng.uniform(0.1, 1.0, len(objs) + 1))
        frames.append((f, np.ones(len(objs), bool)))
        preds[f.key] = p
        full.add_frame(f.key, f.boxes, f.types, f.num_points, f.difficulty, p.boxes, p.scores, p.types)
    sub = subset_metrics(frames, preds)[0].compute()
    assert sub == full.compute()


def _write_store(root: Path, frames: list[FrameLabels]) -> None:
    seg = root / "validation" / frames[0].segment
    seg.mkdir(parents=True)
    for f in frames:
        Frame(points=np.zeros((0, 5), np.float32), pose=f.pose, timestamp_micros=f.timestamp_micros, segment=f.segment,
              index=f.index, boxes=f.boxes, types=f.types, ids=f.ids, num_points=f.num_points,
              difficulty=f.difficulty).save_npz(seg / f"{f.index:04d}.npz")
    write_segment_meta(seg, segment=frames[0].segment, split="validation",
                       timestamps_micros=[f.timestamp_micros for f in frames])


def test_occluded_metrics_on_a_frame_store(tmp_path, capsys):
    frames = [_labels(0, {"a": (10.0, 0.0, 50), "b": (20.0, 5.0, 50)}),
              _labels(1, {"a": (10.0, 0.0, 0), "b": (20.0, 5.0, 50)}),
              _labels(2, {"a": (10.0, 0.0, 50), "b": (20.0, 5.0, 50)})]
    _write_store(tmp_path / "store", frames)
    objs = []
    for f in frames:  # perfect detections of both objects in every frame, plus one false positive at frame 2
        boxes = list(f.boxes[f.num_points > 0]) + ([_box(-15.0, -15.0)] if f.index == 2 else [])
        objs += detections_to_objects(f.segment, f.timestamp_micros, boxes, [0.9] * (len(boxes) - 1) + [0.95],
                                      [1] * len(boxes))
    write_objects(tmp_path / "preds.bin", objs)
    res = occluded_metrics(tmp_path / "store", "validation", tmp_path / "preds.bin")
    assert res.num_objects == {1: 1} and res.num_frames == 3 and res.k == 3
    # the one subset object (a at frame 2) is found, below a false positive: precision 1/2 at recall 1
    assert res.metrics["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] == pytest.approx(0.5)

    write_objects(tmp_path / "other.bin", detections_to_objects("another_segment", 5, [_box(1, 1)], [0.5], [1]))
    with pytest.raises(ValueError, match=r"other.bin: 1 frames are not in .*validation"):
        occluded_metrics(tmp_path / "store", "validation", tmp_path / "other.bin")

    # the command line: the table, the counts, JSON; bad input is one line and status 2
    assert occlusion_cli([str(tmp_path / "store"), "validation", str(tmp_path / "preds.bin"),
                          "--json", str(tmp_path / "occ.json")]) == 0
    assert json.loads((tmp_path / "occ.json").read_text())["num_objects"] == {"1": 1}
    assert occlusion_cli([str(tmp_path / "store"), "validation", str(tmp_path / "other.bin")]) == 2
    assert occlusion_cli([str(tmp_path / "store"), "testing", str(tmp_path / "preds.bin")]) == 2
    capsys.readouterr()
    assert occlusion_cli([str(tmp_path / "store"), "validation"]) == 0  # counts only
    assert capsys.readouterr().out.split() == "vehicle 5 objects with points 1 previously occluded (k=3)".split()


# -- the table script ---------------------------------------------------------------------------------------
def _without_model(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    cfg["defaults"] = [d for d in cfg["defaults"] if not (isinstance(d, dict) and "override /model" in d)]
    return cfg


@pytest.mark.parametrize("prefix, models", [("bench_synthetic", ("single_frame", "concat", "lstm", "gru")),
                                             ("bench_calibrated", ("single_frame", "concat", "lstm"))])
def test_bench_experiments_differ_only_in_the_model(prefix, models):
    paths = sorted((Path(CONFIG_DIR) / "experiment").glob(f"{prefix}_*.yaml"))
    assert {p.stem for p in paths} >= {f"{prefix}_{m}" for m in models}
    first = _without_model(paths[0])
    for p in paths[1:]:
        assert _without_model(p) == first, p.name


def test_calibrated_experiments_cover_the_waymo_range():
    """The calibrated split labels to 75 m: its models see +-75 m (and read its store); the street ones +-40 m."""
    from detector.config import compose

    for m in ("single_frame", "concat", "lstm"):
        cfg = compose("train", [f"experiment=bench_calibrated_{m}"])
        assert list(cfg.model.voxelizer.point_range)[:2] == [-75.0, -75.0] and cfg.data.root.endswith(
            "bench_calibrated/synthetic")
        street = compose("train", [f"experiment=bench_synthetic_{m}"])
        assert list(street.model.voxelizer.point_range)[:2] == [-40.0, -40.0]
        assert cfg.trainer.max_epochs == street.trainer.max_epochs and cfg.data.clip_length == street.data.clip_length


def test_dry_run_plans_the_same_budget_for_every_model(tmp_path, capsys):
    for quick, models in ((True, ["single_frame", "concat", "lstm"]),
                          (False, ["single_frame", "concat", "lstm", "gru"])):
        plan = paper_table.main((["--quick"] if quick else []) + [
            "--generator", "2", "--dry-run", "--data-root", str(tmp_path / "d"), "--work-dir", str(tmp_path / "w")])
        runs = plan["runs"]
        assert [r["model"] for r in runs] == models
        strip = [[o for o in r["train_overrides"] if not o.startswith("experiment=")] for r in runs]
        assert all(s == strip[0] for s in strip), "every model must train with the same overrides"
        assert ("trainer.max_epochs=4" in strip[0]) == quick
    out = capsys.readouterr().out
    assert "data_tools.synthesize" in out and "python -m detector.evaluate experiment=bench_synthetic_gru" in out
    with pytest.raises(SystemExit, match="no experiment bench_synthetic_nope"):
        paper_table.main(["--generator", "2", "--dry-run", "--models", "lstm,nope"])
    # the default: the calibrated split, its own experiments and data folder
    plan = paper_table.main(["--quick", "--dry-run", "--work-dir", str(tmp_path / "w3")])
    assert [r["model"] for r in plan["runs"]] == ["single_frame", "concat", "lstm"]
    assert plan["data"]["world"] == "calibrated"
    assert all(r["train_overrides"][0] == f"experiment=bench_calibrated_{r['model']}" for r in plan["runs"])
    assert any(o.endswith("data/bench_calibrated") for o in plan["runs"][0]["train_overrides"])


def test_tables_and_targets():
    def result(ap_vehicle: float, train_s: float) -> dict:
        metrics = {f"OBJECT_TYPE_TYPE_{c}_LEVEL_{lv}": {"AP": ap_vehicle if c == "VEHICLE" else 0.25, "APH": 0.2}
                   for c in ("VEHICLE", "PEDESTRIAN", "CYCLIST") for lv in (1, 2)}
        return {"train_overrides": ["experiment=x"], "eval_overrides": ["experiment=x"], "eval_frames": 160,
                "metrics": metrics, "occluded": {"metrics": metrics, "num_objects": {"1": 7}, "k": 3},
                "train_s": train_s, "train_step_s": 1.0, "train_steps": 100}

    results = {"single_frame": result(0.50, 100.0), "concat": result(0.55, 200.0), "lstm": result(0.60, 150.0)}
    costs = {"single_frame": paper_table.Cost(50.0, 100.0, 0.0, 10),
             "concat": paper_table.Cost(200.0, 400.0, 4000.0, 10, cpu_ms_per_frame=150.0),
             "lstm": paper_table.Cost(80.0, 150.0, 500.0, 10, cpu_ms_per_frame=60.0)}
    costs["single_frame"].cpu_ms_per_frame = 30.0
    meta = {"command": "cmd", "description": "desc", "work_dir": "W", "data_root": "D", "device": "cpu",
            "cost_frames": 10, "cost_rounds": 3, "png": "p.png"}
    text = paper_table.format_tables(results, costs, meta)
    assert "| lstm | 60.0 | 20.0 | 60.0 | 20.0 | 25.0 |" in text
    assert ("| concat | 55.0 (7) | 25.0 (0) | 25.0 (0) | 200.0 | 4.00 | 150.0 | 5.00 | 400.0 | 4.00 "
            "| 4000 | 200 | 2.00 | 1.00 | 100 |") in text
    assert "LSTM per-frame time <= 100 ms (sensor rate): wall 80 ms, CPU 60 ms — met" in text
    assert "LSTM >= single frame + 7.5 AP (vehicle LEVEL_1): +10.0 AP — met" in text
    assert "LSTM >= concat (vehicle LEVEL_1): +5.0 AP — met" in text
    assert "LSTM per-frame time <= 0.5x concat: 0.40x — met" in text
    assert "LSTM peak memory <= 0.5x concat: 0.38x — met" in text
    results["lstm"] = result(0.52, 150.0)
    assert "+2.0 AP — not met" in paper_table.format_tables(results, costs, meta)


def test_existing_split_made_otherwise_is_refused(tmp_path):
    (tmp_path / "bench_data.json").write_text(json.dumps({"segments": 1}))
    with pytest.raises(SystemExit, match="made with other options"):
        paper_table.ensure_data(tmp_path, dict(paper_table.BENCH_DATA))


REAL_LABELS = Path(REPO_ROOT).parent / "shared" / "waymo_fake" / "fake_ground_truths.bin"
if not REAL_LABELS.is_file():
    REAL_LABELS = Path(REPO_ROOT).parent.parent / "shared" / "waymo_fake" / "fake_ground_truths.bin"


@pytest.mark.slow  # ~40 s on an idle core (the calibrated world's five lidars), 2 min on a loaded one
@pytest.mark.skipif(not REAL_LABELS.is_file(), reason="no real Waymo labels (shared/waymo_fake) here")
def test_data_only_makes_the_calibrated_split_and_its_table(tmp_path, capsys):
    """``--data-only`` on a tiny calibrated split (generator 3, TOP narrowed): the store, the manifest with its
    generator, and the calibration table beside the real labels; a rerun reuses the store."""
    root = tmp_path / "bench"
    args = ["--data-only", "--data-root", str(root), "--workers", "1", "--real", str(REAL_LABELS),
            "--synth", "segments=1", "--synth", "val_segments=1", "--synth", "frames=2", "--synth", "top_width=512"]
    report = paper_table.main(args)
    manifest = json.loads((root / "bench_data.json").read_text())
    assert manifest["generator"] == 3 and manifest["world"] == "calibrated" and report["generator"] == 3
    table = (root / "calibration.md").read_text()
    assert "| VEHICLE | [50, 75] |" in table and "| PEDESTRIAN | [0, 30) |" in table and "Within bounds:" in table
    assert report["calibration"].rstrip() in capsys.readouterr().out
    assert paper_table.main(args)["calibration"] == report["calibration"]
    assert "complete, reused" in capsys.readouterr().out


def test_a_finished_model_is_reused(tmp_path):
    (run,) = paper_table.plan_runs("quick", ["lstm"], tmp_path / "data", tmp_path / "work", 0, None, "cpu", [])
    run.work.mkdir(parents=True)
    (run.work / "result.json").write_text(json.dumps({"train_overrides": run.train_overrides,
                                                      "eval_overrides": run.eval_overrides, "marker": 7}))
    assert paper_table.run_model(run, tmp_path / "data", 40.0, fresh=False)["marker"] == 7


#: Narrow models for the micro run (the overrides every model accepts).
TINY = ["data.clip_length=3", "data.stride=3", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
        "logging.tensorboard=false", "model.backbone.channels=[8,16]", "model.backbone.out_channels=8",
        "model.head.channels=8"]


def test_micro_run_writes_the_table(tmp_path):
    """Every phase for real on a tiny split (1 + 1 segments x 6 frames, 1 epoch, narrow models): data,
    training, evaluation, occlusion AP, cost in one process (+ the memory child), plot, table."""
    out = tmp_path / "table.md"
    args = ["--quick", "--generator", "2", "--models", "single_frame,lstm", "--data-root", str(tmp_path / "bench"),
            "--work-dir", str(tmp_path / "work"), "--out", str(out), "--threads", "1", "--workers", "1",
            "--cost-frames", "5", "--cost-rounds", "1",
            "--synth", "segments=1", "--synth", "val_segments=1", "--synth", "frames=6"]
    for o in TINY:
        args += ["--set", o]
    report = paper_table.main(args)
    text = out.read_text()
    assert "| single_frame |" in text and "| lstm |" in text and "LSTM >= single frame" in text
    assert out.with_suffix(".png").stat().st_size > 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["results"]) == {"single_frame", "lstm"}
    for name, cost in report["costs"].items():
        assert cost["ms_per_frame"] > 0 and cost["frames_timed"] == 2, name
        assert cost["peak_mb"] is None or cost["peak_mb"] >= 0
    assert report["costs"]["lstm"]["state_kb"] > 10 * report["costs"]["single_frame"]["state_kb"]  # poses only
    lstm = report["results"]["lstm"]
    assert lstm["eval_frames"] == 6 and lstm["train_steps"] == 1
    assert Path(lstm["checkpoint"]).is_file() and (tmp_path / "work" / "lstm" / "eval" / "predictions.bin").is_file()
    assert "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in lstm["occluded"]["metrics"]
    assert json.loads((tmp_path / "bench" / "bench_data.json").read_text())["frames"] == 6

    # what the state contributes (scripts/bench/state_history.py) on the same runs: the carried column
    # repeats the table's evaluation, the single-frame model ignores resets
    hist = state_history.main(["--work-dir", str(tmp_path / "work"), "--resets", "1,2,never", "--threads", "1",
                               "--out", str(tmp_path / "hist.md")])
    assert hist["frames"] == 6 and set(hist["models"]) == {"single_frame", "lstm"}
    for name, rows in hist["models"].items():
        table = report["results"][name]["metrics"]["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]
        assert rows["None"]["VEHICLE_LEVEL_1"] == pytest.approx(table), name
    sf = hist["models"]["single_frame"]
    assert sf["1"] == sf["2"] == sf["None"]
    assert "| lstm |" in (tmp_path / "hist.md").read_text()
    assert set(hist["state_coverage"]) == {"lstm"}          # the single-frame model has no state to cover
    assert 0 <= hist["state_coverage"]["lstm"]["unsupported"] <= 1


def test_state_coverage_counts_the_object_voxels_the_state_keeps():
    """Every object voxel is in a state that keeps every site; a state of a few sites keeps few of them."""
    from detector.models import build_model
    from tests.helpers.scenes import make_scene, make_stream_frames

    frames = make_stream_frames([make_scene(30)], num_frames=3, num_points=2500, seed=31)
    all_sites = state_history.state_coverage(
        build_model("lstm", ["model.temporal.top_k=1000000", "model.temporal.forget_after=null"]).eval(), frames)
    assert all_sites["object_voxels_kept"]["vehicle"] == 1.0
    assert 0 < all_sites["unsupported"] < 1                 # moved sites of earlier frames stay in the state
    few = state_history.state_coverage(build_model("lstm", ["model.temporal.top_k=20"]).eval(), frames)
    assert few["state_sites"] == 20 and few["object_voxels_kept"]["vehicle"] < 0.5
    assert state_history.state_coverage(build_model("single_frame").eval(), frames) is None


# -- docs/WAYMO.md ------------------------------------------------------------------------------------------
WAYMO_MD = Path(REPO_ROOT) / "docs" / "WAYMO.md"


def _doc_commands() -> list[tuple[str, list[str]]]:
    out = []
    for line in WAYMO_MD.read_text().splitlines():
        words = line.split()
        if len(words) > 3 and words[1] == "-m" and words[2] in ("detector.train", "detector.evaluate",
                                                                "detector.predict"):
            out.append((words[2].split(".")[1], words[3:]))
    return out


def test_waymo_md_commands_compose():
    commands = _doc_commands()
    assert {name for name, _ in commands} == {"train", "evaluate", "predict"} and len(commands) == 5
    for name, overrides in commands:
        cfg = paper_table.compose(name, overrides)
        assert cfg.data.root == "DATA/waymo" or name == "predict", overrides
        assert cfg.model.voxelizer.voxel_size == [0.2, 0.2, 0.2]
        if name == "train":
            assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 8


def test_waymo_md_submission_script(tmp_path, monkeypatch, capsys):
    import runpy

    from waymo_open_dataset.protos import submission_pb2

    text = WAYMO_MD.read_text()
    block = text.split("<!-- make_submission.py", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "make_submission.py"
    script.write_text(block)
    objs = detections_to_objects("ctx", 7, [_box(float(i), 0.0) for i in range(7)],
                                 [0.9, 0.5, 0.02, 0.4, 0.3, 0.2, 0.1], [1, 2, 4, 1, 1, 1, 1])
    objs[3].object.box.heading = float("nan")
    write_objects(tmp_path / "preds.bin", objs)
    monkeypatch.setattr(sys, "argv", ["make_submission.py", str(tmp_path / "preds.bin"), str(tmp_path / "sub")])
    runpy.run_path(str(script), run_name="__main__")
    assert "5 of 7 objects in 4 shards" in capsys.readouterr().out
    shards = [submission_pb2.Submission.FromString((tmp_path / "sub" / f"model{i}").read_bytes()) for i in range(4)]
    assert [len(s.inference_results.objects) for s in shards] == [2, 1, 1, 1]
    assert all(s.task == submission_pb2.Submission.DETECTION_3D and s.account_name and s.unique_method_name
               and len(s.unique_method_name) <= 25 for s in shards)
    assert (sorted(o.score for s in shards for o in s.inference_results.objects)
            == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.9]))
    assert (tmp_path / "sub.tar.gz").stat().st_size > 0


@pytest.mark.slow  # ~1 min on an idle core: three tiny trainings
def test_a_stopped_training_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """A signal after the first step stops the model's training with its step saved (exit status 75 in the
    message); ``resume`` goes on from it, the sittings' steps add up and the weights equal an uninterrupted run's."""
    import os
    import signal

    import torch

    data = tmp_path / "bench"
    options = dict(paper_table.BENCH_DATA, segments=1, val_segments=1, frames=12)
    paper_table.ensure_data(data, options, workers=1, generator=2)
    extra = TINY + ["data.batch_size=1", "torch_threads=1", "logging.plot=false"]

    def plan(work: str):
        (run,) = paper_table.plan_runs("quick", ["lstm"], data, tmp_path / work, 0, 1, "cpu", extra)
        return run

    whole = paper_table.run_model(plan("whole"), data, 40.0, fresh=False)
    assert whole["sittings"] == 1 and whole["train_steps"] >= 2

    class SignalOnce(paper_table.StepTimer):  # SIGUSR1 (a scheduler's stop signal) during the first step
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            super().on_train_batch_start(trainer, module, batch, batch_idx)
            if trainer.global_step == 0:
                os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(paper_table, "StepTimer", SignalOnce)
    with pytest.raises(SystemExit, match="--resume to go on \\(exit status 75\\)"):
        paper_table.run_model(plan("split"), data, 40.0, fresh=False)
    monkeypatch.undo()
    split_dir = tmp_path / "split" / "lstm"
    assert json.loads((split_dir / "sittings.json").read_text())[0]["steps"] == 1
    assert (split_dir / "train" / "checkpoints" / "last.ckpt").is_file() and not (split_dir / "result.json").exists()
    resumed = paper_table.run_model(plan("split"), data, 40.0, fresh=False, resume=True)
    assert resumed["sittings"] == 2 and resumed["train_steps"] == whole["train_steps"]
    a = torch.load(whole["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(resumed["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == whole["metrics"]
