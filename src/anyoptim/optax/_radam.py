"""``optax.radam`` with optax's signature, defaults and maths, run by :func:`from_optimizer`
on :class:`anyoptim.RAdam` (``convention="optax"``): there is no second copy of the update.

(``anyoptim.optax.nadam`` / ``nadamw`` are in :mod:`._adam`, on optax's Adam rule with
``nesterov=True``; :class:`anyoptim.NAdam` with ``convention="optax"`` is the same maths.)
"""

from __future__ import annotations

from typing import Any

import optax

from ..optimizers import RAdam
from ._more import _run

__all__ = ["radam"]


def radam(
    learning_rate: Any,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    threshold: Any = 5.0,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam with ``optax.radam``'s signature, defaults and maths.

    :class:`anyoptim.RAdam` with ``convention="optax"``: while :math:`\rho_t <` ``threshold``
    the direction is :math:`\hat m_t`, then :math:`r_t \hat m_t / (\sqrt{\hat v_t +
    \epsilon_{root}} + \epsilon)`; the update is :math:`-\eta` times it.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        threshold: the :math:`\rho_t` from which the adaptive step is used (>= 4).
        nesterov: use Nesterov momentum.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` (``params`` are not needed); its state is
        anyoptim's state dict (see :func:`from_optimizer`).

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.radam(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
        >>> new = optax.apply_updates(params, updates)["w"]  # rho_1 = 1: a momentum step
        >>> [round(x, 4) for x in new.tolist()]
        [-0.1, 0.2]
    """
    return _run("radam", RAdam(learning_rate, betas=(b1, b2), eps=eps, eps_root=eps_root,
                               threshold=threshold, nesterov=nesterov, convention="optax"), True)
