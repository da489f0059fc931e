"""Where the detector runs: ``device=auto|cpu|cuda[:N]`` of the entry points."""

from __future__ import annotations

import torch

from detector.errors import InputError


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when torch sees a device, else the CPU; ``cuda`` without one is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={name} asked for, but torch sees no CUDA device")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise InputError(f"device={name!r}: not a device (auto, cpu, cuda, cuda:N)") from e
