"""anyoptim.optax: optax-named factories and from_optimizer, as a drop-in in optax, flax and orbax.

Every check runs on CPU with tiny random trees and models; nothing is downloaded. The float64
comparisons with optax run in a subprocess with ``jax_enable_x64`` (it cannot be switched per
test once JAX has made arrays).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import anyoptim  # noqa: E402
import anyoptim.optax as ao  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def _tree(seed: int, dtype: Any = jnp.float32) -> dict[str, Any]:
    """A small random tree: a matrix, a vector in a list, a 3-D tensor, a scalar, and one matrix
    large enough for optax's Adafactor to factor."""
    rng = np.random.default_rng(seed)
    shapes = {"a": (5, 3), "b": [(7,)], "c": {"d": (130, 129), "e": (2, 3, 4)}, "f": ()}
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), dtype), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))


def _grads(params: Any, n: int, seed: int = 1) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
            for _ in range(n)]


def _run(tx: Any, params: Any, grads: list[Any], jit: bool = True) -> tuple[Any, Any]:
    def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    if jit:
        step = jax.jit(step)
    p, s = params, tx.init(params)
    for g in grads:
        p, s = step(p, s, g)
    return p, s


def _max_rel(a: Any, b: Any) -> float:
    """Largest difference per leaf relative to that leaf's largest magnitude."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        scale = max(float(np.max(np.abs(x))), 1e-30)
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def _bits_equal(a: Any, b: Any) -> bool:
    return all(
        x.dtype == y.dtype and bool(jnp.all((x == y) | (jnp.isnan(x) & jnp.isnan(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


_SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 50)
_BY_NDIM = "ndim"  # a mask: decay only leaves with two or more dimensions

# (factory, keyword arguments) pairs compared against optax's function of the same name
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("adam", {"learning_rate": 1e-2}),
    ("adam", {"learning_rate": _SCHEDULE, "b1": 0.8, "eps_root": 1e-8, "nesterov": True}),
    ("adamw", {"learning_rate": 1e-2, "weight_decay": 0.1}),
    ("adamw", {"learning_rate": _SCHEDULE, "weight_decay": optax.linear_schedule(0.1, 0.0, 50),
               "mask": _BY_NDIM}),
    ("nadam", {"learning_rate": 1e-2}),
    ("nadamw", {"learning_rate": 1e-2}),
    ("sgd", {"learning_rate": 1e-2}),
    ("sgd", {"learning_rate": _SCHEDULE, "momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"learning_rate": 1e-2}),
    ("rmsprop", {"learning_rate": 1e-2, "centered": True, "momentum": 0.9,
                 "bias_correction": True, "initial_scale": 0.1}),
    ("rmsprop", {"learning_rate": 1e-2, "eps_in_sqrt": False, "decay": 0.99}),
    ("adagrad", {"learning_rate": 1e-2}),
    ("adadelta", {"learning_rate": 1.0, "weight_decay": 0.1, "weight_decay_mask": _BY_NDIM}),
    ("adamax", {"learning_rate": 1e-2}),
    ("adamaxw", {"learning_rate": 1e-2, "weight_decay": 0.1}),
    ("lion", {"learning_rate": 1e-3}),
    ("lion", {"learning_rate": _SCHEDULE, "b1": 0.95, "weight_decay": 0.0}),
    ("adafactor", {}),
    ("adafactor", {"learning_rate": 1e-2, "momentum": 0.9, "weight_decay_rate": 1e-3,
                   "min_dim_size_to_factor": 2, "clipping_threshold": None}),
    ("adafactor", {"learning_rate": _SCHEDULE, "multiply_by_parameter_scale": False,
                   "factored": False, "decay_offset": 3}),
]


def _kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    for key in ("mask", "weight_decay_mask"):
        if out.get(key) == _BY_NDIM:
            out[key] = lambda tree: jax.tree.map(lambda x: x.ndim >= 2, tree)
    return out


def _config_id(config: tuple[str, dict[str, Any]]) -> str:
    name, kwargs = config
    return f"{name}-{'-'.join(sorted(kwargs)) or 'defaults'}"


# ----------------------------------------------------------------------------- signatures
FACTORIES = ["adam", "adamw", "nadam", "nadamw", "sgd", "rmsprop", "adagrad", "adadelta",
             "adamax", "adamaxw", "lion", "adafactor"]


@pytest.mark.parametrize("name", FACTORIES)
def test_factories_have_optaxs_signature_and_defaults(name: str) -> None:
    import inspect

    ours = inspect.signature(getattr(ao, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs)
    for key, param in theirs.items():
        assert ours[key].kind == param.kind, key
        assert ours[key].default == param.default or (
            ours[key].default is param.default), (key, ours[key].default, param.default)


def test_muon_has_optax_contribs_signature_and_defaults() -> None:
    import inspect

    contrib = pytest.importorskip("optax.contrib")
    if not hasattr(contrib, "muon"):
        pytest.skip("this optax has no optax.contrib.muon")
    ours = inspect.signature(ao.muon).parameters
    theirs = inspect.signature(contrib.muon).parameters
    assert list(ours) == list(theirs)
    for key, param in theirs.items():
        assert ours[key].kind == param.kind, key
        assert ours[key].default == param.default, (key, ours[key].default, param.default)


def test_returns_extra_args_transformations() -> None:
    for name in FACTORIES:
        assert isinstance(getattr(ao, name)(1e-3), optax.GradientTransformationExtraArgs)
    assert isinstance(ao.muon(1e-3), optax.GradientTransformationExtraArgs)
    assert isinstance(ao.from_optimizer(anyoptim.Adam(1e-3)),
                      optax.GradientTransformationExtraArgs)


def test_importing_anyoptim_does_not_import_the_front_end() -> None:
    code = "import sys, anyoptim; print('anyoptim.optax' in sys.modules, 'optax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- vs optax
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_float32_matches_optax(config: tuple[str, dict[str, Any]]) -> None:
    name, kwargs = config
    params = _tree(0)
    grads = _grads(params, 50)
    expected, _ = _run(getattr(optax, name)(**_kwargs(kwargs)), params, grads)
    got, state = _run(getattr(ao, name)(**_kwargs(kwargs)), params, grads)
    assert _max_rel(expected, got) <= 1e-6
    assert int(state.count) == 50


_X64_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, {tests!r})
import test_optax_frontend as t
out = {{}}
for config in t.CONFIGS:
    name, kwargs = config
    params = t._tree(0, jax.numpy.float64)
    grads = t._grads(params, 50)
    expected, _ = t._run(getattr(t.optax, name)(**t._kwargs(kwargs)), params, grads)
    got, _ = t._run(getattr(t.ao, name)(**t._kwargs(kwargs)), params, grads)
    assert all(x.dtype == jax.numpy.float64 for x in jax.tree.leaves(got))
    out[t._config_id(config)] = t._max_rel(expected, got)
print(json.dumps(out))
"""


