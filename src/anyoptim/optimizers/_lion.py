"""Lion: sign-based momentum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_positive, learning_rate
from ._base import LearningRate, Optimizer
from ._cautious_mask import CautiousMixin, check
from ._validate import check_betas


def _flags(h: Hyper) -> tuple[bool, ...]:
    return (is_positive(h["weight_decay"]) is not False,)  # MLX decays only for wd > 0


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = learning_rate(xp, h, dtype)
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    decay = 1 - lr * wd
    if is_positive(wd) is None:  # traced: choose without a Python comparison
        decay = xp.where(wd > 0, decay, xp.ones_like(decay))
    return (lr, b1, 1 - b1, b2, 1 - b2, decay)


def _element(ops: Any, flags: tuple[bool, ...]) -> Any:
    (use_decay,) = flags

    def lion(p: Any, g: Any, m: Any, sc: Any) -> Any:
        lr, b1, one_minus_b1, b2, one_minus_b2, decay = sc
        c = b1 * m + one_minus_b1 * g
        m = b2 * m + one_minus_b2 * g
        if use_decay:
            p = decay * p
        return p - lr * ops.sign(c), m

    return lion


class Lion(CautiousMixin, Optimizer):
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
        cautious: keyword only. Keep the sign step only where it agrees with the gradient,
            rescaled per tensor (see :class:`CautiousLion`). Default ``False``.
        cautious_scale: keyword only. ``"mean"`` or ``"count"``. Default ``"mean"``.

    State per parameter: ``m`` (4 bytes per float32 parameter).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Lion(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.array([1.0, -2.0, 0.0], np.float32)},
        ...                     {"w": np.zeros(3, np.float32)})
        {'w': array([-0.01,  0.01,  0.  ], dtype=float32)}
    """

    rule = Elementwise(state=("m",), element=_element, scalars=_scalars, flags=_flags)
    hyperparameters = ("betas", "weight_decay")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = [0.9, 0.99],
        weight_decay: float = 0.0,
        *,
        cautious: bool = False,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__()
        check_betas("Lion", betas)
        check(type(self).__name__, cautious, cautious_scale)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.weight_decay = weight_decay
        self._set_cautious(cautious, cautious_scale)

