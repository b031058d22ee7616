"""Drop-ins for schedulefree's AdamWScheduleFree, SGDScheduleFree and RAdamScheduleFree.

Each class keeps schedulefree's keywords, defaults, group keys (``k``, ``train_mode``,
``weight_sum``, ``lr_max``, ``scheduled_lr``) and ``train()`` / ``eval()``, and runs the rule of
:mod:`anyoptim.optimizers._schedule_free` (the averaging weight from the same
:func:`~anyoptim.optimizers._schedule_free.averaging` and
:func:`~anyoptim.optimizers._schedule_free.factors`): there is no second copy of the maths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .._backend._rules import Elementwise, Hyper
from ..optimizers import _schedule_free as _sf
from ._common import Closure, _check_betas, _check_number, _fail
from ._frontend import _Elementwise

__all__ = ["AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree"]

_ADAPTIVE = Elementwise(state=("z", "exp_avg_sq"), element=_sf.ADAPTIVE_RULE.element,
                        scalars=_sf.ADAPTIVE_RULE.scalars, flags=_sf.ADAPTIVE_RULE.flags)
_PLAIN = _sf.PLAIN_RULE


class _ScheduleFree(_Elementwise):
    """schedulefree's bookkeeping per group, then the anyoptim rule."""

    _counts_steps = False
    _kind: ClassVar[str] = "adamw"
    _checked: ClassVar[tuple[str, ...]] = ("lr", "eps", "weight_decay", "warmup_steps", "r",
                                           "weight_lr_power")

    def _b1(self, group: Mapping[str, Any]) -> float:
        return group["momentum"] if self._kind == "sgd" else group["betas"][0]

    # ------------------------------------------------------------------ modes
    @torch.no_grad()
    def eval(self) -> None:
        """Switch the parameters to the evaluation point :math:`x` (in place), as
        schedulefree does; a no-op in evaluation mode."""
        self._swap(False)

    @torch.no_grad()
    def train(self) -> None:
        """Switch the parameters to the training point :math:`y` (in place), as schedulefree
        does; a no-op in training mode. Call it before training (HF Trainer does)."""
        self._swap(True)

    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            b1 = self._b1(group)
            weight = 1 - b1 if to_train else 1 - 1 / b1
            for p in group["params"]:
                z = self.state[p].get("z") if p in self.state else None
                if z is not None:
                    p.lerp_(end=z.to(p.device), weight=weight)
            group["train_mode"] = to_train

    # ------------------------------------------------------------------ step
    def step(self, closure: Closure = None) -> Any:
        """One step of every group; the optimizer must be in training mode (``train()``)."""
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(
                f"anyoptim.torch.{type(self).__name__}.step: the optimizer is in evaluation "
                "mode. Call optimizer.train() before training and optimizer.eval() before "
                "evaluating or saving (as with schedulefree)."
            )
        return super().step(closure)

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        k = int(group["k"])
        t = np.asarray(k + 1, np.float64)
        h = self._core(group, None)
        f_step, f_weight, bc2, adaptive = _sf.factors(np, t, self._kind, h)
        lr = float(group["lr"])
        # schedulefree starts lr_max at -1; any lr >= 0 replaces it on the first step
        c, lr_max, weight_sum = _sf.averaging(
            np, t, lr * f_weight, np.asarray(max(float(group["lr_max"]), 0.0)),
            np.asarray(float(group["weight_sum"])), group["r"], group["weight_lr_power"])
        group["scheduled_lr"] = lr * float(f_step)
        group["lr_max"] = float(lr_max)
        group["weight_sum"] = float(weight_sum)
        self._sf_now = (float(f_step), float(c), float(bc2), float(adaptive))
        super()._update_group(gi, group, params)
        group["k"] = k + 1

    def _core(self, group: Mapping[str, Any], now: Any) -> dict[str, Any]:
        h: dict[str, Any] = {
            "lr": group["lr"], "weight_decay": group["weight_decay"],
            "warmup_steps": group.get("warmup_steps", 0), "convention": "schedulefree",
            "silent_sgd_phase": group.get("silent_sgd_phase", True),
        }
        if self._kind == "sgd":
            h["momentum"] = group["momentum"]
        else:
            h["betas"] = tuple(group["betas"])
            h["eps"] = group["eps"]
        if now is not None:
            h["_sf"] = now
        return h

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return self._core(group, self._sf_now)

    def _rule(self, h: Hyper) -> Elementwise:
        return _PLAIN if self._kind == "sgd" else _ADAPTIVE

    def _new_buffer(self, key: str, p: Tensor, h: Hyper) -> Tensor:
        if key == "z":
            return torch.clone(p.detach(), memory_format=torch.preserve_format)
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        owner = type(self).__name__
        if "betas" in group:
            _check_betas(owner, where, group["betas"])
            if not group["betas"][0] > 0:
                _fail(owner, where, "betas", group["betas"], "betas[0] > 0",
                      "The evaluation point divides by beta1; use e.g. (0.9, 0.999).")
        if "momentum" in group:
            _check_number(owner, where, "momentum", group["momentum"], 0.0, 1.0,
                          fix="momentum must be in (0, 1), e.g. 0.9.")
            if not 0 < group["momentum"] < 1:
                _fail(owner, where, "momentum", group["momentum"], "in (0, 1)",
                      "Pass e.g. momentum=0.9.")


