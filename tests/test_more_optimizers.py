"""Differential tests of ADOPT, AdEMAMix, Adan, sign SGD, LAMB, LARS and StableAdamW against
their reference implementations (pytorch_optimizer, optax, optax.contrib).

Each case runs 60 random steps on a tree with a scalar, a vector and two matrices, feeding the
same gradients to anyoptim and to the reference, and compares the parameters after every
step: float64 within 1e-12 relative (of the largest entry of the leaf), float32 within 1e-6.
``LARGEST`` collects the largest error seen per case (printed with ``-s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import anyoptim as optim

STEPS = 60
SHAPES = [(), (5,), (3, 4), (6, 2)]
TOL = {"float64": 1e-12, "float32": 1e-6}
LR = 2.0**-7  # exact in float32 (anyoptim's MLX-style classes keep the lr as float32)
LARGEST: dict[str, float] = {}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) / scale


def _record(key: str, err: float) -> None:
    LARGEST[key] = max(LARGEST.get(key, 0.0), err)


def _problem(seed: int, dtype: str) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    p0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    grads = [[np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
             for _ in range(STEPS)]
    # a few exact zeros and a large gradient (exercise clipping and sign(0))
    grads[3][1][2] = 0
    grads[7][2][0, 0] = 50
    return p0, grads


def torch_pair(make_ours: Callable[[list[Any]], Any], make_ref: Callable[[list[Any]], Any],
               dtype: str, key: str, seed: int = 0) -> float:
    """anyoptim.torch drop-in vs a torch reference optimizer, step by step."""
    torch = pytest.importorskip("torch")
    p0, grads = _problem(seed, dtype)
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa, ob = make_ours(a), make_ref(b)
    worst = 0.0
    for gs in grads:
        for x, y, g in zip(a, b, gs):
            x.grad = torch.from_numpy(g.copy())
            y.grad = torch.from_numpy(g.copy())
        oa.step()
        ob.step()
        for x, y in zip(a, b):
            worst = max(worst, _rel(x.detach().numpy(), y.detach().numpy()))
    _record(key, worst)
    assert worst <= TOL[dtype], (key, worst)
    return worst


def core_vs_torch(make_ours: Callable[[], optim.Optimizer], make_ref: Callable[[list[Any]], Any],
                  dtype: str, key: str, seed: int = 1) -> float:
    """An anyoptim MLX-style optimizer on NumPy arrays vs a torch reference optimizer."""
    torch = pytest.importorskip("torch")
    p0, grads = _problem(seed, dtype)
    params = {str(i): p.copy() for i, p in enumerate(p0)}
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    opt, ob = make_ours(), make_ref(b)
    worst = 0.0
    for gs in grads:
        params = opt.apply_gradients({str(i): g for i, g in enumerate(gs)}, params)
        for y, g in zip(b, gs):
            y.grad = torch.from_numpy(g.copy())
        ob.step()
        for i, y in enumerate(b):
            worst = max(worst, _rel(params[str(i)], y.detach().numpy()))
    _record(key, worst)
    assert worst <= TOL[dtype], (key, worst)
    return worst


def optax_pair(ours: Any, ref: Any, key: str, dtype: str = "float32", seed: int = 2,
               jit: bool = True, with_params: bool = True, tol: float | None = None) -> float:
    """An anyoptim.optax factory vs the optax one (jitted update on our side)."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    p0, grads = _problem(seed, dtype)
    pa = pb = {str(i): jnp.asarray(p) for i, p in enumerate(p0)}
    sa, sb = ours.init(pa), ref.init(pb)
    update = jax.jit(ours.update) if jit else ours.update
    worst = 0.0
    for gs in grads:
        g = {str(i): jnp.asarray(x) for i, x in enumerate(gs)}
        ua, sa = update(g, sa, pa) if with_params else update(g, sa)
        ub, sb = ref.update(g, sb, pb)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
        for k in pa:
            assert pa[k].dtype == pb[k].dtype
            worst = max(worst, _rel(np.asarray(pa[k]), np.asarray(pb[k])))
    _record(key, worst)
    assert worst <= (TOL[dtype] if tol is None else tol), (key, worst)
    return worst


