"""MultiOptimizer: different optimizers for different parts of the parameter tree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import _backend
from ..errors import MissingStateError
from ..utils import tree_flatten, tree_map_with_path, tree_unflatten
from ._base import (
    Optimizer,
    _all_finite,
    _check_against,
    _check_leaves,
    _copy_containers,
    _first_array,
    _PathError,
    _restore_dicts,
    _select,
    _snapshot_dicts,
)

Filter = Callable[[str, Any], bool]


def _always(path: str, array: Any) -> bool:
    return True


class MultiOptimizer(Optimizer):
    """Route each parameter to the first optimizer whose filter accepts it.

    Filters are called as ``filter(path, array)`` with the dotted ``tree_flatten`` path (for
    example ``"layers.0.weight"``); the last optimizer takes every parameter no filter accepted.
    Every sub-optimizer counts its own steps, even when its part of the tree is empty. Unlike
    MLX, the result keeps the gradients' key order, and an update that fails in any
    sub-optimizer leaves all of them untouched.

    Args:
        optimizers: the optimizers, ``len(filters) + 1`` of them.
        filters: predicates ``(path, array) -> bool`` for all optimizers but the last.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.MultiOptimizer(
        ...     [optim.SGD(0.1), optim.SGD(1.0)], [lambda path, a: path.startswith("bias")])
        >>> grads = {"weight": np.ones(1, np.float32), "bias": np.ones(1, np.float32)}
        >>> opt.apply_gradients(grads, {"weight": np.zeros(1, np.float32),
        ...                             "bias": np.zeros(1, np.float32)})
        {'weight': array([-1.], dtype=float32), 'bias': array([-0.1], dtype=float32)}
    """

    def __init__(
        self,
        optimizers: Sequence[Optimizer],
        filters: Sequence[Filter] = [],  # MLX's default; never mutated
    ) -> None:
        super().__init__()
        self._state = {}
        if len(filters) != len(optimizers) - 1:
            raise ValueError(
                f"MultiOptimizer: filters should have len(optimizers) - 1 = "
                f"{len(optimizers) - 1} entries (the last optimizer is the fallback), "
                f"{len(filters)} were provided instead."
            )
        self.optimizers = list(optimizers)
        self.filters = [*filters, _always]

    def _split(self, tree: Any) -> list[Any]:
        if len(self.optimizers) == 1:
            return [tree]
        parts: list[list[tuple[str, Any]]] = [[] for _ in self.optimizers]
        for path, leaf in tree_flatten(tree):
            for i, accept in enumerate(self.filters):
                if accept(path, leaf):
                    parts[i].append((path, leaf))
                    break
        return [tree_unflatten(part) if part else {} for part in parts]

    def init(self, parameters: Any) -> None:
        for opt, part in zip(self.optimizers, self._split(parameters)):
            opt.init(part)

    def apply_gradients(self, gradients: Any, parameters: Any) -> Any:
        try:
            _check_leaves(gradients)  # before any filter sees a leaf
            like = _first_array(gradients)
            if like is not None:
                _check_against(gradients, parameters, _backend.library_name(like))
        except _PathError as err:
            raise err.build("MultiOptimizer.apply_gradients: gradient") from None
        snapshots = [_snapshot_dicts(opt.state) for opt in self.optimizers]
        initialized = [opt._initialized for opt in self.optimizers]
        flat: dict[str, Any] = {}
        try:
            for opt, part in zip(self.optimizers, self._split(gradients)):
                tree_flatten(opt.apply_gradients(part, parameters), destination=flat)
        except BaseException:
            for snapshot in snapshots:
                _restore_dicts(snapshot)
            # a restored (emptied) state must be lazily initialised again at the next call
            for opt, flag in zip(self.optimizers, initialized):
                opt._initialized = flag
            raise
        result = tree_map_with_path(lambda path, _: flat[path], gradients)
        if self.skip_nonfinite:
            result = self._keep_all_if_nonfinite(gradients, parameters, result, snapshots)
        return result

    def _keep_all_if_nonfinite(
        self, gradients: Any, parameters: Any, result: Any, snapshots: list
    ) -> Any:
        """Undo the whole update (every sub-optimizer) if a gradient is not finite."""
        like = _first_array(gradients)
        if like is None:
            return result
        xp = _backend.namespace(like)
        ok = _all_finite(xp, gradients)
        for snapshot in snapshots:
            for target, saved in snapshot:
                for key, value in list(target.items()):
                    old = saved.get(key)
                    if _backend.is_array(old) and _backend.is_array(value):
                        old = _backend.to_library(old, value)  # e.g. a step not yet adopted
                        target[key] = _backend.finalize(xp.where(ok, value, old))
        return _select(xp, ok, result, parameters)

    def pure_step(self, parameters: Any, gradients: Any, state: Any) -> tuple[Any, Any]:
        """``(new_parameters, new_state)`` for ``state = {"states": [...]}``; see Optimizer."""
        states = state.get("states") if isinstance(state, dict) else None
        if not isinstance(states, (list, tuple)) or len(states) != len(self.optimizers):
            raise ValueError(
                "MultiOptimizer.pure_step needs state={'states': [...]} with one state per "
                f"optimizer ({len(self.optimizers)})"
            )
        saved = [(opt._state, opt._initialized) for opt in self.optimizers]
        try:
            for opt, sub in zip(self.optimizers, states):
                opt._state = _copy_containers(sub)
                opt._initialized = False
            result = self.apply_gradients(gradients, parameters)
            return result, {"states": [opt._state for opt in self.optimizers]}
        finally:
            for opt, (sub, initialized) in zip(self.optimizers, saved):
                opt._state, opt._initialized = sub, initialized

    @property
    def state(self) -> dict[str, Any]:
        return {"states": [opt.state for opt in self.optimizers]}

    @state.setter
    def state(self, state: dict[str, Any]) -> None:
        states = state.get("states") if isinstance(state, dict) else None
        if not isinstance(states, (list, tuple)) or len(states) != len(self.optimizers):
            raise ValueError(
                "Invalid state provided: MultiOptimizer.state needs {'states': [...]} with one "
                f"state per optimizer ({len(self.optimizers)}), got "
                f"{'no states entry' if states is None else f'{len(states)} states'}."
            )
        for opt, sub in zip(self.optimizers, states):
            opt.state = sub

    @property
    def step(self) -> Any:
        raise MissingStateError(
            "MultiOptimizer has no step of its own: each sub-optimizer counts its steps; "
            "read optimizer.optimizers[i].step"
        )

    @property
    def learning_rate(self) -> Any:
        return self.optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        for opt in self.optimizers:
            opt.learning_rate = learning_rate
