"""Temporal 3D object detection on Waymo-format LiDAR sequences with a sparse convolutional LSTM."""

from pathlib import Path

from detector.version import __version__  # noqa: F401  (setup.cfg's version; detector/version.py)

#: The Hydra configuration folder, shipped inside the package (package data), found relative to this
#: file: no command depends on the working directory or on a source checkout. Composing the configs
#: needs ``detector.config.register_resolvers()`` (the entry points and ``detector.config.compose`` call it).
CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")