# ============================================================================= ADOPT
ADOPT_TORCH = {
    "default": {},
    "coupled-wd": {"weight_decay": 0.1},
    "decoupled-wd": {"weight_decay": 0.1, "weight_decouple": True},
    "fixed-decay": {"weight_decay": 0.01, "weight_decouple": True, "fixed_decay": True},
    "no-clip": {"clip_lambda": None},
    "betas-eps": {"betas": (0.8, 0.99), "eps": 1e-3},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(ADOPT_TORCH))
def test_adopt_torch_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = ADOPT_TORCH[case]
    torch_pair(lambda ps: at.ADOPT(ps, lr=0.01, **kw), lambda ps: po.ADOPT(ps, lr=0.01, **kw),
               dtype, f"ADOPT torch/{case}/{dtype} vs pytorch_optimizer.ADOPT")


ADOPT_CORE = {
    "default": ({}, {}),
    "coupled-wd": ({"weight_decay": 0.1}, {"weight_decay": 0.1}),
    "decoupled-wd": ({"weight_decay": 0.1, "decouple": True},
                     {"weight_decay": 0.1, "weight_decouple": True}),
    "no-clip": ({"clip": None}, {"clip_lambda": None}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(ADOPT_CORE))
def test_adopt_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    ours, ref = ADOPT_CORE[case]
    core_vs_torch(lambda: optim.ADOPT(LR, **ours), lambda ps: po.ADOPT(ps, lr=LR, **ref),
                  dtype, f"ADOPT core/{case}/{dtype} vs pytorch_optimizer.ADOPT")


ADOPT_OPTAX = {
    "default": {},
    "nesterov": {"nesterov": True},
    "no-clip": {"use_clipping": False},
    "betas": {"b1": 0.8, "b2": 0.99, "eps": 1e-4},
}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float32-exact-b2"])
@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("case", list(ADOPT_OPTAX))
def test_adopt_optax_vs_optax_contrib(case: str, schedule: bool, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    lr = optax.cosine_decay_schedule(LR, STEPS) if schedule else LR
    kw = dict(ADOPT_OPTAX[case])
    tol = None
    if dtype == "float32":
        # optax computes 1 - b2 in float32 (jnp.where(count > 0, b2, 0)): 1 - f32(0.9999)
        # is 1.7e-4 off 1e-4, which anyoptim does not copy; so float32 agrees to 1e-5 only,
        # and to 1e-6 where 1 - b2 is exact in float32 (the "exact-b2" cases)
        tol = 1e-5
    elif dtype == "float32-exact-b2":
        kw["b2"] = 0.75
    real = dtype.split("-")[0]
    with jax.enable_x64(real == "float64"):
        optax_pair(ao.adopt(lr, **kw), optax.contrib.adopt(lr, **kw),
                   f"ADOPT optax/{case}/schedule={schedule}/{dtype} vs optax.contrib.adopt",
                   dtype=real, with_params=case != "default", tol=tol)


def test_adopt_first_step_only_records_v() -> None:
    opt = optim.ADOPT(0.1, weight_decay=0.5)
    params = {"w": np.array([1.0, -2.0])}
    new = opt.apply_gradients({"w": np.array([3.0, 4.0])}, params)
    np.testing.assert_array_equal(new["w"], params["w"])
    np.testing.assert_array_equal(opt.state["w"]["m"], 0)
    np.testing.assert_allclose(opt.state["w"]["v"], np.array([3.5, 3.0]) ** 2)


def test_adopt_jit_and_traced_hyperparameters() -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    opt = optim.ADOPT(0.01, weight_decay=0.1)
    params = {"w": jnp.ones(3)}
    state = opt.init(params) or opt.state

    @jax.jit
    def step(p: Any, g: Any, s: Any, wd: Any) -> Any:
        return opt.pure_step(p, g, s, {"weight_decay": wd})

    ref = optim.ADOPT(0.01, weight_decay=0.1)
    rp = {"w": np.ones(3, np.float32)}
    p, s = params, state
    for t in range(4):
        g = {"w": jnp.full(3, 0.5 + t, jnp.float32)}
        p, s = step(p, g, s, jnp.float32(0.1))
        rp = ref.apply_gradients({"w": np.full(3, 0.5 + t, np.float32)}, rp)
    np.testing.assert_allclose(np.asarray(p["w"]), rp["w"], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (1.0, 0.9)}, "beta1"),
    ({"eps": -1.0}, "eps"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"clip": "x"}, "clip"),
    ({"clip_step_offset": 2}, "clip_step_offset"),
])
def test_adopt_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        optim.ADOPT(0.1, **kwargs)


