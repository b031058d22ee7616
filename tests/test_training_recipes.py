"""The examples of docs/training-recipes.md run, in order, as one script (they assert what
the page claims: accuracies, bytes per parameter, exact resumption)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_training_recipes_page_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("ml_dtypes")
    page = (ROOT / "docs" / "training-recipes.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 6
    code = "import warnings\nwarnings.simplefilter('error')\n" + "\n".join(
        textwrap.dedent(b) for b in blocks)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
