"""LARS: momentum SGD with a per-tensor trust ratio."""

from __future__ import annotations

from typing import Any

from .._backend._rules import Hyper, is_zero
from ._adopt import number
from ._base import LearningRate, Optimizer
from ._validate import require


class LARS(Optimizer):
    r"""LARS (You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks",
    2017), in ``optax.lars``'s form.

    .. math::

        u &= g + \lambda p, \quad
        \phi = \frac{\kappa \lVert p \rVert}{\lVert u \rVert + \epsilon}
        \ (1 \text{ where either norm is } 0) \\
        b &\leftarrow \mu b + \eta \phi u, \quad p \leftarrow p - b
        \quad (\text{Nesterov: } p \leftarrow p - (\mu b + \eta \phi u))

    per tensor: the momentum accumulates learning-rate-scaled steps (optax's order, which
    matters under schedules). ``exclude_1d=True`` gives scalars and vectors (biases, norm
    scales) neither weight decay nor the trust ratio; optax's ``weight_decay_mask`` and
    ``trust_ratio_mask`` are per-path ``weight_decay`` / ``trust_ratio`` overrides here.

    State per parameter: ``b`` (4 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        momentum: :math:`\mu`, in [0, 1). Default ``0.9``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        trust_coefficient: :math:`\kappa` (> 0). Default ``0.001``.
        eps: :math:`\epsilon` (>= 0). Default ``0``.
        nesterov: Nesterov momentum. Default ``False``.
        trust_ratio: apply the trust ratio. Default ``True``.
        exclude_1d: no decay and no trust ratio for tensors with fewer than 2 dimensions.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.LARS(learning_rate=0.5, trust_coefficient=0.5)
        >>> opt.apply_gradients({"w": np.array([1.0, 1.0])}, {"w": np.array([3.0, 4.0])})
        {'w': array([2.11611652, 3.11611652])}
    """

    _name = "LARS"
    hyperparameters: tuple[str, ...] = ("momentum", "weight_decay", "trust_coefficient", "eps",
                                        "nesterov", "trust_ratio", "exclude_1d")

    def __init__(
        self,
        learning_rate: LearningRate,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 0.0,
        nesterov: bool = False,
        trust_ratio: bool = True,
        exclude_1d: bool = False,
    ) -> None:
        super().__init__()
        require(0.0 <= momentum < 1.0, self._name, "momentum", "in [0, 1)", momentum)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(trust_coefficient > 0.0, self._name, "trust_coefficient", "> 0",
                trust_coefficient)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.trust_coefficient = trust_coefficient
        self.eps = eps
        self.nesterov = nesterov
        self.trust_ratio = trust_ratio
        self.exclude_1d = exclude_1d

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["b"] = self.xp.zeros_like(parameter)

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Hyper) -> Any:
        xp = self.xp
        g, p = gradient, parameter
        small = bool(h["exclude_1d"]) and len(p.shape) < 2
        wd = h["weight_decay"]
        u = g
        if not small and not is_zero(wd):
            u = g + number(xp, wd, p.dtype) * p
        if not small and h["trust_ratio"]:
            pn = xp.sqrt(xp.sum(p * p))
            un = xp.sqrt(xp.sum(u * u))
            one = xp.ones_like(pn)
            zero = xp.logical_or(pn == 0, un == 0)
            ratio = h["trust_coefficient"] * pn / xp.where(zero, one, un + h["eps"])
            u = u * xp.where(zero, one, ratio)
        step = number(xp, h["learning_rate"], p.dtype) * u
        mu = h["momentum"]
        b = mu * state["b"] + step
        state["b"] = b
        if h["nesterov"]:
            return p - (mu * b + step)
        return p - b