def test_adopt_drop_ins_reject_what_they_do_not_run() -> None:
    pytest.importorskip("torch")
    import torch

    import anyoptim.torch as at

    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="cautious"):
        at.ADOPT([w], cautious=True)
    with pytest.raises(ValueError, match="lr"):
        at.ADOPT([w], lr=-1.0)
    pytest.importorskip("optax")
    import anyoptim.optax as ao

    with pytest.raises(ValueError, match="mu_dtype"):
        ao.adopt(0.1, mu_dtype="bfloat16")


# ============================================================================= AdEMAMix
ADEMAMIX_TORCH = {
    "default": {},
    "coupled-wd": {"weight_decay": 0.1},
    "decoupled-wd": {"weight_decay": 0.1, "weight_decouple": True},
    "warmup": {"t_alpha_beta3": 30},
    "betas-alpha": {"alpha": 2.0, "betas": (0.8, 0.99, 0.999), "eps": 1e-6},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(ADEMAMIX_TORCH))
def test_ademamix_torch_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = ADEMAMIX_TORCH[case]
    torch_pair(lambda ps: at.AdEMAMix(ps, lr=0.01, **kw),
               lambda ps: po.AdEMAMix(ps, lr=0.01, **kw),
               dtype, f"AdEMAMix torch/{case}/{dtype} vs pytorch_optimizer.AdEMAMix")


