"""``anyoptim.optax.lion``, ``sgd``, ``rmsprop``, ``adagrad`` and ``adadelta``: optax's signatures and defaults on anyoptim's rules."""

from __future__ import annotations

from typing import Any

import jax
import optax

from .._backend._rules import Elementwise
from ._common import (
    MaskOrFn,
    ScalarOrSchedule,
    _canonical_dtype,
    _check,
    _check_beta,
    _check_number,
    _check_schedule,
    _elementwise,
    _flags,
    _scalars,
    _scale,
)


# ----------------------------------------------------------------------------- Lion
def _lion_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, decay = flags

    def lion(p: Any, g: Any, mu: Any, sc: Any) -> Any:
        s = sc[0]
        b1, b2 = s["b1"], s["b2"]
        u = ops.sign((1.0 - b1) * g + b1 * mu)
        mu = (1 - b2) * g + b2 * mu
        if decay:
            u = u + s["wd"] * p
        return _scale(u, lr_kind, s["lr"]), mu

    return lion


_LION = Elementwise(state=("mu",), element=_lion_element, scalars=_scalars, flags=_flags)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Lion with optax's maths and defaults (``optax.lion``):
    :math:`u_t = -\eta(\mathrm{sign}((1-\beta_1) g_t + \beta_1 m_{t-1}) + \lambda p_t)`,
    :math:`m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: interpolation between the momentum and the gradient, in [0, 1).
        b2: decay of the momentum, in [0, 1).
        mu_dtype: dtype of the momentum (default: the parameters').
        weight_decay: :math:`\lambda`. Default ``1e-3`` (optax's; anyoptim's ``Lion``: 0).
        mask: which leaves are decayed.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    _check_schedule("lion", "learning_rate", learning_rate)
    _check_beta("lion", "b1", b1)
    _check_beta("lion", "b2", b2)
    _check_schedule("lion", "weight_decay", weight_decay)
    return _elementwise("lion", _LION, {"b1": b1, "b2": b2},
                        {"mu": (0, _canonical_dtype(mu_dtype))}, learning_rate=learning_rate,
                        weight_decay=weight_decay, mask=mask, needs_params=True)


# ----------------------------------------------------------------------------- SGD
def _sgd_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, _, momentum, nesterov = flags

    if not momentum:
        def plain(p: Any, g: Any, sc: Any) -> Any:
            return (_scale(g, lr_kind, sc[0]["lr"]),)

        return plain

    def sgd(p: Any, g: Any, trace: Any, sc: Any) -> Any:
        s = sc[0]
        mu = s["momentum"]
        trace = g + mu * trace
        u = g + mu * trace if nesterov else trace
        return _scale(u, lr_kind, s["lr"]), trace

    return sgd


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Any = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with optax's maths and defaults (``optax.sgd``): with momentum :math:`\mu`,
    :math:`t_k = g_k + \mu t_{k-1}` and :math:`u_k = -\eta\, t_k` (Nesterov:
    :math:`-\eta (g_k + \mu t_k)`).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        momentum: :math:`\mu`, or None for plain SGD (no state).
        nesterov: use Nesterov momentum.
        accumulator_dtype: dtype of the momentum buffer (default: the parameters').

    Returns:
        An ``optax.GradientTransformationExtraArgs``.
    """
    _check_schedule("sgd", "learning_rate", learning_rate)
    _check_number("sgd", "momentum", momentum, optional=True)
    if momentum is not None:
        _check("sgd", "momentum", momentum, lambda v: v >= 0, ">= 0")
    use_momentum = momentum is not None
    rule = Elementwise(state=("trace",) if use_momentum else (), element=_sgd_element,
                       scalars=_scalars, flags=_flags)
    h = {"momentum": momentum, "switches": (use_momentum, bool(nesterov))}
    init = {"trace": (0, _canonical_dtype(accumulator_dtype))} if use_momentum else {}
    return _elementwise("sgd", rule, h, init, learning_rate=learning_rate)


# ----------------------------------------------------------------------------- RMSprop
def _rmsprop_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, _, centered, eps_in_sqrt, bias_correction, momentum, nesterov = flags

    def direction(g: Any, mu: Any, nu: Any, s: Any) -> Any:
        decay, eps = s["decay"], s["eps"]
        if centered:
            mu = (1 - decay) * g + decay * mu
        nu = (1 - decay) * (g * g) + decay * nu
        mu_hat, nu_hat = mu, nu
        if bias_correction:
            correction = s["bc"]
            if centered:
                mu_hat = mu / correction.astype(mu.dtype)
            nu_hat = nu / correction.astype(nu.dtype)
        spread = nu_hat - mu_hat * mu_hat if centered else nu_hat
        scaling = jax.lax.rsqrt(spread + eps) if eps_in_sqrt else 1 / (ops.sqrt(spread) + eps)
        return _scale(scaling * g, lr_kind, s["lr"]), mu, nu

    def traced(u: Any, trace: Any, s: Any) -> tuple[Any, Any]:
        m = s["momentum"]
        trace = u + m * trace
        return (u + m * trace if nesterov else trace), trace

    if centered and momentum:
        def f4(p: Any, g: Any, mu: Any, nu: Any, trace: Any, sc: Any) -> Any:
            u, mu, nu = direction(g, mu, nu, sc[0])
            u, trace = traced(u, trace, sc[0])
            return u, mu, nu, trace

        return f4
    if centered:
        def f3(p: Any, g: Any, mu: Any, nu: Any, sc: Any) -> Any:
            return direction(g, mu, nu, sc[0])

        return f3
    if momentum:
        def f2(p: Any, g: Any, nu: Any, trace: Any, sc: Any) -> Any:
            u, _, nu = direction(g, None, nu, sc[0])
            u, trace = traced(u, trace, sc[0])
            return u, nu, trace

        return f2

    def f1(p: Any, g: Any, nu: Any, sc: Any) -> Any:
        u, _, nu = direction(g, None, nu, sc[0])
        return u, nu

    return f1


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Any = 0.9,
    eps: Any = 1e-8,
    initial_scale: Any = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Any = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop with optax's maths and defaults (``optax.rmsprop``):
    :math:`\nu_t = \rho\nu_{t-1} + (1-\rho) g_t^2`, :math:`u_t = -\eta\, g_t / \sqrt{\nu_t +
    \epsilon}` (ε inside the root by default; anyoptim's ``RMSprop`` puts it outside and
    decays with 0.99), then an optional momentum trace of the scaled updates.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        decay: :math:`\rho`, in [0, 1].
        eps: the ε term.
        initial_scale: the initial value of :math:`\nu` (and of the centred statistics).
        eps_in_sqrt: add ε inside the square root (True) or after it.
        centered: subtract the squared mean of the gradients (centred RMSprop).
        momentum: momentum of a trace of the updates, or None.
        nesterov: Nesterov momentum for that trace.
        bias_correction: bias-correct the moving averages.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.
    """
    name = "rmsprop"
    _check_schedule(name, "learning_rate", learning_rate)
    _check_number(name, "decay", decay)
    _check(name, "decay", decay, lambda v: 0 <= v <= 1, "in [0, 1]")
    _check_number(name, "eps", eps)
    _check(name, "eps", eps, lambda v: v >= 0, ">= 0")
    _check_number(name, "initial_scale", initial_scale)
    _check_number(name, "momentum", momentum, optional=True)
    use_momentum = momentum is not None
    state = (*(("mu",) if centered else ()), "nu", *(("trace",) if use_momentum else ()))
    rule = Elementwise(state=state, element=_rmsprop_element, scalars=_scalars, flags=_flags)
    h = {"decay": decay, "eps": eps, "momentum": momentum, "corrected": (("bc", decay),),
         "switches": (bool(centered), bool(eps_in_sqrt), bool(bias_correction), use_momentum,
                      bool(nesterov))}
    init: dict[str, tuple[Any, Any]] = {}
    if centered:
        init["mu"] = (0, None)
    init["nu"] = (initial_scale, None)
    if use_momentum:
        init["trace"] = (0, None)
    return _elementwise(name, rule, h, init, learning_rate=learning_rate)


# ----------------------------------------------------------------------------- Adagrad, AdaDelta
def _adagrad_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind = flags[0]

    def adagrad(p: Any, g: Any, ss: Any, sc: Any) -> Any:
        s = sc[0]
        ss = g * g + ss
        inverse = ops.where(ss > 0, jax.lax.rsqrt(ss + s["eps"]), 0.0)
        return _scale(inverse * g, lr_kind, s["lr"]), ss

    return adagrad


_ADAGRAD = Elementwise(state=("sum_of_squares",), element=_adagrad_element, scalars=_scalars,
                       flags=_flags)


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: Any = 0.1,
    eps: Any = 1e-7,
) -> optax.GradientTransformationExtraArgs:
    r"""Adagrad with optax's maths and defaults (``optax.adagrad``): the sum of squares starts
    at ``initial_accumulator_value`` and ε sits inside the root,
    :math:`u_t = -\eta\, g_t / \sqrt{\sum g^2 + \epsilon}` (0 where the sum is 0).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        initial_accumulator_value: the initial sum of squares (>= 0).
        eps: the ε term inside the square root.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.
    """
    _check_schedule("adagrad", "learning_rate", learning_rate)
    _check_number("adagrad", "initial_accumulator_value", initial_accumulator_value)
    _check("adagrad", "initial_accumulator_value", initial_accumulator_value,
           lambda v: v >= 0, ">= 0")
    _check_number("adagrad", "eps", eps)
    return _elementwise("adagrad", _ADAGRAD, {"eps": eps},
                        {"sum_of_squares": (initial_accumulator_value, None)},
                        learning_rate=learning_rate)


def _adadelta_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, decay = flags

    def adadelta(p: Any, g: Any, e_g: Any, e_x: Any, sc: Any) -> Any:
        s = sc[0]
        rho, eps = s["rho"], s["eps"]
        if decay:
            g = g + s["wd"] * p
        e_g = (1 - rho) * (g * g) + rho * e_g
        u = (ops.sqrt(e_x + eps) / ops.sqrt(e_g + eps)) * g
        e_x = (1 - rho) * (u * u) + rho * e_x
        return _scale(u, lr_kind, s["lr"]), e_g, e_x

    return adadelta


_ADADELTA = Elementwise(state=("e_g", "e_x"), element=_adadelta_element, scalars=_scalars,
                        flags=_flags)


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: Any = 0.9,
    eps: Any = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaDelta with optax's maths and defaults (``optax.adadelta``): the weight decay is
    added to the gradient first, then
    :math:`u_t = -\eta\, \sqrt{x_{t-1} + \epsilon} / \sqrt{e_t + \epsilon}\; g_t`.

    As in optax, ``learning_rate=None`` applies no scaling at all (not even the sign flip):
    the updates then point uphill, so pass a learning rate (e.g. 1.0) to descend.

    Args:
        learning_rate: a number, an optax schedule, or None (see above).
        rho: decay of the running averages, in [0, 1].
        eps: the ε term inside both roots.
        weight_decay: coupled weight decay added to the gradient (a number or a schedule).
        weight_decay_mask: which leaves are decayed.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    _check_schedule("adadelta", "learning_rate", learning_rate, optional=True)
    _check_number("adadelta", "rho", rho)
    _check("adadelta", "rho", rho, lambda v: 0 <= v <= 1, "in [0, 1]")
    _check_number("adadelta", "eps", eps)
    _check_schedule("adadelta", "weight_decay", weight_decay)
    return _elementwise("adadelta", _ADADELTA, {"rho": rho, "eps": eps},
                        {"e_g": (0, None), "e_x": (0, None)}, learning_rate=learning_rate,
                        weight_decay=weight_decay, mask=weight_decay_mask, needs_params=True)
