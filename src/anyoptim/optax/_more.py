"""optax-named factories for ADOPT, AdEMAMix, Adan, sign SGD, LAMB and LARS.

Each factory maps optax's (or ``optax.contrib``'s) arguments onto the options of the anyoptim
optimizer that holds the maths and runs it through :func:`from_optimizer`: there is no second
copy of the update here. Where the update is ``-learning_rate * direction`` with a direction
that does not read the parameters, ``update`` runs the optimizer from zero parameters, so the
returned update is exactly ``-learning_rate * direction`` (and ``params`` may be omitted, as
in optax).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ..optimizers import ADOPT
from ..optimizers._base import Optimizer
from ._core import from_optimizer

__all__ = ["adopt"]


def _zero_like(x: Any) -> Any:
    return None if x is None else jnp.zeros_like(x)


def _run(optimizer: Optimizer, direction: bool) -> optax.GradientTransformationExtraArgs:
    """``from_optimizer(optimizer)``; with ``direction``, its updates from zero parameters."""
    inner = from_optimizer(optimizer)
    if not direction:
        return inner

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> Any:
        del params
        zeros = jax.tree.map(_zero_like, updates, is_leaf=lambda x: x is None)
        return inner.update(updates, state, zeros, **extra_args)

    return optax.GradientTransformationExtraArgs(inner.init, update)


def _no_mu_dtype(name: str, mu_dtype: Any) -> None:
    if mu_dtype is not None:
        raise ValueError(
            f"anyoptim.optax.{name}: mu_dtype={mu_dtype!r} is not supported: anyoptim keeps "
            "every moment in the parameters' dtype. Drop the argument (or cast the parameters)."
        )


def _quarter(count: Any) -> Any:
    return count**0.25


def adopt(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[Any], Any] = _quarter,
) -> optax.GradientTransformationExtraArgs:
    r"""ADOPT with ``optax.contrib.adopt``'s signature, defaults and maths.

    :class:`anyoptim.ADOPT` with optax's clip step (``clip_step_offset=1``: the bound is
    ``clip_value_fn(count)`` with the update count from 0), run by :func:`from_optimizer`. The
    first update is zero and only records :math:`v = g^2`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: lower bound of :math:`\sqrt{v}`.
        mu_dtype: must be None (moments keep the parameters' dtype).
        nesterov: use Nesterov momentum.
        use_clipping: clip the normalised gradient to :math:`\pm` ``clip_value_fn(count)``.
        clip_value_fn: the clip bound as a function of the update count.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` (``params`` are not needed); its state is
        anyoptim's state dict (see :func:`from_optimizer`).

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.adopt(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
        ...     params = optax.apply_updates(params, updates)
        >>> params["w"]
        Array([-0.01,  0.01], dtype=float32)
    """
    _no_mu_dtype("adopt", mu_dtype)
    clip = clip_value_fn if use_clipping else None
    return _run(ADOPT(learning_rate, betas=(b1, b2), eps=eps, clip=clip, clip_step_offset=1,
                      nesterov=nesterov), True)
