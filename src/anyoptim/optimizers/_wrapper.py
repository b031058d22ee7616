"""The base of the training-loop wrappers: an optimizer around another optimizer.

A wrapper (gradient accumulation, parameter averaging, clipping, guards, Lookahead) is itself
an :class:`~anyoptim.optimizers.Optimizer`: ``update``, ``apply_gradients`` and ``pure_step``
work, wrappers nest (``GradientAccumulation(ClipByValue(AdamW(...), 1.0), k=4)``), and
``anyoptim.save``/``load`` store and rebuild the whole stack.

The state of a wrapper is ``{"inner": <the wrapped optimizer's state>, <own entries>}``: its
own entries are a micro-step or update counter ``count`` (a 0-d unsigned array, as ``step``)
and trees mirroring the parameters (accumulated gradients, averaged or slow parameters).
``step`` and ``learning_rate`` are the wrapped optimizer's: they advance once per real step.

Two ways to run one call, chosen per call:

* eager (the counter is a concrete number: NumPy, PyTorch, CuPy, MLX and JAX outside of
  tracing): a Python branch, so a micro-step costs only the accumulation and the wrapped
  optimizer keeps its fused in-place paths;
* traced (``jax.jit``, ``mx.compile``, ``torch.compile``): every branch is computed and the
  results are chosen with ``where`` on a 0-d flag, so the step is traced once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .. import _backend
from .._backend import finalize, library_name
from ..utils import _rebuild
from . import _checks, _tree
from ._base import SKIPPED, Hyperparameters, Optimizer
from ._tree import PathError

COUNT = "count"
INNER = "inner"


def host_int(x: Any) -> int | None:
    """``x`` (a 0-d array) as a Python int, or None when it is being traced (no value yet)."""
    lib = library_name(x)
    if lib == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
    elif lib == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
    elif lib == "mlx":
        try:
            return int(x.item())
        except ValueError:  # inside mx.compile: arrays cannot be evaluated
            return None
    return int(x)


def copy_array(x: Any) -> Any:
    """A copy of ``x`` that later in-place writes to ``x`` do not reach."""
    lib = library_name(x)
    if lib == "torch":
        return x.detach().clone()
    if lib in ("numpy", "cupy"):
        return x.copy()
    return x  # JAX and MLX arrays are immutable


def select(ok: Any, new: Any, old: Any, xp: Any) -> Any:
    """The tree ``new`` where the 0-d flag ``ok`` holds, else ``old`` (leaf by leaf; entries
    ``old`` lacks come from ``new``)."""
    if isinstance(new, Mapping):
        return {k: select(ok, v, old.get(k) if isinstance(old, Mapping) else None, xp)
                for k, v in new.items()}
    if isinstance(new, (list, tuple)):
        olds = list(old) if isinstance(old, (list, tuple)) else []
        olds += [None] * (len(new) - len(olds))
        return _rebuild(new, [select(ok, v, o, xp) for v, o in zip(new, olds)])
    if _backend.is_array(new) and _backend.is_array(old):
        return finalize(xp.where(ok, new, _backend.to_library(old, new)))
    return new


def put(tree: Any, structure: Any, leaves: Iterator[Any]) -> Any:
    """A copy of the containers of ``tree`` with the leaves at ``structure`` (a gradient
    structure from :func:`._tree.gather`) replaced by ``leaves``; other entries are kept."""
    if structure is None:
        return next(leaves)
    kind, template, kids = structure
    kids = kids or [None] * len(template)
    if kind == "d":
        out = dict(tree) if isinstance(tree, Mapping) else {}
        for key, kid in zip(template, kids):
            out[key] = put(out.get(key), kid, leaves)
        return out
    items = list(tree) if isinstance(tree, (list, tuple)) else []
    for i, kid in enumerate(kids):
        if i < len(items):
            items[i] = put(items[i], kid, leaves)
        else:
            items.append(put(None, kid, leaves))
    return _rebuild(template, items)


def all_finite(xp: Any, leaves: list[Any]) -> Any:
    ok = None
    for g in leaves:
        finite = xp.all(xp.isfinite(g))
        ok = finite if ok is None else xp.logical_and(ok, finite)
    return ok


class Wrapper(Optimizer):
    """Base class of the optimizers that wrap another optimizer (see the module docstring).

    Subclasses implement :meth:`_run` and list their own parameter-shaped state trees in
    ``trees`` (with :meth:`_new_leaf` to create a leaf) and the constructor arguments that
    :func:`anyoptim.save` records in ``options``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.EMA(optim.GradientAccumulation(optim.AdamW(1e-3), k=4), decay=0.999)
        >>> opt.init({"w": np.zeros(2, np.float32)})
        >>> sorted(opt.state), sorted(opt.state["inner"]), sorted(opt.state["inner"]["inner"])
        (['average', 'count', 'inner'], ['count', 'gradients', 'inner'], ['learning_rate', 'step', 'w'])
    """

    #: the names of the wrapper's own state trees that mirror the parameters
    trees: tuple[str, ...] = ()
    #: the constructor keywords (besides ``optimizer``) that describe the wrapper
    options: tuple[str, ...] = ()
    #: whether the wrapper keeps a ``count`` of the calls it has seen
    counts = True

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__()
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: optimizer must be an anyoptim optimizer (for example "
                f"anyoptim.AdamW(1e-3)), got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self._state = {}
        self._host: tuple[Any, int] | None = None

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> dict[str, Any]:
        """``{"inner": optimizer.state, <own entries>}``."""
        return {**self._state, INNER: self.optimizer.state}

    @state.setter
    def state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or INNER not in state:
            raise ValueError(
                f"Invalid state provided: {type(self).__name__}.state needs a dict with an "
                f"'inner' entry (the wrapped optimizer's state), as {type(self).__name__}.state "
                "returns"
            )
        self.optimizer.state = state[INNER]
        self._state = {k: v for k, v in state.items() if k != INNER}
        self._host = None
        self._initialized = False

    @property
    def step(self) -> Any:
        """The wrapped optimizer's step (real steps, not calls)."""
        return self.optimizer.step

    @property
    def learning_rate(self) -> Any:
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.optimizer.learning_rate = learning_rate

    @property
    def skipped_steps(self) -> Any:
        """The number of calls skipped for non-finite gradients (with ``skip_nonfinite``)."""
        return self._state.get(SKIPPED, 0)

    def init(self, parameters: Any) -> None:
        self.optimizer.init(parameters)
        structure, params = _tree.flatten(parameters)
        if self.counts and params:
            self._count(params[0])
        if self.skip_nonfinite and params:
            self._count(params[0], SKIPPED)
        for name in self.trees:
            if name not in self._state:
                self._state[name] = _tree.unflatten(
                    structure, iter([self._new_leaf(name, p) for p in params]))
        self._initialized = True

    def _new_leaf(self, name: str, parameter: Any) -> Any:
        raise NotImplementedError

    def describe(self, describe_inner: Callable[[Optimizer], dict[str, Any]]) -> dict[str, Any]:
        """The JSON description :func:`anyoptim.save` stores."""
        return {
            "class": type(self).__name__,
            "hyperparameters": {name: getattr(self, name) for name in self.options},
            "skip_nonfinite": bool(self.skip_nonfinite),
            "optimizer": describe_inner(self.optimizer),
        }

    # ------------------------------------------------------------------ updates
    def _apply(self, gradients: Any, parameters: Any, hyper: Hyperparameters | None,
               inplace: bool) -> tuple[Any, bool]:
        name = type(self).__name__
        grads: list[Any] = []
        params: list[Any] = []
        structure = None
        try:
            structure = _tree.gather(gradients, parameters, parameters, grads, params, [])
            _checks.check_leaves(grads, params, None)
        except (PathError, _checks.LeafError) as err:
            raise _checks.located(err, structure).build(f"{name}.apply_gradients: gradient") from None
        call = _Call(self, gradients, parameters, structure, grads, params, hyper)
        if not self.skip_nonfinite or not grads:
            return self._run(call, inplace)
        # skip the whole call (own state and the wrapped optimizer's) on non-finite gradients
        xp = call.xp
        # entries created now must not hold the skipped step
        self.optimizer.init(call.tree(params))
        for tree in self.trees:
            call.own(tree)
        self._count(grads[0], SKIPPED)
        old_own = _tree.copy_containers(self._state)
        old_inner = _tree.copy_containers(self.optimizer.state)
        ok = all_finite(xp, grads)
        with np.errstate(all="ignore"):  # the non-finite results are thrown away
            new_tree, _ = self._run(call, False, fused=False)
        _, new_leaves = _tree.flatten(new_tree)
        inner = select(ok, self.optimizer.state, old_inner, xp)
        own = select(ok, self._state, old_own, xp)
        count = own[SKIPPED]
        own[SKIPPED] = finalize(xp.where(ok, count, count + 1))
        self.optimizer.state = inner
        self._state = own
        self._host = None
        out = [finalize(xp.where(ok, a, b)) for a, b in zip(new_leaves, params)]
        return _tree.unflatten(structure, iter(out)), False

    def _run(self, call: _Call, inplace: bool, fused: bool = True) -> tuple[Any, bool]:
        """One call: return the new parameters (gradients' structure) and whether they were
        written in place; commit the new state."""
        raise NotImplementedError

    def apply_gradients(self, gradients: Any, parameters: Any,
                        hyperparameters: Hyperparameters | None = None) -> Any:
        return self._apply(gradients, parameters, hyperparameters, inplace=False)[0]

    def pure_step(self, parameters: Any, gradients: Any, state: Any,
                  hyperparameters: Hyperparameters | None = None) -> tuple[Any, Any]:
        """``(new_parameters, new_state)`` for ``state`` as in ``optimizer.state``; nothing
        is modified (see :meth:`Optimizer.pure_step`)."""
        saved = (self._state, self.optimizer.state, self._host, self._initialized)
        try:
            self.state = _tree.copy_containers(state)
            new = self._apply(gradients, parameters, hyperparameters, inplace=False)[0]
            return new, self.state
        finally:
            self._state, inner, self._host, self._initialized = saved
            self.optimizer.state = inner

    # ------------------------------------------------------------------ helpers
    def _count(self, like: Any, key: str = COUNT) -> tuple[Any, int | None]:
        """The own counter ``key`` in ``like``'s library (created at 0), and its value when
        it is concrete."""
        state = self._state
        count = state.get(key)
        if count is None:
            count = _backend.host_scalar(0, np.uint64)
        lib = library_name(like)
        if not _backend.is_counter(count, lib):
            host = count if library_name(count) == "numpy" else _backend._to_numpy(count)
            count = _backend.to_library(np.asarray(host).astype(np.uint64), like)
        state[key] = count
        if key != COUNT:
            return count, host_int(count)
        if self._host is not None and self._host[0] is count:
            return count, self._host[1]
        value = host_int(count)
        if value is not None:
            self._host = (count, value)
        return count, value

    def _bump(self, count: Any, value: int | None) -> None:
        new = finalize(count + 1)
        self._state[COUNT] = new
        self._host = (new, value + 1) if value is not None else None


