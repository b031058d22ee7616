"""Differential tests of AdaBelief, LaProp, Adam-atan2, StableAdamW and the cautious flag
against their reference implementations (optax, pytorch_optimizer, adam_atan2_pytorch).

Each case runs 60 random steps on a tree of a scalar, a vector, a matrix and a 3-d tensor,
feeds the same gradients to anyoptim and to the reference, and compares the parameters after
every step: float64 within 1e-12 relative (to the largest entry of the leaf), float32 within
1e-6. ``LARGEST`` collects the largest error per case (printed by the last test with ``-s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import anyoptim as optim

STEPS = 60
SHAPES = [(), (5,), (3, 4), (2, 3, 2)]
TOL = {"float64": 1e-12, "float32": 1e-6}
LR = 2.0**-7  # exact in float32 (the MLX-style classes keep the learning rate in float32)
LARGEST: dict[str, float] = {}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) / scale


def _check(key: str, worst: float, dtype: str, tol: float | None = None) -> None:
    LARGEST[key] = max(LARGEST.get(key, 0.0), worst)
    assert worst <= (TOL[dtype] if tol is None else tol), (key, worst)


def _problem(seed: int, dtype: str) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    p0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    grads = [[np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
             for _ in range(STEPS)]
    grads[3][1][2] = 0  # an exact zero and a large gradient
    grads[7][2][0, 0] = 50
    return p0, grads


def _tree(leaves: list[Any]) -> dict[str, Any]:
    """A nested tree (dicts and a list) over the four leaves."""
    return {"scale": leaves[0], "enc": {"b": leaves[1], "w": leaves[2]}, "head": [leaves[3]]}


def _leaves(tree: dict[str, Any]) -> list[Any]:
    return [tree["scale"], tree["enc"]["b"], tree["enc"]["w"], tree["head"][0]]


def torch_pair(make_ours: Callable[[list[Any]], Any], make_ref: Callable[[list[Any]], Any],
               dtype: str, key: str, seed: int = 0, tol: float | None = None,
               lr_lambda: Callable[[int], float] | None = None,
               problem: Callable[[int, str], Any] | None = None) -> None:
    """An anyoptim.torch drop-in vs a torch reference optimizer, step by step (with
    ``lr_lambda``, both under ``torch.optim.lr_scheduler.LambdaLR``)."""
    torch = pytest.importorskip("torch")
    p0, grads = (problem or _problem)(seed, dtype)
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa, ob = make_ours(a), make_ref(b)
    scheds = ([torch.optim.lr_scheduler.LambdaLR(o, lr_lambda) for o in (oa, ob)]
              if lr_lambda is not None else [])
    worst = 0.0
    for gs in grads:
        for x, y, g in zip(a, b, gs):
            x.grad = torch.from_numpy(g.copy())
            y.grad = torch.from_numpy(g.copy())
        oa.step()
        ob.step()
        for s in scheds:
            s.step()
        for x, y in zip(a, b):
            worst = max(worst, _rel(x.detach().numpy(), y.detach().numpy()))
    _check(key, worst, dtype, tol)


def core_vs_torch(make_ours: Callable[[], optim.Optimizer], make_ref: Callable[[list[Any]], Any],
                  dtype: str, key: str, seed: int = 1, tol: float | None = None,
                  problem: Callable[[int, str], Any] | None = None) -> None:
    """An anyoptim MLX-style optimizer on a NumPy tree vs a torch reference optimizer."""
    torch = pytest.importorskip("torch")
    p0, grads = (problem or _problem)(seed, dtype)
    params = _tree([p.copy() for p in p0])
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    opt, ob = make_ours(), make_ref(b)
    worst = 0.0
    for gs in grads:
        params = opt.apply_gradients(_tree(gs), params)
        for y, g in zip(b, gs):
            y.grad = torch.from_numpy(g.copy())
        ob.step()
        for x, y in zip(_leaves(params), b):
            assert x.dtype == np.dtype(dtype)
            worst = max(worst, _rel(x, y.detach().numpy()))
    _check(key, worst, dtype, tol)


def core_vs_optax(make_ours: Callable[[], optim.Optimizer], ref: Any, dtype: str, key: str,
                  seed: int = 2, tol: float | None = None) -> None:
    """An anyoptim MLX-style optimizer on a NumPy tree vs an optax transformation."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    with jax.enable_x64(dtype == "float64"):
        p0, grads = _problem(seed, dtype)
        params = _tree([p.copy() for p in p0])
        pb = _tree([jnp.asarray(p) for p in p0])
        opt, sb = make_ours(), ref.init(pb)
        worst = 0.0
        for gs in grads:
            params = opt.apply_gradients(_tree(gs), params)
            ub, sb = ref.update(_tree([jnp.asarray(g) for g in gs]), sb, pb)
            pb = optax.apply_updates(pb, ub)
            for x, y in zip(_leaves(params), _leaves(pb)):
                worst = max(worst, _rel(x, np.asarray(y)))
    _check(key, worst, dtype, tol)


