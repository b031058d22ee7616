"""Shared pieces of the optax front-end: its state type, argument checks, masks and the builder that turns an anyoptim rule into an optax transformation."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._backend import library_name
from .._backend._execute import run_elementwise
from .._backend._rules import Elementwise, static

ScalarOrSchedule = Any  # a number, a 0-d array or an optax schedule ``count -> value``
MaskOrFn = Any  # None, a tree of bools (or a prefix of one) or a function of the updates


class State(NamedTuple):
    """The state of every factory's transformation.

    Attributes:
        count: the number of updates made so far (int32, as in optax); learning-rate and
            weight-decay schedules are evaluated at ``count``, bias corrections use
            ``count + 1``.
        moments: one tree per state entry (for example ``"mu"`` and ``"nu"`` for Adam),
            each with the structure of the parameters.
    """

    count: Any
    moments: dict[str, Any]


# ----------------------------------------------------------------------------- helpers
def _is_none(x: Any) -> bool:
    return x is None


def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """Leaves (``None`` kept as a leaf, so trees with holes line up) and the treedef."""
    return jax.tree.flatten(tree, is_leaf=_is_none)


@functools.lru_cache(maxsize=1)
def _no_params_message() -> str:
    """optax's own message for a transformation that needs ``params`` but got None."""
    try:
        optax.add_decayed_weights(1.0).update({}, optax.EmptyState(), None)
    except ValueError as err:
        return str(err)
    return (  # pragma: no cover - optax always raises above
        "You are using a transformation that requires the current value of parameters, but "
        "you are not passing `params` when calling `update`."
    )


def _require_params(params: Any) -> None:
    if params is None:
        raise ValueError(_no_params_message())


def _check(name: str, param: str, value: Any, ok: Callable[[Any], bool], rule: str,
           hint: str = "") -> None:
    """A clear error for a concrete bad value; arrays (possibly traced, e.g. under
    ``optax.inject_hyperparams``) are not looked at."""
    v = static(value)
    if v is not None and not ok(v):
        message = f"anyoptim.optax.{name}: {param} should be {rule}, {value!r} was provided instead."
        raise ValueError(message + (" " + hint if hint else ""))


