"""Drop-ins for pytorch_optimizer's ADOPT, AdEMAMix, Adan and SignSGD (Lamb and LARS: ``_trust``).

Each class maps pytorch_optimizer's keywords onto the options of the anyoptim optimizer that
holds the maths (``anyoptim.optimizers._<name>``) and runs that optimizer's rule: there is no
second copy of the update here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from .. import optimizers as _core
from .._backend._rules import Elementwise, Hyper
from ._common import _check_bool, _check_number, _fail
from ._frontend import _Elementwise

__all__ = ["ADOPT", "AdEMAMix", "Adan", "SignSGD"]


def _adapted(rule: Elementwise, names: tuple[str, ...],
             to_core: Callable[[Hyper], dict[str, Any]]) -> Elementwise:
    """``rule`` (an anyoptim rule) with torch's state names, reading a torch group's keys."""
    if len(names) != len(rule.state):  # pragma: no cover - a programming error
        raise AssertionError("one torch name per state entry")

    def scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
        return rule.scalars(xp, to_core(h), step, dtype)

    def flags(h: Hyper) -> tuple[Any, ...]:
        return rule.flags(to_core(h))

    return Elementwise(state=names, element=rule.element, scalars=scalars, flags=flags)


def _no_extras(owner: str, kwargs: Mapping[str, Any]) -> None:
    """pytorch_optimizer accepts ``**kwargs``; anyoptim refuses switches it does not run."""
    for key, value in kwargs.items():
        if value:
            _fail(owner, "", key, value, "absent or False",
                  "anyoptim does not implement this pytorch_optimizer switch; drop it.")


def _quarter(step: Any) -> Any:
    return step**0.25


# ----------------------------------------------------------------------------- ADOPT
def _adopt_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": h["betas"], "eps": h["eps"],
            "weight_decay": h["weight_decay"], "decouple": h["weight_decouple"],
            "fixed_decay": h["fixed_decay"], "clip": h["_clip"], "clip_step_offset": 0,
            "nesterov": False, "maximize": h["maximize"]}


_ADOPT = _adapted(_core.ADOPT.rule, ("exp_avg", "exp_avg_sq"), _adopt_core)


class ADOPT(_Elementwise):
    r"""ADOPT with ``pytorch_optimizer.ADOPT``'s keywords, defaults and maths.

    See :class:`anyoptim.ADOPT`: the gradient normalised by :math:`\max(\sqrt{v_{t-1}},
    \epsilon)` and clipped to :math:`\pm` ``clip_lambda(t)``, averaged with :math:`\beta_1`;
    the first step only sets :math:`v = g^2`. Weight decay is added to the gradient unless
    ``weight_decouple=True`` (then :math:`p \leftarrow p(1 - \eta\lambda)`, or
    :math:`p(1 - \lambda)` with ``fixed_decay=True``), on every step including the first.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.9999)``.
        clip_lambda: the clip bound as a function of the step :math:`t` (from 1), or None
            for no clipping. Default :math:`t^{1/4}`.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled (AdamW-style) decay. Default ``False``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        eps: :math:`\epsilon`. Default ``1e-6``.
        maximize: maximise the objective. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (pytorch_optimizer keeps one
    ``step`` per group instead).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.ADOPT([w], lr=0.1)
        >>> for _ in range(2):
        ...     w.grad = torch.tensor([1.0, -2.0])
        ...     opt.step()
        >>> w.detach()
        tensor([-0.0100,  0.0100])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        clip_lambda: Callable[[float], float] | None = _quarter,
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        foreach: bool | None = None,
        eps: float = 1e-6,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        _no_extras("ADOPT", kwargs)
        if clip_lambda is not None and not callable(clip_lambda):
            _fail("ADOPT", "", "clip_lambda", clip_lambda, "a function of the step or None",
                  "Pass clip_lambda=lambda step: step ** 0.25, say.")
        self.clip_lambda = clip_lambda
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "foreach": foreach, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        for key in ("weight_decouple", "fixed_decay"):
            if key in group:
                _check_bool("ADOPT", where, key, group[key])

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h["_clip"] = self.clip_lambda
        return h

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADOPT




# ----------------------------------------------------------------------------- AdEMAMix
def _ademamix_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": h["betas"], "alpha": h["alpha"], "eps": h["eps"],
            "eps_root": 0.0, "weight_decay": h["weight_decay"], "decouple": h["weight_decouple"],
            "fixed_decay": h["fixed_decay"], "warmup": h["t_alpha_beta3"],
            "maximize": h["maximize"]}


_ADEMAMIX = _adapted(_core.AdEMAMix.rule, ("exp_avg", "exp_avg_slow", "exp_avg_sq"),
                     _ademamix_core)


