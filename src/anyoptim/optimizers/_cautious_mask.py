"""The cautious flag (Liang et al., "Cautious Optimizers: Improving Training with One Line of
Code", 2024) for optimizers whose elementwise update is ``decay * p + step``.

Where the step and the gradient disagree in sign the step is dropped, and the rest is scaled
per tensor, so it needs the tensor's mean: with ``cautious`` on, the optimizer runs its rule
through the per-tensor hook (the reference executor, twice: once with the parameter and once
from zero, which gives the step alone since decoupled decay multiplies the parameter), and
with it off nothing changes (the rule keeps its fused executors and MLX's numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import _backend
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