ADEMAMIX_CORE = {
    "default": ({}, {}),
    "decoupled-wd": ({"weight_decay": 0.1}, {"weight_decay": 0.1, "weight_decouple": True}),
    "coupled-wd": ({"weight_decay": 0.1, "decouple": False}, {"weight_decay": 0.1}),
    "warmup": ({"warmup": 30}, {"t_alpha_beta3": 30}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(ADEMAMIX_CORE))
def test_ademamix_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    ours, ref = ADEMAMIX_CORE[case]
    core_vs_torch(lambda: optim.AdEMAMix(LR, **ours), lambda ps: po.AdEMAMix(ps, lr=LR, **ref),
                  dtype, f"AdEMAMix core/{case}/{dtype} vs pytorch_optimizer.AdEMAMix")


def _optax_dtypes(dtype: str, kw: dict) -> tuple[str, float | None]:
    """float64 (with jax_enable_x64) at 1e-12; float32 at 1e-5, because optax computes
    1 - b**count in float32 (1 - f32(0.999) is 1.3e-5 off), which anyoptim does not copy."""
    return dtype, (1e-5 if dtype == "float32" else None)


def _ademamix_optax_cases() -> dict[str, dict]:
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp
    return {
        "default": {},
        "wd": {"weight_decay": 0.1},
        "wd-mask": {"weight_decay": 0.1, "mask": lambda p: {k: v.ndim > 1 for k, v in p.items()}},
        # schedules with values exact in float32 (optax's linear_schedule rounds to float32
        # even under jax_enable_x64, which would hide a mismatch below 1e-4)
        "schedules": {"alpha": optax.piecewise_constant_schedule(1.0, {10: 2.0, 30: 2.5}),
                      "b3": lambda count: jnp.where(count < 20, 0.5, 0.9375)},
        "eps-root": {"eps_root": 1e-8, "b1": 0.8, "b2": 0.99},
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["default", "wd", "wd-mask", "schedules", "eps-root"])
def test_ademamix_optax_vs_optax_contrib(case: str, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    kw = _ademamix_optax_cases()[case]
    real, tol = _optax_dtypes(dtype, kw)
    if case == "schedules" and dtype == "float32":
        # beta3 = 0.5 makes the slow term large: optax's float32 bias corrections (above)
        # then move the parameters by up to 1.2e-3 of the scalar leaf (states agree exactly)
        tol = 2e-3
    with jax.enable_x64(real == "float64"):
        optax_pair(ao.ademamix(LR, **kw), optax.contrib.ademamix(LR, **kw),
                   f"AdEMAMix optax/{case}/{dtype} vs optax.contrib.ademamix", dtype=real,
                   tol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["default", "alpha-wd", "alpha-schedule", "mask"])
def test_simplified_ademamix_optax_vs_optax_contrib(case: str, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    kw = {"default": {}, "alpha-wd": {"alpha": 5.0, "weight_decay": 0.1, "b1": 0.9},
          "alpha-schedule": {"alpha": optax.piecewise_constant_schedule(1.0, {10: 2.0, 30: 2.5}),
                             "eps_root": 1e-8},
          "mask": {"weight_decay": 0.1, "mask": lambda p: {k: v.ndim > 1 for k, v in p.items()}},
          }[case]
    real, tol = _optax_dtypes(dtype, kw)
    if dtype == "float32":
        # optax's float32 forms: n = g^2 + b2 (n - g^2) (a lerp that cancels where n ~ g^2)
        # and 1 - b2**count; with m summing to ~1/(1 - b1) = 100 gradients, 3.4e-5 is seen
        tol = 1e-4
    with jax.enable_x64(real == "float64"):
        optax_pair(ao.simplified_ademamix(LR, **kw), optax.contrib.simplified_ademamix(LR, **kw),
                   f"SimplifiedAdEMAMix optax/{case}/{dtype} vs optax.contrib.simplified_ademamix",
                   dtype=real, tol=tol)


def test_ademamix_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="betas"):
        optim.AdEMAMix(0.1, betas=(0.9, 0.999))
    with pytest.raises(ValueError, match="beta3"):
        optim.AdEMAMix(0.1, betas=(0.9, 0.999, 1.5))
    with pytest.raises(ValueError, match="alpha"):
        optim.AdEMAMix(0.1, alpha=-1.0)
    with pytest.raises(ValueError, match="warmup"):
        optim.AdEMAMix(0.1, warmup=0)
    with pytest.raises(ValueError, match="alpha"):
        optim.SimplifiedAdEMAMix(0.1, alpha=-1.0)


# ============================================================================= Adan
ADAN_TORCH = {
    "default": {},
    "proximal-wd": {"weight_decay": 0.1},
    "decoupled-wd": {"weight_decay": 0.1, "weight_decouple": True},
    "betas-eps": {"betas": (0.9, 0.8, 0.95), "eps": 1e-6},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(ADAN_TORCH))
def test_adan_torch_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = ADAN_TORCH[case]
    torch_pair(lambda ps: at.Adan(ps, lr=0.01, **kw), lambda ps: po.Adan(ps, lr=0.01, **kw),
               dtype, f"Adan torch/{case}/{dtype} vs pytorch_optimizer.Adan")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["default", "proximal-wd", "no-prox-wd"])
def test_adan_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    ours, ref = {"default": ({}, {}),
                 "proximal-wd": ({"weight_decay": 0.1}, {"weight_decay": 0.1}),
                 "no-prox-wd": ({"weight_decay": 0.1, "no_prox": True},
                                {"weight_decay": 0.1, "weight_decouple": True})}[case]
    core_vs_torch(lambda: optim.Adan(LR, **ours), lambda ps: po.Adan(ps, lr=LR, **ref),
                  dtype, f"Adan core/{case}/{dtype} vs pytorch_optimizer.Adan")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["default", "wd", "wd-mask", "schedule-eps"])
def test_adan_optax_vs_optax(case: str, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    kw = {"default": {}, "wd": {"weight_decay": 0.1},
          "wd-mask": {"weight_decay": 0.1, "mask": lambda p: {k: v.ndim > 1 for k, v in p.items()}},
          "schedule-eps": {"eps_root": 0.0, "eps": 1e-6, "b1": 0.9}}[case]
    lr = optax.cosine_decay_schedule(LR, STEPS) if case == "schedule-eps" else LR
    real, tol = _optax_dtypes(dtype, kw)
    with jax.enable_x64(real == "float64"):
        optax_pair(ao.adan(lr, **kw), optax.adan(lr, **kw),
                   f"Adan optax/{case}/{dtype} vs optax.adan", dtype=real, tol=tol)


def test_adan_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="diff_weight"):
        optim.Adan(0.1, diff_weight="timm")
    with pytest.raises(ValueError, match="betas"):
        optim.Adan(0.1, betas=(0.9, 0.9))
    pytest.importorskip("torch")
    import torch

    import anyoptim.torch as at

    with pytest.raises(ValueError, match="max_grad_norm"):
        at.Adan([torch.nn.Parameter(torch.zeros(2))], max_grad_norm=1.0)


