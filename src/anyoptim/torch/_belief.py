"""Drop-ins for pytorch_optimizer's AdaBelief, LaProp and StableAdamW, and for
adam_atan2_pytorch's AdamAtan2.

Each class maps the reference's keywords onto the options of the anyoptim optimizer that holds
the maths (``anyoptim.optimizers._<name>``) and runs that optimizer's rule: there is no second
copy of the update here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import optimizers as _optimizers
from .._backend import run_reference
from .._backend._rules import Elementwise, Hyper
from ..optimizers import _adabelief, _adam_atan2, _laprop
from ..optimizers._cautious_mask import masked
from ._common import (
    _XP,
    _check_betas,
    _check_bool,
    _check_lr,
    _check_number,
    _fail,
    _lr_value,
    _zeros,
)
from ._frontend import _Elementwise
from ._matrix import _PerTensor
from ._more import _adapted, _no_extras


def _cautious_update(opt: _Elementwise, group: dict[str, Any], params: list[Tensor],
                     scale: str, other: float, floor: float) -> None:
    """A group's cautious update (see :mod:`anyoptim.optimizers._cautious`): the drop-in's
    rule on the reference path, per tensor, once with the parameter and once from zero (the
    step alone), the step then masked and rescaled over the tensor."""
    h = opt._hyper(group)
    h["lr"] = _lr_value(h["lr"])
    rule = opt._rule(h)
    bucketed = type(opt)._bucket is not _Elementwise._bucket
    for p in params:
        st = opt.state[p]
        if not st:
            opt._init_state(p, st, h)
        for key in rule.state:
            if st.get(key) is None:
                st[key] = _zeros(p)
        extra = opt._bucket(st, h) if bucketed else ()
        st["step"] += 1
        hb = {**h, "_extra": extra}
        count = float(st["step"])
        g = p.grad
        old = {key: st[key] for key in rule.state}
        new_p, new_s = run_reference(rule, _XP, hb, count, g, p, old)
        alone, _ = run_reference(rule, _XP, hb, count, g, torch.zeros_like(p), old)
        p.copy_(new_p + (masked(_XP, alone, g, scale, other, floor) - alone))
        for key, value in zip(rule.state, new_s):
            st[key].copy_(value)

__all__ = ["AdaBelief", "AdamAtan2", "LaProp", "StableAdamW"]


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



# ----------------------------------------------------------------------------- LaProp
def _laprop_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": h["betas"], "eps": h["eps"], "eps_root": 1e-15,
            "weight_decay": h["weight_decay"], "decouple": h["weight_decouple"],
            "_late_l2": True, "fixed_decay": h["fixed_decay"], "centered": h["centered"],
            "steps_before_using_centered": h["_centered_after"],
            "_lr_average": h["_extra"][0] if h.get("_extra") else None,
            "maximize": h["maximize"]}


_LAPROP_NAMES = {"m": "exp_avg", "v": "exp_avg_sq", "mean": "exp_mean_avg_beta2",
                 "v_max": "max_exp_avg_sq"}
_LAPROP = {key: _adapted(rule, tuple(_LAPROP_NAMES[n] for n in rule.state), _laprop_core)
           for key, rule in _laprop.RULES.items()}


class LaProp(_Elementwise):
    r"""LaProp with ``pytorch_optimizer.LaProp``'s keywords, defaults and maths.

    See :class:`anyoptim.LaProp`. As in pytorch_optimizer, the first moment's bias
    correction is a running average of the learning rate (``exp_avg_lr_1``, one per
    parameter), so a changing ``lr`` (an LR scheduler) gives the same numbers; decoupled
    decay comes after the step; ``weight_decouple=False`` adds :math:`\lambda p` to the
    gradient only after the step has used it, so (as there) it does not change the
    parameters.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``4e-4``.
        betas: :math:`(eta_1, eta_2)`. Default ``(0.9, 0.999)``.
        centered: subtract the squared running mean of the gradient. Default ``False``.
        steps_before_using_centered: steps before centering starts. Default ``10``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled (AdamW-style) decay. Default ``True``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        ams_bound: the running maximum of the second moment. Default ``False``.
        eps: :math:`\epsilon`. Default ``1e-15``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        cautious: (a keyword, as pytorch_optimizer takes it) keep the step where it agrees
            with the gradient in sign, times numel / (kept + 1), per tensor.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, ``exp_avg_lr_1``,
    ``exp_avg_lr_2`` (and ``exp_mean_avg_beta2`` with ``centered``, ``max_exp_avg_sq`` with
    ``ams_bound``).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.LaProp([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1000,  0.1000])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 4e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        centered: bool = False,
        steps_before_using_centered: int = 10,
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        ams_bound: bool = False,
        eps: float = 1e-15,
        maximize: bool = False,
        foreach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        cautious = kwargs.pop("cautious", False)
        _no_extras("LaProp", kwargs)
        if not isinstance(steps_before_using_centered, int) or steps_before_using_centered < 0:
            _fail("LaProp", "", "steps_before_using_centered", steps_before_using_centered,
                  "an int >= 0", "Pass steps_before_using_centered=10, say.")
        self.steps_before_using_centered = steps_before_using_centered
        defaults = {"lr": lr, "betas": betas, "centered": centered,
                    "weight_decay": weight_decay, "foreach": foreach,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "ams_bound": ams_bound, "eps": eps, "maximize": maximize}
        if cautious:
            defaults["cautious"] = cautious  # pytorch_optimizer reads it from the group
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        for key in ("weight_decouple", "fixed_decay", "centered", "ams_bound", "cautious"):
            if key in group:
                _check_bool("LaProp", where, key, group[key])

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        if group.get("cautious"):
            _cautious_update(self, group, params, "count", 0.0, 1e-3)
        else:
            super()._update_group(gi, group, params)

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h["_centered_after"] = self.steps_before_using_centered
        return h

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        super()._init_state(p, state, h)
        state["exp_avg_lr_1"] = 0.0
        state["exp_avg_lr_2"] = 0.0

    def _bucket(self, state: Mapping[str, Any], h: Hyper) -> tuple[Any, ...]:
        # the running averages of the learning rate advance here, once per step (every
        # hyperparameter has been checked by then, so the step cannot fail afterwards)
        b1, b2 = h["betas"]
        lr = h["lr"]
        if isinstance(lr, torch.Tensor):
            lr = lr.item()
        st: Any = state
        st["exp_avg_lr_1"] = st["exp_avg_lr_1"] * b1 + (1.0 - b1) * lr
        st["exp_avg_lr_2"] = st["exp_avg_lr_2"] * b2 + (1.0 - b2)
        return (st["exp_avg_lr_1"],)

    def _rule(self, h: Hyper) -> Elementwise:
        return _LAPROP[bool(h["centered"]), bool(h["ams_bound"])]


# ----------------------------------------------------------------------------- AdamAtan2
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
