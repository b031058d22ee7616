"""``anyoptim.optax.from_optimizer`` (any configured anyoptim optimizer as an optax transformation) and the conversions of its state to and from anyoptim's."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._backend import library_name
from .._backend._rules import static
from ..optimizers import Optimizer
from ._common import _flatten, _is_none, _mismatch, _require_params


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