class AdamWScheduleFree(_ScheduleFree):
    r"""Schedule-free AdamW with ``schedulefree.AdamWScheduleFree``'s keywords, defaults and
    maths (see :class:`anyoptim.ScheduleFreeAdamW` for the update rule).

    The parameters hold the training point :math:`y`. Call ``optimizer.train()`` before
    training and ``optimizer.eval()`` before evaluating or saving, as with schedulefree
    (Hugging Face's Trainer calls both): they move the parameters between :math:`y` and the
    evaluation point :math:`x` in place. ``step()`` in evaluation mode raises.

    Args:
        params: tensors or parameter-group dicts.
        lr: learning rate. Default ``0.0025``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: added outside the root. Default ``1e-8``.
        weight_decay: :math:`\lambda`, added to the normalised gradient at :math:`y`.
            Default ``0``.
        warmup_steps: linear warmup :math:`\eta (k+1)/W`. Default ``0``.
        r: polynomial weight power. Default ``0``.
        weight_lr_power: power of the max learning rate in the weights. Default ``2``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.

    State per parameter: ``z``, ``exp_avg_sq``; per group: ``k``, ``train_mode``,
    ``weight_sum``, ``lr_max``, ``scheduled_lr``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.AdamWScheduleFree([w], lr=0.1)
        >>> opt.train()
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> opt.eval()
        >>> w.detach()
        tensor([-0.1000,  0.1000])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = hasattr(torch, "_foreach_mul_"),
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps,
                        train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0,
                        weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                        foreach=foreach)
        super().__init__(params, defaults)


class SGDScheduleFree(_ScheduleFree):
    r"""Schedule-free SGD with ``schedulefree.SGDScheduleFree``'s keywords, defaults and maths
    (see :class:`anyoptim.ScheduleFreeSGD`); ``train()`` / ``eval()`` as in
    :class:`AdamWScheduleFree`.

    Args:
        params: tensors or parameter-group dicts.
        lr: learning rate. Default ``1.0``.
        momentum: :math:`\beta_1 \in (0, 1)`. Default ``0.9``.
        weight_decay: :math:`\lambda`. Default ``0``.
        warmup_steps: linear warmup. Default ``0``.
        r: polynomial weight power. Default ``0``.
        weight_lr_power: power of the max learning rate in the weights. Default ``2``.
        foreach: accepted for compatibility.

    State per parameter: ``z``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.SGDScheduleFree([w], lr=0.5)
        >>> opt.train()
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.5000,  1.0000])
    """

    _kind = "sgd"
    _checked = ("lr", "weight_decay", "warmup_steps", "r", "weight_lr_power")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = hasattr(torch, "_foreach_mul_"),
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, r=r, k=0, warmup_steps=warmup_steps,
                        train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0,
                        weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                        foreach=foreach)
        super().__init__(params, defaults)


class RAdamScheduleFree(_ScheduleFree):
    r"""Schedule-free RAdam with ``schedulefree.RAdamScheduleFree``'s keywords, defaults and
    maths (see :class:`anyoptim.ScheduleFreeRAdam`); ``train()`` / ``eval()`` as in
    :class:`AdamWScheduleFree`.

    Args:
        params: tensors or parameter-group dicts.
        lr: learning rate. Default ``0.0025``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: added outside the root. Default ``1e-8``.
        weight_decay: :math:`\lambda`. Default ``0``.
        r: polynomial weight power. Default ``0``.
        weight_lr_power: power of the max learning rate in the weights. Default ``2``.
        foreach: accepted for compatibility.
        silent_sgd_phase: no step while the rectifier is undefined. Default ``True``.

    State per parameter: ``z``, ``exp_avg_sq``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.RAdamScheduleFree([w])
        >>> opt.train()
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()  # the first steps are silent
        >>> w.detach()
        tensor([0., 0.])
    """

    _kind = "radam"
    _checked = ("lr", "eps", "weight_decay", "r", "weight_lr_power")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = hasattr(torch, "_foreach_mul_"),
        silent_sgd_phase: bool = True,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0,
                        weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                        foreach=foreach, silent_sgd_phase=silent_sgd_phase)
        super().__init__(params, defaults)
