"""Drop-ins for pytorch_optimizer's AdaBelief, LaProp and StableAdamW, and for
adam_atan2_pytorch's AdamAtan2.

Each class maps the reference's keywords onto the options of the anyoptim optimizer that holds
the maths (``anyoptim.optimizers._<name>``) and runs that optimizer's rule: there is no second
copy of the update here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .._backend._rules import Elementwise, Hyper
from ..optimizers import _adabelief
from ._core import _check_bool, _check_number, _Elementwise
from ._more import _adapted, _no_extras

__all__ = ["AdaBelief"]


# ----------------------------------------------------------------------------- AdaBelief
def _adabelief_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": h["betas"], "eps": h["eps"],
            "eps_root": h["eps"], "weight_decay": h["weight_decay"],
            "decouple": h["weight_decouple"], "fixed_decay": h["fixed_decay"],
            "nesterov": False, "rectify": h["rectify"], "n_sma_threshold": h["_n_sma"],
            "degenerated_to_sgd": h["_sgd"], "maximize": h["maximize"]}


_ADABELIEF = _adapted(_adabelief.RULE, ("exp_avg", "exp_avg_var"), _adabelief_core)
_ADABELIEF_AMS = _adapted(_adabelief.AMS_RULE, ("exp_avg", "exp_avg_var", "max_exp_avg_var"),
                          _adabelief_core)


class AdaBelief(_Elementwise):
    r"""AdaBelief with ``pytorch_optimizer.AdaBelief``'s keywords, defaults and maths.

    See :class:`anyoptim.AdaBelief`: :math:`s \leftarrow \beta_2 s + (1 - \beta_2)(g - m)^2 +
    \epsilon` (``eps`` is also the :math:`\epsilon_{root}` added inside), bias-corrected, with
    decoupled weight decay unless ``weight_decouple=False``; ``rectify`` (RAdam's rectifier,
    SGD below ``n_sma_threshold`` with ``degenerated_to_sgd``) and ``ams_bound`` as there.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled (AdamW-style) decay. Default ``True``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        rectify: RAdam's rectification. Default ``False``.
        n_sma_threshold: the rectification threshold. Default ``5``.
        degenerated_to_sgd: momentum steps below the threshold. Default ``True``.
        ams_bound: the running maximum of :math:`s` in the denominator. Default ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        eps: :math:`\epsilon`. Default ``1e-16``.
        maximize: maximise the objective. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_var`` (and ``max_exp_avg_var`` with
    ``ams_bound``); pytorch_optimizer keeps one ``step`` per group instead.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.AdaBelief([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1111,  0.1111])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = False,
        n_sma_threshold: int = 5,
        degenerated_to_sgd: bool = True,
        ams_bound: bool = False,
        foreach: bool | None = None,
        eps: float = 1e-16,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        _no_extras("AdaBelief", kwargs)
        _check_number("AdaBelief", "", "n_sma_threshold", n_sma_threshold, 0.0, None)
        _check_bool("AdaBelief", "", "degenerated_to_sgd", degenerated_to_sgd)
        self.n_sma_threshold = n_sma_threshold
        self.degenerated_to_sgd = degenerated_to_sgd
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "rectify": rectify, "ams_bound": ams_bound, "foreach": foreach, "eps": eps,
                    "maximize": maximize}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        for key in ("weight_decouple", "fixed_decay", "rectify", "ams_bound"):
            if key in group:
                _check_bool("AdaBelief", where, key, group[key])

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h["_n_sma"] = self.n_sma_threshold
        h["_sgd"] = self.degenerated_to_sgd
        return h

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADABELIEF_AMS if h["ams_bound"] else _ADABELIEF

