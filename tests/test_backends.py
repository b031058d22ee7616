"""Every optimizer on every installed array library.

What is checked, and against what (expected values never come from anyoptim on the same
library):

1. ``test_keeps_library_dtype_device``: results and every state array stay in the gradients'
   library, dtype and device, for every optimizer and every float dtype the library has.
2. ``test_cross_library_parity``: one random problem, 20 steps (5 in float16/bfloat16), every
   optimizer in several configurations (defaults, weight decay, a schedule), run on each
   library and compared with the same run on a peer library (NumPy, or torch for NumPy itself).
3. ``test_matches_torch_optim`` / ``test_matches_optax``: the same run against
   ``torch.optim`` and optax where the maths coincide; the documented divergences are tested
   *as* divergences (``test_divergence_*``).
4. JAX transformations (``jax.jit`` with donation, ``jax.vmap``, ``jax.grad``), ``mx.compile``
   and ``torch.compile`` of ``pure_step`` against eager ``apply_gradients``.
5. ``torch.nn.Module`` training through ``update()`` against ``torch.optim``.
6. Mixing libraries gives a clear error and changes nothing.
7. Checkpoints saved from one library load into every other and training continues with the
   same numbers.

Tolerances (``|a - b| <= tol * (1 + |b|)``, i.e. ``rtol = atol = tol``; parameters are O(1)),
measured on a 2-core x86 CPU over 3 seeds with numpy 2.4, torch 2.13, jax 0.10, mlx 0.32.4:

* parity, float64: 3e-16 measured, tolerance 1e-12. Where float32 scalar terms enter (schedules,
  bias correction, Adafactor's step terms: MLX computes them in float32, and float32 ``pow`` and
  ``cos`` differ by an ulp between libraries; MLX's Muon passes the Newton-Schulz coefficient
  through ``mx.addmm``'s float32 ``alpha``) 1e-7 measured, tolerance 1e-6.
* parity, float32: 9.3e-8 measured (torch's CPU ``sqrt`` is not correctly rounded: 1 ulp off
  for ~17% of elements), tolerance 2e-6; Muon 1.6e-7 measured, tolerance 5e-6 (``MUON_F32_TOL``).
* parity, float16 (5 steps): 1.0e-3 measured (1 ulp), tolerance 4e-3.
* parity, bfloat16 (5 steps): 1.0e-2 measured (~3 ulps), tolerance 3e-2. NumPy, JAX and MLX
  round Python scalars to the array dtype (weak typing) and agree bit for bit in float16 for the
  element-wise optimizers; torch keeps the scalar in float32 inside half-precision kernels, so
  it differs from them by about an ulp per operation (``test_torch_half_precision_...``).
* torch.optim and optax references, float32, 20 steps: 8.5e-7 measured (optax Lion with weight
  decay; Adam with bias correction 6.6e-7, torch computes the bias terms in double), tolerance
  1e-5.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import anyoptim as optim
from anyoptim.utils import tree_flatten
from conftest import Backend, backend_by_id

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
SHAPES = {"W": (6, 4), "b": (4,), "T": (2, 3, 4), "s": ()}
PARITY_STEPS = {"float64": 20, "float32": 20, "float16": 5, "bfloat16": 5}

# Muon's Newton-Schulz iteration multiplies small matrices five times; every library sums the
# products in its own order. The quintic's slope at the origin is a = 3.4445, so a rounding
# difference of one float32 ulp in the normalised matrix can grow by up to a^5 ~ 500 through
# the iteration, then is scaled by lr = 0.02 on each of 20 steps: a worst case of a few 1e-6.
# Measured: 1.6e-7. The tolerance sits between the two.
MUON_F32_TOL = 5e-6


def _tol(dtype: str, name: str, f32_scalars: bool, libs: tuple[str, ...] = ()) -> float:
    if dtype == "float64":
        if name in ("Muon", "Multi") and "mlx" in libs:
            # MLX's Newton-Schulz uses mx.addmm (as mlx.optimizers does), whose alpha (the
            # coefficient c = 2.0315) is a float32: a float32 scalar term on MLX only.
            # Measured 1e-7 after 20 steps.
            return 1e-6
        return 1e-6 if f32_scalars else 1e-12
    if dtype == "float32":
        return MUON_F32_TOL if name in ("Muon", "Multi") else 2e-6
    return {"float16": 4e-3, "bfloat16": 3e-2}[dtype]


def _close(got: dict, want: dict, tol: float, what: str) -> None:
    assert got.keys() == want.keys(), what
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=f"{what} [{k}]")


def _installed(ident: str) -> Backend | None:
    try:
        b = backend_by_id(ident)
    except KeyError:
        return None
    return b if b.available else None


def _need(module: str) -> Any:
    return pytest.importorskip(module)


# --------------------------------------------------------------------------- the problem
@functools.cache
def problem(seed: int, steps: int) -> tuple[dict, list[dict]]:
    """Initial parameters and per-step gradient noise (float64 NumPy)."""
    rng = np.random.default_rng(seed)
    p0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    noise = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(steps)]
    for tree in (p0, *noise):  # cached and shared between tests: read-only
        for v in tree.values():
            v.flags.writeable = False
    return p0, noise


def _warm_cos(lr: float) -> Callable:
    return optim.join_schedules(
        [optim.linear_schedule(0.0, lr, 5), optim.cosine_decay(lr, 15)], [5]
    )


def _is_matrix(path: str, array: Any) -> bool:
    return array.ndim >= 2


# name -> [(config id, factory, uses float32 scalar terms)]
CONFIGS: dict[str, list[tuple[str, Callable[[], optim.Optimizer], bool]]] = {
    "SGD": [
        ("default", lambda: optim.SGD(0.05), False),
        ("nesterov-wd", lambda: optim.SGD(0.05, momentum=0.9, weight_decay=0.01, nesterov=True), False),
        ("cosine-damp", lambda: optim.SGD(optim.cosine_decay(0.1, 20), momentum=0.9, dampening=0.1), True),
    ],
    "RMSprop": [
        ("default", lambda: optim.RMSprop(0.01), False),
        ("alpha-eps", lambda: optim.RMSprop(0.01, alpha=0.9, eps=1e-6), False),
        ("expdecay", lambda: optim.RMSprop(optim.exponential_decay(0.01, 0.95)), True),
    ],
    "Adagrad": [
        ("default", lambda: optim.Adagrad(0.1), False),
        ("stepdecay", lambda: optim.Adagrad(optim.step_decay(0.1, 0.5, 5)), True),
    ],
    "AdaDelta": [
        ("default", lambda: optim.AdaDelta(1.0), False),
        ("linear", lambda: optim.AdaDelta(optim.linear_schedule(1.0, 0.1, 20), rho=0.95), True),
    ],
    "Adam": [
        ("default", lambda: optim.Adam(0.01), False),
        ("bias-correction", lambda: optim.Adam(0.01, bias_correction=True), True),
        ("warmup-cosine", lambda: optim.Adam(_warm_cos(0.01), bias_correction=True), True),
    ],
    "AdamW": [
        ("default", lambda: optim.AdamW(0.01), False),
        ("wd-bc", lambda: optim.AdamW(0.01, weight_decay=0.1, bias_correction=True), True),
        ("warmup-cosine", lambda: optim.AdamW(_warm_cos(0.01)), True),
    ],
    "Adamax": [
        ("default", lambda: optim.Adamax(0.01), False),
        ("cosine", lambda: optim.Adamax(optim.cosine_decay(0.01, 20)), True),
    ],
    "Lion": [
        ("default", lambda: optim.Lion(0.001), False),
        ("wd", lambda: optim.Lion(0.001, weight_decay=0.1), False),
        ("warmup-cosine", lambda: optim.Lion(_warm_cos(0.001)), True),
    ],
    "Adafactor": [
        ("default", lambda: optim.Adafactor(), True),
        ("beta1-wd-clip", lambda: optim.Adafactor(beta_1=0.9, weight_decay=0.1, clip_threshold=0.5), True),
        (
            "cosine-lr",
            lambda: optim.Adafactor(optim.cosine_decay(0.01, 20), relative_step=False, scale_parameter=False),
            True,
        ),
    ],
    "Muon": [
        ("default", lambda: optim.Muon(0.02), False),
        ("plain-wd", lambda: optim.Muon(0.02, weight_decay=0.1, nesterov=False, ns_steps=3), False),
        ("warmup-cosine", lambda: optim.Muon(_warm_cos(0.02)), True),
        ("torch-form-match-rms", lambda: optim.Muon(0.02, weight_decay=0.1, adjust_lr="match_rms_adamw", normalize="clamp", decoupled_weight_decay=True), False),
        ("polar-express-normuon", lambda: optim.Muon(0.02, ns_coefficients="polar_express", normuon=True, adjust_lr="original"), False),
    ],
    "ScheduleFreeAdamW": [
        # (True: the averaging scalars are float32 on MLX)
        ("default", lambda: optim.ScheduleFreeAdamW(0.01), True),
        ("warmup-wd", lambda: optim.ScheduleFreeAdamW(0.01, warmup_steps=5, weight_decay=0.1), True),
        ("optax-cosine", lambda: optim.ScheduleFreeAdamW(optim.cosine_decay(0.01, 20), warmup_steps=3, convention="optax"), True),
    ],
    "ScheduleFreeSGD": [
        ("default", lambda: optim.ScheduleFreeSGD(0.05), True),
        ("warmup-wd", lambda: optim.ScheduleFreeSGD(0.05, momentum=0.8, warmup_steps=4, weight_decay=0.01), True),
    ],
    "ScheduleFreeRAdam": [
        ("default", lambda: optim.ScheduleFreeRAdam(0.01), True),
    ],
    "ADOPT": [
        ("default", lambda: optim.ADOPT(0.01), False),
        ("wd-nesterov-optax-clip", lambda: optim.ADOPT(0.01, weight_decay=0.1, decouple=True, nesterov=True, clip_step_offset=1), False),
        ("cosine-coupled-noclip", lambda: optim.ADOPT(optim.cosine_decay(0.01, 20), weight_decay=0.1, clip=None), True),
    ],
    "AdEMAMix": [
        ("default", lambda: optim.AdEMAMix(0.01), False),
        ("wd-warmup", lambda: optim.AdEMAMix(0.01, weight_decay=0.1, warmup=10), True),
        ("coupled-eps-root", lambda: optim.AdEMAMix(optim.cosine_decay(0.01, 20), weight_decay=0.1, decouple=False, eps_root=1e-8), True),
    ],
    "SimplifiedAdEMAMix": [
        ("default", lambda: optim.SimplifiedAdEMAMix(0.001), False),
        ("alpha-wd", lambda: optim.SimplifiedAdEMAMix(0.001, alpha=2.0, weight_decay=0.1), True),
    ],
    "Adan": [
        ("default", lambda: optim.Adan(0.01), False),
        ("prox-wd", lambda: optim.Adan(0.01, weight_decay=0.1), False),
        ("optax-form", lambda: optim.Adan(optim.cosine_decay(0.01, 20), weight_decay=0.1, no_prox=True, diff_weight="optax", eps_root=1e-8), True),
    ],
    "SignSGD": [
        ("default", lambda: optim.SignSGD(0.001), False),
        ("coupled-wd", lambda: optim.SignSGD(optim.cosine_decay(0.001, 20), weight_decay=0.1, decouple=False), True),
    ],
    "Signum": [
        ("default", lambda: optim.Signum(0.001), False),
        ("wd", lambda: optim.Signum(0.001, momentum=0.5, weight_decay=0.1), False),
    ],
    "LAMB": [
        ("default", lambda: optim.LAMB(0.01), False),
        ("wd-exclude", lambda: optim.LAMB(optim.cosine_decay(0.01, 20), weight_decay=0.1, exclude_1d=True, eps_root=1e-8), True),
    ],
    "LARS": [
        ("default", lambda: optim.LARS(0.1), False),
        ("wd-nesterov-exclude", lambda: optim.LARS(optim.cosine_decay(0.1, 20), weight_decay=0.01, nesterov=True, exclude_1d=True), True),
    ],
    "Multi": [
        ("muon-adamw", lambda: optim.MultiOptimizer([optim.Muon(0.02), optim.AdamW(0.01)], [_is_matrix]), False),
        (
            "schedules",
            lambda: optim.MultiOptimizer(
                [optim.Muon(_warm_cos(0.02)), optim.Adam(optim.cosine_decay(0.01, 20), bias_correction=True)],
                [_is_matrix],
            ),
            True,
        ),
    ],
    "NAdam": [
        ("default", lambda: optim.NAdam(0.01), True),
        ("coupled-wd-eps-root", lambda: optim.NAdam(optim.cosine_decay(0.01, 20), weight_decay=0.1, momentum_decay=0.01, eps_root=1e-8), True),
        ("optax-form", lambda: optim.NAdam(0.01, weight_decay=0.1, convention="optax"), True),
    ],
    "NAdamW": [
        ("default", lambda: optim.NAdamW(0.01, weight_decay=0.1), True),
        ("optax-form", lambda: optim.NAdamW(optim.cosine_decay(0.01, 20), convention="optax"), True),
    ],
    "RAdam": [
        ("default", lambda: optim.RAdam(0.01, betas=(0.9, 0.9)), True),
        ("coupled-wd", lambda: optim.RAdam(optim.cosine_decay(0.01, 20), betas=(0.9, 0.95), weight_decay=0.1), True),
        ("optax-nesterov-decoupled", lambda: optim.RAdam(0.01, betas=(0.8, 0.95), weight_decay=0.1, decoupled_weight_decay=True, nesterov=True, eps_root=1e-8, convention="optax"), True),
    ],
    "Prodigy": [
        # d0 = 0.1 (default 1e-6): v = d^2 (1-b2) g^2 underflows in float16 while d is small
        ("d0-0.1", lambda: optim.Prodigy(d0=0.1), False),
        ("bc-coupled", lambda: optim.Prodigy(use_bias_correction=True, weight_decay=0.1, decouple=False, d0=0.5), False),
        ("cosine-safeguard-wd", lambda: optim.Prodigy(optim.cosine_decay(1.0, 20), safeguard_warmup=True, weight_decay=0.1, d0=0.1), True),
    ],
    "AdaBelief": [
        ("default", lambda: optim.AdaBelief(0.01), False),
        ("wd-nesterov", lambda: optim.AdaBelief(0.01, weight_decay=0.1, nesterov=True, eps=1e-8), False),
        ("cosine-coupled-ams", lambda: optim.AdaBelief(optim.cosine_decay(0.01, 20), weight_decay=0.1, decouple=False, ams_bound=True), True),
    ],
    "LaProp": [
        ("default", lambda: optim.LaProp(0.01), False),
        ("wd-centered", lambda: optim.LaProp(0.01, weight_decay=0.1, centered=True, steps_before_using_centered=1), False),
        ("cosine-coupled-ams", lambda: optim.LaProp(optim.cosine_decay(0.01, 20), weight_decay=0.1, decouple=False, ams_bound=True), True),
    ],
    "AdamAtan2": [
        ("default", lambda: optim.AdamAtan2(0.01), False),
        ("wd-a-b", lambda: optim.AdamAtan2(0.01, weight_decay=0.1, a=2.0, b=0.5, betas=(0.3, 0.6)), False),
        ("cosine-cautious-wd", lambda: optim.AdamAtan2(optim.cosine_decay(0.01, 20), weight_decay=0.1, cautious_wd=True), True),
    ],
    "StableAdamW": [
        ("default", lambda: optim.StableAdamW(0.01), False),
        ("cosine-coupled", lambda: optim.StableAdamW(optim.cosine_decay(0.01, 20), weight_decay=0.1, decouple=False, eps=1e-6), True),
    ],
    "CautiousAdamW": [
        ("default", lambda: optim.CautiousAdamW(0.01), False),
        ("cosine-count-bc", lambda: optim.CautiousAdamW(optim.cosine_decay(0.01, 20), bias_correction=True, cautious_scale="count"), True),
    ],
    "CautiousLion": [
        ("wd", lambda: optim.CautiousLion(0.001, weight_decay=0.1), False),
    ],
    "Adam-amsgrad": [
        ("default", lambda: optim.Adam(0.01, amsgrad=True), False),
        ("cosine-bc-wd", lambda: optim.AdamW(optim.cosine_decay(0.01, 20), bias_correction=True, amsgrad=True), True),
    ],
    "cautious-flag": [
        ("adamw-ams", lambda: optim.AdamW(0.01, amsgrad=True, cautious=True), False),
        ("lion-count", lambda: optim.Lion(0.001, weight_decay=0.1, cautious=True, cautious_scale="count"), False),
    ],
    "AdamAtan2-cautious": [
        ("factor", lambda: optim.AdamAtan2(0.01, weight_decay=0.1, cautious_factor=0.25), False),
    ],
}
NAMES = list(CONFIGS)


def _grads(b: Backend, noise: dict, params: dict, dtype: str) -> dict:
    # the gradient of 0.25*|p|^2 - noise.p, computed in the library itself (feedback on p)
    return {k: b.asarray(noise[k], dtype) + 0.5 * params[k] for k in params}


@functools.cache
def run(ident: str, name: str, cfg: int, dtype: str, steps: int, seed: int = 0, mode: str = "apply") -> dict:
    """``steps`` updates on library ``ident``; the final parameters as float64 NumPy arrays."""
    b = backend_by_id(ident)
    p0, noise = problem(seed, steps)
    opt = CONFIGS[name][cfg][1]()
    params = {k: b.asarray(v, dtype) for k, v in p0.items()}
    for t in range(steps):
        grads = _grads(b, noise[t], params, dtype)
        if mode == "apply":
            params = opt.apply_gradients(grads, params)
        else:
            opt.update(params, grads)  # in place
        b.sync(params)
    return {k: b.to_numpy(v).astype(np.float64) for k, v in params.items()}


def _peer(b: Backend, dtype: str) -> Backend | None:
    for ident in ("numpy", "torch-cpu", "mlx", "jax"):
        peer = _installed(ident)
        if peer is not None and peer.id != b.id and dtype in peer.float_dtypes:
            return peer
    return None


# =========================================================================== 1. dtype/device
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_keeps_library_dtype_device(backend: Backend, name: str, dtype: str) -> None:
    if dtype not in backend.float_dtypes:
        pytest.skip(f"{backend.id} has no {dtype}")
    p0, noise = problem(1, 2)
    params = {k: backend.asarray(v, dtype) for k, v in p0.items()}
    # away from zero: in float16 eps=1e-8 rounds to 0, and MLX's RMSprop/Adagrad/Adam then
    # divide by an underflowed sqrt(v) for tiny gradients (faithful MLX behaviour, spec section 9)
    grads = {k: backend.asarray(np.sign(v) * (0.25 + np.abs(v)), dtype) for k, v in noise[0].items()}
    before_p = {k: backend.to_numpy(v).copy() for k, v in params.items()}
    before_g = {k: backend.to_numpy(v).copy() for k, v in grads.items()}
    device = backend.device_of(params["W"])
    opt = CONFIGS[name][0][1]()
    new = params
    for _ in range(2):
        new = backend.sync(opt.apply_gradients(grads, new))

    for k, v in new.items():
        assert backend.is_native(v), (k, type(v))
        assert backend.dtype_name(v) == dtype, (k, v.dtype)
        assert tuple(v.shape) == SHAPES[k]
        assert backend.device_of(v) == device
        assert np.isfinite(backend.to_numpy(v)).all(), k
    # functional: the inputs are untouched
    for k in params:
        np.testing.assert_array_equal(backend.to_numpy(params[k]), before_p[k])
        np.testing.assert_array_equal(backend.to_numpy(grads[k]), before_g[k])

    states = opt.state["states"] if name == "Multi" else [opt.state]
    seen = set()
    for state in states:
        step = state["step"]
        assert backend.is_native(step) and backend.dtype_name(step) == backend.step_dtype
        assert int(step) == 2
        if "learning_rate" in state:
            lr = state["learning_rate"]
            assert backend.is_native(lr) and backend.dtype_name(lr) == "float32"
        for path, arr in tree_flatten({k: v for k, v in state.items() if k in SHAPES}):
            pname, key = path.split(".", 1)
            seen.add(pname)
            shape = SHAPES[pname]
            expected = {
                "exp_avg_sq_row": shape[:-1],
                "exp_avg_sq_col": shape[:-2] + shape[-1:],
            }.get(key, shape)
            assert backend.is_native(arr), path
            assert backend.dtype_name(arr) == dtype, (path, arr.dtype)
            assert tuple(arr.shape) == expected, path
            assert backend.device_of(arr) == device, path
    assert seen == set(SHAPES)


# =========================================================================== 2. parity
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_cross_library_parity(backend: Backend, name: str, dtype: str) -> None:
    if dtype not in backend.float_dtypes:
        pytest.skip(f"{backend.id} has no {dtype}")
    peer = _peer(backend, dtype)
    if peer is None:
        pytest.skip(f"no peer library with {dtype} installed")
    steps = PARITY_STEPS[dtype]
    for cfg, (cid, _, f32_scalars) in enumerate(CONFIGS[name]):
        want = run(peer.id, name, cfg, dtype, steps)
        got = run(backend.id, name, cfg, dtype, steps)
        tol = _tol(dtype, name, f32_scalars, (backend.name, peer.name))
        _close(got, want, tol, f"{name}[{cid}] {dtype}: {backend.id} vs {peer.id}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_update_in_place_parity(backend: Backend, name: str, dtype: str) -> None:
    """``update()`` on a dict of mutable arrays (the fused in-place paths) gives the peer's numbers."""
    if backend.name not in ("numpy", "torch", "cupy"):
        pytest.skip(f"{backend.name} arrays are immutable: update() rebinds, covered by apply")
    if dtype not in backend.float_dtypes:
        pytest.skip(f"{backend.id} has no {dtype}")
    peer = _peer(backend, dtype)
    if peer is None:
        pytest.skip("no peer library installed")
    for cfg, (cid, _, f32_scalars) in enumerate(CONFIGS[name]):
        want = run(peer.id, name, cfg, dtype, PARITY_STEPS[dtype])
        got = run(backend.id, name, cfg, dtype, PARITY_STEPS[dtype], mode="update")
        tol = _tol(dtype, name, f32_scalars, (backend.name, peer.name))
        _close(got, want, tol, f"{name}[{cid}] update(): {backend.id} vs {peer.id}")


