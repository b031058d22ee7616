"""Per-tensor factories: ``anyoptim.optax.adafactor`` (``muon`` is in ``_muon``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from ._common import (
    MaskOrFn,
    ScalarOrSchedule,
    State,
    _canonical_dtype,
    _check_number,
    _check_schedule,
    _check_static_int,
    _decay_flags,
    _flatten,
    _lr_entries,
    _mismatch,
    _require_params,
    _scale,
    _wd_entries,
)


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
