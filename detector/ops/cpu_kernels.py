"""Build and load the compiled CPU sparse-convolution kernels (``csrc/sparse_conv_cpu.cpp``).

The extension is built once, by ``scripts/setup.sh`` (``python -m detector.ops.cpu_kernels``), with
the system C++ compiler through ``torch.utils.cpp_extension`` (AVX2 + FMA, OpenMP), into
``detector/ops/_build/``. Its module name carries a hash of the source, the flags and the torch
version, so a stale build is never loaded; loading never compiles. Without a usable build (no
compiler at set-up, a CPU without AVX2/FMA, ``DETECTOR_SPARSE_CPU=torch``) the layers use the pure
torch path, and a log line says which path runs.

    python -m detector.ops.cpu_kernels            # build (idempotent: a current build is kept)
    python -m detector.ops.cpu_kernels --check    # say which path would run, build nothing
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
SOURCE = _HERE / "csrc" / "sparse_conv_cpu.cpp"
BUILD_DIR = _HERE / "_build"
CFLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-DNDEBUG"]
LDFLAGS = ["-fopenmp"]
#: ``DETECTOR_SPARSE_CPU``: ``auto`` (compiled kernels where built, else torch), ``torch`` or ``cpp``
#: (the compiled kernels or an error).
ENV = "DETECTOR_SPARSE_CPU"


def module_name() -> str:
    """Name of the build that matches this source, these flags and this torch."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(torch.__version__.encode())
    return f"detector_sparse_cpu_{h.hexdigest()[:12]}"


def cpu_supported() -> tuple[bool, str]:
    """Whether this CPU runs the AVX2 + FMA kernels (Linux ``/proc/cpuinfo``; elsewhere assumed not)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError as err:
        return False, f"cannot read /proc/cpuinfo ({err})"
    have = set(flags.split())
    missing = [f for f in ("avx2", "fma") if f not in have]
    return (not missing), ("" if not missing else f"CPU lacks {', '.join(missing)}")


def _built_path() -> Path | None:
    name = module_name()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES + [".so"]:
        p = BUILD_DIR / name / f"{name}{suffix}"
        if p.exists():
            return p
    return None


def build(verbose: bool = False) -> Path:
    """Compile the extension into ``BUILD_DIR`` unless a current build is there; returns the library."""
    ok, why = cpu_supported()
    if not ok:
        raise RuntimeError(f"compiled sparse-conv kernels not built: {why}")
    existing = _built_path()
    if existing is not None:
        return existing
    from torch.utils import cpp_extension

    name = module_name()
    out = BUILD_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    # copies of the flag lists: load() appends to them
    cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                       build_directory=str(out), verbose=verbose, is_python_module=True)
    path = _built_path()
    if path is None:
        raise RuntimeError(f"build of {name} finished but no library is in {out}")
    for old in BUILD_DIR.glob("detector_sparse_cpu_*"):  # builds of older sources can never load again
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return path


@lru_cache(maxsize=1)
def load() -> ModuleType | None:
    """The compiled kernels, or None (and one log line why) when the torch path must run."""
    mode = os.environ.get(ENV, "auto").lower()
    if mode not in ("auto", "torch", "cpp"):
        raise ValueError(f"{ENV}={mode!r}: expected auto, torch or cpp")
    if mode == "torch":
        log.info("sparse convolution on CPU: torch path (%s=torch)", ENV)
        return None
    ok, why = cpu_supported()
    path = _built_path() if ok else None
    if path is None:
        reason = why or (f"no build of {module_name()} in {BUILD_DIR} "
                         "(run scripts/setup.sh or python -m detector.ops.cpu_kernels)")
        if mode == "cpp":
            raise RuntimeError(f"{ENV}=cpp but the compiled kernels are unavailable: {reason}")
        log.warning("sparse convolution on CPU: torch path (compiled kernels unavailable: %s)", reason)
        return None
    spec = importlib.util.spec_from_file_location(module_name(), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log.info("sparse convolution on CPU: compiled kernels %s", path.name)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="report which path runs; build nothing")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.check:
        path = _built_path()
        ok, why = cpu_supported()
        print(f"compiled kernels: {path}" if (path and ok) else f"torch path ({why or 'not built'})")
        return 0 if (path and ok) else 1
    try:
        path = build(verbose=args.verbose)
    except (RuntimeError, OSError, ImportError) as err:
        print(f"compiled sparse-conv kernels not built, the torch path will run: {err}", file=sys.stderr)
        return 1
    print(f"compiled sparse-conv kernels: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