def test_update_in_place_keeps_array_objects(backend: Backend) -> None:
    if backend.name not in ("numpy", "torch", "cupy"):
        pytest.skip("immutable arrays")
    p0, noise = problem(2, 1)
    params = {k: backend.asarray(v, "float32") for k, v in p0.items()}
    ids = {k: id(v) for k, v in params.items()}
    for opt in (optim.AdamW(0.01), optim.SGD(0.1, momentum=0.9), optim.RMSprop(0.01)):
        for _ in range(2):
            opt.update(params, {k: backend.asarray(v, "float32") for k, v in noise[0].items()})
        assert {k: id(v) for k, v in params.items()} == ids


@pytest.mark.xfail(
    strict=True,
    reason="torch computes half-precision `array * python_float` with the scalar in float32 "
    "(opmath), MLX rounds the scalar to the array dtype first; anyoptim passes Python scalars "
    "through, so torch float16/bfloat16 runs differ from MLX by an ulp per operation",
)
def test_torch_half_precision_rounds_scalars_like_mlx() -> None:
    torch = _need("torch")
    mx = _need("mlx.core")
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    opt_t, opt_m = optim.SGD(0.1, momentum=0.9), optim.SGD(0.1, momentum=0.9)
    pt = {"w": torch.from_numpy(x).half()}
    pm = {"w": mx.array(x).astype(mx.float16)}
    for _ in range(3):
        pt = opt_t.apply_gradients({"w": pt["w"] * 1.0}, pt)
        pm = opt_m.apply_gradients({"w": pm["w"] * 1.0}, pm)
    np.testing.assert_array_equal(pt["w"].float().numpy(), np.asarray(pm["w"].astype(mx.float32)))


