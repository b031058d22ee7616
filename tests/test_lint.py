"""The code base stays clean under the configured linter (ruff) and type checker (mypy).

Both read their settings from ``pyproject.toml``. Each check is skipped when its tool is not
installed (``pip install -e ".[test]"`` installs both).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", "src", "tests")
    assert result.returncode == 0, f"ruff check src tests:\n{result.stdout}{result.stderr}"


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_is_clean() -> None:
    result = _run("mypy", "src/anyoptim")
    assert result.returncode == 0, f"mypy src/anyoptim:\n{result.stdout}{result.stderr}"
