"""``detector.train ... trainer.precision=bf16-mixed`` on the CPU (Lightning's CPU autocast): the three model
families train and validate, with the training losses of ``32-true`` on the same data."""

import pytest
from omegaconf import OmegaConf

from detector.config import compose
from tests.cli.test_train import TINY
from tests.helpers.datasets import make_tiny_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: the narrow model of the entry-point tests without the recurrent state's keys (concat, single_frame)
TINY_NO_STATE = [o for o in TINY if not o.startswith("model.temporal.")]


def _train_cfg(store, out, extra, tiny):
    cfg = compose("train", ["experiment=demo_synthetic", f"data.root={store}", "data.num_workers=0",
                            "data.batch_size=2", "data.clip_length=3", "data.stride=3", "trainer.max_epochs=1",
                            "trainer.enable_progress_bar=false", "logging.tensorboard=false", *extra, *tiny])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(out)
    return cfg


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    _, store = make_tiny_dataset(tmp_path_factory.mktemp("tiny"), segments=2, frames=6, seed=0, val_segments=1)
    return store


@pytest.mark.parametrize("model", ["lstm", pytest.param("concat", marks=pytest.mark.slow),
                                   pytest.param("single_frame", marks=pytest.mark.slow)])
def test_bf16_mixed_trains_and_validates_like_fp32(store, tmp_path, model):
    from detector.train import train

    metrics = {}
    for precision in ("32-true", "bf16-mixed"):
        extra = [f"model={model}", f"trainer.precision={precision}", "trainer.check_val_every_n_epoch=1",
                 "logging.plot=false"]
        cfg = _train_cfg(store, tmp_path / precision, extra, tiny=TINY if model == "lstm" else TINY_NO_STATE)
        metrics[precision] = train(cfg)["metrics"]
    fp32, bf16 = metrics["32-true"], metrics["bf16-mixed"]
    assert "val/loss" in bf16 and "val/AP_vehicle_level_1" in bf16
    for key in ("train/loss_epoch", "val/loss"):
        assert bf16[key] == pytest.approx(fp32[key], rel=2e-2), key
