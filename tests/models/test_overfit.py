"""The LSTM detector learns: it overfits one tiny synthetic clip to vehicle AP@0.7 >= 0.9 (Waymo
metrics, LEVEL_1) within a bounded number of seeded steps."""

import pytest
import torch

from detector.eval import WaymoMetrics
from detector.models import build_model
from tests.helpers.scenes import make_clip

MAX_STEPS = 240
TARGET_AP = 0.9


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vehicle_ap(model, clip) -> float:
    """Stream the clip's frames through the model (as evaluation does) and score them."""
    model.eval()
    metrics = WaymoMetrics()
    detections = model.offline_segment(clip.frames)
    for t, frame in enumerate(clip.frames):
        for b in range(frame.batch_size):
            sel = frame.boxes[:, 0] == b
            det = detections[t][b]
            metrics.add_frame(
                (b, t), frame.boxes[sel, 1:].double().numpy(), frame.types[sel].numpy(),
                frame.num_points[sel].numpy(), frame.difficulty[sel].numpy(),
                det.boxes.double().numpy(), det.scores.double().numpy(), det.types.numpy(),
            )
    model.train()
    return metrics.compute()["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"]


def test_lstm_overfits_a_tiny_clip():
    torch.manual_seed(0)
    model = build_model("lstm")
    clip = make_clip(num_frames=3, batch_size=1, num_points=6000, seed=1)
    assert int((clip.frames[0].types == 1).sum()) >= 5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(1, MAX_STEPS + 1):
        loss = model(clip).losses["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 80 and step % 20 == 0:
            history.append((step, round(loss.item(), 3), _vehicle_ap(model, clip)))
            if history[-1][2] >= TARGET_AP:
                break
    print("(step, loss, vehicle AP@0.7):", history)
    assert history[-1][2] >= TARGET_AP, f"(step, loss, vehicle AP@0.7): {history}"