# =========================================================================== 3. references
def _torch_optim_run(factory: Callable, steps: int, seed: int, dtype: str = "float32", noise_only: bool = False) -> dict:
    torch = _need("torch")
    tdt = getattr(torch, dtype)
    p0, noise = problem(seed, steps)
    params = {k: torch.tensor(v, dtype=tdt, requires_grad=True) for k, v in p0.items()}
    opt = factory(list(params.values()))
    for t in range(steps):
        with torch.no_grad():
            for k, p in params.items():
                g = torch.tensor(noise[t][k], dtype=tdt)
                p.grad = g if noise_only else g + 0.5 * p.detach()
        opt.step()
    return {k: p.detach().double().numpy() for k, p in params.items()}


def _anyoptim_run(b: Backend, factory: Callable, steps: int, seed: int, dtype: str = "float32", noise_only: bool = False) -> dict:
    p0, noise = problem(seed, steps)
    opt = factory()
    params = {k: b.asarray(v, dtype) for k, v in p0.items()}
    for t in range(steps):
        if noise_only:
            grads = {k: b.asarray(noise[t][k], dtype) for k in params}
        else:
            grads = _grads(b, noise[t], params, dtype)
        params = b.sync(opt.apply_gradients(grads, params))
    return {k: b.to_numpy(v).astype(np.float64) for k, v in params.items()}


