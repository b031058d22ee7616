"""optax-named factories for schedule-free AdamW and SGD (``optax.contrib``'s signatures).

Each factory maps ``optax.contrib.schedule_free_*``'s arguments onto
:class:`anyoptim.ScheduleFreeAdamW` / :class:`anyoptim.ScheduleFreeSGD` with
``convention="optax"`` and runs it through :func:`from_optimizer`: there is no second copy of
the maths. :func:`schedule_free_eval_params` gives the evaluation point from the state.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from ..optimizers import ScheduleFreeAdamW, ScheduleFreeSGD
from ._common import _flatten
from ._convert import _lookup, _paths, from_optimizer

__all__ = ["schedule_free_adamw", "schedule_free_eval_params", "schedule_free_sgd"]


def _options(name: str, learning_rate: Any, warmup_steps: Any, state_dtype: Any) -> int:
    if state_dtype is not None:
        raise ValueError(
            f"anyoptim.optax.{name}: state_dtype={state_dtype!r} is not supported: anyoptim "
            "keeps z in the parameters' dtype. Drop the argument (or cast the parameters)."
        )
    if warmup_steps is None:
        return 0
    if callable(learning_rate):
        raise ValueError(
            f"anyoptim.optax.{name}: warmup_steps={warmup_steps!r} needs a number as "
            "learning_rate (the warmup is built on it); pass a schedule with its own warmup "
            "and warmup_steps=None instead."
        )
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
        raise ValueError(
            f"anyoptim.optax.{name}: warmup_steps should be a positive int or None, "
            f"{warmup_steps!r} was provided instead."
        )
    return warmup_steps


def schedule_free_adamw(
    learning_rate: Any = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free AdamW with ``optax.contrib.schedule_free_adamw``'s signature, defaults
    and maths (:class:`anyoptim.ScheduleFreeAdamW` with ``convention="optax"``).

    The parameters passed to ``update`` are the training point :math:`y`; evaluate at
    :func:`schedule_free_eval_params`. ``update`` needs ``params``.

    Args:
        learning_rate: a number or an optax schedule of the update count (from 0).
        warmup_steps: linear warmup from 0 (``optax.warmup_constant_schedule``), or None.
        b1: interpolation :math:`\beta_1 > 0`.
        b2: decay of the second moment.
        eps: added outside the root.
        weight_decay: :math:`\lambda`, at :math:`y`.
        weight_lr_power: power of the max learning rate in the averaging weights.
        state_dtype: must be None.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.schedule_free_adamw(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        >>> params = optax.apply_updates(params, updates)
        >>> round(float(anyoptim.optax.schedule_free_eval_params(state, params)["w"][0]), 4)
        -0.1
    """
    warmup = _options("schedule_free_adamw", learning_rate, warmup_steps, state_dtype)
    opt = ScheduleFreeAdamW(learning_rate, betas=(b1, b2), eps=eps, weight_decay=weight_decay,
                            warmup_steps=warmup, weight_lr_power=weight_lr_power,
                            convention="optax")
    return from_optimizer(opt)


def schedule_free_sgd(
    learning_rate: Any = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free SGD with ``optax.contrib.schedule_free_sgd``'s signature, defaults and
    maths (:class:`anyoptim.ScheduleFreeSGD` with ``convention="optax"``).

    Args:
        learning_rate: a number or an optax schedule of the update count (from 0).
        warmup_steps: linear warmup from 0, or None.
        b1: interpolation :math:`\beta_1 \in (0, 1)`.
        weight_decay: :math:`\lambda` added to the gradient at :math:`y`, or None.
        weight_lr_power: power of the max learning rate in the averaging weights.
        state_dtype: must be None.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim.optax
        >>> tx = anyoptim.optax.schedule_free_sgd(0.5)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([-0.5, -0.5], dtype=float32)
    """
    warmup = _options("schedule_free_sgd", learning_rate, warmup_steps, state_dtype)
    opt = ScheduleFreeSGD(learning_rate, momentum=b1,
                          weight_decay=0.0 if weight_decay is None else weight_decay,
                          warmup_steps=warmup, weight_lr_power=weight_lr_power,
                          convention="optax")
    return from_optimizer(opt)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    r"""The evaluation point :math:`x = (y - (1-\beta_1) z)/\beta_1` for the training point
    ``params``, from the state of :func:`schedule_free_adamw` / :func:`schedule_free_sgd`
    (``optax.contrib.schedule_free_eval_params``'s form)."""
    if not isinstance(state, dict) or "b1" not in state or "weight_sum" not in state:
        raise ValueError(
            "anyoptim.optax.schedule_free_eval_params requires the state of "
            "anyoptim.optax.schedule_free_adamw or schedule_free_sgd as input."
        )
    b1 = state["b1"]
    leaves, treedef = _flatten(params)
    out: list[Any] = []
    for path, y in zip(_paths(params, "schedule_free_eval_params"), leaves):
        if y is None:
            out.append(None)
            continue
        z = _lookup(state, path)["z"]
        out.append(((y - (1.0 - b1) * z) / b1).astype(y.dtype))
    return jax.tree.unflatten(treedef, out)
