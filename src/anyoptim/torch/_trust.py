"""Drop-ins for pytorch_optimizer's trust-ratio optimizers: ``Lamb`` and ``LARS``.

Both run the per-tensor update of the anyoptim class holding the maths
(:class:`anyoptim.LAMB`, :class:`anyoptim.LARS`) with the options that give
pytorch_optimizer's variant; the keywords, defaults and state names are pytorch_optimizer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import optimizers as _core
from ._common import (
    Closure,
    _check_betas,
    _check_bool,
    _check_lr,
    _check_number,
    _fail,
    _lr_value,
)
from ._matrix import _PerTensor
from ._more import _no_extras

__all__ = ["LARS", "Lamb"]


def _check(owner: str, group: Mapping[str, Any], where: str, numbers: dict[str, float | None],
           bools: tuple[str, ...]) -> None:
    if "lr" in group:
        _check_lr(owner, where, group["lr"])
    for key, high in numbers.items():
        if key in group:
            _check_number(owner, where, key, group[key], 0.0, high,
                          fix=f"Pass {key} in [0, {high})." if high else
                          f"Pass a non-negative {key}.")
    for key in bools:
        if key in group:
            _check_bool(owner, where, key, group[key])


def _exact_lr(group: Mapping[str, Any]) -> Any:
    """The group's lr for the anyoptim class: a Python number goes as a float64 0-d tensor
    (a number would become the float32 state value MLX keeps)."""
    lr = _lr_value(group["lr"])
    return torch.tensor(float(lr), dtype=torch.float64) if not isinstance(lr, Tensor) else lr


# ----------------------------------------------------------------------------- Lamb
def lamb_options(group: Mapping[str, Any]) -> dict[str, Any]:
    """A ``pytorch_optimizer.Lamb`` group as :class:`anyoptim.LAMB`'s options (no lr)."""
    return {"betas": tuple(float(b) for b in group["betas"]), "eps": group["eps"],
            "eps_root": 0.0, "weight_decay": group["weight_decay"], "exclude_1d": False,
            "bias_correction": "none" if group.get("adam_debias") else "first",
            "grad_averaging": group["grad_averaging"], "decouple": group["weight_decouple"],
            "fixed_decay": group["fixed_decay"], "max_norm": Lamb.clamp,
            "trust_eps": group["eps"], "trust_ratio": not group["adam"]}


class Lamb(_PerTensor):
    r"""LAMB with ``pytorch_optimizer.Lamb``'s keywords, defaults and maths.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        r = \frac{m}{\sqrt{v} + \epsilon} \\
        p &\leftarrow p - \frac{\eta}{1 - \beta_1^t}\,
             \frac{\min(\lVert p \rVert, 10)}{\lVert r \rVert + \epsilon}\, r

    (the ratio 1 where a norm is 0), after the decoupled decay
    :math:`p \leftarrow p(1 - \eta\lambda)` (``weight_decouple=True``, the default;
    ``fixed_decay=True``: :math:`p(1 - \lambda)`), or with :math:`\lambda p` added to
    :math:`r` (``weight_decouple=False``): :class:`anyoptim.LAMB` with
    ``bias_correction="first"`` (``"none"`` with ``adam_debias=True``), ``max_norm=10`` and
    ``trust_eps=eps``. ``grad_averaging=False`` adds :math:`g` to :math:`m` unweighted,
    ``adam=True`` drops the ratio, and ``pre_norm=True`` first multiplies every gradient by
    :math:`\min(1, \text{max\_grad\_norm} / (\lVert g \rVert_{global} + \epsilon))` (computed
    in float32 like pytorch_optimizer; ``p.grad`` itself is left unchanged). ``rectify=True``
    (RAdam-style) is refused; ``degenerated_to_sgd`` and ``n_sma_threshold`` only act with it.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled decay. Default ``True``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        rectify: must be ``False``.
        degenerated_to_sgd: accepted (used only with ``rectify``).
        n_sma_threshold: accepted (used only with ``rectify``).
        grad_averaging: weight the new gradient by :math:`1 - \beta_1`. Default ``True``.
        max_grad_norm: the reference norm of ``pre_norm``; ``0`` disables it. Default ``1``.
        adam: no trust ratio. Default ``False``.
        pre_norm: scale the gradients by their global norm first. Default ``False``.
        eps: :math:`\epsilon`. Default ``1e-6``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        adam_debias: (keyword) no bias correction of the step. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (pytorch_optimizer keeps one
    ``step`` per group and also records ``weight_norm``, ``adam_norm`` and ``trust_ratio``).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> opt = anyoptim.torch.Lamb([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, 1.0])
        >>> opt.step()
        >>> w.detach()
        tensor([-0.5355,  0.4645])
    """

    _core_class = _core.LAMB
    _renames: ClassVar[dict[str, str]] = {"m": "exp_avg", "v": "exp_avg_sq"}
    _counts_steps = True
    clamp: float = 10.0

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = False,
        degenerated_to_sgd: bool = False,
        n_sma_threshold: int = 5,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        adam: bool = False,
        pre_norm: bool = False,
        eps: float = 1e-6,
        foreach: bool | None = None,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        adam_debias = kwargs.pop("adam_debias", False)
        _no_extras("Lamb", kwargs)
        _check_bool("Lamb", "", "pre_norm", pre_norm)
        self.degenerated_to_sgd = degenerated_to_sgd
        self.n_sma_threshold = n_sma_threshold
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "rectify": rectify, "grad_averaging": grad_averaging,
                    "max_grad_norm": max_grad_norm, "adam": adam, "eps": eps,
                    "foreach": foreach, "maximize": maximize, "adam_debias": adam_debias,
                    "pre_norm": pre_norm}
        self._scale: Tensor | None = None
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        _check("Lamb", group, where, {"weight_decay": None, "max_grad_norm": None, "eps": None},
               ("weight_decouple", "fixed_decay", "rectify", "grad_averaging", "adam",
                "maximize", "adam_debias"))
        if "betas" in group:
            _check_betas("Lamb", where, group["betas"])
        if group.get("rectify"):
            _fail("Lamb", where, "rectify", True, "False",
                  "anyoptim does not implement pytorch_optimizer's rectified Lamb; use "
                  "anyoptim.torch.RAdam, or Lamb without rectify.")

    @torch.no_grad()
    def step(self, closure: Closure = None) -> Any:
        """One update (see ``torch.optim.Optimizer.step``); ``pre_norm`` scales the gradients
        by the global norm of all groups' gradients first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._scale = self._pre_norm_scale()
        try:
            super().step(None)
        finally:
            self._scale = None
        return loss

    def _pre_norm_scale(self) -> Tensor | None:
        """pytorch_optimizer's ``get_global_gradient_norm`` factor (float32, as there)."""
        max_norm = self.defaults["max_grad_norm"]
        if not self.defaults.get("pre_norm") or max_norm == 0:
            return None
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        device = grads[0].device
        norms = torch.stack([g.norm().to(device) for g in grads]).float().square_()
        total = norms.sum().reshape(1).sqrt_().add_(self.defaults["eps"])
        return torch.clamp(max_norm / total, max=1.0).squeeze(0)

    def _gradient(self, p: Tensor, group: Mapping[str, Any]) -> Tensor:
        g = p.grad
        assert g is not None
        if self._scale is not None:
            g = g * self._scale.to(g.device)
        return -g if group["maximize"] else g

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        return _core.LAMB(learning_rate=0.0)

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"learning_rate": _exact_lr(group), **lamb_options(group)}