def optax_pair(ours: Callable[[], Any], ref: Callable[[], Any], key: str, dtype: str,
               seed: int = 3, tol: float | None = None) -> None:
    """An anyoptim.optax factory (jitted update, no params) vs the optax one."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    with jax.enable_x64(dtype == "float64"):
        tx_a, tx_b = ours(), ref()
        p0, grads = _problem(seed, dtype)
        pa = pb = _tree([jnp.asarray(p) for p in p0])
        sa, sb = tx_a.init(pa), tx_b.init(pb)
        update = jax.jit(tx_a.update)
        worst = 0.0
        for gs in grads:
            g = _tree([jnp.asarray(x) for x in gs])
            ua, sa = update(g, sa)
            ub, sb = tx_b.update(g, sb, pb)
            pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
            for x, y in zip(_leaves(pa), _leaves(pb)):
                assert x.dtype == y.dtype
                worst = max(worst, _rel(np.asarray(x), np.asarray(y)))
    _check(key, worst, dtype, tol)


def state_dict_round_trip(make: Callable[[list[Any]], Any], steps: int = 5) -> None:
    """A drop-in resumed from its state_dict (through torch.save/load) continues exactly."""
    torch = pytest.importorskip("torch")
    import io

    p0, grads = _problem(4, "float32")
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa = make(a)
    for gs in grads[:steps]:
        for x, g in zip(a, gs):
            x.grad = torch.from_numpy(g.copy())
        oa.step()
    buf = io.BytesIO()
    torch.save(oa.state_dict(), buf)
    buf.seek(0)
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    ob = make(b)
    ob.load_state_dict(torch.load(buf, weights_only=True))
    for gs in grads[steps:steps + 5]:
        for x, y, g in zip(a, b, gs):
            x.grad = torch.from_numpy(g.copy())
            y.grad = torch.from_numpy(g.copy())
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ============================================================================= AdaBelief
BELIEF_CORE_TORCH = {
    "default": ({}, {}),
    "decoupled-wd": ({"weight_decay": 0.1}, {"weight_decay": 0.1}),
    "coupled-wd": ({"weight_decay": 0.1, "decouple": False},
                   {"weight_decay": 0.1, "weight_decouple": False}),
    "fixed-decay": ({"weight_decay": 0.01, "fixed_decay": True},
                    {"weight_decay": 0.01, "fixed_decay": True}),
    "rectify": ({"rectify": True}, {"rectify": True}),
    "rectify-no-sgd": ({"rectify": True, "degenerated_to_sgd": False, "betas": (0.9, 0.99)},
                       {"rectify": True, "degenerated_to_sgd": False, "betas": (0.9, 0.99)}),
    "ams-bound": ({"ams_bound": True}, {"ams_bound": True}),
    "betas-eps": ({"betas": (0.8, 0.99), "eps": 1e-6, "eps_root": 1e-6},
                  {"betas": (0.8, 0.99), "eps": 1e-6}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(BELIEF_CORE_TORCH))
def test_adabelief_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    ours, ref = BELIEF_CORE_TORCH[case]
    ours = {"eps": 1e-16, "eps_root": 1e-16, **ours}
    core_vs_torch(lambda: optim.AdaBelief(LR, **ours),
                  lambda ps: po.AdaBelief(ps, lr=LR, **ref), dtype,
                  f"AdaBelief core/{case}/{dtype} vs pytorch_optimizer.AdaBelief")


BELIEF_TORCH = {
    "default": {},
    "coupled-wd": {"weight_decay": 0.1, "weight_decouple": False},
    "decoupled-wd": {"weight_decay": 0.1},
    "fixed-decay": {"weight_decay": 0.01, "fixed_decay": True},
    "rectify": {"rectify": True},
    "rectify-threshold": {"rectify": True, "n_sma_threshold": 8, "degenerated_to_sgd": False},
    "ams-bound": {"ams_bound": True, "weight_decay": 0.1},
    "maximize-eps": {"maximize": True, "eps": 1e-8, "betas": (0.8, 0.99)},
    "per-param-path": {"foreach": False},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(BELIEF_TORCH))
def test_adabelief_torch_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = BELIEF_TORCH[case]
    torch_pair(lambda ps: at.AdaBelief(ps, lr=0.01, **kw),
               lambda ps: po.AdaBelief(ps, lr=0.01, **kw), dtype,
               f"AdaBelief torch/{case}/{dtype} vs pytorch_optimizer.AdaBelief")


def test_adabelief_torch_schedule_vs_pytorch_optimizer() -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    torch_pair(lambda ps: at.AdaBelief(ps, lr=0.01, weight_decay=0.1),
               lambda ps: po.AdaBelief(ps, lr=0.01, weight_decay=0.1), "float64",
               "AdaBelief torch/LambdaLR/float64 vs pytorch_optimizer.AdaBelief",
               lr_lambda=lambda t: 1.0 / (1 + 0.1 * t))


BELIEF_OPTAX = {
    "default": {},
    "nesterov": {"nesterov": True},
    "betas-eps": {"b1": 0.8, "b2": 0.99, "eps": 1e-8, "eps_root": 1e-10},
}


def _optax_dtype(dtype: str, kw: dict[str, Any]) -> tuple[str, dict[str, Any], float | None]:
    """optax computes the bias corrections ``1 - b**count`` in float32 from float32-rounded
    betas (``f32(0.999)`` is 1.3e-5 off in ``1 - b``), which anyoptim does not copy: float32
    agrees to 1e-5 then, and to 1e-6 with betas exact in float32 (the ``-exact-b`` cases)."""
    if dtype == "float32":
        return dtype, kw, 1e-5
    if dtype == "float32-exact-b":
        return "float32", {**kw, "b1": 0.75, "b2": 0.9375}, None
    return dtype, kw, None


@pytest.mark.parametrize("dtype", ["float64", "float32", "float32-exact-b"])
@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("case", list(BELIEF_OPTAX))
def test_adabelief_optax_vs_optax(case: str, schedule: bool, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    lr = optax.cosine_decay_schedule(LR, STEPS) if schedule else LR
    real, kw, tol = _optax_dtype(dtype, BELIEF_OPTAX[case])
    optax_pair(lambda: ao.adabelief(lr, **kw), lambda: optax.adabelief(lr, **kw),
               f"AdaBelief optax/{case}/schedule={schedule}/{dtype} vs optax.adabelief", real,
               tol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float32-exact-b"])
@pytest.mark.parametrize("case", list(BELIEF_OPTAX))
def test_adabelief_core_vs_optax(case: str, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    real, kw, tol = _optax_dtype(dtype, BELIEF_OPTAX[case])
    kw = dict(kw)
    b1, b2 = kw.pop("b1", 0.9), kw.pop("b2", 0.999)
    core_vs_optax(lambda: optim.AdaBelief(LR, betas=(b1, b2), **kw),
                  optax.adabelief(LR, b1=b1, b2=b2, **kw), real,
                  f"AdaBelief core/{case}/{dtype} vs optax.adabelief", tol=tol)


def test_adabelief_torch_state_dict_round_trip() -> None:
    pytest.importorskip("torch")
    import anyoptim.torch as at

    state_dict_round_trip(lambda ps: at.AdaBelief(ps, lr=0.01, weight_decay=0.1,
                                                  ams_bound=True))
    state_dict_round_trip(lambda ps: at.AdaBelief(ps, lr=0.01, rectify=True))


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (1.0, 0.9)}, "AdaBelief: beta1"),
    ({"eps": -1.0}, "AdaBelief: eps should be >= 0, -1.0"),
    ({"eps_root": -1.0}, "eps_root"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"rectify": "yes"}, "rectify"),
    ({"rectify": True, "nesterov": True}, "nesterov"),
    ({"n_sma_threshold": -1}, "n_sma_threshold"),
])
def test_adabelief_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        optim.AdaBelief(0.1, **kwargs)


def test_adabelief_drop_ins_reject_bad_values() -> None:
    pytest.importorskip("torch")
    import torch

    import anyoptim.torch as at

    w = torch.nn.Parameter(torch.zeros(2))
    for kwargs, match in (({"lr": -1.0}, "lr=-1.0 is invalid"),
                          ({"betas": (0.9, 1.5)}, r"betas\[1\]"),
                          ({"rectify": 1}, "rectify"),
                          ({"adanorm": True}, "adanorm")):
        with pytest.raises(ValueError, match=match):
            at.AdaBelief([w], **kwargs)
    opt = at.AdaBelief([w], lr=0.1)
    w.grad = torch.ones(2)
    opt.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError, match="eps"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(2)) and not opt.state[w]


@pytest.mark.parametrize("kwargs, rtol", [
    ({"weight_decay": 0.1, "nesterov": True}, 1e-6),
    ({"weight_decay": 0.1, "ams_bound": True}, 1e-6),
    # a traced step computes the rectifier in float32 (NumPy's concrete step: in float64)
    ({"weight_decay": 0.1, "rectify": True}, 1e-4),
])
def test_adabelief_jit_pure_step(kwargs: dict, rtol: float) -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    opt = optim.AdaBelief(0.01, **kwargs)
    params = {"w": jnp.ones(3)}
    opt.init(params)
    step = jax.jit(lambda p, g, s: opt.pure_step(p, g, s))
    ref = optim.AdaBelief(0.01, **kwargs)
    rp = {"w": np.ones(3, np.float32)}
    p, s = params, opt.state
    for t in range(8):
        p, s = step(p, {"w": jnp.full(3, 0.5 + t, jnp.float32)}, s)
        rp = ref.apply_gradients({"w": np.full(3, 0.5 + t, np.float32)}, rp)
    np.testing.assert_allclose(np.asarray(p["w"]), rp["w"], rtol=rtol)


# ============================================================================= LaProp
LAPROP_CORE_TORCH = {
    "default": ({}, {}),
    "decoupled-wd": ({"weight_decay": 0.1}, {"weight_decay": 0.1}),
    "fixed-decay": ({"weight_decay": 0.01, "fixed_decay": True},
                    {"weight_decay": 0.01, "fixed_decay": True}),
    "centered": ({"centered": True}, {"centered": True}),
    "centered-ams": ({"centered": True, "ams_bound": True, "steps_before_using_centered": 3},
                     {"centered": True, "ams_bound": True}),
    "ams-bound": ({"ams_bound": True}, {"ams_bound": True}),
    "betas-eps": ({"betas": (0.8, 0.99), "eps": 1e-6}, {"betas": (0.8, 0.99), "eps": 1e-6}),
}


def _laprop_ref(po: Any, ps: list[Any], lr: float, kw: dict[str, Any]) -> Any:
    """pytorch_optimizer.LaProp on its per-parameter path (its default batched path keeps
    the step sizes in float32, see test_laprop_torch_vs_pytorch_optimizer_batched)."""
    kw = dict(kw)
    after = kw.pop("steps_before_using_centered", None)
    opt = po.LaProp(ps, lr=lr, foreach=False, **kw)
    if after is not None:
        opt.steps_before_using_centered = after
    return opt


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(LAPROP_CORE_TORCH))
def test_laprop_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    ours, ref = LAPROP_CORE_TORCH[case]
    if "steps_before_using_centered" in ours:
        ref = {**ref, "steps_before_using_centered": ours["steps_before_using_centered"]}
    core_vs_torch(lambda: optim.LaProp(LR, **ours), lambda ps: _laprop_ref(po, ps, LR, ref),
                  dtype, f"LaProp core/{case}/{dtype} vs pytorch_optimizer.LaProp")


LAPROP_TORCH = {
    "default": {},
    "coupled-wd": {"weight_decay": 0.1, "weight_decouple": False},
    "decoupled-wd": {"weight_decay": 0.1},
    "fixed-decay": {"weight_decay": 0.01, "fixed_decay": True},
    "centered": {"centered": True, "steps_before_using_centered": 4},
    "ams-bound": {"ams_bound": True},
    "maximize-eps": {"maximize": True, "eps": 1e-8, "betas": (0.8, 0.99)},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("case", list(LAPROP_TORCH))
def test_laprop_torch_vs_pytorch_optimizer(case: str, schedule: bool, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = LAPROP_TORCH[case]
    torch_pair(lambda ps: at.LaProp(ps, lr=0.01, **kw),
               lambda ps: _laprop_ref(po, ps, 0.01, kw), dtype,
               f"LaProp torch/{case}/schedule={schedule}/{dtype} vs pytorch_optimizer.LaProp",
               lr_lambda=(lambda t: 1.0 / (1 + 0.1 * t)) if schedule else None)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_laprop_torch_vs_pytorch_optimizer_batched(dtype: str) -> None:
    """pytorch_optimizer's default (batched) path rounds the step size 1 / (1 - b1^t) to
    float32 also for float64 parameters: float64 agrees to about 1e-9 there, not 1e-12."""
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    torch_pair(lambda ps: at.LaProp(ps, lr=0.01, weight_decay=0.1),
               lambda ps: po.LaProp(ps, lr=0.01, weight_decay=0.1), dtype,
               f"LaProp torch/batched/{dtype} vs pytorch_optimizer.LaProp",
               tol=1e-8 if dtype == "float64" else None)


def test_laprop_optax_vs_pytorch_optimizer() -> None:
    """anyoptim.optax.laprop (jitted, on JAX arrays) vs pytorch_optimizer.LaProp."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    torch = pytest.importorskip("torch")
    po = pytest.importorskip("pytorch_optimizer")
    import jax.numpy as jnp

    import anyoptim.optax as ao

    for dtype in ("float64", "float32"):
        with jax.enable_x64(dtype == "float64"):
            tx = ao.laprop(LR, b2=0.99, weight_decay=0.1, centered=True)
            p0, grads = _problem(5, dtype)
            pa = _tree([jnp.asarray(p) for p in p0])
            sa = tx.init(pa)
            update = jax.jit(tx.update)
            b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
            ob = _laprop_ref(po, b, LR, {"betas": (0.9, 0.99), "weight_decay": 0.1,
                                         "centered": True})
            worst = 0.0
            for gs in grads:
                ua, sa = update(_tree([jnp.asarray(g) for g in gs]), sa, pa)
                pa = optax.apply_updates(pa, ua)
                for y, g in zip(b, gs):
                    y.grad = torch.from_numpy(g.copy())
                ob.step()
                for x, y in zip(_leaves(pa), b):
                    worst = max(worst, _rel(np.asarray(x), y.detach().numpy()))
        _check(f"LaProp optax/{dtype} vs pytorch_optimizer.LaProp", worst, dtype)


