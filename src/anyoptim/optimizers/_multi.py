"""MultiOptimizer: different optimizers for different parts of the parameter tree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import _backend
from ..errors import MissingStateError
from . import _checks, _tree
from ._base import SKIPPED, Hyperparameters, Optimizer
from ._tree import PathError

Filter = Callable[[str, Any], bool]


def _always(path: str, array: Any) -> bool:
    return True


class MultiOptimizer(Optimizer):
    """Route each parameter to the first optimizer whose filter accepts it.

    Filters are called as ``filter(path, array)`` with the dotted ``tree_flatten`` path (for
    example ``"layers.0.weight"``); the last optimizer takes every parameter no filter accepted.
    Every sub-optimizer counts its own steps, even when its part of the tree is empty. Unlike
    MLX, the result keeps the gradients' key order, dicts with digit keys stay dicts, and an
    update that fails in any sub-optimizer leaves all of them untouched.

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

    def _assign(self, tree: Any) -> tuple[Any, list[int]]:
        """The structure of ``tree`` and, per leaf, the index of the optimizer that takes it."""
        structure, leaves = _tree.flatten(tree)
        if len(self.optimizers) == 1:
            return structure, [0] * len(leaves)
        owners = []
        for path, leaf in zip(_tree.paths(structure), leaves):
            owners.append(next(i for i, accept in enumerate(self.filters) if accept(path, leaf)))
        return structure, owners

    def _split(self, tree: Any) -> tuple[Any, list[int], list[Any]]:
        structure, owners = self._assign(tree)
        if len(self.optimizers) == 1:
            return structure, owners, [tree]
        return structure, owners, _tree.split(tree, iter(owners), len(self.optimizers))

    def init(self, parameters: Any) -> None:
        for opt, part in zip(self.optimizers, self._split(parameters)[2]):
            opt.init(part)

    def _apply(self, gradients: Any, parameters: Any, hyper: Hyperparameters | None,
               inplace: bool) -> tuple[Any, bool]:
        return self.apply_gradients(gradients, parameters, hyper), False

    def apply_gradients(self, gradients: Any, parameters: Any,
                        hyperparameters: Hyperparameters | None = None) -> Any:
        grads: list[Any] = []
        params: list[Any] = []
        structure = None
        try:
            # every leaf is checked before any filter sees it
            structure = _tree.gather(gradients, parameters, parameters, grads, params, [])
            _checks.check_leaves(grads, params, None)
        except (PathError, _checks.LeafError) as err:
            raise _checks.located(err, structure).build(
                "MultiOptimizer.apply_gradients: gradient") from None
        structure, owners, parts = self._split(gradients)
        snapshots = [_tree.snapshot_dicts(opt.state) for opt in self.optimizers]
        initialized = [opt._initialized for opt in self.optimizers]
        results = []
        try:
            for opt, part in zip(self.optimizers, parts):
                opt._fused_allowed = not self.skip_nonfinite  # the snapshots must stay intact
                try:
                    results.append(opt.apply_gradients(part, parameters, hyperparameters))
                finally:
                    del opt._fused_allowed
        except BaseException:
            self._restore(snapshots, initialized)
            raise
        outputs = [iter(_tree.leaves(r)) for r in results]
        new = [next(outputs[i]) for i in owners]
        if self.skip_nonfinite and grads:
            new = self._keep_all_if_finite(grads, params, new, snapshots)
        return _tree.unflatten(structure, iter(new))

    def _restore(self, snapshots: list, initialized: list[bool]) -> None:
        for snapshot in snapshots:
            _tree.restore_dicts(snapshot)
        # a restored (emptied) state must be lazily initialised again at the next call
        for opt, flag in zip(self.optimizers, initialized):
            opt._initialized = flag

    def _keep_all_if_finite(self, grads: list[Any], params: list[Any], new: list[Any],
                            snapshots: list) -> list[Any]:
        """Undo the whole update (every sub-optimizer) if a gradient is not finite."""
        xp = _backend.namespace(grads[0])
        ok = None
        for g in grads:
            finite = xp.all(xp.isfinite(g))
            ok = finite if ok is None else xp.logical_and(ok, finite)
        for snapshot in snapshots:
            for target, saved in snapshot:
                for key, value in list(target.items()):
                    old = saved.get(key)
                    if key == SKIPPED:
                        continue  # each sub-optimizer counts its own skipped steps
                    if _backend.is_array(old) and _backend.is_array(value):
                        old = _backend.to_library(old, value)  # e.g. a step not yet adopted
                        target[key] = _backend.finalize(xp.where(ok, value, old))
        for opt in self.optimizers:  # every part skipped the step: each counts it
            state = opt._state
            count = state.get(SKIPPED)
            if count is None:
                count = _backend.finalize(state["step"] * 0)
            state[SKIPPED] = _backend.finalize(xp.where(ok, count, count + 1))
        return [_backend.finalize(xp.where(ok, a, b)) for a, b in zip(new, params)]

    def pure_step(self, parameters: Any, gradients: Any, state: Any,
                  hyperparameters: Hyperparameters | None = None) -> tuple[Any, Any]:
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
                opt._state = _tree.copy_containers(sub)
                opt._initialized = False
            result = self.apply_gradients(gradients, parameters, hyperparameters)
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