class _Call:
    """The inputs of one wrapper call, flattened once."""

    def __init__(self, wrapper: Wrapper, gradients: Any, parameters: Any, structure: Any,
                 grads: list[Any], params: list[Any], hyper: Hyperparameters | None) -> None:
        self.wrapper = wrapper
        self.gradients = gradients
        self.parameters = parameters
        self.structure = structure
        self.grads = grads
        self.params = params
        self.hyper = hyper
        self.xp: Any = _backend.namespace(grads[0]) if grads else None

    def own(self, name: str) -> list[Any]:
        """The leaves of the wrapper's state tree ``name`` at the gradients' paths (created
        where missing)."""
        w = self.wrapper
        tree = w._state.get(name)
        if tree is None:
            leaves = [w._new_leaf(name, p) for p in self.params]
            w._state[name] = _tree.unflatten(self.structure, iter(leaves))
            return leaves
        leaves = []
        try:
            _tree.gather(self.gradients, self.parameters, tree, [], [], leaves)
        except PathError:
            # parameters the tree does not have yet (added later): create their entries
            leaves = []
            for p, path in zip(self.params, _tree.paths(self.structure)):
                found = self._lookup(tree, path)
                leaves.append(w._new_leaf(name, p) if found is None else found)
            w._state[name] = put(tree, self.structure, iter(leaves))
        for i, (a, p) in enumerate(zip(leaves, self.params)):
            if not _backend.is_array(a) or tuple(a.shape) != tuple(p.shape):
                path = _tree.paths(self.structure)[i]
                raise ValueError(
                    f"{type(w).__name__}: the {name!r} state at {path!r} has shape "
                    f"{tuple(getattr(a, 'shape', ()))} but the parameter has shape "
                    f"{tuple(p.shape)}; call init() again after changing the model"
                )
        return leaves

    @staticmethod
    def _lookup(tree: Any, path: str) -> Any:
        node = tree
        for key in path.split(".") if path else []:
            if isinstance(node, Mapping):
                node = node.get(key)
            elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
            if node is None:
                return None
        return node if _backend.is_array(node) else None

    def store(self, name: str, leaves: list[Any]) -> None:
        w = self.wrapper
        w._state[name] = put(w._state.get(name), self.structure, iter(leaves))

    def tree(self, leaves: list[Any]) -> Any:
        return _tree.unflatten(self.structure, iter(leaves))

    def inner(self, grads: list[Any], inplace: bool, fused: bool) -> tuple[Any, bool]:
        """Apply ``grads`` with the wrapped optimizer (committing its state)."""
        opt = self.wrapper.optimizer
        with _no_fusion(opt, not (fused and self.wrapper._fused_allowed)):
            return opt._apply(self.tree(grads), self.parameters, self.hyper, inplace)

    def inner_pure(self, grads: list[Any]) -> tuple[list[Any], Any, Any]:
        """The wrapped optimizer's new parameter leaves and new state for ``grads``, and its
        old state; nothing is committed (for the traced path)."""
        opt = self.wrapper.optimizer
        opt.init(self.tree(self.params))
        old = opt.state
        with _no_fusion(opt, True):
            new_tree, new_state = opt.pure_step(self.parameters, self.tree(grads), old,
                                                self.hyper)
        return _tree.flatten(new_tree)[1], new_state, old


@contextlib.contextmanager
def _no_fusion(opt: Optimizer, active: bool) -> Iterator[None]:
    """Keep fused executors from reusing state buffers that the caller still needs."""
    if not active:
        yield
        return
    had = "_fused_allowed" in opt.__dict__
    before = opt.__dict__.get("_fused_allowed")
    opt._fused_allowed = False
    try:
        yield
    finally:
        if had:
            opt._fused_allowed = before  # type: ignore[assignment]
        else:
            del opt._fused_allowed
