"""Property-based fuzzing: a malformed update raises a clear error and changes nothing.

Hypothesis generates optimizers, parameter trees, array libraries and a malformation of the
gradient tree. Every rejected call must raise TypeError/ValueError/KeyError with a message
that names the problem, and leave step, learning rate, every state array and the parameters
bit-identical. CI runs a few hundred cases; ``--runslow`` runs 10,000.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anyoptim as optim
from anyoptim.utils import tree_flatten

HAS_MLX = importlib.util.find_spec("mlx") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

FACTORIES = {
    "SGD": lambda: optim.SGD(0.1, momentum=0.9, weight_decay=0.01),
    "RMSprop": lambda: optim.RMSprop(0.01),
    "Adagrad": lambda: optim.Adagrad(0.1),
    "AdaDelta": lambda: optim.AdaDelta(1.0),
    "Adam": lambda: optim.Adam(optim.cosine_decay(0.1, 10), bias_correction=True),
    "AdamW": lambda: optim.AdamW(0.01),
    "Adamax": lambda: optim.Adamax(0.01),
    "Lion": lambda: optim.Lion(0.001, weight_decay=0.1),
    "Adafactor": lambda: optim.Adafactor(),
    "Muon": lambda: optim.Muon(0.02),
    "Multi": lambda: optim.MultiOptimizer(
        [optim.SGD(0.1), optim.Adam(0.01)], [lambda path, a: a.ndim < 2]
    ),
}

LIBRARIES = ["numpy"] + (["mlx"] if HAS_MLX else []) + (["torch"] if HAS_TORCH else [])

MALFORMATIONS = [
    "extra_key",  # a gradient without a parameter
    "new_param",  # a parameter added after the state was created
    "wrong_shape",
    "none_leaf",
    "number_leaf",
    "string_leaf",
    "other_library",
    "reserved_name",
    "list_for_dict",
]


def _convert(a: np.ndarray, lib: str) -> Any:
    if lib == "numpy":
        return a
    if lib == "mlx":
        import mlx.core as mx

        return mx.array(a)
    import torch

    return torch.from_numpy(a.copy())


def _to_numpy(a: Any) -> np.ndarray:
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy().copy()
    return np.array(a, copy=True)


def _snapshot(tree: Any) -> list[tuple[str, np.ndarray]]:
    return [(k, _to_numpy(v)) for k, v in tree_flatten(tree)]


def _same(before: list, after: list) -> None:
    assert [k for k, _ in before] == [k for k, _ in after]
    for (k, x), (_, y) in zip(before, after):
        assert x.dtype == y.dtype, k
        np.testing.assert_array_equal(x, y, err_msg=k)


shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
names = st.sampled_from(["w", "b", "emb", "head", "norm"])


@st.composite
def cases(draw: Any) -> dict:
    n = draw(st.integers(1, 4))
    keys = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    tree_shapes = {k: draw(shapes) for k in keys}
    nested = draw(st.booleans())
    return {
        "optimizer": draw(st.sampled_from(sorted(FACTORIES))),
        "library": draw(st.sampled_from(LIBRARIES)),
        "shapes": tree_shapes,
        "nested": nested,
        "malformation": draw(st.sampled_from(MALFORMATIONS)),
        "seed": draw(st.integers(0, 2**16)),
        "method": draw(st.sampled_from(["update", "apply_gradients"])),
    }


def _build(case: dict) -> tuple[dict, dict]:
    rng = np.random.default_rng(case["seed"])
    lib = case["library"]
    params = {k: _convert(rng.standard_normal(s).astype(np.float32), lib)
              for k, s in case["shapes"].items()}
    grads = {k: _convert(rng.standard_normal(s).astype(np.float32), lib)
             for k, s in case["shapes"].items()}
    if case["nested"]:
        params, grads = {"model": params}, {"model": grads}
    return params, grads


def _malform(case: dict, params: dict, grads: dict) -> tuple[dict, dict, str]:
    """Return (params, bad_grads, a word the error message must contain)."""
    lib = case["library"]
    inner_p = params["model"] if case["nested"] else params
    inner_g = dict(grads["model"] if case["nested"] else grads)
    first = next(iter(inner_g))
    kind = case["malformation"]
    expect = first
    if kind == "extra_key":
        inner_g["ghost"] = _convert(np.ones(2, np.float32), lib)
        expect = "ghost"
    elif kind == "new_param":
        inner_p["late"] = _convert(np.ones(3, np.float32), lib)
        inner_g["late"] = _convert(np.ones(3, np.float32), lib)
        expect = "late"
    elif kind == "wrong_shape":
        shape = tuple(inner_g[first].shape)
        inner_g[first] = _convert(np.ones((*shape, 2), np.float32), lib)
        expect = "shape"
    elif kind == "none_leaf":
        inner_g[first] = None
    elif kind == "number_leaf":
        inner_g[first] = 0.5
    elif kind == "string_leaf":
        inner_g[first] = "grad"
    elif kind == "other_library":
        other = {"numpy": "mlx" if HAS_MLX else "torch", "mlx": "numpy", "torch": "numpy"}[lib]
        if (other == "mlx" and not HAS_MLX) or (other == "torch" and not HAS_TORCH):
            other = "numpy" if lib != "numpy" else lib
        inner_g[first] = _convert(np.ones(tuple(inner_g[first].shape), np.float32), other)
        expect = ""
    elif kind == "reserved_name":
        grads = dict(grads)
        grads["step"] = _convert(np.ones(2, np.float32), lib)
        return params, grads, "step"
    elif kind == "list_for_dict":
        bad = list(inner_g.values())
        return params, ({"model": bad} if case["nested"] else bad), ""
    if case["nested"]:
        return params, {"model": inner_g}, expect
    return params, inner_g, expect


def _check(case: dict) -> None:
    if case["malformation"] == "other_library" and len(LIBRARIES) == 1:
        return
    params, grads = _build(case)
    opt = FACTORIES[case["optimizer"]]()
    opt.update(params, grads)  # a valid step creates the state
    params, bad, expect = _malform(case, params, grads)
    state_before = _snapshot(opt.state)
    params_before = _snapshot(params)
    call = opt.update if case["method"] == "update" else opt.apply_gradients
    args = (params, bad) if case["method"] == "update" else (bad, params)
    with pytest.raises((TypeError, ValueError, KeyError)) as info:
        call(*args)
    message = str(info.value)
    assert len(message) > 25, message
    assert expect in message, (expect, message)
    _same(state_before, _snapshot(opt.state))
    _same(params_before, _snapshot(params))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_malformed_updates_raise_and_change_nothing(case: dict) -> None:
    _check(case)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_malformed_updates_many(case: dict) -> None:
    _check(case)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_nonfinite_gradients_propagate_by_default_and_can_be_skipped(library, name) -> None:
    rng = np.random.default_rng(5)
    shapes = {"w": (3, 4), "b": (4,)}
    params = {k: _convert(rng.standard_normal(s).astype(np.float32), library)
              for k, s in shapes.items()}
    good = {k: _convert(rng.standard_normal(s).astype(np.float32), library)
            for k, s in shapes.items()}
    bad_w = rng.standard_normal((3, 4)).astype(np.float32)
    bad_w[1, 2] = np.nan
    bad = {"w": _convert(bad_w, library), "b": good["b"]}

    with np.errstate(invalid="ignore"):
        # default (MLX behaviour): NaN reaches the parameters or the state (Lion's sign(NaN)
        # is 0 on MLX, so there it shows up in the momentum only)
        opt = FACTORIES[name]()
        p = opt.apply_gradients(good, params)
        p = opt.apply_gradients(bad, p)
        touched = _snapshot(p) + _snapshot(opt.state)
        assert any(np.isnan(a.astype(np.float64)).any() for _, a in touched)

        # opt-in: the whole update is skipped, including the step and the schedule
        opt = FACTORIES[name]()
        opt.skip_nonfinite = True
        p = opt.apply_gradients(good, params)
        before_state, before_p = _snapshot(opt.state), _snapshot(p)
        q = opt.apply_gradients(bad, p)
        _same(before_p, _snapshot(q))
        counted = lambda snap: [(k, a) for k, a in snap if k.rsplit(".", 1)[-1] != "skipped_steps"]  # noqa: E731
        _same(counted(before_state), counted(_snapshot(opt.state)))
        # the skipped step is counted (as optax's apply_if_finite counts them)
        skipped = lambda: {k: int(a) for k, a in _snapshot(opt.state) if k.endswith("skipped_steps")}  # noqa: E731
        assert skipped() and set(skipped().values()) == {1}, skipped()
        # and a finite step afterwards proceeds normally
        r = opt.apply_gradients(good, q)
        assert not np.array_equal(_to_numpy(r["w"]), _to_numpy(q["w"]))
        assert set(skipped().values()) == {1}
