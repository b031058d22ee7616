"""The compiled walk of flat dicts (anyoptim._backend._numpy_walk): what it reads must be what
Python sees, it must give up (to the Python walk) on anything it cannot read, and the update it
feeds must equal the reference path bit for bit, with every reference it took given back."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim as optim
from anyoptim._backend import _numpy_fused, _numpy_walk
from anyoptim.utils import tree_flatten
from test_batched import _identical
from test_batched import _reference as _batched_reference

pytest.importorskip("numba")

N = _numpy_walk.MIN_LEAVES + 36


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list:
    """What each compiled walk gave: True for a plan, False for giving up."""
    seen: list = []
    original = _numpy_walk.plan

    def spy(*args):
        out = original(*args)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(_numpy_walk, "plan", spy)
    return seen


def _flat(rng, n=N, dtype=np.float32, names=None):
    names = names or [f"layer{i}.weight" for i in range(n)]
    shapes = [(3,), (2, 5), (1,), (4, 1, 2), (0,)]
    return {k: rng.standard_normal(shapes[i % len(shapes)]).astype(dtype)
            for i, k in enumerate(names)}


def _reference(make, grads, params):
    return _batched_reference(make, grads, params, in_place=True)


def _warm(seed):
    """A flat tree after one AdamW update: (params, gradients, optimizer, state copy)."""
    rng = np.random.default_rng(seed)
    params = _flat(rng)
    grads = _grads(rng, params, 1)[0]
    opt = optim.AdamW(0.01)
    opt.update(params, grads)
    return params, grads, opt, {k: np.array(v, copy=True) for k, v in tree_flatten(opt.state)}


def _grads(rng, params, steps=3):
    return [{k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
            for _ in range(steps)]


def test_layout_is_recognised() -> None:
    # on CPython 3.11-3.13 the dict and str layouts are the known ones; if this fails, the
    # compiled walk is off and wide flat trees take the Python walk (slower, still exact)
    assert _numpy_walk.walk_ok()


@given(
    keys=st.lists(st.text(min_size=0, max_size=6), min_size=0, max_size=300, unique=True),
    deleted=st.integers(0, 40),
    probes=st.lists(st.text(max_size=6), max_size=20),
)
@settings(max_examples=60, deadline=None)
def test_lookup_agrees_with_python(keys, deleted, probes) -> None:
    c = _numpy_walk._compiled()
    data = _numpy_walk._DATA_OFFSET
    d = {k: object() for k in keys}
    for k in keys[:deleted]:
        del d[k]
    # equal strings that are other objects, keys that are not there, non-ASCII ones
    for key in [*("".join(list(k)) for k in keys), *probes]:
        hash(key)
        got = c.lookup(id(d), id(key), id(dict), data)
        if got == -1:  # cannot tell: only for an equal hash of a str that is not ASCII
            assert not key.isascii()
            continue
        assert got == (id(d[key]) if key in d else 0)


def test_dicts_it_cannot_read_are_refused() -> None:
    c = _numpy_walk._compiled()
    data = _numpy_walk._DATA_OFFSET
    key = "w"
    hash(key)

    class Attrs:
        pass

    split = Attrs()
    split.w = 1  # an instance dict: keys shared with the class (a split table) or not
    for d in ({1: 2, "w": 3}, {("w",): 1, "w": 2}):
        assert c.lookup(id(d), id(key), id(dict), data) == -1
    assert c.lookup(id(split.__dict__), id(key), id(dict), data) in (-1, id(1))
    assert c.lookup(id([1]), id(key), id(dict), data) == -1  # not a dict


@pytest.mark.parametrize("make", [
    lambda: optim.AdamW(0.05, bias_correction=True),
    lambda: optim.Adam(0.05, amsgrad=True),
    lambda: optim.SGD(0.1, momentum=0.9, nesterov=True),
    lambda: optim.Lion(0.01, weight_decay=0.1),
    lambda: optim.RMSprop(0.01),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_walked_update_equals_the_reference(walks, make, dtype) -> None:
    rng = np.random.default_rng(0)
    params = _flat(rng, dtype=dtype)
    grads = _grads(rng, params)
    expected, expected_state = _reference(make, grads, {k: v.copy() for k, v in params.items()})
    opt = make()
    for g in grads:
        opt.update(params, g)
    assert walks and all(walks[1:])  # (the first call builds the state first)
    _identical(params, expected)
    _identical(opt.state, expected_state)


def test_references_are_given_back(walks) -> None:
    params, grads, opt, _ = _warm(1)
    state_arrays = [a for k in params for a in opt.state[k].values()]
    arrays = [*params.values(), *grads.values(), *state_arrays]
    counts = [sys.getrefcount(a) for a in arrays]
    for _ in range(3):
        opt.update(params, grads)
    assert walks[-1]
    assert [sys.getrefcount(a) for a in arrays] == counts


def test_a_failing_kernel_gives_references_back_and_changes_nothing(walks, monkeypatch) -> None:
    params, grads, opt, before = _warm(2)
    arrays = [*params.values(), *grads.values()]
    counts = [sys.getrefcount(a) for a in arrays]

    def broken(*args):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(_numpy_fused, "batched_kernel_for", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        opt.update(params, grads)
    assert walks[-1]
    assert [sys.getrefcount(a) for a in arrays] == counts
    _identical(dict(tree_flatten(opt.state)), before)


def _renamed(tree: dict) -> dict:
    """The same dict with keys that are equal str objects, not the same ones (as a state read
    from a file has)."""
    return {"".join(list(k)): v for k, v in tree.items()}


@pytest.mark.parametrize("change", [
    "state_keys_other_objects", "parameter_keys_other_objects", "other_order",
    "deleted_entries", "non_ascii_keys",
])
def test_key_forms_it_reads_give_the_reference(walks, change) -> None:
    rng = np.random.default_rng(3)
    names = None
    if change == "non_ascii_keys":
        names = [f"schicht{i}.gewicht-ä" for i in range(N)]
    params = _flat(rng, names=names)
    grads = _grads(rng, params)

    def make():
        return optim.AdamW(0.02, bias_correction=True)

    expected, expected_state = _reference(make, grads, {k: v.copy() for k, v in params.items()})
    opt = make()
    live = params
    for i, g in enumerate(grads):
        if change == "state_keys_other_objects" and i == 1:
            state = opt.state
            opt.state = {k: state[k] for k in ("step", "learning_rate")} | _renamed(
                {k: v for k, v in state.items() if k not in ("step", "learning_rate")})
        elif change == "parameter_keys_other_objects":
            live = _renamed(live)
        elif change == "other_order" and i > 0:
            g = dict(reversed(list(g.items())))
        elif change == "deleted_entries":
            g = {"extra": np.zeros(1, np.float32), **g}
            del g["extra"]
        opt.update(live, g)
    _identical(params, expected)
    _identical(opt.state, expected_state)
    if change == "non_ascii_keys":
        assert True not in walks[1:] or all(walks[1:])
    else:
        assert all(walks[1:])


@pytest.mark.parametrize("odd", [
    "nested_value", "float64_gradient", "float16_gradient", "non_contiguous", "read_only",
    "tuple_keys", "view_of_other_parameter",
])
def test_leaves_it_refuses_take_the_python_walk(walks, odd) -> None:
    rng = np.random.default_rng(4)
    params = _flat(rng)
    grads = _grads(rng, params, 2)
    first = next(iter(params))
    last = list(params)[-5]  # a (3,) array
    if odd == "nested_value":
        params["block"] = {"w": np.ones(3, np.float32)}
        for g in grads:
            g["block"] = {"w": np.ones(3, np.float32)}
    elif odd == "float64_gradient":
        for g in grads:
            g[last] = g[last].astype(np.float64)
    elif odd == "float16_gradient":  # MLX's mixed-float rule: allowed, computed in float32
        for g in grads:
            g[last] = g[last].astype(np.float16)
    elif odd == "non_contiguous":
        for g in grads:
            g[last] = np.repeat(g[last][..., None], 2, -1)[..., 0]
    elif odd == "read_only":
        params[last].flags.writeable = False
    elif odd == "tuple_keys":
        params[("a", 1)] = np.ones(2, np.float32)
        for g in grads:
            g[("a", 1)] = np.ones(2, np.float32)
    elif odd == "view_of_other_parameter":
        params[last] = params[first][:1] if params[first].size else params[last]

    def make():
        return optim.Adam(0.05)

    copies = {k: (v.copy() if isinstance(v, np.ndarray) else {"w": v["w"].copy()})
              for k, v in params.items()}
    try:
        expected, expected_state = _reference(make, grads, copies)
    except Exception as exc:  # the Python walk must report the same problem
        opt = make()
        with pytest.raises(type(exc)):
            for g in grads:
                opt.update(params, g)
        return
    opt = make()
    for g in grads:
        opt.update(params, g)
    if odd == "read_only":  # refused once; the update then replaced that parameter
        assert walks[0] is False
    else:
        assert walks and not any(walks)
    _identical(params, expected)
    _identical(opt.state, expected_state)


@pytest.mark.parametrize("missing", ["state", "parameter"])
def test_missing_entries_report_as_before_and_change_nothing(walks, missing) -> None:
    params, grads, opt, before = _warm(5)
    values = {k: v.copy() for k, v in params.items()}
    key = list(params)[N // 2]
    if missing == "state":
        del opt.state[key]
        before = {k: v for k, v in before.items() if not k.startswith(key + ".")}
    else:
        params = {k: v for k, v in params.items() if k != key}
    with pytest.raises((KeyError, ValueError), match=key.replace(".", r"\.")):
        opt.update(params, grads)
    assert walks[-1] is False
    _identical(dict(tree_flatten(opt.state)), before)
    for k, v in params.items():
        np.testing.assert_array_equal(v, values[k], strict=True)


def test_concurrent_replacement_of_state_arrays_is_memory_safe(walks) -> None:
    # another thread swapping state arrays while updates run: the walk holds a reference to
    # every array it hands to the kernel, so no array it writes can be freed meanwhile
    params, grads, opt, _ = _warm(6)
    keys = list(params)
    stop = threading.Event()

    def swap() -> None:
        i = 0
        while not stop.is_set():
            entry = opt.state[keys[i % len(keys)]]
            entry["m"] = entry["m"].copy()
            i += 1

    worker = threading.Thread(target=swap)
    worker.start()
    try:
        for _ in range(200):
            opt.update(params, grads)
    finally:
        stop.set()
        worker.join()
    assert any(walks)
    assert all(np.isfinite(v).all() for v in params.values())


def test_optimizers_with_whole_update_sums_get_the_leaf_lists(walks) -> None:
    # a subclass whose prepare hook sums over all gradients needs them as lists
    seen: list = []

    class Counting(optim.AdamW):
        def prepare(self, gradients, parameters, states, h):
            seen.append(len(gradients))
            return None

    rng = np.random.default_rng(7)
    params = _flat(rng)
    opt = Counting(0.01)
    for g in _grads(rng, params, 2):
        opt.update(params, g)
    assert seen == [N, N]
    assert not any(walks)