def _adamax_folded_lr(lr: float, b1: float) -> Callable:
    # torch's Adamax divides the step by (1 - b1^t); the schedule sees t - 1
    return lambda step: lr / (1.0 - b1 ** (int(step) + 1))


# (id, anyoptim factory, torch.optim factory, tolerance)
TORCH_REFERENCES = [
    ("Adam-bc", lambda: optim.Adam(0.01, bias_correction=True),
     lambda ps: __import__("torch").optim.Adam(ps, lr=0.01), 1e-5),
    ("Adam-bc-betas-eps", lambda: optim.Adam(0.02, betas=[0.8, 0.99], eps=1e-6, bias_correction=True),
     lambda ps: __import__("torch").optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6), 1e-5),
    ("AdamW-bc", lambda: optim.AdamW(0.01, weight_decay=0.1, bias_correction=True),
     lambda ps: __import__("torch").optim.AdamW(ps, lr=0.01, weight_decay=0.1), 1e-5),
    ("SGD", lambda: optim.SGD(0.05, weight_decay=0.1),
     lambda ps: __import__("torch").optim.SGD(ps, lr=0.05, weight_decay=0.1), 1e-5),
    ("SGD-momentum", lambda: optim.SGD(0.05, momentum=0.9),
     lambda ps: __import__("torch").optim.SGD(ps, lr=0.05, momentum=0.9), 1e-5),
    ("SGD-nesterov-wd", lambda: optim.SGD(0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
     lambda ps: __import__("torch").optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True), 1e-5),
    ("RMSprop", lambda: optim.RMSprop(0.01, alpha=0.9, eps=1e-6),
     lambda ps: __import__("torch").optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-6), 1e-5),
    ("Adagrad", lambda: optim.Adagrad(0.1, eps=1e-8),
     lambda ps: __import__("torch").optim.Adagrad(ps, lr=0.1, eps=1e-8, lr_decay=0, initial_accumulator_value=0), 1e-5),
    ("AdaDelta", lambda: optim.AdaDelta(1.0, rho=0.9, eps=1e-6),
     lambda ps: __import__("torch").optim.Adadelta(ps, lr=1.0, rho=0.9, eps=1e-6), 1e-5),
    # torch's Adamax bias-corrects m; with that folded into the lr (a schedule) and eps = 0 the
    # two coincide (eps sits in different places: torch max(b2*u, |g|+eps), MLX u + eps).
    ("Adamax-folded", lambda: optim.Adamax(_adamax_folded_lr(0.01, 0.9), eps=0.0),
     lambda ps: __import__("torch").optim.Adamax(ps, lr=0.01, eps=0.0), 1e-5),
    # torch's Adafactor (>= 2.5) with lr=1e-2 is MLX's default relative step min(1e-2, 1/sqrt(t))
    # scaled by max(1e-3, RMS(p)); it clamps the variance at eps1^2 instead of adding eps1 to
    # g^2 (negligible here) and has no beta_1 (MLX default None): the maths coincide.
    ("Adafactor", lambda: optim.Adafactor(),
     lambda ps: __import__("torch").optim.Adafactor(ps, lr=1e-2), 1e-5),
]


@pytest.mark.parametrize("ref", TORCH_REFERENCES, ids=[r[0] for r in TORCH_REFERENCES])
def test_matches_torch_optim(backend: Backend, ref: tuple) -> None:
    _need("torch")
    _, make, make_torch, tol = ref
    if ref[0] == "Adafactor":
        import torch

        if not hasattr(torch.optim, "Adafactor"):
            pytest.skip("torch.optim.Adafactor needs torch >= 2.5")
    want = _torch_optim_run(make_torch, 20, seed=3)
    got = _anyoptim_run(backend, make, 20, seed=3)
    _close(got, want, tol, f"{ref[0]} on {backend.id} vs torch.optim")


def _first_steps(run_fn: Callable, steps: int) -> list[np.ndarray]:
    """Per-step parameter changes of the W matrix, for runs driven by noise-only gradients."""
    out = [run_fn(t)["W"] for t in range(steps + 1)]
    return [out[t + 1] - out[t] for t in range(steps)]


