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

from ..optimizers import ADOPT, LAMB, LARS, Adan, AdEMAMix, SignSGD, Signum, SimplifiedAdEMAMix
from ..optimizers._base import Optimizer
from ._common import _decay_flags, _flatten
from ._convert import _paths, from_optimizer

__all__ = ["adan", "ademamix", "adopt", "lamb", "lars", "sign_sgd", "signum", "simplified_ademamix"]


def _zero_like(x: Any) -> Any:
    return None if x is None else jnp.zeros_like(x)


def _run(name: str, optimizer: Optimizer, direction: bool, mask: Any = None,
         trust_mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """``from_optimizer(optimizer)``; with ``direction``, its updates from zero parameters;
    with ``mask`` (optax's weight-decay mask), no weight decay on the leaves it excludes;
    with ``trust_mask`` (LARS), no trust ratio on the leaves it excludes."""
    masks = [(m, override) for m, override in ((mask, {"weight_decay": 0.0}),
                                               (trust_mask, {"trust_ratio": False}))
             if m is not None and m is not True]
    if not masks:
        inner = from_optimizer(optimizer)
        build: Callable[[Any], Any] = lambda tree: inner  # noqa: E731
    else:
        cache: dict[Any, Any] = {}

        def build(tree: Any) -> Any:
            treedef = jax.tree.structure(tree, is_leaf=_is_none)
            found = cache.get(treedef)
            if found is None:
                n = len(_flatten(tree)[0])
                paths = [".".join(map(str, p)) for p in _paths(tree, name)]
                off: dict[str, dict[str, Any]] = {}
                for m, override in masks:
                    for path, flag in zip(paths, _decay_flags(name, m, tree, n)):
                        if not flag:
                            off.setdefault(path, {}).update(override)

                def hyper(path: str) -> dict[str, Any] | None:
                    return off.get(path)

                found = cache[treedef] = from_optimizer(optimizer, hyper)
            return found

    def init(params: Any) -> Any:
        return build(params).init(params)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> Any:
        if direction:
            params = jax.tree.map(_zero_like, updates, is_leaf=_is_none)
        return build(updates).update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init, update)


def _is_none(x: Any) -> bool:
    return x is None


def _no_decay(weight_decay: Any) -> bool:
    return isinstance(weight_decay, (int, float)) and weight_decay == 0


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
    return _run("adopt", ADOPT(learning_rate, betas=(b1, b2), eps=eps, clip=clip,
                               clip_step_offset=1, nesterov=nesterov), True)


def ademamix(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: Any = 0.9999,
    alpha: Any = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdEMAMix with ``optax.contrib.ademamix``'s signature, defaults and maths.

    :class:`anyoptim.AdEMAMix` (decoupled weight decay, which is optax's
    :math:`-\eta(u + \lambda p)`), run by :func:`from_optimizer`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the fast average.
        b2: decay of the second moment.
        b3: decay of the slow average, or a schedule of the update count.
        alpha: weight of the slow average, or a schedule of the update count.
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        mu_dtype: must be None (moments keep the parameters' dtype).
        weight_decay: :math:`\lambda`.
        mask: which leaves are decayed (a tree of bools, a prefix of one, or a function of
            the parameters returning one).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` (``params`` needed with weight decay).

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.ademamix(0.01)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params))
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.010005, -0.010005], dtype=float32)
    """
    _no_mu_dtype("ademamix", mu_dtype)
    opt = AdEMAMix(learning_rate, betas=(b1, b2, b3), alpha=alpha, eps=eps, eps_root=eps_root,
                   weight_decay=weight_decay)
    return _run("ademamix", opt, _no_decay(weight_decay), mask)


def simplified_ademamix(
    learning_rate: Any,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: Any = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Simplified AdEMAMix with ``optax.contrib.simplified_ademamix``'s signature, defaults
    and maths (:class:`anyoptim.SimplifiedAdEMAMix`, run by :func:`from_optimizer`).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the accumulated momentum.
        b2: decay of the second moment.
        alpha: weight of the current gradient, or a schedule of the update count.
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        weight_decay: :math:`\lambda`.
        mask: which leaves are decayed.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` (``params`` needed with weight decay).

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.simplified_ademamix(0.01)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params))
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.01, -0.01], dtype=float32)
    """
    opt = SimplifiedAdEMAMix(learning_rate, betas=(b1, b2), alpha=alpha, eps=eps,
                             eps_root=eps_root, weight_decay=weight_decay)
    return _run("simplified_ademamix", opt, _no_decay(weight_decay), mask)


def adan(
    learning_rate: Any,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adan with ``optax.adan``'s signature, defaults and maths.

    :class:`anyoptim.Adan` with optax's weight of the gradient difference
    (``diff_weight="optax"``: :math:`1 - \beta_2` where the paper has :math:`\beta_2`) and
    AdamW-style decay (``no_prox=True``), run by :func:`from_optimizer`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the gradient average.
        b2: decay of the gradient-difference average.
        b3: decay of the second moment.
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        weight_decay: :math:`\lambda`.
        mask: which leaves are decayed.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` (``params`` needed with weight decay).

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.adan(0.01)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params))
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.01, -0.01], dtype=float32)
    """
    opt = Adan(learning_rate, betas=(b1, b2, b3), eps=eps, eps_root=eps_root,
               weight_decay=weight_decay, no_prox=True, diff_weight="optax")
    return _run("adan", opt, _no_decay(weight_decay), mask)


