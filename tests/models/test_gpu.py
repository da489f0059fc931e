"""Every small model config on CUDA (spconv's own kernels) against the CPU path (the project's
sparse-conv layers): same losses and detections; training and streaming run on the GPU."""

import pytest
import torch

from detector.models import build_model
from tests.helpers.scenes import make_clip

pytestmark = pytest.mark.gpu

CONFIGS = ["lstm", "gru", "peephole", "coupled", "lstm_stacked", "lstm_bidirectional", "single_frame", "concat"]


@pytest.mark.parametrize("name", CONFIGS)
def test_cuda_matches_cpu_and_trains(name):
    from spconv.core import ConvAlgo

    clip = make_clip(num_frames=3, batch_size=2, num_points=8000, seed=3)
    torch.manual_seed(0)
    model = build_model(name, ["model.head.score_threshold=0.0", "model.head.pre_nms=200"]).eval()
    # spconv picks its CUDA algorithm when the layer is built on a CUDA machine; the CPU path needs Native
    algos = {m: m.algo for m in model.modules() if hasattr(m, "algo")}
    results = {}
    for device in ("cpu", "cuda"):
        for m, algo in algos.items():
            m.algo = ConvAlgo.Native if device == "cpu" else algo
        model.to(device)
        with torch.no_grad():
            out = model(clip.to(device), decode=True)
        results[device] = out
    cpu, gpu = results["cpu"], results["cuda"]
    for key, value in cpu.losses.items():
        assert torch.allclose(value, gpu.losses[key].cpu(), rtol=1e-4, atol=1e-5), key
    for t in range(len(clip)):
        for b in range(clip.batch_size):
            a, g = cpu.detections[t][b], gpu.detections[t][b].cpu()
            assert abs(len(a) - len(g)) <= 2  # score ties at the NMS boundary may differ
            k = min(len(a), len(g), 5)
            assert torch.allclose(a.boxes[:k], g.boxes[:k], atol=1e-3)

    model.train()
    loss = model(clip.to("cuda")).losses["loss"]
    loss.backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.eval()
    if model.is_causal:
        state = model.init_state(2)
        for frame in clip.frames:
            dets, state = model.step(frame.to("cuda"), state)
        assert dets[0].boxes.is_cuda
