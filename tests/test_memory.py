"""Memory: Adam keeps exactly two arrays per parameter; fused steps allocate nothing."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import anyoptim as optim
from anyoptim.utils import tree_flatten


def _tree(rng: np.random.Generator) -> dict:
    return {"w": rng.standard_normal((256, 128)).astype(np.float32),
            "layers": [{"b": rng.standard_normal(128).astype(np.float32)} for _ in range(8)],
            "s": np.asarray(1.0, np.float32)}


def _nbytes(tree: dict) -> int:
    return sum(a.nbytes for _, a in tree_flatten(tree))


@pytest.mark.parametrize(("name", "arrays_per_param"),
                         [("Adam", 2), ("AdamW", 2), ("SGD", 1), ("Lion", 1), ("AdaDelta", 2)])
def test_state_is_a_fixed_multiple_of_the_parameters(name: str, arrays_per_param: int) -> None:
    rng = np.random.default_rng(0)
    params = _tree(rng)
    opt = getattr(optim, name)(0.01, **({"momentum": 0.9} if name == "SGD" else {}))
    opt.update(params, _tree(rng))
    per_param = {k: v for k, v in opt.state.items() if k not in ("step", "learning_rate")}
    assert _nbytes(per_param) == arrays_per_param * _nbytes(params)
    # plus the two scalars: an 8-byte step and a 4-byte learning rate
    assert opt.state["step"].nbytes == 8 and opt.state["learning_rate"].nbytes == 4


def test_adafactor_keeps_factored_statistics() -> None:
    params = {"w": np.ones((512, 256), np.float32)}
    opt = optim.Adafactor()
    opt.update(params, {"w": np.full((512, 256), 0.1, np.float32)})
    state_bytes = sum(a.nbytes for a in opt.state["w"].values())
    assert state_bytes == (512 + 256) * 4  # a row and a column statistic, not 512 x 256


def test_fused_in_place_steps_allocate_nothing() -> None:
    pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((512, 512)).astype(np.float32),
              "b": [rng.standard_normal(512).astype(np.float32) for _ in range(20)]}
    grads = {"w": rng.standard_normal((512, 512)).astype(np.float32),
             "b": [rng.standard_normal(512).astype(np.float32) for _ in range(20)]}
    opt = optim.AdamW(optim.cosine_decay(1e-3, 1000), bias_correction=True)
    for _ in range(3):  # lazy init, kernel compilation
        opt.update(params, grads)
    param_bytes = _nbytes(params)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(200):
            opt.update(params, grads)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # no array-sized allocation at all: the peak stays far below one parameter's size
    assert peak - base < 64 * 1024 < param_bytes
    assert current - base < 16 * 1024
