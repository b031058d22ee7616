"""An optax-named factory for Prodigy (``optax.contrib.prodigy``'s signature).

:func:`prodigy` maps ``optax.contrib.prodigy``'s arguments onto :class:`anyoptim.Prodigy`
(bias correction on, decoupled weight decay, unbounded growth) and runs it through
:func:`from_optimizer`: there is no second copy of the maths.
"""

from __future__ import annotations

from typing import Any

import optax

from ..optimizers import Prodigy
from ._common import _check_beta, _check_schedule
from ._convert import from_optimizer

__all__ = ["prodigy"]


def prodigy(
    learning_rate: Any = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: Any = None,
    eps: Any = 1e-8,
    estim_lr0: Any = 1e-6,
    estim_lr_coef: Any = 1.0,
    weight_decay: Any = 0.0,
    safeguard_warmup: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Prodigy with ``optax.contrib.prodigy``'s signature, defaults and maths:
    :class:`anyoptim.Prodigy` with ``use_bias_correction=True``, ``d0=estim_lr0`` and
    ``d_coef=estim_lr_coef`` (see there for the update rule).

    Two differences from optax, both where optax's arithmetic breaks down: while the
    denominator :math:`\|s\|_1` is 0 (all gradients zero so far) optax's estimate is NaN
    and anyoptim leaves the state unchanged, as prodigyopt does; a step whose learning rate
    is exactly 0 changes nothing here (optax still updates its moments). The estimate
    ``d`` is a float64 scalar with ``jax_enable_x64``, else float32 (optax: the parameters'
    lowest dtype).

    Args:
        learning_rate: a number (keep 1) or an optax schedule of the update count.
        betas: :math:`(\beta_1, \beta_2)` of the underlying Adam.
        beta3: decay of the estimate's sums; None for :math:`\sqrt{\beta_2}`.
        eps: added to :math:`\sqrt v`, scaled by the estimate.
        estim_lr0: the initial estimate :math:`d_0`.
        estim_lr_coef: the coefficient of the estimate.
        weight_decay: decoupled weight decay :math:`\lambda`.
        safeguard_warmup: weight :math:`s` by :math:`d` instead of the step size.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.prodigy()
        >>> params = {"w": jnp.array([1.0, -1.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, state, params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.999999, -0.999999], dtype=float32)
    """
    name = "prodigy"
    _check_schedule(name, "learning_rate", learning_rate)
    if len(tuple(betas)) != 2:
        raise ValueError(
            f"anyoptim.optax.prodigy: betas should be a pair (b1, b2), {betas!r} was provided "
            "instead."
        )
    for i, beta in enumerate(betas):
        _check_beta(name, f"betas[{i}]", beta)
    if beta3 is not None:
        _check_beta(name, "beta3", beta3)
    opt = Prodigy(learning_rate, betas=tuple(float(b) for b in betas),
                  beta3=None if beta3 is None else float(beta3), eps=float(eps),
                  weight_decay=float(weight_decay), decouple=True, use_bias_correction=True,
                  safeguard_warmup=bool(safeguard_warmup), d0=float(estim_lr0),
                  d_coef=float(estim_lr_coef))
    return from_optimizer(opt)
