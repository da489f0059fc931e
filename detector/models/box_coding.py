"""Box code of a voxel: the box it belongs to, relative to the voxel centre and a class anchor size.

code (8): ``[dx, dy, dz, log(l/a_l), log(w/a_w), log(h/a_h), sin 2*theta, cos 2*theta]`` with
``d = box centre - voxel centre`` in metres, and a separate direction bit: whether the heading is the
axis angle ``atan2(sin 2t, cos 2t) / 2`` (in (-pi/2, pi/2]) or that plus pi. Regressing the doubled
angle keeps the target continuous for boxes whose front and back look alike; the direction bit is a
classification, so a front/back doubt never averages two headings into a wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from detector.boxes import heading_direction, wrap_angle

__all__ = ["BoxCoder", "DEFAULT_ANCHOR_SIZES"]


#: Typical (length, width, height) in metres per Waymo type, the reference of the log-size code.
DEFAULT_ANCHOR_SIZES = {1: (4.7, 2.1, 1.7), 2: (0.9, 0.9, 1.75), 3: (0.6, 0.6, 1.5), 4: (1.8, 0.8, 1.7)}


class BoxCoder:
    """Encode/decode boxes against voxel centres; ``anchor_sizes`` (C, 3), one row per class index."""

    code_size = 8

    def __init__(self, anchor_sizes: Sequence[Sequence[float]]) -> None:
        self.anchor_sizes = torch.tensor([[float(v) for v in a] for a in anchor_sizes], dtype=torch.float32)
        if self.anchor_sizes.ndim != 2 or self.anchor_sizes.shape[1] != 3 or (self.anchor_sizes <= 0).any():
            raise ValueError(f"BoxCoder: anchor_sizes must be (C, 3) positive, got {anchor_sizes}")

    def encode(
        self, boxes: torch.Tensor, centres: torch.Tensor, cls: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """boxes (N, 7), voxel centres (N, 3), class index (N,) -> (code (N, 8), direction (N,) float 0/1)."""
        anchors = self.anchor_sizes.to(boxes.device)[cls]
        theta = boxes[:, 6]
        code = torch.cat(
            [
                boxes[:, :3] - centres,
                torch.log(boxes[:, 3:6].clamp(min=1e-3) / anchors),
                torch.sin(2 * theta)[:, None],
                torch.cos(2 * theta)[:, None],
            ],
            dim=1,
        )
        return code, heading_direction(theta)

    def decode(
        self, code: torch.Tensor, dir_logits: torch.Tensor, centres: torch.Tensor, cls: torch.Tensor
    ) -> torch.Tensor:
        """Inverse of ``encode``: -> boxes (N, 7) with heading in [-pi, pi)."""
        anchors = self.anchor_sizes.to(code.device)[cls]
        centre = centres + code[:, :3]
        size = torch.exp(code[:, 3:6].clamp(max=6.0)) * anchors
        heading = wrap_angle(self.axis(code) + math.pi * (dir_logits > 0).float())
        return torch.cat([centre, size, heading[:, None]], dim=1)

    @staticmethod
    def axis(code: torch.Tensor) -> torch.Tensor:
        """(N,) the code's axis angle ``atan2(sin 2t, cos 2t) / 2`` in (-pi/2, pi/2]."""
        return 0.5 * torch.atan2(code[:, 6], code[:, 7])
