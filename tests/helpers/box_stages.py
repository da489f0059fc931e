"""Training a box stage (``detector.models.box_stage``) on the car-like shapes of ``tests.helpers.scenes``."""

from __future__ import annotations

import torch

from tests.helpers.scenes import car_boxes_and_points


def fit_on_cars(stage: torch.nn.Module, steps: int, cars: int = 16, lr: float = 3e-3) -> torch.nn.Module:
    """``stage`` trained (Adam) for ``steps`` steps, each on ``cars`` fresh labelled cars of one stream with
    300 points each (seeds 100, 101, ...); returned in eval mode."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(stage.parameters(), lr=lr)
    for step in range(steps):
        boxes, points = car_boxes_and_points(cars, seed=100 + step)
        pts = torch.cat([torch.zeros(len(points), 1), points, torch.zeros(len(points), 2)], dim=1)
        rows = torch.cat([torch.zeros(cars, 1), boxes], dim=1)
        loss = stage.loss(pts, rows, torch.ones(cars, dtype=torch.long), torch.full((cars,), 300))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stage.eval()
