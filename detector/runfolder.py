"""The Hydra run folder of every entry point, checked before Hydra writes into it.

Hydra creates the run folder (``hydra.run.dir``), opens the command's log file there and writes
``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` before any project code runs; on a full,
read-only or unwritable file system its own code fails with a traceback and leaves an empty log and a
half-made ``.hydra/``. ``RunFolderCheck`` is a Hydra callback (listed in ``_run_dir.yaml``, so every
command composing it has it; the viewer lists it itself) whose ``on_run_start`` runs after the config is
composed and before Hydra touches the folder: it makes the folder, and when Hydra will write files there
(a ``.hydra`` subfolder or a log file) writes and removes a probe of the size Hydra needs, plus a margin.
A refused write ends the command with exit status 2 and one line naming the run folder and the errno;
every folder the check made is removed again, so nothing is left behind.

    train: cannot write the run folder /full/run (hydra.run.dir): No space left on device (errno 28, ENOSPC); ...

One command's results to one run folder: ``FreshRunDir``, another callback of the same kind, refuses a
folder that already holds the fixed file names a command writes there (``detector.evaluate``:
``predictions.bin``, ``ground_truth.bin``, ``metrics.json``), so that one run's results never sit beside
another run's ``.hydra/config.yaml``; the earlier run's files are left exactly as they were.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detector.atomic import OutputError

#: errno values of a run folder that cannot be made or written: refused writes and impossible paths.
_RUN_FOLDER_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG,
                      errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}

#: Bytes written beyond what Hydra's own files take: the first lines of the command's log.
PROBE_MARGIN = 64 * 1024

_HINTS = {errno.ENOSPC: "free some space or set hydra.run.dir to a folder on another disk",
          errno.EDQUOT: "free some space or set hydra.run.dir to a folder on another disk",
          errno.EROFS: "the file system is read-only: set hydra.run.dir to a writable folder",
          errno.ENOTDIR: "a part of the path is a file: set hydra.run.dir to a folder",
          errno.EEXIST: "a part of the path is a file: set hydra.run.dir to a folder"}


def run_folder_error(run_dir: str | os.PathLike, exc: OSError) -> OutputError:
    """The one-line error of a run folder that cannot be written: the folder, the errno and what to do."""
    code = exc.errno or errno.EIO
    name = errno.errorcode.get(code, str(code))
    hint = _HINTS.get(code, "set hydra.run.dir to a writable folder")
    return OutputError(f"cannot write the run folder {run_dir} (hydra.run.dir): {os.strerror(code)} "
                       f"(errno {code}, {name}); {hint}")


def _missing_parents(path: Path) -> list[Path]:
    """The folders ``mkdir -p path`` would create, deepest first."""
    made = []
    p = path
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    return made


def _remove(folders: list[Path]) -> None:
    for d in folders:  # deepest first; only folders this check made, and only if still empty
        try:
            d.rmdir()
        except OSError:
            break


def prepare_run_folder(run_dir: str | os.PathLike, probe_bytes: int = 0) -> Path:
    """Make ``run_dir`` (``mkdir -p``) and, for ``probe_bytes > 0``, check that that many bytes can be
    written there (a hidden probe file, written, synced and removed). A refused write raises the
    ``OutputError`` of ``run_folder_error`` after removing every folder this call made; any other
    ``OSError`` (a bug) propagates."""
    run_dir = Path(run_dir)
    made = _missing_parents(run_dir.absolute())
    probe = run_dir / f".run_folder_probe.{os.getpid()}.tmp"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK | os.X_OK):
            ro = bool(os.statvfs(run_dir).f_flag & os.ST_RDONLY)
            raise OSError(errno.EROFS if ro else errno.EACCES, "not writable", str(run_dir))
        if probe_bytes > 0:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                block = b"\0" * min(probe_bytes, 1 << 20)
                left = probe_bytes
                while left > 0:
                    left -= os.write(fd, block[:left])
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
    except OSError as e:
        if e.errno not in _RUN_FOLDER_ERRORS:
            raise
        if probe.exists():
            probe.unlink()
        _remove(made)
        raise run_folder_error(run_dir, e) from e
    return run_dir


def hydra_writes(config: DictConfig) -> int:
    """Bytes Hydra will write into the run folder of ``config`` (its ``.hydra`` files and the start of a
    log file), 0 when it writes nothing there (``output_subdir: null`` and no file logging)."""
    hydra_cfg = config.hydra
    writes_subdir = hydra_cfg.get("output_subdir") is not None
    handlers = OmegaConf.select(config, "hydra.job_logging.handlers", default=None) or {}
    logs_to_file = any("filename" in (h or {}) for h in handlers.values())
    if not writes_subdir and not logs_to_file:
        return 0
    size = len(OmegaConf.to_yaml(config)) * 2 if writes_subdir else 0  # config.yaml + hydra.yaml (+ overrides)
    return size + PROBE_MARGIN


class RunFolderCheck(Callback):
    """Hydra callback: the run folder made and checked before Hydra writes into it (module docstring).
    ``prefix`` is the command's error prefix (``<prefix>: <message>``), the one its ``user_errors`` uses.

    ``resume_preempted`` (train): when ``hydra.run.dir`` was not given on the command line, the newest run
    folder next to the default one that a signal stopped with the same command line
    (``detector.preemption.find_preempted_run``) becomes this run's folder, so that the same command again
    goes on where the preempted run stopped."""

    def __init__(self, prefix: str = "error", resume_preempted: bool = False) -> None:
        self.prefix = prefix
        self.resume_preempted = bool(resume_preempted)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if self.resume_preempted:
            self._continue_preempted(config)
        run_dir = OmegaConf.select(config, "hydra.run.dir")
        try:
            prepare_run_folder(run_dir, hydra_writes(config))
        except OutputError as e:
            print(f"{self.prefix}: {e}", file=sys.stderr)
            sys.exit(2)

    @staticmethod
    def _continue_preempted(config: DictConfig) -> None:
        from omegaconf import open_dict, read_write

        from detector.preemption import find_preempted_run

        given = [o for o in OmegaConf.to_container(config.hydra.overrides.hydra) if o.startswith("hydra.run.dir=")]
        if given:
            return  # the user's folder: train resumes from its checkpoint if it has one
        default = Path(OmegaConf.select(config, "hydra.run.dir"))
        run = find_preempted_run(default.parent, OmegaConf.to_container(config.hydra.overrides.task))
        if run is None:
            return
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = str(run)
        print(f"continuing the preempted run in {run} (same command line; hydra.run.dir=DIR to choose another)",
              file=sys.stderr)


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


__all__ = ["PROBE_MARGIN", "FreshRunDir", "RunDirTakenError", "RunFolderCheck", "check_fresh_run_dir", "hydra_writes",
           "prepare_run_folder", "run_folder_error"]
