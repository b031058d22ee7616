"""Muon: momentum orthogonalised by Newton-Schulz iterations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._backend import addmm
from .._backend._rules import is_zero
from ._base import LearningRate, Optimizer

# Coefficients of the quintic Newton-Schulz iteration (Jordan et al., 2024).
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


class Muon(Optimizer):
    r"""Muon (Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024).

    .. math::

        g_t &\leftarrow g_t + \lambda p_t \\
        v_{t+1} &= \mu v_t + (1 - \mu) g_t \\
        u_t &= (1-\mu) g_t + \mu v_{t+1} \text{ (Nesterov) or } v_{t+1} \\
        p_{t+1} &= p_t - \eta \sqrt{\max(1, S_{-2}/S_{-1})} \; \mathrm{NS}_k(u_t)

    Tensors with two or more dimensions are orthogonalised with ``ns_steps`` Newton-Schulz
    iterations (reshaped to ``(S[0], -1)`` first); the learning-rate scale uses the last two
    dimensions of the original shape. Scalars and vectors get plain momentum SGD.

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        momentum: :math:`\mu`. Default ``0.95``.
        weight_decay: coupled L2 penalty :math:`\lambda`. Default ``0.01``.
        nesterov: use Nesterov momentum. Default ``True``.
        ns_steps: number of Newton-Schulz iterations :math:`k`. Default ``5``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Muon(learning_rate=0.02, weight_decay=0.0)
        >>> new = opt.apply_gradients({"w": np.eye(3, dtype=np.float32)},
        ...                           {"w": np.zeros((3, 3), np.float32)})
        >>> np.round(new["w"].diagonal(), 3)
        array([-0.014, -0.014, -0.014], dtype=float32)
    """

    hyperparameters = ("momentum", "weight_decay", "nesterov", "ns_steps")

    def __init__(
        self,
        learning_rate: LearningRate,
        momentum: float = 0.95,
        weight_decay: float = 0.01,
        nesterov: bool = True,
        ns_steps: int = 5,
    ) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.ns_steps = ns_steps

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["v"] = self.xp.zeros_like(parameter)

    def _newton_schulz(self, x: Any, steps: int) -> Any:
        xp = self.xp
        a, b, c = _NS_COEFFS
        tall = x.shape[-2] > x.shape[-1]
        if tall:
            x = xp.matrix_transpose(x)
        x = x / (xp.sqrt(xp.sum(xp.square(x))) + 1e-7)
        for _ in range(steps):
            gram = xp.matmul(x, xp.matrix_transpose(x))
            poly = addmm(xp, b * gram, gram, gram, alpha=c)
            x = addmm(xp, a * x, poly, x)
        return xp.matrix_transpose(x) if tall else x

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Mapping[str, Any]) -> Any:
        xp = self.xp
        mu = h["momentum"]
        if not is_zero(h["weight_decay"]):
            gradient = gradient + h["weight_decay"] * parameter
        v = mu * state["v"] + (1 - mu) * gradient
        state["v"] = v
        update = gradient * (1 - mu) + v * mu if h["nesterov"] else v
        lr = xp.astype(h["learning_rate"], gradient.dtype)
        if update.ndim >= 2:
            shape = tuple(update.shape)
            matrix = xp.reshape(update, (shape[0], -1)) if len(shape) > 2 else update
            update = xp.reshape(self._newton_schulz(matrix, h["ns_steps"]), shape)
            lr = lr * max(1, shape[-2] / shape[-1]) ** 0.5
        return parameter - lr * update
