"""Drop-ins for pytorch_optimizer's AdaBelief and LaProp (AdamAtan2 and StableAdamW are in
:mod:`._atan2_stable`).

Each class maps the reference's keywords onto the options of the anyoptim optimizer that holds
the maths (``anyoptim.optimizers._<name>``) and runs that optimizer's rule: there is no second
copy of the update here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .._backend import run_reference
from .._backend._rules import Elementwise, Hyper
from ..optimizers import _adabelief, _laprop
from ..optimizers._cautious_mask import masked
from ._common import (
    _XP,
    _check_bool,
    _check_number,
    _fail,
    _lr_value,
    _zeros,
)
from ._frontend import _Elementwise
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

__all__ = ["AdaBelief", "LaProp"]


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
