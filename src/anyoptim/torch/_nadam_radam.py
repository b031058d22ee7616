"""Drop-ins for ``torch.optim.NAdam`` and ``torch.optim.RAdam``.

Each class takes torch's keywords, defaults, group keys and state names (``step``,
``mu_product``, ``exp_avg``, ``exp_avg_sq``), so a ``state_dict`` of the torch class loads, and
runs the rule of :mod:`anyoptim.optimizers._nadam` / :mod:`anyoptim.optimizers._radam`: there
is no second copy of the update here. NAdam's ``mu_product`` is kept per parameter, on the
CPU in torch's scalar dtype, and multiplied exactly as torch does.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .._backend._rules import Elementwise, Hyper
from ..optimizers import _nadam, _radam
from ._adam import _torch_options
from ._common import _check_bool, _step_dtype
from ._frontend import _Elementwise

__all__ = ["NAdam", "RAdam"]


def _common(h: Hyper) -> dict[str, Any]:
    return {"learning_rate": h["lr"], "betas": tuple(h["betas"]), "eps": h["eps"],
            "weight_decay": h["weight_decay"],
            "decoupled_weight_decay": h.get("decoupled_weight_decay", False),
            "maximize": h.get("maximize", False), "eps_root": 0.0, "convention": "torch"}


# ----------------------------------------------------------------------------- NAdam
def _nadam_core(h: Hyper, step: Any = None) -> dict[str, Any]:
    core = _common(h)
    if step is not None:
        t, product = step  # the step and the product after this step's factor
        b1 = core["betas"][0]
        mu = _nadam.momentum(b1, h["momentum_decay"], t)
        mu_next = _nadam.momentum(b1, h["momentum_decay"], t + 1)
        core["_nadam"] = ((1.0 - mu) / (1.0 - product), mu_next / (1.0 - product * mu_next))
    return core


def _nadam_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return _nadam.RULE.scalars(xp, _nadam_core(h, step), step[0], dtype)


def _nadam_flags(h: Hyper) -> tuple[Any, ...]:
    return _nadam.RULE.flags(_nadam_core(h))


_NADAM = Elementwise(state=("exp_avg", "exp_avg_sq"), element=_nadam.RULE.element,
                     scalars=_nadam_scalars, flags=_nadam_flags)


def _new_product(value: Any = 1.0) -> Tensor:
    return torch.tensor(float(value), dtype=_step_dtype())


class NAdam(_Elementwise):
    r"""NAdam with ``torch.optim.NAdam``'s keywords, defaults, state and maths.

    See :class:`anyoptim.NAdam` (``convention="torch"``): the momentum schedule
    :math:`\mu_t = \beta_1(1 - \frac12 0.96^{t\psi})`, its running product ``mu_product``
    and the step :math:`\eta\frac{1-\mu_t}{1-\Pi_t}\frac{g}{d} +
    \eta\frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\frac{m}{d}` with :math:`d = \sqrt{v/(1-\beta_2^t)} +
    \epsilon`. ``decoupled_weight_decay=True`` is NAdamW.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``2e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: :math:`\lambda`, added to the gradient (L2). Default ``0``.
        momentum_decay: :math:`\psi`. Default ``4e-3``.
        decoupled_weight_decay: :math:`p \leftarrow p(1 - \eta\lambda)` instead. Default
            ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        maximize: maximise the objective. Default ``False``.
        capturable: must be ``False``.
        differentiable: must be ``False``.

    State per parameter: ``step``, ``mu_product`` (0-d CPU tensors, as torch keeps them),
    ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.NAdam([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> w.detach(), sorted(opt.state[w])
        (tensor([-0.1056,  0.1056]), ['exp_avg', 'exp_avg_sq', 'mu_product', 'step'])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "momentum_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        _torch_options("NAdam", capturable, differentiable)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "momentum_decay": momentum_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": False, "differentiable": False}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if "decoupled_weight_decay" in group:
            _check_bool("NAdam", where, "decoupled_weight_decay", group["decoupled_weight_decay"])

    def _rule(self, h: Hyper) -> Elementwise:
        return _NADAM

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        super()._init_state(p, state, h)
        state["mu_product"] = _new_product()

    def _products(self, group: Mapping[str, Any], states: list[dict[str, Any]],
                  counts: list[Any]) -> list[tuple[Any, Any]]:
        """Multiply each parameter's ``mu_product`` by :math:`\\mu_t` (in place, torch's
        operation); ``(step, product)`` per parameter."""
        b1 = group["betas"][0]
        out = []
        for st, t in zip(states, counts):
            product = st.get("mu_product")
            if not isinstance(product, Tensor):  # a number (an old torch state dict)
                product = st["mu_product"] = _new_product(1.0 if product is None else product)
            if isinstance(t, Tensor):  # traced: torch's double arithmetic, on tensors
                t = t.to(torch.float64)
                product.mul_(_nadam.momentum(b1, group["momentum_decay"], t).to(product.dtype))
                out.append((t, product))
            else:
                product.mul_(_nadam.momentum(b1, group["momentum_decay"], t))
                out.append((t, product.item()))
        return out

    def _advance_steps(self, gi: int, group: dict[str, Any], params: list[Tensor],
                       states: list[dict[str, Any]]) -> list[Any]:
        counts = super()._advance_steps(gi, group, params, states)
        if len(params) == len(group["params"]) and all(c == counts[0] for c in counts):
            # the usual case: one step for the whole group; its products are 0-d views into
            # one buffer (as the steps are), multiplied by mu_t at once and read back at once
            products: list[Any] = [st.get("mu_product") for st in states]
            packs = self.__dict__.setdefault("_product_packs", {})
            pack = packs.get(gi)
            if pack is None or len(pack[1]) != len(products) or not all(
                    map(operator.is_, pack[1], products)):
                if not all(isinstance(x, Tensor) and x.dim() == 0 for x in products) or len(
                        {(x.dtype, x.device) for x in products}) != 1:
                    return self._products(group, states, counts)
                buffer = torch.stack([x.detach() for x in products])
                views = list(buffer.unbind())
                for st, view in zip(states, views):
                    st["mu_product"] = view
                pack = packs[gi] = (buffer, views)
            pack[0].mul_(_nadam.momentum(group["betas"][0], group["momentum_decay"], counts[0]))
            return [(t, value) for t, value in zip(counts, pack[0].tolist())]
        return self._products(group, states, counts)

    def _traced_update(self, rule: Elementwise, h: dict[str, Any], params: list[Tensor],
                       states: list[dict[str, Any]], counts: list[Any],
                       extras: list[tuple[Any, ...]]) -> None:
        super()._traced_update(rule, h, params, states, self._products(h, states, counts),
                               extras)

    def _adopt(self, state: Any, groups: list[dict[str, Any]]) -> None:
        self.__dict__.pop("_product_packs", None)
        super()._adopt(state, groups)

    def _import_state(self, p: Tensor, saved: Mapping[str, Any], where: str) -> dict[str, Any]:
        out = super()._import_state(p, saved, where)
        product = saved.get("mu_product")
        if isinstance(product, Tensor):  # stays on the CPU, where torch keeps it
            out["mu_product"] = product.detach().clone()
        return out


# ----------------------------------------------------------------------------- RAdam
def _radam_core(h: Hyper) -> dict[str, Any]:
    core = _common(h)
    core.update(threshold=5.0, nesterov=False)
    return core


_RADAM = Elementwise(
    state=("exp_avg", "exp_avg_sq"), element=_radam.RULE.element,
    scalars=lambda xp, h, step, dtype: _radam.RULE.scalars(xp, _radam_core(h), step, dtype),
    flags=lambda h: _radam.RULE.flags(_radam_core(h)))


class RAdam(_Elementwise):
    r"""RAdam with ``torch.optim.RAdam``'s keywords, defaults, state and maths.

    See :class:`anyoptim.RAdam` (``convention="torch"``): the rectified adaptive step
    :math:`\eta r_t \hat m_t \sqrt{1-\beta_2^t}/(\sqrt{v_t}+\epsilon)` once :math:`\rho_t > 5`,
    :math:`\eta \hat m_t` before. ``decoupled_weight_decay=True`` decays the weights as AdamW
    (the paper's code).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: :math:`\lambda`, added to the gradient (L2). Default ``0``.
        decoupled_weight_decay: :math:`p \leftarrow p(1 - \eta\lambda)` instead. Default
            ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        maximize: maximise the objective. Default ``False``.
        capturable: must be ``False``.
        differentiable: must be ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.RAdam([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()  # rho_1 = 1: an SGD-with-momentum step
        >>> w.detach()
        tensor([-0.1000,  0.2000])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        _torch_options("RAdam", capturable, differentiable)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize, "foreach": foreach, "capturable": False,
                    "decoupled_weight_decay": decoupled_weight_decay, "differentiable": False}
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if "decoupled_weight_decay" in group:
            _check_bool("RAdam", where, "decoupled_weight_decay", group["decoupled_weight_decay"])

    def _rule(self, h: Hyper) -> Elementwise:
        return _RADAM
