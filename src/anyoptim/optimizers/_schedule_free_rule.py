"""The schedule-free rule: the averaging weight, the warm-up and rectification factors and
the elementwise maths shared by ``ScheduleFreeAdamW``/``SGD``/``RAdam``, their torch drop-ins
and the optax factories (see :mod:`anyoptim.optimizers._schedule_free`)."""

from __future__ import annotations

import math
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero

SCALARS = ("b1", "max_lr", "weight_sum")

CONVENTIONS = ("schedulefree", "optax")


# ----------------------------------------------------------------------------- scalars
def averaging(xp: Any, t: Any, lr: Any, max_lr: Any, weight_sum: Any, r: Any,
              power: Any) -> tuple[Any, Any, Any]:
    """``(c, max_lr, weight_sum)`` after step ``t`` (from 1) with learning rate ``lr``:
    :math:`w_t = t^r \\max_{s\\le t}(\\eta_s)^p`, :math:`c_t = w_t / \\sum_{s\\le t} w_s`
    (0 while the sum is 0). Works on 0-d arrays of any library (and under jit)."""
    max_lr = xp.maximum(max_lr, lr)
    weight = max_lr**power if is_zero(r) else (t**r) * (max_lr**power)
    weight_sum = weight_sum + weight
    positive = weight_sum > 0
    zero = weight_sum * 0
    c = xp.where(positive, weight / xp.where(positive, weight_sum, zero + 1), zero)
    return c, max_lr, weight_sum


def factors(xp: Any, t: Any, kind: str, h: Hyper) -> tuple[Any, Any, Any, Any]:
    """``(f_step, f_weight, bc2, adaptive)`` for step ``t`` (a 0-d float array, from 1).

    The z step uses the learning rate times ``f_step``, the averaging weight the learning rate
    times ``f_weight``; ``bc2`` is :math:`1-\\beta_2^t` and ``adaptive`` is 1 where the gradient
    is divided by :math:`\\sqrt{\\hat v}+\\epsilon` (0 in RAdam's first steps).
    """
    one = t * 0 + 1
    bc2 = one
    if kind != "sgd":
        b2 = h["betas"][1]
        # 1 - b2^t as -expm1(t log b2): computed as 1 - b2**t it loses ~4 digits to
        # cancellation in float32 (the scalars' dtype on JAX and MLX), which RAdam's
        # rectifier then amplifies
        log_b2 = math.log(b2) if isinstance(b2, (int, float)) else xp.log(b2)
        b2t = xp.exp(t * log_b2)
        bc2 = -xp.expm1(t * log_b2)
    adaptive = one
    if kind == "radam":
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2t / bc2
        ok = rho_t > 4.0
        q = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        rect = xp.where(ok, xp.sqrt(xp.maximum(q, 0 * one)),
                        0 * one if h["silent_sgd_phase"] else one)
        return rect, rect, bc2, xp.where(ok, one, 0 * one)
    warmup = h["warmup_steps"]
    if not warmup:
        return one, one, bc2, adaptive
    if h["convention"] == "optax":
        # optax.warmup_constant_schedule: the z step reads it at the count (from 0), the
        # averaging weight at the count + 1
        w = one * warmup
        return (xp.where(t - 1 < w, t - 1, w) / warmup, xp.where(t < w, t, w) / warmup, bc2,
                adaptive)
    # schedulefree: lr * (k + 1) / warmup_steps while k < warmup_steps
    f = xp.where(t <= warmup, t / warmup, one)
    return f, f, bc2, adaptive


def first_beta(h: Hyper) -> Any:
    """:math:`\\beta_1` (``momentum`` for SGD)."""
    return h["momentum"] if "momentum" in h else h["betas"][0]


def _cast(xp: Any, x: Any, dtype: Any) -> Any:
    return x if isinstance(x, (int, float)) else xp.astype(x, dtype)


# ----------------------------------------------------------------------------- the rule
def _flags(h: Hyper) -> tuple[bool, bool]:
    return (not is_zero(h["weight_decay"]), h["convention"] == "optax")


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    f, c, bc2, adaptive = (_cast(xp, x, dtype) for x in h["_sf"])
    # (the torch drop-ins pass torch's "lr")
    lr = _cast(xp, h["learning_rate"] if "learning_rate" in h else h["lr"], dtype) * f
    b1 = first_beta(h)
    b2 = h["betas"][1] if "betas" in h else 0.0
    eps = h.get("eps", 0.0)
    # eps where the gradient is normalised, 1 (exactly) where it is not
    e = eps * adaptive + (1 - adaptive)
    return (lr, c, lr * (b1 * (1 - c) - 1), b1, 1 - b1, b2, 1 - b2, bc2, adaptive, e,
            h["weight_decay"])


def _adaptive_element(ops: Any, flags: tuple[bool, bool]) -> Any:
    decay, optax_form = flags

    def adaptive(p: Any, g: Any, z: Any, v: Any, sc: Any) -> tuple[Any, Any, Any]:
        lr, c, y_scale, b1, one_minus_b1, b2, one_minus_b2, bc2, a, e, wd = sc
        v = b2 * v + one_minus_b2 * (g * g)
        u = g / (ops.sqrt(v / bc2) * a + e)
        if decay:
            u = u + wd * p
        if optax_form:
            # optax.contrib.schedule_free: y rebuilt from the evaluation point x
            z_new = z - lr * u
            x = (1 - c) * ((p - one_minus_b1 * z) / b1) + c * z_new
            return b1 * x + one_minus_b1 * z_new, z_new, v
        y = p + c * (z - p)
        return y + y_scale * u, z - lr * u, v

    return adaptive


def _plain_element(ops: Any, flags: tuple[bool, bool]) -> Any:
    decay, optax_form = flags

    def plain(p: Any, g: Any, z: Any, sc: Any) -> tuple[Any, Any]:
        lr, c, y_scale, b1, one_minus_b1 = sc[0], sc[1], sc[2], sc[3], sc[4]
        u = g
        if decay:
            u = u + sc[10] * p
        if optax_form:
            z_new = z - lr * u
            x = (1 - c) * ((p - one_minus_b1 * z) / b1) + c * z_new
            return b1 * x + one_minus_b1 * z_new, z_new
        y = p + c * (z - p)
        return y + y_scale * u, z - lr * u

    return plain


ADAPTIVE_RULE = Elementwise(state=("z", "v"), element=_adaptive_element, scalars=_scalars,
                            flags=_flags)
PLAIN_RULE = Elementwise(state=("z",), element=_plain_element, scalars=_scalars, flags=_flags)
