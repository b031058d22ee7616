"""``anyoptim.optax.muon``: ``optax.contrib.muon``'s signature, defaults and maths.

Matrices (2-D leaves, or the leaves that ``muon_weight_dimension_numbers`` names) get the
bias-corrected momentum orthogonalised by Newton-Schulz (the iteration is
:func:`anyoptim.optimizers._muon.newton_schulz`, shared with :class:`anyoptim.Muon`), the
other leaves go through :func:`anyoptim.optax.adamw`, as ``optax.contrib.muon`` partitions
them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..optimizers._muon import newton_schulz
from ._adam import adamw
from ._common import (
    MaskOrFn,
    ScalarOrSchedule,
    State,
    _canonical_dtype,
    _check,
    _check_beta,
    _check_number,
    _check_schedule,
    _check_static_int,
    _decay_flags,
    _flatten,
    _is_none,
    _lr_entries,
    _mismatch,
    _require_params,
    _scale,
    _wd_entries,
)

_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
#: optax.contrib.muon's presets (``ns_coeffs="standard"`` / ``"dion"``)
NS_COEFFS_PRESETS: dict[str, Any] = {
    "standard": _DEFAULT_NS_COEFFS,
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")

Axes = tuple[tuple[int, ...], tuple[int, ...]]  # (reduction axes, output axes), normalised


class MuonState(NamedTuple):
    """The state of :func:`muon`: ``muon`` (a :class:`State` with moment ``"mu"`` over the
    matrix leaves) and ``adam`` (the :func:`adamw` state of the other leaves); each tree has
    ``optax.MaskedNode()`` where the other part's leaves are."""

    muon: State
    adam: State


class _Spec:
    """One leaf's dimension numbers (or None), kept a pytree leaf."""

    __slots__ = ("dims",)

    def __init__(self, dims: Any) -> None:
        self.dims = dims


def _is_dim_nums(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "reduction_axis") and hasattr(x, "output_axis")


def _axes(shape: tuple[int, ...], dims: Any) -> Axes:
    """optax's normalisation of a ``MuonDimensionNumbers`` for a leaf of ``shape``."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            "anyoptim.optax.muon: muon_weight_dimension_numbers gives dimension numbers to a "
            f"leaf of shape {shape}; Muon parameters must have two or more dimensions (give "
            "None to send a leaf to AdamW)."
        )

    def norm(axes: Any) -> tuple[int, ...]:
        return tuple(int(a) % ndim for a in ((axes,) if isinstance(axes, int) else axes))

    red, out = norm(dims.reduction_axis), norm(dims.output_axis)
    if set(red) & set(out):
        raise ValueError(
            f"anyoptim.optax.muon: the reduction axes {red} and output axes {out} of "
            f"muon_weight_dimension_numbers overlap for a leaf of shape {shape}; they must "
            "be disjoint."
        )
    return red, out


def _coefficients(ns_coeffs: Any, ns_steps: int) -> tuple[tuple[tuple[float, float, float], ...], int]:
    """(the triples, the number of iterations), as optax.contrib.muon reads ``ns_coeffs``."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            raise ValueError(
                f"anyoptim.optax.muon: ns_coeffs should be one of {sorted(NS_COEFFS_PRESETS)}, "
                f"three numbers or a tuple of triples, {ns_coeffs!r} was provided instead."
            )
        ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]
    try:
        table = np.asarray(ns_coeffs, dtype=np.float64)
    except (TypeError, ValueError):
        table = np.zeros((0, 0))
    if table.ndim not in (1, 2) or table.shape[-1] != 3 or table.size == 0:
        raise ValueError(
            "anyoptim.optax.muon: ns_coeffs should be three numbers (a, b, c) of the "
            "Newton-Schulz polynomial a·X + b·(XXᵀ)X + c·(XXᵀ)²X, a tuple of such triples (one "
            f"per iteration) or a preset name, {ns_coeffs!r} was provided instead."
        )
    if table.ndim == 1:
        return ((float(table[0]), float(table[1]), float(table[2])),), ns_steps
    if table.shape[0] > ns_steps:
        raise ValueError(
            f"anyoptim.optax.muon: ns_coeffs has {table.shape[0]} triples, more than "
            f"ns_steps={ns_steps} (optax.contrib.muon refuses this too); raise ns_steps."
        )
    return tuple((float(a), float(b), float(c)) for a, b, c in table), int(table.shape[0])


