"""The documentation site builds, its API page covers the public API, and its examples run.

The site build needs the ``docs`` extra (MkDocs, Material, mkdocstrings); those tests are
skipped when it is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import anyoptim

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_DOCS_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing_docs_tool() -> str | None:
    for name in _DOCS_TOOLS:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:
            return name
    return None


needs_mkdocs = pytest.mark.skipif(
    _missing_docs_tool() is not None,
    reason=f"{_missing_docs_tool()} is not installed (pip install -e '.[docs]')",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return out


@needs_mkdocs
def test_site_builds_with_every_page(site: Path) -> None:
    for page in ("index.html", "api/index.html", "coming-from-mlx/index.html",
                 "coming-from-pytorch/index.html", "coming-from-optax/index.html",
                 "checkpointing/index.html", "performance/index.html", "cli/index.html"):
        assert (site / page).is_file(), page


@needs_mkdocs
def test_api_page_is_generated_from_the_docstrings(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    # names and a keyword argument that only the docstrings and signatures contain
    for text in ("AdamW", "bias_correction", "MultiOptimizer", "clip_grad_norm",
                 "cosine_decay", "load_params", "tree_flatten", "CheckpointError"):
        assert text in html, text
    # the update rules are rendered as math (arithmatex output for MathJax) ...
    assert html.count('class="arithmatex"') >= 10
    assert r"\begin{aligned}" in html
    # ... and no reST leaked into the page
    assert ".. math::" not in html
    assert ":func:`" not in html
    assert ":math:`" not in html


def test_api_page_lists_every_public_name() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    modules = {"optimizers", "schedulers", "utils"}
    for name in anyoptim.__all__:
        if name == "__version__":
            assert "anyoptim.__version__" in api
        elif name in modules:
            assert f"anyoptim.{name}" in api, name
        elif name in anyoptim.schedulers.__all__ or name in anyoptim.io.__all__:
            # documented as a member of its module's section
            assert re.search(rf"^\s+- {name}$", api, re.MULTILINE), name
        else:
            assert f"::: anyoptim.{name}\n" in api, name
    for name in anyoptim.utils.__all__:
        assert re.search(rf"^\s+- {name}$", api, re.MULTILINE), name


def _index_examples() -> list[tuple[str, str]]:
    """The tabbed examples of index.md as (library, code)."""
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    found = re.findall(r'^=== "([^"]+)"\n\n    ```python\n(.*?)\n    ```', text,
                       re.MULTILINE | re.DOTALL)
    return [(lib, textwrap.dedent(code)) for lib, code in found]


_MODULES = {"NumPy": "numpy", "PyTorch": "torch", "JAX": "jax", "MLX": "mlx", "CuPy": "cupy"}


def test_index_has_one_example_per_library() -> None:
    assert [lib for lib, _ in _index_examples()] == list(_MODULES)


@pytest.mark.parametrize("library", list(_MODULES))
def test_index_example_runs(library: str) -> None:
    module = _MODULES[library]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    if module == "cupy":
        pytest.skip("the CuPy example needs a GPU")
    code = dict(_index_examples())[library]
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{library} example failed:\n{result.stderr}"