def test_divergence_sgd_dampening_first_step() -> None:
    """MLX (and anyoptim) apply dampening on step 1; torch sets buf = g there.

    Documented consequence: the first step is (1 - tau) times torch's, and after that the
    momentum buffers differ by mu^(t-1) * tau * g_1, so the step-t changes differ by
    lr * mu^(t-1) * tau * g_1.
    """
    torch = _need("torch")
    lr, mu, tau = 0.05, 0.9, 0.3
    b = backend_by_id("numpy")
    any_steps = _first_steps(
        lambda t: _anyoptim_run(b, lambda: optim.SGD(lr, momentum=mu, dampening=tau), t, 4, noise_only=True), 5
    )
    torch_steps = _first_steps(
        lambda t: _torch_optim_run(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=mu, dampening=tau), t, 4, noise_only=True),
        5,
    )
    g1 = problem(4, 1)[1][0]["W"].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(any_steps[0], (1 - tau) * torch_steps[0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(any_steps[0], torch_steps[0], rtol=0.1)
    for t in range(1, 5):
        np.testing.assert_allclose(
            any_steps[t] - torch_steps[t], lr * mu**t * tau * g1, rtol=1e-4, atol=1e-6,
            err_msg=f"step {t + 1}",
        )
    # with dampening = 0 the two coincide from the first step (v_1 = mu*0 + g = torch's buf = g)
    any0 = _anyoptim_run(b, lambda: optim.SGD(lr, momentum=mu), 5, 4, noise_only=True)
    torch0 = _torch_optim_run(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=mu), 5, 4, noise_only=True)
    _close(any0, torch0, 1e-6, "SGD momentum, dampening 0")


def test_divergence_adam_default_has_no_bias_correction() -> None:
    """Adam's default bias_correction=False: with a constant gradient step t is
    (1 - b1^t) / sqrt(1 - b2^t) times torch.optim.Adam's (3.16x on step 1)."""
    torch = _need("torch")
    b1, b2 = 0.9, 0.999
    g = np.array([[0.5, -2.0], [1.5, 0.25]], np.float32)
    p = {"w": np.zeros_like(g)}
    opt = optim.Adam(0.01)
    tp = torch.zeros(2, 2, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.01)
    for t in range(1, 6):
        new = opt.apply_gradients({"w": g}, p)
        before = tp.detach().clone()
        tp.grad = torch.from_numpy(g)
        topt.step()
        ours = new["w"] - p["w"]
        theirs = (tp.detach() - before).numpy()
        ratio = (1 - b1**t) / math.sqrt(1 - b2**t)
        np.testing.assert_allclose(ours, ratio * theirs, rtol=1e-4, err_msg=f"step {t}")
        p = new
    assert abs((1 - b1) / math.sqrt(1 - b2) - 3.1623) < 1e-4


def test_divergence_adamax_bias_correction() -> None:
    """torch's Adamax divides by (1 - b1^t); MLX's does not: with a constant gradient the
    step-t change is (1 - b1^t) times torch's."""
    torch = _need("torch")
    b1 = 0.9
    g = np.array([0.5, -2.0, 1.5], np.float32)
    p = {"w": np.zeros_like(g)}
    opt = optim.Adamax(0.01)
    tp = torch.zeros(3, requires_grad=True)
    topt = torch.optim.Adamax([tp], lr=0.01)
    for t in range(1, 6):
        new = opt.apply_gradients({"w": g}, p)
        before = tp.detach().clone()
        tp.grad = torch.from_numpy(g)
        topt.step()
        np.testing.assert_allclose(
            new["w"] - p["w"], (1 - b1**t) * (tp.detach() - before).numpy(), rtol=1e-5, err_msg=f"step {t}"
        )
        p = new


def test_divergence_adafactor_weight_decay() -> None:
    """MLX's Adafactor decays by weight_decay * alpha (alpha = max(eps2, RMS(p)) * rho_t);
    torch's decays by weight_decay * lr. With a zero gradient (no update) the decay factors
    differ by exactly max(eps2, RMS(p))."""
    torch = _need("torch")
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor needs torch >= 2.5")
    wd = 0.5
    w = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32) * 3.0
    ours = optim.Adafactor(weight_decay=wd).apply_gradients({"w": np.zeros_like(w)}, {"w": w})["w"]
    tp = torch.tensor(w, requires_grad=True)
    topt = torch.optim.Adafactor([tp], lr=1e-2, weight_decay=wd)
    tp.grad = torch.zeros_like(tp)
    topt.step()
    theirs = tp.detach().numpy()
    rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))
    np.testing.assert_allclose(1 - ours / w, wd * 1e-2 * rms, rtol=1e-4)
    np.testing.assert_allclose(1 - theirs / w, wd * 1e-2, rtol=1e-4)


# ---------------------------------------------------------------------------- optax
def _optax_run(tx: Any, steps: int, seed: int) -> dict:
    jnp = _need("jax.numpy")
    optax = _need("optax")
    p0, noise = problem(seed, steps)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p0.items()}
    state = tx.init(params)
    for t in range(steps):
        grads = {k: jnp.asarray(noise[t][k], jnp.float32) + 0.5 * params[k] for k in params}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def _optax(name: str, *args: Any, **kwargs: Any) -> Callable:
    return lambda: getattr(_need("optax"), name)(*args, **kwargs)


# (id, anyoptim factory, optax factory, tolerance)
OPTAX_REFERENCES = [
    ("adam", lambda: optim.Adam(0.01, bias_correction=True), _optax("adam", 0.01), 1e-5),
    ("adam-betas", lambda: optim.Adam(0.02, betas=[0.8, 0.99], eps=1e-6, bias_correction=True),
     _optax("adam", 0.02, b1=0.8, b2=0.99, eps=1e-6), 1e-5),
    # optax.adamw adds wd*p to the update and scales by -lr: p - lr*adam - lr*wd*p, which is
    # MLX's p*(1 - lr*wd) - lr*adam
    ("adamw", lambda: optim.AdamW(0.01, weight_decay=0.1, bias_correction=True),
     _optax("adamw", 0.01, weight_decay=0.1), 1e-5),
    # optax.lion's default weight_decay is 1e-3 (MLX: 0); given explicitly the forms coincide
    ("lion", lambda: optim.Lion(0.001), _optax("lion", 0.001, b1=0.9, b2=0.99, weight_decay=0.0), 1e-5),
    ("lion-wd", lambda: optim.Lion(0.001, weight_decay=0.1), _optax("lion", 0.001, weight_decay=0.1), 1e-5),
    ("sgd-nesterov", lambda: optim.SGD(0.05, momentum=0.9, nesterov=True),
     _optax("sgd", 0.05, momentum=0.9, nesterov=True), 1e-5),
    ("rmsprop", lambda: optim.RMSprop(0.01, alpha=0.9, eps=1e-6),
     _optax("rmsprop", 0.01, decay=0.9, eps=1e-6, eps_in_sqrt=False), 1e-5),
    # optax.adafactor: same beta2 = 1 - t^-0.8, eps 1e-30 added to g^2, block-RMS clipping,
    # parameter-RMS scaling (min 1e-3), ema momentum after the scaling. MLX's relative step is
    # min(1e-2, 1/sqrt(t)) = 1e-2 for t <= 1e4, so learning_rate=0.01; optax factors only dims
    # >= min_dim_size_to_factor (default 128) and picks the two largest axes, which for these
    # shapes are MLX's last two (and the 2-D estimate is symmetric).
    ("adafactor", lambda: optim.Adafactor(),
     _optax("adafactor", learning_rate=0.01, min_dim_size_to_factor=1), 1e-5),
    ("adafactor-momentum-clip", lambda: optim.Adafactor(beta_1=0.9, clip_threshold=0.5),
     _optax("adafactor", learning_rate=0.01, min_dim_size_to_factor=1, momentum=0.9, clipping_threshold=0.5), 1e-5),
]


@pytest.mark.parametrize("ref", OPTAX_REFERENCES, ids=[r[0] for r in OPTAX_REFERENCES])
def test_matches_optax(backend: Backend, ref: tuple) -> None:
    _need("optax")
    _, make, make_tx, tol = ref
    want = _optax_run(make_tx(), 20, seed=6)
    got = _anyoptim_run(backend, make, 20, seed=6)
    _close(got, want, tol, f"{ref[0]} on {backend.id} vs optax")


def test_divergence_optax_lion_default_weight_decay() -> None:
    """optax.lion decays by 1e-3 by default, MLX's Lion not at all."""
    optax = _need("optax")
    b = backend_by_id("numpy")
    default = _optax_run(optax.lion(0.001), 10, seed=7)
    ours = _anyoptim_run(b, lambda: optim.Lion(0.001), 10, seed=7)
    ours_wd = _anyoptim_run(b, lambda: optim.Lion(0.001, weight_decay=1e-3), 10, seed=7)
    _close(ours_wd, default, 1e-6, "Lion(weight_decay=1e-3) vs optax.lion defaults")
    assert max(np.max(np.abs(ours[k] - default[k])) for k in ours) > 1e-6


def test_divergence_optax_adafactor_weight_decay() -> None:
    """optax.adafactor adds weight_decay_rate * p to the update unscaled; MLX scales the decay
    by alpha = max(1e-3, RMS(p)) * min(1e-2, 1/sqrt(t)). With a zero gradient only the decay acts."""
    jnp = _need("jax.numpy")
    optax = _need("optax")
    wd = 0.5
    w = np.random.default_rng(8).standard_normal((6, 4)).astype(np.float32) * 3.0
    ours = optim.Adafactor(weight_decay=wd).apply_gradients({"w": np.zeros_like(w)}, {"w": w})["w"]
    tx = optax.adafactor(learning_rate=0.01, min_dim_size_to_factor=1, weight_decay_rate=wd)
    p = {"w": jnp.asarray(w)}
    updates, _ = tx.update({"w": jnp.zeros_like(p["w"])}, tx.init(p), p)
    theirs = np.asarray(optax.apply_updates(p, updates)["w"])
    rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))
    np.testing.assert_allclose(1 - ours / w, wd * 1e-2 * rms, rtol=1e-4)
    np.testing.assert_allclose(1 - theirs / w, wd, rtol=1e-4)