def test_float64_matches_optax() -> None:
    script = _X64_SCRIPT.format(tests=str(ROOT / "tests"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == len(CONFIGS)
    worst = max(errors.values())
    assert worst <= 1e-12, errors


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,kwargs", [
    ("adamw", {"learning_rate": 1e-2, "weight_decay": 0.1}),
    ("adam", {"learning_rate": 1e-2, "mu_dtype": "float32"}),
    ("lion", {"learning_rate": 1e-3}),
    ("sgd", {"learning_rate": 1e-2, "momentum": 0.9, "accumulator_dtype": "float32"}),
    ("rmsprop", {"learning_rate": 1e-3}),
    ("adafactor", {"min_dim_size_to_factor": 2}),
])
def test_16_bit_matches_optax(dtype: str, name: str, kwargs: dict[str, Any]) -> None:
    """Same dtypes everywhere (updates, moments, mu_dtype) and the same numbers as optax."""
    params = _tree(0, getattr(jnp, dtype))
    grads = _grads(params, 10)
    expected, expected_state = _run(getattr(optax, name)(**kwargs), params, grads)
    got, state = _run(getattr(ao, name)(**kwargs), params, grads)
    assert _bits_equal(expected, got)
    theirs = sorted(str(x.dtype) for x in jax.tree.leaves(expected_state) if x.ndim)
    ours = sorted(str(x.dtype) for x in jax.tree.leaves(state) if x.ndim)
    assert ours == theirs


# ----------------------------------------------------------------------------- state contract
def _assert_same_layout(a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert (tuple(x.shape), x.dtype) == (tuple(y.shape), y.dtype)


LAYOUT_CASES = [
    ("adamw", lambda: ao.adamw(_SCHEDULE, mu_dtype=jnp.bfloat16)),
    ("sgd", lambda: ao.sgd(1e-2, momentum=0.9)),
    ("rmsprop", lambda: ao.rmsprop(1e-2, centered=True, momentum=0.5)),
    ("adafactor", lambda: ao.adafactor(momentum=0.9, weight_decay_rate=1e-3)),
    ("muon", lambda: ao.muon(0.02)),
    ("from-adamw", lambda: ao.from_optimizer(anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 10)))),
    ("from-adafactor", lambda: ao.from_optimizer(anyoptim.Adafactor(beta_1=0.9))),
    ("from-skip", lambda: ao.from_optimizer(_skipping(anyoptim.Lion(1e-3)))),
    ("from-multi", lambda: ao.from_optimizer(anyoptim.MultiOptimizer(
        [anyoptim.SGD(0.1), anyoptim.Adam(1e-2)], [lambda path, a: a.ndim < 2]))),
]


