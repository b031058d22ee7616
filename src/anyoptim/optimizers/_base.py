"""The ``Optimizer`` base class: tree walking, lazy state, schedules and the step counter.

Subclasses implement two per-leaf hooks, exactly as in MLX:

* ``init_single(parameter, state)`` fills the (empty) per-parameter dict ``state``;
* ``apply_single(gradient, parameter, state)`` returns the new parameter and writes the new
  state arrays into ``state``.

Inside the hooks ``self.xp`` is the array namespace of the arrays being processed; the hooks
contain no library-specific code. Everything else (walking the trees, creating the state,
evaluating schedules, counting steps, keeping updates all-or-nothing) happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import _backend
from .._backend import finalize, library_name
from ..errors import MissingStateError, TreeMismatchError
from ..utils import _rebuild

Schedule = Callable[[Any], Any]
LearningRate = float | Schedule

RESERVED = ("step", "learning_rate")


class _PathError(Exception):
    """Internal: an error raised deep in a tree walk, collecting the path on the way out."""

    def __init__(self, kind: type[Exception], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.segments: list[str] = []

    def build(self, what: str) -> Exception:
        path = ".".join(reversed(self.segments)) or "<root>"
        return self.kind(f"{what} at {path!r}: {self.message}")


class Optimizer:
    """Base class of all optimizers, with MLX's ``mlx.optimizers.Optimizer`` interface.

    Args:
        schedulers: optional mapping from a state name to a schedule ``step -> value``; the
            value is stored in ``state[name]`` before every update (as in MLX).

    The state is a dict ``{"step", "learning_rate", <tree mirroring the parameters>}``.
    ``step`` is a 0-d uint64 array and ``learning_rate`` a 0-d array; both are created as NumPy
    arrays and adopt the library of the first gradients they meet.
    """

    #: Opt-in policy for non-finite gradients. False (the default, as in MLX): NaN and Inf
    #: propagate into the parameters and state. True: an update whose gradients contain a NaN
    #: or an Inf is skipped entirely (parameters, state, step and schedules stay as they were),
    #: like optax's ``apply_if_finite``.
    skip_nonfinite: bool = False

    def __init__(self, schedulers: Mapping[str, Schedule] | None = None) -> None:
        self._initialized = False
        self._state: dict[str, Any] = {"step": _backend.host_scalar(0, np.uint64)}
        self._schedulers: dict[str, Schedule] = dict(schedulers or {})
        self._xp: Any = None

    # ------------------------------------------------------------------ public API
    @property
    def xp(self) -> Any:
        """The array namespace of the arrays currently being processed (inside the hooks)."""
        return self._xp

    @property
    def state(self) -> dict[str, Any]:
        """The live optimizer state (the same dict object across updates)."""
        return self._state

    @state.setter
    def state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise TypeError(
                f"{type(self).__name__}.state must be a dict such as the one returned by "
                f"tree_unflatten(...), got {type(state).__name__}"
            )
        self._initialized = False
        self._state = state

    @property
    def step(self) -> Any:
        """The number of updates applied so far (a 0-d uint64 array)."""
        return self._get_reserved("step")

    @property
    def learning_rate(self) -> Any:
        """The learning rate in the state (a 0-d array)."""
        return self._get_reserved("learning_rate")

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        value = _backend.as_state_array(learning_rate)
        step = self._state.get("step")
        if step is not None:
            value = _backend.to_library(value, step)
        self._state["learning_rate"] = value

    def init(self, parameters: Any) -> None:
        """Create the state for every parameter in ``parameters`` that has none yet.

        Existing per-parameter state, ``step`` and ``learning_rate`` are never reset.
        """
        self._check_reserved(parameters, "parameters")
        try:
            _check_leaves(parameters)
        except _PathError as err:
            raise err.build(f"{type(self).__name__}.init: parameter") from None
        self._merge_structure(parameters, self._state)
        like = _first_array(parameters)
        if like is not None:
            self._adopt_scalars(like)
        try:
            self._init_leaves(parameters, self._state)
        except _PathError as err:
            raise err.build(f"{type(self).__name__}.init: parameter") from None
        finally:
            self._xp = None
        self._initialized = True

    def update(self, model: Any, gradients: Any) -> None:
        """Apply the gradients to ``model``.

        MLX modules are updated through ``model.update``; plain dicts and lists are updated
        recursively (only the locations present in ``gradients``), writing NumPy arrays in place
        where shape and dtype allow.
        """
        params = _backend.model_parameters(model)
        like = _first_array(gradients)
        rollback = None
        if not self._initialized and _fast_path(self, like, initialized=True) is not None:
            # Create the state first, so that every update, the first one and the first one
            # after a state is assigned (a resumed run) included, takes the same fused path:
            # a resumed run then continues bit-identically on libraries whose fused kernels
            # round differently from the reference path (PyTorch).
            rollback = _snapshot_dicts(self._state)
            try:
                self.init(gradients)
            except BaseException:
                self._rollback_init(rollback)
                raise
        try:
            fast = _fast_path(self, like)
            if fast is not None and fast.step(self, gradients, params, inplace=True) is not NotImplemented:
                return
            with _backend.no_grad(like):
                new = self.apply_gradients(gradients, params)
                _backend.write_back(model, new)
        except BaseException:
            self._rollback_init(rollback)
            raise

    def pure_step(self, parameters: Any, gradients: Any, state: Any) -> tuple[Any, Any]:
        """A pure function of its inputs: return ``(new_parameters, new_state)``.

        Neither the inputs nor ``self.state`` are modified, so this is the entry point for
        compilers and transformations: ``jax.jit`` (donate ``parameters`` and ``state``:
        ``donate_argnums=(0, 2)``; outputs come in the same order as those inputs, so every
        buffer is reused), ``jax.vmap``, ``jax.grad``, ``mx.compile`` and ``torch.compile``.
        ``state`` is a state dict as found in ``optimizer.state`` (for example after
        ``optimizer.init(params)``); entries missing for some parameters are created.
        Hyperparameters and schedules come from ``self``.

        Example:
            >>> import numpy as np, anyoptim as optim
            >>> opt = optim.SGD(learning_rate=0.1)
            >>> params = {"w": np.ones(2, np.float32)}
            >>> opt.init(params)
            >>> grads = {"w": np.ones(2, np.float32)}
            >>> new_params, new_state = opt.pure_step(params, grads, opt.state)
            >>> new_params["w"], int(new_state["step"]), int(opt.state["step"])
            (array([0.9, 0.9], dtype=float32), 1, 0)
        """
        saved, saved_init = self._state, self._initialized
        self._state = _copy_containers(state)
        self._initialized = False
        try:
            result = self.apply_gradients(gradients, parameters)
            return result, self._state
        finally:
            self._state, self._initialized = saved, saved_init

    def apply_gradients(self, gradients: Any, parameters: Any) -> Any:
        """Return the updated parameters for ``gradients``; inputs are never modified.

        The update is all-or-nothing: if anything fails (a gradient without state or without a
        parameter, mismatched shapes or libraries, an error in the maths), ``step``,
        ``learning_rate`` and every state array are left exactly as they were.
        """
        state = self._state
        if "step" not in state:
            raise MissingStateError(
                f"{type(self).__name__}: the state has no 'step' entry. A state assigned with "
                "`optimizer.state = ...` must come from a saved optimizer state "
                "(tree_flatten(optimizer.state)), which always holds 'step'."
            )
        self._check_reserved(gradients, "gradients")
        like = _first_array(gradients)
        fast = _fast_path(self, like)
        if fast is not None:
            result = fast.step(self, gradients, parameters, inplace=False)
            if result is not NotImplemented:
                return result
        rollback = None
        if not self._initialized:
            # All-or-nothing includes the lazy init: a failed call leaves no new state behind.
            rollback = _snapshot_dicts(state)
            try:
                self.init(gradients)
            except BaseException:
                self._rollback_init(rollback)
                raise
        # Without gradient leaves (e.g. an empty MultiOptimizer part) the parameters tell which
        # library step and learning_rate belong to.
        owner = like if like is not None else _first_array(parameters)
        # what a failed call restores: the scalars as they were before adopting the library
        before = {k: state[k] for k in ("step", "learning_rate", *self._schedulers) if k in state}
        if owner is not None:
            self._adopt_scalars(owner)
        if like is not None:
            self._xp = _backend.namespace(like)
        staged: list[tuple[dict[str, Any], dict[str, Any]]] = []
        saved = {}
        try:
            saved = self._advance()
            lib = library_name(like) if like is not None else None
            result = self._walk(gradients, parameters, state, staged, lib)
            if self.skip_nonfinite and like is not None:
                result = self._keep_if_nonfinite(gradients, parameters, result, staged, saved)
        except BaseException as exc:
            state.update(saved)
            state.update(before)
            self._rollback_init(rollback)
            if isinstance(exc, _PathError):
                raise exc.build(f"{type(self).__name__}.apply_gradients: gradient") from None
            raise
        finally:
            self._xp = None
        for target, values in staged:
            target.update(values)
        return result

    def _keep_if_nonfinite(
        self, gradients: Any, parameters: Any, result: Any, staged: list, saved: dict
    ) -> Any:
        """Undo this update (parameters, state, step, schedules) if a gradient is not finite.

        The choice is made with ``where`` on a 0-d flag, so it works under ``jax.jit`` and
        ``mx.compile`` and does not wait for the device.
        """
        xp = self._xp
        ok = _all_finite(xp, gradients)
        if ok is None:
            return result
        for target, values in staged:
            for key, value in values.items():
                if key in target:
                    values[key] = finalize(xp.where(ok, value, target[key]))
        for key, old in saved.items():
            self._state[key] = finalize(xp.where(ok, self._state[key], old))
        return _select(xp, ok, result, parameters)

    def _advance(self) -> dict[str, Any]:
        """Evaluate the schedules and increase the step; return what to restore on failure."""
        state = self._state
        saved = {k: state[k] for k in ("step", "learning_rate", *self._schedulers) if k in state}
        try:
            for name, schedule in self._schedulers.items():
                state[name] = self._schedule_value(schedule(state["step"]))
            state["step"] = finalize(state["step"] + 1)
        except BaseException:
            state.update(saved)
            raise
        return saved

    # ------------------------------------------------------------------ subclass hooks
    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        """Fill the empty per-parameter dict ``state`` for ``parameter``."""
        raise NotImplementedError

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        """Return the updated ``parameter`` and write the new state arrays into ``state``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for hooks
    def _lr(self, gradient: Any) -> Any:
        """The learning rate cast to the gradient's dtype (what every MLX optimizer uses)."""
        return self._xp.astype(self.learning_rate, gradient.dtype)

    def _step_float(self) -> Any:
        """The (already increased) step as a float32 0-d array, for bias terms."""
        xp = self._xp
        return xp.astype(self._state["step"], xp.float32)

    def _maybe_schedule(self, name: str, value: Any) -> None:
        if callable(value):
            self._schedulers[name] = value
            self._state[name] = self._schedule_value(value(self._state["step"]))
        else:
            self._state[name] = _backend.as_state_array(value)

    # ------------------------------------------------------------------ internals
    def _rollback_init(self, rollback: list[tuple[dict[str, Any], dict[str, Any]]] | None) -> None:
        """Undo a lazy ``init`` made by a failed ``apply_gradients`` call."""
        if rollback is not None:
            _restore_dicts(rollback)
            self._initialized = False

    def _get_reserved(self, key: str) -> Any:
        try:
            return self._state[key]
        except KeyError:
            raise MissingStateError(
                f"{type(self).__name__}: the state has no {key!r} entry"
                + (
                    " (Adafactor without a learning_rate uses a relative step size and stores none)"
                    if key == "learning_rate" and type(self).__name__ == "Adafactor"
                    else "; a state assigned with `optimizer.state = ...` must hold it"
                )
            ) from None

    def _schedule_value(self, value: Any) -> Any:
        if library_name(value) is None:
            # Improvement over MLX: a schedule may return a plain Python number.
            value = _backend.to_library(_backend.as_state_array(value), self._state["step"])
        return finalize(value)

    def _adopt_scalars(self, like: Any) -> None:
        state = self._state
        lib = library_name(like)
        step = state["step"]
        if library_name(step) == lib:
            return
        # counted as uint64 wherever the library can (int64 on torch, uint32 on 32-bit JAX)
        host = step if library_name(step) == "numpy" else _backend._to_numpy(step)
        state["step"] = _backend.to_library(np.asarray(host).astype(np.uint64), like)
        for key in ("learning_rate", *self._schedulers):
            value = state.get(key)
            if value is not None and library_name(value) not in (None, lib):
                state[key] = _backend.to_library(value, like)

    def _check_reserved(self, tree: Any, what: str) -> None:
        if isinstance(tree, Mapping):
            for key in (*RESERVED, *self._schedulers):
                if key in tree:
                    raise ValueError(
                        f"{type(self).__name__}: the {what} tree has a top-level entry named "
                        f"{key!r}, which collides with the optimizer's own {key!r} state entry. "
                        "Rename the parameter or nest the parameters one level deeper "
                        "(e.g. {'model': params})."
                    )

    def _merge_structure(self, params: Any, state: Any) -> Any:
        """Phase A of ``init``: make ``state`` mirror the containers of ``params``."""
        if isinstance(params, (list, tuple)):
            if not isinstance(state, (list, tuple)):
                raise TreeMismatchError(
                    f"{type(self).__name__}.init: parameters have a {type(params).__name__} "
                    f"where the state has a {type(state).__name__}"
                )
            items = list(state)
            if len(params) < len(items):
                # MLX raises IndexError here; keep the extra (stale) entries instead.
                merged = [self._merge_structure(p, s) for p, s in zip(params, items)]
                merged += items[len(params) :]
                return merged if type(params) is list else list(merged)
            merged = [self._merge_structure(p, s) for p, s in zip(params, items)]
            merged += [_skeleton(p) for p in params[len(items) :]]
            return _rebuild(params, merged)
        if isinstance(params, Mapping):
            if not isinstance(state, dict):
                raise TreeMismatchError(
                    f"{type(self).__name__}.init: parameters have a dict where the state has "
                    f"a {type(state).__name__} (a state restored with tree_unflatten turns "
                    "dicts with all-digit keys into lists)"
                )
            for key, value in params.items():
                if key in state:
                    state[key] = self._merge_structure(value, state[key])
                else:
                    state[key] = _skeleton(value)
            return state
        return state

    def _init_leaves(self, params: Any, state: Any) -> None:
        """Phase B of ``init``: call ``init_single`` for every leaf whose state is empty."""
        if isinstance(params, Mapping):
            for key, value in params.items():
                try:
                    self._init_leaves(value, state[key])
                except _PathError as err:
                    err.segments.append(str(key))
                    raise
            return
        if isinstance(params, (list, tuple)):
            for i, value in enumerate(params):
                try:
                    self._init_leaves(value, state[i])
                except _PathError as err:
                    err.segments.append(str(i))
                    raise
            return
        if not isinstance(state, dict):
            raise _PathError(
                TreeMismatchError,
                f"the state entry is a {type(state).__name__}, expected a dict of state arrays",
            )
        if state:
            return
        if library_name(params) is None:
            raise _PathError(
                TypeError,
                f"expected an array, got {type(params).__name__} ({params!r:.60}). Remove "
                "non-array leaves from the tree or wrap them in an array.",
            )
        self._xp = _backend.namespace(params)
        self.init_single(params, state)
        for k, v in state.items():
            state[k] = finalize(v)

    def _walk(self, g: Any, p: Any, s: Any, staged: list, lib: str | None) -> Any:
        if isinstance(g, Mapping):
            out = {}
            for key, gv in g.items():
                try:
                    pv = _child(p, key, "parameters")
                    sv = _child(s, key, "state", gv)
                    out[key] = self._walk(gv, pv, sv, staged, lib)
                except _PathError as err:
                    err.segments.append(str(key))
                    raise
            return out
        if isinstance(g, (list, tuple)):
            items = []
            for i, gv in enumerate(g):
                try:
                    pv = _child(p, i, "parameters")
                    sv = _child(s, i, "state", gv)
                    items.append(self._walk(gv, pv, sv, staged, lib))
                except _PathError as err:
                    err.segments.append(str(i))
                    raise
            return _rebuild(g, items)
        # a leaf: g is a gradient array, p its parameter, s its per-parameter state dict
        glib = library_name(g)
        if glib is None:
            raise _PathError(
                TypeError,
                f"expected an array, got {type(g).__name__} ({g!r:.60}). Drop entries without "
                "a gradient from the gradient tree instead of passing None or numbers.",
            )
        if glib != lib:
            raise _PathError(
                TypeError,
                f"gradients mix array libraries ({lib} and {glib}); convert them all to one "
                "library",
            )
        plib = library_name(p)
        if plib != glib:
            raise _PathError(
                TypeError,
                f"the gradient is a {glib} array but the parameter is "
                f"{plib + ' array' if plib else type(p).__name__}; pass parameters and "
                "gradients from the same array library",
            )
        if glib == "torch" and g.device != p.device:
            raise _PathError(
                ValueError,
                f"the gradient is on {g.device} but the parameter is on {p.device}; move them "
                "to the same device",
            )
        if g.shape != p.shape:
            raise _PathError(
                ValueError,
                f"gradient shape {tuple(g.shape)} does not match parameter shape "
                f"{tuple(p.shape)}",
            )
        if not isinstance(s, dict) or not s:
            raise _PathError(
                MissingStateError,
                "this parameter has no optimizer state (it was added after the state was "
                "created). Call optimizer.init(parameters) with the full parameter tree first.",
            )
        for key, value in s.items():
            if type(value) is not type(g) and library_name(value) not in (glib, None):
                slib = library_name(value)
                raise _PathError(
                    TypeError,
                    f"the optimizer state entry {key!r} is a {slib} array but the gradient is a "
                    f"{glib} array; load the state into {glib} (anyoptim.io.load_state(path, "
                    f"library={glib!r})) or pass {slib} gradients and parameters",
                )
        staging = dict(s)
        new_p = self.apply_single(g, p, staging)
        for k, v in staging.items():
            staging[k] = finalize(v)
        staged.append((s, staging))
        return finalize(new_p)