# ============================================================================= signSGD / Signum
SIGN_TORCH = {
    "signum": {},
    "sign-sgd": {"momentum": 0.0},
    "decoupled-wd": {"weight_decay": 0.1, "momentum": 0.5},
    "coupled-wd": {"weight_decay": 0.1, "weight_decouple": False},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(SIGN_TORCH))
def test_sign_torch_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = SIGN_TORCH[case]
    torch_pair(lambda ps: at.SignSGD(ps, lr=0.01, **kw), lambda ps: po.SignSGD(ps, lr=0.01, **kw),
               dtype, f"SignSGD torch/{case}/{dtype} vs pytorch_optimizer.SignSGD")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["signum", "sign-sgd", "wd"])
def test_sign_core_vs_pytorch_optimizer(case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    make, ref = {
        "signum": (lambda: optim.Signum(LR), {}),
        "sign-sgd": (lambda: optim.SignSGD(LR), {"momentum": 0.0}),
        "wd": (lambda: optim.Signum(LR, momentum=0.5, weight_decay=0.1), {"momentum": 0.5,
                                                                          "weight_decay": 0.1}),
    }[case]
    core_vs_torch(make, lambda ps: po.SignSGD(ps, lr=LR, **ref), dtype,
                  f"SignSGD core/{case}/{dtype} vs pytorch_optimizer.SignSGD")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["sign_sgd", "signum", "signum-schedule"])
def test_sign_optax_vs_optax(case: str, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    with jax.enable_x64(dtype == "float64"):
        if case == "sign_sgd":
            ours, ref = ao.sign_sgd(LR), optax.sign_sgd(LR)
        elif case == "signum":
            ours, ref = ao.signum(LR, beta=0.5), optax.signum(LR, beta=0.5)
        else:
            lr = optax.cosine_decay_schedule(LR, STEPS)
            ours, ref = ao.signum(lr), optax.signum(lr)
        optax_pair(ours, ref, f"SignSGD optax/{case}/{dtype} vs optax.{case.split('-')[0]}",
                   dtype=dtype, with_params=False)


# ============================================================================= LAMB
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["default", "wd", "wd-mask", "schedule-eps-root"])
def test_lamb_optax_vs_optax(case: str, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    kw = {"default": {}, "wd": {"weight_decay": 0.1},
          "wd-mask": {"weight_decay": 0.1, "mask": lambda p: {k: v.ndim > 1 for k, v in p.items()}},
          "schedule-eps-root": {"eps_root": 1e-8, "b1": 0.8}}[case]
    lr = optax.cosine_decay_schedule(LR, STEPS) if case.startswith("schedule") else LR
    real, tol = _optax_dtypes(dtype, kw)
    with jax.enable_x64(real == "float64"):
        optax_pair(ao.lamb(lr, **kw), optax.lamb(lr, **kw), f"LAMB optax/{case}/{dtype} vs optax.lamb",
                   dtype=real, tol=tol)


def test_lamb_exclude_1d_is_adam_on_vectors() -> None:
    rng = np.random.default_rng(0)
    params = {"b": rng.standard_normal(4), "w": rng.standard_normal((3, 2))}
    grads = {"b": rng.standard_normal(4), "w": rng.standard_normal((3, 2))}
    lamb = optim.LAMB(LR, weight_decay=0.1, exclude_1d=True)
    adam = optim.Adam(LR, betas=[0.9, 0.999], eps=1e-6, bias_correction=True)
    new = lamb.apply_gradients(grads, params)
    ref = adam.apply_gradients({"b": grads["b"]}, {"b": params["b"]})
    np.testing.assert_allclose(new["b"], ref["b"], rtol=1e-6)  # Adam: float32 bias terms
    assert not np.allclose(new["w"], params["w"])


# ============================================================================= LARS
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["default", "wd-nesterov", "masks", "schedule-eps"])
def test_lars_optax_vs_optax(case: str, dtype: str) -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    matrices = lambda p: {k: v.ndim > 1 for k, v in p.items()}  # noqa: E731
    kw = {"default": {}, "wd-nesterov": {"weight_decay": 0.1, "nesterov": True},
          "masks": {"weight_decay": 0.1, "weight_decay_mask": matrices,
                    "trust_ratio_mask": matrices, "momentum": 0.5},
          "schedule-eps": {"eps": 1e-3, "trust_coefficient": 0.01}}[case]
    lr = optax.cosine_decay_schedule(0.25, STEPS) if case.startswith("schedule") else 0.25
    with jax.enable_x64(dtype == "float64"):
        optax_pair(ao.lars(lr, **kw), optax.lars(lr, **kw), f"LARS optax/{case}/{dtype} vs optax.lars",
                   dtype=dtype)


