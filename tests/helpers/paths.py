"""Where the tests find the repository, the shared folder beside it and the official Waymo venv."""

from pathlib import Path

#: The source checkout the tests run from (scripts/, docs/), as a string; the library itself never needs it.
REPO_ROOT = str(Path(__file__).resolve().parents[2])
#: ``shared/`` beside the repository (the official fake ground truth and predictions live there).
SHARED_DIR = Path(REPO_ROOT).parent / "shared"
WAYMO_FAKE_DIR = SHARED_DIR / "waymo_fake"
