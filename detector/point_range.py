"""The point range ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (metres, vehicle frame): its check and
the one crop rule, shared by the data pipeline (numpy) and the voxel grid (torch).

The rule: lower bounds inclusive, upper bounds exclusive, so that a point on an upper face falls in no
voxel cell and is dropped everywhere alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_point_range", "in_point_range"]


def check_point_range(values: Sequence[float], what: str = "point_range") -> list[float]:
    """``values`` as six floats with each maximum above its minimum, or a ``ValueError`` naming ``what``."""
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be [x_min, y_min, z_min, x_max, y_max, z_max], got {values!r}") from e
    if len(out) != 6 or any(out[i + 3] <= out[i] for i in range(3)):
        raise ValueError(f"{what} must be [x_min, y_min, z_min, x_max, y_max, z_max] with each max > min, "
                         f"got {list(values)}")
    return out


def in_point_range(xyz, point_range):
    """Mask of the rows of ``xyz`` (N, 3), a numpy array or a torch tensor, that lie in ``point_range``
    (lower bounds inclusive, upper bounds exclusive)."""
    if isinstance(xyz, np.ndarray):
        r = np.asarray(point_range, dtype=xyz.dtype)
        return np.all((xyz >= r[:3]) & (xyz < r[3:]), axis=1)
    import torch

    r = torch.as_tensor(list(point_range), dtype=xyz.dtype, device=xyz.device)
    return ((xyz >= r[:3]) & (xyz < r[3:])).all(dim=1)
