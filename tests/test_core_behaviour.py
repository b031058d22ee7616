"""Core behaviour of anyoptim's optimizers, schedulers and clip_grad_norm.

Expected values come from the spec (``spec/mlx-optimizers.md``, its reference values eN), from
the real ``mlx.optimizers`` (skipped when MLX is missing) or from float64 NumPy computations
written out in the test; never from anyoptim itself. Where DESIGN.md improves on MLX
("Where anyoptim deliberately improves on MLX") the improvement is what is tested.

Sections:
 1. public surface            6. dtypes
 2. state layout, lifecycle   7. clip_grad_norm and schedulers
 3. DESIGN improvements       8. MLX integration (nn, value_and_grad, compile)
 4. inputs never mutated      9. save / load recipe (safetensors), MLX <-> anyoptim
 5. validation messages
"""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
from functools import partial
from typing import Any

import numpy as np
import pytest

import anyoptim as optim
from anyoptim.utils import tree_flatten, tree_unflatten

try:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as mlx_optim
    import mlx.utils as mlx_utils

    HAS_MLX = True
except ImportError:
    HAS_MLX = False
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="mlx is not installed")

f32 = np.float32
f64 = np.float64

MLX_NAMES = [
    "Optimizer",
    "MultiOptimizer",
    "SGD",
    "RMSprop",
    "Adagrad",
    "AdaDelta",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Adafactor",
    "Muon",
    "clip_grad_norm",
    "exponential_decay",
    "step_decay",
    "cosine_decay",
    "join_schedules",
    "linear_schedule",
]
OPTIMIZER_CLASSES = [
    "SGD",
    "RMSprop",
    "Adagrad",
    "AdaDelta",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Adafactor",
    "Muon",
    "MultiOptimizer",
]


# --------------------------------------------------------------------------------------------
# Helpers (independent of anyoptim)


