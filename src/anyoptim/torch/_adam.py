"""``anyoptim.torch.Adam`` and ``AdamW``: torch.optim's signatures, defaults and maths on anyoptim's rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from .._backend._rules import Elementwise, Hyper
from ._common import _check_false, _is_number, _lr_value
from ._frontend import _Elementwise, _lerp_small


# ----------------------------------------------------------------------------- Adam, AdamW
def _adam_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if (_is_number(wd) and wd == 0) else (2 if h["decoupled_weight_decay"] else 1)
    return (bool(h["maximize"]), mode, bool(h["amsgrad"]), _lerp_small(1 - h["betas"][0]))


def _adam_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = h["lr"]
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    bias1 = 1 - b1**step
    bias2 = 1 - b2**step
    return (wd, 1 - lr * wd, 1 - b1, b1, b2, 1 - b2, -(lr / bias1), bias2**0.5, h["eps"])


def _adam_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, wd_mode, amsgrad, small = flags

    def update(p: Any, g: Any, m: Any, v: Any, sc: Any) -> tuple[Any, Any, Any]:
        wd, decay, w1, b1, b2, one_minus_b2, neg_step, bias2_sqrt, eps = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        # torch's lerp: one formula for weights below 0.5, another above
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        v = v * b2 + one_minus_b2 * g * g
        return p + neg_step * m / (ops.sqrt(v) / bias2_sqrt + eps), m, v

    def update_amsgrad(p: Any, g: Any, m: Any, v: Any, vmax: Any,
                       sc: Any) -> tuple[Any, Any, Any, Any]:
        wd, decay, w1, b1, b2, one_minus_b2, neg_step, bias2_sqrt, eps = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        v = v * b2 + one_minus_b2 * g * g
        vmax = ops.maximum(vmax, v)
        return p + neg_step * m / (ops.sqrt(vmax) / bias2_sqrt + eps), m, v, vmax

    return update_amsgrad if amsgrad else update


_ADAM = Elementwise(state=("exp_avg", "exp_avg_sq"), element=_adam_element,
                    scalars=_adam_scalars, flags=_adam_flags)
_ADAM_AMSGRAD = Elementwise(state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                            element=_adam_element, scalars=_adam_scalars, flags=_adam_flags)


def _torch_options(owner: str, capturable: bool, differentiable: bool) -> None:
    _check_false(owner, "capturable", capturable,
                 "anyoptim keeps torch's CPU step counters and never reads device values "
                 "between kernels, so it needs no capturable mode; drop the argument (or use "
                 "torch.optim for CUDA-graph capture).")
    _check_false(owner, "differentiable", differentiable,
                 "anyoptim's updates are not differentiable through the optimizer step; use "
                 "torch.optim with differentiable=True for that.")


class Adam(_Elementwise):
    r"""Adam with ``torch.optim.Adam``'s keywords, defaults and maths.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        p_t &= p_{t-1} - \frac{\eta}{1 - \beta_1^t} \,
              \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`t` counted per parameter (a parameter without a gradient does not advance).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta` (a float, or a 0-d tensor). Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: L2 penalty added to the gradient (decoupled with
            ``decoupled_weight_decay=True``, which is AdamW). Default ``0``.
        amsgrad: use the running maximum of :math:`v` (AMSGrad). Default ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        maximize: maximise the objective. Default ``False``.
        capturable: must be ``False``.
        differentiable: must be ``False``.
        fused: accepted for compatibility (anyoptim's CPU path is fused already).
        decoupled_weight_decay: decay the weights as AdamW does. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.Adam([w], lr=0.1)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1000, -0.1000])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _torch_options(type(self).__name__, capturable, differentiable)
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            betas = (_lr_value(betas[0]), _lr_value(betas[1]))
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
            "capturable": False, "differentiable": False, "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAM_AMSGRAD if h["amsgrad"] else _ADAM

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h.setdefault("decoupled_weight_decay", False)
        return h


class AdamW(Adam):
    r"""AdamW with ``torch.optim.AdamW``'s keywords, defaults and maths.

    Adam (see :class:`Adam`) with decoupled weight decay :math:`p \leftarrow p (1 - \eta
    \lambda)` before the moment update, bias correction on, a step per parameter.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta` (a float, or a 0-d tensor). Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``1e-2``.
        amsgrad: use the running maximum of :math:`v`. Default ``False``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility.
        capturable: must be ``False``.
        differentiable: must be ``False``.
        fused: accepted for compatibility.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = anyoptim.torch.AdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = torch.zeros(2)
        >>> opt.step()
        >>> w.detach()
        tensor([0.9500, 0.9500])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h["decoupled_weight_decay"] = True
        return h
