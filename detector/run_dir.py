"""One command's results to one run folder: a command that writes fixed file names into its Hydra run
folder (``detector.evaluate``: ``predictions.bin``, ``ground_truth.bin``, ``metrics.json``) refuses a
folder that already holds them, so that one run's results never sit beside another run's
``.hydra/config.yaml``.

``FreshRunDir`` is a Hydra callback (``hydra.callbacks`` in the command's config): it runs before Hydra
creates the folder or writes ``.hydra/``, so the earlier run's files are left exactly as they were.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detector.atomic import OutputError

__all__ = ["RunDirTakenError", "check_fresh_run_dir", "FreshRunDir"]


class RunDirTakenError(OutputError):
    """The run folder already holds another run's results."""


def check_fresh_run_dir(run_dir: str | os.PathLike, outputs: Sequence[str], what: str = "run") -> None:
    """Refuse ``run_dir`` when it holds any of ``outputs`` (file names) already."""
    run_dir = Path(run_dir)
    found = [n for n in outputs if (run_dir / n).exists()]
    if found:
        raise RunDirTakenError(
            f"hydra.run.dir={run_dir}: already holds the results of an earlier {what} ({', '.join(found)}); "
            "give this one a folder of its own (another hydra.run.dir=, or leave it out for a new dated folder)")


class FreshRunDir(Callback):
    """Hydra callback: before the run folder is made, exit with status 2 and one line
    ``<command>: ...`` when it already holds any of ``outputs``."""

    def __init__(self, command: str, outputs: Sequence[str], what: str = "run") -> None:
        self.command, self.outputs, self.what = command, list(outputs), what

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except OmegaConfBaseException:
            return  # Hydra reports an unresolvable run dir itself
        if run_dir is None:
            return
        try:
            check_fresh_run_dir(run_dir, self.outputs, self.what)
        except RunDirTakenError as e:
            print(f"{self.command}: {e}", file=sys.stderr)
            sys.exit(2)
