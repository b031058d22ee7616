"""Drop-in for ``pytorch_optimizer.SimplifiedAdEMAMix``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .. import optimizers as _core
from .._backend._rules import Elementwise, Hyper
from ._common import _check_betas, _check_bool, _check_number, _fail
from ._frontend import _Elementwise
from ._more import _adapted, _no_extras

__all__ = ["SimplifiedAdEMAMix"]


def simplified_options(h: Mapping[str, Any]) -> dict[str, Any]:
    """A ``pytorch_optimizer.SimplifiedAdEMAMix`` group as
    :class:`anyoptim.SimplifiedAdEMAMix`'s options (no lr, no maximize)."""
    return {"betas": tuple(h["betas"]), "alpha": h["alpha"], "eps": h["eps"],
            "eps_root": 0.0, "weight_decay": h["weight_decay"], "decouple": h["weight_decouple"],
            "fixed_decay": h["fixed_decay"], "average": True, "extra_bias_correction": True,
            "beta1_warmup": h["beta1_warmup"] or None, "min_beta1": h["min_beta1"]}


def _simplified_core(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "maximize": h["maximize"], **simplified_options(h)}


_SIMPLIFIED = _adapted(_core.SimplifiedAdEMAMix.rule, ("exp_avg", "exp_avg_sq"),
                       _simplified_core)


class SimplifiedAdEMAMix(_Elementwise):
    r"""Simplified AdEMAMix with ``pytorch_optimizer.SimplifiedAdEMAMix``'s keywords,
    defaults and maths.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad c = 1 - \beta_2^t \\
        p &\leftarrow p - \eta\, \frac{m + \alpha g}{\sqrt{c}\,(\sqrt{v} + \sqrt{c}\,\epsilon)}

    (:class:`anyoptim.SimplifiedAdEMAMix` with ``average=True``,
    ``extra_bias_correction=True``). Weight decay is decoupled,
    :math:`p \leftarrow p(1 - \eta\lambda)`, unless ``weight_decouple=False`` (then
    :math:`\lambda p` is added to the gradient); ``beta1_warmup`` raises :math:`\beta_1`
    linearly in half-life from ``min_beta1`` over that many steps.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-4``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.99, 0.95)``.
        weight_decay: :math:`\lambda`. Default ``0``.
        weight_decouple: decoupled decay. Default ``True``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        alpha: weight of the current gradient. Default ``0``.
        beta1_warmup: warmup steps of :math:`\beta_1`, or None. Default None.
        min_beta1: the :math:`\beta_1` the warmup starts from. Default ``0.9``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (pytorch_optimizer keeps
    ``num_sum`` and ``den_sum`` instead of the step).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.SimplifiedAdEMAMix([w], lr=0.01, alpha=1.0)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.2020, -0.2020])
    """

    _checked = ("lr", "eps", "weight_decay", "alpha", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.99, 0.95),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        alpha: float = 0.0,
        beta1_warmup: int | None = None,
        min_beta1: float = 0.9,
        eps: float = 1e-8,
        maximize: bool = False,
        foreach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        _no_extras("SimplifiedAdEMAMix", kwargs)
        defaults = {"lr": lr, "betas": betas, "alpha": alpha, "beta1_warmup": beta1_warmup,
                    "min_beta1": min_beta1, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay, "eps": eps,
                    "maximize": maximize, "foreach": foreach}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        owner = "SimplifiedAdEMAMix"
        if "betas" in group:
            _check_betas(owner, where, group["betas"])
        for key in ("weight_decouple", "fixed_decay"):
            if key in group:
                _check_bool(owner, where, key, group[key])
        if "min_beta1" in group:
            _check_number(owner, where, "min_beta1", group["min_beta1"], 0.0, 1.0)
        warmup = group.get("beta1_warmup")
        if warmup is not None and (not isinstance(warmup, int) or isinstance(warmup, bool)
                                   or warmup < 0):
            _fail(owner, where, "beta1_warmup", warmup, "None or a number of steps",
                  "Pass beta1_warmup=1000, say.")

    def _rule(self, h: Hyper) -> Elementwise:
        return _SIMPLIFIED
