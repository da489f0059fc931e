"""Mixed precision on the CPU: every model config trains and decodes under CPU autocast (bfloat16) with
the losses of float32 (the head's outputs and every loss are float32 under any autocast), and the
Lightning ``trainer.precision=bf16-mixed`` loop trains and validates (docs/studies/gpu_path.md)."""

import copy
from pathlib import Path

import pytest
import torch

from detector import CONFIG_DIR
from detector.models import build_model
from tests.helpers.scenes import make_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
#: the waymo_* models at paper scale are the GPU check's (scripts/gpu_check.sh); here, narrower
NARROW = {"model.backbone.channels=[8,8,8,8,8,8]", "model.backbone.out_channels=8", "model.head.channels=8"}
NARROW_TEMPORAL = ["model.temporal.hidden_channels=8", "model.temporal.gate_channels=8"]


def _model(name: str):
    overrides = ["model.head.score_threshold=0.0", "model.head.pre_nms=100"]
    if name.startswith("waymo_"):
        overrides += sorted(NARROW) + (NARROW_TEMPORAL if name == "waymo_lstm" else [])
        overrides += ["data.point_range=[-40,-40,-2,40,40,4]"]
    return build_model(name, overrides, data="synthetic" if name.startswith("waymo_") else None)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_autocast_trains_and_decodes_like_fp32(name):
    clip = make_clip(num_frames=2, batch_size=2, num_points=3000, seed=3)
    torch.manual_seed(0)
    model = _model(name).train()
    twin = copy.deepcopy(model)  # the box stages draw from a counter: both start from the same one
    ref = model(clip).losses
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = twin(clip)
        loss = out.losses["loss"]
    assert set(out.losses) == set(ref)
    for key, value in ref.items():
        assert out.losses[key].dtype == torch.float32, key
        assert torch.allclose(out.losses[key], value, rtol=5e-3, atol=1e-3), (key, float(out.losses[key]), float(value))
    loss.backward()
    grads = [p.grad for p in twin.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        ref_dets = model(clip, decode=True).detections[-1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            dets = model(clip, decode=True).detections[-1]
    for a, b in zip(ref_dets, dets):
        assert b.boxes.dtype == b.scores.dtype == torch.float32
        # an untrained model's boxes are near-duplicates, so that NMS keeps a count that rounding moves;
        # the best scores agree to bfloat16's rounding of the last linear layer
        assert len(a) > 0 and len(b) > 0
        k = min(len(a), len(b), 10)
        assert torch.allclose(a.scores[:k], b.scores[:k], atol=2e-3)