def test_laprop_torch_state_dict_round_trip() -> None:
    pytest.importorskip("torch")
    import anyoptim.torch as at

    state_dict_round_trip(lambda ps: at.LaProp(ps, lr=0.01, weight_decay=0.1, centered=True,
                                               ams_bound=True, steps_before_using_centered=2))


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (0.9, 1.0)}, "LaProp: beta2"),
    ({"eps": -1.0}, "LaProp: eps should be >= 0, -1.0"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"centered": 1}, "centered"),
    ({"steps_before_using_centered": -1}, "steps_before_using_centered"),
])
def test_laprop_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        optim.LaProp(0.1, **kwargs)


def test_laprop_drop_in_rejects_bad_values() -> None:
    pytest.importorskip("torch")
    import torch

    import anyoptim.torch as at

    w = torch.nn.Parameter(torch.zeros(2))
    for kwargs, match in (({"lr": -1.0}, "lr=-1.0 is invalid"),
                          ({"ams_bound": "no"}, "ams_bound"),
                          ({"cautious": 1}, "cautious"),
                          ({"adanorm": True}, "adanorm")):
        with pytest.raises(ValueError, match=match):
            at.LaProp([w], **kwargs)
    opt = at.LaProp([w], lr=0.1)
    w.grad = torch.ones(2)
    opt.param_groups[0]["weight_decay"] = -1.0
    with pytest.raises(ValueError, match="weight_decay"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(2)) and not opt.state[w]


