"""Optimizers that scale each coordinate by a running average of squared gradients."""

from __future__ import annotations

from typing import Any

from .._backend._rules import Elementwise, Hyper, learning_rate
from ._base import LearningRate, Optimizer
from ._validate import require


def _rmsprop_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (learning_rate(xp, h, dtype), h["alpha"], 1 - h["alpha"], h["eps"])


def _rmsprop(ops: Any, flags: tuple) -> Any:
    def rmsprop(p: Any, g: Any, v: Any, sc: Any) -> Any:
        lr, alpha, one_minus_alpha, eps = sc
        v = alpha * v + one_minus_alpha * (g * g)
        return p - lr * g / (ops.sqrt(v) + eps), v

    return rmsprop


def _adagrad_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (learning_rate(xp, h, dtype), h["eps"])


def _adagrad(ops: Any, flags: tuple) -> Any:
    def adagrad(p: Any, g: Any, v: Any, sc: Any) -> Any:
        lr, eps = sc
        v = v + g * g
        return p - lr * g / (ops.sqrt(v) + eps), v

    return adagrad


def _adadelta_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (learning_rate(xp, h, dtype), h["rho"], 1 - h["rho"], h["eps"])


def _adadelta(ops: Any, flags: tuple) -> Any:
    def adadelta(p: Any, g: Any, v: Any, u: Any, sc: Any) -> Any:
        lr, rho, one_minus_rho, eps = sc
        v = rho * v + one_minus_rho * (g * g)
        d = ops.sqrt(u + eps) / ops.sqrt(v + eps) * g
        u = rho * u + one_minus_rho * (d * d)
        return p - lr * d, v, u

    return adadelta


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

    rule = Elementwise(state=("v",), element=_rmsprop, scalars=_rmsprop_scalars)
    hyperparameters = ("alpha", "eps")

    def __init__(self, learning_rate: LearningRate, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.alpha = alpha
        self.eps = eps
        require(alpha >= 0.0, "RMSprop", "alpha", ">=0", alpha)
        require(eps > 0.0, "RMSprop", "eps", ">0", eps)



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

    rule = Elementwise(state=("v",), element=_adagrad, scalars=_adagrad_scalars)
    hyperparameters = ("eps",)

    def __init__(self, learning_rate: LearningRate, eps: float = 1e-8) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.eps = eps
        require(eps > 0.0, "Adagrad", "eps", ">0", eps)



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

    rule = Elementwise(state=("v", "u"), element=_adadelta, scalars=_adadelta_scalars)
    hyperparameters = ("rho", "eps")

    def __init__(self, learning_rate: LearningRate, rho: float = 0.9, eps: float = 1e-6) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.rho = rho
        self.eps = eps
        require(rho >= 0.0, "AdaDelta", "rho", ">=0", rho)
        require(eps > 0.0, "AdaDelta", "eps", ">0", eps)