def _child(tree: Any, key: Any, what: str, below: Any = None) -> Any:
    try:
        return tree[key]
    except (KeyError, IndexError, TypeError) as exc:
        if what == "state" and isinstance(below, (Mapping, list, tuple)):
            # a whole sub-tree has no state: name its first leaf, the parameter to look at
            err = _PathError(
                MissingStateError,
                "this parameter has no optimizer state (it was added after the state was "
                "created). Call optimizer.init(parameters) with the full parameter tree first.",
            )
            err.segments.extend(reversed(_first_path(below)))
            if not isinstance(exc, TypeError) and not (
                isinstance(exc, KeyError) and not isinstance(tree, Mapping)
            ):
                raise err from None
        if isinstance(exc, TypeError) or (isinstance(exc, KeyError) and not isinstance(tree, Mapping)):
            raise _PathError(
                TreeMismatchError,
                f"the gradients have {'a dict' if isinstance(key, str) else 'a list'} here but "
                f"the {what} has a {type(tree).__name__}"
                + (
                    " (tree_unflatten turns dicts with all-digit keys into lists; build the "
                    "parameter tree with non-digit keys or call optimizer.init(parameters))"
                    if what == "state"
                    else ""
                ),
            ) from None
        if what == "state":
            raise _PathError(
                MissingStateError,
                "this parameter has no optimizer state (it was added after the state was "
                "created). Call optimizer.init(parameters) with the full parameter tree first.",
            ) from None
        raise _PathError(
            TreeMismatchError,
            f"the gradient has no matching entry in the {what} "
            f"({type(tree).__name__} without key {key!r})",
        ) from None