class AdEMAMix(_Elementwise):
    r"""AdEMAMix with ``pytorch_optimizer.AdEMAMix``'s keywords, defaults and maths.

    See :class:`anyoptim.AdEMAMix`: Adam (bias-corrected) whose numerator adds
    :math:`lpha` times a slow, never bias-corrected average with :math:`eta_3`;
    ``t_alpha_beta3`` warms :math:`lpha` up linearly and :math:`eta_3` linearly in
    half-life. Weight decay is added to the gradient unless ``weight_decouple=True``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2, \beta_3)`. Default ``(0.9, 0.999, 0.9999)``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled (AdamW-style) decay. Default ``False``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        alpha: weight of the slow average. Default ``5.0``.
        t_alpha_beta3: warmup steps of alpha and beta3, or None. Default None.
        eps: :math:`\epsilon`. Default ``1e-8``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_slow``, ``exp_avg_sq``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.AdEMAMix([w], lr=0.01)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.0100, -0.0100])
    """

    _checked = ("lr", "eps", "weight_decay", "alpha", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        alpha: float = 5.0,
        t_alpha_beta3: float | None = None,
        eps: float = 1e-8,
        maximize: bool = False,
        foreach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        _no_extras("AdEMAMix", kwargs)
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "alpha": alpha, "t_alpha_beta3": t_alpha_beta3, "eps": eps,
                    "maximize": maximize, "foreach": foreach}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        betas = group.get("betas")
        if betas is not None:
            if not isinstance(betas, (tuple, list)) or len(betas) != 3:
                _fail("AdEMAMix", where, "betas", betas, "three decay rates (b1, b2, b3)",
                      "Pass betas=(0.9, 0.999, 0.9999), say.")
            for i, beta in enumerate(betas):
                _check_number("AdEMAMix", where, f"betas[{i}]", beta, 0.0, 1.0)
        for key in ("weight_decouple", "fixed_decay"):
            if key in group:
                _check_bool("AdEMAMix", where, key, group[key])
        t = group.get("t_alpha_beta3")
        if t is not None:
            _check_number("AdEMAMix", where, "t_alpha_beta3", t, 1.0, None)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADEMAMIX


# ----------------------------------------------------------------------------- Adan
def _adan_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": h["betas"], "eps": h["eps"], "eps_root": 0.0,
            "weight_decay": h["weight_decay"], "no_prox": h["weight_decouple"],
            "diff_weight": "paper", "maximize": h["maximize"]}


_ADAN = _adapted(_core.Adan.rule, ("exp_avg", "exp_avg_diff", "exp_avg_sq", "previous_grad"),
                 _adan_core)


class Adan(_Elementwise):
    r"""Adan with ``pytorch_optimizer.Adan``'s keywords, defaults and maths.

    See :class:`anyoptim.Adan` (``diff_weight="paper"``): proximal weight decay
    :math:`p \leftarrow (p - \eta u)/(1 + \eta\lambda)` unless ``weight_decouple=True``.
    ``previous_grad`` holds the previous gradient (pytorch_optimizer keeps its negative).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2, \beta_3)`. Default ``(0.98, 0.92, 0.99)``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: AdamW-style instead of proximal decay. Default ``False``.
        max_grad_norm: must be ``0`` (use ``torch.nn.utils.clip_grad_norm_`` before the step).
        foreach: accepted for compatibility.
        eps: :math:`\epsilon`. Default ``1e-8``.
        maximize: maximise the objective. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq``,
    ``previous_grad``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.Adan([w], lr=0.01)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.0100, -0.0100])
    """

    _checked = ("lr", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        max_grad_norm: float = 0.0,
        foreach: bool | None = None,
        eps: float = 1e-8,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        _no_extras("Adan", kwargs)
        if max_grad_norm != 0:
            _fail("Adan", "", "max_grad_norm", max_grad_norm, "0",
                  "Clip with torch.nn.utils.clip_grad_norm_(params, max_norm) before step().")
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "max_grad_norm": 0.0,
                    "foreach": foreach, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        _check_three_betas("Adan", where, group.get("betas"))
        if "weight_decouple" in group:
            _check_bool("Adan", where, "weight_decouple", group["weight_decouple"])

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAN


def _check_three_betas(owner: str, where: str, betas: Any) -> None:
    if betas is None:
        return
    if not isinstance(betas, (tuple, list)) or len(betas) != 3:
        _fail(owner, where, "betas", betas, "three decay rates (b1, b2, b3)",
              "Pass three betas, e.g. (0.98, 0.92, 0.99).")
    for i, beta in enumerate(betas):
        _check_number(owner, where, f"betas[{i}]", beta, 0.0, 1.0)


# ----------------------------------------------------------------------------- SignSGD
def _sign_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "momentum": h["momentum"],
            "weight_decay": h["weight_decay"], "decouple": h["weight_decouple"],
            "maximize": h["maximize"]}


_SIGN = _adapted(_core.SignSGD.stateless_rule, (), _sign_core)
_SIGNUM = _adapted(_core.Signum.rule, ("momentum_buffer",), _sign_core)


class SignSGD(_Elementwise):
    r"""signSGD / Signum with ``pytorch_optimizer.SignSGD``'s keywords, defaults and maths.

    :math:`p \leftarrow p - \eta\, \mathrm{sign}(m)` with
    :math:`m \leftarrow \beta m + (1 - \beta) g` (:class:`anyoptim.Signum`), or the sign of the
    gradient itself for ``momentum=0`` (:class:`anyoptim.SignSGD`). Weight decay is decoupled
    unless ``weight_decouple=False``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        momentum: :math:`\beta` in [0, 1). Default ``0.9``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled decay. Default ``True``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.

    State per parameter: ``momentum_buffer`` (for ``momentum > 0``).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = anyoptim.torch.SignSGD([w], lr=0.125)
        >>> w.grad = torch.tensor([3.0, -0.5, 0.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1250,  0.1250,  0.0000])
    """

    _checked = ("lr", "weight_decay", "maximize")
    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        foreach: bool | None = None,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        _no_extras("SignSGD", kwargs)
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "foreach": foreach,
                    "maximize": maximize}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if "momentum" in group:
            _check_number("SignSGD", where, "momentum", group["momentum"], 0.0, 1.0)
        if "weight_decouple" in group:
            _check_bool("SignSGD", where, "weight_decouple", group["weight_decouple"])

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        pass

    def _rule(self, h: Hyper) -> Elementwise:
        return _SIGNUM if h["momentum"] > 0 else _SIGN
