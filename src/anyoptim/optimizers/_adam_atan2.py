"""Adam-atan2: Adam whose division by the root of the second moment is an arctangent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero
from ._ademamix import _bias
from ._adopt import number, step_value
from ._base import LearningRate, Optimizer
from ._cautious_mask import CautiousMixin
from ._validate import check_betas, require


def _small(weight: float) -> bool:
    """torch's lerp formula switches at a weight of 0.5."""
    return abs(weight) < 0.5


def _flags(h: Hyper) -> tuple[Any, ...]:
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    mode = 0 if is_zero(wd) else (2 if h["cautious_wd"] else 1)
    return (mode, _small(1 - b1), _small(1 - b2), bool(h.get("maximize", False)))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2 = h["betas"]
    t = step_value(xp, step, dtype)
    c1 = 1 / _bias(xp, b1, t)
    scale = h["b"]
    c2 = scale * scale / _bias(xp, b2, t)
    lr_wd = lr * h["weight_decay"]
    out = (1 - b1, 1 - b2, c1, c2, lr_wd, 1 - lr_wd, lr * h["a"])
    if isinstance(t, float):
        return out
    return tuple(xp.astype(x, dtype) if hasattr(x, "dtype") else x for x in out)


def _element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, small1, small2, maximize = flags

    def adam_atan2(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        w1, w2, c1, c2, lr_wd, decay, step = sc
        if maximize:
            g = -g
        # m and v move towards g and g^2 as torch's lerp does (two formulas)
        m = m + w1 * (g - m) if small1 else g - (g - m) * (1 - w1)
        g2 = g * g
        v = v + w2 * (g2 - v) if small2 else g2 - (g2 - v) * (1 - w2)
        u = ops.atan2(m * c1, ops.sqrt(v * c2))
        if wd_mode == 1:
            p = p * decay
        elif wd_mode == 2:  # cautious weight decay: only where the update and p agree
            p = p * (1 - lr_wd * ops.maximum(ops.sign(u * p), 0 * u))
        return p - step * u, m, v

    return adam_atan2


class AdamAtan2(CautiousMixin, Optimizer):
    r"""Adam-atan2 (Everett et al., "Scaling Exponents Across Parameterizations and
    Optimizers", 2024): Adam without :math:`\epsilon`, the quotient replaced by an arctangent.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        u_t &= \operatorname{atan2}\Big(\frac{m_t}{1 - \beta_1^t},\,
               b \sqrt{\frac{v_t}{1 - \beta_2^t}}\Big) \\
        p_t &= p_{t-1} (1 - \eta \lambda) - \eta\, a\, u_t

    with the defaults and maths of ``adam_atan2_pytorch.AdamAtan2`` (:math:`a = 1.27`,
    :math:`b = 1`, :math:`\beta = (0.9, 0.99)`). :math:`|u| < \pi/2`, and for small
    :math:`m/\sqrt{v}` the step is Adam's. ``cautious_wd`` decays only where the update and
    the parameter have the same sign (Chen et al. 2025, "Cautious Weight Decay").

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``(0.9, 0.99)``.
        weight_decay: :math:`\lambda` (>= 0), decoupled. Default ``0``.
        a: the scale :math:`a` (> 0) of the update. Default ``1.27``.
        b: the scale :math:`b` (> 0) of the root of the second moment. Default ``1``.
        cautious_wd: cautious weight decay. Default ``False``.
        cautious_factor: adam_atan2_pytorch's cautious update (Liang et al. 2024): where the
            update and the gradient disagree in sign it is multiplied by this factor in
            [0, 1], then the tensor's update is divided by :math:`\max(\mathrm{mean}, 10^{-5})`
            of those multipliers. ``1`` (the default) is off; below 1 the update runs per
            tensor (not with ``cautious_wd``).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdamAtan2(learning_rate=0.1)
        >>> opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)},
        ...                     {"w": np.zeros(2, np.float32)})
        {'w': array([-0.09974557,  0.09974557], dtype=float32)}
    """

    _name = "AdamAtan2"
    rule = Elementwise(state=("m", "v"), element=_element, scalars=_scalars, flags=_flags)
    hyperparameters: tuple[str, ...] = ("betas", "weight_decay", "a", "b", "cautious_wd")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        a: float = 1.27,
        b: float = 1.0,
        cautious_wd: bool = False,
        cautious_factor: float = 1.0,
    ) -> None:
        super().__init__()
        name = self._name
        require(isinstance(cautious_factor, (int, float)) and 0.0 <= cautious_factor <= 1.0,
                name, "cautious_factor", "in [0, 1]", cautious_factor)
        require(not (cautious_wd and cautious_factor < 1), name, "cautious_wd",
                "False when cautious_factor < 1", cautious_wd,
                "adam_atan2_pytorch masks the decay with the already masked update; anyoptim "
                "does not reproduce that combination.")
        check_betas(name, betas)
        require(weight_decay >= 0.0, name, "weight_decay", ">= 0", weight_decay)
        require(a > 0.0, name, "a", "> 0", a, "a scales the update; the paper uses 1.27.")
        require(b > 0.0, name, "b", "> 0", b, "b scales the root of the second moment.")
        require(isinstance(cautious_wd, bool), name, "cautious_wd", "True or False", cautious_wd)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.a = a
        self.b = b
        self.cautious_wd = cautious_wd
        self.cautious_factor = cautious_factor
        if cautious_factor < 1:
            self._set_cautious(True, "mean", other=float(cautious_factor), floor=1e-5)
