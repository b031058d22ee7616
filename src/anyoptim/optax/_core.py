"""The optax front-end's machinery and its first optimizers (re-exported by ``anyoptim.optax``)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._backend import library_name
from .._backend._execute import run_elementwise
from .._backend._rules import Elementwise, static
from ..optimizers import Optimizer

__all__ = [
    "State",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "from_anyoptim_state",
    "from_optimizer",
    "lion",
    "muon",
    "nadam",
    "nadamw",
    "rmsprop",
    "sgd",
    "to_anyoptim_state",
]

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


def _adam_like(name: str, learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any,
               mu_dtype: Any, nesterov: bool, weight_decay: Any,
               mask: MaskOrFn) -> optax.GradientTransformationExtraArgs:
    _check_schedule(name, "learning_rate", learning_rate)
    _check_beta(name, "b1", b1)
    _check_beta(name, "b2", b2)
    for param, value in (("eps", eps), ("eps_root", eps_root)):
        _check_number(name, param, value)
        _check(name, param, value, lambda v: v >= 0, ">= 0")
    if weight_decay is not None:
        _check_schedule(name, "weight_decay", weight_decay)
    mu_dtype = _canonical_dtype(mu_dtype)
    h = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root, "switches": (bool(nesterov),),
         "nesterov": bool(nesterov), "corrected": (("bc1", b1), ("bc2", b2))}
    return _elementwise(name, _ADAM, h, {"mu": (0, mu_dtype), "nu": (0, None)},
                        learning_rate=learning_rate, weight_decay=weight_decay, mask=mask,
                        needs_params=weight_decay is not None)


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
    _check_schedule(name, "learning_rate", learning_rate)
    _check_beta(name, "b1", b1)
    _check_beta(name, "b2", b2)
    _check_number(name, "eps", eps)
    _check(name, "eps", eps, lambda v: v >= 0, ">= 0")
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


# ----------------------------------------------------------------------------- per-tensor rules
def _per_tensor(
    name: str,
    keys: Sequence[str],
    init_leaf: Callable[[Any], dict[str, Any]],
    update_leaf: Callable[[Any, Any, dict[str, Any], dict[str, Any]], tuple[Any, dict[str, Any]]],
    scalars: Callable[[Any], dict[str, Any]],
    *,
    mask: MaskOrFn = None,
    decays: bool = False,
    needs_params: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """A transformation for rules that look at whole tensors (factored moments, Newton-Schulz).

    ``init_leaf(p)`` gives a leaf's state arrays, ``update_leaf(g, p, state, s)`` returns
    ``(update, new state)`` with ``s = scalars(count)`` plus ``"decay"`` (the mask's verdict).
    """

    def init(params: Any) -> State:
        leaves, treedef = _flatten(params)
        per_leaf = [None if p is None else init_leaf(p) for p in leaves]
        moments = {key: treedef.unflatten([None if s is None else s[key] for s in per_leaf])
                   for key in keys}
        return State(count=jnp.zeros([], jnp.int32), moments=moments)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> tuple[Any, State]:
        del extra_args
        if needs_params:
            _require_params(params)
        g_leaves, g_def = _flatten(updates)
        n = len(g_leaves)
        p_leaves = [None] * n if params is None else _flatten(params)[0]
        if len(p_leaves) != n:
            raise _mismatch(name, "the parameters", len(p_leaves), n)
        flat = {}
        for key in keys:
            leaves, treedef = _flatten(state.moments[key])
            if len(leaves) != n:
                raise _mismatch(name, f"the state entry {key!r}", len(leaves), n)
            flat[key] = (leaves, treedef)
        s = scalars(state.count)
        flags = _decay_flags(name, mask, updates, n) if decays else [False] * n
        new_updates = list(g_leaves)
        new_moments = {key: list(leaves) for key, (leaves, _) in flat.items()}
        for i, (g, p) in enumerate(zip(g_leaves, p_leaves)):
            if g is None:
                continue
            old = {key: flat[key][0][i] for key in keys}
            u, new = update_leaf(g, p, old, {**s, "decay": flags[i]})
            new_updates[i] = u
            for key in keys:
                value = new[key]
                new_moments[key][i] = value.astype(old[key].dtype)
        new_state = State(
            count=optax.safe_increment(state.count),
            moments={key: flat[key][1].unflatten(new_moments[key]) for key in keys},
        )
        return g_def.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _factored_dims(shape: tuple[int, ...], factored: bool, min_dim: int) -> tuple[int, int] | None:
    """The two largest axes to factor over (optax's choice, ties included), or None."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim:
        return None
    return int(order[-2]), int(order[-1])


def _safe_rms(x: Any, floor: Any) -> Any:
    rms = jnp.sqrt(jnp.mean(x * x))
    x = jnp.where(rms <= floor, jnp.ones_like(x), x)
    return jnp.where(rms <= floor, floor, jnp.sqrt(jnp.mean(x * x)))


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Any = 0.8,
    decay_offset: Any = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Any = 1.0,
    momentum: Any = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: Any = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adafactor with optax's maths and defaults (``optax.adafactor``).

    The second moment of a tensor is factored over its two largest axes when the second
    largest has at least ``min_dim_size_to_factor`` entries (anyoptim's ``Adafactor``, like
    MLX's, factors every tensor of two or more dimensions), with decay
    :math:`1 - (t+1)^{-c}`; the update is clipped to RMS ``clipping_threshold``, scaled by
    ``learning_rate`` and by the parameter's RMS (at least 1e-3), averaged with ``momentum``,
    given the weight decay, and negated.

    Args:
        learning_rate: a number, an optax schedule, or None (no scaling).
        min_dim_size_to_factor: a Python int (it decides the state's shapes).
        decay_rate: :math:`c` of the second-moment decay.
        decay_offset: subtracted from the step in that decay (for fine-tuning).
        multiply_by_parameter_scale: scale by the parameters' RMS.
        clipping_threshold: RMS clipping threshold, or None.
        momentum: decay of an average of the updates, or None.
        dtype_momentum: dtype of that average.
        weight_decay_rate: weight decay added to the update (a number or a schedule), or None.
        eps: added to the squared gradients.
        factored: allow factoring.
        weight_decay_mask: which leaves are decayed.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its moments are ``"v_row"``,
        ``"v_col"``, ``"v"`` (placeholders of shape ``(1,)`` where unused, as in optax) and
        ``"ema"`` with momentum.
    """
    name = "adafactor"
    _check_schedule(name, "learning_rate", learning_rate, optional=True)
    min_dim = _check_static_int(name, "min_dim_size_to_factor", min_dim_size_to_factor, 0)
    _check_number(name, "decay_rate", decay_rate)
    _check_number(name, "clipping_threshold", clipping_threshold, optional=True)
    _check_number(name, "momentum", momentum, optional=True)
    _check_schedule(name, "weight_decay_rate", weight_decay_rate, optional=True)
    _check_number(name, "eps", eps)
    use_momentum = momentum is not None
    keys = ("v_row", "v_col", "v", *(("ema",) if use_momentum else ()))
    ema_dtype = _canonical_dtype(dtype_momentum)

    def init_leaf(p: Any) -> dict[str, Any]:
        dims = _factored_dims(p.shape, factored, min_dim)
        one = jnp.zeros((1,), dtype=p.dtype)
        if dims is not None:
            d1, d0 = dims
            row_shape = p.shape[:d0] + p.shape[d0 + 1:]
            col_shape = p.shape[:d1] + p.shape[d1 + 1:]
            out = {"v_row": jnp.zeros(row_shape, p.dtype), "v_col": jnp.zeros(col_shape, p.dtype),
                   "v": one}
        else:
            out = {"v_row": one, "v_col": one, "v": jnp.zeros_like(p)}
        if use_momentum:
            out["ema"] = jnp.zeros_like(p, dtype=ema_dtype)
        return out

    def scalars(count: Any) -> dict[str, Any]:
        t = jnp.array(count - decay_offset + 1, jnp.float32)
        lr_kind, lr = _lr_entries(learning_rate, count, sign=1)
        use_wd, wd = _wd_entries(weight_decay_rate, count)
        return {"beta": 1.0 - t ** (-decay_rate), "lr_kind": lr_kind, "lr": lr, "use_wd": use_wd,
                "wd": wd}

    def update_leaf(g: Any, p: Any, state: dict[str, Any], s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        beta = s["beta"]
        dtype = p.dtype
        one = jnp.zeros((1,), dtype=dtype)
        new = dict(state)
        dims = _factored_dims(p.shape, factored, min_dim)
        squared = g * g + eps
        if dims is not None:
            d1, d0 = dims
            row = (beta * state["v_row"] + (1.0 - beta) * jnp.mean(squared, axis=d0)).astype(dtype)
            col = (beta * state["v_col"] + (1.0 - beta) * jnp.mean(squared, axis=d1)).astype(dtype)
            reduced = d1 - 1 if d1 > d0 else d1
            row_factor = (row / jnp.mean(row, axis=reduced, keepdims=True)) ** -0.5
            col_factor = col ** -0.5
            u = g * jnp.expand_dims(row_factor, axis=d0) * jnp.expand_dims(col_factor, axis=d1)
            new.update(v_row=row, v_col=col, v=one)
        else:
            v = (beta * state["v"] + (1.0 - beta) * squared).astype(dtype)
            u = g * v ** -0.5
            new.update(v_row=one, v_col=one, v=v)
        if clipping_threshold is not None:
            u = u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(u * u)) / clipping_threshold)
        u = _scale(u, s["lr_kind"], s["lr"])
        if multiply_by_parameter_scale:
            u = u * _safe_rms(p, 1e-3)
        if use_momentum:
            u = (1 - momentum) * u + momentum * state["ema"]
            new["ema"] = u
        if s["use_wd"] and s["decay"]:
            u = u + s["wd"] * p
        return -1 * u, new

    needs = multiply_by_parameter_scale or weight_decay_rate is not None
    return _per_tensor(name, keys, init_leaf, update_leaf, scalars, mask=weight_decay_mask,
                       decays=weight_decay_rate is not None, needs_params=needs)


# Coefficients of the quintic Newton-Schulz iteration (Jordan et al., 2024), as in anyoptim.Muon.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: tuple[float, float, float] = _NS_COEFFS,
    ns_steps: int = 5,
    beta: Any = 0.95,
    eps: float = 1e-7,
    weight_decay: Any = 0.01,
    weight_decay_mask: MaskOrFn = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""anyoptim's (MLX's) Muon with ``optax.contrib.muon``-style argument names.

    This is **not** ``optax.contrib.muon``'s algorithm: like ``anyoptim.Muon`` it
    orthogonalises every tensor with two or more dimensions (reshaped to ``(S[0], -1)``),
    scales the step by :math:`\sqrt{\max(1, S_{-2}/S_{-1})}` (weights stored ``(out, in)``, as
    in torch and MLX), gives vectors plain momentum SGD, and adds a **coupled** weight decay
    (default 0.01) to the gradient. optax's orthogonalises 2-D parameters only, sends the
    others through AdamW and decays decoupled (default 0). The update is the direction
    itself, :math:`-\eta \cdot \mathrm{NS}(u)`, so ``optax.apply_updates`` gives exactly
    ``anyoptim.Muon``'s new parameters (constant learning rate).

    .. math::

        g_t &\leftarrow g_t + \lambda p_t, \quad v_t = \beta v_{t-1} + (1-\beta) g_t \\
        u_t &= -\eta \sqrt{\max(1, S_{-2}/S_{-1})}\; \mathrm{NS}_k((1-\beta) g_t + \beta v_t)

    Args:
        learning_rate: a number or an optax schedule of the update count.
        ns_coeffs: the three coefficients of the Newton-Schulz polynomial.
        ns_steps: the number of Newton-Schulz iterations (a Python int).
        beta: the momentum :math:`\beta`, in [0, 1).
        eps: added to the Frobenius norm before the iteration.
        weight_decay: coupled weight decay :math:`\lambda` added to the gradient.
        weight_decay_mask: which leaves are decayed.
        mu_dtype: dtype of the momentum buffer (default: the parameters').
        nesterov: use Nesterov momentum (``(1-\beta) g + \beta v`` instead of ``v``).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    name = "muon"
    _check_schedule(name, "learning_rate", learning_rate)
    steps = _check_static_int(name, "ns_steps", ns_steps, 0)
    if len(tuple(ns_coeffs)) != 3:
        raise ValueError(
            f"anyoptim.optax.muon: ns_coeffs should be three numbers (a, b, c) of the "
            f"Newton-Schulz polynomial a·X + b·(XXᵀ)X + c·(XXᵀ)²X, {ns_coeffs!r} was provided "
            "instead."
        )
    a, b, c = ns_coeffs
    _check_beta(name, "beta", beta)
    _check_number(name, "weight_decay", weight_decay)
    mu_dtype = _canonical_dtype(mu_dtype)

    def orthogonalise(x: Any) -> Any:
        tall = x.shape[-2] > x.shape[-1]
        if tall:
            x = jnp.matrix_transpose(x)
        x = x / (jnp.sqrt(jnp.sum(jnp.square(x))) + eps)
        for _ in range(steps):
            gram = jnp.matmul(x, jnp.matrix_transpose(x))
            poly = b * gram + c * jnp.matmul(gram, gram)
            x = a * x + jnp.matmul(poly, x)
        return jnp.matrix_transpose(x) if tall else x

    def scalars(count: Any) -> dict[str, Any]:
        return {"lr": _lr_entries(learning_rate, count, sign=1)[1]}

    def update_leaf(g: Any, p: Any, state: dict[str, Any], s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if s["decay"]:
            g = g + weight_decay * p
        v = beta * state["v"] + (1 - beta) * g
        u = g * (1 - beta) + v * beta if nesterov else v
        lr = jnp.asarray(jnp.asarray(s["lr"], jnp.float32), u.dtype)
        if u.ndim >= 2:
            shape = tuple(u.shape)
            matrix = jnp.reshape(u, (shape[0], -1)) if len(shape) > 2 else u
            u = jnp.reshape(orthogonalise(matrix), shape)
            lr = lr * max(1, shape[-2] / shape[-1]) ** 0.5
        return -(lr * u), {"v": v}

    decays = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)
    return _per_tensor(name, ("v",), lambda p: {"v": jnp.zeros_like(p, dtype=mu_dtype)},
                       update_leaf, scalars, mask=weight_decay_mask, decays=decays)


# ----------------------------------------------------------------------------- from_optimizer
def _segment(key: Any) -> str | int:
    """A key-path entry as an anyoptim tree key: list positions stay ints, the rest strings."""
    if isinstance(key, jax.tree_util.SequenceKey):
        return int(key.idx)
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return str(key.name)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _paths(tree: Any, name: str) -> list[tuple[str | int, ...]]:
    """One anyoptim path per leaf of ``tree`` (``None`` leaves included), in flatten order.

    A trailing ``.value`` attribute (flax's ``Variable``) is dropped, so a tree of nnx
    Variables and the same tree of plain arrays get the same paths.
    """
    out = []
    for keypath, _ in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)[0]:
        keys = list(keypath)
        if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
            keys.pop()
        path = tuple(_segment(k) for k in keys)
        if not path:
            path = ("param",)
        elif isinstance(path[0], int):
            path = (str(path[0]), *path[1:])  # the top level of an anyoptim tree is a dict
        out.append(path)
    if len(set(out)) != len(out):
        seen: set[tuple[str | int, ...]] = set()
        for path in out:
            if path in seen:
                raise ValueError(
                    f"anyoptim.optax.{name}: two parameters get the same path "
                    f"{'.'.join(map(str, path))!r} (keys that differ only in type, such as 0 "
                    "and '0'); rename one of them."
                )
            seen.add(path)
    return out


def _build(paths: list[tuple[str | int, ...]], leaves: list[Any], name: str) -> dict[str, Any]:
    """The plain anyoptim tree (dicts with string keys, lists for sequences) of ``leaves``."""
    root: dict[Any, Any] = {}
    for path, leaf in zip(paths, leaves):
        if leaf is None:
            continue
        node = root
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise ValueError(
                    f"anyoptim.optax.{name}: the path {'.'.join(map(str, path))!r} goes through "
                    "another parameter"
                )
            node = child
        node[path[-1]] = leaf

    def finish(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node and all(isinstance(k, int) for k in node):
            items: list[Any] = [{} for _ in range(max(node) + 1)]
            for k, v in node.items():
                items[k] = finish(v)
            return items
        return {str(k): finish(v) for k, v in node.items()}

    return finish(root)


def _lookup(tree: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _fresh(optimizer: Optimizer) -> Optimizer:
    """A private copy of ``optimizer`` with its configuration and a state at step 0 (the
    learning rate and scheduled values kept, no per-parameter state)."""
    clone = copy.deepcopy(optimizer)
    subs = getattr(clone, "optimizers", None)
    if subs is not None:
        clone.optimizers = [_fresh(o) for o in subs]  # type: ignore[attr-defined]
        return clone
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, Optimizer):  # a wrapper (EMA, GradientAccumulation, ...)
        clone.optimizer = _fresh(inner)  # type: ignore[attr-defined]
        clone._state = {}
        return clone
    scalars = {k: v for k, v in optimizer.state.items() if library_name(v) is not None}
    scalars["step"] = np.zeros((), np.uint64)
    if "skipped_steps" in scalars:
        scalars["skipped_steps"] = np.zeros((), np.uint64)
    clone.state = scalars
    return clone


def _delta(new: Any, old: Any) -> Any:
    """``new - old``: in float32 for 16-bit parameters (exact there, so ``apply_updates``
    gives back ``new``), else in the parameters' dtype."""
    if jnp.dtype(old.dtype).itemsize == 2 and jnp.issubdtype(old.dtype, jnp.floating):
        return new.astype(jnp.float32) - old.astype(jnp.float32)
    return new - old


def _direction_form(optimizer: Optimizer, hyperparameters: Any) -> bool:
    """True when the optimizer's update is ``p - η·u`` with ``u`` independent of ``p`` (no
    weight decay, no parameter scaling), so that the step from zero parameters is ``-η·u``."""
    from ..optimizers import SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, Muon, RMSprop

    subs = getattr(optimizer, "optimizers", None)
    if subs is not None:
        return all(_direction_form(o, hyperparameters) for o in subs)
    if hyperparameters is not None and not isinstance(hyperparameters, Mapping):
        return False  # per-path overrides: not inspected, the general form is used
    kind = type(optimizer)
    if kind in (Adam, RMSprop, Adagrad, AdaDelta, Adamax):
        return True
    if kind not in (AdamW, SGD, Lion, Muon):
        return False
    h = {**optimizer.hyper(), **(hyperparameters or {})}
    decay = static(h.get("weight_decay"))
    if decay is None:
        return False
    return decay <= 0 if kind is Lion else decay == 0


def from_optimizer(optimizer: Optimizer, hyperparameters: Any = None) -> optax.GradientTransformationExtraArgs:
    """Any configured anyoptim optimizer as an optax transformation (MLX's maths).

    The optimizer's configuration (class, hyperparameters, schedules, ``MultiOptimizer``
    filters, ``skip_nonfinite``) is copied when this is called; the transformation never
    reads or writes ``optimizer.state``. ``init`` starts at step 0 with the optimizer's
    learning rate; ``update`` runs anyoptim's ``pure_step`` on the flattened trees and
    returns ``new - old`` (float32 for 16-bit parameters), so ``optax.apply_updates`` gives
    anyoptim's new parameters (bit for bit in bfloat16 and float16, and in float32 wherever
    ``new`` and ``old`` are within a factor of two of each other, i.e. for every step that
    does not move a value across or right up to zero).

    Wrappers work too (``from_optimizer(anyoptim.EMA(anyoptim.AdamW(1e-3), 0.999))``,
    ``GradientAccumulation``, the clipping guards, ``Lookahead``): their own entries sit
    beside ``"inner"`` in the state (an EMA's average is ``state["average"]``, by path).

    The state is anyoptim's state dict (``{"step", "learning_rate", <per-parameter dicts>}``)
    over the parameters' paths (``"layers.0.kernel"``: dict keys, attribute names and list
    positions, with flax's ``.value`` dropped); :func:`to_anyoptim_state` and
    :func:`from_anyoptim_state` convert it for ``anyoptim.save`` / ``anyoptim.load``.

    Args:
        optimizer: an anyoptim optimizer, e.g. ``anyoptim.AdamW(1e-3)``.
        hyperparameters: passed to ``pure_step`` at every update: a mapping of overrides
            (arrays allowed) or a function of the dotted parameter path returning one.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax, anyoptim, anyoptim.optax
        >>> tx = anyoptim.optax.from_optimizer(anyoptim.Lion(learning_rate=0.1))
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"], int(state["step"])
        (Array([-0.1,  0.1], dtype=float32), 1)
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            "anyoptim.optax.from_optimizer: optimizer should be an anyoptim optimizer such as "
            f"anyoptim.AdamW(1e-3), got {type(optimizer).__name__}. For optax-style "
            "arguments use the factories (anyoptim.optax.adamw(...))."
        )
    template = _fresh(optimizer)
    engine = copy.deepcopy(template)
    name = "from_optimizer"

    def init(params: Any) -> dict[str, Any]:
        leaves = _flatten(params)[0]
        tree = _build(_paths(params, name), [jnp.asarray(x) if x is not None else None
                                               for x in leaves], name)
        opt = copy.deepcopy(template)
        opt.init(tree)
        state = jax.tree.map(_to_jax, _plain(opt.state))
        # whatever a step would add (e.g. skipped_steps), created now: the structure is fixed
        zeros = jax.tree.map(jnp.zeros_like, tree)
        after = jax.eval_shape(lambda s: engine.pure_step(tree, zeros, s, hyperparameters)[1],
                               state)
        return _complete(state, after)

    direct = _direction_form(engine, hyperparameters)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> tuple[Any, Any]:
        del extra_args
        if not direct:
            _require_params(params)
        g_leaves, g_def = _flatten(updates)
        paths = _paths(updates, name)
        grads = _build(paths, g_leaves, name)
        if direct:
            # p_new = p - η·u: the step from zero parameters is exactly -η·u, and
            # optax.apply_updates then computes p + (-η·u) == p - η·u, bit for bit
            p_leaves = [None if g is None else jnp.zeros_like(g) for g in g_leaves]
        else:
            p_leaves = _flatten(params)[0]
            if len(p_leaves) != len(g_leaves):
                raise _mismatch(name, "the parameters", len(p_leaves), len(g_leaves))
        tree = _build(paths, [p if g is not None else None for g, p in zip(g_leaves, p_leaves)],
                      name)
        state_leaves, state_def = jax.tree.flatten(state)
        plain = _plain(state)
        new_tree, new_state = engine.pure_step(tree, grads, plain, hyperparameters)
        new_leaves = jax.tree.leaves(new_state)
        if jax.tree.structure(new_state) != jax.tree.structure(plain) or any(
                n.shape != o.shape for n, o in zip(new_leaves, state_leaves)):
            raise ValueError(
                f"anyoptim.optax.{name}: the {type(optimizer).__name__} state changed its "
                f"structure in an update ({len(state_leaves)} arrays before, {len(new_leaves)} "
                "after); pass the state made by this transformation's init."
            )
        new_leaves = [n if n.dtype == o.dtype else n.astype(o.dtype)
                      for n, o in zip(new_leaves, state_leaves)]
        if direct:
            deltas = [None if g is None else _lookup(new_tree, path)
                      for g, path in zip(g_leaves, paths)]
        else:
            deltas = [None if g is None else _delta(_lookup(new_tree, path), p)
                      for g, p, path in zip(g_leaves, p_leaves, paths)]
        return g_def.unflatten(deltas), state_def.unflatten(new_leaves)

    return optax.GradientTransformationExtraArgs(init, update)


def _plain(tree: Any) -> Any:
    """Mappings as dicts, lists and tuples kept, flax Variables unwrapped, arrays kept."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(_plain(v) for v in tree)
    if library_name(tree) is None:
        get = getattr(tree, "get_value", None)
        if callable(get):
            return _plain(get())
    return tree


def _complete(state: Any, shapes: Any) -> Any:
    """``state`` with zero arrays for the entries that only ``shapes`` (a step's output) has."""
    if isinstance(shapes, Mapping):
        base = state if isinstance(state, dict) else {}
        out = {k: _complete(base.get(k), v) for k, v in shapes.items()}
        return out
    if isinstance(shapes, (list, tuple)):
        items = list(state) if isinstance(state, (list, tuple)) else []
        items += [None] * (len(shapes) - len(items))
        return type(shapes)(_complete(s, v) for s, v in zip(items, shapes))
    if state is None:
        return jnp.zeros(shapes.shape, shapes.dtype)
    return state


def to_anyoptim_state(state: Any) -> dict[str, Any]:
    """The anyoptim optimizer state held in a :func:`from_optimizer` transformation's state.

    Assign it to the optimizer given to :func:`from_optimizer` (or a copy of it) to save the
    run with ``anyoptim.save``, or to continue it with anyoptim on any array library::

        opt.state = anyoptim.optax.to_anyoptim_state(opt_state)
        anyoptim.save("run.safetensors", opt)

    Args:
        state: the transformation's state (plain, or as ``nnx.Optimizer`` holds it:
            ``optimizer.opt_state``), with JAX arrays.

    Returns:
        A dict ``{"step", "learning_rate", <per-parameter dicts>}`` (``{"states": [...]}``
        for a ``MultiOptimizer``) of JAX arrays, mirroring the parameters with dicts and
        lists.
    """
    plain = _plain(state)
    if not isinstance(plain, dict) or not ("step" in plain or "states" in plain):
        raise TypeError(
            "anyoptim.optax.to_anyoptim_state: expected the state of a transformation made by "
            "anyoptim.optax.from_optimizer (a dict with 'step'), got "
            f"{type(state).__name__}. The factories' states (anyoptim.optax.State) are "
            "optax-shaped; save those with orbax."
        )
    return plain


def from_anyoptim_state(transformation: Any, anyoptim_state: Mapping[str, Any],
                        params: Any) -> Any:
    """The state of ``transformation`` (made by :func:`from_optimizer`) holding
    ``anyoptim_state``, e.g. the state of an optimizer read by ``anyoptim.load``.

    Every entry of ``jax.eval_shape(transformation.init, params)`` is taken from
    ``anyoptim_state`` by its path and converted to a JAX array of the expected dtype (the
    step counter becomes uint32 in JAX's 32-bit mode); a missing entry or a wrong shape is
    an error naming the path.

    Args:
        transformation: ``anyoptim.optax.from_optimizer(optimizer)``.
        anyoptim_state: an anyoptim optimizer state for the same parameters (NumPy, JAX,
            PyTorch or MLX arrays).
        params: the parameters (any pytree; only shapes and dtypes are used).

    Returns:
        A state for ``transformation.update``.
    """
    template = jax.eval_shape(transformation.init, params)

    def fill(shape: Any, value: Any, path: str) -> Any:
        if isinstance(shape, Mapping):
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"anyoptim.optax.from_anyoptim_state: at {path or '<root>'!r} the state "
                    f"should be a dict, got {type(value).__name__}"
                )
            out = {}
            for k, v in shape.items():
                if k not in value:
                    raise KeyError(
                        f"anyoptim.optax.from_anyoptim_state: the state has no entry "
                        f"{(path + '.' if path else '') + str(k)!r}, which these parameters "
                        "need; load a state saved for the same parameters and optimizer."
                    )
                out[k] = fill(v, value[k], f"{path}.{k}" if path else str(k))
            return out
        if isinstance(shape, (list, tuple)):
            if not isinstance(value, (list, tuple)) or len(value) != len(shape):
                raise TypeError(
                    f"anyoptim.optax.from_anyoptim_state: at {path!r} the state should be a "
                    f"sequence of {len(shape)} entries, got {type(value).__name__}"
                )
            return type(shape)(fill(s, v, f"{path}.{i}") for i, (s, v) in
                               enumerate(zip(shape, value)))
        array = _to_jax(value)
        if tuple(array.shape) != tuple(shape.shape):
            raise ValueError(
                f"anyoptim.optax.from_anyoptim_state: the state entry {path!r} has shape "
                f"{tuple(array.shape)}, but these parameters need {tuple(shape.shape)}"
            )
        return array.astype(shape.dtype)

    return fill(template, _plain(anyoptim_state), "")


def _to_jax(value: Any) -> Any:
    lib = library_name(value)
    if lib == "jax":
        return value
    if lib in ("numpy", None):
        host = np.asarray(value)
        if host.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
            host = host.astype({"u": np.uint32, "i": np.int32, "f": np.float32}.get(
                host.dtype.kind, host.dtype))
        return jnp.asarray(host)
    return jnp.asarray(jax.dlpack.from_dlpack(value))