# ============================================================================= Adam-atan2
ATAN2_TORCH = {
    "default": {},
    "wd": {"weight_decay": 0.1},
    "decoupled-wd": {"weight_decay": 1e-4, "decoupled_wd": True},
    "cautious-wd": {"weight_decay": 0.1, "cautious_wd": True},
    "a-b-betas": {"a": 2.0, "b": 0.5, "betas": (0.3, 0.6)},  # lerp's other formula too
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("case", list(ATAN2_TORCH))
def test_adam_atan2_torch_vs_adam_atan2_pytorch(case: str, schedule: bool, dtype: str) -> None:
    ref = pytest.importorskip("adam_atan2_pytorch")
    import anyoptim.torch as at

    kw = ATAN2_TORCH[case]
    torch_pair(lambda ps: at.AdamAtan2(ps, lr=0.01, **kw),
               lambda ps: ref.AdamAtan2(ps, lr=0.01, **kw), dtype,
               f"AdamAtan2 torch/{case}/schedule={schedule}/{dtype} vs adam_atan2_pytorch",
               lr_lambda=(lambda t: 1.0 / (1 + 0.1 * t)) if schedule else None,
               tol=_atan2_tol(case, dtype))


def _atan2_tol(case: str, dtype: str) -> float | None:
    """adam_atan2_pytorch builds the cautious decay factor 1 - lr wd mask from a float32 mask
    (``.float()``), so in float64 its factor is rounded to float32 at every step (about 3e-8
    relative per step); anyoptim keeps it in float64."""
    return 1e-5 if case == "cautious-wd" and dtype == "float64" else None


ATAN2_CORE = {
    "default": {},
    "wd": {"weight_decay": 0.1},
    "cautious-wd": {"weight_decay": 0.1, "cautious_wd": True},
    "a-b-betas": {"a": 2.0, "b": 0.5, "betas": (0.3, 0.6)},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(ATAN2_CORE))
def test_adam_atan2_core_vs_adam_atan2_pytorch(case: str, dtype: str) -> None:
    ref = pytest.importorskip("adam_atan2_pytorch")
    kw = ATAN2_CORE[case]
    core_vs_torch(lambda: optim.AdamAtan2(LR, **kw), lambda ps: ref.AdamAtan2(ps, lr=LR, **kw),
                  dtype, f"AdamAtan2 core/{case}/{dtype} vs adam_atan2_pytorch",
                  tol=_atan2_tol(case, dtype))


def test_adam_atan2_cautious_wd_float64_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """With its mask kept in float64, adam_atan2_pytorch's cautious decay agrees to 1e-12."""
    torch = pytest.importorskip("torch")
    ref = pytest.importorskip("adam_atan2_pytorch")
    monkeypatch.setattr(torch.Tensor, "float", lambda self: self.double())
    kw = {"weight_decay": 0.1, "cautious_wd": True}
    core_vs_torch(lambda: optim.AdamAtan2(LR, **kw), lambda ps: ref.AdamAtan2(ps, lr=LR, **kw),
                  "float64", "AdamAtan2 core/cautious-wd/float64 vs adam_atan2_pytorch "
                  "(float64 mask)")


def test_adam_atan2_optax_vs_adam_atan2_pytorch() -> None:
    """anyoptim.optax.adam_atan2 (jitted, on JAX arrays) vs adam_atan2_pytorch.AdamAtan2."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    torch = pytest.importorskip("torch")
    ref = pytest.importorskip("adam_atan2_pytorch")
    import jax.numpy as jnp

    import anyoptim.optax as ao

    for dtype in ("float64", "float32"):
        with jax.enable_x64(dtype == "float64"):
            tx = ao.adam_atan2(LR, b2=0.999, weight_decay=0.1)
            p0, grads = _problem(6, dtype)
            pa = _tree([jnp.asarray(p) for p in p0])
            sa = tx.init(pa)
            update = jax.jit(tx.update)
            b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
            ob = ref.AdamAtan2(b, lr=LR, betas=(0.9, 0.999), weight_decay=0.1)
            worst = 0.0
            for gs in grads:
                ua, sa = update(_tree([jnp.asarray(g) for g in gs]), sa, pa)
                pa = optax.apply_updates(pa, ua)
                for y, g in zip(b, gs):
                    y.grad = torch.from_numpy(g.copy())
                ob.step()
                for x, y in zip(_leaves(pa), b):
                    worst = max(worst, _rel(np.asarray(x), y.detach().numpy()))
        _check(f"AdamAtan2 optax/{dtype} vs adam_atan2_pytorch", worst, dtype)


def test_adam_atan2_torch_state_dict_round_trip() -> None:
    pytest.importorskip("torch")
    import anyoptim.torch as at

    state_dict_round_trip(lambda ps: at.AdamAtan2(ps, lr=0.01, weight_decay=0.1,
                                                  cautious_wd=True))


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (0.9, 1.0)}, "AdamAtan2: beta2"),
    ({"a": 0.0}, "AdamAtan2: a should be > 0, 0.0"),
    ({"b": -1.0}, "AdamAtan2: b should be > 0"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"cautious_wd": 1}, "cautious_wd"),
])
def test_adam_atan2_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        optim.AdamAtan2(0.1, **kwargs)


def test_adam_atan2_drop_in_rejects_bad_values() -> None:
    pytest.importorskip("torch")
    import torch

    import anyoptim.torch as at

    w = torch.nn.Parameter(torch.zeros(2))
    for kwargs, match in (({"lr": 0.0}, "lr=0.0 is invalid"),
                          ({"regen_reg_rate": 0.1}, "regen_reg_rate"),
                          ({"cautious_factor": 1.5}, "cautious_factor"),
                          ({"cautious_factor": 0.5, "cautious_wd": True}, "cautious_wd"),
                          ({"betas": (0.9, 1.5)}, r"betas\[1\]")):
        with pytest.raises(ValueError, match=match):
            at.AdamAtan2([w], **kwargs)
    opt = at.AdamAtan2([w], lr=0.1)
    w.grad = torch.ones(2)
    opt.param_groups[0]["a"] = -1.0
    with pytest.raises(ValueError, match=r"a=-1\.0"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(2)) and not opt.state[w]


# ============================================================================= StableAdamW
STABLE_TORCH = {
    "default": {},
    "no-wd": {"weight_decay": 0.0},
    "coupled-wd": {"weight_decay": 0.1, "weight_decouple": False},
    "maximize-eps": {"maximize": True, "eps": 1e-3, "betas": (0.8, 0.999)},
    "per-param-path": {"foreach": False, "weight_decay": 0.1},
}


def _spiky(seed: int, dtype: str) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """_problem with a gradient spike every 10 steps (so that the RMS clipping acts)."""
    p0, grads = _problem(seed, dtype)
    for t in range(5, STEPS, 10):
        for g in grads[t]:
            g *= 30
    return p0, grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("case", list(STABLE_TORCH))
def test_stable_adamw_torch_vs_pytorch_optimizer(case: str, schedule: bool, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = STABLE_TORCH[case]
    torch_pair(lambda ps: at.StableAdamW(ps, lr=0.01, **kw),
               lambda ps: po.StableAdamW(ps, lr=0.01, **kw), dtype,
               f"StableAdamW torch/{case}/schedule={schedule}/{dtype} vs "
               "pytorch_optimizer.StableAdamW",
               lr_lambda=(lambda t: 1.0 / (1 + 0.1 * t)) if schedule else None, problem=_spiky)


STABLE_CORE = {
    "default": ({}, {}),
    "no-wd": ({"weight_decay": 0.0}, {"weight_decay": 0.0}),
    "coupled-wd": ({"weight_decay": 0.1, "decouple": False},
                   {"weight_decay": 0.1, "weight_decouple": False}),
    "betas-eps": ({"betas": (0.8, 0.999), "eps": 1e-3}, {"betas": (0.8, 0.999), "eps": 1e-3}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(STABLE_CORE))
def test_stable_adamw_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    ours, ref = STABLE_CORE[case]
    core_vs_torch(lambda: optim.StableAdamW(LR, **ours),
                  lambda ps: po.StableAdamW(ps, lr=LR, **ref), dtype,
                  f"StableAdamW core/{case}/{dtype} vs pytorch_optimizer.StableAdamW",
                  problem=_spiky)


def test_stable_adamw_clipping_acts() -> None:
    """A spike makes RMS(g^2/v) > 1, and the step then is the clipped one (reference-free
    check of the test problem: without clipping the first spike would move w by ~lr)."""
    opt = optim.StableAdamW(0.1, weight_decay=0.0, betas=(0.0, 0.99))
    w = {"w": np.zeros(4)}
    w = opt.apply_gradients({"w": np.ones(4)}, w)
    w2 = opt.apply_gradients({"w": np.full(4, 100.0)}, w)
    # v = 0.5 (1 + 1e4), g^2 / v = 1e4 / v: RMS = sqrt(2e4 / 10001) > 1
    rms = math.sqrt(1e4 / (0.5 * (1 + 1e4)))
    step = float(np.float32(0.1)) / rms * 100 / (math.sqrt(0.5 * (1 + 1e4)) + 1e-8)
    np.testing.assert_allclose(w["w"] - w2["w"], step, rtol=1e-12)


def test_stable_adamw_optax_vs_pytorch_optimizer() -> None:
    """anyoptim.optax.stable_adamw (jitted, on JAX arrays) vs pytorch_optimizer.StableAdamW."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    torch = pytest.importorskip("torch")
    po = pytest.importorskip("pytorch_optimizer")
    import jax.numpy as jnp

    import anyoptim.optax as ao

    for dtype in ("float64", "float32"):
        with jax.enable_x64(dtype == "float64"):
            tx = ao.stable_adamw(LR, weight_decay=0.1)
            p0, grads = _spiky(7, dtype)
            pa = _tree([jnp.asarray(p) for p in p0])
            sa = tx.init(pa)
            update = jax.jit(tx.update)
            b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
            ob = po.StableAdamW(b, lr=LR, weight_decay=0.1)
            worst = 0.0
            for gs in grads:
                ua, sa = update(_tree([jnp.asarray(g) for g in gs]), sa, pa)
                pa = optax.apply_updates(pa, ua)
                for y, g in zip(b, gs):
                    y.grad = torch.from_numpy(g.copy())
                ob.step()
                for x, y in zip(_leaves(pa), b):
                    worst = max(worst, _rel(np.asarray(x), y.detach().numpy()))
        _check(f"StableAdamW optax/{dtype} vs pytorch_optimizer.StableAdamW", worst, dtype)


def test_stable_adamw_torch_state_dict_round_trip() -> None:
    pytest.importorskip("torch")
    import anyoptim.torch as at

    state_dict_round_trip(lambda ps: at.StableAdamW(ps, lr=0.01, weight_decay=0.1))


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (0.9, 1.0)}, "StableAdamW: beta2"),
    ({"eps": -1.0}, "StableAdamW: eps should be >= 0, -1.0"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"decouple": 1}, "decouple"),
])
def test_stable_adamw_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        optim.StableAdamW(0.1, **kwargs)


