"""The fused NumPy kernels against the reference path (same inputs, bit-identical results)."""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim as optim
from anyoptim import _backend
from anyoptim._backend import _numpy_fused
from anyoptim.utils import tree_flatten

pytest.importorskip("numba")

CONFIGS = [
    ("SGD", {"momentum": 0.9, "weight_decay": 0.1, "nesterov": True}),
    ("SGD", {"momentum": 0.9, "dampening": 0.3}),
    ("SGD", {}),
    ("SGD", {"weight_decay": 0.05}),
    ("RMSprop", {"alpha": 0.9}),
    ("Adagrad", {}),
    ("AdaDelta", {"rho": 0.8}),
    ("Adam", {}),
    ("Adam", {"bias_correction": True, "betas": [0.8, 0.99]}),
    ("AdamW", {"bias_correction": True}),
    ("AdamW", {"weight_decay": 0.1}),
    ("Adam", {"amsgrad": True}),
    ("AdamW", {"amsgrad": True, "bias_correction": True, "weight_decay": 0.1}),
    ("Adamax", {}),
    ("Lion", {"weight_decay": 0.1}),
    ("Lion", {"weight_decay": -0.1}),
]


def _tree(rng: np.random.Generator, dtype: type) -> dict:
    return {
        "matrix": rng.standard_normal((7, 9)).astype(dtype),
        "list": [
            rng.standard_normal(5).astype(dtype),
            np.asarray(rng.standard_normal(), dtype=dtype),  # 0-d
            np.zeros((0, 3), dtype),  # empty
        ],
        "tuple": (rng.standard_normal((2, 3, 4)).astype(dtype),),
        # large enough for the multi-threaded kernel
        "big": rng.standard_normal(_numpy_fused.PARALLEL_MIN_SIZE + 3).astype(dtype),
    }


def _copy(tree: dict) -> dict:
    from anyoptim.utils import tree_map

    return tree_map(lambda a: a.copy(), tree)


@pytest.fixture
def reference_only(monkeypatch: pytest.MonkeyPatch):
    """A context that disables the fused path."""

    class Ctx:
        def __enter__(self) -> None:
            monkeypatch.setattr(_backend, "fused_numpy_available", lambda: False)

        def __exit__(self, *exc: object) -> None:
            monkeypatch.undo()

    return Ctx()


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    # one array per call, and many small arrays in one call (the in-place path)
    for attr in ("kernel_for", "batched_kernel_for"):
        original = getattr(_numpy_fused, attr)

        def spy(name, *args, original=original, **kwargs):
            kernel = original(name, *args, **kwargs)

            def counted(*a):
                calls.append(name)
                return kernel(*a)

            return counted

        monkeypatch.setattr(_numpy_fused, attr, spy)
    return calls


def _assert_trees_identical(a, b) -> None:
    fa, fb = tree_flatten(a), tree_flatten(b)
    assert [k for k, _ in fa] == [k for k, _ in fb]
    for (k, x), (_, y) in zip(fa, fb):
        assert x.dtype == y.dtype, k
        assert x.shape == y.shape, k
        np.testing.assert_array_equal(x, y, err_msg=k, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=lambda c: str(c))
def test_fused_equals_reference(name, kwargs, dtype, reference_only, kernel_calls) -> None:
    rng = np.random.default_rng(7)
    params = _tree(rng, dtype)
    grads = [_tree(rng, dtype) for _ in range(5)]
    # a schedule that changes the learning rate at every step
    make = lambda: getattr(optim, name)(optim.cosine_decay(0.05, 8, 0.001), **kwargs)  # noqa: E731

    in_place, functional = make(), make()
    p_in_place, p_functional = _copy(params), params
    for g in grads:
        in_place.update(p_in_place, g)
        p_functional = functional.apply_gradients(g, p_functional)
    assert len(kernel_calls) > 0, "the fused path was not taken"

    with reference_only:
        ref = make()
        p_ref = params
        for g in grads:
            p_ref = ref.apply_gradients(g, p_ref)

    _assert_trees_identical(p_in_place, p_ref)
    _assert_trees_identical(p_functional, p_ref)
    _assert_trees_identical(in_place.state, ref.state)
    _assert_trees_identical(functional.state, ref.state)


