"""``anyoptim.torch.Adagrad``, ``Adadelta``, ``Adamax`` and ``Lion`` on anyoptim's rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .. import optimizers as _core
from .._backend._rules import Elementwise, Hyper, is_positive
from ._adam import _torch_options
from ._common import _check_number, _is_number, _new_step
from ._frontend import _Elementwise, _lerp_small


# ----------------------------------------------------------------------------- Adagrad
def _adagrad_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0))


def _adagrad_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    clr = h["lr"] / (1 + (step - 1) * h["lr_decay"])
    return (-clr, h["weight_decay"], h["eps"])


def _adagrad_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd = flags

    def adagrad(p: Any, g: Any, s: Any, sc: Any) -> tuple[Any, Any]:
        neg_clr, wd, eps = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        s = s + g * g
        return p + neg_clr * g / (ops.sqrt(s) + eps), s

    return adagrad


_ADAGRAD = Elementwise(state=("sum",), element=_adagrad_element, scalars=_adagrad_scalars,
                       flags=_adagrad_flags)


class Adagrad(_Elementwise):
    r"""Adagrad with ``torch.optim.Adagrad``'s keywords, defaults and maths.

    .. math::

        \eta_t = \frac{\eta}{1 + (t - 1) \delta}, \quad s_t = s_{t-1} + g_t^2, \quad
        p_t = p_{t-1} - \eta_t \frac{g_t}{\sqrt{s_t} + \epsilon}

    As in torch, the state (``sum`` filled with ``initial_accumulator_value``, ``step``) is
    created for every parameter at construction.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-2``.
        lr_decay: :math:`\delta`. Default ``0``.
        weight_decay: L2 penalty. Default ``0``.
        initial_accumulator_value: initial value of ``sum``. Default ``0``.
        eps: :math:`\epsilon`. Default ``1e-10``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.
        fused: accepted for compatibility.

    State per parameter: ``step``, ``sum``.
    """

    _checked = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _torch_options("Adagrad", False, differentiable)
        defaults = {
            "lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
            "maximize": maximize, "differentiable": False, "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p], group)

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        state["step"] = _new_step()
        value = h.get("initial_accumulator_value", self.defaults["initial_accumulator_value"])
        fill = complex(value, value) if p.is_complex() else value
        state["sum"] = torch.full_like(p, fill, memory_format=torch.preserve_format)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAGRAD


# ----------------------------------------------------------------------------- Adadelta
def _adadelta_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0))


def _adadelta_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    rho = h["rho"]
    return (-h["lr"], h["weight_decay"], rho, 1 - rho, h["eps"])


def _adadelta_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd = flags

    def adadelta(p: Any, g: Any, sq: Any, acc: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_lr, wd, rho, one_minus_rho, eps = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * rho + one_minus_rho * g * g
        delta = ops.sqrt(acc + eps) / ops.sqrt(sq + eps) * g
        acc = acc * rho + one_minus_rho * delta * delta
        return p + neg_lr * delta, sq, acc

    return adadelta


_ADADELTA = Elementwise(state=("square_avg", "acc_delta"), element=_adadelta_element,
                        scalars=_adadelta_scalars, flags=_adadelta_flags)


class Adadelta(_Elementwise):
    r"""Adadelta with ``torch.optim.Adadelta``'s keywords, defaults and maths.

    .. math::

        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2, \quad p_t = p_{t-1} - \eta \Delta_t

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1.0``.
        rho: :math:`\rho`. Default ``0.9``.
        eps: :math:`\epsilon`. Default ``1e-6``.
        weight_decay: L2 penalty. Default ``0``.
        foreach: accepted for compatibility.
        capturable: must be ``False``.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.

    State per parameter: ``step``, ``square_avg``, ``acc_delta``.
    """

    _checked = ("lr", "rho", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _torch_options("Adadelta", capturable, differentiable)
        defaults = {
            "lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
            "maximize": maximize, "capturable": False, "foreach": foreach,
            "differentiable": False,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADADELTA


#: anyoptim's spelling of :class:`Adadelta`.
AdaDelta = Adadelta


# ----------------------------------------------------------------------------- Adamax
def _adamax_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0),
            _lerp_small(1 - h["betas"][0]))


def _adamax_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    b1, b2 = h["betas"]
    return (-(h["lr"] / (1 - b1**step)), h["weight_decay"], 1 - b1, b1, b2, h["eps"])


def _adamax_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, small = flags

    def adamax(p: Any, g: Any, m: Any, u: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_clr, wd, w1, b1, b2, eps = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        u = ops.maximum(u * b2, ops.abs(g) + eps)
        return p + neg_clr * m / u, m, u

    return adamax


_ADAMAX = Elementwise(state=("exp_avg", "exp_inf"), element=_adamax_element,
                      scalars=_adamax_scalars, flags=_adamax_flags)


class Adamax(_Elementwise):
    r"""Adamax with ``torch.optim.Adamax``'s keywords, defaults and maths.

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
        p_t = p_{t-1} - \frac{\eta}{1 - \beta_1^t} \frac{m_t}{u_t}

    (torch's form: bias correction, :math:`\epsilon` inside the maximum; anyoptim's own
    :class:`anyoptim.Adamax` follows MLX instead.)

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate. Default ``2e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: L2 penalty. Default ``0``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.
        capturable: must be ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_inf``.
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        _torch_options("Adamax", capturable, differentiable)
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "foreach": foreach, "maximize": maximize, "differentiable": False,
            "capturable": False,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAMAX


# ----------------------------------------------------------------------------- Lion
def _lion_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = h["lr"]
    b1, b2 = h["betas"]
    return (lr, b1, 1 - b1, b2, 1 - b2, 1 - lr * h["weight_decay"])


def _lion_flags(h: Hyper) -> tuple[Any, ...]:
    return (is_positive(h["weight_decay"]) is not False,)


# anyoptim's (MLX's) element function, with torch's state name
_LION_ELEMENT = _core.Lion.rule.element if _core.Lion.rule is not None else None
_LION = Elementwise(state=("exp_avg",), element=_LION_ELEMENT,
                    scalars=_lion_scalars, flags=_lion_flags)


class Lion(_Elementwise):
    r"""Lion (Chen et al., 2023) with anyoptim's (MLX's) update and torch-style names.

    .. math::

        c_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t \\
        p_t &= p_{t-1} (1 - \eta \lambda) - \eta \, \mathrm{sign}(c_t)

    ``torch.optim`` has no Lion. The weights decay only for ``weight_decay > 0`` (as in MLX).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-4`` (Lion wants a 3-10x smaller lr
            than AdamW).
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0``.

    State per parameter: ``exp_avg`` (:math:`m`).
    """

    _checked = ("lr", "betas")
    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if "weight_decay" in group:
            _check_number("Lion", where, "weight_decay", group["weight_decay"], None, None)

    def _rule(self, h: Hyper) -> Elementwise:
        return _LION

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        pass
