"""Differential tests of NAdam, NAdamW and RAdam against torch.optim and optax.

Every case runs 60 random steps on a tree with a scalar, a vector and two matrices, feeding
the same gradients to anyoptim and to the reference, and compares the parameters after every
step: float64 within 1e-12 relative (of the largest entry of the leaf), float32 within 1e-6.
``LARGEST`` collects the largest error seen per case (printed with ``-s``).

Two reference quirks fix how the float64 cases are run:

* ``torch.optim.NAdam`` keeps ``mu_product`` (and ``step``) as tensors of torch's default
  dtype, float32 unless it is float64, so the MLX-style class (whose product is float64) is
  compared with torch run under ``torch.set_default_dtype(torch.float64)``; the drop-in keeps
  torch's tensors and is compared under both default dtypes.
* optax computes its bias terms and RAdam's :math:`\\rho_t` in the parameters' precision, so
  float64 runs use ``jax.enable_x64``. In float32 optax's :math:`1 - \\beta_2^t` and
  :math:`\\rho_t = \\rho_\\infty - 2t\\beta_2^t/(1-\\beta_2^t)` lose digits to cancellation
  (about 1e-4 of :math:`1-\\beta_2^t` at :math:`t = 1` for :math:`\\beta_2 = 0.999`), which
  anyoptim does not copy (it computes them in float64 on NumPy/torch, with ``expm1`` in
  float32): the float32 optax cases with :math:`\\beta_2 = 0.999` agree to ``OPTAX_F32_TOL``
  only (``RADAM_F32_TOL`` for the MLX-style RAdam on NumPy, whose scalars are float64:
  :math:`\\rho_t` amplifies optax's error, measured 5e-5), and to 1e-6 where
  :math:`\\beta_2 = 0.75` (the ``exact-b2`` cases). ``test_radam_float32_gap_is_optaxs_own_rounding``
  shows that the gap is optax's float32 rounding: anyoptim's float32 run is within 1e-6 of
  optax's float64 run, optax's float32 run is not.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import anyoptim as optim

STEPS = 60
SHAPES = [(), (5,), (3, 4), (6, 2)]
TOL = {"float64": 1e-12, "float32": 1e-6}
OPTAX_F32_TOL = 2e-5
RADAM_F32_TOL = 1e-4
LR = 2.0**-7  # exact in float32 (anyoptim's MLX-style classes keep the lr as float32)
LARGEST: dict[str, float] = {}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) / scale


def _record(key: str, err: float) -> None:
    LARGEST[key] = max(LARGEST.get(key, 0.0), err)


def _problem(seed: int, dtype: str) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    p0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    grads = [[np.asarray(rng.standard_normal(s) * rng.uniform(0.1, 3)).astype(dtype)
              for s in SHAPES] for _ in range(STEPS)]
    grads[3][1][2] = 0
    grads[7][2][0, 0] = 50
    return p0, grads


@contextlib.contextmanager
def _torch_default(dtype: str | None) -> Iterator[None]:
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(getattr(torch, dtype))
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def torch_pair(make_ours: Callable[[list[Any]], Any], make_ref: Callable[[list[Any]], Any],
               dtype: str, key: str, default: str | None = None, seed: int = 0) -> float:
    """An anyoptim.torch drop-in vs the torch.optim class, step by step."""
    torch = pytest.importorskip("torch")
    p0, grads = _problem(seed, dtype)
    with _torch_default(default):
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
                  dtype: str, key: str, default: str | None = None, seed: int = 1) -> float:
    """An anyoptim MLX-style optimizer on NumPy arrays vs a torch.optim class."""
    torch = pytest.importorskip("torch")
    p0, grads = _problem(seed, dtype)
    params = {str(i): p.copy() for i, p in enumerate(p0)}
    with _torch_default(default):
        b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
        opt, ob = make_ours(), make_ref(b)
        worst = 0.0
        for gs in grads:
            params = opt.apply_gradients({str(i): g for i, g in enumerate(gs)}, params)
            for y, g in zip(b, gs):
                y.grad = torch.from_numpy(g.copy())
            ob.step()
            for i, y in enumerate(b):
                assert params[str(i)].dtype == np.dtype(dtype)
                worst = max(worst, _rel(params[str(i)], y.detach().numpy()))
    _record(key, worst)
    assert worst <= TOL[dtype], (key, worst)
    return worst


def _optax_steps(ref: Any, p0: list[np.ndarray], grads: list[list[np.ndarray]]) -> Iterator[Any]:
    import jax.numpy as jnp
    import optax

    pb = {str(i): jnp.asarray(p) for i, p in enumerate(p0)}
    sb = ref.init(pb)
    for gs in grads:
        g = {str(i): jnp.asarray(x) for i, x in enumerate(gs)}
        ub, sb = ref.update(g, sb, pb)
        pb = optax.apply_updates(pb, ub)
        yield pb


def core_vs_optax(make_ours: Callable[[], optim.Optimizer], ref: Any, dtype: str, key: str,
                  tol: float | None = None, seed: int = 2) -> float:
    """An anyoptim MLX-style optimizer on NumPy arrays vs an optax transformation."""
    jax = pytest.importorskip("jax")
    p0, grads = _problem(seed, dtype)
    params = {str(i): p.copy() for i, p in enumerate(p0)}
    opt = make_ours()
    worst = 0.0
    with jax.enable_x64(dtype == "float64"):
        for gs, pb in zip(grads, _optax_steps(ref, p0, grads)):
            params = opt.apply_gradients({str(i): g for i, g in enumerate(gs)}, params)
            for k in params:
                assert pb[k].dtype == params[k].dtype
                worst = max(worst, _rel(params[k], np.asarray(pb[k])))
    _record(key, worst)
    assert worst <= (TOL[dtype] if tol is None else tol), (key, worst)
    return worst


def optax_pair(ours: Any, ref: Any, dtype: str, key: str, tol: float | None = None,
               seed: int = 3) -> float:
    """An anyoptim.optax factory (jitted update) vs the optax one."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    p0, grads = _problem(seed, dtype)
    worst = 0.0
    with jax.enable_x64(dtype == "float64"):
        pa = {str(i): jnp.asarray(p) for i, p in enumerate(p0)}
        sa = ours.init(pa)
        update = jax.jit(ours.update)
        for gs, pb in zip(grads, _optax_steps(ref, p0, grads)):
            g = {str(i): jnp.asarray(x) for i, x in enumerate(gs)}
            ua, sa = update(g, sa, pa)
            pa = optax.apply_updates(pa, ua)
            for k in pa:
                assert pa[k].dtype == pb[k].dtype
                worst = max(worst, _rel(np.asarray(pa[k]), np.asarray(pb[k])))
    _record(key, worst)
    assert worst <= (TOL[dtype] if tol is None else tol), (key, worst)
    return worst