def _skipping(opt: anyoptim.Optimizer) -> anyoptim.Optimizer:
    opt.skip_nonfinite = True
    return opt


@pytest.mark.parametrize("name,make", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_state_layout_never_changes(name: str, make: Any) -> None:
    tx = make()
    params = _tree(0, jnp.bfloat16) if name == "adamw" else _tree(0)
    target = jax.eval_shape(tx.init, params)
    _, state = _run(tx, params, _grads(params, 3))
    _assert_same_layout(target, state)
    # and through lax.cond, which demands identical branches
    g = _grads(params, 1, seed=7)[0]
    flag = jnp.asarray(True)
    out = jax.jit(lambda s: jax.lax.cond(flag, lambda s: tx.update(g, s, params)[1],
                                         lambda s: s, s))(state)
    _assert_same_layout(target, out)


# ----------------------------------------------------------------------------- from_optimizer
FROM_CASES = [
    ("SGD", lambda: anyoptim.SGD(0.1, momentum=0.9, nesterov=True)),
    ("Adam", lambda: anyoptim.Adam(1e-2, bias_correction=True)),
    ("RMSprop", lambda: anyoptim.RMSprop(1e-2)),
    ("Adagrad", lambda: anyoptim.Adagrad(1e-2)),
    ("AdaDelta", lambda: anyoptim.AdaDelta(1.0)),
    ("Adamax", lambda: anyoptim.Adamax(1e-2)),
    ("Lion", lambda: anyoptim.Lion(1e-3)),
    ("Muon", lambda: anyoptim.Muon(0.02, weight_decay=0.0)),
    ("AdamW", lambda: anyoptim.AdamW(1e-2, weight_decay=0.1)),
    ("Lion-wd", lambda: anyoptim.Lion(1e-3, weight_decay=0.1)),
    ("Muon-wd", lambda: anyoptim.Muon(0.02)),
    ("Adafactor", lambda: anyoptim.Adafactor()),
    ("Multi", lambda: anyoptim.MultiOptimizer(
        [anyoptim.SGD(0.1, momentum=0.9), anyoptim.AdamW(1e-2)], [lambda path, a: a.ndim < 2])),
]
#: updates of the form p - η·u: from_optimizer computes -η·u directly
DIRECT = {"SGD", "Adam", "RMSprop", "Adagrad", "AdaDelta", "Adamax", "Lion", "Muon"}


def _small_tree(dtype: Any) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {"w": jnp.asarray(rng.standard_normal((12, 9)), dtype),
            "layers": [{"b": jnp.asarray(rng.standard_normal(9), dtype)},
                       {"k": jnp.asarray(rng.standard_normal((4, 3, 2)), dtype)}]}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name,make", FROM_CASES, ids=[c[0] for c in FROM_CASES])
def test_from_optimizer_reproduces_pure_step(name: str, make: Any, dtype: str) -> None:
    """optax.apply_updates(p, delta) == anyoptim's new parameter, bit for bit.

    Run eagerly (op by op, like NumPy and MLX do): under jax.jit XLA contracts ``p - η·u`` into
    a fused multiply-add in one program and not in the other, which is compared separately.
    """
    params = _small_tree(getattr(jnp, dtype))
    grads = _grads(params, 4, seed=5)
    opt = make()
    tx = ao.from_optimizer(opt)
    ref = copy.deepcopy(opt)
    ref.init(params)
    p1, p2, s1, s2 = params, params, tx.init(params), ref.state
    for g in grads:
        updates, s1 = tx.update(g, s1, p1)
        p1 = optax.apply_updates(p1, updates)
        p2, s2 = ref.pure_step(p2, g, s2)
        if dtype != "float32":
            # 16-bit parameters get float32 updates (``new - old`` is exact there)
            assert all(u.dtype in (jnp.float32, getattr(jnp, dtype))
                       for u in jax.tree.leaves(updates))
    if dtype != "float32" or name in DIRECT:
        assert _bits_equal(p1, p2)
    else:
        # new - old is exact wherever new and old are within a factor of two (Sterbenz); an
        # element crossing zero can be off by half an ulp of its update
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
            assert float(jnp.max(jnp.abs(a - b))) <= 1e-6
    _assert_same_layout(jax.eval_shape(tx.init, params), s1)


@pytest.mark.parametrize("name,make", FROM_CASES, ids=[c[0] for c in FROM_CASES])
def test_from_optimizer_under_jit_agrees_with_pure_step(name: str, make: Any) -> None:
    params = _small_tree(jnp.float32)
    grads = _grads(params, 10, seed=5)
    opt = make()
    tx = ao.from_optimizer(opt)
    got, _ = _run(tx, params, grads)
    ref = copy.deepcopy(opt)
    ref.init(params)
    step = jax.jit(ref.pure_step)
    p, s = params, ref.state
    for g in grads:
        p, s = step(p, g, s)
    assert _max_rel(p, got) <= 1e-6


def test_from_optimizer_copies_the_configuration_and_never_touches_its_state() -> None:
    opt = anyoptim.SGD(0.1)
    tx = ao.from_optimizer(opt)
    opt.learning_rate = 5.0
    params = {"w": jnp.ones(2)}
    updates, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1)
    assert "w" not in opt.state