def _check_number(name: str, param: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if callable(value) or isinstance(value, bool) or not (
        isinstance(value, (int, float, np.number)) or library_name(value) is not None
    ):
        raise TypeError(
            f"anyoptim.optax.{name}: {param} should be a number or a 0-d array, got "
            f"{type(value).__name__} ({value!r:.60})."
        )


def _check_schedule(name: str, param: str, value: Any, optional: bool = False) -> None:
    if value is None:
        if optional:
            return
        raise TypeError(
            f"anyoptim.optax.{name}: {param} is required (a number, a 0-d array or an optax "
            "schedule such as optax.cosine_decay_schedule(...))."
        )
    if not callable(value):
        _check_number(name, param, value)
        _check(name, param, value, lambda v: v >= 0, ">= 0")


def _check_beta(name: str, param: str, value: Any) -> None:
    _check_number(name, param, value)
    _check(name, param, value, lambda v: 0 <= v < 1, "in [0, 1)",
           "It is the decay rate of a moving average; typical values are 0.9 and 0.999.")


def _check_static_int(name: str, param: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"anyoptim.optax.{name}: {param} should be a Python int (it decides the shapes or "
            f"the number of operations of the update), got {type(value).__name__} "
            f"({value!r:.60}). Under optax.inject_hyperparams pass "
            f"static_args=({param!r},)."
        )
    _check(name, param, int(value), lambda v: v >= minimum, f">= {minimum}")
    return int(value)


def _canonical_dtype(dtype: Any) -> Any:
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _fill(params: Any, value: Any = 0, dtype: Any = None) -> Any:
    """A tree like ``params`` filled with ``value`` (``None`` leaves stay None)."""
    return jax.tree.map(
        lambda p: None if p is None else jnp.full_like(p, value, dtype=dtype), params,
        is_leaf=_is_none)


def _decay_flags(name: str, mask: MaskOrFn, updates: Any, n: int) -> list[bool]:
    """Per leaf (in :func:`_flatten` order): does the weight decay apply?"""
    if mask is None:
        return [True] * n
    tree = mask(updates) if callable(mask) else mask

    def broadcast(m: Any, sub: Any) -> Any:
        if isinstance(m, (bool, int, np.bool_, np.integer)):
            flag = bool(m)
        else:
            raise TypeError(
                f"anyoptim.optax.{name}: the weight-decay mask has a {type(m).__name__} leaf "
                f"({m!r:.60}); mask leaves must be Python bools (True: decay this subtree), "
                "known when the update is traced."
            )
        return jax.tree.map(lambda _: flag, sub, is_leaf=_is_none)

    try:
        flags = jax.tree.leaves(jax.tree.map(broadcast, tree, updates, is_leaf=_is_none))
    except ValueError as err:
        raise ValueError(
            f"anyoptim.optax.{name}: the weight-decay mask should have the structure of the "
            f"parameters (or of a prefix of it): {err}"
        ) from None
    if len(flags) != n:  # pragma: no cover - guarded by the tree map above
        raise ValueError(f"anyoptim.optax.{name}: the weight-decay mask does not match the updates")
    return flags


def _mismatch(name: str, what: str, got: int, n: int) -> ValueError:
    return ValueError(
        f"anyoptim.optax.{name}: the updates have {n} leaves but {what} has {got}; pass the "
        "state that this transformation's init made for these parameters (and parameters "
        "with the structure of the updates)."
    )


def _scale(u: Any, kind: str, step: Any) -> Any:
    """optax's ``scale_by_learning_rate``: ``step * u`` (a constant), or the schedule's value
    cast to the update's dtype times ``u``; ``kind == "none"`` leaves ``u`` as it is."""
    if kind == "none":
        return u
    if kind == "schedule":
        return jnp.asarray(step, dtype=u.dtype) * u
    return step * u


def _lr_entries(learning_rate: Any, count: Any, sign: int = -1) -> tuple[str, Any]:
    if learning_rate is None:
        return "none", None
    if callable(learning_rate):
        return "schedule", sign * learning_rate(count)
    return "constant", sign * learning_rate


def _wd_entries(weight_decay: Any, count: Any) -> tuple[bool, Any]:
    """(is weight decay applied at all, its value this update). A Python zero skips it, as
    optax's ``add_decayed_weights`` does."""
    if weight_decay is None:
        return False, None
    if callable(weight_decay):
        return True, weight_decay(count)
    if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
        return False, None
    return True, weight_decay


# ----------------------------------------------------------------------------- the builder
def _elementwise(
    name: str,
    rule: Elementwise,
    h: dict[str, Any],
    init_values: Mapping[str, tuple[Any, Any]],
    *,
    learning_rate: Any,
    weight_decay: Any = None,
    mask: MaskOrFn = None,
    needs_params: bool = False,
    lr_sign: int = -1,
) -> optax.GradientTransformationExtraArgs:
    """A transformation running the optax-form ``rule`` over the flattened trees.

    ``rule.element(p, g, *state, (s,))`` returns ``(update, *new_state)``; ``s`` is the dict
    of hyperparameters ``h`` completed per update with ``count``, ``count_inc``, ``lr_kind``
    and ``lr`` (the signed learning rate) and ``wd`` (the weight decay this update). The
    weight decay's on/off switch is ``h["decay"]`` (per group of leaves, after the mask).
    ``init_values`` maps each state name to ``(fill value, dtype or None)``.
    """

    def init(params: Any) -> State:
        moments = {key: _fill(params, value, dtype) for key, (value, dtype) in init_values.items()}
        return State(count=jnp.zeros([], jnp.int32), moments=moments)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> tuple[Any, State]:
        del extra_args
        if needs_params:
            _require_params(params)
        g_leaves, g_def = _flatten(updates)
        n = len(g_leaves)
        if params is None:
            p_leaves: list[Any] = [None] * n
        else:
            p_leaves = _flatten(params)[0]
            if len(p_leaves) != n:
                raise _mismatch(name, "the parameters", len(p_leaves), n)
        moments = state.moments
        flat = {}
        for key in rule.state:
            leaves, treedef = _flatten(moments[key])
            if len(leaves) != n:
                raise _mismatch(name, f"the state entry {key!r}", len(leaves), n)
            flat[key] = (leaves, treedef)
        count = state.count
        count_inc = optax.safe_increment(count)
        lr_kind, lr = _lr_entries(learning_rate, count, lr_sign)
        use_wd, wd = _wd_entries(weight_decay, count)
        base = {**h, "count": count, "count_inc": count_inc, "lr_kind": lr_kind, "lr": lr,
                "wd": wd}
        flags = _decay_flags(name, mask, updates, n) if use_wd else [False] * n
        new_updates: list[Any] = list(g_leaves)
        new_moments = {key: list(leaves) for key, (leaves, _) in flat.items()}
        for decay in (True, False):
            index = [i for i in range(n) if flags[i] is decay and g_leaves[i] is not None]
            if not index:
                continue
            leaves = [(g_leaves[i], p_leaves[i], {k: flat[k][0][i] for k in rule.state})
                      for i in index]
            out, states = run_elementwise(rule, jnp, {**base, "_decayed": decay}, count_inc,
                                          leaves, False, fused=False)
            assert states is not None
            for i, u, values in zip(index, out, states):
                new_updates[i] = u
                for key, value in zip(rule.state, values):
                    old = flat[key][0][i]
                    new_moments[key][i] = value if value.dtype == old.dtype else value.astype(old.dtype)
        new_state = State(
            count=count_inc,
            moments={key: flat[key][1].unflatten(new_moments[key]) for key in rule.state},
        )
        return g_def.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _flags(h: Mapping[str, Any]) -> tuple[Any, ...]:
    return (h["lr_kind"], bool(h["_decayed"]), *h.get("switches", ()))


def _scalars(xp: Any, h: Mapping[str, Any], step: Any, dtype: Any) -> tuple[Any, ...]:
    # one mapping, passed untouched by the executor (only arrays are cast to the parameters'
    # dtype there; optax's own casts are applied inside the element functions instead). The
    # bias corrections are computed once per update, shared by every leaf, as optax does:
    # XLA then compiles the divisions by them the same way in both.
    corrections = {}
    for key, decay in h.get("corrected", ()):
        corrections[key] = 1 - decay**step
        if key == "bc1" and h.get("nesterov"):
            corrections["bc1_next"] = 1 - decay ** optax.safe_increment(step)
    return ({**h, **corrections},)