DTYPES = ["float64", "float32"]

# ============================================================================= torch.optim
NADAM_TORCH = {
    "default": {},
    "coupled-wd": {"weight_decay": 0.1},
    "decoupled-wd": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "psi-betas-eps": {"momentum_decay": 0.05, "betas": (0.8, 0.99), "eps": 1e-3},
    "low-beta1-maximize": {"betas": (0.3, 0.9), "maximize": True, "weight_decay": 0.01},
}


@pytest.mark.parametrize("default", [None, "float64"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(NADAM_TORCH))
def test_nadam_drop_in_vs_torch(case: str, dtype: str, default: str | None) -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    kw = NADAM_TORCH[case]
    torch_pair(lambda ps: at.NAdam(ps, lr=0.01, **kw), lambda ps: torch.optim.NAdam(ps, lr=0.01, **kw),
               dtype, f"NAdam torch/{case}/{dtype}/default={default} vs torch.optim.NAdam",
               default=default)


NADAM_CORE = {
    "default": (optim.NAdam, {}, {}),
    "coupled-wd": (optim.NAdam, {"weight_decay": 0.1}, {"weight_decay": 0.1}),
    "decoupled-wd": (optim.NAdam, {"weight_decay": 0.1, "decoupled_weight_decay": True},
                     {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    "NAdamW": (optim.NAdamW, {"weight_decay": 0.1},
               {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    "psi-betas": (optim.NAdam, {"momentum_decay": 0.05, "betas": (0.8, 0.99)},
                  {"momentum_decay": 0.05, "betas": (0.8, 0.99)}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(NADAM_CORE))
def test_nadam_core_vs_torch(case: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    cls, ours, ref = NADAM_CORE[case]
    # float64: torch's own mu_product is float64 only with a float64 default dtype
    core_vs_torch(lambda: cls(LR, **ours), lambda ps: torch.optim.NAdam(ps, lr=LR, **ref),
                  dtype, f"{cls.__name__} core/{case}/{dtype} vs torch.optim.NAdam",
                  default="float64" if dtype == "float64" else None)


RADAM_TORCH = {
    "default": {},
    "coupled-wd": {"weight_decay": 0.1},
    "decoupled-wd": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "betas-eps": {"betas": (0.8, 0.9), "eps": 1e-3},
    "low-beta1-maximize": {"betas": (0.3, 0.95), "maximize": True},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(RADAM_TORCH))
def test_radam_drop_in_vs_torch(case: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    kw = RADAM_TORCH[case]
    torch_pair(lambda ps: at.RAdam(ps, lr=0.01, **kw), lambda ps: torch.optim.RAdam(ps, lr=0.01, **kw),
               dtype, f"RAdam torch/{case}/{dtype} vs torch.optim.RAdam")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["default", "coupled-wd", "decoupled-wd", "betas-eps"])
def test_radam_core_vs_torch(case: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    kw = RADAM_TORCH[case]
    core_vs_torch(lambda: optim.RAdam(LR, **kw), lambda ps: torch.optim.RAdam(ps, lr=LR, **kw),
                  dtype, f"RAdam core/{case}/{dtype} vs torch.optim.RAdam")


# ============================================================================= optax
def _optax_kw(dtype: str, kw: dict[str, Any]) -> tuple[dict[str, Any], float | None, str]:
    """(kwargs, tolerance, real dtype) of an optax case (see the module docstring)."""
    kw = dict(kw)
    if dtype == "float32-exact-b2":
        kw["b2"] = 0.75
        return kw, None, "float32"
    return kw, (OPTAX_F32_TOL if dtype == "float32" else None), dtype


OPTAX_DTYPES = ["float64", "float32", "float32-exact-b2"]
NADAM_OPTAX = {
    "default": {},
    "betas-eps-root": {"b1": 0.8, "b2": 0.99, "eps": 1e-4, "eps_root": 1e-8},
}


@pytest.mark.parametrize("dtype", OPTAX_DTYPES)
@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("case", list(NADAM_OPTAX))
def test_nadam_core_optax_form_vs_optax(case: str, decay: bool, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    kw, tol, real = _optax_kw(dtype, NADAM_OPTAX[case])
    b1, b2 = kw.pop("b1", 0.9), kw.pop("b2", 0.999)
    ours: dict[str, Any] = {"betas": (b1, b2), "convention": "optax", **kw}
    if decay:
        make = lambda: optim.NAdamW(LR, weight_decay=0.1, **ours)  # noqa: E731
        ref = optax.nadamw(LR, b1=b1, b2=b2, weight_decay=0.1, **kw)
    else:
        make = lambda: optim.NAdam(LR, **ours)  # noqa: E731
        ref = optax.nadam(LR, b1=b1, b2=b2, **kw)
    name = "NAdamW" if decay else "NAdam"
    core_vs_optax(make, ref, real, f"{name} core optax-form/{case}/{dtype} vs optax.{name.lower()}",
                  tol=tol)


@pytest.mark.parametrize("dtype", OPTAX_DTYPES)
@pytest.mark.parametrize("name", ["nadam", "nadamw"])
def test_nadam_optax_factories_vs_optax(name: str, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    kw, tol, real = _optax_kw(dtype, {"b1": 0.85, "eps_root": 1e-10})
    if name == "nadamw":
        kw["weight_decay"] = 0.05
    lr = optax.cosine_decay_schedule(LR, STEPS)
    optax_pair(getattr(ao, name)(lr, **kw), getattr(optax, name)(lr, **kw), real,
               f"anyoptim.optax.{name}/{dtype} vs optax.{name}", tol=tol)


RADAM_OPTAX = {
    "default": {},
    "nesterov": {"nesterov": True},
    "threshold-eps-root": {"threshold": 8.0, "eps_root": 1e-8, "b1": 0.8},
    "short-b2": {"b2": 0.9, "eps": 1e-4},
}


@pytest.mark.parametrize("dtype", OPTAX_DTYPES)
@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("case", list(RADAM_OPTAX))
def test_radam_optax_factory_vs_optax(case: str, schedule: bool, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    kw, tol, real = _optax_kw(dtype, RADAM_OPTAX[case])
    lr = optax.cosine_decay_schedule(LR, STEPS) if schedule else LR
    optax_pair(ao.radam(lr, **kw), optax.radam(lr, **kw), real,
               f"anyoptim.optax.radam/{case}/schedule={schedule}/{dtype} vs optax.radam", tol=tol)


@pytest.mark.parametrize("dtype", OPTAX_DTYPES)
@pytest.mark.parametrize("case", list(RADAM_OPTAX))
def test_radam_core_optax_form_vs_optax(case: str, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    kw, tol, real = _optax_kw(dtype, RADAM_OPTAX[case])
    ours = dict(kw)
    betas = (ours.pop("b1", 0.9), ours.pop("b2", 0.999))
    if dtype == "float32" and betas[1] == 0.999:
        # optax's float32 rho_t (see the module docstring and the test below)
        tol = RADAM_F32_TOL
    core_vs_optax(lambda: optim.RAdam(LR, betas=betas, convention="optax", **ours),
                  optax.radam(LR, **kw), real,
                  f"RAdam core optax-form/{case}/{dtype} vs optax.radam", tol=tol)


def test_radam_float32_gap_is_optaxs_own_rounding() -> None:
    """In float32 with b2 = 0.999, anyoptim (scalars in float64 on NumPy) is closer to optax's
    own float64 run than optax's float32 run is: the gap above is optax's rounding."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    p0, grads = _problem(2, "float32")
    with jax.enable_x64(True):
        exact = [np.asarray(p["1"]) for p in _optax_steps(
            optax.radam(LR), [p.astype(np.float64) for p in p0],
            [[g.astype(np.float64) for g in gs] for gs in grads])]
    theirs = [np.asarray(p["1"]) for p in _optax_steps(optax.radam(LR), p0, grads)]
    opt = optim.RAdam(LR, convention="optax")
    params = {str(i): p.copy() for i, p in enumerate(p0)}
    ours = []
    for gs in grads:
        params = opt.apply_gradients({str(i): g for i, g in enumerate(gs)}, params)
        ours.append(params["1"])
    err_ours = max(_rel(a, b) for a, b in zip(ours, exact))
    err_theirs = max(_rel(a, b) for a, b in zip(theirs, exact))
    _record("RAdam float32 vs optax float64 (anyoptim)", err_ours)
    _record("RAdam float32 vs optax float64 (optax float32)", err_theirs)
    assert err_ours <= 1e-6 < err_theirs


@pytest.mark.parametrize("dtype", ["float64", "float32-exact-b2"])
def test_radam_core_optax_form_decoupled_vs_optax_chain(dtype: str) -> None:
    """optax has no RAdamW; its chain scale_by_radam + add_decayed_weights is the reference."""
    optax = pytest.importorskip("optax")
    kw, tol, real = _optax_kw(dtype, {})
    b2 = kw.get("b2", 0.999)
    ref = optax.chain(optax.scale_by_radam(b2=b2), optax.add_decayed_weights(0.1),
                      optax.scale_by_learning_rate(LR))
    core_vs_optax(lambda: optim.RAdam(LR, betas=(0.9, b2), weight_decay=0.1,
                                      decoupled_weight_decay=True, convention="optax"),
                  ref, real, f"RAdam core optax-form decoupled/{dtype} vs optax chain", tol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32-exact-b2"])
def test_optax_form_is_torchs_form_with_infinite_momentum_decay(dtype: str) -> None:
    """torch.optim.NAdam with momentum_decay -> infinity (mu_t = b1) is optax.nadam; note that
    momentum_decay=0 is not (mu_t = b1/2 then). Both references against each other, then
    anyoptim's optax form against torch's limit."""
    torch = pytest.importorskip("torch")
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    kw, _, real = _optax_kw(dtype, {})
    b2 = kw.get("b2", 0.999)
    p0, grads = _problem(4, real)
    with _torch_default("float64"), jax.enable_x64(real == "float64"):
        ref = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
        limit = torch.optim.NAdam(ref, lr=LR, betas=(0.9, b2), momentum_decay=1e9)
        worst = 0.0
        for gs, pb in zip(grads, _optax_steps(optax.nadam(LR, b2=b2), p0, grads)):
            for y, g in zip(ref, gs):
                y.grad = torch.from_numpy(g.copy())
            limit.step()
            for i, y in enumerate(ref):
                worst = max(worst, _rel(y.detach().numpy(), np.asarray(pb[str(i)])))
    _record(f"torch.optim.NAdam(momentum_decay=1e9) vs optax.nadam/{dtype}", worst)
    assert worst <= TOL[real]
    core_vs_torch(lambda: optim.NAdam(LR, betas=(0.9, b2), convention="optax"),
                  lambda ps: torch.optim.NAdam(ps, lr=LR, betas=(0.9, b2), momentum_decay=1e9),
                  real, f"NAdam core optax-form/{dtype} vs torch.optim.NAdam(momentum_decay=1e9)",
                  default="float64")


# ============================================================================= signatures
@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_torch_drop_in_signature_and_groups(name: str) -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    ours, theirs = getattr(at, name), getattr(torch.optim, name)
    ps = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
    qs = [(p.name, p.kind, p.default) for p in inspect.signature(theirs).parameters.values()]
    assert ps == qs
    w = torch.nn.Parameter(torch.zeros(3))
    a, b = ours([w]), theirs([w])
    assert a.param_groups[0].keys() == b.param_groups[0].keys()
    assert {k: v for k, v in a.defaults.items() if k != "foreach"} == \
        {k: v for k, v in b.defaults.items() if k != "foreach"}


@pytest.mark.parametrize("name", ["radam", "nadam", "nadamw"])
def test_optax_factory_signature(name: str) -> None:
    optax = pytest.importorskip("optax")
    import anyoptim.optax as ao

    ps = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(ao, name)).parameters.values()]
    qs = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(optax, name)).parameters.values()]
    assert ps == qs


# ============================================================================= state dicts
def _train(opt: Any, params: list[Any], grads: list[list[np.ndarray]]) -> None:
    import torch

    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()


@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_drop_in_loads_genuine_torch_state_dict(name: str) -> None:
    """torch.optim -> anyoptim.torch -> torch.optim, mid-run: the numbers continue."""
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    p0, grads = _problem(5, "float64")
    kw = {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}
    ref = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    ref_opt = getattr(torch.optim, name)(ref, **kw)
    _train(ref_opt, ref, grads[:20])
    ours = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    ours_opt = getattr(at, name)(ours, **kw)
    ours_opt.load_state_dict(ref_opt.state_dict())
    _train(ref_opt, ref, grads[20:40])
    _train(ours_opt, ours, grads[20:40])
    for a, b in zip(ours, ref):
        assert _rel(a.detach().numpy(), b.detach().numpy()) <= 1e-12
    # and back: anyoptim's state dict has torch's keys and loads into torch.optim
    sd = ours_opt.state_dict()
    keys = {"step", "exp_avg", "exp_avg_sq"} | ({"mu_product"} if name == "NAdam" else set())
    assert all(set(s) == keys for s in sd["state"].values())
    assert sd["param_groups"][0].keys() == ref_opt.state_dict()["param_groups"][0].keys()
    back = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    back_opt = getattr(torch.optim, name)(back, **kw)
    # (through a file, as a run is resumed: torch.optim keeps the loaded step tensors as they
    # are, so loading a live state dict would share them between the two optimizers)
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    back_opt.load_state_dict(torch.load(buffer, weights_only=True))
    _train(back_opt, back, grads[40:])
    _train(ours_opt, ours, grads[40:])
    for a, b in zip(ours, back):
        assert _rel(a.detach().numpy(), b.detach().numpy()) <= 1e-12


@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_drop_in_state_dict_round_trip_resumes_exactly(name: str) -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    p0, grads = _problem(6, "float32")
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa = getattr(at, name)(a, lr=0.01, weight_decay=0.01)
    _train(oa, a, grads[:10])
    sd = oa.state_dict()
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ob = getattr(at, name)(b, lr=0.01, weight_decay=0.01)
    ob.load_state_dict(sd)
    _train(oa, a, grads[10:30])
    _train(ob, b, grads[10:30])
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    if name == "NAdam":
        products = {float(oa.state[p]["mu_product"]) for p in a}
        assert len(products) == 1 and 0 < products.pop() < 1
        assert all(oa.state[p]["mu_product"].device.type == "cpu" for p in a)


def test_nadam_drop_in_mu_product_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    p0, grads = _problem(7, "float32")
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa, ob = at.NAdam(a, momentum_decay=0.01), torch.optim.NAdam(b, momentum_decay=0.01)
    _train(oa, a, grads[:15])
    _train(ob, b, grads[:15])
    for x, y in zip(a, b):
        sa, sb = oa.state[x], ob.state[y]
        assert sa["mu_product"].dtype == sb["mu_product"].dtype
        assert torch.equal(sa["mu_product"], sb["mu_product"])
        assert torch.equal(sa["step"], sb["step"])


@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_drop_in_under_torch_compile_and_tensor_lr(name: str) -> None:
    """The traced path (torch.compile) and a tensor lr follow torch.optim too."""
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    p0, grads = _problem(8, "float32")
    ref = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    traced = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    tensor_lr = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    kw = {"weight_decay": 0.1}
    ref_opt = getattr(torch.optim, name)(ref, lr=0.01, **kw)
    traced_opt = getattr(at, name)(traced, lr=0.01, **kw)
    lr_opt = getattr(at, name)(tensor_lr, lr=torch.tensor(0.01), **kw)
    step = torch.compile(traced_opt.step, backend="eager")
    for gs in grads[:10]:
        for ps in (ref, traced, tensor_lr):
            for p, g in zip(ps, gs):
                p.grad = torch.from_numpy(g.copy())
        ref_opt.step()
        step()
        lr_opt.step()
    for a, b, c in zip(traced, tensor_lr, ref):
        assert _rel(a.detach().numpy(), c.detach().numpy()) <= 1e-6
        assert _rel(b.detach().numpy(), c.detach().numpy()) <= 1e-6
        if name == "NAdam":
            assert torch.equal(traced_opt.state[a]["mu_product"], ref_opt.state[c]["mu_product"])


# ============================================================================= executors
FUSED_CASES = {
    "nadam-coupled": lambda: optim.NAdam(optim.cosine_decay(0.05, 8, 0.001), weight_decay=0.1),
    "nadam-optax-eps-root": lambda: optim.NAdam(0.05, convention="optax", eps_root=1e-8),
    "nadamw": lambda: optim.NAdamW(0.05, weight_decay=0.1, betas=(0.3, 0.99)),
    "radam-short-b2": lambda: optim.RAdam(0.05, betas=(0.9, 0.9), weight_decay=0.1),
    "radam-optax-nesterov": lambda: optim.RAdam(0.05, betas=(0.8, 0.9), nesterov=True,
                                                convention="optax", decoupled_weight_decay=True,
                                                weight_decay=0.1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_numpy_equals_reference(case: str, dtype: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The numba kernels (in place and functional) give the reference path's bits."""
    pytest.importorskip("numba")
    from anyoptim import _backend
    from anyoptim.utils import tree_flatten

    rng = np.random.default_rng(9)
    shapes = {"m": (7, 9), "v": (5,), "s": ()}
    params = {k: np.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}
    grads = [{k: np.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}
             for _ in range(9)]
    make = FUSED_CASES[case]
    in_place, functional = make(), make()
    pi = {k: v.copy() for k, v in params.items()}
    pf = params
    for g in grads:
        in_place.update(pi, g)
        pf = functional.apply_gradients(g, pf)
    monkeypatch.setattr(_backend, "fused_numpy_available", lambda: False)
    ref = make()
    pr = params
    for g in grads:
        pr = ref.apply_gradients(g, pr)
    for ours, want in ((pi, pr), (pf, pr), (in_place.state, ref.state),
                       (functional.state, ref.state)):
        fa, fb = tree_flatten(ours), tree_flatten(want)
        assert [k for k, _ in fa] == [k for k, _ in fb]
        for (k, x), (_, y) in zip(fa, fb):
            np.testing.assert_array_equal(x, y, err_msg=k, strict=True)


@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_drop_in_multi_tensor_path_vs_torch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numba's kernels the drop-ins run torch's multi-tensor ops; still torch.optim's
    numbers."""
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at
    from anyoptim import _backend

    monkeypatch.setattr(_backend, "fused_numpy_available", lambda: False)
    kw = {"weight_decay": 0.1, "betas": (0.9, 0.99)}
    for dtype in DTYPES:
        torch_pair(lambda ps: getattr(at, name)(ps, lr=0.01, **kw),
                   lambda ps: getattr(torch.optim, name)(ps, lr=0.01, **kw), dtype,
                   f"{name} torch multi-tensor path/{dtype} vs torch.optim.{name}")


@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_drop_in_with_missing_gradients_vs_torch(name: str) -> None:
    """Parameters without a gradient on some steps keep their own step (and mu_product)."""
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    p0, grads = _problem(10, "float64")
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa = getattr(at, name)([{"params": a[:2]}, {"params": a[2:], "lr": 0.02}], lr=0.01)
    ob = getattr(torch.optim, name)([{"params": b[:2]}, {"params": b[2:], "lr": 0.02}], lr=0.01)
    for k, gs in enumerate(grads[:30]):
        for i, (x, y, g) in enumerate(zip(a, b, gs)):
            skip = (k % 3 == 1 and i == 1) or (k % 5 == 2 and i == 3)
            x.grad = None if skip else torch.from_numpy(g.copy())
            y.grad = None if skip else torch.from_numpy(g.copy())
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert _rel(x.detach().numpy(), y.detach().numpy()) <= 1e-12
        for key in ("step", "mu_product"):
            if key in ob.state[y]:
                assert torch.equal(oa.state[x][key], ob.state[y][key]), key


@pytest.mark.parametrize("make", [
    pytest.param(lambda: optim.NAdam(0.01, momentum_decay=0.05), id="NAdam"),
    pytest.param(lambda: optim.ScheduleFreeAdamW(0.01), id="ScheduleFreeAdamW"),
])
def test_torch_wrapper_state_dict_carries_top_level_scalars(make: Callable[[], Any]) -> None:
    """anyoptim.torch.Optimizer around an optimizer with top-level scalars (mu_product, the
    schedule-free weights): a state dict written to a file resumes the run exactly."""
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    p0, grads = _problem(11, "float32")
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa = at.Optimizer(a, make())
    _train(oa, a, grads[:5])
    buffer = io.BytesIO()
    torch.save(oa.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ob = at.Optimizer(b, make())
    ob.load_state_dict(saved)
    _train(oa, a, grads[5:15])
    _train(ob, b, grads[5:15])
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    inner_a, inner_b = oa.anyoptim_optimizer.state, ob.anyoptim_optimizer.state
    for key in inner_a:
        if not isinstance(inner_a[key], dict):
            assert float(inner_a[key]) == float(inner_b[key]), key


# ============================================================================= the scalar state
def test_mu_product_lives_at_the_top_level() -> None:
    torch = pytest.importorskip("torch")
    opt = optim.NAdam(0.01, momentum_decay=0.01)
    params = {"w": np.zeros(3), "b": {"c": np.zeros(2)}}
    for _ in range(5):
        params = opt.apply_gradients({"w": np.ones(3), "b": {"c": np.ones(2)}}, params)
    assert set(opt.state["w"]) == {"m", "v"} and set(opt.state["b"]["c"]) == {"m", "v"}
    # torch's per-parameter product after 5 steps, in float64
    with _torch_default("float64"):
        w = torch.nn.Parameter(torch.zeros(3))
        ref = torch.optim.NAdam([w], momentum_decay=0.01)
        for _ in range(5):
            w.grad = torch.ones(3)
            ref.step()
        want = float(ref.state[w]["mu_product"])
    assert opt.state["mu_product"].dtype == np.float64
    assert abs(float(opt.state["mu_product"]) - want) <= 1e-15


def test_mu_product_name_is_reserved() -> None:
    opt = optim.NAdam(0.01)
    with pytest.raises(ValueError, match="'mu_product'"):
        opt.apply_gradients({"mu_product": np.ones(2)}, {"mu_product": np.zeros(2)})
    assert int(opt.state["step"]) == 0


def test_failed_update_changes_nothing() -> None:
    opt = optim.NAdam(0.01)
    params = {"w": np.zeros(3)}
    params = opt.apply_gradients({"w": np.ones(3)}, params)
    before = (int(opt.state["step"]), float(opt.state["mu_product"]), opt.state["w"]["m"].copy())
    with pytest.raises(Exception, match="x"):
        opt.apply_gradients({"w": np.ones(3), "x": np.ones(2)}, params)
    assert (int(opt.state["step"]), float(opt.state["mu_product"])) == before[:2]
    np.testing.assert_array_equal(opt.state["w"]["m"], before[2])


def test_nadam_optax_form_product_is_beta1_power() -> None:
    opt = optim.NAdam(0.01, betas=(0.8, 0.99), convention="optax")
    params = {"w": np.zeros(2)}
    for _ in range(7):
        params = opt.apply_gradients({"w": np.ones(2)}, params)
    assert float(opt.state["mu_product"]) == pytest.approx(0.8**7, rel=1e-15)


# ============================================================================= jit / compile
@pytest.mark.parametrize("make", [
    lambda: optim.NAdam(optim.cosine_decay(0.01, 10), weight_decay=0.1),
    lambda: optim.NAdamW(0.01, convention="optax"),
    lambda: optim.RAdam(0.01, betas=(0.9, 0.9), weight_decay=0.1),
], ids=["nadam", "nadamw-optax", "radam"])
def test_jax_jit_pure_step_equals_eager(make: Callable[[], optim.Optimizer]) -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    p = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)}
    gs = [{"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)} for _ in range(12)]
    eager, traced = make(), make()
    traced.init(p)
    state = traced.state
    step = jax.jit(traced.pure_step)
    pe = pt = p
    for g in gs:
        pe = eager.apply_gradients(g, pe)
        pt, state = step(pt, g, state)
    np.testing.assert_allclose(np.asarray(pt["w"]), np.asarray(pe["w"]), rtol=1e-6, atol=1e-7)
    if "mu_product" in eager.state:
        assert float(state["mu_product"]) == pytest.approx(float(eager.state["mu_product"]),
                                                           rel=1e-6)


def test_mx_compile_matches_eager() -> None:
    mx = pytest.importorskip("mlx.core")
    from functools import partial

    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    gs = [rng.standard_normal((3, 2)).astype(np.float32) for _ in range(8)]
    eager, compiled = optim.NAdam(0.01), optim.NAdam(0.01)
    pe = {"w": mx.array(w0)}
    pc = {"w": mx.array(w0)}
    compiled.init(pc)
    state = compiled.state

    @partial(mx.compile, inputs=state, outputs=state)
    def step(p: Any, g: Any) -> Any:
        return compiled.apply_gradients(g, p)

    for g in gs:
        pe = eager.apply_gradients({"w": mx.array(g)}, pe)
        pc = step(pc, {"w": mx.array(g)})
    np.testing.assert_allclose(np.asarray(pc["w"]), np.asarray(pe["w"]), rtol=1e-6, atol=1e-7)


# ============================================================================= bad input
@pytest.mark.parametrize(("make", "words"), [
    (lambda: optim.NAdam(0.01, betas=(1.0, 0.999)), ["NAdam", "beta1", "[0, 1)", "1.0"]),
    (lambda: optim.NAdam(0.01, momentum_decay=-1), ["NAdam", "momentum_decay", ">= 0", "-1"]),
    (lambda: optim.NAdamW(0.01, weight_decay=-0.1), ["NAdamW", "weight_decay", ">= 0", "-0.1"]),
    (lambda: optim.NAdam(0.01, convention="keras"), ["NAdam", "convention", "'torch'", "keras"]),
    (lambda: optim.RAdam(0.01, threshold=3), ["RAdam", "threshold", ">= 4", "3"]),
    (lambda: optim.RAdam(0.01, eps=-1e-8), ["RAdam", "eps", ">= 0", "-1e-08"]),
])
def test_bad_hyperparameters_are_named(make: Callable[[], Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_drop_in_bad_group_value_changes_nothing(name: str) -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    cls = getattr(at, name)
    with pytest.raises(ValueError, match="betas"):
        cls([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 1.5))
    if name == "NAdam":
        with pytest.raises(ValueError, match="momentum_decay"):
            cls([torch.nn.Parameter(torch.zeros(2))], momentum_decay=-0.1)
    w = torch.nn.Parameter(torch.ones(2))
    v = torch.nn.Parameter(torch.ones(3))
    opt = cls([{"params": [w]}, {"params": [v]}], lr=0.1)
    w.grad, v.grad = torch.ones(2), torch.ones(3)
    opt.step()
    saved = {k: v.clone() for k, v in opt.state[w].items()}
    w0, v0 = w.detach().clone(), v.detach().clone()
    opt.param_groups[1]["eps"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\].*eps"):
        opt.step()
    assert torch.equal(w, w0) and torch.equal(v, v0)
    for k, value in saved.items():
        assert torch.equal(opt.state[w][k], value)


def test_drop_in_rejects_capturable() -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    with pytest.raises(ValueError, match="capturable"):
        at.NAdam([torch.nn.Parameter(torch.zeros(2))], capturable=True)


def test_optax_radam_bad_threshold() -> None:
    pytest.importorskip("optax")
    import anyoptim.optax as ao

    with pytest.raises(ValueError, match="threshold"):
        ao.radam(0.1, threshold=2.0)


def test_report_largest_errors() -> None:
    """Prints the largest error per case (run with -s after the cases above)."""
    for key in sorted(LARGEST):
        print(f"{LARGEST[key]:.3e}  {key}")
