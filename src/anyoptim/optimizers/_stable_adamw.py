"""StableAdamW: AdamW whose learning rate is divided, per tensor, by the RMS of g^2 / v."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._backend._rules import Hyper, is_zero, static
from ._adopt import number, step_value
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require


def debiased(beta: float, t: Any) -> Any:
    """:math:`\\beta (1 - \\beta^{t-1}) / (1 - \\beta^t)`: the decay that makes an average
    bias-free (0 at the first step), as pytorch_optimizer writes it."""
    bt = beta**t
    return (bt - beta) / (bt - 1.0)


class StableAdamW(Optimizer):
    r"""StableAdamW (Wortsman et al., "Stable and low-precision training for large-scale
    vision-language models", NeurIPS 2023): AdamW with Adafactor's update clipping, per tensor.

    The averages are bias-free by construction (their decay is
    :math:`\hat\beta_t = \beta (1 - \beta^{t-1}) / (1 - \beta^t)`, 0 at the first step), and
    each tensor's learning rate is divided by the RMS of :math:`g^2 / v`, when above 1:

    .. math::

        m_t &= \hat\beta_{1,t} m_{t-1} + (1 - \hat\beta_{1,t}) g_t, \quad
        v_t = \hat\beta_{2,t} v_{t-1} + (1 - \hat\beta_{2,t}) g_t^2 \\
        \eta'_t &= \eta \big/ \max\Big(1, \sqrt{\operatorname{mean}\big(g_t^2 /
                   \max(v_t, \epsilon^2)\big)}\Big) \\
        p_t &= p_{t-1} (1 - \eta'_t \lambda) - \eta'_t \frac{m_t}{\sqrt{v_t} + \epsilon}

    the maths and defaults of ``pytorch_optimizer.StableAdamW`` (decoupled decay by the
    clipped learning rate; ``decouple=False`` adds :math:`\lambda p` to the gradient instead).
    Its Kahan summation for 16-bit parameters is not reproduced.

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``(0.9, 0.99)``.
        eps: :math:`\epsilon` (>= 0). Default ``1e-8``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0.01``.
        decouple: decoupled (AdamW-style) decay. Default ``True``.
        maximize: ascend instead of descend. Default ``False``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.StableAdamW(learning_rate=0.1, weight_decay=0.0)
        >>> opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)},
        ...                     {"w": np.zeros(2, np.float32)})
        {'w': array([-0.1,  0.1], dtype=float32)}
    """

    _name = "StableAdamW"
    hyperparameters: tuple[str, ...] = ("betas", "eps", "weight_decay", "decouple", "maximize")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        decouple: bool = True,
        maximize: bool = False,
    ) -> None:
        super().__init__()
        name = self._name
        check_betas(name, betas)
        require(eps >= 0.0, name, "eps", ">= 0", eps)
        require(weight_decay >= 0.0, name, "weight_decay", ">= 0", weight_decay)
        require(isinstance(decouple, bool), name, "decouple", "True or False", decouple)
        require(isinstance(maximize, bool), name, "maximize", "True or False", maximize)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.maximize = maximize

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["m"] = self.xp.zeros_like(parameter)
        state["v"] = self.xp.zeros_like(parameter)

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Hyper) -> Any:
        xp = self.xp
        g, p = gradient, parameter
        if math.prod(p.shape) == 0:  # no elements: no mean to take
            return p
        b1, b2 = h["betas"]
        step = self._state["step"]
        host = static(step)  # a concrete step: the decays in float64, as pytorch_optimizer
        t = float(host) if host is not None else step_value(xp, step, p.dtype)
        w1 = 1 - debiased(b1, t)
        d2 = debiased(b2, t)
        w2 = 1 - d2
        if not isinstance(t, float):
            w1, d2, w2 = (xp.astype(x, p.dtype) for x in (w1, d2, w2))
        if h["maximize"]:
            g = -g
        wd = h["weight_decay"]
        if not is_zero(wd) and not h["decouple"]:
            g = g + number(xp, wd, p.dtype) * p
        m = state["m"] + w1 * (g - state["m"])
        v = state["v"] * d2 + w2 * (g * g)
        eps = h["eps"]
        ratio = xp.mean((g * g) / xp.maximum(v, xp.zeros_like(v) + eps * eps))
        rms = xp.maximum(xp.sqrt(ratio), xp.ones_like(ratio))
        lr = number(xp, h["learning_rate"], p.dtype) / rms
        if not is_zero(wd) and h["decouple"]:
            p = p * (1 - number(xp, wd, p.dtype) * lr)
        state["m"], state["v"] = m, v
        return p - (lr * m) / (xp.sqrt(v) + eps)
