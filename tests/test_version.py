"""detector.__version__: setup.cfg's version in a source checkout, the metadata's in an install."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import detector
from detector.version import DISTRIBUTION, package_version
from tests.helpers.paths import REPO_ROOT


def _setup_cfg_version() -> str:
    parser = configparser.ConfigParser()
    parser.read(Path(REPO_ROOT) / "setup.cfg")
    assert parser["metadata"]["name"] == DISTRIBUTION
    return parser["metadata"]["version"]


def test_the_checkout_reports_setup_cfg_version():
    assert detector.__version__ == package_version() == _setup_cfg_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", detector.__version__)


def test_the_changelog_has_a_section_for_this_version():
    changelog = (Path(REPO_ROOT) / "CHANGELOG.md").read_text()
    assert f"## {detector.__version__} " in changelog
