"""``anyoptim.optax.adam``, ``adamw``, ``nadam``, ``nadamw``, ``amsgrad``, ``adamax`` and
``adamaxw``: optax's signatures and defaults on anyoptim's rules."""

from __future__ import annotations

from typing import Any

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


# ----------------------------------------------------------------------------- Adam family
def _adam_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, decay, nesterov = flags

    def adam(p: Any, g: Any, mu: Any, nu: Any, sc: Any) -> Any:
        s = sc[0]
        b1, b2 = s["b1"], s["b2"]
        mu = (1 - b1) * g + b1 * mu
        nu = (1 - b2) * (g * g) + b2 * nu
        bc1 = s["bc1"]
        if nesterov:
            mu_hat = (b1 * (mu / s["bc1_next"].astype(mu.dtype))
                      + (1 - b1) * (g / bc1.astype(g.dtype)))
        else:
            mu_hat = mu / bc1.astype(mu.dtype)
        nu_hat = nu / s["bc2"].astype(nu.dtype)
        u = mu_hat / (ops.sqrt(nu_hat + s["eps_root"]) + s["eps"])
        if decay:
            u = u + s["wd"] * p
        return _scale(u, lr_kind, s["lr"]), mu, nu

    return adam


_ADAM = Elementwise(state=("mu", "nu"), element=_adam_element, scalars=_scalars, flags=_flags)


def _check_adam(name: str, learning_rate: Any, b1: Any, b2: Any, eps: Any,
                eps_root: Any) -> None:
    _check_schedule(name, "learning_rate", learning_rate)
    _check_beta(name, "b1", b1)
    _check_beta(name, "b2", b2)
    for param, value in (("eps", eps), ("eps_root", eps_root)):
        _check_number(name, param, value)
        _check(name, param, value, lambda v: v >= 0, ">= 0")


def _adam_like(name: str, learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any,
               mu_dtype: Any, nesterov: bool, weight_decay: Any,
               mask: MaskOrFn) -> optax.GradientTransformationExtraArgs:
    _check_adam(name, learning_rate, b1, b2, eps, eps_root)
    if weight_decay is not None:
        _check_schedule(name, "weight_decay", weight_decay)
    mu_dtype = _canonical_dtype(mu_dtype)
    h = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root, "switches": (bool(nesterov),),
         "nesterov": bool(nesterov), "corrected": (("bc1", b1), ("bc2", b2))}
    return _elementwise(name, _ADAM, h, {"mu": (0, mu_dtype), "nu": (0, None)},
                        learning_rate=learning_rate, weight_decay=weight_decay, mask=mask,
                        needs_params=weight_decay is not None)


def _amsgrad_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, _decay, correct_mu, correct_nu = flags

    def amsgrad(p: Any, g: Any, mu: Any, nu: Any, nu_max: Any, sc: Any) -> Any:
        s = sc[0]
        b1, b2 = s["b1"], s["b2"]
        mu = (1 - b1) * g + b1 * mu
        nu = (1 - b2) * (g * g) + b2 * nu
        mu_hat = mu / s["bc1"].astype(mu.dtype) if correct_mu else mu
        nu_eff = nu / s["bc2"].astype(nu.dtype) if correct_nu else nu
        # optax keeps the maximum of the (by default bias-corrected) moment; torch's AMSGrad,
        # anyoptim.Adam(amsgrad=True), keeps the maximum of the raw one
        nu_max = ops.maximum(nu_max, nu_eff)
        u = mu_hat / (ops.sqrt(nu_max + s["eps_root"]) + s["eps"])
        return _scale(u, lr_kind, s["lr"]), mu, nu, nu_max

    return amsgrad


