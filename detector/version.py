"""The package's version, as ``detector.__version__`` reports it and training checkpoints store it.

Read from the installed package's metadata (``setup.cfg``'s ``version`` at install time). In a source
checkout, ``setup.cfg`` beside the package is read instead: there it is the truth, and the metadata of an
editable install is the version of the day it was installed, stale after a bump until the next install.
Nothing here imports torch or the rest of the package, so every layer may import it.
"""

from __future__ import annotations

import configparser
from importlib import metadata
from pathlib import Path

#: the distribution name in setup.cfg
DISTRIBUTION = "lstm-detector"

#: the key of a training checkpoint that holds the version that wrote it, beside ``hyper_parameters``
#: (absent in checkpoints written before 0.2.0)
CHECKPOINT_KEY = "detector_version"


def _source_version() -> str | None:
    """``setup.cfg``'s version when the package is imported from a source checkout of this distribution."""
    setup_cfg = Path(__file__).resolve().parent.parent / "setup.cfg"
    if not setup_cfg.is_file():
        return None
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    if parser.get("metadata", "name", fallback=None) != DISTRIBUTION:
        return None
    return parser.get("metadata", "version", fallback=None)


def package_version() -> str:
    """This package's version: the source checkout's ``setup.cfg``, else the installed metadata, else
    ``0+unknown`` (a copy of the package that is neither installed nor in a checkout)."""
    found = _source_version()
    if found:
        return found
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = package_version()