def flat(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten dicts/lists/tuples to (dotted path, leaf); empty containers give nothing."""
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return [(prefix, tree)]
    out: list[tuple[str, Any]] = []
    for k, v in items:
        out += flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def to_np(x: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or MLX array (bfloat16 goes through float32)."""
    if HAS_MLX and isinstance(x, mx.array):
        if x.dtype == mx.bfloat16:
            x = x.astype(mx.float32)
        return np.array(x)
    return np.array(x, copy=True)


def snapshot(state: Any) -> dict[str, tuple[np.ndarray, str, type]]:
    return {k: (to_np(v), str(v.dtype), type(v)) for k, v in flat(state)}


def assert_unchanged(state: Any, snap: dict[str, tuple[np.ndarray, str, type]]) -> None:
    now = snapshot(state)
    assert list(now) == list(snap), "state entries were added or removed"
    for key, (value, dtype, cls) in snap.items():
        v2, d2, c2 = now[key]
        assert c2 is cls, f"{key}: array library changed ({cls} -> {c2})"
        assert d2 == dtype, f"{key}: dtype changed ({dtype} -> {d2})"
        assert np.array_equal(v2, value, equal_nan=True), f"{key}: value changed"


def rng_tree(seed: int, dtype: Any = f32, shapes: dict | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = shapes or {"m": (4, 3), "v": (3,), "t": (2, 3, 4)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def all_optimizers(lib: Any) -> dict[str, Any]:
    """One configured instance per optimizer, weight decay enabled where there is one."""
    return {
        "SGD": lib.SGD(0.1, momentum=0.9, weight_decay=0.05, dampening=0.1),
        "SGD-nesterov": lib.SGD(0.1, momentum=0.9, weight_decay=0.05, nesterov=True),
        "RMSprop": lib.RMSprop(0.01),
        "Adagrad": lib.Adagrad(0.1),
        "AdaDelta": lib.AdaDelta(1.0),
        "Adam": lib.Adam(0.01),
        "Adam-bc": lib.Adam(0.01, bias_correction=True),
        "AdamW": lib.AdamW(0.01, weight_decay=0.1),
        "Adamax": lib.Adamax(0.01),
        "Lion": lib.Lion(0.01, weight_decay=0.1),
        "Adafactor": lib.Adafactor(beta_1=0.9, weight_decay=0.1),
        "Adafactor-lr": lib.Adafactor(0.01, relative_step=False, weight_decay=0.1),
        "Muon": lib.Muon(0.02, weight_decay=0.1),
        "MultiOptimizer": lib.MultiOptimizer(
            [lib.SGD(0.1, momentum=0.9, weight_decay=0.1), lib.AdamW(0.01)],
            [lambda path, _: path.startswith("m")],
        ),
    }


OPT_KEYS = list(all_optimizers(optim))


# ============================================================================================
# 1. Public surface


@pytest.mark.parametrize("name", MLX_NAMES)
def test_mlx_names_exported(name: str) -> None:
    assert hasattr(optim, name), name
    assert name in optim.__all__


def test_submodules_exist() -> None:
    import anyoptim.optimizers
    import anyoptim.schedulers
    import anyoptim.utils

    assert optim.optimizers is anyoptim.optimizers
    assert optim.schedulers is anyoptim.schedulers
    assert optim.utils is anyoptim.utils
    assert optim.schedulers.cosine_decay is optim.cosine_decay
    assert optim.optimizers.Adam is optim.Adam
    for fn in (
        "tree_flatten",
        "tree_unflatten",
        "tree_map",
        "tree_map_with_path",
        "tree_reduce",
        "tree_merge",
    ):
        assert callable(getattr(optim.utils, fn)), fn


@pytest.mark.parametrize("name", [n for n in OPTIMIZER_CLASSES])
def test_optimizers_subclass_optimizer(name: str) -> None:
    cls = getattr(optim, name)
    assert inspect.isclass(cls) and issubclass(cls, optim.Optimizer)


@needs_mlx
def test_same_optimizer_classes_as_mlx() -> None:
    def found(module: Any, base: type) -> set[str]:
        return {
            n
            for n, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, base) and c is not base
        }

    # every MLX optimizer exists under the same name; anyoptim adds more (ADOPT, LAMB, ...)
    theirs = found(mlx_optim, mlx_optim.Optimizer)
    assert theirs, "no MLX optimizer classes found"
    assert theirs <= found(optim, optim.Optimizer), theirs - found(optim, optim.Optimizer)


@needs_mlx
@pytest.mark.parametrize("name", MLX_NAMES)
def test_signature_matches_mlx(name: str) -> None:
    ours, theirs = getattr(optim, name), getattr(mlx_optim, name)
    if inspect.isclass(theirs):
        ours, theirs = ours.__init__, theirs.__init__
    ps = list(inspect.signature(ours).parameters.values())
    qs = list(inspect.signature(theirs).parameters.values())
    # MLX's parameters first, unchanged; anyoptim's own options (e.g. Muon's variants) may
    # follow, keyword-only and with defaults, so every MLX call means the same
    extra = ps[len(qs):]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extra), extra
    ps = ps[:len(qs)]
    assert [p.name for p in ps] == [q.name for q in qs]
    for p, q in zip(ps, qs, strict=True):
        assert p.kind == q.kind, p.name
        assert type(p.default) is type(q.default), (p.name, p.default, q.default)
        assert p.default == q.default, (p.name, p.default, q.default)


def test_import_does_not_import_frameworks() -> None:
    code = (
        "import sys, numpy as np\n"
        "import anyoptim as optim, anyoptim.optimizers, anyoptim.schedulers, anyoptim.utils\n"
        "opt = optim.Adam(optim.cosine_decay(0.1, 10))\n"
        "opt.apply_gradients({'w': np.ones(2, np.float32)}, {'w': np.ones(2, np.float32)})\n"
        "optim.clip_grad_norm({'w': np.ones(2, np.float32)}, 1.0)\n"
        "bad = [m for m in ('mlx', 'torch', 'jax', 'jaxlib', 'cupy', 'tensorflow')\n"
        "       if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ============================================================================================
# 2. State layout and lifecycle


def test_fresh_state_layout() -> None:
    state = optim.Adam(0.01).state
    assert list(state) == ["step", "learning_rate"]
    assert isinstance(state["step"], np.ndarray) and state["step"].shape == ()
    assert state["step"].dtype == np.uint64 and int(state["step"]) == 0
    assert state["learning_rate"].dtype == np.float32 and state["learning_rate"].shape == ()
    assert state["learning_rate"] == f32(0.01)


def test_fresh_state_lr_dtypes() -> None:
    assert optim.SGD(1).state["learning_rate"].dtype == np.int32
    assert int(optim.SGD(1).learning_rate) == 1
    f16 = optim.SGD(np.asarray(0.5, np.float16)).state["learning_rate"]
    assert f16.dtype == np.float16 and float(f16) == 0.5
    assert optim.SGD(np.float64(0.1)).state["learning_rate"].dtype == np.float32
    assert optim.SGD(np.asarray(0.1, f64)).state["learning_rate"].dtype == np.float32


def test_adafactor_without_lr_has_no_learning_rate() -> None:
    opt = optim.Adafactor()
    assert list(opt.state) == ["step"]
    with pytest.raises(KeyError):
        opt.learning_rate  # noqa: B018
    assert list(optim.Adafactor(0.1).state) == ["step", "learning_rate"]


@needs_mlx
def test_fresh_state_matches_mlx() -> None:
    cases = [
        lambda m: m.Adam(0.01),
        lambda m: m.SGD(1),
        lambda m: m.Adafactor(),
        lambda m: m.Adafactor(learning_rate=0.3),
        lambda m: m.Lion(0.5),
    ]
    for make in cases:
        ours, theirs = make(optim).state, make(mlx_optim).state
        assert list(ours) == list(theirs)
        for k in theirs:
            assert str(ours[k].dtype) == str(theirs[k].dtype).split(".")[-1], k
            assert ours[k].shape == tuple(theirs[k].shape)
            assert np.array_equal(np.array(ours[k]), np.array(theirs[k]))


def e1_params() -> dict[str, Any]:
    return {
        "w": np.ones((2, 2), f32),
        "layers": [{"b": np.ones(3, f32)}, {}],
        "t": (np.ones(1, f32),),
    }


def test_init_mirrors_parameter_tree() -> None:
    opt = optim.Adam(0.01)
    opt.init(e1_params())
    keys = [k for k, _ in flat(opt.state)]
    assert keys == [
        "step",
        "learning_rate",
        "w.m",
        "w.v",
        "layers.0.b.m",
        "layers.0.b.v",
        "t.0.m",
        "t.0.v",
    ]
    assert type(opt.state["layers"]) is list and len(opt.state["layers"]) == 2
    assert opt.state["layers"][1] == {}
    assert type(opt.state["t"]) is tuple
    for key, value in flat(opt.state)[2:]:
        assert value.dtype == np.float32 and not value.any(), key
    assert opt.state["w"]["m"].shape == (2, 2)
    assert int(opt.step) == 0  # init does not step


def test_init_keeps_empty_containers() -> None:
    opt = optim.SGD(0.1)
    opt.init({"relu": {}, "drop": [], "w": np.ones(2, f32), "seq": [{}, {"x": np.ones(1, f32)}]})
    assert opt.state["relu"] == {} and type(opt.state["relu"]) is dict
    assert opt.state["drop"] == [] and type(opt.state["drop"]) is list
    assert opt.state["seq"][0] == {}
    assert list(opt.state["seq"][1]["x"]) == ["v"]


def test_init_is_idempotent_and_never_resets() -> None:
    opt = optim.Adam(0.1)
    params = e1_params()
    opt.init(params)
    first = {k: v for k, v in flat(opt.state)}
    opt.init(params)
    assert all(v is first[k] for k, v in flat(opt.state))
    grads = {
        "w": np.full((2, 2), 0.5, f32),
        "layers": [{"b": np.ones(3, f32)}],
        "t": (np.ones(1, f32),),
    }
    opt.apply_gradients(grads, params)
    after = snapshot(opt.state)
    assert np.allclose(after["w.m"][0], 0.05)
    opt.init(params)  # must not reset m/v, step or learning_rate
    assert_unchanged(opt.state, after)
    assert int(opt.step) == 1


def test_init_extends_lists_and_keeps_existing() -> None:
    opt = optim.SGD(0.1, momentum=0.9)
    a = np.ones(2, f32)
    opt.apply_gradients({"l": [a]}, {"l": [a]})
    v0 = opt.state["l"][0]["v"]
    opt.init({"l": [a, a, {"q": a}]})
    assert [k for k, _ in flat(opt.state)] == ["step", "learning_rate", "l.0.v", "l.1.v", "l.2.q.v"]
    assert opt.state["l"][0]["v"] is v0
    assert np.allclose(v0, 1.0)


def test_init_tuples_stay_tuples() -> None:
    opt = optim.Adam(0.1)
    a = np.ones(2, f32)
    opt.init({"t": (a, a)})
    assert type(opt.state["t"]) is tuple and len(opt.state["t"]) == 2
    opt.init({"t": (a, a, a)})
    assert type(opt.state["t"]) is tuple and len(opt.state["t"]) == 3
    # A tuple that came back from tree_unflatten as a list becomes a tuple again at re-init
    # and keeps its values.
    m = np.full(2, 0.25, f32)
    opt.state = {
        "step": np.asarray(1, np.uint64),
        "learning_rate": np.asarray(0.1, f32),
        "t": [{"m": m, "v": np.full(2, 0.5, f32)}],
    }
    opt.apply_gradients({"t": (np.zeros(2, f32),)}, {"t": (a,)})
    assert type(opt.state["t"]) is tuple
    assert np.allclose(opt.state["t"][0]["m"], 0.9 * 0.25)


def test_stale_entries_are_kept() -> None:
    opt = optim.Adam(0.1)
    params = {"a": np.ones(2, f32), "b": np.ones(3, f32)}
    opt.init(params)
    out = opt.apply_gradients({"a": np.ones(2, f32)}, params)
    assert list(out) == ["a"]
    assert not opt.state["b"]["m"].any() and not opt.state["b"]["v"].any()
    opt.init({"c": np.ones(1, f32)})
    assert set(opt.state) == {"step", "learning_rate", "a", "b", "c"}


def test_lazy_init_seeded_from_gradients() -> None:
    opt = optim.Adam(0.1)
    params = {
        "a": np.ones(3, f32),
        "sub": {"x": np.ones((2, 2), f32), "frozen": np.ones(4, f32)},
        "frozen": np.ones(1, f32),
    }
    grads = {"a": np.ones(3, f64), "sub": {"x": np.ones((2, 2), f64)}}
    out = opt.apply_gradients(grads, params)
    assert [k for k, _ in flat(out)] == ["a", "sub.x"]
    assert [k for k, _ in flat(opt.state)] == [
        "step",
        "learning_rate",
        "a.m",
        "a.v",
        "sub.x.m",
        "sub.x.v",
    ]
    assert opt.state["a"]["m"].dtype == np.float64  # the gradient's dtype, not the parameter's
    assert opt.state["sub"]["x"]["v"].shape == (2, 2)


def test_schedule_step_off_by_one_e7() -> None:
    seen: list[tuple[int, Any, tuple]] = []

    def schedule(step: Any) -> Any:
        seen.append((int(step), step.dtype, step.shape))
        return 0.1 * (step + 1)

    opt = optim.SGD(learning_rate=schedule)
    assert seen == [(0, np.uint64, ())]
    assert float(opt.learning_rate) == pytest.approx(0.1)
    params = {"w": np.array([1.0], f32)}
    for k, (lr, w) in enumerate([(0.1, 0.9), (0.2, 0.7), (0.3, 0.4)], start=1):
        params = opt.apply_gradients({"w": np.ones(1, f32)}, params)
        assert seen[-1][0] == k - 1 and seen[-1][1] == np.uint64
        assert opt.step.dtype == np.uint64 and int(opt.step) == k
        assert float(opt.learning_rate) == pytest.approx(lr, rel=1e-6)
        np.testing.assert_allclose(params["w"], [w], rtol=1e-6)
    # the setter writes into the same dict; a schedule overrides it before it is used
    state = opt.state
    opt.learning_rate = 5.0
    assert opt.state is state and float(opt.learning_rate) == 5.0
    params = opt.apply_gradients({"w": np.ones(1, f32)}, params)
    assert float(opt.learning_rate) == pytest.approx(0.4, rel=1e-6)
    np.testing.assert_allclose(params["w"], [0.0], atol=1e-6)


def test_bias_correction_uses_t_while_lr_uses_t_minus_1() -> None:
    """Adam bc + linear_schedule(0, 0.1, 4) against a float64 reference (e3)."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal(5).astype(f32)
    grads = [rng.standard_normal(5).astype(f32) for _ in range(6)]
    opt = optim.Adam(optim.linear_schedule(0.0, 0.1, 4), bias_correction=True)
    params = {"p": p}
    for g in grads:
        params = opt.apply_gradients({"p": g}, params)
    ref, m, v = p.astype(f64), np.zeros(5), np.zeros(5)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t, g in enumerate(grads, start=1):
        lr = min(t - 1, 4) * 0.1 / 4
        g = g.astype(f64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = ref - lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + eps)
    np.testing.assert_allclose(params["p"], ref, rtol=2e-5, atol=1e-7)
    assert int(opt.step) == 6
    assert float(opt.learning_rate) == pytest.approx(0.1, rel=1e-6)  # schedule(5) = end


def test_learning_rate_setter() -> None:
    opt = optim.SGD(0.1)
    state = opt.state
    opt.learning_rate = 0.5
    assert opt.state is state
    assert opt.learning_rate.dtype == np.float32 and float(opt.learning_rate) == 0.5
    out = opt.apply_gradients({"w": np.ones(1, f32)}, {"w": np.ones(1, f32)})
    np.testing.assert_allclose(out["w"], [0.5])
    assert opt.state is state and float(opt.learning_rate) == 0.5


def test_empty_gradient_tree_still_steps() -> None:
    opt = optim.SGD(optim.exponential_decay(0.1, 0.9))
    assert opt.apply_gradients({}, {}) == {}
    assert int(opt.step) == 1
    for _ in range(4):
        opt.update({}, {})
    assert int(opt.step) == 5
    assert float(opt.learning_rate) == pytest.approx(0.06561, rel=1e-6)


def test_state_getter_is_live_and_setter_rearms_init() -> None:
    opt = optim.SGD(0.123, momentum=0.9)
    assert opt.state is opt.state
    opt.state["hello"] = "world"
    opt.apply_gradients({"a": np.ones(2, f32)}, {"a": np.ones(2, f32)})
    assert opt.state["hello"] == "world"
    new = {
        "step": np.asarray(3, np.uint64),
        "learning_rate": np.asarray(0.25, f32),
        "a": {"v": np.full(2, 2.0, f32)},
    }
    opt.state = new
    assert opt.state is new
    # "b" is new: the setter re-armed the lazy init, so it gets state instead of a KeyError;
    # "a" keeps its restored momentum; the saved lr (0.25) wins over the constructor's 0.123.
    params = {"a": np.zeros(2, f32), "b": np.zeros(1, f32)}
    out = opt.apply_gradients({"a": np.ones(2, f32), "b": np.ones(1, f32)}, params)
    assert int(opt.step) == 4 and opt.state is new
    np.testing.assert_allclose(opt.state["a"]["v"], [2.8, 2.8], rtol=1e-6)
    np.testing.assert_allclose(out["a"], [-0.25 * 2.8] * 2, rtol=1e-6)
    np.testing.assert_allclose(out["b"], [-0.25], rtol=1e-6)


def test_saved_lr_and_restored_step_with_schedule() -> None:
    opt = optim.SGD(optim.exponential_decay(1.0, 0.5))
    for _ in range(3):
        opt.update({}, {})
    assert int(opt.step) == 3 and float(opt.learning_rate) == 0.25
    saved = dict(tree_flatten(opt.state))

    sched = optim.SGD(optim.exponential_decay(1.0, 0.5))
    sched.state = tree_unflatten(list(saved.items()))
    assert float(sched.learning_rate) == 0.25
    out = sched.apply_gradients({"w": np.ones(1, f32)}, {"w": np.zeros(1, f32)})
    assert int(sched.step) == 4 and float(sched.learning_rate) == 0.125
    np.testing.assert_allclose(out["w"], [-0.125])

    plain = optim.SGD(0.123)
    plain.state = tree_unflatten(list(saved.items()))
    out = plain.apply_gradients({"w": np.ones(1, f32)}, {"w": np.zeros(1, f32)})
    np.testing.assert_allclose(out["w"], [-0.25])
    assert float(plain.learning_rate) == 0.25


def test_state_identity_contract() -> None:
    opt = optim.Adam(0.1)
    top = opt.state
    params = {"a": np.ones(2, f32), "sub": {"b": np.ones((2, 2), f32)}, "l": [np.ones(1, f32)]}
    opt.init(params)
    per_param = [opt.state["a"], opt.state["sub"]["b"], opt.state["l"][0]]
    for _ in range(3):
        arrays = {k: v for k, v in flat(opt.state)}
        grads = {"a": np.ones(2, f32), "sub": {"b": np.ones((2, 2), f32)}, "l": [np.ones(1, f32)]}
        params = opt.apply_gradients(grads, params)
        assert opt.state is top
        now = [opt.state["a"], opt.state["sub"]["b"], opt.state["l"][0]]
        assert all(x is y for x, y in zip(now, per_param, strict=True))
        for k, v in flat(opt.state):
            if k != "learning_rate":  # an unscheduled lr is left alone, as in MLX
                assert v is not arrays[k], f"{k} was not replaced by a new array"
        assert float(opt.learning_rate) == pytest.approx(0.1)


E2_PARAMS = {"w": [[1.0, -2.0], [3.0, 0.5]], "b": [0.1, -0.2]}
E2_GRADS = {"w": [[0.5, -1.0], [0.25, 2.0]], "b": [1.0, -0.001]}
E2_EXPECTED = {
    (False, 1): {
        "w": [[0.6837724447250366, -1.683772325515747], [2.683772563934326, 0.1837722659111023]],
        "b": [-0.21622765064239502, 0.11612780392169952],
        "w.m": [[0.05, -0.1], [0.025, 0.2]],
        "w.v": [[0.00025, 0.001], [6.25e-05, 0.004]],
        "b.m": [0.1, -0.0001],
        "b.v": [0.001, 1.0000001937626735e-09],
    },
    (False, 10): {
        "w": [[-4.527905464172363, 3.527906894683838], [-2.527904510498047, -5.027907371520996]],
        "b": [-5.4279069900512695, 5.327095985412598],
        "w.m": [[0.325660765171051, -0.651321530342102], [0.1628303825855255, 1.302643060684204]],
        "w.v": [
            [0.002488780301064253, 0.009955121204257011],
            [0.0006221950752660632, 0.039820484817028046],
        ],
    },
    (True, 1): {
        "w": [[0.9000006914138794, -1.9000006914138794], [2.90000057220459, 0.4000006914138794]],
        "b": [6.780028343200684e-07, -0.10000166296958923],
    },
    (True, 10): {
        "w": [
            [7.539987564086914e-06, -1.0000075101852417],
            [2.000007390975952, -0.4999925196170807],
        ],
        "b": [-0.8999925255775452, 0.799982488155365],
    },
}


@pytest.mark.parametrize(("bias_correction", "steps"), list(E2_EXPECTED))
def test_adam_reference_values_e2(bias_correction: bool, steps: int) -> None:
    opt = optim.Adam(learning_rate=0.1, bias_correction=bias_correction)
    params = {k: np.array(v, f32) for k, v in E2_PARAMS.items()}
    grads = {k: np.array(v, f32) for k, v in E2_GRADS.items()}
    for _ in range(steps):
        params = opt.apply_gradients(grads, params)
    state = dict(flat(opt.state))
    assert int(state["step"]) == steps and state["step"].dtype == np.uint64
    assert state["learning_rate"].dtype == np.float32
    for key, expected in E2_EXPECTED[(bias_correction, steps)].items():
        got = params[key] if key in params else state[key]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6, err_msg=key)


def test_docs_example_e19(tmp_path: Any) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    model = {"w": np.zeros((5, 5), f32)}
    grads = {"w": np.ones((5, 5), f32)}
    opt = optim.Adam(learning_rate=1e-2)
    opt.update(model, grads)
    np.testing.assert_allclose(model["w"], -0.0316228, rtol=0, atol=5e-8)
    np.testing.assert_allclose(opt.state["w"]["m"], 0.1, rtol=1e-6)
    np.testing.assert_allclose(opt.state["w"]["v"], 0.001, rtol=1e-6)
    flat_state = tree_flatten(opt.state, destination={})
    assert list(flat_state) == ["step", "learning_rate", "w.m", "w.v"]
    path = str(tmp_path / "opt.safetensors")
    safetensors_numpy.save_file(flat_state, path)
    opt2 = optim.Adam(learning_rate=1e-2)
    opt2.state = tree_unflatten(list(safetensors_numpy.load_file(path).items()))
    opt2.update(model, grads)
    assert int(opt2.step) == 2
    np.testing.assert_allclose(model["w"], -0.0741187, rtol=0, atol=5e-8)


# ============================================================================================
# 3. DESIGN improvements


@pytest.mark.parametrize("name", ["step", "learning_rate"])
def test_reserved_top_level_name_is_a_clear_error(name: str) -> None:
    a = np.ones(2, f32)
    opt = optim.Adam(0.1)
    with pytest.raises(ValueError, match=repr(name)) as info:
        opt.apply_gradients({name: a}, {name: a})
    assert "collides" in str(info.value) or "collision" in str(info.value)
    assert int(opt.step) == 0 and list(opt.state) == ["step", "learning_rate"]
    with pytest.raises(ValueError, match=repr(name)):
        optim.SGD(0.1).init({"w": a, name: a})
    # nested one level deeper it is an ordinary parameter
    out = opt.apply_gradients({"model": {name: a}}, {"model": {name: a}})
    assert out["model"][name].shape == (2,)


def _trained_nested() -> tuple[Any, dict[str, Any]]:
    """Adam with a schedule after one update of a nested tree."""
    opt = optim.Adam(optim.exponential_decay(0.1, 0.5))
    params = {"a": np.ones(3, f32), "sub": {"b": np.ones((2, 2), f32), "l": [np.ones(2, f32)]}}
    grads = {
        "a": np.full(3, 0.5, f32),
        "sub": {"b": np.full((2, 2), -1.0, f32), "l": [np.ones(2, f32)]},
    }
    params = opt.apply_gradients(grads, params)
    return opt, params


def test_missing_state_is_clear_and_atomic() -> None:
    opt, params = _trained_nested()
    before = snapshot(opt.state)
    params = dict(params, sub=dict(params["sub"], new=np.ones(2, f32)))
    # "a", "sub.b" and "sub.l.0" come first in the walk and would be updated before "sub.new"
    grads = {
        "a": np.ones(3, f32),
        "sub": {"b": np.ones((2, 2), f32), "l": [np.ones(2, f32)], "new": np.ones(2, f32)},
    }
    with pytest.raises(KeyError) as info:
        opt.apply_gradients(grads, params)
    assert type(info.value) is not KeyError  # a dedicated subclass with a message
    assert "sub.new" in str(info.value) and "init" in str(info.value)
    assert_unchanged(opt.state, before)
    assert int(opt.step) == 1
    # the fix the message suggests
    opt.init(params)
    out = opt.apply_gradients(grads, params)
    assert int(opt.step) == 2 and "new" in out["sub"]


@pytest.mark.parametrize(
    ("bad_leaf", "exc"),
    [
        (np.ones(3, f32), ValueError),  # wrong shape (parameter is (2,))
        (None, (TypeError, ValueError)),
        ("mlx", TypeError),
    ],
    ids=["shape", "none", "mixed-numpy-mlx"],
)
def test_failed_update_changes_nothing(bad_leaf: Any, exc: Any) -> None:
    if isinstance(bad_leaf, str):
        if not HAS_MLX:
            pytest.skip("mlx is not installed")
        bad_leaf = mx.ones(2)
    opt, params = _trained_nested()
    before = snapshot(opt.state)
    grads = {"a": np.ones(3, f32), "sub": {"b": np.ones((2, 2), f32), "l": [bad_leaf]}}
    with pytest.raises(exc) as info:
        opt.apply_gradients(grads, params)
    assert "sub.l.0" in str(info.value)
    assert_unchanged(opt.state, before)
    # and the optimizer still works normally afterwards
    good = {"a": np.ones(3, f32), "sub": {"b": np.ones((2, 2), f32), "l": [np.ones(2, f32)]}}
    opt.apply_gradients(good, params)
    assert int(opt.step) == 2


@needs_mlx
def test_mlx_gradient_with_numpy_parameter_changes_nothing() -> None:
    opt = optim.SGD(0.1, momentum=0.9)
    params = {"a": mx.ones(2), "b": mx.ones(2)}
    opt.apply_gradients({"a": mx.ones(2), "b": mx.ones(2)}, params)
    before = snapshot(opt.state)
    with pytest.raises(TypeError):
        opt.apply_gradients(
            {"a": mx.ones(2), "b": mx.ones(2)}, {"a": params["a"], "b": np.ones(2, f32)}
        )
    assert_unchanged(opt.state, before)


def test_failed_first_update_creates_no_state() -> None:
    """All-or-nothing also holds for the call that lazily creates the state."""
    opt = optim.Adam(0.1)
    fresh = snapshot(opt.state)
    p = np.arange(6, dtype=f32).reshape(2, 3)
    with pytest.raises(ValueError):
        opt.apply_gradients({"w": np.ones((3, 2), f32)}, {"w": p})  # transposed gradient
    assert_unchanged(opt.state, fresh)
    # a correct call afterwards behaves like the first call of a fresh optimizer
    out = opt.apply_gradients({"w": np.ones((2, 3), f32)}, {"w": p})
    assert opt.state["w"]["m"].shape == (2, 3)
    np.testing.assert_allclose(out["w"], p - 0.1 * 0.1 / (math.sqrt(0.001) + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "mlx"])
def test_schedule_may_return_python_number(backend: str) -> None:
    if backend == "mlx" and not HAS_MLX:
        pytest.skip("mlx is not installed")
    arr = (
        (lambda x: mx.array(np.array(x, f32))) if backend == "mlx" else (lambda x: np.array(x, f32))
    )
    opt = optim.Adam(lambda step: 0.1 / (1 + int(step)))
    assert float(opt.learning_rate) == pytest.approx(0.1)
    params = {"w": arr([1.0, -1.0])}
    ref, m, v = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    for k in range(1, 4):
        g = np.array([0.5, 2.0]) * k
        params = opt.apply_gradients({"w": arr(g)}, params)
        lr = 0.1 / k  # update k uses schedule(k - 1)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref = ref - lr * m / (np.sqrt(v) + 1e-8)
        assert float(opt.learning_rate) == pytest.approx(lr, rel=1e-6)
    np.testing.assert_allclose(to_np(params["w"]), ref, rtol=1e-5)
    sgd = optim.SGD(lambda step: 0.05)
    out = sgd.apply_gradients({"w": arr([1.0])}, {"w": arr([1.0])})
    np.testing.assert_allclose(to_np(out["w"]), [0.95], rtol=1e-6)


def test_multioptimizer_keeps_gradient_key_order() -> None:
    opt = optim.MultiOptimizer(
        [optim.SGD(0.1), optim.SGD(1.0)],
        [lambda path, _: path.startswith("a") or path.endswith("q")],
    )
    keys = ["z", "a", "m", "b", "sub", "c"]
    grads = {k: np.ones(1, f32) for k in keys}
    grads["sub"] = {"y": np.ones(1, f32), "q": np.ones(1, f32), "x": np.ones(1, f32)}
    params = {k: np.zeros(1, f32) for k in keys}
    params["sub"] = {"x": np.zeros(1, f32), "q": np.zeros(1, f32), "y": np.zeros(1, f32)}
    for _ in range(3):
        out = opt.apply_gradients(grads, params)
        assert list(out) == keys and list(out["sub"]) == ["y", "q", "x"]
    np.testing.assert_allclose(out["a"], [-0.1])
    np.testing.assert_allclose(out["sub"]["q"], [-0.1])
    np.testing.assert_allclose(out["z"], [-1.0])
    np.testing.assert_allclose(out["sub"]["x"], [-1.0])


def test_multioptimizer_failure_leaves_every_part_untouched() -> None:
    first, second = optim.SGD(0.1, momentum=0.9), optim.Adam(0.1)
    opt = optim.MultiOptimizer([first, second], [lambda path, _: path.startswith("a")])
    params = {"a": np.ones(2, f32), "b": np.ones(2, f32), "c": np.ones(2, f32)}
    opt.apply_gradients({"a": np.ones(2, f32), "b": np.ones(2, f32)}, params)
    s1, s2 = snapshot(first.state), snapshot(second.state)
    with pytest.raises(KeyError):
        # "a" (first optimizer) succeeds, then "c" has no state in the second optimizer
        opt.apply_gradients(
            {"a": np.ones(2, f32), "b": np.ones(2, f32), "c": np.ones(2, f32)}, params
        )
    assert_unchanged(first.state, s1)
    assert_unchanged(second.state, s2)
    assert int(first.step) == 1 and int(second.step) == 1


def test_multioptimizer_failed_first_update_can_be_retried() -> None:
    first, second = optim.SGD(0.1, momentum=0.9), optim.Adam(0.1)
    opt = optim.MultiOptimizer([first, second], [lambda path, _: path.startswith("a")])
    params = {"a": np.ones(2, f32), "b": np.ones(2, f32)}
    with pytest.raises(ValueError):  # "a" succeeds in the first optimizer, "b" has a bad shape
        opt.apply_gradients({"a": np.ones(2, f32), "b": np.ones(3, f32)}, params)
    assert list(first.state) == ["step", "learning_rate"] and int(first.step) == 0
    assert list(second.state) == ["step", "learning_rate"] and int(second.step) == 0
    out = opt.apply_gradients({"a": np.ones(2, f32), "b": np.ones(2, f32)}, params)
    np.testing.assert_allclose(out["a"], [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [1 - 0.1 * 0.1 / math.sqrt(0.001)] * 2, rtol=1e-6)
    assert int(first.step) == 1 and int(second.step) == 1


def test_update_plain_dict_model_merges_and_writes_in_place() -> None:
    x, y, top = np.ones(2, f32), np.full(2, 7.0, f32), np.full(3, 5.0, f32)
    l0, l1 = np.ones(1, f32), np.full(1, 3.0, f32)
    model = {"sub": {"x": x, "y": y}, "top": top, "l": [l0, l1]}
    opt = optim.SGD(0.5, momentum=0.5)
    # the first update lazily creates the state, the second runs on an initialised optimizer
    for expected_x in ([0.5, 0.5], [-0.25, -0.25]):
        grads = {"sub": {"x": np.ones(2, f32)}, "l": [np.ones(1, f32)]}
        assert opt.update(model, grads) is None
        assert set(model["sub"]) == {"x", "y"}  # sibling kept (MLX's dict.update drops it)
        assert model["sub"]["x"] is x and np.array_equal(x, expected_x)  # same object, new values
        assert model["sub"]["y"] is y and np.array_equal(y, [7.0, 7.0])
        assert model["top"] is top and np.array_equal(top, [5.0] * 3)
        assert model["l"][0] is l0 and np.array_equal(l0, expected_x[:1])
        assert model["l"][1] is l1 and np.array_equal(l1, [3.0])


# ============================================================================================
# 4. Inputs are never mutated


@pytest.mark.parametrize("name", OPT_KEYS)
def test_read_only_inputs_are_not_mutated(name: str) -> None:
    opt = all_optimizers(optim)[name]
    shapes = {"m": (4, 3), "v": (3,), "t": (2, 3, 4), "s": ()}
    params = rng_tree(0, shapes=shapes)
    for arr in params.values():
        arr.flags.writeable = False
    originals = {k: v.copy() for k, v in params.items()}
    current = params
    for step in range(3):
        grads = rng_tree(10 + step, shapes=shapes)
        for arr in grads.values():
            arr.flags.writeable = False
        gcopy = {k: v.copy() for k, v in grads.items()}
        new = opt.apply_gradients(grads, current)
        for k in grads:
            assert np.array_equal(grads[k], gcopy[k]), k
            assert np.all(np.isfinite(new[k])), k
        for arr in new.values():
            arr.flags.writeable = False
        current = new
    for k in params:
        assert np.array_equal(params[k], originals[k]), k
        assert not np.array_equal(current[k], originals[k]), f"{k} was never updated"


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Lion"])
def test_update_with_read_only_model_arrays_replaces_them(name: str) -> None:
    # the second update runs on an initialised optimizer (the in-place fast path, if any)
    opt = all_optimizers(optim)[name]
    for _ in range(2):
        w = np.array([1.0, -2.0], f32)
        w.flags.writeable = False
        g = np.array([0.5, 0.25], f32)
        g.flags.writeable = False
        model = {"w": w}
        opt.update(model, {"w": g})
        assert model["w"] is not w
        assert not np.array_equal(model["w"], [1.0, -2.0])
        assert np.array_equal(w, [1.0, -2.0]) and np.array_equal(g, [0.5, 0.25])


def test_update_with_read_only_model_sgd_value() -> None:
    w = np.ones(2, f32)
    w.flags.writeable = False
    model = {"w": w}
    optim.SGD(0.5, weight_decay=0.1).update(model, {"w": np.ones(2, f32)})
    assert model["w"] is not w
    np.testing.assert_allclose(model["w"], 1 - 0.5 * 1.1)
    assert np.array_equal(w, [1.0, 1.0])


def test_clip_grad_norm_does_not_mutate() -> None:
    g = np.array([3.0, 4.0], f32)
    g.flags.writeable = False
    clipped, _ = optim.clip_grad_norm({"g": g}, 1.0)
    assert np.array_equal(g, [3.0, 4.0])
    np.testing.assert_allclose(clipped["g"], [0.6, 0.8], rtol=1e-6)


# ============================================================================================
# 5. Validation

# (factory taking the library, substrings the anyoptim message must contain)
INVALID = {
    "SGD-nesterov-momentum": (
        lambda m: m.SGD(0.1, nesterov=True),
        ["SGD", "momentum", "> 0", "nesterov", "0.0"],
    ),
    "SGD-nesterov-dampening": (
        lambda m: m.SGD(0.1, momentum=0.9, dampening=0.5, nesterov=True),
        ["SGD", "dampening", "nesterov", "0.5"],
    ),
    "RMSprop-alpha": (lambda m: m.RMSprop(0.1, alpha=-0.5), ["RMSprop", "alpha", ">=0", "-0.5"]),
    "RMSprop-eps": (lambda m: m.RMSprop(0.1, eps=0.0), ["RMSprop", "eps", ">0", "0.0"]),
    "RMSprop-eps-neg": (lambda m: m.RMSprop(0.1, eps=-1e-3), ["RMSprop", "eps", ">0", "-0.001"]),
    "Adagrad-eps": (lambda m: m.Adagrad(0.1, eps=0.0), ["Adagrad", "eps", ">0", "0.0"]),
    "AdaDelta-rho": (lambda m: m.AdaDelta(0.1, rho=-0.1), ["AdaDelta", "rho", ">=0", "-0.1"]),
    "AdaDelta-eps": (lambda m: m.AdaDelta(0.1, eps=0.0), ["AdaDelta", "eps", ">0", "0.0"]),
    "Adam-beta2": (lambda m: m.Adam(0.1, betas=[0.9, 1.0]), ["Adam", "beta2", "[0, 1)", "1.0"]),
    "Adam-beta1": (lambda m: m.Adam(0.1, betas=[-0.1, 0.9]), ["Adam", "beta1", "[0, 1)", "-0.1"]),
    "Adam-eps": (lambda m: m.Adam(0.1, eps=-1e-8), ["Adam", "eps", ">=0", "-1e-08"]),
    "AdamW-beta1": (lambda m: m.AdamW(0.1, betas=[1.5, 0.9]), ["AdamW", "beta1", "[0, 1)", "1.5"]),
    "AdamW-eps": (lambda m: m.AdamW(0.1, eps=-1.0), ["AdamW", "eps", ">=0", "-1.0"]),
    "Adamax-beta2": (
        lambda m: m.Adamax(0.1, betas=[0.9, 2.0]),
        ["Adamax", "beta2", "[0, 1)", "2.0"],
    ),
    "Lion-beta2": (lambda m: m.Lion(0.1, betas=[0.9, 1.0]), ["Lion", "beta2", "[0, 1)", "1.0"]),
    "Lion-beta1": (lambda m: m.Lion(0.1, betas=[-0.5, 0.9]), ["Lion", "beta1", "[0, 1)", "-0.5"]),
    "MultiOptimizer-filters": (
        lambda m: m.MultiOptimizer([m.SGD(0.1), m.SGD(0.2)], []),
        ["MultiOptimizer", "filters", "1", "0"],
    ),
    "MultiOptimizer-too-many": (
        lambda m: m.MultiOptimizer([m.SGD(0.1)], [lambda *a: True]),
        ["MultiOptimizer", "filters", "0", "1"],
    ),
    "cosine_decay": (
        lambda m: m.cosine_decay(1.0, 0),
        ["cosine_decay", "decay_steps", ">= 1", "0"],
    ),
    "step_decay": (lambda m: m.step_decay(1.0, 0.5, 0), ["step_decay", "step_size", ">= 1", "0"]),
    "linear_schedule": (
        lambda m: m.linear_schedule(0.0, 1.0, -2),
        ["linear_schedule", "steps", ">= 1", "-2"],
    ),
    "join_schedules-empty": (
        lambda m: m.join_schedules([], []),
        ["join_schedules", "schedules", "1"],
    ),
    "join_schedules-boundaries": (
        lambda m: m.join_schedules([m.linear_schedule(0.0, 1.0, 2), m.cosine_decay(1.0, 2)], []),
        ["join_schedules", "boundaries", "1", "[]"],
    ),
    "clip_grad_norm": (
        lambda m: m.clip_grad_norm({"g": np.ones(1, f32)}, -1.0),
        ["clip_grad_norm", "max_norm", ">=0", "-1.0"],
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_hyperparameters(case: str) -> None:
    make, parts = INVALID[case]
    with pytest.raises(ValueError) as info:
        make(optim)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@needs_mlx
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_hyperparameters_also_rejected_by_mlx(case: str) -> None:
    make, _ = INVALID[case]
    if case == "clip_grad_norm":
        make = lambda m: m.clip_grad_norm({"g": mx.ones(1)}, -1.0)  # noqa: E731
    with pytest.raises(ValueError):
        make(mlx_optim)


@needs_mlx
def test_rmsprop_messages_like_mlx() -> None:
    for kwargs, rule in [({"alpha": -1.0}, ">=0"), ({"eps": 0.0}, ">0")]:
        for lib in (optim, mlx_optim):
            with pytest.raises(ValueError) as info:
                lib.RMSprop(0.1, **kwargs)
            assert rule in str(info.value), (lib, str(info.value))


def test_multioptimizer_state_setter_validation() -> None:
    opt = optim.MultiOptimizer([optim.SGD(0.1), optim.SGD(0.2)], [lambda *a: True])
    with pytest.raises(ValueError, match="Invalid state provided"):
        opt.state = {"states": [optim.SGD(0.1).state]}
    with pytest.raises(ValueError, match="Invalid state provided"):
        opt.state = {"wrong": []}


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.Adam(0.1, eps=0.0),
        lambda m: m.Adam(0.1, betas=[0.0, 0.0]),
        lambda m: m.RMSprop(0.1, alpha=0.0),
        lambda m: m.AdaDelta(0.1, rho=0.0),
        lambda m: m.Lion(0.1, betas=[0.0, 0.0]),
        lambda m: m.SGD(0.1, momentum=0.5, nesterov=True),
        lambda m: m.cosine_decay(1.0, 1),
        lambda m: m.step_decay(1.0, 0.5, 1),
        lambda m: m.linear_schedule(0.0, 1.0, 1),
        lambda m: m.join_schedules([m.linear_schedule(0.0, 1.0, 1)], []),
        lambda m: m.Adafactor(eps=(-1.0, -1.0), clip_threshold=-1.0),
        lambda m: m.Muon(0.1, momentum=-3.0, ns_steps=0),
    ],
)
def test_boundary_values_are_accepted(make: Any) -> None:
    make(optim)
    if HAS_MLX:
        make(mlx_optim)


# ============================================================================================
# 6. dtypes


@pytest.mark.parametrize("name", OPT_KEYS)
def test_float64_numpy_keeps_float64(name: str) -> None:
    opt = all_optimizers(optim)[name]
    shapes = {"m": (4, 3), "v": (3,), "t": (2, 3, 4), "s": ()}
    params = rng_tree(1, f64, shapes)
    for step in range(2):
        params = opt.apply_gradients(rng_tree(20 + step, f64, shapes), params)
        for k, v in params.items():
            assert v.dtype == np.float64, (k, v.dtype)
            assert isinstance(v, np.ndarray) and v.shape == shapes[k]
    for key, value in flat(opt.state):
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "step":
            assert value.dtype == np.uint64
        elif leaf == "learning_rate":
            assert value.dtype == np.float32
        else:
            assert value.dtype == np.float64, (key, value.dtype)


def _mx_tree(seed: int, dtype: Any) -> dict[str, Any]:
    return {k: mx.array(v).astype(dtype) for k, v in rng_tree(seed).items()}


def _dtype_layout(opt: Any, out: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    return (
        {k: str(v.dtype) for k, v in out.items()},
        {k: str(v.dtype) for k, v in flat(opt.state)},
    )


@needs_mlx
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", OPT_KEYS)
def test_mlx_half_precision_keeps_dtype(name: str, dtype: str) -> None:
    dt = getattr(mx, dtype)
    opt = all_optimizers(optim)[name]
    params = _mx_tree(0, dt)
    for step in range(2):
        params = opt.apply_gradients(_mx_tree(5 + step, dt), params)
    out_dtypes, state_dtypes = _dtype_layout(opt, params)
    assert set(out_dtypes.values()) == {f"mlx.core.{dtype}"}
    for key, d in state_dtypes.items():
        leaf = key.rsplit(".", 1)[-1]
        expected = {"step": "mlx.core.uint64", "learning_rate": "mlx.core.float32"}.get(
            leaf, f"mlx.core.{dtype}"
        )
        assert d == expected, (key, d)
    assert all(isinstance(v, mx.array) for _, v in flat(opt.state))


@needs_mlx
@pytest.mark.parametrize("name", OPT_KEYS)
def test_mlx_f16_params_f32_grads_like_mlx(name: str) -> None:
    ours, theirs = all_optimizers(optim)[name], all_optimizers(mlx_optim)[name]
    params = _mx_tree(0, mx.float16)
    grads = _mx_tree(1, mx.float32)
    a = ours.apply_gradients(grads, params)
    b = theirs.apply_gradients(grads, params)
    out_dtypes, state_dtypes = _dtype_layout(ours, a)
    assert out_dtypes == {k: str(v.dtype) for k, v in b.items()}
    assert set(out_dtypes.values()) == {"mlx.core.float32"}
    assert state_dtypes == {k: str(v.dtype) for k, v in mlx_utils.tree_flatten(theirs.state)}


@needs_mlx
def test_mlx_dtype_rules_e5() -> None:
    # explicit init from float16 params, then float32 grads -> float32 output and state
    opt = optim.Adam(0.01)
    p16 = {"w": mx.ones(3, dtype=mx.float16)}
    opt.init(p16)
    assert opt.state["w"]["m"].dtype == mx.float16
    out = opt.apply_gradients({"w": mx.ones(3)}, p16)
    assert out["w"].dtype == mx.float32
    assert opt.state["w"]["m"].dtype == mx.float32 and opt.state["w"]["v"].dtype == mx.float32
    # float32 params, float16 grads -> float32 output, float16 state
    opt = optim.Adam(0.01)
    out = opt.apply_gradients({"w": mx.ones(3, dtype=mx.float16)}, {"w": mx.ones(3)})
    assert out["w"].dtype == mx.float32
    assert opt.state["w"]["m"].dtype == mx.float16 and opt.state["w"]["v"].dtype == mx.float16
    # SGD(1): int32 lr, float32 update
    opt = optim.SGD(1)
    out = opt.apply_gradients({"w": mx.full((2,), 0.25)}, {"w": mx.ones(2)})
    assert opt.state["learning_rate"].dtype == mx.int32
    assert out["w"].dtype == mx.float32
    np.testing.assert_allclose(np.array(out["w"]), [0.75, 0.75])
    # float16 zero gradient gives NaN (eps underflows), as in MLX; bfloat16 is fine
    nan = optim.Adam(0.1).apply_gradients(
        {"w": mx.zeros(2, dtype=mx.float16)}, {"w": mx.ones(2, dtype=mx.float16)}
    )
    assert np.isnan(np.array(nan["w"])).all()
    ok = optim.Adam(0.1).apply_gradients(
        {"w": mx.zeros(2, dtype=mx.bfloat16)}, {"w": mx.ones(2, dtype=mx.bfloat16)}
    )
    assert to_np(ok["w"]).tolist() == [1.0, 1.0]


# ============================================================================================
# 7. clip_grad_norm and schedulers


def _arr(backend: str) -> Any:
    if backend == "mlx":
        if not HAS_MLX:
            pytest.skip("mlx is not installed")
        return lambda x, dtype=f32: mx.array(np.asarray(x, dtype))
    return lambda x, dtype=f32: np.asarray(x, dtype)


@pytest.mark.parametrize("backend", ["numpy", "mlx"])
def test_clip_grad_norm_e10(backend: str) -> None:
    arr = _arr(backend)
    grads = {"a": arr([3.0, 4.0]), "b": arr([[0.0]])}
    same, norm = optim.clip_grad_norm(grads, 10.0)
    assert type(norm) is type(grads["a"]) and norm.shape == () and "float32" in str(norm.dtype)
    assert float(norm) == 5.0
    assert np.array_equal(to_np(same["a"]), [3.0, 4.0])  # factor exactly 1 below max_norm
    assert to_np(same["b"]).shape == (1, 1)
    five, _ = optim.clip_grad_norm(grads, 5.0)  # at the threshold the gradients still shrink
    a5 = to_np(five["a"])
    np.testing.assert_allclose(a5, [2.9999995, 3.9999993], rtol=1.5e-7)
    assert (a5 < [3.0, 4.0]).all()
    one, _ = optim.clip_grad_norm(grads, 1.0)
    np.testing.assert_allclose(to_np(one["a"]), [0.6, 0.8], rtol=1e-6)
    assert to_np(one["a"]).dtype == np.float32
    zero, norm0 = optim.clip_grad_norm(grads, 0.0)
    assert not to_np(zero["a"]).any() and float(norm0) == 5.0


@pytest.mark.parametrize("backend", ["numpy", "mlx"])
def test_clip_grad_norm_dtypes(backend: str) -> None:
    arr = _arr(backend)
    ints, norm = optim.clip_grad_norm({"i": arr([3, 4], np.int32)}, 1.0)
    assert "float32" in str(ints["i"].dtype)
    np.testing.assert_allclose(to_np(ints["i"]), [0.6, 0.8], rtol=1e-6)
    half, norm = optim.clip_grad_norm({"h": arr([60000.0] * 4, np.float16)}, 1.0)
    assert "float32" in str(norm.dtype) and float(norm) == 120000.0
    assert "float16" in str(half["h"].dtype)
    assert to_np(half["h"]).tolist() == [0.5] * 4
    tree = {"l": [arr([1.0]), (arr([2.0]),)], "d": {}}
    clipped, _ = optim.clip_grad_norm(tree, 100.0)
    assert type(clipped["l"]) is list and type(clipped["l"][1]) is tuple and clipped["d"] == {}


@needs_mlx
@pytest.mark.parametrize("max_norm", [0.0, 1.0, 5.0, 10.0, 1e6])
def test_clip_grad_norm_bit_identical_to_mlx(max_norm: float) -> None:
    rng = np.random.default_rng(5)
    tree = {
        "a": rng.standard_normal((3, 4)).astype(f32),
        "l": [rng.standard_normal(5).astype(f32)],
        "i": np.array([3, -4], np.int32),
        "h": rng.standard_normal(6).astype(np.float16),
    }
    ref, ref_norm = mlx_optim.clip_grad_norm(mlx_utils.tree_map(mx.array, tree), max_norm)
    for ours, our_norm in (
        optim.clip_grad_norm(tree, max_norm),
        optim.clip_grad_norm(mlx_utils.tree_map(mx.array, tree), max_norm),
    ):
        assert str(our_norm.dtype).split(".")[-1] == str(ref_norm.dtype).split(".")[-1]
        assert np.array_equal(np.array(our_norm), np.array(ref_norm))
        assert [k for k, _ in flat(ours)] == [k for k, _ in flat(ref)]
        for (k, x), (_, y) in zip(flat(ours), flat(ref), strict=True):
            assert str(x.dtype).split(".")[-1] == str(y.dtype).split(".")[-1], k
            assert np.array_equal(np.array(x), np.array(y)), k


def test_clip_grad_norm_empty_tree() -> None:
    tree, norm = optim.clip_grad_norm({}, 1.0)
    assert tree == {} and float(norm) == 0.0 and norm.dtype == np.float32


@needs_mlx
def test_clip_grad_norm_bfloat16_norm() -> None:
    _, norm = optim.clip_grad_norm({"g": mx.array([3.0, 4.0], dtype=mx.bfloat16)}, 1.0)
    assert norm.dtype == mx.bfloat16 and float(norm.astype(mx.float32)) == 5.0


def test_cosine_decay_table() -> None:
    schedule = optim.cosine_decay(1.0, 4, end=0.2)
    expected = [1.0, 0.88284, 0.6, 0.31716, 0.2, 0.2, 0.2, 0.2, 0.2]
    for s, e in enumerate(expected):
        value = schedule(np.asarray(s, np.uint64))
        assert value.dtype == np.float32 and value.shape == ()
        ref = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(s, 4) / 4))
        assert float(value) == pytest.approx(e, abs=1e-5)
        assert float(value) == pytest.approx(ref, rel=1e-6)
    assert float(optim.cosine_decay(0.5, 10)(np.asarray(10, np.uint64))) == pytest.approx(
        0.0, abs=1e-7
    )


def test_join_schedules_table() -> None:
    schedule = optim.join_schedules([lambda step: 3.0, optim.linear_schedule(10.0, 20.0, 4)], [2])
    expected = [3, 3, 10, 12.5, 15, 17.5, 20, 20, 20]
    for s, e in enumerate(expected):
        value = schedule(np.asarray(s, np.uint64))
        assert isinstance(value, np.ndarray) and value.shape == ()
        assert float(value) == pytest.approx(e, rel=1e-6)
    # a Python int step works too (the later schedule sees s - boundary)
    assert float(schedule(5)) == pytest.approx(17.5, rel=1e-6)


def test_schedule_docs_examples() -> None:
    opt = optim.SGD(learning_rate=optim.exponential_decay(0.1, 0.9))
    for _ in range(5):
        opt.update({}, {})
    assert float(opt.learning_rate) == pytest.approx(0.1 * 0.9**4, rel=1e-6)
    opt = optim.SGD(learning_rate=optim.step_decay(0.1, 0.9, 10))
    for _ in range(21):
        opt.update({}, {})
    assert float(opt.learning_rate) == pytest.approx(0.081, rel=1e-6)
    warm = optim.linear_schedule(0.0, 1e-1, 100)
    assert float(warm(np.asarray(50, np.uint64))) == pytest.approx(0.05, rel=1e-6)
    assert float(optim.linear_schedule(0.0, 1.0, 4)(-2)) == pytest.approx(-0.5)


def test_python_int_steps_give_python_floats() -> None:
    value = optim.exponential_decay(0.1, 0.9)(7)
    assert type(value) is float and value == 0.1 * 0.9**7 == 0.04782969000000001
    value = optim.step_decay(0.1, 0.9, 10)(21)
    assert type(value) is float and value == 0.1 * 0.9**2
    arr = optim.exponential_decay(0.1, 0.9)(np.asarray(7, np.uint64))
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    assert float(arr) == pytest.approx(0.04782968, rel=1e-6)


@needs_mlx
def test_schedules_on_mlx_steps() -> None:
    for name, make in [
        ("cos", lambda m: m.cosine_decay(1.0, 4, end=0.2)),
        ("lin", lambda m: m.linear_schedule(0.0, 1.0, 3)),
        ("exp", lambda m: m.exponential_decay(0.1, 0.9)),
        ("step", lambda m: m.step_decay(0.1, 0.5, 2)),
        (
            "join",
            lambda m: m.join_schedules(
                [m.linear_schedule(0.0, 1.0, 3), m.cosine_decay(1.0, 5)], [3]
            ),
        ),
    ]:
        ours, theirs = make(optim), make(mlx_optim)
        for s in range(9):
            step = mx.array(s, dtype=mx.uint64)
            a, b = ours(step), theirs(step)
            assert isinstance(a, mx.array) and a.dtype == b.dtype, name
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, err_msg=f"{name} {s}")


# ============================================================================================
# 8. MLX integration


def _mlp() -> Any:
    mx.random.seed(42)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    mx.eval(model.parameters())
    return model


def _loss(model: Any, x: Any, y: Any) -> Any:
    return nn.losses.mse_loss(model(x), y)


def _batches(n: int = 6) -> list[tuple[Any, Any]]:
    rng = np.random.default_rng(7)
    return [
        (
            mx.array(rng.standard_normal((16, 4)).astype(f32)),
            mx.array(rng.standard_normal((16, 2)).astype(f32)),
        )
        for _ in range(n)
    ]


def _train(lib: Any, make: Any, compiled: bool, freeze_bias: bool = False) -> tuple[Any, Any]:
    model = _mlp()
    if freeze_bias:
        model.layers[0].freeze(keys=["bias"])
    optimizer = make(lib)
    loss_and_grad = nn.value_and_grad(model, _loss)

    def step(x: Any, y: Any) -> Any:
        loss, grads = loss_and_grad(model, x, y)
        optimizer.update(model, grads)
        return loss

    if compiled:
        state = [model.state, optimizer.state]
        step = partial(mx.compile, inputs=state, outputs=state)(step)
    for x, y in _batches():
        loss = step(x, y)
        mx.eval(model.parameters(), optimizer.state)
        assert np.isfinite(loss.item())
    return model, optimizer


TRAIN_CONFIGS = {
    "SGD": lambda m: m.SGD(0.05, momentum=0.9, weight_decay=1e-3, nesterov=True),
    "Adam-cosine": lambda m: m.Adam(m.cosine_decay(1e-2, 10), bias_correction=True),
    "AdamW": lambda m: m.AdamW(1e-2),
    "RMSprop": lambda m: m.RMSprop(1e-3),
    "Adagrad": lambda m: m.Adagrad(1e-2),
    "AdaDelta": lambda m: m.AdaDelta(1.0),
    "Adamax": lambda m: m.Adamax(1e-2),
    "Lion": lambda m: m.Lion(1e-3, weight_decay=0.1),
    "Adafactor": lambda m: m.Adafactor(),
    "Muon": lambda m: m.Muon(0.02),
    "Multi": lambda m: m.MultiOptimizer(
        [m.Muon(0.02), m.Adam(m.linear_schedule(0.0, 1e-2, 3))], [lambda path, a: a.ndim >= 2]
    ),
}


def _assert_same_params(a: Any, b: Any, rtol: float = 2e-5, atol: float = 1e-6) -> None:
    fa, fb = mlx_utils.tree_flatten(a.parameters()), mlx_utils.tree_flatten(b.parameters())
    assert [k for k, _ in fa] == [k for k, _ in fb]
    for (k, x), (_, y) in zip(fa, fb, strict=True):
        np.testing.assert_allclose(np.array(x), np.array(y), rtol=rtol, atol=atol, err_msg=k)


@needs_mlx
@pytest.mark.parametrize("config", list(TRAIN_CONFIGS))
def test_mlx_training_loop_matches_mlx(config: str) -> None:
    make = TRAIN_CONFIGS[config]
    ours_model, ours_opt = _train(optim, make, compiled=False)
    ref_model, ref_opt = _train(mlx_optim, make, compiled=False)
    _assert_same_params(ours_model, ref_model)
    assert all(isinstance(v, mx.array) for _, v in flat(ours_opt.state))
    ours_keys = [k for k, _ in flat(ours_opt.state)]
    assert ours_keys == [k for k, _ in mlx_utils.tree_flatten(ref_opt.state)]


@needs_mlx
@pytest.mark.parametrize("config", ["SGD", "Adam-cosine", "Muon", "Multi"])
def test_mlx_compiled_training_matches_eager(config: str) -> None:
    make = TRAIN_CONFIGS[config]
    compiled_model, compiled_opt = _train(optim, make, compiled=True)
    eager_model, eager_opt = _train(optim, make, compiled=False)
    ref_model, _ = _train(mlx_optim, make, compiled=True)
    _assert_same_params(compiled_model, eager_model, rtol=1e-5)
    _assert_same_params(compiled_model, ref_model)
    compiled_state, eager_state = flat(compiled_opt.state), flat(eager_opt.state)
    assert [k for k, _ in compiled_state] == [k for k, _ in eager_state]
    for (k, x), (_, y) in zip(compiled_state, eager_state, strict=True):
        assert x.dtype == y.dtype, k
        np.testing.assert_allclose(np.array(x), np.array(y), rtol=1e-5, atol=1e-7, err_msg=k)
    steps = [compiled_opt.step] if config != "Multi" else [o.step for o in compiled_opt.optimizers]
    assert all(int(s.item()) == len(_batches()) for s in steps)


@needs_mlx
def test_mlx_compiled_schedule_values_e16() -> None:
    opt = optim.SGD(optim.exponential_decay(0.1, 0.9))
    w = {"w": mx.ones(2)}
    opt.init(w)
    state = [opt.state]
    seen = []

    @partial(mx.compile, inputs=state, outputs=state)
    def step(p: Any) -> Any:
        return opt.apply_gradients({"w": mx.ones(2)}, p)

    for _ in range(4):
        w = step(w)
        mx.eval(w, opt.state)
        seen.append((int(opt.step.item()), opt.learning_rate.item()))
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    np.testing.assert_allclose([lr for _, lr in seen], [0.1, 0.09, 0.081, 0.0729], rtol=1e-6)
    np.testing.assert_allclose(np.array(w["w"]), 1 - (0.1 + 0.09 + 0.081 + 0.0729), rtol=1e-6)


@needs_mlx
def test_mlx_frozen_parameters_get_no_state() -> None:
    make = TRAIN_CONFIGS["AdamW"]
    model, opt = _train(optim, make, compiled=False, freeze_bias=True)
    ref_model, ref_opt = _train(mlx_optim, make, compiled=False, freeze_bias=True)
    assert "bias" not in opt.state["layers"][0]
    assert list(opt.state["layers"][0]) == ["weight"]
    assert [k for k, _ in flat(opt.state)] == [k for k, _ in mlx_utils.tree_flatten(ref_opt.state)]
    bias0 = _mlp().layers[0].bias
    assert np.array_equal(np.array(model.layers[0].bias), np.array(bias0))
    _assert_same_params(model, ref_model)


@needs_mlx
def test_mlx_schedule_sees_uint64_mlx_step() -> None:
    seen = []

    def schedule(step: Any) -> Any:
        seen.append((type(step), step.dtype))
        return optim.cosine_decay(0.1, 5)(step)

    opt = optim.Adam(schedule)
    opt.apply_gradients({"w": mx.ones(2)}, {"w": mx.ones(2)})
    assert seen[-1] == (mx.array, mx.uint64)
    assert isinstance(opt.learning_rate, mx.array) and opt.learning_rate.dtype == mx.float32


# ============================================================================================
# 9. Save / load recipe


def save_params() -> dict[str, Any]:
    rng = np.random.default_rng(11)
    return {
        "w": rng.standard_normal((2, 2)).astype(f32),
        "layers": [{"b": rng.standard_normal(3).astype(f32)}, {}],
        "t": (rng.standard_normal(1).astype(f32),),
    }


def save_grads(k: int) -> dict[str, Any]:
    rng = np.random.default_rng(100 + k)
    return {
        "w": rng.standard_normal((2, 2)).astype(f32),
        "layers": [{"b": rng.standard_normal(3).astype(f32)}, {}],
        "t": (rng.standard_normal(1).astype(f32),),
    }


SAVE_CONFIGS = {
    "Adam": lambda m: m.Adam(0.01, bias_correction=True),
    "SGD-schedule": lambda m: m.SGD(m.exponential_decay(0.1, 0.9), momentum=0.9),
    "Adafactor": lambda m: m.Adafactor(beta_1=0.9),
    "Lion": lambda m: m.Lion(0.01, weight_decay=0.1),
    "Muon": lambda m: m.Muon(0.02),
    "Multi": lambda m: m.MultiOptimizer(
        [m.SGD(0.1, momentum=0.5), m.Adam(0.01)], [lambda path, _: path.startswith("w")]
    ),
}


def _assert_trees_identical(a: Any, b: Any) -> None:
    """Same leaves (paths, dtypes, values bit for bit); the key order may differ."""
    fa, fb = sorted(flat(a), key=lambda kv: kv[0]), sorted(flat(b), key=lambda kv: kv[0])
    assert [k for k, _ in fa] == [k for k, _ in fb]
    for (k, x), (_, y) in zip(fa, fb, strict=True):
        assert str(x.dtype) == str(y.dtype), k
        assert np.array_equal(to_np(x), to_np(y)), k


@pytest.mark.parametrize("config", list(SAVE_CONFIGS))
def test_numpy_safetensors_recipe_continues_bit_identically(config: str, tmp_path: Any) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    make = SAVE_CONFIGS[config]
    opt, params = make(optim), save_params()
    for k in range(2):
        params = opt.apply_gradients(save_grads(k), params)
    path = str(tmp_path / "state.safetensors")
    safetensors_numpy.save_file(tree_flatten(opt.state, destination={}), path)
    loaded = safetensors_numpy.load_file(path)
    restored = make(optim)
    restored.state = tree_unflatten(list(loaded.items()))
    p1, p2 = params, params
    for k in range(2, 5):
        p1 = opt.apply_gradients(save_grads(k), p1)
        p2 = restored.apply_gradients(save_grads(k), p2)
    _assert_trees_identical(p1, p2)
    _assert_trees_identical(opt.state, restored.state)
    sub = restored.state if config != "Multi" else restored.optimizers[1].state
    if config != "Multi":
        assert type(sub["t"]) is tuple and len(sub["layers"]) == 2


def _mx_params(tree: Any) -> Any:
    return mlx_utils.tree_map(lambda x: mx.array(x), tree)


@needs_mlx
@pytest.mark.parametrize("config", list(SAVE_CONFIGS))
def test_mlx_safetensors_recipe_continues_bit_identically(config: str, tmp_path: Any) -> None:
    make = SAVE_CONFIGS[config]
    opt = make(optim)
    params = _mx_params(save_params())
    params["layers"][0]["b"] = params["layers"][0]["b"].astype(mx.bfloat16)
    grads = [_mx_params(save_grads(k)) for k in range(5)]
    for g in grads:
        g["layers"][0]["b"] = g["layers"][0]["b"].astype(mx.bfloat16)
    for k in range(2):
        params = opt.apply_gradients(grads[k], params)
    mx.eval(params, opt.state)
    path = str(tmp_path / "state.safetensors")
    mx.save_safetensors(path, tree_flatten(opt.state, destination={}))
    restored = make(optim)
    restored.state = tree_unflatten(list(mx.load(path).items()))
    p1, p2 = params, params
    for k in range(2, 5):
        p1 = opt.apply_gradients(grads[k], p1)
        p2 = restored.apply_gradients(grads[k], p2)
    mx.eval(p1, p2, opt.state, restored.state)
    _assert_trees_identical(p1, p2)
    _assert_trees_identical(opt.state, restored.state)
    assert p1["layers"][0]["b"].dtype == mx.bfloat16


CROSS_CONFIGS = ["Adam", "SGD-schedule", "Lion", "Multi"]


def _cross(writer: Any, reader: Any, config: str, tmp_path: Any) -> None:
    """`writer` trains 2 steps and saves; `reader` loads and continues; compare with `writer`
    continuing from its live state."""
    make = SAVE_CONFIGS[config]
    grads = [_mx_params(save_grads(k)) for k in range(5)]
    opt = make(writer)
    params = _mx_params(save_params())
    for k in range(2):
        params = opt.apply_gradients(grads[k], params)
    mx.eval(params, opt.state)
    path = str(tmp_path / "state.safetensors")
    flatten = tree_flatten if writer is optim else mlx_utils.tree_flatten
    mx.save_safetensors(path, flatten(opt.state, destination={}))
    loaded = mx.load(path)
    restored = make(reader)
    unflatten = tree_unflatten if reader is optim else mlx_utils.tree_unflatten
    restored.state = unflatten(list(loaded.items()))
    p1, p2 = params, params
    for k in range(2, 5):
        p1 = opt.apply_gradients(grads[k], p1)
        p2 = restored.apply_gradients(grads[k], p2)
    mx.eval(p1, p2)
    _assert_trees_identical(p1, p2)
    ref_state = dict(mlx_utils.tree_flatten(opt.state))
    ours_state = mlx_utils.tree_flatten(restored.state)
    assert sorted(k for k, _ in ours_state) == sorted(ref_state)
    for key, value in ours_state:
        assert str(value.dtype) == str(ref_state[key].dtype), key
        assert np.array_equal(np.array(value), np.array(ref_state[key])), key


@needs_mlx
@pytest.mark.parametrize("config", CROSS_CONFIGS)
def test_state_file_from_real_mlx_loads_into_anyoptim(config: str, tmp_path: Any) -> None:
    _cross(mlx_optim, optim, config, tmp_path)


@needs_mlx
@pytest.mark.parametrize("config", CROSS_CONFIGS)
def test_state_file_from_anyoptim_loads_into_real_mlx(config: str, tmp_path: Any) -> None:
    _cross(optim, mlx_optim, config, tmp_path)