_AMSGRAD = Elementwise(state=("mu", "nu", "nu_max"), element=_amsgrad_element,
                       scalars=_scalars, flags=_flags)


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad with optax's maths and defaults (``optax.amsgrad``, Reddi et al. 2018).

    .. math::

        \hat v_t = \max\left(\hat v_{t-1}, \frac{v_t}{1 - \beta_2^t}\right), \quad
        u_t = -\eta_t \, \frac{m_t / (1 - \beta_1^t)}{\sqrt{\hat v_t + \epsilon_{root}}
              + \epsilon}

    The maximum is taken of the bias-corrected second moment (optax's choice); torch's
    ``Adam(amsgrad=True)`` and ``anyoptim.Adam(amsgrad=True)`` take it of the raw moment and
    correct afterwards, which differs while :math:`1 - \beta_2^t` still grows.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment (default: the parameters').
        bias_correction_mu: correct the first moment's bias. Default ``True``.
        bias_correction_nu: correct the second moment's bias before the maximum. Default
            ``True``; ``False`` (with ``bias_correction_mu=False``) is the paper's form.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its state is a :class:`State` with
        moments ``"mu"``, ``"nu"`` and ``"nu_max"``.
    """
    name = "amsgrad"
    _check_adam(name, learning_rate, b1, b2, eps, eps_root)
    for param, value in (("bias_correction_mu", bias_correction_mu),
                         ("bias_correction_nu", bias_correction_nu)):
        _check(name, param, value, lambda v: isinstance(v, bool), "True or False")
    h = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root,
         "switches": (bias_correction_mu, bias_correction_nu),
         "corrected": (("bc1", b1), ("bc2", b2))}
    return _elementwise(name, _AMSGRAD, h,
                        {"mu": (0, _canonical_dtype(mu_dtype)), "nu": (0, None),
                         "nu_max": (0, None)},
                        learning_rate=learning_rate, weight_decay=None, mask=None,
                        needs_params=False)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with optax's maths and defaults (``optax.adam``).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        u_t &= -\eta_t \, \frac{m_t / (1 - \beta_1^t)}
               {\sqrt{v_t / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment (default: the parameters').
        nesterov: use Nesterov momentum (NAdam).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its state is a :class:`State` with
        moments ``"mu"`` and ``"nu"``.
    """
    return _adam_like("adam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov,
                      None, None)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW with optax's maths and defaults (``optax.adamw``): the Adam direction plus
    :math:`\lambda p`, scaled by :math:`-\eta`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment (default: the parameters').
        weight_decay: :math:`\lambda` (a number or a schedule). Default ``1e-4`` (optax's;
            anyoptim's ``AdamW`` defaults to 0.01).
        mask: which leaves are decayed: a tree of bools (or a prefix of one), or a function
            of the updates returning one.
        nesterov: use Nesterov momentum (NAdamW).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    return _adam_like("adamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov,
                      weight_decay, mask)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """NAdam (``optax.nadam``): :func:`adam` with ``nesterov=True``.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment.
        b2: decay of the second moment.
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment.
        nesterov: use Nesterov momentum.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.
    """
    return _adam_like("nadam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov,
                      None, None)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """NAdamW (``optax.nadamw``): :func:`adamw` with ``nesterov=True``.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment.
        b2: decay of the second moment.
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment.
        weight_decay: decoupled weight decay (a number or a schedule).
        mask: which leaves are decayed.
        nesterov: use Nesterov momentum.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    return _adam_like("nadamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov,
                      weight_decay, mask)


def _adamax_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    lr_kind, decay = flags

    def adamax(p: Any, g: Any, mu: Any, nu: Any, sc: Any) -> Any:
        s = sc[0]
        b1 = s["b1"]
        mu = (1 - b1) * g + b1 * mu
        nu = ops.maximum(ops.abs(g) + s["eps"], s["b2"] * nu)
        u = (mu / s["bc1"].astype(mu.dtype)) / nu
        if decay:
            u = u + s["wd"] * p
        return _scale(u, lr_kind, s["lr"]), mu, nu

    return adamax


_ADAMAX = Elementwise(state=("mu", "nu"), element=_adamax_element, scalars=_scalars,
                      flags=_flags)


def _adamax_like(name: str, learning_rate: Any, b1: Any, b2: Any, eps: Any,
                 weight_decay: Any, mask: MaskOrFn) -> optax.GradientTransformationExtraArgs:
    _check_adam(name, learning_rate, b1, b2, eps, 0.0)
    if weight_decay is not None:
        _check_schedule(name, "weight_decay", weight_decay)
    return _elementwise(name, _ADAMAX, {"b1": b1, "b2": b2, "eps": eps, "corrected": (("bc1", b1),)},
                        {"mu": (0, None), "nu": (0, None)}, learning_rate=learning_rate,
                        weight_decay=weight_decay, mask=mask,
                        needs_params=weight_decay is not None)


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax with optax's maths and defaults (``optax.adamax``): the first moment is
    bias-corrected and ε sits inside the maximum, :math:`v_t = \max(|g_t| + \epsilon,
    \beta_2 v_{t-1})`, :math:`u_t = -\eta \, \hat m_t / v_t`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the infinity norm, in [0, 1).
        eps: added to :math:`|g|` inside the maximum.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.
    """
    return _adamax_like("adamax", learning_rate, b1, b2, eps, None, None)


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    """Adamax with decoupled weight decay (``optax.adamaxw``).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment.
        b2: decay of the infinity norm.
        eps: added to :math:`|g|` inside the maximum.
        weight_decay: decoupled weight decay (a number or a schedule).
        mask: which leaves are decayed.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    return _adamax_like("adamaxw", learning_rate, b1, b2, eps, weight_decay, mask)