def test_from_optimizer_with_hyperparameter_overrides_traced() -> None:
    tx_of = jax.jit(lambda lr, g, s, p: ao.from_optimizer(
        anyoptim.SGD(1.0), hyperparameters={"learning_rate": lr}).update(g, s, p))
    params = {"w": jnp.ones(3)}
    state = ao.from_optimizer(anyoptim.SGD(1.0)).init(params)
    updates, _ = tx_of(jnp.float32(0.25), {"w": jnp.ones(3)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.25)


def test_from_optimizer_paths_follow_the_tree() -> None:
    """Paths (for MultiOptimizer filters and per-path hyperparameters) are the dotted keys."""
    seen: list[str] = []

    def accept(path: str, array: Any) -> bool:
        seen.append(path)
        return path.endswith("bias")

    tx = ao.from_optimizer(anyoptim.MultiOptimizer([anyoptim.SGD(0.0), anyoptim.SGD(1.0)],
                                                   [accept]))
    params = {"layers": [{"kernel": jnp.ones(2), "bias": jnp.ones(2)}], "head": jnp.ones(1)}
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    assert set(seen) >= {"layers.0.kernel", "layers.0.bias", "head"}
    np.testing.assert_array_equal(updates["layers"][0]["bias"], 0.0)
    np.testing.assert_array_equal(updates["layers"][0]["kernel"], -1.0)


# ----------------------------------------------------------------------------- optax combinators
def test_inject_hyperparams_traced_once_and_overridable() -> None:
    params = _tree(0)
    grads = _grads(params, 6)
    results = []
    for module in (optax, ao):
        tx = optax.inject_hyperparams(module.adamw)(learning_rate=1e-2, b1=0.9, weight_decay=0.1)
        traces: list[int] = []

        def step(p: Any, s: Any, g: Any, tx: Any = tx, traces: list[int] = traces) -> Any:
            traces.append(1)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        step = jax.jit(step)

        p, s = params, tx.init(params)
        for i, g in enumerate(grads):
            if i == 3:
                # same dtype as the injected value (a weakly typed array would retrace)
                s.hyperparams["learning_rate"] = jnp.asarray(1e-3, jnp.float32)
                s.hyperparams["b1"] = jnp.asarray(0.5, jnp.float32)
            p, s = step(p, s, g)
        assert len(traces) == 1
        results.append(p)
    assert _max_rel(*results) <= 1e-6


def test_inject_hyperparams_with_schedules_and_static_structure() -> None:
    params = _tree(0)
    grads = _grads(params, 5)
    for name, kwargs, static in [
        ("sgd", {"learning_rate": _SCHEDULE, "momentum": 0.9}, ()),
        ("rmsprop", {"learning_rate": 1e-2, "decay": 0.95, "momentum": 0.5}, ()),
        ("lion", {"learning_rate": _SCHEDULE, "weight_decay": 1e-2}, ()),
        ("adafactor", {"learning_rate": 1e-2, "min_dim_size_to_factor": 2},
         ("min_dim_size_to_factor", "dtype_momentum")),
    ]:
        expected, _ = _run(optax.inject_hyperparams(getattr(optax, name), static)(**kwargs),
                           params, grads)
        got, _ = _run(optax.inject_hyperparams(getattr(ao, name), static)(**kwargs),
                      params, grads)
        assert _max_rel(expected, got) <= 1e-6, name


def test_a_traced_structural_integer_gives_a_clear_error() -> None:
    tx = optax.inject_hyperparams(ao.adafactor)(min_dim_size_to_factor=2)
    with pytest.raises(TypeError, match=r"min_dim_size_to_factor.*static_args"):
        tx.init(_tree(0))


def test_chain_masked_and_apply_if_finite_match_optax() -> None:
    params = _tree(0)
    grads = _grads(params, 8)
    grads[4] = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads[4])
    mask = {"a": True, "b": [False], "c": {"d": True, "e": False}, "f": True}

    def build(module: Any) -> Any:
        inner = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.masked(module.adamw(1e-2, weight_decay=0.1), mask))
        return optax.apply_if_finite(inner, max_consecutive_errors=3)

    expected, _ = _run(build(optax), params, grads)
    got, s_got = _run(build(ao), params, grads)
    assert _max_rel(expected, got) <= 1e-6
    assert int(s_got.total_notfinite) == 1
    # the leaves outside the mask have no state
    inner = s_got.inner_state[1].inner_state
    assert isinstance(inner.moments["mu"]["b"][0], optax.MaskedNode)