# ============================================================================= fused paths
FUSED = [
    ("ADOPT", {}),
    ("ADOPT", {"weight_decay": 0.1, "nesterov": True, "clip_step_offset": 1}),
    ("ADOPT", {"weight_decay": 0.1, "decouple": True, "clip": None}),
    ("AdEMAMix", {}),
    ("AdEMAMix", {"weight_decay": 0.1, "decouple": False, "warmup": 4}),
    ("SimplifiedAdEMAMix", {"alpha": 2.0, "weight_decay": 0.1}),
    ("Adan", {}),
    ("Adan", {"weight_decay": 0.1, "diff_weight": "optax", "eps_root": 1e-8}),
    ("Adan", {"weight_decay": 0.1, "no_prox": True}),
    ("SignSGD", {"weight_decay": 0.1}),
    ("Signum", {"weight_decay": 0.1, "decouple": False}),
]


def _spy_kernels(monkeypatch: pytest.MonkeyPatch) -> list:
    from anyoptim._backend import _numpy_fused

    calls: list = []
    for attr in ("kernel_for", "batched_kernel_for"):
        original = getattr(_numpy_fused, attr)

        def spy(*args: Any, original: Any = original, **kwargs: Any) -> Any:
            calls.append(args[0] if args else None)
            return original(*args, **kwargs)

        monkeypatch.setattr(_numpy_fused, attr, spy)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "kwargs"), FUSED, ids=str)
def test_fused_equals_reference(name: str, kwargs: dict, dtype: type,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba")
    from anyoptim import _backend

    if not _backend.fused_numpy_available():
        pytest.skip("fused NumPy path unavailable")
    rng = np.random.default_rng(3)
    shapes = [(7, 9), (5,), (), (0, 3)]
    params = {str(i): np.asarray(rng.standard_normal(s)).astype(dtype) for i, s in enumerate(shapes)}
    grads = [{k: np.asarray(rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}
             for _ in range(6)]

    def make() -> optim.Optimizer:
        return getattr(optim, name)(optim.cosine_decay(0.05, 8, 0.001), **kwargs)

    calls = _spy_kernels(monkeypatch)
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
    for k in params:
        np.testing.assert_array_equal(p_in[k], p_ref[k], strict=True)
        np.testing.assert_array_equal(p_fn[k], p_ref[k], strict=True)
        for key in in_place.state[k]:
            np.testing.assert_array_equal(in_place.state[k][key], ref.state[k][key], strict=True)


@pytest.mark.parametrize("name", ["ADOPT", "AdEMAMix", "Adan", "SignSGD"])
def test_torch_drop_ins_resume_from_state_dict(name: str, tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    cls = getattr(at, name)
    p0, grads = _problem(4, "float32")
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa = cls(a, lr=0.01, weight_decay=0.1)
    ob = cls(b, lr=0.01, weight_decay=0.1)
    for t, gs in enumerate(grads[:8]):
        for x, y, g in zip(a, b, gs):
            x.grad = torch.from_numpy(g.copy())
            y.grad = torch.from_numpy(g.copy())
        oa.step()
        ob.step()
        if t == 3:  # ob restarts from a saved state dict
            path = tmp_path / "opt.pt"
            torch.save(ob.state_dict(), path)
            ob = cls(b, lr=0.01, weight_decay=0.1)
            ob.load_state_dict(torch.load(path, weights_only=True))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_zz_report_largest_errors() -> None:
    """Print the largest errors (run with -s); always passes."""
    for key in sorted(LARGEST):
        print(f"{key}: {LARGEST[key]:.3g}")
    assert all(math.isfinite(v) for v in LARGEST.values())