def _orthogonalise(x: Any, axes: Axes, coefficients: Any, steps: int, eps: Any) -> Any:
    """optax's reshape to (batch, reduction, output), the iteration per batch entry, back."""
    red, out = axes
    batch = tuple(a for a in range(x.ndim) if a not in red and a not in out)
    order = batch + red + out
    sizes = [math.prod(x.shape[a] for a in group) for group in (batch, red, out)]
    flat = jnp.reshape(jnp.transpose(x, order), sizes)
    o = jax.vmap(lambda m: newton_schulz(jnp, m, coefficients, steps, eps,
                                                 scale_first=True))(flat)
    o = jnp.reshape(o, tuple(x.shape[a] for a in order))
    return jnp.transpose(o, tuple(int(i) for i in np.argsort(order)))


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Any = 0.95,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    weight_decay_mask: MaskOrFn = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Any = 0.9,
    adam_b2: Any = 0.999,
    adam_eps_root: Any = 0.0,
    adam_weight_decay: Any = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Muon with ``optax.contrib.muon``'s signature, defaults and maths.

    For each matrix leaf (2-D, or named by ``muon_weight_dimension_numbers``), with
    :math:`t` the update count:

    .. math::

        m_t &= \beta m_{t-1} + (1-\beta) g_t, \quad
        \hat m_t = \frac{\beta\, m_t}{1-\beta^{t+1}} + \frac{(1-\beta)\, g_t}{1-\beta^t}
        \text{ (Nesterov) or } \frac{m_t}{1-\beta^t} \\
        O_t &= \mathrm{NS}(\hat m_t) \quad (\times \langle \hat m_t, O_t\rangle
        \text{ with } \texttt{adaptive}) \\
        u_t &= -\eta_t \left(s\, O_t + \lambda p_t\right), \quad
        s = \sqrt{\max(1, n_{out}/n_{in})} \text{ or }
        \texttt{consistent\_rms}\sqrt{\max(n_{in}, n_{out})}

    where NS divides by :math:`\|X\|_F + \epsilon` and runs the quintic iteration on the wide
    orientation of the (reduction, output) matrix. Every other leaf gets
    :func:`adamw` (``adam_b1``, ``adam_b2``, ``eps``, ``adam_eps_root``,
    ``adam_weight_decay``, ``adam_learning_rate`` or ``learning_rate``, ``nesterov``).

    This is not :class:`anyoptim.Muon` (MLX's Muon: coupled weight decay 0.01, no bias
    correction, scale :math:`\sqrt{\max(1, S_{-2}/S_{-1})}`, every tensor with two or more
    dimensions orthogonalised, plain momentum for the others): for that one under optax use
    ``anyoptim.optax.from_optimizer(anyoptim.Muon(...))``.

    Args:
        learning_rate: a number or an optax schedule of the update count.
        ns_coeffs: ``(a, b, c)``, a tuple of per-iteration triples (then their number of
            iterations are run; at most ``ns_steps``), or a preset: ``"standard"``, ``"dion"``.
        ns_steps: the number of Newton-Schulz iterations (a Python int).
        beta: the momentum decay, in [0, 1).
        eps: added to the Frobenius norm, and AdamW's ε.
        weight_decay: decoupled weight decay of the matrices (a number or a schedule).
        weight_decay_mask: which matrix leaves are decayed (a tree of bools or a function of
            the matrix updates, as optax).
        mu_dtype: dtype of the momenta (default: the parameters').
        nesterov: Nesterov momentum (also for the AdamW leaves).
        adaptive: scale by the dual norm :math:`\langle \hat m_t, O_t\rangle`.
        preconditioning: ``"frobenius"`` only (optax's ``"spectral"``, ``"aol"`` and
            ``"schatten"`` are refused with a ValueError).
        adam_b1, adam_b2, adam_eps_root, adam_weight_decay: AdamW's.
        adam_learning_rate: AdamW's learning rate (default: ``learning_rate``).
        muon_weight_dimension_numbers: a tree (or prefix, or a function of the parameters
            giving one) of ``optax.contrib.MuonDimensionNumbers`` (None: AdamW); other axes
            are batch axes, orthogonalised independently.
        consistent_rms: None, or the target RMS of the consistent-RMS scale (e.g. 0.2).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``; its state
        is a ``MuonState`` (``muon``: a :class:`State` with moment
        ``"mu"``; ``adam``: the AdamW leaves' state).
    """
    name = "muon"
    _check_schedule(name, "learning_rate", learning_rate)
    steps = _check_static_int(name, "ns_steps", ns_steps, 0)
    coefficients, steps = _coefficients(ns_coeffs, steps)
    _check_beta(name, "beta", beta)
    _check_number(name, "eps", eps)
    _check(name, "eps", eps, lambda v: v >= 0, ">= 0")
    if callable(weight_decay):
        _check_schedule(name, "weight_decay", weight_decay)
    else:
        _check_number(name, "weight_decay", weight_decay)
    for param, value in (("nesterov", nesterov), ("adaptive", adaptive)):
        if not isinstance(value, bool):
            raise TypeError(f"anyoptim.optax.muon: {param} should be True or False, got {value!r}.")
    if preconditioning != "frobenius":
        known = preconditioning in _PRECONDITIONINGS
        raise ValueError(
            f"anyoptim.optax.muon: preconditioning={preconditioning!r} is "
            + ("not implemented; only 'frobenius' (the default) is." if known else
               f"not one of optax's {_PRECONDITIONINGS}; only 'frobenius' is implemented.")
        )
    _check_beta(name, "adam_b1", adam_b1)
    _check_beta(name, "adam_b2", adam_b2)
    _check_number(name, "adam_eps_root", adam_eps_root)
    _check(name, "adam_eps_root", adam_eps_root, lambda v: v >= 0, ">= 0")
    _check_schedule(name, "adam_learning_rate", adam_learning_rate, optional=True)
    _check_number(name, "consistent_rms", consistent_rms, optional=True)
    dim_numbers = muon_weight_dimension_numbers
    if not (dim_numbers is None or callable(dim_numbers) or isinstance(dim_numbers, (dict, list, tuple))):
        raise TypeError(
            "anyoptim.optax.muon: muon_weight_dimension_numbers should be None, a tree of "
            "optax.contrib.MuonDimensionNumbers (None for AdamW leaves) or a function of the "
            f"parameters returning one, got {type(dim_numbers).__name__}."
        )
    mu_dtype = _canonical_dtype(mu_dtype)
    adam = adamw(learning_rate if adam_learning_rate is None else adam_learning_rate,
                 b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root, mu_dtype=mu_dtype,
                 weight_decay=adam_weight_decay, nesterov=nesterov)

    def specs(params: Any) -> list[Axes | None]:
        """Per leaf (in :func:`_flatten` order): its axes, or None for AdamW."""
        leaves = _flatten(params)[0]
        if dim_numbers is None:
            return [((0,), (1,)) if p is not None and p.ndim == 2 else None for p in leaves]
        tree = dim_numbers(params) if callable(dim_numbers) else dim_numbers
        try:
            wrapped = jax.tree.map(
                lambda d, sub: jax.tree.map(lambda _: _Spec(d), sub, is_leaf=_is_none),
                tree, params, is_leaf=lambda x: x is None or _is_dim_nums(x))
        except ValueError as err:
            raise ValueError(
                "anyoptim.optax.muon: muon_weight_dimension_numbers should have the structure "
                f"of the parameters (or of a prefix of it): {err}") from None
        found = jax.tree.leaves(wrapped, is_leaf=lambda x: isinstance(x, _Spec))
        return [None if s.dims is None or p is None else _axes(tuple(p.shape), s.dims)
                for s, p in zip(found, leaves)]

    def split(tree: Any, kinds: list[Axes | None]) -> tuple[Any, Any]:
        leaves, treedef = _flatten(tree)
        mask = optax.MaskedNode()
        return (treedef.unflatten([x if k is not None else mask for x, k in zip(leaves, kinds)]),
                treedef.unflatten([mask if k is not None else x for x, k in zip(leaves, kinds)]))

    def init(params: Any) -> MuonState:
        mats, rest = split(params, specs(params))
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), mats)
        return MuonState(muon=State(count=jnp.zeros([], jnp.int32), moments={"mu": mu}),
                         adam=adam.init(rest))

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> tuple[Any, MuonState]:
        del extra_args
        _require_params(params)
        kinds = specs(params)
        g_leaves, g_def = _flatten(updates)
        n = len(g_leaves)
        if len(kinds) != n:
            raise _mismatch(name, "the parameters", len(kinds), n)
        g_mats, g_rest = split(updates, kinds)
        p_rest = split(params, kinds)[1]
        u_rest, adam_state = adam.update(g_rest, state.adam, p_rest)
        index = [i for i, k in enumerate(kinds) if k is not None]
        mu_leaves, mu_def = _flatten(state.muon.moments["mu"])
        if len(mu_leaves) != len(index):
            raise _mismatch(name, "the state entry 'mu'", len(mu_leaves), len(index))
        count = state.muon.count
        count_inc = optax.safe_increment(count)
        bc = 1 - beta**count_inc
        bc_next = 1 - beta ** optax.safe_increment(count_inc)
        lr_kind, lr = _lr_entries(learning_rate, count, sign=-1)
        use_wd, wd = _wd_entries(weight_decay, count)
        flags = (_decay_flags(name, weight_decay_mask, g_mats, len(index)) if use_wd
                 else [False] * len(index))
        new_updates = [None if k is None else g for g, k in zip(g_leaves, kinds)]
        rest = iter(_flatten(u_rest)[0])
        for i, k in enumerate(kinds):
            if k is None:
                new_updates[i] = next(rest)
        new_mu = list(mu_leaves)
        p_leaves = _flatten(params)[0]
        for j, i in enumerate(index):
            g, p, axes = g_leaves[i], p_leaves[i], kinds[i]
            if g is None or axes is None:
                continue
            mu = (1 - beta) * g + beta * mu_leaves[j]
            if nesterov:
                m_hat = beta * (mu / bc_next.astype(mu.dtype)) + (1 - beta) * (g / bc.astype(g.dtype))
            else:
                m_hat = mu / bc.astype(mu.dtype)
            o = _orthogonalise(m_hat, axes, coefficients, steps, eps)
            if adaptive:
                o = jnp.sum(m_hat * o) * o
            fan_in = math.prod(p.shape[a] for a in axes[0])
            fan_out = math.prod(p.shape[a] for a in axes[1])
            if consistent_rms is None:
                o = jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * o
            else:
                o = jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms * o
            if use_wd and flags[j]:
                o = o + wd * p
            new_updates[i] = _scale(o, lr_kind, lr)
            new_mu[j] = mu.astype(mu_leaves[j].dtype)
        muon_state = State(count=count_inc, moments={"mu": mu_def.unflatten(new_mu)})
        return g_def.unflatten(new_updates), MuonState(muon=muon_state, adam=adam_state)

    return optax.GradientTransformationExtraArgs(init, update)