def test_multi_steps_accumulates_and_matches_optax() -> None:
    params = _tree(0)
    grads = _grads(params, 6)
    results = []
    for module in (optax, ao):
        tx = optax.MultiSteps(module.adamw(1e-2), every_k_schedule=3)
        results.append(_run(tx, params, grads)[0])
    assert _max_rel(*results) <= 1e-6
    # params move only on emitting steps
    tx = optax.MultiSteps(ao.adamw(1e-2), every_k_schedule=3)
    p1, _ = _run(tx, params, grads[:2])
    assert _bits_equal(p1, params)


def test_params_required_gives_optaxs_own_error() -> None:
    params = _tree(0)
    g = _grads(params, 1)[0]
    with pytest.raises(ValueError) as theirs:
        optax.adamw(1e-3).update(g, optax.adamw(1e-3).init(params), None)
    for tx in (ao.adamw(1e-3), ao.lion(1e-3), ao.adadelta(1.0), ao.adafactor(), ao.muon(0.02),
               ao.from_optimizer(anyoptim.AdamW(1e-3))):
        with pytest.raises(ValueError) as ours:
            tx.update(g, tx.init(params), None)
        assert str(ours.value) == str(theirs.value)
    # transformations that do not need them work without
    for tx in (ao.adam(1e-3), ao.sgd(1e-3, momentum=0.9), ao.rmsprop(1e-3),
               ao.from_optimizer(anyoptim.Adam(1e-3))):
        tx.update(g, tx.init(params), None)


def test_none_leaves_and_frozen_dict_are_transparent() -> None:
    flax_core = pytest.importorskip("flax.core")
    params = flax_core.FrozenDict({"w": jnp.ones((2, 2)), "b": jnp.ones(2)})
    grads = flax_core.FrozenDict({"w": jnp.ones((2, 2)), "b": None})
    for tx in (ao.adamw(0.1), ao.adafactor(), ao.from_optimizer(anyoptim.AdamW(0.1))):
        state = tx.init(params)
        updates, new_state = tx.update(grads, state, params)
        assert updates["b"] is None
        assert isinstance(updates, flax_core.FrozenDict)
        _assert_same_layout(state, new_state)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call,kind,pattern", [
    (lambda: ao.adamw(1e-3, b1=1.5), ValueError, r"adamw: b1 should be in \[0, 1\), 1.5"),
    (lambda: ao.adam(1e-3, eps=-1.0), ValueError, r"adam: eps should be >= 0, -1.0"),
    (lambda: ao.sgd("fast"), TypeError, r"sgd: learning_rate should be a number"),
    (lambda: ao.adam(None), TypeError, r"adam: learning_rate is required"),
    (lambda: ao.rmsprop(1e-3, decay=2.0), ValueError, r"rmsprop: decay should be in \[0, 1\]"),
    (lambda: ao.muon(1e-3, ns_steps=2.5), TypeError, r"muon: ns_steps should be a Python int"),
    (lambda: ao.muon(1e-3, ns_coeffs=(1.0, 2.0)), ValueError, r"muon: ns_coeffs should be three"),
    (lambda: ao.from_optimizer(optax.adam(1e-3)), TypeError,
     r"from_optimizer: optimizer should be an anyoptim optimizer"),
])
def test_bad_input_names_the_parameter_rule_value_and_fix(call: Any, kind: type,
                                                           pattern: str) -> None:
    with pytest.raises(kind, match=pattern):
        call()


def test_mismatched_state_and_masks_are_explained() -> None:
    tx = ao.adamw(1e-3)
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="adamw: the updates have 2 leaves"):
        tx.update({"w": jnp.ones(2), "v": jnp.ones(2)}, state, {"w": jnp.ones(2), "v": jnp.ones(2)})
    tx = ao.adamw(1e-3, mask={"w": jnp.asarray(True)})
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="mask leaves must be Python bools"):
        tx.update(params, tx.init(params), params)


