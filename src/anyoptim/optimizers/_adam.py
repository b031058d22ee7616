"""Adam, AdamW and Adamax."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, learning_rate
from ._base import LearningRate, Optimizer
from ._cautious_mask import CautiousMixin, check
from ._validate import check_betas, require


def _adam_flags(h: Hyper) -> tuple[bool, ...]:
    return ("weight_decay" in h, bool(h["bias_correction"]))


def _adam_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = learning_rate(xp, h, dtype)
    b1, b2 = h["betas"]
    decay = 1 - lr * h["weight_decay"] if "weight_decay" in h else 1
    c1 = c2 = lr
    if h["bias_correction"]:
        t = xp.astype(step, xp.float32)
        c1 = xp.astype(lr / (1 - b1**t), dtype)
        c2 = xp.astype(1 / xp.sqrt(1 - b2**t), dtype)
    return (lr, b1, 1 - b1, b2, 1 - b2, h["eps"], decay, c1, c2)


def _adam(ops: Any, flags: tuple[bool, ...]) -> Any:
    decoupled, bias_correction = flags

    def adam(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        lr, b1, one_minus_b1, b2, one_minus_b2, eps, decay, c1, c2 = sc
        if decoupled:
            p = p * decay
        m = b1 * m + one_minus_b1 * g
        v = b2 * v + one_minus_b2 * (g * g)
        if bias_correction:
            return p - (c1 * m) / (ops.sqrt(v) * c2 + eps), m, v
        return p - lr * m / (ops.sqrt(v) + eps), m, v

    return adam


def _amsgrad(ops: Any, flags: tuple[bool, ...]) -> Any:
    """Adam whose denominator uses the running maximum of the raw second moment (torch's
    AMSGrad: the maximum is taken before the bias correction divides it)."""
    decoupled, bias_correction = flags

    def amsgrad(p: Any, g: Any, m: Any, v: Any, v_max: Any, sc: Any) -> Any:
        lr, b1, one_minus_b1, b2, one_minus_b2, eps, decay, c1, c2 = sc
        if decoupled:
            p = p * decay
        m = b1 * m + one_minus_b1 * g
        v = b2 * v + one_minus_b2 * (g * g)
        v_max = ops.maximum(v_max, v)
        if bias_correction:
            return p - (c1 * m) / (ops.sqrt(v_max) * c2 + eps), m, v, v_max
        return p - lr * m / (ops.sqrt(v_max) + eps), m, v, v_max

    return amsgrad


RULE = Elementwise(state=("m", "v"), element=_adam, scalars=_adam_scalars, flags=_adam_flags)
AMSGRAD_RULE = Elementwise(state=("m", "v", "v_max"), element=_amsgrad, scalars=_adam_scalars,
                           flags=_adam_flags)


def _adamax_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    b1, b2 = h["betas"]
    return (learning_rate(xp, h, dtype), b1, 1 - b1, b2, h["eps"])


def _adamax(ops: Any, flags: tuple) -> Any:
    def adamax(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        lr, b1, one_minus_b1, b2, eps = sc
        m = b1 * m + one_minus_b1 * g
        v = ops.maximum(b2 * v, ops.abs(g))
        return p - lr * m / (v + eps), m, v

    return adamax


class Adam(CautiousMixin, Optimizer):
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
        amsgrad: keyword only. Divide by the running maximum :math:`\hat v_t = \max(\hat
            v_{t-1}, v_t)` instead of :math:`v_t` (Reddi et al., "On the convergence of Adam
            and beyond", ICLR 2018), with ``torch.optim.Adam(amsgrad=True)``'s semantics: the
            maximum of the raw moment, bias-corrected afterwards. Adds the state entry
            ``v_max``. Default ``False``.
        cautious: keyword only. Keep the step only where it agrees in sign with the gradient,
            rescaled per tensor (see :class:`CautiousAdam`). Default ``False``.
        cautious_scale: keyword only. ``"mean"`` or ``"count"`` (see :class:`CautiousAdam`).

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter); 12 bytes with
    ``amsgrad``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Adam(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.03162276, -0.03162276], dtype=float32)}
    """

    _name = "Adam"
    rule = RULE
    hyperparameters: tuple[str, ...] = ("betas", "eps", "bias_correction")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.999],  # MLX's default (one list shared by all instances)
        eps: float = 1e-8,
        bias_correction: bool = False,
        *,
        amsgrad: bool = False,
        cautious: bool = False,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(eps >= 0.0, self._name, "eps", ">=0", eps)
        require(isinstance(amsgrad, bool), self._name, "amsgrad", "True or False", amsgrad)
        check(self._name, cautious, cautious_scale)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.eps = eps
        self.bias_correction = bias_correction
        self.amsgrad = amsgrad
        if amsgrad:
            self.rule = AMSGRAD_RULE
        self._set_cautious(cautious, cautious_scale)



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
        amsgrad: keyword only, as in :class:`Adam`. Default ``False``.
        cautious: keyword only, as in :class:`Adam`; the decay is not masked. Default
            ``False``.
        cautious_scale: keyword only, as in :class:`Adam`. Default ``"mean"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdamW(learning_rate=0.01, weight_decay=0.1)
        >>> opt.apply_gradients({"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)})
        {'w': array([0.999, 0.999], dtype=float32)}
    """

    _name = "AdamW"
    hyperparameters = ("betas", "eps", "weight_decay", "bias_correction")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.999],
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        bias_correction: bool = False,
        *,
        amsgrad: bool = False,
        cautious: bool = False,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__(
            learning_rate=learning_rate, betas=betas, eps=eps, bias_correction=bias_correction,
            amsgrad=amsgrad, cautious=cautious, cautious_scale=cautious_scale,
        )
        self.weight_decay = weight_decay



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
    rule = Elementwise(state=("m", "v"), element=_adamax, scalars=_adamax_scalars)
    hyperparameters = ("betas", "eps")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.999],
        eps: float = 1e-8,
    ) -> None:
        super().__init__(learning_rate, betas, eps)

