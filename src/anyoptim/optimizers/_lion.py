"""Lion: sign-based momentum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import LearningRate, Optimizer
from ._validate import check_betas


class Lion(Optimizer):
    r"""Lion (Chen et al., "Symbolic discovery of optimization algorithms", 2023).

    .. math::

        c_t &= \beta_1 m_t + (1 - \beta_1) g_t \\
        m_{t+1} &= \beta_2 m_t + (1 - \beta_2) g_t \\
        p_{t+1} &= p_t (1 - \eta \lambda) - \eta \, \mathrm{sign}(c_t)

    Weight decay is applied only when :math:`\lambda > 0`.

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.99]``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Lion(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.array([1.0, -2.0, 0.0], np.float32)},
        ...                     {"w": np.zeros(3, np.float32)})
        {'w': array([-0.01,  0.01,  0.  ], dtype=float32)}
    """

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.99],
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        check_betas("Lion", betas)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.weight_decay = weight_decay

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["m"] = self.xp.zeros_like(parameter)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        lr = self._lr(gradient)
        b1, b2 = self.betas
        m = state["m"]
        c = b1 * m + (1 - b1) * gradient
        state["m"] = b2 * m + (1 - b2) * gradient
        if self.weight_decay > 0:
            parameter = (1 - lr * self.weight_decay) * parameter
        return parameter - lr * self.xp.sign(c)