# ----------------------------------------------------------------------------- Muon
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mlx_muon_under_optax_is_from_optimizer(dtype: str) -> None:
    """MLX's Muon (anyoptim.Muon) under optax: from_optimizer gives its new parameters bit for
    bit (``anyoptim.optax.muon`` is optax.contrib.muon, tested in test_optax_muon.py)."""
    params = _small_tree(getattr(jnp, dtype))
    grads = _grads(params, 4, seed=2)
    got, _ = _run(ao.from_optimizer(anyoptim.Muon(0.02, momentum=0.9, weight_decay=0.01)),
                  params, grads, jit=False)
    ref = anyoptim.Muon(0.02, momentum=0.9, weight_decay=0.01)
    ref.init(params)
    p, s = params, ref.state
    for g in grads:
        p, s = ref.pure_step(p, g, s)
    assert _bits_equal(got, p)
    # and the optax-named factory is a different algorithm (optax.contrib.muon's)
    other, _ = _run(ao.muon(0.02, beta=0.9), params, grads, jit=False)
    assert not _bits_equal(other, p)


# ----------------------------------------------------------------------------- flax
class _Models:
    """Tiny flax models, built lazily (flax is optional)."""

    @staticmethod
    def nnx_mlp(seed: int) -> Any:
        from flax import nnx

        class MLP(nnx.Module):
            def __init__(self, rngs: Any) -> None:
                # no bias before the BatchNorm: its gradient would be pure rounding noise
                self.l1 = nnx.Linear(4, 16, use_bias=False, rngs=rngs)
                self.bn = nnx.BatchNorm(16, rngs=rngs)
                self.l2 = nnx.Linear(16, 2, rngs=rngs)

            def __call__(self, x: Any) -> Any:
                return self.l2(jax.nn.relu(self.bn(self.l1(x))))

        return MLP(nnx.Rngs(seed))


def _data() -> tuple[Any, Any]:
    return jax.random.normal(jax.random.key(0), (32, 4)), jax.random.normal(jax.random.key(1), (32, 2))


def _nnx_train(tx: Any, steps: int) -> tuple[Any, Any, int]:
    from flax import nnx

    model = _Models.nnx_mlp(0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = _data()
    traces: list[int] = []

    @nnx.jit
    def step(model: Any, optimizer: Any) -> Any:
        traces.append(1)
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(steps)]
    assert losses[-1] < losses[0]
    return model, optimizer, len(traces)


def test_nnx_optimizer_matches_optax_and_pure_step() -> None:
    nnx = pytest.importorskip("flax.nnx")
    results = {}
    for name, tx in [
        ("optax", optax.adamw(1e-2, weight_decay=0.1)),
        ("factory", ao.adamw(1e-2, weight_decay=0.1)),
        ("from_optimizer", ao.from_optimizer(
            anyoptim.AdamW(1e-2, weight_decay=0.1, bias_correction=True))),
    ]:
        model, optimizer, traces = _nnx_train(tx, 20)
        assert traces == 1, name
        results[name] = nnx.state(model, nnx.Param)
        if name == "from_optimizer":
            state = ao.to_anyoptim_state(nnx.as_pure(optimizer.opt_state))
            assert int(state["step"]) == 20
    assert _max_rel(results["optax"], results["factory"]) <= 1e-6
    assert _max_rel(results["optax"], results["from_optimizer"]) <= 1e-5

    # anyoptim's own pure_step on the model's parameters as a plain dict, in an nnx.jit step
    model = _Models.nnx_mlp(0)
    x, y = _data()
    opt = anyoptim.AdamW(1e-2, weight_decay=0.1, bias_correction=True)
    opt.init(nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    @nnx.jit
    def step(model: Any, opt_state: Any) -> Any:
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        params = nnx.state(model, nnx.Param)
        new, opt_state = opt.pure_step(nnx.to_pure_dict(params), nnx.to_pure_dict(grads),
                                       opt_state)
        nnx.replace_by_pure_dict(params, new)
        nnx.update(model, params)
        return opt_state

    opt_state = opt.state
    for _ in range(20):
        opt_state = step(model, opt_state)
    route = nnx.state(model, nnx.Param)
    # the same maths as from_optimizer; optax's factorisation rounds differently
    assert _max_rel(route, results["from_optimizer"]) <= 1e-6
    assert _max_rel(route, results["factory"]) <= 1e-5


def _linen_setup() -> tuple[Any, Any, Any, Any]:
    linen = pytest.importorskip("flax.linen")

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x: Any) -> Any:
            return linen.Dense(2)(jax.nn.relu(linen.Dense(16)(x)))

    model = MLP()
    x, y = _data()
    params = model.init(jax.random.key(0), x)["params"]
    return model, params, x, y


def _train_state_run(tx: Any, steps: int, state: Any = None) -> Any:
    from flax.training import train_state

    model, params, x, y = _linen_setup()
    if state is None:
        state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    traces: list[int] = []

    @jax.jit
    def step(state: Any) -> Any:
        traces.append(1)

        def loss_fn(p: Any) -> Any:
            return jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

    for _ in range(steps):
        state = step(state)
    assert len(traces) <= 1
    return state


