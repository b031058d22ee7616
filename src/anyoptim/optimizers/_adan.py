"""Adan: adaptive Nesterov momentum from gradient differences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero
from ._adopt import number, started, step_value
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require

DIFF_WEIGHTS = ("paper", "optax")


def _inv_bias(xp: Any, beta: float, t: Any) -> Any:
    """``1 / (1 - beta**t)``, computed as ``-1 / expm1(t log beta)`` (no float32 cancellation)."""
    if beta == 0:
        return 1.0
    expm1 = math.expm1 if isinstance(t, float) else xp.expm1
    return -1 / expm1(t * math.log(beta))


def _flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if is_zero(wd) else (1 if h["no_prox"] else 2)
    return (mode, bool(h.get("maximize", False)))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2, b3 = h["betas"]
    t = step_value(xp, step, dtype)
    s = started(xp, t)  # the first step has no previous gradient: its difference is 0
    k = b2 if h["diff_weight"] == "paper" else 1 - b2
    wd = h["weight_decay"]
    # the step as two terms, lr/(1 - b1^t) m/den + lr k/(1 - b2^t) v/den (pytorch_optimizer's
    # order of operations)
    out = (lr * _inv_bias(xp, b1, t), lr * k * _inv_bias(xp, b2, t), b1, 1 - b1, b2, 1 - b2,
           b3, 1 - b3, s, k, _inv_bias(xp, b3, t), h["eps"], h["eps_root"], 1 - lr * wd,
           1 + lr * wd)
    if isinstance(t, float):
        return out
    return tuple(xp.astype(x, dtype) if hasattr(x, "dtype") else x for x in out)


def _element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize = flags

    def adan(p: Any, g: Any, m: Any, v: Any, n: Any, prev: Any, sc: Any) -> Any:
        a1, a2, b1, w1, b2, w2, b3, w3, s, k, c3, eps, eps_root, decay, prox = sc
        if maximize:
            g = -g
        d = (g - prev) * s
        m = b1 * m + w1 * g
        v = b2 * v + w2 * d
        q = g + k * d
        n = b3 * n + w3 * (q * q)
        den = ops.sqrt(n * c3 + eps_root) + eps
        if wd_mode == 1:
            p = p * decay
        p = p - a1 * (m / den) - a2 * (v / den)
        if wd_mode == 2:
            p = p / prox
        return p, m, v, n, g

    return adan


class Adan(Optimizer):
    r"""Adan (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
    Deep Models", 2022; TPAMI 2024).

    With :math:`d_t = g_t - g_{t-1}` (:math:`d_1 = 0`) and decay rates
    :math:`\beta_1, \beta_2, \beta_3`:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) d, \quad
        n \leftarrow \beta_3 n + (1 - \beta_3) (g + \kappa d)^2 \\
        u &= \frac{m / (1 - \beta_1^t) + \kappa\, v / (1 - \beta_2^t)}
                 {\sqrt{n / (1 - \beta_3^t) + \epsilon_{root}} + \epsilon} \\
        p &\leftarrow (p - \eta u) / (1 + \eta\lambda)

    :math:`\kappa = \beta_2` is the paper's (its :math:`1 - \beta_2` with :math:`\beta_2` a
    weight, here a decay rate) and pytorch_optimizer's and timm's (``diff_weight="paper"``);
    ``optax.adan`` uses :math:`\kappa = 1 - \beta_2` (``diff_weight="optax"``). The weight
    decay is proximal, as in the paper's code; ``no_prox=True`` (timm's name) decays as AdamW,
    :math:`p \leftarrow p(1 - \eta\lambda) - \eta u` (optax's maths, and
    pytorch_optimizer's ``weight_decouple=True``).

    State per parameter: ``m``, ``v``, ``n`` and the previous gradient ``g_prev`` (16 bytes per
    float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2, \beta_3)`. Default ``(0.98, 0.92, 0.99)``.
        eps: :math:`\epsilon` (>= 0). Default ``1e-8``.
        eps_root: :math:`\epsilon_{root}` (>= 0; optax's default is ``1e-8``). Default ``0``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        no_prox: AdamW-style instead of proximal weight decay. Default ``False``.
        diff_weight: ``"paper"`` (:math:`\kappa = \beta_2`, default) or ``"optax"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Adan(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.01, -0.01], dtype=float32)}
    """

    _name = "Adan"
    rule = Elementwise(state=("m", "v", "n", "g_prev"), element=_element, scalars=_scalars,
                       flags=_flags)
    hyperparameters: tuple[str, ...] = ("betas", "eps", "eps_root", "weight_decay", "no_prox",
                                        "diff_weight")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        no_prox: bool = False,
        diff_weight: str = "paper",
    ) -> None:
        super().__init__()
        require(len(betas) == 3, self._name, "betas", "three decay rates (b1, b2, b3)", betas)
        check_betas(self._name, betas)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        require(eps_root >= 0.0, self._name, "eps_root", ">= 0", eps_root)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(diff_weight in DIFF_WEIGHTS, self._name, "diff_weight",
                " or ".join(map(repr, DIFF_WEIGHTS)), diff_weight)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.eps_root = eps_root
        self.weight_decay = weight_decay
        self.no_prox = no_prox
        self.diff_weight = diff_weight
