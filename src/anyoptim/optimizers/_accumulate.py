"""Gradient accumulation over k micro-steps."""

from __future__ import annotations

from typing import Any

from .._backend import finalize
from ._base import Optimizer
from ._validate import require
from ._wrapper import Wrapper, _Call, select


class GradientAccumulation(Wrapper):
    r"""Accumulate the gradients of ``k`` micro-steps, then take one step of ``optimizer``.

    .. math::

        a_j = a_{j-1} + \frac{g_j - a_{j-1}}{j} \text{ (mean) or } a_{j-1} + g_j
        \text{ (sum)}, \qquad
        \text{at } j = k: \theta \leftarrow \text{optimizer}(a_k),\ a \leftarrow 0

    The other calls leave the parameters unchanged. Everything the wrapped optimizer does
    (its ``step`` counter, bias correction, weight decay, clipping wrappers inside it,
    schedules) happens once per real step, never per micro-step (the bug of
    keras-team/keras#19990, where AdamW decayed the weights at every micro-step). With
    ``reduction="mean"`` and micro-batches of equal size whose loss is a mean over examples,
    the result is the step on the concatenated batch (as ``optax.MultiSteps(opt, k)``).

    State: one accumulator per parameter (the gradient's dtype, so +4 bytes per float32
    parameter) and the micro-step counter ``count``. Under ``jax.jit``/``mx.compile`` the
    wrapped step is computed at every micro-step and selected with ``where`` (traced once).

    Args:
        optimizer: the optimizer to wrap.
        k: the number of micro-steps per real step (>= 1; 1 passes the gradients through).
        reduction: ``"mean"`` (default, optax's ``use_grad_mean=True``) or ``"sum"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.GradientAccumulation(optim.SGD(learning_rate=1.0), k=2)
        >>> params = {"w": np.zeros(1, np.float32)}
        >>> params = opt.apply_gradients({"w": np.array([1.0], np.float32)}, params)
        >>> params["w"], int(opt.step)
        (array([0.], dtype=float32), 0)
        >>> params = opt.apply_gradients({"w": np.array([3.0], np.float32)}, params)
        >>> params["w"], int(opt.step)
        (array([-2.], dtype=float32), 1)
    """

    trees = ("gradients",)
    options = ("k", "reduction")

    def __init__(self, optimizer: Optimizer, k: int = 1, reduction: str = "mean") -> None:
        name = type(self).__name__
        require(isinstance(k, int) and not isinstance(k, bool), name, "k", "an integer", k)
        require(k >= 1, name, "k", ">= 1 (the number of micro-steps per real step; "
                "1 disables accumulation)", k)
        require(reduction in ("mean", "sum"), name, "reduction", "'mean' or 'sum'", reduction)
        super().__init__(optimizer)
        self.k = k
        self.reduction = reduction

    def _new_leaf(self, name: str, parameter: Any) -> Any:
        from .. import _backend

        return _backend.namespace(parameter).zeros_like(parameter)

    def _run(self, call: _Call, inplace: bool, fused: bool = True) -> tuple[Any, bool]:
        if not call.grads:
            return call.inner([], inplace, fused)
        xp = call.xp
        count, n = self._count(call.grads[0])
        acc = call.own("gradients")
        k = self.k
        mean = self.reduction == "mean" and k > 1
        if n is not None:
            j = n % k  # micro-steps already in the accumulator
            if mean:  # a running mean, as optax.MultiSteps (exact for j = 0)
                summed = [finalize(a + (g - a) / (j + 1)) for a, g in zip(acc, call.grads)]
            else:
                summed = [finalize(a + g) for a, g in zip(acc, call.grads)]
            if j + 1 < k:
                call.store("gradients", summed)
                self._bump(count, n)
                return call.tree(call.params), True
            new, in_place = call.inner(summed, inplace, fused)
            call.store("gradients", [xp.zeros_like(s) for s in summed])
            self._bump(count, n)
            return new, in_place
        # traced: compute the real step, keep it only at the k-th micro-step
        position = count % k
        last = position == k - 1
        if mean:
            size = xp.astype(position, xp.float32) + 1.0
            summed = [finalize(a + (g - a) / xp.astype(size, g.dtype))
                      for a, g in zip(acc, call.grads)]
        else:
            summed = [finalize(a + g) for a, g in zip(acc, call.grads)]
        new_p, new_inner, old_inner = call.inner_pure(summed)
        self.optimizer.state = select(last, new_inner, old_inner, xp)
        call.store("gradients", [finalize(xp.where(last, xp.zeros_like(s), s)) for s in summed])
        self._bump(count, None)
        out = [finalize(xp.where(last, a, b)) for a, b in zip(new_p, call.params)]
        return call.tree(out), False