def test_train_state_chain_multisteps_and_inject_match_optax() -> None:
    pytest.importorskip("flax.training.train_state")
    for build in (
        lambda m: optax.chain(optax.clip_by_global_norm(1.0), m.adamw(1e-2, weight_decay=0.1)),
        lambda m: optax.MultiSteps(m.lion(1e-3), every_k_schedule=2),
        lambda m: optax.inject_hyperparams(m.adamw)(learning_rate=_SCHEDULE, b2=0.99),
    ):
        expected = _train_state_run(build(optax), 12)
        got = _train_state_run(build(ao), 12)
        assert int(got.step) == 12
        assert _max_rel(expected.params, got.params) <= 1e-6


def test_train_state_with_from_optimizer_matches_clipped_pure_step() -> None:
    pytest.importorskip("flax.training.train_state")
    opt = anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 12), bias_correction=True)
    got = _train_state_run(optax.chain(optax.clip_by_global_norm(1.0), ao.from_optimizer(opt)), 12)

    model, params, x, y = _linen_setup()
    ref = copy.deepcopy(opt)
    ref.init(params)

    @jax.jit
    def step(p: Any, s: Any) -> tuple[Any, Any]:
        g = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(p)
        norm = optax.tree.norm(g)
        # optax's clipping (no epsilon), then anyoptim's own step
        g = jax.tree.map(lambda t: jnp.where(norm < 1.0, t, t / norm * 1.0), g)
        return ref.pure_step(p, g, s)

    p, s = params, ref.state
    for _ in range(12):
        p, s = step(p, s)
    assert _max_rel(p, got.params) <= 1e-6


# ----------------------------------------------------------------------------- orbax
def _checkpointer() -> Any:
    ocp = pytest.importorskip("orbax.checkpoint")
    return ocp.StandardCheckpointer()


@pytest.mark.parametrize("kind", ["factory", "from_optimizer"])
def test_orbax_restore_continues_identically(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("flax.training.train_state")
    from flax.training import train_state

    def tx() -> Any:
        if kind == "factory":
            return optax.chain(optax.clip_by_global_norm(1.0), ao.adamw(_SCHEDULE, mu_dtype=jnp.bfloat16))
        return ao.from_optimizer(anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 20)))

    full = _train_state_run(tx(), 10)
    half = _train_state_run(tx(), 5)
    checkpointer = _checkpointer()
    path = tmp_path / "ckpt"
    checkpointer.save(path, {"params": half.params, "opt_state": half.opt_state,
                             "step": half.step})
    checkpointer.wait_until_finished()

    model, params, _, _ = _linen_setup()
    fresh_tx = tx()
    abstract = {"params": jax.eval_shape(lambda: params),
                "opt_state": jax.eval_shape(fresh_tx.init, params),
                "step": jax.eval_shape(lambda: half.step)}
    restored = checkpointer.restore(path, abstract)
    _assert_same_layout(abstract["opt_state"], restored["opt_state"])
    state = train_state.TrainState(step=restored["step"], apply_fn=model.apply,
                                   params=restored["params"], tx=fresh_tx,
                                   opt_state=restored["opt_state"])
    resumed = _train_state_run(fresh_tx, 5, state)
    assert _bits_equal(resumed.params, full.params)
    checkpointer.close()


def test_orbax_nnx_optimizer_state_round_trip(tmp_path: Path) -> None:
    nnx = pytest.importorskip("flax.nnx")
    checkpointer = _checkpointer()
    full_model, _, _ = _nnx_train(ao.adamw(1e-2), 8)
    model, optimizer, _ = _nnx_train(ao.adamw(1e-2), 4)
    checkpointer.save(tmp_path / "nnx", nnx.state((model, optimizer)))
    checkpointer.wait_until_finished()

    abstract = nnx.eval_shape(lambda: _fresh_pair())
    target = nnx.state(abstract)
    restored = checkpointer.restore(tmp_path / "nnx", target)
    model, optimizer = _fresh_pair()
    nnx.update((model, optimizer), restored)
    x, y = _data()

    @nnx.jit
    def step(model: Any, optimizer: Any) -> None:
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)

    for _ in range(4):
        step(model, optimizer)
    assert _bits_equal(nnx.state(model, nnx.Param), nnx.state(full_model, nnx.Param))
    checkpointer.close()


def _fresh_pair() -> tuple[Any, Any]:
    from flax import nnx

    model = _Models.nnx_mlp(0)
    return model, nnx.Optimizer(model, ao.adamw(1e-2), wrt=nnx.Param)


