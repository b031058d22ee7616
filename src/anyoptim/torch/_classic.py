"""``anyoptim.torch.SGD`` and ``RMSprop``: torch.optim's signatures, defaults and maths on anyoptim's rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from .._backend._rules import Elementwise, Hyper
from ._adam import _torch_options
from ._common import _fail, _is_number
from ._frontend import _Elementwise, _lerp_small


# ----------------------------------------------------------------------------- SGD
def _sgd_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0), bool(h["nesterov"]),
            bool(h["_extra"][0]) if h["_extra"] else False)


def _sgd_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (-h["lr"], h["weight_decay"], h["momentum"], 1 - h["dampening"])


def _sgd_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, nesterov, first = flags

    def momentum_sgd(p: Any, g: Any, buf: Any, sc: Any) -> tuple[Any, Any]:
        neg_lr, wd, momentum, undamped = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        # torch starts the buffer at the gradient itself, and dampens from the second step
        buf = g if first else buf * momentum + undamped * g
        d = g + momentum * buf if nesterov else buf
        return p + neg_lr * d, buf

    return momentum_sgd


def _sgd_plain_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, _nesterov, _first = flags

    def plain_sgd(p: Any, g: Any, sc: Any) -> tuple[Any]:
        neg_lr, wd, _momentum, _undamped = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        return (p + neg_lr * g,)

    return plain_sgd


_SGD_MOMENTUM = Elementwise(state=("momentum_buffer",), element=_sgd_element,
                            scalars=_sgd_scalars, flags=_sgd_flags)
_SGD_PLAIN = Elementwise(state=(), element=_sgd_plain_element, scalars=_sgd_scalars,
                         flags=_sgd_flags)


class SGD(_Elementwise):
    r"""SGD with ``torch.optim.SGD``'s keywords, defaults and maths.

    .. math::

        g &\leftarrow g + \lambda p, \quad
        b_1 = g_1, \quad b_t = \mu b_{t-1} + (1 - \tau) g_t \\
        p &\leftarrow p - \eta \, (g + \mu b_t \text{ if nesterov else } b_t)

    As in torch, the first momentum buffer is the gradient itself (no dampening on that step)
    and no state is kept when ``momentum == 0``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        momentum: :math:`\mu`. Default ``0``.
        dampening: :math:`\tau`. Default ``0``.
        weight_decay: L2 penalty :math:`\lambda`. Default ``0``.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0). Default ``False``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility.
        differentiable: must be ``False``.
        fused: accepted for compatibility.

    State per parameter: ``momentum_buffer`` (when momentum is non-zero).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1000, -0.1000])
    """

    _checked = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _torch_options("SGD", False, differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
            "foreach": foreach, "differentiable": False, "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if group.get("nesterov") and not (
                _is_number(group.get("momentum")) and group["momentum"] > 0
                and group.get("dampening") == 0):
            _fail("SGD", where, "nesterov", True, "used with momentum > 0 and dampening == 0",
                  "Nesterov momentum needs a positive momentum and zero dampening: set them, "
                  "or pass nesterov=False.")

    def _rule(self, h: Hyper) -> Elementwise:
        m = h["momentum"]
        return _SGD_PLAIN if _is_number(m) and m == 0 else _SGD_MOMENTUM

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        pass

    def _bucket(self, state: Mapping[str, Any], h: Hyper) -> tuple[Any, ...]:
        return (state.get("momentum_buffer") is None,)


# ----------------------------------------------------------------------------- RMSprop
def _rmsprop_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0), _has_momentum(h),
            bool(h["centered"]), _lerp_small(1 - h["alpha"]))


def _has_momentum(h: Hyper) -> bool:
    m = h["momentum"]
    return not _is_number(m) or m > 0


def _rmsprop_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    alpha = h["alpha"]
    return (-h["lr"], h["weight_decay"], alpha, 1 - alpha, h["eps"], h["momentum"])


def _rmsprop_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, momentum_on, centered, small = flags

    # numba compiles only the returned function: one explicit variant per state layout
    def plain(p: Any, g: Any, sq: Any, sc: Any) -> tuple[Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, _momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        return p + neg_lr * g / (ops.sqrt(sq) + eps), sq

    def with_momentum(p: Any, g: Any, sq: Any, buf: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        buf = buf * momentum + g / (ops.sqrt(sq) + eps)
        return p + neg_lr * buf, sq, buf

    def centered_(p: Any, g: Any, sq: Any, ga: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, _momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        ga = ga + one_minus_alpha * (g - ga) if small else g - (g - ga) * alpha
        return p + neg_lr * g / (ops.sqrt(sq + -1 * ga * ga) + eps), sq, ga

    def centered_momentum(p: Any, g: Any, sq: Any, buf: Any, ga: Any,
                          sc: Any) -> tuple[Any, Any, Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        ga = ga + one_minus_alpha * (g - ga) if small else g - (g - ga) * alpha
        buf = buf * momentum + g / (ops.sqrt(sq + -1 * ga * ga) + eps)
        return p + neg_lr * buf, sq, buf, ga

    if centered:
        return centered_momentum if momentum_on else centered_
    return with_momentum if momentum_on else plain


_RMSPROP_RULES = {
    (m, c): Elementwise(
        state=("square_avg", *(("momentum_buffer",) if m else ()), *(("grad_avg",) if c else ())),
        element=_rmsprop_element, scalars=_rmsprop_scalars, flags=_rmsprop_flags)
    for m in (False, True) for c in (False, True)
}


class RMSprop(_Elementwise):
    r"""RMSprop with ``torch.optim.RMSprop``'s keywords, defaults and maths.

    .. math::

        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2, \quad
        \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \text{ (centered)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t, \quad p_t = p_{t-1} - \eta b_t
        \text{ (or } p_{t-1} - \eta g_t / d_t \text{ without momentum)}

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate. Default ``1e-2``.
        alpha: smoothing constant. Default ``0.99``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: L2 penalty. Default ``0``.
        momentum: :math:`\mu`. Default ``0``.
        centered: normalise by the estimated variance. Default ``False``.
        capturable: must be ``False``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.

    State per parameter: ``step``, ``square_avg`` (and ``momentum_buffer``, ``grad_avg``).
    """

    _checked = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _torch_options("RMSprop", capturable, differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
            "weight_decay": weight_decay, "capturable": False, "foreach": foreach,
            "maximize": maximize, "differentiable": False,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _RMSPROP_RULES[(_has_momentum(h), bool(h["centered"]))]
