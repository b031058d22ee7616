"""The README's code examples run, and its Quick start matches what CI runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
NEEDS = {"torch": "torch", "jax": "jax", "mlx.core": "mlx", "autograd": "autograd"}


def _required(block: str) -> list[str]:
    return [mod for key, mod in NEEDS.items() if re.search(rf"\bimport {re.escape(key)}\b|"
                                                          rf"\bimport .*\b{re.escape(key)}\b", block)]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = BLOCKS[index]
    for module in _required(block):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    if "optim.save(" in block and "opt =" not in block.split("optim.save(")[0]:
        # the checkpoint snippet continues the others: give it an optimizer and parameters
        import numpy as np

        import anyoptim as optim

        opt = optim.Adam(0.1)
        params = {"w": np.ones(2, np.float32)}
        opt.update(params, {"w": np.ones(2, np.float32)})
        namespace = {"optim": optim, "opt": opt, "params": params}
    else:
        namespace = {}
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md block {index}", "exec"), namespace)


def test_readme_numpy_example_converges(capsys: pytest.CaptureFixture[str]) -> None:
    block = next(b for b in BLOCKS if "autograd" in b)
    if importlib.util.find_spec("autograd") is None:
        pytest.skip("autograd is not installed")
    namespace: dict = {}
    exec(compile(block, "README numpy", "exec"), namespace)
    import numpy as np

    np.testing.assert_allclose(namespace["params"]["w"], [1.0, 2.0, 3.0], atol=0.05)


def test_quick_start_test_command_is_what_ci_runs() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README.split("## Quick start", 1)[1],
                          flags=re.S)[:2]
    assert len(commands) == 2
    assert "anyoptim train" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