# =========================================================================== 4. transformations
JIT_CASES = [
    ("Adam-bc-warmup-cosine", lambda: optim.Adam(_warm_cos(0.01), bias_correction=True)),
    ("AdamW", lambda: optim.AdamW(0.01, weight_decay=0.1)),
    ("Muon", lambda: optim.Muon(0.02)),
    ("Adafactor-beta1", lambda: optim.Adafactor(beta_1=0.9, weight_decay=0.1)),
    ("SGD-nesterov-expdecay", lambda: optim.SGD(optim.exponential_decay(0.1, 0.9), momentum=0.9, nesterov=True)),
    ("Multi", CONFIGS["Multi"][1][1]),
]


def _jax_problem(seed: int, steps: int) -> tuple[dict, list[dict]]:
    jnp = _need("jax.numpy")
    p0, noise = problem(seed, steps)
    return (
        {k: jnp.asarray(v, jnp.float32) for k, v in p0.items()},
        [{k: jnp.asarray(v, jnp.float32) for k, v in n.items()} for n in noise],
    )


def _eager_jax(make: Callable, params: dict, grads: list[dict]) -> dict:
    opt = make()
    for g in grads:
        params = opt.apply_gradients(g, params)
    return params


@pytest.mark.parametrize("case", JIT_CASES, ids=[c[0] for c in JIT_CASES])
def test_jax_jit_with_donation_traces_once(case: tuple) -> None:
    jax = _need("jax")
    jnp = jax.numpy
    _, make = case
    params, grads = _jax_problem(9, 5)
    shardings = {k: v.sharding for k, v in params.items()}
    want = _eager_jax(make, params, grads)

    opt = make()
    opt.init(params)
    state = jax.tree.map(jnp.copy, opt.state)  # donated below: keep opt.state readable
    traces = []

    def step(parameters: dict, gradients: dict, state: dict) -> tuple[dict, dict]:
        traces.append(1)
        return opt.pure_step(parameters=parameters, gradients=gradients, state=state)

    jstep = jax.jit(step, donate_argnums=(0, 2))
    p = {k: jnp.array(v, copy=True) for k, v in params.items()}
    first, first_state = p, state
    for g in grads:
        p, state = jstep(p, g, state)
    assert len(traces) == 1
    assert all(v.is_deleted() for v in first.values()), "parameters were not donated"
    # (a scheduled learning_rate input is unused, so JAX drops it instead of donating it)
    donated = [v for k, v in tree_flatten(first_state) if not k.endswith("learning_rate")]
    assert all(v.is_deleted() for v in donated), "state was not donated"
    for k in p:
        assert p[k].sharding == shardings[k]
        assert p[k].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(p[k]), np.asarray(want[k]), rtol=1e-6, atol=1e-6)
    subs = state.get("states", [state])
    for sub in subs:
        assert sub["step"].dtype == (jnp.uint64 if jax.config.jax_enable_x64 else jnp.uint32)
        assert int(sub["step"]) == 5
    # the optimizer's own state was never touched
    own = opt.state.get("states", [opt.state])
    assert all(int(s["step"]) == 0 for s in own)


