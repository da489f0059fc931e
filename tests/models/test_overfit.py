"""The LSTM detector learns every trained class: it overfits one tiny synthetic clip (vehicles with a
bonnet, so that their front shows; pedestrians; cyclists) to LEVEL_1 AP >= 0.9 for each class (Waymo
metrics, IoU 0.7 vehicles / 0.5 others) within a bounded number of seeded steps, and the headings of
its matched vehicle detections point the right way."""

import math

import numpy as np
import pytest
import torch

from detector.boxes.iou import iou3d
from detector.eval import WaymoMetrics
from detector.models import build_model
from tests.helpers.scenes import make_clip

MAX_STEPS = 300
TARGET_AP = 0.9
TARGET_DIRECTION = 0.9
CLASSES = ("VEHICLE", "PEDESTRIAN", "CYCLIST")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scores(model, clip) -> tuple[dict[str, float], float]:
    """Stream the clip's frames through the model (as evaluation does): AP per class, and the share of
    vehicles matched at IoU 0.7 whose detection heading is within 90 degrees of the truth."""
    model.eval()
    metrics = WaymoMetrics()
    detections = model.offline_segment(clip.frames)
    right, matched = 0, 0
    for t, frame in enumerate(clip.frames):
        for b in range(frame.batch_size):
            sel = frame.boxes[:, 0] == b
            gt, types = frame.boxes[sel, 1:].double().numpy(), frame.types[sel].numpy()
            det = detections[t][b]
            boxes, dtypes = det.boxes.double().numpy(), det.types.numpy()
            metrics.add_frame(
                (b, t), gt, types, frame.num_points[sel].numpy(), frame.difficulty[sel].numpy(),
                boxes, det.scores.double().numpy(), dtypes,
            )
            veh, dveh = gt[types == 1], boxes[dtypes == 1]
            if len(veh) and len(dveh):
                iou = iou3d(dveh, veh)
                for j in range(len(veh)):
                    i = int(np.argmax(iou[:, j]))
                    if iou[i, j] >= 0.7:
                        matched += 1
                        err = abs((dveh[i, 6] - veh[j, 6] + math.pi) % (2 * math.pi) - math.pi)
                        right += int(err < math.pi / 2)
    model.train()
    result = metrics.compute()
    return {c: result[f"OBJECT_TYPE_TYPE_{c}_LEVEL_1"]["AP"] for c in CLASSES}, right / max(matched, 1)


@pytest.mark.slow
def test_lstm_overfits_all_classes_and_headings():
    torch.manual_seed(0)
    model = build_model("lstm")
    clip = make_clip(num_frames=3, batch_size=1, num_points=6000, seed=1, bonnets=True, num_pedestrians=6,
                     num_cyclists=4)
    types = clip.frames[0].types
    assert int((types == 1).sum()) >= 5 and int((types == 2).sum()) >= 4 and int((types == 4).sum()) >= 3
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(1, MAX_STEPS + 1):
        loss = model(clip).losses["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 100 and step % 25 == 0:
            ap, direction = _scores(model, clip)
            history.append((step, round(loss.item(), 3), {k: round(v, 3) for k, v in ap.items()}, round(direction, 3)))
            if min(ap.values()) >= TARGET_AP and direction >= TARGET_DIRECTION:
                break
    print("(step, loss, AP per class, vehicle heading direction accuracy):", history)
    ap, direction = history[-1][2], history[-1][3]
    assert min(ap.values()) >= TARGET_AP, f"(step, loss, AP, direction): {history}"
    assert direction >= TARGET_DIRECTION, f"(step, loss, AP, direction): {history}"