def test_stable_adamw_drop_in_rejects_bad_values() -> None:
    pytest.importorskip("torch")
    import torch

    import anyoptim.torch as at

    w = torch.nn.Parameter(torch.zeros(2))
    for kwargs, match in (({"lr": -1.0}, r"lr=-1\.0 is invalid"),
                          ({"weight_decouple": "yes"}, "weight_decouple"),
                          ({"cautious": True}, "cautious")):
        with pytest.raises(ValueError, match=match):
            at.StableAdamW([w], **kwargs)
    opt = at.StableAdamW([w], lr=0.1)
    w.grad = torch.ones(2)
    opt.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError, match="eps"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(2)) and not opt.state[w]


# ============================================================================= cautious
def _timm_cautious_adamw(ps: list[Any], lr: float, betas: tuple[float, float], eps: float,
                         weight_decay: float, bias_correction: bool = True) -> Any:
    """timm's / C-Optim's C-AdamW step, written out here in torch as the oracle (timm is not
    installable in this environment): decoupled decay, bias-corrected Adam, the momentum
    masked where it disagrees with the gradient and divided by max(mean(mask), 1e-3)."""
    import torch

    class Ref(torch.optim.Optimizer):
        def __init__(self, params: list[Any]) -> None:
            super().__init__(params, {"lr": lr})

        @torch.no_grad()
        def step(self, closure: Any = None) -> None:
            b1, b2 = betas
            for p in self.param_groups[0]["params"]:
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                t, g = st["t"], p.grad
                p.mul_(1 - lr * weight_decay)
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                mask = (st["m"] * g > 0).to(g.dtype)
                mask.div_(mask.mean().clamp(min=1e-3))
                if bias_correction:
                    denom = st["v"].sqrt() / math.sqrt(1 - b2**t) + eps
                    p.addcdiv_(st["m"] * mask, denom, value=-lr / (1 - b1**t))
                else:  # MLX's default form of Adam
                    p.addcdiv_(st["m"] * mask, st["v"].sqrt() + eps, value=-lr)

    return Ref(ps)