# ----------------------------------------------------------------------------- across front-ends
def test_from_optimizer_state_saves_and_continues_on_numpy(tmp_path: Path) -> None:
    params = _small_tree(jnp.float32)
    grads = _grads(params, 8, seed=9)
    opt = anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 8), weight_decay=0.05)
    tx = ao.from_optimizer(opt)
    p, s = _run(tx, params, grads[:4])
    opt.state = ao.to_anyoptim_state(s)
    anyoptim.save(tmp_path / "run.safetensors", opt, params=p)

    # continue in JAX ...
    p_jax = p
    for g in grads[4:]:
        u, s = tx.update(g, s, p_jax)
        p_jax = optax.apply_updates(p_jax, u)
    # ... and, from the file, as a plain anyoptim optimizer on NumPy
    loaded = anyoptim.load(tmp_path / "run.safetensors", library="numpy")
    p_np = anyoptim.load_params(tmp_path / "run.safetensors", library="numpy")
    assert int(loaded.step) == 4
    for g in grads[4:]:
        p_np = loaded.apply_gradients(jax.tree.map(np.asarray, g), p_np)
    assert all(type(x) is np.ndarray for x in jax.tree.leaves(p_np))
    assert _max_rel(p_jax, p_np) <= 1e-5


def test_anyoptim_state_loads_into_from_optimizer(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    params_np = {"w": rng.standard_normal((6, 5)).astype(np.float32),
                 "layers": [{"b": rng.standard_normal(5).astype(np.float32)}]}
    grads = [jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), params_np)
             for _ in range(6)]
    opt = anyoptim.Lion(1e-2, weight_decay=0.1)
    p_np = params_np
    for g in grads[:3]:
        p_np = opt.apply_gradients(g, p_np)
    anyoptim.save(tmp_path / "np.safetensors", opt, params=p_np)
    for g in grads[3:]:
        p_np = opt.apply_gradients(g, p_np)

    loaded = anyoptim.load(tmp_path / "np.safetensors")
    tx = ao.from_optimizer(loaded)
    p = jax.tree.map(jnp.asarray, anyoptim.load_params(tmp_path / "np.safetensors"))
    s = ao.from_anyoptim_state(tx, loaded.state, p)
    _assert_same_layout(jax.eval_shape(tx.init, p), s)
    assert int(s["step"]) == 3
    for g in grads[3:]:
        u, s = tx.update(jax.tree.map(jnp.asarray, g), s, p)
        p = optax.apply_updates(p, u)
    assert _max_rel(p_np, p) <= 1e-6


def test_from_anyoptim_state_names_what_is_missing() -> None:
    tx = ao.from_optimizer(anyoptim.Adam(1e-3))
    params = {"w": jnp.ones(2), "v": jnp.ones(3)}
    opt = anyoptim.Adam(1e-3)
    opt.init({"w": np.ones(2, np.float32)})
    with pytest.raises(KeyError, match="'v'"):
        ao.from_anyoptim_state(tx, opt.state, params)
    with pytest.raises(TypeError, match="from_optimizer"):
        ao.to_anyoptim_state(ao.adam(1e-3).init(params))


# ----------------------------------------------------------------------------- docs
def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "use-with-jax.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_use_with_jax_page_examples_run(tmp_path: Path) -> None:
    pytest.importorskip("flax")
    pytest.importorskip("orbax.checkpoint")
    blocks = _doc_blocks()
    assert len(blocks) >= 4
    # the page's blocks build on each other, as a reader would run them
    code = "\n\n".join(textwrap.dedent(b) for b in blocks)
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, f"docs/use-with-jax.md examples failed:\n{result.stderr}"


@pytest.mark.parametrize("make", [
    lambda: anyoptim.EMA(anyoptim.AdamW(1e-2, weight_decay=0.1), 0.9),
    lambda: anyoptim.GradientAccumulation(anyoptim.Adam(1e-2, bias_correction=True), 3),
    lambda: anyoptim.ClipByGlobalNorm(anyoptim.Lion(1e-3), 0.5),
    lambda: anyoptim.Lookahead(anyoptim.SGD(0.1, momentum=0.9)),
], ids=["EMA", "accumulate", "clip", "lookahead"])
def test_from_optimizer_runs_training_loop_wrappers_under_jit(make: Any) -> None:
    """A wrapper (EMA, accumulation, clipping, lookahead) as an optax transformation: under
    jax.jit, with a fixed state structure, equal to the wrapper's own NumPy run."""
    rng = np.random.default_rng(3)
    tx, ref = ao.from_optimizer(make()), make()
    params = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(2), jnp.float32)}
    mine = {k: np.asarray(v) for k, v in params.items()}
    state = tx.init(params)
    structure = jax.tree.structure(state)
    step = jax.jit(tx.update)
    for _ in range(12):
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in mine.items()}
        updates, state = step({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, updates)
        mine = ref.apply_gradients(g, mine)
        assert jax.tree.structure(state) == structure
    for k in mine:
        np.testing.assert_allclose(np.asarray(params[k]), mine[k], rtol=1e-6, atol=1e-6)
