"""Temporal 3D object detection on Waymo-format LiDAR sequences with a sparse convolutional LSTM."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

#: The repository root and its Hydra configuration folder, found relative to the package so that no
#: command depends on the working directory.
REPO_ROOT = str(Path(__file__).resolve().parent.parent)
CONFIG_DIR = str(Path(REPO_ROOT) / "configs")

# ``${repo_root:}`` in configs: default data and output locations that work from any folder.
OmegaConf.register_new_resolver("repo_root", lambda: REPO_ROOT, replace=True)
