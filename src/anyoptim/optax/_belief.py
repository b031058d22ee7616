"""optax-named factories for AdaBelief, LaProp, Adam-atan2 and StableAdamW.

Each maps optax's arguments (``optax.adabelief``'s where optax has the optimizer, optax-style
ones otherwise) onto the anyoptim optimizer that holds the maths and runs it through
:func:`from_optimizer`: there is no second copy of the update here.
"""

from __future__ import annotations

from typing import Any

import optax

from ..optimizers._adabelief import AdaBelief
from ..optimizers._adam_atan2 import AdamAtan2
from ..optimizers._laprop import LaProp
from ..optimizers._stable_adamw import StableAdamW
from ._more import _no_decay, _run

__all__ = ["adabelief", "adam_atan2", "laprop", "stable_adamw"]


def adabelief(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBelief with ``optax.adabelief``'s signature, defaults and maths.

    :class:`anyoptim.AdaBelief` (its default form is optax's), run by :func:`from_optimizer`:
    :math:`s \leftarrow \beta_2 s + (1 - \beta_2)(g - m)^2 + \epsilon_{root}` and the update
    :math:`-\eta\, \hat m / (\sqrt{\hat s} + \epsilon)`, bias-corrected.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator.
        eps_root: added to the second moment at every step.
        nesterov: use Nesterov momentum.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` (``params`` are not needed); its state is
        anyoptim's state dict (see :func:`from_optimizer`).

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.adabelief(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.11111113,  0.11111113], dtype=float32)
    """
    return _run("adabelief", AdaBelief(learning_rate, betas=(b1, b2), eps=eps,
                                       eps_root=eps_root, nesterov=nesterov), True)


def laprop(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-15,
    eps_root: float = 1e-15,
    weight_decay: float = 0.0,
    *,
    centered: bool = False,
    steps_before_using_centered: int = 10,
) -> optax.GradientTransformationExtraArgs:
    r"""LaProp, optax-style (optax has none): :class:`anyoptim.LaProp`'s maths.

    :math:`v \leftarrow \beta_2 v + (1 - \beta_2) g^2`, then the momentum of the normalised,
    learning-rate-scaled gradient, bias-corrected, with decoupled weight decay after the step
    (``pytorch_optimizer.LaProp``'s maths for a learning rate that does not change).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the momentum, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the root of the second moment.
        eps_root: added under the root.
        weight_decay: decoupled weight decay (then ``update`` needs ``params``).
        centered: subtract the squared running mean of the gradient.
        steps_before_using_centered: steps before centering starts.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its state is anyoptim's state dict.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.laprop(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, tx.init(params))
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.10000001,  0.10000001], dtype=float32)
    """
    opt = LaProp(learning_rate, betas=(b1, b2), eps=eps, eps_root=eps_root,
                 weight_decay=weight_decay, centered=centered,
                 steps_before_using_centered=steps_before_using_centered)
    return _run("laprop", opt, _no_decay(weight_decay))


def adam_atan2(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.99,
    a: float = 1.27,
    b: float = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-atan2, optax-style (optax has none): :class:`anyoptim.AdamAtan2`'s maths.

    The update :math:`-\eta\, a \operatorname{atan2}(\hat m, b \sqrt{\hat v})`, with
    decoupled weight decay :math:`-\eta \lambda p`; no :math:`\epsilon`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        a: scale of the update (> 0).
        b: scale of the root of the second moment (> 0).
        weight_decay: decoupled weight decay (then ``update`` needs ``params``).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its state is anyoptim's state dict.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.adam_atan2(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, tx.init(params))
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.09974558,  0.09974558], dtype=float32)
    """
    opt = AdamAtan2(learning_rate, betas=(b1, b2), weight_decay=weight_decay, a=a, b=b)
    return _run("adam_atan2", opt, _no_decay(weight_decay))


def stable_adamw(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> optax.GradientTransformationExtraArgs:
    r"""StableAdamW, optax-style (optax has none): :class:`anyoptim.StableAdamW`'s maths.

    AdamW with bias-free averages whose learning rate is divided, per tensor, by
    :math:`\max(1, \mathrm{RMS}(g^2 / v))` (``pytorch_optimizer.StableAdamW``'s defaults).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator.
        weight_decay: decoupled weight decay (when not 0, ``update`` needs ``params``).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its state is anyoptim's state dict.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.stable_adamw(0.1, weight_decay=0.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, tx.init(params))
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.1,  0.1], dtype=float32)
    """
    opt = StableAdamW(learning_rate, betas=(b1, b2), eps=eps, weight_decay=weight_decay)
    return _run("stable_adamw", opt, _no_decay(weight_decay))
