"""Temporal 3D object detection on Waymo-format LiDAR sequences with a sparse convolutional LSTM."""

from pathlib import Path

__version__ = "0.1.0"

#: Hydra configuration folder, found relative to the package so no command depends on the cwd.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