# ----------------------------------------------------------------------------- LARS
def lars_options(group: Mapping[str, Any]) -> dict[str, Any]:
    """A ``pytorch_optimizer.LARS`` group as :class:`anyoptim.LARS`'s options (no lr)."""
    return {"momentum": group["momentum"], "weight_decay": group["weight_decay"],
            "trust_coefficient": group["trust_coefficient"], "eps": 0.0,
            "nesterov": group["nesterov"], "trust_ratio": True, "exclude_1d": True,
            "dampening": group["dampening"], "momentum_lr": False, "trust_denominator": "sum"}


class LARS(_PerTensor):
    r"""LARS with ``pytorch_optimizer.LARS``'s keywords, defaults and maths.

    For tensors with two or more dimensions

    .. math::

        u = \phi\,(g + \lambda p), \quad
        \phi = \frac{\kappa \lVert p \rVert}{\lVert g \rVert + \lambda \lVert p \rVert}

    (1 where :math:`\lVert p \rVert` or the denominator is 0); scalars and vectors take
    :math:`u = g` (no decay, no ratio). Then :math:`b \leftarrow \mu b + (1 - d) u` and
    :math:`p \leftarrow p - \eta b`, or :math:`p - \eta (u + \mu b)` with Nesterov:
    :class:`anyoptim.LARS` with ``momentum_lr=False``, ``trust_denominator="sum"``,
    ``exclude_1d=True``. Momentum ``0`` is plain SGD on :math:`u`.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        weight_decay: :math:`\lambda`. Default ``0``.
        momentum: :math:`\mu` in [0, 1). Default ``0.9``.
        dampening: :math:`d` in [0, 1). Default ``0``.
        trust_coefficient: :math:`\kappa`. Default ``1e-3``.
        nesterov: Nesterov momentum. Default ``False``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.

    State per parameter: ``momentum_buffer`` (also with ``momentum=0``, where
    pytorch_optimizer keeps none).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
        >>> opt = anyoptim.torch.LARS([w], lr=1.0, trust_coefficient=0.5)
        >>> w.grad = torch.tensor([[1.0, 1.0]])
        >>> opt.step()
        >>> w.detach()
        tensor([[1.2322, 2.2322]])
    """

    _core_class = _core.LARS
    _renames: ClassVar[dict[str, str]] = {"b": "momentum_buffer"}

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        trust_coefficient: float = 1e-3,
        nesterov: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        _no_extras("LARS", kwargs)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "dampening": dampening,
                                  "trust_coefficient": trust_coefficient,
                                  "nesterov": nesterov, "foreach": foreach,
                                  "maximize": maximize})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        _check("LARS", group, where, {"weight_decay": None, "momentum": 1.0, "dampening": 1.0,
                                      "trust_coefficient": None}, ("nesterov", "maximize"))

    def _gradient(self, p: Tensor, group: Mapping[str, Any]) -> Tensor:
        g = p.grad
        assert g is not None
        return -g if group["maximize"] else g

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        return _core.LARS(learning_rate=0.0)

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"learning_rate": _exact_lr(group), **lars_options(group)}
