"""Optimizers that scale each coordinate by a running average of squared gradients."""

from __future__ import annotations

from typing import Any

from ._base import LearningRate, Optimizer
from ._validate import require


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman and Hinton, 2012, "Lecture 6.5 - rmsprop", COURSERA).

    .. math::

        v_{t+1} &= \alpha v_t + (1 - \alpha) g_t^2 \\
        p_{t+1} &= p_t - \eta \frac{g_t}{\sqrt{v_{t+1}} + \epsilon}

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        alpha: smoothing constant :math:`\alpha` (>= 0). Default ``0.99``.
        eps: term :math:`\epsilon` (> 0) added to the denominator. Default ``1e-8``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.RMSprop(learning_rate=0.01)
        >>> new = opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        >>> np.round(new["w"], 6)
        array([-0.1, -0.1], dtype=float32)
    """

    def __init__(self, learning_rate: LearningRate, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.alpha = alpha
        self.eps = eps
        require(alpha >= 0.0, "RMSprop", "alpha", ">=0", alpha)
        require(eps > 0.0, "RMSprop", "eps", ">0", eps)

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["v"] = self.xp.zeros_like(parameter)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        xp = self.xp
        lr = self._lr(gradient)
        v = self.alpha * state["v"] + (1 - self.alpha) * xp.square(gradient)
        state["v"] = v
        return parameter - lr * gradient / (xp.sqrt(v) + self.eps)


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., "Adaptive subgradient methods", JMLR 2011).

    .. math::

        v_{t+1} &= v_t + g_t^2 \\
        p_{t+1} &= p_t - \eta \frac{g_t}{\sqrt{v_{t+1}} + \epsilon}

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        eps: term :math:`\epsilon` (> 0) added to the denominator. Default ``1e-8``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Adagrad(learning_rate=0.1)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.1, -0.1], dtype=float32)}
    """

    def __init__(self, learning_rate: LearningRate, eps: float = 1e-8) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.eps = eps
        require(eps > 0.0, "Adagrad", "eps", ">0", eps)

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["v"] = self.xp.zeros_like(parameter)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        xp = self.xp
        lr = self._lr(gradient)
        v = state["v"] + xp.square(gradient)
        state["v"] = v
        return parameter - lr * gradient / (xp.sqrt(v) + self.eps)


class AdaDelta(Optimizer):
    r"""AdaDelta (Zeiler, "ADADELTA: an adaptive learning rate method", 2012).

    .. math::

        v_{t+1} &= \rho v_t + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_t + \epsilon}}{\sqrt{v_{t+1} + \epsilon}} g_t \\
        u_{t+1} &= \rho u_t + (1 - \rho) \Delta_t^2 \\
        p_{t+1} &= p_t - \eta \Delta_t

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule (no default, as in MLX).
        rho: decay :math:`\rho` (>= 0). Default ``0.9``.
        eps: term :math:`\epsilon` (> 0). Default ``1e-6``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdaDelta(learning_rate=1.0)
        >>> opt.apply_gradients({"w": np.ones(1, np.float32)}, {"w": np.zeros(1, np.float32)})
        {'w': array([-0.00316226], dtype=float32)}
    """

    def __init__(self, learning_rate: LearningRate, rho: float = 0.9, eps: float = 1e-6) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.rho = rho
        self.eps = eps
        require(rho >= 0.0, "AdaDelta", "rho", ">=0", rho)
        require(eps > 0.0, "AdaDelta", "eps", ">0", eps)

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["v"] = self.xp.zeros_like(parameter)
        state["u"] = self.xp.zeros_like(parameter)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        xp = self.xp
        lr = self._lr(gradient)
        rho, eps = self.rho, self.eps
        u = state["u"]
        v = rho * state["v"] + (1 - rho) * xp.square(gradient)
        delta = xp.sqrt(u + eps) / xp.sqrt(v + eps) * gradient
        state["v"] = v
        state["u"] = rho * u + (1 - rho) * xp.square(delta)
        return parameter - lr * delta