_SHARDING_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import warnings
    warnings.simplefilter("error")
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import anyoptim as optim
    mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
    rng = np.random.default_rng(0)
    specs = {"W": P("x", None), "T": P(None, None, "x"), "b": P()}
    shapes = {"W": (6, 4), "T": (2, 3, 4), "b": (4,)}
    for name, make in [("AdamW", lambda: optim.AdamW(0.01, bias_correction=True)),
                       ("Adafactor", lambda: optim.Adafactor())]:
        sh = {k: NamedSharding(mesh, specs[k]) for k in shapes}
        params = {k: jax.device_put(jnp.asarray(rng.standard_normal(s), jnp.float32), sh[k])
                  for k, s in shapes.items()}
        grads = {k: jax.device_put(v * 0.5, sh[k]) for k, v in params.items()}
        ref = make()
        e = ref.apply_gradients(grads, ref.apply_gradients(grads, params))
        opt = make()
        opt.init(params)
        step = jax.jit(lambda p, g, s: opt.pure_step(parameters=p, gradients=g, state=s),
                       donate_argnums=(0, 2))
        p, s = step(params, grads, opt.state)
        p, s = step(p, grads, s)
        for k in shapes:
            assert p[k].sharding.is_equivalent_to(sh[k], len(shapes[k])), (name, k, p[k].sharding)
            for key, v in s[k].items():
                if v.ndim == len(shapes[k]):
                    assert v.sharding.is_equivalent_to(sh[k], v.ndim), (name, k, key, v.sharding)
        for k in shapes:
            np.testing.assert_allclose(np.asarray(p[k]), np.asarray(e[k]), rtol=1e-6, atol=1e-6)
    print("OK")
    """
)


def test_jax_jit_keeps_shardings_on_two_devices() -> None:
    """On two (forced) CPU devices, jit(pure_step) returns parameters and state with the
    input shardings. A subprocess, because the device count is fixed when JAX starts."""
    _need("jax")
    out = subprocess.run(
        [sys.executable, "-c", _SHARDING_SCRIPT], capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize(
    "case",
    [c for c in JIT_CASES if c[0] in ("Adam-bc-warmup-cosine", "Muon", "Adafactor-beta1", "Multi")],
    ids=lambda c: c[0],
)
def test_jax_vmap_equals_loop(case: tuple) -> None:
    jax = _need("jax")
    jnp = jax.numpy
    _, make = case
    batch, steps = 3, 3
    problems = [_jax_problem(10 + i, steps) for i in range(batch)]
    want = [_eager_jax(make, p, g) for p, g in problems]

    opt = make()
    opt.init(problems[0][0])
    one = opt.state
    state = jax.tree.map(lambda x: jnp.stack([x] * batch), one)
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[p for p, _ in problems])
    vstep = jax.vmap(lambda p, g, s: opt.pure_step(parameters=p, gradients=g, state=s))
    for t in range(steps):
        grads = jax.tree.map(lambda *xs: jnp.stack(xs), *[g[t] for _, g in problems])
        params, state = vstep(params, grads, state)
    for i in range(batch):
        for k in SHAPES:
            np.testing.assert_allclose(
                np.asarray(params[k][i]), np.asarray(want[i][k]), rtol=1e-5, atol=1e-6, err_msg=f"{i} {k}"
            )


def test_jax_grad_through_pure_step() -> None:
    """d sum(new_params) / d params = 1 - lr*wd for SGD with (coupled) weight decay and for
    AdamW (decoupled); d/d grads = -lr for plain SGD."""
    jax = _need("jax")
    jnp = jax.numpy
    params, grads = _jax_problem(11, 1)
    g = grads[0]
    lr, wd = 0.1, 0.3
    for make, expected in [
        (lambda: optim.SGD(lr, weight_decay=wd), 1 - lr * wd),
        (lambda: optim.SGD(lr, momentum=0.9), 1.0),
        (lambda: optim.AdamW(lr, weight_decay=wd), 1 - lr * wd),
    ]:
        opt = make()
        opt.init(params)
        state = opt.state

        def loss(p: dict, opt: Any = opt, state: dict = state) -> Any:
            new, _ = opt.pure_step(parameters=p, gradients=g, state=state)
            return sum(jnp.sum(v) for v in new.values())

        d = jax.grad(loss)(params)
        for k in SHAPES:
            np.testing.assert_allclose(np.asarray(d[k]), np.full(SHAPES[k], expected), rtol=1e-6)
    opt = optim.SGD(lr)
    opt.init(params)
    dg = jax.grad(
        lambda gr: sum(jnp.sum(v) for v in opt.pure_step(parameters=params, gradients=gr, state=opt.state)[0].values())
    )(g)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(dg[k]), np.full(SHAPES[k], -lr), rtol=1e-6)


@pytest.mark.parametrize("case", JIT_CASES, ids=[c[0] for c in JIT_CASES])
def test_mx_compile_pure_step_equals_eager(case: tuple) -> None:
    mx = _need("mlx.core")
    _, make = case
    b = backend_by_id("mlx")
    p0, noise = problem(12, 5)
    params = {k: b.asarray(v, "float32") for k, v in p0.items()}
    grads = [{k: b.asarray(v, "float32") for k, v in n.items()} for n in noise]

    eager = make()
    want = params
    for g in grads:
        want = eager.apply_gradients(g, want)
    mx.eval(want)

    opt = make()
    opt.init(params)
    traces = []

    def step(p: dict, g: dict, s: dict) -> tuple[dict, dict]:
        traces.append(1)
        return opt.pure_step(parameters=p, gradients=g, state=s)

    cstep = mx.compile(step)
    p, s = params, opt.state
    for g in grads:
        p, s = cstep(p, g, s)
        mx.eval(p, s)
    assert len(traces) == 1
    for k in SHAPES:
        np.testing.assert_allclose(b.to_numpy(p[k]), b.to_numpy(want[k]), rtol=1e-6, atol=1e-6)
    subs = s.get("states", [s])
    assert all(int(x["step"]) == 5 and x["step"].dtype == mx.uint64 for x in subs)


def test_mx_compile_captured_state_update_equals_eager() -> None:
    """The MLX recipe: mx.compile(inputs=state, outputs=state) around optimizer.update(model,
    grads) on an mlx.nn module, against the same steps run eagerly."""
    mx = _need("mlx.core")
    nn = _need("mlx.nn")
    from functools import partial

    def build() -> tuple[Any, optim.Optimizer]:
        mx.random.seed(3)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
        opt = optim.AdamW(_warm_cos(0.05), bias_correction=True)
        opt.init(model.trainable_parameters())
        return model, opt

    def loss_fn(model: Any, x: Any, y: Any) -> Any:
        return mx.mean(mx.square(model(x) - y))

    rng = np.random.default_rng(18)
    data = [(mx.array(rng.standard_normal((8, 4)).astype(np.float32)),
             mx.array(rng.standard_normal((8, 2)).astype(np.float32))) for _ in range(6)]

    model, opt = build()
    grad_fn = nn.value_and_grad(model, loss_fn)
    for x, y in data:
        _, grads = grad_fn(model, x, y)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
    want = dict(tree_flatten(model.parameters()))

    cmodel, copt = build()
    cgrad_fn = nn.value_and_grad(cmodel, loss_fn)
    state = [cmodel.state, copt.state]
    traces = []

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x: Any, y: Any) -> Any:
        traces.append(1)
        loss, grads = cgrad_fn(cmodel, x, y)
        copt.update(cmodel, grads)
        return loss

    state_dict = copt.state
    for x, y in data:
        step(x, y)
        mx.eval(cmodel.parameters(), copt.state)
    assert len(traces) == 1
    assert copt.state is state_dict and int(copt.state["step"]) == len(data)
    got = dict(tree_flatten(cmodel.parameters()))
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning")
def test_torch_compile_pure_step_equals_eager() -> None:
    torch = _need("torch")
    b = backend_by_id("torch-cpu")
    make = JIT_CASES[0][1]
    p0, noise = problem(13, 3)
    params = {k: b.asarray(v, "float32") for k, v in p0.items()}
    grads = [{k: b.asarray(v, "float32") for k, v in n.items()} for n in noise]
    eager = make()
    want = params
    for g in grads:
        want = eager.apply_gradients(g, want)

    opt = make()
    opt.init(params)

    def step(p: dict, g: dict, s: dict) -> tuple[dict, dict]:
        return opt.pure_step(parameters=p, gradients=g, state=s)

    cstep = torch.compile(step, fullgraph=False)
    p, s = params, opt.state
    for g in grads:
        p, s = cstep(p, g, s)
    for k in SHAPES:
        np.testing.assert_allclose(p[k].numpy(), want[k].numpy(), rtol=1e-6, atol=1e-6)
    assert int(s["step"]) == 3 and s["step"].dtype == torch.int64
    assert int(opt.state["step"]) == 0


# =========================================================================== 5. torch modules
def _torch_models(seed: int) -> tuple[Any, Any]:
    torch = _need("torch")
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model[0].bias.requires_grad_(False)  # frozen
    ref = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    ref.load_state_dict(model.state_dict())
    ref[0].bias.requires_grad_(False)
    return model, ref


MODULE_CASES = [
    ("AdamW-bc", lambda: optim.AdamW(0.01, weight_decay=0.1, bias_correction=True),
     lambda ps: __import__("torch").optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
    ("SGD-nesterov", lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda ps: __import__("torch").optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("RMSprop", lambda: optim.RMSprop(0.01, alpha=0.9),
     lambda ps: __import__("torch").optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8)),
    ("Adagrad", lambda: optim.Adagrad(0.1), lambda ps: __import__("torch").optim.Adagrad(ps, lr=0.1, eps=1e-8)),
]


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_torch_module_training(case: tuple) -> None:
    torch = _need("torch")
    _, make, make_torch = case
    model, ref = _torch_models(0)
    grad_hook_calls: list[int] = []
    forward_hook_calls: list[int] = []
    model[2].weight.register_hook(lambda g: grad_hook_calls.append(1))
    model.register_forward_hook(lambda m, i, o: forward_hook_calls.append(1))
    objects = {n: p for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    keys = list(model.state_dict())
    frozen_before = model[0].bias.detach().clone()

    opt = make()
    ref_opt = make_torch([p for p in ref.parameters() if p.requires_grad])
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(16, 5, generator=gen)
        y = torch.randn(16, 3, generator=gen)
        for m in (model, ref):
            m.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(m(x), y).backward()
        opt.update(model, optim.module_grads(model))
        ref_opt.step()

    assert len(grad_hook_calls) == 5 and len(forward_hook_calls) == 5
    for n, p in model.named_parameters():
        assert p is objects[n], f"{n} was replaced"
        assert isinstance(p, torch.nn.Parameter)
        assert p.requires_grad == flags[n]
        assert p.grad_fn is None and p.is_leaf
    assert list(model.state_dict()) == keys
    assert "0.bias" not in opt.state, "a frozen parameter got optimizer state"
    assert {k for k in opt.state if k not in ("step", "learning_rate")} == {"0.weight", "2.weight", "2.bias"}
    assert torch.equal(model[0].bias.detach(), frozen_before)
    for name, sub in opt.state.items():
        if name in ("step", "learning_rate"):
            continue
        for v in sub.values():
            assert isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.device == objects[name].device
    assert opt.state["step"].dtype == torch.int64 and int(opt.state["step"]) == 5
    refp = dict(ref.named_parameters())
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), refp[n].detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
    # still trainable: a new backward pass reaches the same Parameter objects
    model.zero_grad()
    model(torch.randn(2, 5)).sum().backward()
    assert model[2].weight.grad is not None and len(grad_hook_calls) == 6


# =========================================================================== 6. mixing
def _lib_arrays(ident: str, tree: dict) -> dict:
    b = _installed(ident)
    if b is None:
        pytest.skip(f"{ident} is not installed")
    return {k: b.asarray(v, "float32") for k, v in tree.items()}


def _snapshot(opt: optim.Optimizer) -> list[tuple[str, int, type, np.ndarray]]:
    out = []
    for path, v in tree_flatten(opt.state):
        out.append((path, id(v), type(v), np.array(v.tolist(), dtype=np.float64)))
    return out


MIXES = [
    ("numpy-grads-torch-params", "numpy", "torch-cpu"),
    ("torch-grads-numpy-params", "torch-cpu", "numpy"),
    ("jax-grads-numpy-params", "jax", "numpy"),
    ("mlx-grads-numpy-params", "mlx", "numpy"),
    ("numpy-grads-mlx-params", "numpy", "mlx"),
    ("torch-grads-jax-params", "torch-cpu", "jax"),
]


@pytest.mark.parametrize("mix", MIXES, ids=[m[0] for m in MIXES])
@pytest.mark.parametrize("initialised", [False, True], ids=["lazy-init", "after-a-step"])
def test_mixed_gradients_and_parameters_are_rejected(mix: tuple, initialised: bool) -> None:
    _, glib, plib = mix
    p0, noise = problem(14, 1)
    grads = _lib_arrays(glib, noise[0])
    params = _lib_arrays(plib, p0)
    opt = optim.Adam(0.01)
    if initialised:  # a good step in the parameters' library first
        opt.apply_gradients(_lib_arrays(plib, noise[0]), params)
    before = _snapshot(opt)
    with pytest.raises(TypeError) as info:
        opt.apply_gradients(grads, params)
    msg = str(info.value)
    assert glib.split("-")[0] in msg and plib.split("-")[0] in msg, msg
    assert _same(_snapshot(opt), before)
    if not initialised:
        assert set(opt.state) == {"step", "learning_rate"}


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and x[2] is y[2] and np.array_equal(x[3], y[3]) for x, y in zip(a, b)
    )


@pytest.mark.parametrize(
    "pair", [("numpy", "torch-cpu"), ("numpy", "jax"), ("numpy", "mlx"), ("torch-cpu", "numpy"), ("mlx", "jax")],
    ids=lambda p: f"{p[0]}-state-{p[1]}-grads",
)
def test_state_from_another_library(pair: tuple) -> None:
    """A state built in library A, then gradients of library B. The scalars (step, lr) are
    adopted into B, but per-parameter arrays of A are a clear TypeError, and nothing changes."""
    slib, glib = pair
    p0, noise = problem(15, 2)
    src = optim.Adam(0.01)
    sp = _lib_arrays(slib, p0)
    src.apply_gradients(_lib_arrays(slib, noise[0]), sp)

    opt = optim.Adam(0.01)
    opt.state = src.state
    before = _snapshot(opt)
    with pytest.raises(TypeError) as info:
        opt.apply_gradients(_lib_arrays(glib, noise[1]), _lib_arrays(glib, p0))
    msg = str(info.value)
    assert slib.split("-")[0] in msg and glib.split("-")[0] in msg, msg
    assert _same(_snapshot(opt), before)

    # only the scalars: adopted, and training goes on in B from the restored step
    b = _installed(glib)
    opt2 = optim.Adam(0.01)
    opt2.state = {"step": src.state["step"], "learning_rate": src.state["learning_rate"]}
    opt2.apply_gradients(_lib_arrays(glib, noise[1]), _lib_arrays(glib, p0))
    assert b.is_native(opt2.state["step"]) and b.dtype_name(opt2.state["step"]) == b.step_dtype
    assert int(opt2.state["step"]) == 2
    assert b.is_native(opt2.state["learning_rate"])


# =========================================================================== 7. checkpoints
CKPT_LIBS = ["numpy", "torch-cpu", "jax", "mlx"]
CKPT_CASES = [
    ("Adam-bc-cosine", lambda: optim.Adam(optim.cosine_decay(0.01, 10), bias_correction=True), None),
    ("Adafactor-beta1", lambda: optim.Adafactor(beta_1=0.9), None),
    ("Multi", lambda: optim.MultiOptimizer([optim.Muon(0.02), optim.AdamW(0.01)], [_is_matrix]), [_is_matrix]),
]


def _continue(b: Backend, opt: optim.Optimizer, params: dict, noise: list[dict], dtype: str) -> dict:
    for n in noise:
        params = b.sync(opt.apply_gradients(_grads(b, n, params, dtype), params))
    return {k: b.to_numpy(v).astype(np.float64) for k, v in params.items()}


def _library(ident: str) -> str:
    return ident.split("-")[0]


@pytest.mark.parametrize("case", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
@pytest.mark.parametrize("src", CKPT_LIBS)
def test_checkpoint_loads_into_every_library(src: str, case: tuple, tmp_path: Any) -> None:
    a = _installed(src)
    if a is None:
        pytest.skip(f"{src} is not installed")
    name, make, filters = case
    p0, noise = problem(16, 6)
    opt = make()
    params = {k: a.asarray(v, "float32") for k, v in p0.items()}
    for n in noise[:3]:
        params = a.sync(opt.apply_gradients(_grads(a, n, params, "float32"), params))
    path = tmp_path / f"{src}.safetensors"
    optim.save(path, opt, params=params)
    want = _continue(a, opt, params, noise[3:], "float32")
    tol = MUON_F32_TOL if name == "Multi" else 2e-6

    for dst in CKPT_LIBS:
        b = _installed(dst)
        if b is None:
            continue
        lib = _library(dst)
        loaded = optim.load(path, library=lib, filters=filters)
        q = optim.load_params(path, library=lib)
        assert all(b.is_native(v) for v in q.values())
        subs = loaded.state["states"] if filters else [loaded.state]
        for sub in subs:
            assert b.dtype_name(sub["step"]) == b.step_dtype, (dst, sub["step"].dtype)
            assert int(sub["step"]) == 3
        got = _continue(b, loaded, q, noise[3:], "float32")
        _close(got, want, tol, f"{name}: saved from {src}, continued in {dst} (load)")
        for sub in loaded.state["states"] if filters else [loaded.state]:
            for path_, v in tree_flatten(sub):
                assert b.is_native(v), (dst, path_)
            assert int(sub["step"]) == 6

        # the MLX-style recipe: build the optimizer, assign the state
        fresh = make()
        fresh.state = optim.io.load_state(path, library=lib)
        got2 = _continue(b, fresh, optim.load_params(path, library=lib), noise[3:], "float32")
        _close(got2, want, tol, f"{name}: saved from {src}, continued in {dst} (load_state)")


@pytest.mark.parametrize("pair", [("torch-cpu", "mlx"), ("mlx", "torch-cpu"), ("torch-cpu", "torch-cpu"), ("mlx", "mlx")],
                         ids=lambda p: f"{p[0]}-to-{p[1]}")
def test_checkpoint_bfloat16_between_torch_and_mlx(pair: tuple, tmp_path: Any) -> None:
    src, dst = pair
    a, b = _installed(src), _installed(dst)
    if a is None or b is None:
        pytest.skip("torch and mlx are both needed")
    p0, noise = problem(17, 6)
    opt = optim.AdamW(optim.cosine_decay(0.01, 10), bias_correction=True)
    params = {k: a.asarray(v, "bfloat16") for k, v in p0.items()}
    for n in noise[:3]:
        params = a.sync(opt.apply_gradients(_grads(a, n, params, "bfloat16"), params))
    path = tmp_path / "bf16.safetensors"
    optim.save(path, opt, params=params)
    want = _continue(a, opt, params, noise[3:], "bfloat16")

    loaded = optim.load(path, library=_library(dst))
    q = optim.load_params(path, library=_library(dst))
    for sub in (q, {k: v for k, v in tree_flatten(loaded.state) if k not in ("step", "learning_rate")}):
        for k, v in sub.items():
            assert b.is_native(v) and b.dtype_name(v) == "bfloat16", k
    got = _continue(b, loaded, q, noise[3:], "bfloat16")
    tol = 0.0 if src == dst else 3e-2
    _close(got, want, tol, f"bfloat16 saved from {src}, continued in {dst}")
    for k, v in tree_flatten(loaded.state):
        if k not in ("step", "learning_rate"):
            assert b.dtype_name(v) == "bfloat16", k