def sign_sgd(learning_rate: Any) -> optax.GradientTransformationExtraArgs:
    r"""signSGD with ``optax.sign_sgd``'s signature and maths (:class:`anyoptim.SignSGD`):
    the update is :math:`-\eta\, \mathrm{sign}(g)`.

    Example:
        >>> import jax.numpy as jnp, anyoptim.optax
        >>> tx = anyoptim.optax.sign_sgd(0.125)
        >>> params = {"w": jnp.zeros(3)}
        >>> tx.update({"w": jnp.array([3.0, -0.5, 0.0])}, tx.init(params))[0]["w"]
        Array([-0.125,  0.125,  0.   ], dtype=float32)
    """
    return _run("sign_sgd", SignSGD(learning_rate), True)


def signum(learning_rate: Any, beta: float = 0.9,
           accumulator_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
    r"""Signum with ``optax.signum``'s signature and maths (:class:`anyoptim.Signum`): the
    update is :math:`-\eta\, \mathrm{sign}(m)`, :math:`m \leftarrow \beta m + (1-\beta) g`.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        beta: decay of the average.
        accumulator_dtype: must be None (the average keeps the parameters' dtype).

    Example:
        >>> import jax.numpy as jnp, anyoptim.optax
        >>> tx = anyoptim.optax.signum(0.125)
        >>> params = {"w": jnp.zeros(3)}
        >>> tx.update({"w": jnp.array([3.0, -0.5, 0.0])}, tx.init(params))[0]["w"]
        Array([-0.125,  0.125,  0.   ], dtype=float32)
    """
    _no_mu_dtype("signum", accumulator_dtype)
    return _run("signum", Signum(learning_rate, momentum=beta), True)


def lamb(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LAMB with ``optax.lamb``'s signature, defaults and maths (:class:`anyoptim.LAMB`,
    per-tensor trust ratios, run by :func:`from_optimizer`).

    Args:
        learning_rate: a number or an optax schedule of the update count.
        b1: decay of the first moment.
        b2: decay of the second moment.
        eps: added to the denominator after the square root.
        eps_root: added inside the square root.
        weight_decay: :math:`\lambda`.
        mask: which leaves are decayed (the trust ratio applies to every leaf, as in optax).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.lamb(0.1)
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([2.6464467, 3.6464467], dtype=float32)
    """
    opt = LAMB(learning_rate, betas=(b1, b2), eps=eps, eps_root=eps_root,
               weight_decay=weight_decay)
    return _run("lamb", opt, False, mask)


def lars(
    learning_rate: Any,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Any = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""LARS with ``optax.lars``'s signature, defaults and maths (:class:`anyoptim.LARS`, run by
    :func:`from_optimizer`); the masks are trees of bools (or prefixes, or functions of the
    parameters) as in optax.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.lars(0.5, trust_coefficient=0.5)
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([2.1161165, 3.1161165], dtype=float32)
    """
    opt = LARS(learning_rate, momentum=momentum, weight_decay=weight_decay,
               trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov)
    return _run("lars", opt, False, weight_decay_mask, trust_ratio_mask)