def _snapshot_dicts(tree: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Shallow copies of every dict in a state tree, to undo a structural merge."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append((node, dict(node)))
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return out


def _restore_dicts(snapshot: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Put back what :func:`_snapshot_dicts` recorded (the same dict objects, old contents)."""
    for target, saved in snapshot:
        target.clear()
        target.update(saved)


def _skeleton(tree: Any) -> Any:
    """The tree with every leaf replaced by a fresh empty dict (containers preserved)."""
    if isinstance(tree, Mapping):
        return {k: _skeleton(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return _rebuild(tree, [_skeleton(v) for v in tree])
    return {}


def _first_array(tree: Any) -> Any:
    """The first array leaf of ``tree`` in traversal order, or None."""
    if isinstance(tree, Mapping):
        for v in tree.values():
            found = _first_array(v)
            if found is not None:
                return found
        return None
    if isinstance(tree, (list, tuple)):
        for v in tree:
            found = _first_array(v)
            if found is not None:
                return found
        return None
    return tree if library_name(tree) is not None else None


def _check_leaves(tree: Any) -> None:
    """Raise a path error for the first leaf of ``tree`` that is not an array."""
    if isinstance(tree, Mapping):
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        if library_name(tree) is None:
            raise _PathError(
                TypeError,
                f"expected an array, got {type(tree).__name__} ({tree!r:.60}). Remove "
                "non-array leaves (None, numbers) from the tree.",
            )
        return
    for key, value in items:
        try:
            _check_leaves(value)
        except _PathError as err:
            err.segments.append(str(key))
            raise


def _copy_containers(tree: Any) -> Any:
    """A copy of the dicts, lists and tuples of ``tree``; the leaves (arrays) are shared."""
    if isinstance(tree, Mapping):
        return {k: _copy_containers(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return _rebuild(tree, [_copy_containers(v) for v in tree])
    return tree


def _fast_path(opt: Optimizer, like: Any, initialized: bool = False) -> Any:
    """The fused-kernel module for ``like``'s library, if ``opt`` has kernels there.

    Only for an initialised optimizer (``initialized=True``: about to be initialised by
    ``update``); a lazily initialising ``apply_gradients`` takes the reference path.
    """
    if not (opt._initialized or initialized) or opt.skip_nonfinite:
        return None
    if type(like) is np.ndarray:
        if _backend.fused_numpy_available():
            from .._backend import _numpy_fused

            if _numpy_fused.supported(opt):
                return _numpy_fused
    elif library_name(like) == "torch" and _backend.fused_enabled():
        from .._backend import _torch_fused

        if _torch_fused.supported(opt):
            return _torch_fused
    return None


def _leaves(tree: Any) -> list[Any]:
    out: list[Any] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        else:
            out.append(node)
    return out


def _all_finite(xp: Any, tree: Any) -> Any:
    """A 0-d boolean array: every element of every leaf is finite (None for no leaves)."""
    ok = None
    for leaf in _leaves(tree):
        finite = xp.all(xp.isfinite(leaf))
        ok = finite if ok is None else xp.logical_and(ok, finite)
    return ok


def _select(xp: Any, ok: Any, new: Any, old: Any) -> Any:
    """``where(ok, new, old)`` leaf by leaf; ``new`` drives the structure."""
    if isinstance(new, Mapping):
        return {k: _select(xp, ok, v, old[k]) for k, v in new.items()}
    if isinstance(new, (list, tuple)):
        return _rebuild(new, [_select(xp, ok, v, old[i]) for i, v in enumerate(new)])
    return finalize(xp.where(ok, new, old))


def _first_path(tree: Any) -> list[str]:
    """The key path to the first leaf of ``tree`` (empty if it has none)."""
    path: list[str] = []
    node = tree
    while True:
        if isinstance(node, Mapping) and node:
            key = next(iter(node))
            path.append(str(key))
            node = node[key]
        elif isinstance(node, (list, tuple)) and node:
            path.append("0")
            node = node[0]
        else:
            return path


def _check_against(g: Any, p: Any, lib: str | None) -> None:
    """Raise a path error where gradient and parameter trees disagree (keys, libraries, shapes).

    Used where filters route leaves by their shape (MultiOptimizer), so a wrong shape is
    reported as such rather than as a missing state in whichever optimizer it lands in.
    """
    if isinstance(g, (Mapping, list, tuple)):
        items: Any = g.items() if isinstance(g, Mapping) else enumerate(g)
        for key, gv in items:
            if isinstance(gv, (Mapping, list, tuple)) and not _leaves(gv):
                continue  # empty sub-trees (parameterless layers) need no parameter
            try:
                _check_against(gv, _child(p, key, "parameters"), lib)
            except _PathError as err:
                err.segments.append(str(key))
                raise
        return
    glib, plib = library_name(g), library_name(p)
    if glib != lib or plib != glib:
        raise _PathError(
            TypeError,
            f"gradients and parameters mix array libraries ({lib}, {glib}, "
            f"{plib or type(p).__name__}); pass them all from one library",
        )
    if g.shape != p.shape:
        raise _PathError(
            ValueError,
            f"gradient shape {tuple(g.shape)} does not match parameter shape {tuple(p.shape)}",
        )