def _adam_tol(bc: bool, dtype: str) -> float | None:
    """MLX's Adam computes its bias corrections from a float32 step and a float32 learning
    rate, which anyoptim keeps for MLX parity: with bias_correction=True plain AdamW agrees
    with torch.optim.AdamW to 2.3e-6 in float32 and float64 on this problem.
    In float32 without it, plain AdamW and the written-out reference (mask off) agree to
    6.5e-6 on the 0-d leaf (measured), hence 2e-5; float64 without it: 1e-12."""
    return 2e-5 if bc or dtype == "float32" else None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bc", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_cautious_adamw_vs_timm_form(wd: float, bc: bool, dtype: str) -> None:
    pytest.importorskip("torch")
    core_vs_torch(lambda: optim.CautiousAdamW(LR, weight_decay=wd, bias_correction=bc),
                  lambda ps: _timm_cautious_adamw(ps, LR, (0.9, 0.999), 1e-8, wd, bc), dtype,
                  f"CautiousAdamW core/wd={wd}/bc={bc}/{dtype} vs timm's C-AdamW (written out)",
                  tol=_adam_tol(bc, dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cautious_adam_vs_timm_form(dtype: str) -> None:
    pytest.importorskip("torch")
    core_vs_torch(lambda: optim.CautiousAdam(LR, betas=(0.8, 0.99)),
                  lambda ps: _timm_cautious_adamw(ps, LR, (0.8, 0.99), 1e-8, 0.0, False), dtype,
                  f"CautiousAdam core/{dtype} vs timm's C-AdamW (written out)",
                  tol=_adam_tol(False, dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_cautious_lion_vs_pytorch_optimizer(wd: float, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    core_vs_torch(lambda: optim.CautiousLion(LR, weight_decay=wd, cautious_scale="count"),
                  lambda ps: po.Lion(ps, lr=LR, weight_decay=wd, cautious=True), dtype,
                  f"CautiousLion core/count/wd={wd}/{dtype} vs pytorch_optimizer.Lion")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1, "centered": True}], ids=str)
def test_cautious_laprop_vs_pytorch_optimizer(kw: dict, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    core_vs_torch(lambda: optim.LaProp(LR, cautious=True, **kw),
                  lambda ps: _laprop_ref(po, ps, LR, {"cautious": True, **kw}), dtype,
                  f"LaProp core/cautious/{kw}/{dtype} vs pytorch_optimizer.LaProp")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule", [False, True])
def test_cautious_laprop_torch_vs_pytorch_optimizer(schedule: bool, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = {"cautious": True, "weight_decay": 0.1}
    torch_pair(lambda ps: at.LaProp(ps, lr=0.01, **kw), lambda ps: po.LaProp(ps, lr=0.01, **kw),
               dtype, f"LaProp torch/cautious/schedule={schedule}/{dtype} vs "
               "pytorch_optimizer.LaProp", lr_lambda=(lambda t: 0.9**t) if schedule else None,
               tol=_CAUTIOUS_F32 if dtype == "float32" else None)


#: The cautious step is formed as (full update) + (kept step - step): one more rounding of
#: the parameter per step than the reference's, so float32 agrees to 2e-6 (1.3e-6 seen).
_CAUTIOUS_F32 = 2e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_cautious_adam_atan2_vs_adam_atan2_pytorch(factor: float, dtype: str) -> None:
    ref = pytest.importorskip("adam_atan2_pytorch")
    import anyoptim.torch as at

    kw = {"cautious_factor": factor, "weight_decay": 0.1}
    torch_pair(lambda ps: at.AdamAtan2(ps, lr=0.01, **kw),
               lambda ps: ref.AdamAtan2(ps, lr=0.01, **kw), dtype,
               f"AdamAtan2 torch/cautious_factor={factor}/{dtype} vs adam_atan2_pytorch")
    core_vs_torch(lambda: optim.AdamAtan2(LR, **kw), lambda ps: ref.AdamAtan2(ps, lr=LR, **kw),
                  dtype, f"AdamAtan2 core/cautious_factor={factor}/{dtype} vs adam_atan2_pytorch")


def test_cautious_scales_and_mask_by_hand() -> None:
    """Two entries, one disagreeing: 'mean' doubles the kept step, 'count' scales it by
    2 / (1 + 1) = 1; the disagreeing entry does not move."""
    g1, g2 = np.array([1.0, -1.0]), np.array([1.0, 0.5])
    for scale, factor in (("mean", 2.0), ("count", 1.0)):
        opt = optim.CautiousLion(0.125, betas=(0.5, 0.5), cautious_scale=scale)
        p = opt.apply_gradients({"w": g1}, {"w": np.zeros(2)})
        # m = 0.5 g1 = (0.5, -0.5); c = 0.5 m + 0.5 g2 = (0.75, 0): sign (1, 0) vs g2 > 0
        new = opt.apply_gradients({"w": g2}, p)["w"]
        np.testing.assert_array_equal(new, p["w"] - np.array([0.125 * factor, 0.0]))


def test_cautious_off_is_the_plain_rule() -> None:
    """LaProp/AdaBelief with cautious=False keep their elementwise rule (fused executors)."""
    assert optim.LaProp(0.1).rule is not None and optim.AdaBelief(0.1).rule is not None
    assert optim.LaProp(0.1, cautious=True).rule is None
    assert optim.Adam.rule is optim.CautiousAdam.rule  # the MLX classes are untouched


@pytest.mark.parametrize("make, match", [
    (lambda: optim.CautiousAdamW(0.1, cautious_scale="median"), "cautious_scale"),
    (lambda: optim.LaProp(0.1, cautious="yes"), "LaProp: cautious should be True or False"),
    (lambda: optim.LaProp(0.1, cautious=True, decouple=False, weight_decay=0.1),
     "coupled weight decay"),
    (lambda: optim.AdaBelief(0.1, cautious=True, decouple=False, weight_decay=0.1),
     "coupled weight decay"),
])
def test_cautious_rejects_bad_values(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# ============================================================================= executors
EXECUTOR_CASES = [
    ("AdaBelief", {}),
    ("AdaBelief", {"weight_decay": 0.1, "nesterov": True}),
    ("AdaBelief", {"weight_decay": 0.1, "decouple": False, "rectify": True, "ams_bound": True}),
    ("LaProp", {"weight_decay": 0.1}),
    ("LaProp", {"centered": True, "steps_before_using_centered": 1, "ams_bound": True}),
    ("AdamAtan2", {"weight_decay": 0.1}),
    ("AdamAtan2", {"weight_decay": 0.1, "cautious_wd": True, "betas": (0.3, 0.6)}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "kwargs"), EXECUTOR_CASES, ids=str)
def test_fused_numpy_equals_reference(name: str, kwargs: dict, dtype: type,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The numba kernels (in place and functional) give the reference path's bits."""
    pytest.importorskip("numba")
    from anyoptim import _backend
    from anyoptim._backend import _numpy_fused

    if not _backend.fused_numpy_available():
        pytest.skip("fused NumPy path unavailable")
    calls: list = []
    for attr in ("kernel_for", "batched_kernel_for"):
        original = getattr(_numpy_fused, attr)

        def spy(*args: Any, original: Any = original, **kw: Any) -> Any:
            calls.append(args[0])
            return original(*args, **kw)

        monkeypatch.setattr(_numpy_fused, attr, spy)
    rng = np.random.default_rng(3)
    shapes = [(7, 9), (5,), (), (0, 3), (_numpy_fused.PARALLEL_MIN_SIZE + 3,)]
    params = {str(i): np.asarray(rng.standard_normal(sh)).astype(dtype)
              for i, sh in enumerate(shapes)}
    grads = [{k: np.asarray(rng.standard_normal(v.shape)).astype(dtype)
              for k, v in params.items()} for _ in range(12)]

    def make() -> optim.Optimizer:
        return getattr(optim, name)(optim.cosine_decay(0.05, 16, 0.001), **kwargs)

    in_place, functional = make(), make()
    p_in = {k: v.copy() for k, v in params.items()}
    p_fn = params
    for g in grads:
        in_place.update(p_in, g)
        p_fn = functional.apply_gradients(g, p_fn)
    assert calls, "the fused path was not taken"
    monkeypatch.setattr(_backend, "fused_numpy_available", lambda: False)
    ref = make()
    p_ref = params
    for g in grads:
        p_ref = ref.apply_gradients(g, p_ref)
    # numba's atan2 is the C library's, NumPy's its own: they may differ in the last bit, so
    # Adam-atan2 agrees to rounding (everything else bit for bit)
    rtol = (1e-13 if dtype == np.float64 else 1e-5) if name == "AdamAtan2" else 0.0
    for k in params:
        for ours, theirs in [(p_in[k], p_ref[k]), (p_fn[k], p_ref[k])] + [
                (in_place.state[k][key], ref.state[k][key]) for key in ref.state[k]]:
            assert ours.dtype == theirs.dtype
            scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize(("name", "kwargs"), EXECUTOR_CASES, ids=str)
def test_torch_multi_tensor_executor_equals_reference(name: str, kwargs: dict,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The foreach executor (what CUDA tensors take; atan2 included) computes the reference
    path's numbers."""
    torch = pytest.importorskip("torch")
    from anyoptim import _backend
    from anyoptim._backend import _torch_foreach

    monkeypatch.setattr(_backend, "fused_numpy_available", lambda: False)
    calls: list = []
    original = _torch_foreach.step
    monkeypatch.setattr(_torch_foreach, "step", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(4)
    shapes = [(7, 9), (5,), ()]
    params = {str(i): torch.from_numpy(np.asarray(rng.standard_normal(sh), np.float32))
              for i, sh in enumerate(shapes)}
    grads = [{k: torch.from_numpy(np.asarray(rng.standard_normal(tuple(v.shape)), np.float32))
              for k, v in params.items()} for _ in range(8)]

    def run() -> tuple[dict, dict]:
        opt = getattr(optim, name)(optim.cosine_decay(0.05, 16, 0.001), **kwargs)
        p = {k: v.clone() for k, v in params.items()}
        for g in grads:
            opt.update(p, g)
        return p, opt.state

    multi_p, multi_s = run()
    assert calls, "the multi-tensor executor was not used"
    monkeypatch.setattr(_backend, "fused_enabled", lambda: False)
    ref_p, ref_s = run()
    for k in params:
        assert torch.equal(multi_p[k], ref_p[k]), k
        for key in ref_s[k]:
            assert torch.equal(multi_s[k][key], ref_s[k][key]), (k, key)


# ============================================================================= report
def test_zz_report_largest_errors() -> None:
    """Print the largest errors (run with -s); always passes."""
    for key in sorted(LARGEST):
        print(f"{key}: {LARGEST[key]:.3g}")
    assert all(math.isfinite(v) for v in LARGEST.values())
