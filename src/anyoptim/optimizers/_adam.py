"""Adam, AdamW and Adamax."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import LearningRate, Optimizer
from ._validate import check_betas, require


class Adam(Optimizer):
    r"""Adam (Kingma and Ba, "Adam: a method for stochastic optimization", ICLR 2015).

    .. math::

        m_{t+1} &= \beta_1 m_t + (1 - \beta_1) g_t \\
        v_{t+1} &= \beta_2 v_t + (1 - \beta_2) g_t^2 \\
        p_{t+1} &= p_t - \eta \frac{m_{t+1}}{\sqrt{v_{t+1}} + \epsilon}

    As in MLX, bias correction is **off by default**. With ``bias_correction=True`` the step is
    :math:`p - \frac{\eta}{1-\beta_1^t} \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}`, the form
    used by ``torch.optim.Adam`` and optax.

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.999]``.
        eps: term :math:`\epsilon` (>= 0) added to the denominator. Default ``1e-8``.
        bias_correction: apply bias correction. Default ``False``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Adam(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.03162276, -0.03162276], dtype=float32)}
    """

    _name = "Adam"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.999],  # MLX's default (one list shared by all instances)
        eps: float = 1e-8,
        bias_correction: bool = False,
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(eps >= 0.0, self._name, "eps", ">=0", eps)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.eps = eps
        self.bias_correction = bias_correction

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["m"] = self.xp.zeros_like(parameter)
        state["v"] = self.xp.zeros_like(parameter)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        xp = self.xp
        lr = self._lr(gradient)
        b1, b2 = self.betas
        m = b1 * state["m"] + (1 - b1) * gradient
        v = b2 * state["v"] + (1 - b2) * xp.square(gradient)
        state["m"] = m
        state["v"] = v
        if self.bias_correction:
            t = self._step_float()
            c1 = xp.astype(lr / (1 - b1**t), gradient.dtype)
            c2 = xp.astype(1 / xp.sqrt(1 - b2**t), gradient.dtype)
            return parameter - (c1 * m) / (xp.sqrt(v) * c2 + self.eps)
        return parameter - lr * m / (xp.sqrt(v) + self.eps)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov and Hutter, ICLR 2019).

    .. math::

        p_t &\leftarrow p_t (1 - \eta \lambda) \\
        p_{t+1} &= \text{Adam}(p_t, g_t)

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.999]``.
        eps: term :math:`\epsilon` (>= 0). Default ``1e-8``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0.01``.
        bias_correction: apply bias correction. Default ``False``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdamW(learning_rate=0.01, weight_decay=0.1)
        >>> opt.apply_gradients({"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)})
        {'w': array([0.999, 0.999], dtype=float32)}
    """

    _name = "AdamW"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.999],
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        bias_correction: bool = False,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate, betas=betas, eps=eps, bias_correction=bias_correction
        )
        self.weight_decay = weight_decay

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        lr = self._lr(gradient)
        return super().apply_single(gradient, parameter * (1 - lr * self.weight_decay), state)


class Adamax(Adam):
    r"""Adamax, the infinity-norm variant of Adam (Kingma and Ba, ICLR 2015, section 7).

    .. math::

        m_{t+1} &= \beta_1 m_t + (1 - \beta_1) g_t \\
        v_{t+1} &= \max(\beta_2 v_t, |g_t|) \\
        p_{t+1} &= p_t - \eta \frac{m_{t+1}}{v_{t+1} + \epsilon}

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.999]``.
        eps: term :math:`\epsilon` (>= 0). Default ``1e-8``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Adamax(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.001, -0.001], dtype=float32)}
    """

    _name = "Adamax"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.999],
        eps: float = 1e-8,
    ) -> None:
        super().__init__(learning_rate, betas, eps)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        xp = self.xp
        lr = self._lr(gradient)
        b1, b2 = self.betas
        m = b1 * state["m"] + (1 - b1) * gradient
        v = xp.maximum(b2 * state["v"], xp.abs(gradient))
        state["m"] = m
        state["v"] = v
        return parameter - lr * m / (v + self.eps)
