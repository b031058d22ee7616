"""The cautious flag (Liang et al., "Cautious Optimizers: Improving Training with One Line of
Code", 2024) for optimizers whose elementwise update is ``decay * p + step``.

Where the step and the gradient disagree in sign the step is dropped, and the rest is scaled
per tensor, so it needs the tensor's mean: with ``cautious`` on, the optimizer runs its rule
through the per-tensor hook (the reference executor, twice: once with the parameter and once
from zero, which gives the step alone since decoupled decay multiplies the parameter), and
with it off nothing changes (the rule keeps its fused executors and MLX's numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import _backend
from ._adam import Adam, AdamW
from ._base import LearningRate
from ._lion import Lion
from ._validate import require

#: How the kept part is scaled: "mean" is the paper's, timm's and C-Optim's
#: 1 / max(mean(mask), 1e-3); "count" is pytorch_optimizer's numel / (sum(mask) + 1).
SCALES = ("mean", "count")


def check(name: str, cautious: Any, cautious_scale: Any) -> None:
    require(isinstance(cautious, bool), name, "cautious", "True or False", cautious)
    require(cautious_scale in SCALES, name, "cautious_scale", "'mean' or 'count'",
            cautious_scale, "'mean': 1/max(mean(mask), 1e-3) as in the paper and timm; "
            "'count': numel/(sum(mask)+1) as in pytorch_optimizer.")


def masked(xp: Any, step: Any, g: Any, scale: str, other: float = 0.0,
           floor: float = 1e-3) -> Any:
    """``step`` where ``-step`` (the update direction) and ``g`` agree in sign, else ``other``
    times it (0: dropped), scaled by the tensor's share of kept entries (``"mean"``: divided
    by ``max(mean, floor)``; ``"count"``: times ``numel / (sum + 1)``)."""
    keep = xp.astype(-step * g > 0, step.dtype)
    if other != 0.0:  # adam_atan2_pytorch's cautious_factor
        keep = keep * (1.0 - other) + other
    n = 1
    for size in keep.shape:
        n *= size
    if scale == "count":
        factor = (n * 1.0) / (xp.sum(keep) + 1)
    else:
        mean = xp.sum(keep) / max(n, 1)
        factor = 1 / xp.maximum(mean, xp.zeros_like(mean) + floor)
    return step * (keep * factor)


class CautiousMixin:
    """Adds ``cautious`` to an elementwise optimizer (see the module docstring). A subclass
    calls :meth:`_set_cautious` at the end of its constructor."""

    cautious: bool = False
    cautious_scale: str = "mean"
    xp: Any
    _state: dict[str, Any]
    rule: Any  # an annotation only: the optimizer class holds the rule

    def _set_cautious(self, cautious: bool, cautious_scale: str, other: float = 0.0,
                      floor: float = 1e-3) -> None:
        check(type(self).__name__, cautious, cautious_scale)
        self.cautious = cautious
        self.cautious_scale = cautious_scale
        self._cautious_other = other
        self._cautious_floor = floor
        if cautious:
            rule = self.rule
            if rule is None:  # pragma: no cover - a programming error
                raise AssertionError("cautious needs an elementwise rule")
            self._cautious_rule = rule
            self.rule = None  # per tensor: the scale is a mean over the tensor

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        rule = self.__dict__.get("_cautious_rule")
        if rule is None or self.__dict__.get("rule", rule) is not None:
            return super().init_single(parameter, state)  # type: ignore[misc]
        for key in rule.state:
            state[key] = self.xp.zeros_like(parameter)

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Mapping[str, Any]) -> Any:
        rule = self.__dict__.get("_cautious_rule")
        if rule is None or self.__dict__.get("rule", rule) is not None:
            return super().update_tensor(gradient, parameter, state, h)  # type: ignore[misc]
        xp = self.xp
        step = self._state["step"]
        new_p, new_state = _backend.run_reference(rule, xp, h, step, gradient, parameter,
                                                  state)
        alone, _ = _backend.run_reference(rule, xp, h, step, gradient,
                                          xp.zeros_like(parameter), state)
        state.update(zip(rule.state, new_state))
        # new_p = decay * p + alone: replace alone by its masked, rescaled part
        kept = masked(xp, alone, gradient, self.cautious_scale, self._cautious_other,
                      self._cautious_floor)
        return new_p + (kept - alone)


# ----------------------------------------------------------------------------- classes
# MLX's Adam, AdamW and Lion keep MLX's signatures (tests/test_core_behaviour.py checks them),
# so the cautious forms are subclasses, named after the paper's C-AdamW and C-Lion.
class CautiousAdam(CautiousMixin, Adam):
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
        check(self._name, True, cautious_scale)
        super().__init__(learning_rate, betas, eps, bias_correction)
        self._set_cautious(True, cautious_scale)


class CautiousAdamW(CautiousMixin, AdamW):
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
        check(self._name, True, cautious_scale)
        super().__init__(learning_rate, betas, eps, weight_decay, bias_correction)
        self._set_cautious(True, cautious_scale)


class CautiousLion(CautiousMixin, Lion):
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
        check(self._name, True, cautious_scale)
        super().__init__(learning_rate, betas, weight_decay)
        self._set_cautious(True, cautious_scale)
