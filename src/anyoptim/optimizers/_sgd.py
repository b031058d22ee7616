"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from typing import Any

from .._backend._rules import Elementwise, Hyper, is_positive, is_zero, learning_rate
from ._base import LearningRate, Optimizer
from ._validate import require


def _flags(h: Hyper) -> tuple[bool, ...]:
    # a traced value takes the general branch, which gives the same numbers
    return (not is_zero(h["weight_decay"]), is_positive(h["momentum"]) is not False,
            is_positive(h["dampening"]) is not False, bool(h["nesterov"]))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (learning_rate(xp, h, dtype), h["momentum"], h["weight_decay"], 1 - h["dampening"])


def _element(ops: Any, flags: tuple[bool, ...]) -> Any:
    use_wd, use_momentum, use_dampening, nesterov = flags

    def sgd(p: Any, g: Any, v: Any, sc: Any) -> Any:
        lr, momentum, wd, undamped = sc
        if use_wd:
            g = g + wd * p
        if not use_momentum:
            return p - lr * g, v
        v = momentum * v
        v = v + (undamped * g if use_dampening else g)
        if nesterov:
            return p - lr * (g + momentum * v), v
        return p - lr * v, v

    return sgd


class SGD(Optimizer):
    r"""Stochastic gradient descent (with optional momentum).

    .. math::

        g_t &\leftarrow g_t + \lambda p_t \\
        v_{t+1} &= \mu v_t + (1 - \tau) g_t \\
        p_{t+1} &= p_t - \eta \, (g_t + \mu v_{t+1} \text{ if nesterov else } v_{t+1})

    Unlike ``torch.optim.SGD``, dampening applies from the first step (MLX semantics).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule ``step -> lr``.
        momentum: momentum strength :math:`\mu`. Default ``0``.
        weight_decay: L2 penalty :math:`\lambda` added to the gradient. Default ``0``.
        dampening: dampening :math:`\tau` of the momentum. Default ``0``.
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0). Default False.

    State per parameter: ``v`` (one array like the parameter).

    Reference: Sutskever et al., "On the importance of initialization and momentum in deep
    learning", ICML 2013.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.SGD(learning_rate=0.1, momentum=0.9)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.1, -0.1], dtype=float32)}
    """

    rule = Elementwise(state=("v",), element=_element, scalars=_scalars, flags=_flags)
    hyperparameters = ("momentum", "weight_decay", "dampening", "nesterov")

    def __init__(
        self,
        learning_rate: LearningRate,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if nesterov:
            require(momentum > 0, "SGD", "momentum", "> 0 when nesterov=True", momentum,
                    "Nesterov momentum needs a positive momentum; set momentum or nesterov=False.")
            require(dampening == 0, "SGD", "dampening", "0 when nesterov=True", dampening,
                    "Nesterov momentum requires zero dampening.")
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dampening = dampening
        self.nesterov = nesterov
