"""Where the tests find the repository, the shared folder beside it and the official Waymo venv."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``shared/`` beside the repository (the official fake ground truth and predictions live there).
SHARED_DIR = REPO_ROOT.parent / "shared"
WAYMO_FAKE_DIR = SHARED_DIR / "waymo_fake"
