"""The scripts in examples/ run, and train to the accuracy they promise.

Each example runs in a fresh interpreter (``sys.executable``, warnings as errors) and must
print ``test accuracy NN.NN%`` above 90% within its time budget. An example is skipped when a
library it needs is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> modules it needs
NEEDS = {
    "numpy_digits.py": ("numpy", "sklearn", "autograd"),
    "torch_digits.py": ("torch", "sklearn"),
    "jax_mlp.py": ("jax", "sklearn"),
    "mlx_mlp.py": ("mlx", "sklearn"),
}
# each takes ~7 s alone on 2 cores; the budget leaves room for a loaded machine (22 s seen
# with the whole suite and three other jobs running) and still catches a runaway example
BUDGET_S = 45.0


@pytest.mark.parametrize("script", sorted(NEEDS))
def test_example_trains(script: str) -> None:
    path = EXAMPLES / script
    if not path.exists():
        pytest.skip(f"examples/{script} does not exist (yet)")
    missing = [m for m in NEEDS[script] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"examples/{script} needs {', '.join(missing)}")
    env = {**os.environ, "PYTHONWARNINGS": "error", "JAX_PLATFORMS": "cpu"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120, env=env,
        cwd=EXAMPLES.parent,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.search(r"test accuracy\s+([0-9.]+)%", out.stdout)
    assert match, f"no 'test accuracy NN.NN%' in the output:\n{out.stdout}"
    assert float(match.group(1)) > 90.0, out.stdout
    assert elapsed < BUDGET_S, f"examples/{script} took {elapsed:.1f}s (budget {BUDGET_S}s)"
