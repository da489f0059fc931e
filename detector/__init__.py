"""Temporal 3D object detection on Waymo-format LiDAR sequences with a sparse convolutional LSTM."""

from pathlib import Path

from detector.version import __version__  # noqa: F401  (setup.cfg's version; detector/version.py)


def _config_dir() -> str:
    """The installed package's copy (``detector/configs``, package data of ``pip install .``), else the
    source checkout's top-level ``configs/`` (a checkout on ``sys.path`` or an editable install). Nothing
    is raised at import: without either, Hydra names the missing folder when a command composes a config."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return str(installed if installed.is_dir() else here.parent / "configs")


#: The Hydra configuration folder, found relative to this file, so that no command depends on the working
#: directory: ``<checkout>/configs`` in a source checkout, ``detector/configs`` inside an installed package
#: (setup.cfg maps the top-level folder there). Composing the configs needs
#: ``detector.config.register_resolvers()`` (the entry points and ``detector.config.compose`` call it).
CONFIG_DIR = _config_dir()
