"""The package stays lint-clean and type-clean: ruff and mypy run as part of the tests.

Both are configured in pyproject.toml and installed by the ``[test]`` extra; a finding
fails the suite with the tool's own report, so CI shows what to fix.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    # Beside this interpreter first (the project's venv), then PATH.
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' brings it")
    return [found]


def test_ruff_finds_nothing_in_the_package():
    done = subprocess.run([*_tool("ruff"), "check", "relabel", "--output-format", "concise"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_the_package():
    done = subprocess.run([*_tool("mypy"), "--no-error-summary"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
