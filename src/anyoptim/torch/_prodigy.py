"""A drop-in for ``prodigyopt.Prodigy``.

:class:`Prodigy` keeps prodigyopt's keywords, defaults, group keys (``d``, ``d0``, ``d_max``,
``d_numerator``, ``k``, ...) and state names (``step``, ``s``, ``p0``, ``exp_avg``,
``exp_avg_sq``; ``s`` and ``p0`` flattened in the state dict, as prodigyopt stores them), so a
prodigyopt ``state_dict`` loads. The estimate of ``d`` and the elementwise update are
:mod:`anyoptim.optimizers._prodigy`'s: there is no second copy of the maths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._backend._rules import Elementwise, Hyper
from ..optimizers import _prodigy as _pd
from ._common import _XP, Closure, _check_betas, _check_bool, _check_number, _fail
from ._frontend import _Elementwise

__all__ = ["Prodigy"]


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (*h["_prodigy"], h["weight_decay"])


_RULE = Elementwise(state=("s", "p0", "exp_avg", "exp_avg_sq"), element=_pd.RULE.element,
                    scalars=_scalars, flags=_pd.RULE.flags)
_FLAT = ("s", "p0")


class Prodigy(_Elementwise):
    r"""Prodigy with ``prodigyopt.Prodigy``'s keywords, defaults and maths (see
    :class:`anyoptim.Prodigy` for the update rule).

    One estimate :math:`d` is shared by every group: as in prodigyopt, ``weight_decay`` and
    ``eps`` are read per group, the other settings from the first group (prodigyopt also
    reads ``d0`` and ``safeguard_warmup`` per group for the sums; anyoptim does not). As in prodigyopt, the estimate is read
    back to the host once per step (the groups hold ``d`` as a Python float); a step whose
    denominator :math:`\|s\|_1` is 0 changes nothing.

    Differences from prodigyopt: a group whose ``lr`` is 0 is left exactly as it is
    (prodigyopt still moves it with the other groups' step size); ``p.grad`` is not modified
    by the coupled weight decay; ``slice_p`` must be 1 and ``fsdp_in_use`` False.

    Args:
        params: tensors or parameter-group dicts.
        lr: multiplier of the estimated step size. Default ``1.0``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        beta3: decay of the estimate's sums; None for :math:`\sqrt{\beta_2}`. Default None.
        eps: :math:`\epsilon`, scaled by :math:`d`. Default ``1e-8``.
        weight_decay: :math:`\lambda`. Default ``0``.
        decouple: decoupled (AdamW-style) weight decay. Default ``True``.
        use_bias_correction: Adam's bias correction. Default ``False``.
        safeguard_warmup: weight :math:`s` by :math:`d` instead of the step size.
            Default ``False``.
        d0: initial estimate. Default ``1e-6``.
        d_coef: coefficient of the estimate. Default ``1.0``.
        growth_rate: largest growth of :math:`d` per step. Default ``inf``.
        fsdp_in_use: must be False (anyoptim reduces over the local parameters only).
        slice_p: must be 1.

    State per parameter: ``step``, ``s``, ``p0``, ``exp_avg``, ``exp_avg_sq`` (16 bytes per
    float32 parameter); per group: ``d``, ``d_max``, ``d_numerator``, ``k`` (and, after a step,
    ``d_denom``, ``d_hat``).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        >>> opt = anyoptim.torch.Prodigy([w])
        >>> w.grad = torch.tensor([1.0, -1.0])
        >>> opt.step()
        >>> w.detach()
        tensor([ 1.0000, -1.0000])
        >>> opt.param_groups[0]["k"]
        1
    """

    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
        fsdp_in_use: bool = False,
        slice_p: int = 1,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay,
                        d=d0, d0=d0, d_max=d0, d_numerator=0.0, d_coef=d_coef, k=0,
                        growth_rate=growth_rate, use_bias_correction=use_bias_correction,
                        decouple=decouple, safeguard_warmup=safeguard_warmup,
                        fsdp_in_use=fsdp_in_use, slice_p=slice_p)
        self.d0 = d0
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ checks
    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        owner = "Prodigy"
        if "lr" in group:
            _check_number(owner, where, "lr", group["lr"], 0.0, None,
                          fix="Keep lr=1.0 (it multiplies the estimated step size).")
        if "betas" in group:
            _check_betas(owner, where, group["betas"])
        if group.get("beta3") is not None:
            _check_number(owner, where, "beta3", group["beta3"], 0.0, 1.0,
                          fix="Pass beta3=None (sqrt(beta2)) or a decay rate in [0, 1).")
        for key in ("eps", "d0", "d_coef"):
            if key in group:
                _check_number(owner, where, key, group[key], 0.0, None)
                if not group[key] > 0:
                    _fail(owner, where, key, group[key], "> 0", f"Pass a positive {key}.")
        if "weight_decay" in group:
            _check_number(owner, where, "weight_decay", group["weight_decay"], 0.0, None)
        if "growth_rate" in group:
            _check_number(owner, where, "growth_rate", group["growth_rate"], 1.0, None,
                          fix="Pass growth_rate=float('inf') (unbounded) or e.g. 1.02.")
        for key in ("decouple", "use_bias_correction", "safeguard_warmup"):
            if key in group:
                _check_bool(owner, where, key, group[key])
        if group.get("fsdp_in_use", False):
            _fail(owner, where, "fsdp_in_use", group["fsdp_in_use"], "False",
                  "anyoptim sums over the parameters this process holds; reduce across "
                  "shards yourself or use prodigyopt.")
        if group.get("slice_p", 1) != 1:
            _fail(owner, where, "slice_p", group["slice_p"], "1",
                  "anyoptim keeps s and p0 for every entry (slice_p=1).")

    # ------------------------------------------------------------------ state dict
    def _export_state(self, p: Tensor, state: dict[str, Any]) -> dict[str, Any]:
        out = dict(state)
        for key in _FLAT:
            if isinstance(out.get(key), Tensor):
                out[key] = out[key].reshape(-1)
        return out

    def _state_shape(self, p: Tensor, key: str, value: Tensor) -> tuple[int, ...]:
        return (p.numel(),) if key in _FLAT else tuple(p.shape)

    def _import_state(self, p: Tensor, saved: Mapping[str, Any], where: str) -> dict[str, Any]:
        out = super()._import_state(p, saved, where)
        for key in _FLAT:
            value = out.get(key)
            if isinstance(value, Tensor):
                # prodigyopt keeps p0 = tensor(0) for a parameter that was all zeros
                out[key] = (value.reshape(p.shape) if value.dim() else
                            torch.zeros_like(p, dtype=value.dtype) + value)
        return out

    # ------------------------------------------------------------------ step
    def _core(self, group: Mapping[str, Any], lr: float) -> dict[str, Any]:
        # as in prodigyopt, only weight_decay and eps are read per group; the rest comes
        # from the first group
        first = self.param_groups[0]
        return {"betas": tuple(first["betas"]), "beta3": first["beta3"], "eps": group["eps"],
                "weight_decay": group["weight_decay"], "decouple": first["decouple"],
                "use_bias_correction": first["use_bias_correction"],
                "safeguard_warmup": first["safeguard_warmup"], "d0": first["d0"],
                "d_coef": first["d_coef"], "growth_rate": first["growth_rate"],
                "learning_rate": lr, "lr": lr}

    @torch.no_grad()
    def step(self, closure: Closure = None) -> Any:
        """One Prodigy step over every group (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        for gi, group in enumerate(groups):
            self._validate(group, f"param_groups[{gi}]: ")
        lr = max(float(g["lr"]) for g in groups)
        for gi, group in enumerate(groups):
            if float(group["lr"]) not in (lr, 0.0):
                raise RuntimeError(
                    f"anyoptim.torch.Prodigy: param_groups[{gi}] has lr={group['lr']!r} while "
                    f"another group has lr={lr!r}; Prodigy estimates one step size for all "
                    "groups, so every group's lr must be the same (or 0 to freeze a group)."
                )
        first = groups[0]
        base = self._core(first, lr)
        work = []
        for gi, group in enumerate(groups):
            if float(group["lr"]) == 0.0:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse or p.grad.shape != p.shape:
                    raise ValueError(
                        f"anyoptim.torch.Prodigy: param_groups[{gi}]: a gradient is sparse or "
                        f"shaped {tuple(p.grad.shape)} for a parameter shaped {tuple(p.shape)}."
                    )
                self._start(p)
            if params:
                work.append((gi, group, params))
        if not work or lr <= 0:
            return loss
        d, d_max, numerator = (float(first[k]) for k in ("d", "d_max", "d_numerator"))
        dlr, cs = _pd.coefficients(np, d, lr, int(first["k"]) + 1, base)
        dots: list[Tensor] = []
        sums: list[Tensor] = []
        for _, group, params in work:
            h = self._core(group, lr)
            for p in params:
                st = self.state[p]
                a, b = _pd.leaf_sums(_XP, p.grad, p, st["s"], st["p0"], h, cs)
                dots.append(a.to(torch.float64))
                sums.append(b.to(torch.float64))
        totals = torch.stack([torch.stack(dots).sum(), torch.stack(sums).sum()]).tolist()
        f64 = np.float64
        d_new, d_max_new, numerator_new, live, d_hat = (
            float(x) for x in _pd.estimate(np, f64(d), f64(d_max), f64(numerator),
                                           f64(totals[0]), f64(totals[1]), f64(dlr), f64(lr),
                                           base))
        if not live:  # prodigyopt returns before changing anything
            return loss
        for group in groups:
            group.update(d_numerator=numerator_new, d_denom=totals[1], d=d_new,
                         d_max=d_max_new, d_hat=d_hat)
        for gi, group, params in work:
            h = self._core(group, lr)
            scalars = _pd.element_scalars(np, f64(d), f64(d_new), f64(dlr), f64(cs), True, h)
            self._now = tuple(float(x) for x in scalars)
            super()._update_group(gi, group, params)
            for p in params:
                self.state[p]["step"] += 1
        for group in groups:
            group["k"] = int(group["k"]) + 1
        return loss

    def _start(self, p: Tensor) -> None:
        st = self.state[p]
        if "step" not in st:
            st["step"] = 0
        for key in _RULE.state:
            if st.get(key) is None:
                st[key] = (torch.clone(p.detach(), memory_format=torch.preserve_format)
                           if key == "p0" else torch.zeros_like(p, memory_format=torch.preserve_format))

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = self._core(group, float(group["lr"]))
        h["_prodigy"] = self._now
        return h

    def _rule(self, h: Hyper) -> Elementwise:
        return _RULE
