"""The configs cannot disagree: the model reads the data's range and time-gap threshold, derives its input
width, and a one-sided override (or a checkpoint trained on another range) is refused with both keys named.
Also: no import-time side effects, thread count restored after a command."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from detector.checkpoints import check_checkpoint_fits_data
from detector.config import ConfigMismatchError, compose
from detector.data.clips import frame_resets, max_gap_micros
from detector.errors import UserError
from detector.models import build_model
from tests.helpers.paths import REPO_ROOT
from tests.helpers.scenes import make_scene, make_stream_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WAYMO_RANGE = [-75.2, -75.2, -3.0, 75.2, 75.2, 4.0]
NARROW = [-20.0, -20.0, -3.0, 20.0, 20.0, 4.0]


@pytest.mark.parametrize("data,model", [("synthetic", "lstm"), ("waymo", "lstm"), ("synthetic", "waymo_lstm"),
                                        ("waymo", "concat")])
def test_the_model_reads_the_data_range_and_gap(data, model):
    cfg = compose("train", [f"data={data}", f"model={model}", "data.max_gap_s=0.3"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["voxelizer"]["point_range"] == resolved["data"]["point_range"]
    assert resolved["model"]["max_gap_s"] == resolved["data"]["max_gap_s"] == 0.3


def test_build_model_takes_the_range_from_its_data_config():
    assert build_model("lstm").voxelizer.point_range == [-40.0, -40.0, -3.0, 40.0, 40.0, 4.0]
    assert build_model("waymo_single_frame").voxelizer.point_range == WAYMO_RANGE
    assert build_model("lstm", data="waymo").voxelizer.point_range == WAYMO_RANGE
    assert build_model("lstm", [f"data.point_range={NARROW}"]).voxelizer.point_range == NARROW
    with pytest.raises(ConfigMismatchError, match=r"model.voxelizer.point_range=\[-20.0.*data.point_range=\[-40.0"):
        build_model("lstm", [f"model.voxelizer.point_range={NARROW}"])


def test_backbone_input_width_is_derived():
    assert build_model("lstm").backbone.in_channels == 7
    assert build_model("single_frame").backbone.in_channels == 7
    assert build_model("concat").backbone.in_channels == 8  # + the time-offset channel
    assert build_model("waymo_concat").backbone.in_channels == 8
    cfg = compose("train", ["model=concat"])
    assert OmegaConf.to_container(cfg.model, resolve=True)["backbone"]["in_channels"] == 8


@pytest.mark.parametrize("override,keys", [
    (f"model.voxelizer.point_range={NARROW}", ("model.voxelizer.point_range", "data.point_range")),
    ("model.max_gap_s=1.0", ("model.max_gap_s=1.0", "data.max_gap_s=0.5")),
])
def test_one_sided_override_is_refused(override, keys, tmp_path):
    from detector.evaluate import evaluate
    from detector.train import train

    cfg = compose("train", ["experiment=demo_synthetic", f"data.root={tmp_path}", override])
    with pytest.raises(ConfigMismatchError) as e:
        train(cfg)
    assert all(k in str(e.value) for k in keys), e.value
    ecfg = compose("evaluate", ["experiment=demo_synthetic", f"ckpt_path={tmp_path / 'x.ckpt'}", override])
    with pytest.raises(ConfigMismatchError):
        evaluate(ecfg)
    assert not list(tmp_path.iterdir()), "nothing is written before the refusal"


def _checkpoint(path: Path, data_overrides: list[str]) -> Path:
    """A checkpoint as detector.train writes it (weights and the resolved model config of the module)."""
    from detector.lit_module import DetectorModule

    cfg = compose("train", ["experiment=demo_synthetic", *data_overrides])
    module = DetectorModule(model_cfg=OmegaConf.to_container(cfg.model, resolve=True))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 0}, path)
    return path


def test_checkpoint_trained_on_another_range_is_refused(tmp_path):
    from detector.evaluate import evaluate
    from detector.predict import predict

    ckpt = _checkpoint(tmp_path / "narrow.ckpt", [f"data.point_range={NARROW}"])
    data = compose("evaluate", ["experiment=demo_synthetic", "ckpt_path=x"]).data
    with pytest.raises(ConfigMismatchError, match=r"point_range=\[-20.0.*data.point_range=\[-40.0"):
        check_checkpoint_fits_data(ckpt, data)
    check_checkpoint_fits_data(ckpt, compose("evaluate", ["ckpt_path=x", f"data.point_range={NARROW}"]).data)

    ecfg = compose("evaluate", ["experiment=demo_synthetic", f"ckpt_path={ckpt}", "device=cpu",
                                f"data.root={tmp_path / 'nowhere'}"])
    OmegaConf.set_struct(ecfg, False)
    ecfg.output_dir = str(tmp_path / "eval")
    with pytest.raises(ConfigMismatchError):
        evaluate(ecfg)
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "seg.tfrecord").write_bytes(b"")
    pcfg = compose("predict", ["experiment=demo_synthetic", f"ckpt_path={ckpt}", "device=cpu",
                               f"input={tmp_path / 'records'}"])
    OmegaConf.set_struct(pcfg, False)
    pcfg.output_dir = str(tmp_path / "pred")
    with pytest.raises(ConfigMismatchError):
        predict(pcfg)
    assert not (tmp_path / "pred" / "predictions.bin").exists()


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = REPO_ROOT  # this checkout's package, whatever is installed
    return subprocess.run([sys.executable, "-m", module, *args, f"hydra.run.dir={cwd / 'run'}"],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_mismatch_exits_2_naming_both_keys(tmp_path):
    r = _cli("detector.train", "experiment=demo_synthetic", f"model.voxelizer.point_range={NARROW}".replace(" ", ""),
             cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "model.voxelizer.point_range=[-20.0" in r.stderr and "data.point_range=[-40.0" in r.stderr

    ckpt = _checkpoint(tmp_path / "narrow.ckpt", [f"data.point_range={NARROW}"])
    r = _cli("detector.evaluate", "experiment=demo_synthetic", f"ckpt_path={ckpt}", f"data.root={tmp_path}",
             cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "model.voxelizer.point_range=[-20.0" in r.stderr and "data.point_range=[-40.0" in r.stderr


@pytest.mark.parametrize("max_gap_s", [0.3, 0.5, 0.1, 1.7])
def test_data_and_model_use_one_gap_threshold(max_gap_s):
    """``frame_resets`` (data) and ``Detector`` (model) restart the state for the same steps: the threshold
    is one number, ``max_gap_micros`` (0.3 s * 1e6 is 299999.99999999994 in floats: 300000 us for both)."""
    micros = max_gap_micros(max_gap_s)
    assert micros == round(max_gap_s * 1e6)
    model = build_model("lstm", [f"data.max_gap_s={max_gap_s}"]).eval()
    frames = make_stream_frames([make_scene(3)], num_frames=2, num_points=1500, seed=1)
    with torch.no_grad():
        _, state = model.step(frames[0], model.init_state(1))
    t0 = int(state.timestamps[0])
    for step in (micros - 1, micros, micros + 1):
        late = replace(frames[1], timestamps=torch.tensor([t0 + step]), reset=torch.tensor([False]))
        data_reset = bool(frame_resets([t0, t0 + step], max_gap_s)[1])
        assert bool(model._reset_mask(late, state)[0]) == data_reset == (step > micros), step


def test_torch_threads_are_restored_after_a_command(tmp_path):
    from detector.evaluate import evaluate

    before = torch.get_num_threads()
    cfg = compose("evaluate", ["experiment=demo_synthetic", f"ckpt_path={tmp_path / 'missing.ckpt'}",
                               f"torch_threads={before + 1}"])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(tmp_path / "eval")
    with pytest.raises(UserError, match="checkpoint not found"):
        evaluate(cfg)
    assert torch.get_num_threads() == before


def test_importing_the_package_changes_nothing_global():
    """No resolver registered and no matplotlib backend chosen by importing the modules."""
    code = """
import matplotlib
from omegaconf import OmegaConf
backend = dict.__getitem__(matplotlib.rcParams, "backend")
import detector, detector.config, detector.plots, detector.metrics, detector.train, detector.evaluate
import detector.predict, detector.visualize, detector.models, data_tools.synthesize, data_tools.convert_waymo
assert not OmegaConf.has_resolver("voxel_features") and not OmegaConf.has_resolver("repo_root")
assert dict.__getitem__(matplotlib.rcParams, "backend") is backend, dict.__getitem__(matplotlib.rcParams, "backend")
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"PYTHONPATH": REPO_ROOT}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