def test_in_place_update_keeps_array_objects(kernel_calls) -> None:
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 4)).astype(np.float32)}
    w = params["w"]
    before = w.copy()
    opt = optim.Adam(0.1)
    for _ in range(3):
        opt.update(params, {"w": np.ones((4, 4), np.float32)})
    assert params["w"] is w
    assert not np.array_equal(w, before)
    assert kernel_calls


def test_functional_path_leaves_read_only_inputs_alone(kernel_calls) -> None:
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal(10).astype(np.float32)}
    grads = {"w": rng.standard_normal(10).astype(np.float32)}
    for a in (params["w"], grads["w"]):
        a.flags.writeable = False
    keep = params["w"].copy(), grads["w"].copy()
    opt = optim.AdamW(0.1)
    new = opt.apply_gradients(grads, params)
    new = opt.apply_gradients(grads, params)
    assert kernel_calls
    np.testing.assert_array_equal(params["w"], keep[0])
    np.testing.assert_array_equal(grads["w"], keep[1])
    assert not np.array_equal(new["w"], keep[0])
    # the state arrays of the first step are not overwritten by the second (new objects)
    assert new["w"] is not params["w"]


@pytest.mark.parametrize(
    "case",
    ["strided", "float16", "read_only_param", "mixed_dtype"],
)
def test_irregular_leaves_fall_back_and_stay_correct(case, reference_only, kernel_calls) -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    grad = rng.standard_normal((6, 8)).astype(np.float32)
    if case == "strided":
        p, g = base[:, ::2], grad[:, ::2]
    elif case == "float16":
        p, g = base.astype(np.float16), grad.astype(np.float16)
    elif case == "read_only_param":
        p, g = base.copy(), grad
        p.flags.writeable = False
    else:
        p, g = base.astype(np.float64), grad
    start = p.copy()
    opt = optim.Adam(0.01)
    params = {"w": p}
    for _ in range(3):
        opt.update(params, {"w": g})
    if case == "read_only_param":
        # the first update replaces the read-only array by a new one, which later steps
        # may update in place
        assert p.flags.writeable is False and params["w"] is not p
    else:
        assert kernel_calls == []
    with reference_only:
        ref = optim.Adam(0.01)
        expected = {"w": start}
        for _ in range(3):
            expected = ref.apply_gradients({"w": g}, expected)
    _assert_trees_identical(params, expected)
    _assert_trees_identical(opt.state, ref.state)


def test_rejected_fused_update_changes_nothing(kernel_calls) -> None:
    opt = optim.Adam(0.1)
    params = {"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)}
    opt.update(params, {"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)})
    snapshot = {k: v.copy() for k, v in tree_flatten(opt.state)}
    a_before = params["a"].copy()
    with pytest.raises(ValueError, match="shape"):
        opt.update(params, {"a": np.ones(3, np.float32), "b": np.ones(5, np.float32)})
    np.testing.assert_array_equal(params["a"], a_before)
    after = dict(tree_flatten(opt.state))
    assert snapshot.keys() == after.keys()
    for k, v in snapshot.items():
        np.testing.assert_array_equal(after[k], v, strict=True)


def test_functional_path_never_changes_state_arrays_someone_holds(kernel_calls) -> None:
    """apply_gradients may reuse a state buffer only when nothing outside the state refers to it."""
    params = {"w": np.ones(6, np.float32)}
    grads = {"w": np.full(6, 0.5, np.float32)}
    opt = optim.Adam(0.1)
    for _ in range(2):
        params = opt.apply_gradients(grads, params)
    held = opt.state["w"]["m"]
    copy = held.copy()
    params = opt.apply_gradients(grads, params)
    assert kernel_calls
    assert opt.state["w"]["m"] is not held
    np.testing.assert_array_equal(held, copy)
    # once nobody holds it, the buffer is reused (no allocation per step)
    del held
    current = id(opt.state["w"]["m"])
    params = opt.apply_gradients(grads, params)
    assert id(opt.state["w"]["m"]) == current
