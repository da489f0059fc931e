"""DDP on the CPU (gloo), 2 and 3 ranks started side by side as a cluster would start them
(``tests/helpers/ddp.py``): a rank without validation segments, a rank-0 checkpoint write failure,
a resumed run. No rank hangs; the validation metrics are those of one process on the same data."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from tests.helpers.datasets import make_tiny_dataset
from tests.helpers.ddp import launch_ranks
from tests.helpers.faults import TINY_MODEL, read_only
from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIMEOUT = 420

#: one rank process: trains as configured, reports its metrics and every config it saved
RANK_SCRIPT = """
import json, os, sys, torch
from omegaconf import OmegaConf
sys.path.insert(0, {repo!r})
from tests.cli.test_ddp import ddp_cfg
from detector.train import train

rank = int(os.environ["LOCAL_RANK"])
save = OmegaConf.save
def reported_save(config, f, resolve=False):
    print("SAVED", rank, f, flush=True)
    save(config, f, resolve=resolve)
OmegaConf.save = reported_save
torch.set_num_threads(1)
res = train(ddp_cfg(*json.loads(sys.argv[1])))
flat = torch.cat([p.detach().flatten().double()
                  for p in torch.load(res["last_checkpoint"], weights_only=False)["state_dict"].values()])
print("RESULT", rank, json.dumps(res["metrics"]), float(flat.sum()), flush=True)
"""


def ddp_cfg(store: str, out: str, devices: int, extra: list[str]):
    from omegaconf import OmegaConf

    from detector.config import compose

    cfg = compose("train", ["experiment=demo_synthetic", f"data.root={store}", "data.num_workers=0",
                            "data.batch_size=1", "data.clip_length=3", "data.stride=3", "trainer.max_epochs=1",
                            "trainer.limit_train_batches=1", "trainer=ddp", "trainer.accelerator=cpu",
                            f"trainer.devices={devices}", "trainer.sync_batchnorm=false",
                            "trainer.check_val_every_n_epoch=1",
                            "trainer.enable_progress_bar=false", "logging.tensorboard=false", "logging.plot=false",
                            *TINY_MODEL, *extra])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = out
    return cfg


def run_ranks(tmp_path: Path, store: Path, out: Path, devices: int, extra: list[str] = ()) -> list[dict]:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT.format(repo=REPO_ROOT))
    ranks = launch_ranks([sys.executable, str(script), json.dumps([str(store), str(out), devices, list(extra)])],
                         devices, TIMEOUT)
    results = []
    for rank, (code, stdout, stderr) in enumerate(ranks):
        assert code == 0, f"rank {rank} exit {code}:\n{stderr[-3000:]}"
        m = re.search(r"RESULT (\d+) (\{.*\}) (\S+)", stdout)
        assert m and int(m.group(1)) == rank, stdout[-2000:]
        results.append({"metrics": json.loads(m.group(2)), "checksum": float(m.group(3)),
                        "saved": re.findall(rf"SAVED {rank} (\S+train_config.yaml)", stdout)})
    return results


def validate_in_one_process(store: Path, ckpt: Path) -> dict:
    from detector.lit_module import DetectorModule

    cfg = ddp_cfg(str(store), "", 1, [])
    module = DetectorModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return trainer.validate(module, datamodule=instantiate(cfg.data, seed=int(cfg.seed)), verbose=False)[0]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Validation splits of 1 and 2 segments: with 2 and 3 ranks, one rank owns none."""
    root = tmp_path_factory.mktemp("ddp")
    return {n: make_tiny_dataset(root / f"val{n}", segments=2, frames=6, seed=0, val_segments=n)[1] for n in (1, 2)}


@pytest.mark.slow  # 90 s wall for 2 ranks on 2 shared cores
@pytest.mark.parametrize("devices", [2, 3])
def test_rank_without_validation_segments_and_one_process_metrics(stores, tmp_path, devices):
    store = stores[devices - 1]
    out = tmp_path / "run"
    results = run_ranks(tmp_path, store, out, devices)
    # every rank ends with the same weights and the same merged validation metrics
    assert len({r["checksum"] for r in results}) == 1
    val = {k: v for k, v in results[0]["metrics"].items() if k.startswith("val/")}
    assert "val/loss" in val and "val/AP_vehicle_level_1" in val
    assert all({k: r["metrics"][k] for k in val} == val for r in results)
    # the config is written once, by rank 0
    assert results[0]["saved"] == [str(out / "train_config.yaml")]
    assert all(not r["saved"] for r in results[1:])
    # one process validating the checkpoint on the whole split gets the same numbers
    single = validate_in_one_process(store, out / "checkpoints" / "last.ckpt")
    for key, value in val.items():
        assert single[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.slow
def test_rank0_checkpoint_write_failure_ends_every_rank(stores, tmp_path):
    """Rank 0 cannot write its checkpoint (read-only disk): every rank stops with one error line, exit 2;
    none is left waiting at a barrier."""
    out = tmp_path / "run"
    out.mkdir()
    with read_only(out / "checkpoints"):
        args = ["-m", "detector.train", "experiment=demo_synthetic", f"data.root={stores[1]}", "data.num_workers=0",
                "data.batch_size=1", "data.clip_length=3", "data.stride=3", "trainer.max_epochs=1", "trainer=ddp",
                "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",
                "trainer.enable_progress_bar=false", "module.validation_metrics=false", "logging.tensorboard=false",
                "logging.plot=false", f"hydra.run.dir={out}", "hydra.output_subdir=null", *TINY_MODEL]
        ranks = launch_ranks([sys.executable, *args], 2, TIMEOUT)
    ckpt = str(out / "checkpoints" / "last.ckpt")
    for rank, (code, _, stderr) in enumerate(ranks):
        assert code == 2, f"rank {rank} exit {code}:\n{stderr[-3000:]}"
        assert "Traceback" not in stderr, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and ckpt in errors[0], stderr[-3000:]
    assert "rank 0" in [line for line in ranks[1][2].splitlines() if line.startswith("error:")][0]


@pytest.mark.slow
def test_resumed_ddp_run_ends_with_the_uninterrupted_weights(stores, tmp_path):
    store = stores[1]
    whole = run_ranks(tmp_path, store, tmp_path / "whole", 2, ["trainer.max_epochs=2"])
    run_ranks(tmp_path, store, tmp_path / "part", 2, ["trainer.max_epochs=1"])
    resumed = run_ranks(tmp_path, store, tmp_path / "part", 2,
                        ["trainer.max_epochs=2", f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"])
    assert resumed[0]["checksum"] == resumed[1]["checksum"] == whole[0]["checksum"]
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
