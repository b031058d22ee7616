"""Drop-ins for adam_atan2_pytorch's AdamAtan2 and pytorch_optimizer's StableAdamW.

As in :mod:`._belief`, each class maps the reference's keywords onto the options of the
anyoptim optimizer that holds the maths and runs that optimizer's rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import optimizers as _optimizers
from .._backend._rules import Elementwise, Hyper
from ..optimizers import _adam_atan2
from ._belief import _cautious_update
from ._common import (
    _check_betas,
    _check_bool,
    _check_lr,
    _check_number,
    _fail,
    _lr_value,
)
from ._frontend import _Elementwise
from ._matrix import _PerTensor
from ._more import _adapted, _no_extras


def _atan2_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": h["betas"], "weight_decay": h["weight_decay"],
            "a": h["a"], "b": h["b"], "cautious_wd": h["cautious_wd"]}


_ATAN2 = _adapted(_adam_atan2.AdamAtan2.rule, ("exp_avg", "exp_avg_sq"), _atan2_core)


class AdamAtan2(_Elementwise):
    r"""Adam-atan2 with ``adam_atan2_pytorch.AdamAtan2``'s keywords, defaults and maths.

    See :class:`anyoptim.AdamAtan2`: :math:`u = \operatorname{atan2}(\hat m, b\sqrt{\hat v})`,
    :math:`p \leftarrow p(1 - \eta\lambda) - \eta a u`. With ``decoupled_wd=True`` the
    groups' ``weight_decay`` is divided by the initial ``lr`` when the optimizer is built (as
    there), so the decay does not follow the learning rate's scale.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta` (> 0). Default ``1e-4``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.99)``.
        weight_decay: :math:`\lambda`. Default ``0``.
        regen_reg_rate: must be ``0`` (regenerative regularisation is not implemented).
        decoupled_wd: divide ``weight_decay`` by the initial lr. Default ``False``.
        cautious_wd: decay only where update and parameter agree in sign. Default ``False``.
        cautious_factor: the cautious update: where update and gradient disagree in sign the
            update is multiplied by this factor in [0, 1], then the tensor's update is divided
            by the mean multiplier (at least 1e-5). Default ``1`` (off).
        a: scale of the update. Default ``1.27``.
        b: scale of the root of the second moment. Default ``1``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (adam_atan2_pytorch names its
    counter ``steps``, a Python int).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.AdamAtan2([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.0997,  0.0997])
    """

    _checked = ("lr", "betas", "weight_decay", "a", "b")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        regen_reg_rate: float = 0.0,
        decoupled_wd: bool = False,
        cautious_wd: bool = False,
        cautious_factor: float = 1.0,
        a: float = 1.27,
        b: float = 1.0,
    ) -> None:
        if regen_reg_rate != 0:
            _fail("AdamAtan2", "", "regen_reg_rate", regen_reg_rate, "0",
                  "anyoptim does not implement regenerative regularisation; drop the argument.")
        _check_number("AdamAtan2", "", "lr", lr, 0.0, None)
        if lr == 0:
            _fail("AdamAtan2", "", "lr", lr, "> 0", "Pass a positive learning rate.")
        _check_bool("AdamAtan2", "", "decoupled_wd", decoupled_wd)
        self._init_lr = lr
        self.decoupled_wd = decoupled_wd
        defaults = {"lr": lr, "betas": betas, "a": a, "b": b, "weight_decay": weight_decay,
                    "cautious_wd": cautious_wd, "regen_reg_rate": 0.0,
                    "cautious_factor": cautious_factor}
        super().__init__(params, defaults)
        if decoupled_wd:
            for group in self.param_groups:
                group["weight_decay"] /= lr
                group["regen_reg_rate"] /= lr

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if "cautious_wd" in group:
            _check_bool("AdamAtan2", where, "cautious_wd", group["cautious_wd"])
        if group.get("regen_reg_rate", 0.0) != 0.0:
            _fail("AdamAtan2", where, "regen_reg_rate", group["regen_reg_rate"], "0",
                  "anyoptim does not implement regenerative regularisation.")
        if "cautious_factor" in group:
            factor = group["cautious_factor"]
            _check_number("AdamAtan2", where, "cautious_factor", factor, 0.0, 1.0,
                          closed_high=True)
            if factor < 1 and group.get("cautious_wd"):
                _fail("AdamAtan2", where, "cautious_wd", True, "False when cautious_factor < 1",
                      "adam_atan2_pytorch masks the decay with the masked update; anyoptim "
                      "does not reproduce that combination.")

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        factor = group["cautious_factor"]
        if factor < 1:
            _cautious_update(self, group, params, "mean", float(factor), 1e-5)
        else:
            super()._update_group(gi, group, params)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ATAN2


# ----------------------------------------------------------------------------- StableAdamW
class StableAdamW(_PerTensor):
    r"""StableAdamW with ``pytorch_optimizer.StableAdamW``'s keywords, defaults and maths.

    See :class:`anyoptim.StableAdamW`: bias-free averages, each tensor's learning rate divided
    by :math:`\max(1, \mathrm{RMS}(g^2 / v))`, decoupled decay by that learning rate unless
    ``weight_decouple=False``. The Kahan summation pytorch_optimizer applies to 16-bit
    parameters (``kahan_sum``) is not reproduced: 16-bit parameters round each update.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.99)``.
        kahan_sum: accepted; without effect on 32- and 64-bit parameters. Default ``True``.
        weight_decay: :math:`\lambda`. Default ``1e-2``.
        weight_decouple: decoupled (AdamW-style) decay. Default ``True``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (pytorch_optimizer keeps one
    ``step`` per group).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.StableAdamW([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1000,  0.1000])
    """

    _core_class = _optimizers.StableAdamW
    _renames: ClassVar[dict[str, str]] = {"m": "exp_avg", "v": "exp_avg_sq"}
    _counts_steps = True

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        kahan_sum: bool = True,
        weight_decay: float = 1e-2,
        weight_decouple: bool = True,
        eps: float = 1e-8,
        foreach: bool | None = None,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        _no_extras("StableAdamW", kwargs)
        super().__init__(params, {"lr": lr, "betas": betas, "kahan_sum": kahan_sum,
                                  "weight_decay": weight_decay,
                                  "weight_decouple": weight_decouple, "eps": eps,
                                  "foreach": foreach, "maximize": maximize})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        if "lr" in group:
            _check_lr("StableAdamW", where, group["lr"])
        if "betas" in group:
            _check_betas("StableAdamW", where, group["betas"])
        for key in ("eps", "weight_decay"):
            if key in group:
                _check_number("StableAdamW", where, key, group[key], 0.0, None)
        for key in ("kahan_sum", "weight_decouple", "maximize"):
            if key in group:
                _check_bool("StableAdamW", where, key, group[key])

    def _build_core(self, group: Mapping[str, Any]) -> _optimizers.Optimizer:
        return _optimizers.StableAdamW(learning_rate=0.0)

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        lr = _lr_value(group["lr"])
        if not isinstance(lr, Tensor):
            # a number would become a float32 array (MLX's learning rate); float64 parameters
            # get it in float64, as pytorch_optimizer uses the Python float
            wide = any(p.dtype == torch.float64 for p in group["params"])
            lr = torch.tensor(lr, dtype=torch.float64 if wide else torch.float32)
        return {"learning_rate": lr, "betas": tuple(group["betas"]),
                "eps": group["eps"], "weight_decay": group["weight_decay"],
                "decouple": group["weight_decouple"], "maximize": group["maximize"]}

__all__ = ["AdamAtan2", "StableAdamW"]
