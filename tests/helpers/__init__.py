"""Shared test builders (datasets, scenes, stores, metric cases, the official evaluator)."""

from pathlib import Path

#: The source checkout the tests run from (scripts/, docs/); the library itself never needs it.
REPO_ROOT = str(Path(__file__).resolve().parents[2])
