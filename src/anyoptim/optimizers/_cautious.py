"""The cautious optimizers under their own names (C-AdamW and C-Lion in the paper): Adam,
AdamW and Lion with ``cautious=True`` (see :mod:`anyoptim.optimizers._cautious_mask`)."""

from __future__ import annotations

from collections.abc import Sequence

from ._adam import Adam, AdamW
from ._base import LearningRate
from ._lion import Lion


class CautiousAdam(Adam):
    r"""Cautious Adam (Liang et al., "Cautious Optimizers: Improving Training with One Line of
    Code", 2024): :class:`Adam` whose step is kept only where it agrees in sign with the
    gradient, the kept part scaled per tensor:

    .. math::

        u &= \frac{m_{t+1}}{\sqrt{v_{t+1}} + \epsilon} \text{ (bias-corrected with
             ``bias_correction``)}, \quad \phi = \mathbb{1}[u\, g > 0] \\
        p_{t+1} &= p_t - \eta\, \frac{\phi}{\max(\mathrm{mean}(\phi), 10^{-3})}\, u

    (``cautious_scale="mean"``, the paper's, timm's and C-Optim's normalisation), or with the
    factor :math:`n / (\sum \phi + 1)` (``cautious_scale="count"``, pytorch_optimizer's).
    The mean is over each tensor, so the update runs per tensor (no fused kernel).

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.999]``.
        eps: term :math:`\epsilon` (>= 0) added to the denominator. Default ``1e-8``.
        bias_correction: apply bias correction. Default ``False``.
        cautious_scale: ``"mean"`` or ``"count"``. Default ``"mean"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.CautiousAdam(learning_rate=0.01)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> params = opt.apply_gradients({"w": np.array([1.0, -1.0], np.float32)}, params)
        >>> opt.apply_gradients({"w": np.array([1.0, 0.5], np.float32)}, params)
        {'w': array([-0.11661457,  0.03162277], dtype=float32)}
    """

    _name = "CautiousAdam"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        bias_correction: bool = False,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__(learning_rate, betas, eps, bias_correction, cautious=True,
                         cautious_scale=cautious_scale)


class CautiousAdamW(AdamW):
    r"""Cautious AdamW (Liang et al., 2024, C-AdamW): :class:`AdamW` with the cautious step of
    :class:`CautiousAdam`; the decoupled decay :math:`p (1 - \eta\lambda)` is not masked.

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.999]``.
        eps: term :math:`\epsilon` (>= 0). Default ``1e-8``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0.01``.
        bias_correction: apply bias correction. Default ``False``.
        cautious_scale: ``"mean"`` or ``"count"``. Default ``"mean"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.CautiousAdamW(learning_rate=0.01, weight_decay=0.0)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> params = opt.apply_gradients({"w": np.array([1.0, -1.0], np.float32)}, params)
        >>> opt.apply_gradients({"w": np.array([1.0, 0.5], np.float32)}, params)
        {'w': array([-0.11661457,  0.03162277], dtype=float32)}
    """

    _name = "CautiousAdamW"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        bias_correction: bool = False,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__(learning_rate, betas, eps, weight_decay, bias_correction,
                         cautious=True, cautious_scale=cautious_scale)


class CautiousLion(Lion):
    r"""Cautious Lion (Liang et al., 2024, C-Lion): :class:`Lion` whose sign step is kept only
    where it agrees with the gradient, scaled per tensor as in :class:`CautiousAdam`; the
    decoupled decay is not masked.

    State per parameter: ``m`` (4 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.99]``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0``.
        cautious_scale: ``"mean"`` or ``"count"``. Default ``"mean"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.CautiousLion(learning_rate=0.01)
        >>> params = {"w": np.zeros(4, np.float32)}
        >>> params = opt.apply_gradients({"w": np.array([1.0, -1.0, 1.0, 1.0], np.float32)},
        ...                              params)
        >>> params["w"]
        array([-0.01,  0.01, -0.01, -0.01], dtype=float32)
    """

    _name = "CautiousLion"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__(learning_rate, betas, weight_decay, cautious=True,
                         cautious_scale=cautious_scale)
