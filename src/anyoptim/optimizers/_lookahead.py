"""Lookahead around any optimizer."""

from __future__ import annotations

from typing import Any

from .._backend import finalize
from . import _tree
from ._base import Optimizer
from ._validate import require
from ._wrapper import Wrapper, _Call, copy_array


class Lookahead(Wrapper):
    r"""Lookahead (Zhang et al., *Lookahead Optimizer: k steps forward, 1 step back*,
    NeurIPS 2019) around ``optimizer``.

    The wrapped optimizer moves the fast parameters :math:`\theta` (the model's); every
    ``k``-th update the slow parameters :math:`\phi` (in the state) move towards them and the
    fast ones restart from there:

    .. math::

        \phi \leftarrow \phi + \alpha (\theta - \phi), \qquad \theta \leftarrow \phi

    This is ``pytorch_optimizer.Lookahead(optimizer, k, alpha)`` (without momentum pullback)
    and ``optax.lookahead(opt, sync_period=k, slow_step_size=alpha)`` on the fast parameters.
    The wrapped optimizer's state is kept across synchronisations. Evaluate with the slow
    parameters (:attr:`slow`), which equal the fast ones right after a synchronisation.

    State: the slow parameters (+4 bytes per float32 parameter) and the update counter.

    Args:
        optimizer: the fast optimizer.
        k: updates between synchronisations (>= 1; pytorch_optimizer's default 5).
        alpha: the slow step size in [0, 1] (default 0.5).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Lookahead(optim.SGD(learning_rate=1.0), k=2, alpha=0.5)
        >>> params = {"w": np.zeros(1, np.float32)}
        >>> for _ in range(2):
        ...     params = opt.apply_gradients({"w": np.ones(1, np.float32)}, params)
        >>> params["w"], opt.slow["w"]
        (array([-1.], dtype=float32), array([-1.], dtype=float32))
    """

    trees = ("slow",)
    options = ("k", "alpha")

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        name = type(self).__name__
        require(isinstance(k, int) and not isinstance(k, bool) and k >= 1, name, "k",
                "an integer >= 1", k)
        require(0.0 <= alpha <= 1.0, name, "alpha", "in [0, 1]", alpha)
        super().__init__(optimizer)
        self.k = k
        self.alpha = alpha

    def _new_leaf(self, name: str, parameter: Any) -> Any:
        return copy_array(parameter)

    @property
    def slow(self) -> Any:
        """The slow parameters (a tree like the parameters)."""
        if "slow" not in self._state:
            raise ValueError("Lookahead: no slow parameters yet; call init(parameters) first")
        return self._state["slow"]

    def _run(self, call: _Call, inplace: bool, fused: bool = True) -> tuple[Any, bool]:
        if not call.grads:
            return call.inner([], inplace, fused)
        xp = call.xp
        count, n = self._count(call.grads[0])
        slow = call.own("slow")
        new, in_place = call.inner(call.grads, inplace, fused)
        fast = call.params if in_place else _tree.flatten(new)[1]
        a = self.alpha
        if n is not None:
            self._bump(count, n)
            if (n + 1) % self.k:
                return new, in_place
            synced = [finalize(s + a * (f - s)) for s, f in zip(slow, fast)]
            call.store("slow", synced)
            return call.tree([copy_array(s) for s in synced]), False
        sync = (count + 1) % self.k == 0
        synced = [finalize(s + a * (f - s)) for s, f in zip(slow, fast)]
        call.store("slow", [finalize(xp.where(sync, y, s)) for y, s in zip(synced, slow)])
        self._bump(count, None)
        return call.tree([finalize(xp.where(sync, y, f)) for y, f in zip(synced, fast)]), False
