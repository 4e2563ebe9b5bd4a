"""One version: ``lightning_cam.__version__``, the package metadata's source and CHANGELOG.md."""

from __future__ import annotations

import re
from pathlib import Path

import lightning_cam
from lightning_cam import _version

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source() -> None:
    assert lightning_cam.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc|\.dev)\d+)?", lightning_cam.__version__)
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+)
    project = pyproject.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, flags=re.M)
    assert re.search(r'^dynamic = \["version"\]', pyproject, flags=re.M)
    assert 'version = { attr = "lightning_cam._version.__version__" }' in pyproject


def test_changelog_names_the_version() -> None:
    releases = re.findall(r"^## (\S+) ", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert releases[0] == lightning_cam.__version__
    assert releases == sorted(releases, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
