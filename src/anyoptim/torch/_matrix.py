"""Per-tensor drop-ins: ``anyoptim.torch.Muon`` (torch.optim.Muon's signature) and ``Adafactor``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import optimizers as _core
from ._common import (
    _SCALAR_KEYS,
    _check_bool,
    _check_lr,
    _check_number,
    _compiling,
    _fail,
    _is_number,
    _lr_value,
    _new_step,
    _zeros,
)
from ._frontend import _FrontEnd


# =============================================================================== Muon, Adafactor
class _PerTensor(_FrontEnd):
    """A torch optimizer running one of anyoptim's per-tensor optimizers (Muon, Adafactor)
    through its pure step, per group."""

    _core_class: ClassVar[type[_core.Optimizer]]
    #: anyoptim state name -> torch state name
    _renames: ClassVar[dict[str, str]] = {}
    _counts_steps: ClassVar[bool] = False

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        """The anyoptim optimizer doing the maths (cheap to build; built per update so that its
        lazily created state follows the group's configuration)."""
        raise NotImplementedError

    def _gradient(self, p: Tensor, group: Mapping[str, Any]) -> Tensor:
        """The gradient the anyoptim optimizer sees (``p.grad`` itself is never changed)."""
        return p.grad

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        core = self._build_core(group)
        h = self._core_hyper(group)
        back = {v: k for k, v in self._renames.items()}
        buckets: dict[Any, list[Tensor]] = {}
        for p in params:
            st = self.state[p]
            if self._counts_steps:
                if "step" not in st:
                    st["step"] = _new_step()
                st["step"] += 1
                count = st["step"] if _compiling() else int(st["step"].item())
                buckets.setdefault(id(p) if _compiling() else count, []).append(p)
            else:
                buckets.setdefault(None, []).append(p)
        for members in buckets.values():
            names = [str(i) for i in range(len(members))]
            ps = dict(zip(names, members))
            gs = {n: self._gradient(p, group) for n, p in ps.items()}
            first = self.state[members[0]]
            step = (first["step"] - 1).to(torch.int64) if self._counts_steps \
                else torch.tensor(0, dtype=torch.int64)
            state: dict[str, Any] = {"step": step}
            for n, p in ps.items():
                st = self.state[p]
                started = any(k not in _SCALAR_KEYS for k in st)
                if started and group.get("beta1") is not None and "exp_avg" not in st:
                    st["exp_avg"] = _zeros(p)  # a first moment switched on after the start
                sub = {back.get(k, k): v for k, v in st.items() if k not in _SCALAR_KEYS}
                state[n] = sub
            new_params, new_state = core.pure_step(ps, gs, state, hyperparameters=h)
            for n, p in ps.items():
                p.copy_(new_params[n])
                st = self.state[p]
                for k, v in new_state[n].items():
                    key = self._renames.get(k, k)
                    if key in st and isinstance(st[key], Tensor) and st[key].shape == v.shape:
                        st[key].copy_(v)
                    else:
                        st[key] = v

    def _state_shape(self, p: Tensor, key: str, value: Tensor) -> tuple[int, ...]:
        if key == "exp_avg_sq_row":
            return tuple(p.shape[:-1])
        if key == "exp_avg_sq_col":
            return (*p.shape[:-2], p.shape[-1])
        return tuple(p.shape)


class Muon(_PerTensor):
    r"""Muon with ``torch.optim.Muon``'s keywords, defaults and maths (anyoptim's
    :class:`anyoptim.Muon` with ``adjust_lr=adjust_lr_fn or "original"``,
    ``normalize="clamp"``, ``decoupled_weight_decay=True``, ``ns_dtype="bfloat16"``).

    .. math::

        B &\leftarrow \mu B + (1-\mu) g, \qquad
        \tilde B = (1-\mu) g + \mu B \text{ (Nesterov) or } B \\
        O &= \mathrm{NS}^{(a,b,c)}_k(\tilde B / \max(\|\tilde B\|_F, \epsilon)), \qquad
        p \leftarrow p(1 - \eta\lambda) - \eta f(A, B)\, O

    with :math:`f = \sqrt{\max(1, A/B)}` (``adjust_lr_fn=None`` or ``"original"``) or
    :math:`0.2\sqrt{\max(A, B)}` (``"match_rms_adamw"``, Moonlight's). The Newton-Schulz
    iteration runs in bfloat16, as torch's does (the two bfloat16 iterations round
    differently: they agree to about 2e-3). Unlike torch, tensors that are not matrices are
    accepted: ndim > 2 is reshaped to ``(S[0], -1)``, scalars and vectors get momentum SGD.
    For MLX's Muon on torch tensors use ``anyoptim.torch.Optimizer(params,
    anyoptim.Muon(...))``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0.1``.
        momentum: :math:`\mu`. Default ``0.95``.
        nesterov: Nesterov momentum. Default ``True``.
        ns_coefficients: :math:`(a, b, c)`. Default ``(3.4445, -4.775, 2.0315)``.
        eps: lower bound of the norm. Default ``1e-7``.
        ns_steps: Newton-Schulz iterations :math:`k`. Default ``5``.
        adjust_lr_fn: None, ``"original"`` or ``"match_rms_adamw"``. Default None.

    State per parameter: ``momentum_buffer``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = anyoptim.torch.Muon([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.eye(2)
        >>> opt.step()
        >>> torch.round(w.detach().diagonal(), decimals=2)
        tensor([-0.1100, -0.1100])
    """

    _core_class = _core.Muon
    _renames: ClassVar[dict[str, str]] = {"v": "momentum_buffer"}

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-07,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov, "ns_coefficients": ns_coefficients,
                                  "eps": eps, "ns_steps": ns_steps,
                                  "adjust_lr_fn": adjust_lr_fn})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        if "lr" in group:
            _check_lr("Muon", where, group["lr"])
        if "momentum" in group:
            _check_number("Muon", where, "momentum", group["momentum"], 0.0, 1.0,
                          fix="momentum is a decay rate in [0, 1), e.g. 0.95.")
        for key in ("weight_decay", "eps"):
            if key in group:
                _check_number("Muon", where, key, group[key], 0.0, None)
        if "nesterov" in group:
            _check_bool("Muon", where, "nesterov", group["nesterov"])
        steps = group.get("ns_steps", 5)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < 100:
            _fail("Muon", where, "ns_steps", steps, "an int in [0, 100)",
                  "Pass ns_steps=5, say.")
        coefficients = group.get("ns_coefficients", (3.4445, -4.775, 2.0315))
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3 or not all(
                _is_number(c) for c in coefficients):
            _fail("Muon", where, "ns_coefficients", coefficients, "three numbers (a, b, c)",
                  "Pass ns_coefficients=(3.4445, -4.775, 2.0315), say.")
        mode = group.get("adjust_lr_fn")
        if mode not in (None, "original", "match_rms_adamw"):
            _fail("Muon", where, "adjust_lr_fn", mode, "None, 'original' or 'match_rms_adamw'",
                  "torch.optim.Muon supports these two adjustments.")

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        return _core.Muon(learning_rate=0.0)

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"learning_rate": _lr_value(group["lr"]), **_muon_options(group)}


def _muon_options(group: Mapping[str, Any]) -> dict[str, Any]:
    """torch.optim.Muon's group as anyoptim.Muon's options."""
    return {"momentum": group["momentum"], "weight_decay": group["weight_decay"],
            "nesterov": group["nesterov"], "ns_steps": group["ns_steps"],
            "adjust_lr": group["adjust_lr_fn"] or "original",
            "ns_coefficients": [list(group["ns_coefficients"])], "eps": group["eps"],
            "normalize": "clamp", "decoupled_weight_decay": True, "ns_dtype": "bfloat16"}


class Adafactor(_PerTensor):
    r"""Adafactor (Shazeer and Stern, 2018) with anyoptim's (MLX's) update and the keywords
    of Hugging Face's ``transformers.optimization.Adafactor``.

    Factored second moments for tensors with two or more dimensions, a relative step size
    :math:`\max(\epsilon_2, \mathrm{RMS}(p)) \min(10^{-2}, 1/\sqrt{t})` unless
    ``relative_step=False`` (then ``lr`` is the step size); see :class:`anyoptim.Adafactor`.
    ``torch.optim.Adafactor`` differs in weight decay, learning rate and :math:`\epsilon_1`
    ("Coming from PyTorch" in the docs). A group whose ``lr`` is set to ``0`` is not moved,
    even with the relative step size (what distributed checkpoint's initialising step needs).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: the step size, used with ``relative_step=False``. Default ``None``.
        eps: :math:`(\epsilon_1, \epsilon_2)`. Default ``(1e-30, 1e-3)``.
        clip_threshold: RMS clipping threshold of the update. Default ``1.0``.
        decay_rate: exponent of the second-moment decay. Default ``-0.8``.
        beta1: first-moment decay, or None for none. Default ``None``.
        weight_decay: weight decay scaled by the step size. Default ``0``.
        scale_parameter: scale the step by the parameter's RMS. Default ``True``.
        relative_step: use the relative step size. Default ``True``.
        warmup_init: warm the relative step size up. Default ``False``.

    State per parameter: ``step``, ``exp_avg_sq_row`` and ``exp_avg_sq_col`` (or
    ``exp_avg_sq``), ``exp_avg`` with ``beta1``.
    """

    _core_class = _core.Adafactor
    _counts_steps = True

    def __init__(
        self,
        params: Any,
        lr: float | Tensor | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
    ) -> None:
        if lr is not None and relative_step:
            _fail("Adafactor", "", "lr", lr, "None when relative_step=True",
                  "The relative step size ignores lr: pass relative_step=False to use lr.")
        if warmup_init and not relative_step:
            _fail("Adafactor", "", "warmup_init", True, "False when relative_step=False",
                  "warmup_init warms up the relative step size; pass relative_step=True.")
        super().__init__(params, {
            "lr": lr, "eps": eps, "clip_threshold": clip_threshold, "decay_rate": decay_rate,
            "beta1": beta1, "weight_decay": weight_decay, "scale_parameter": scale_parameter,
            "relative_step": relative_step, "warmup_init": warmup_init})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        lr = group.get("lr")
        if lr is not None:
            _check_lr("Adafactor", where, lr)
        elif not group.get("relative_step", True):
            _fail("Adafactor", where, "lr", None, "a number when relative_step=False",
                  "Pass lr=1e-3, say, or relative_step=True.")
        eps = group.get("eps", (1e-30, 1e-3))
        if not isinstance(eps, (tuple, list)) or len(eps) != 2 or not all(map(_is_number, eps)):
            _fail("Adafactor", where, "eps", eps, "a pair of numbers (eps1, eps2)",
                  "Pass eps=(1e-30, 1e-3).")
        beta1 = group.get("beta1")
        if beta1 is not None:
            _check_number("Adafactor", where, "beta1", beta1, 0.0, 1.0)
        for key in ("clip_threshold", "weight_decay"):
            if key in group:
                _check_number("Adafactor", where, key, group[key], 0.0, None)
        for key in ("scale_parameter", "relative_step", "warmup_init"):
            if key in group:
                _check_bool("Adafactor", where, key, group[key])

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        return _core.Adafactor(beta_1=group["beta1"])

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        lr = _lr_value(group["lr"])
        relative = group["relative_step"]
        if relative and lr is not None and _is_number(lr) and lr == 0:
            relative = False  # a zero lr (e.g. distributed checkpoint's init step): no move
        h = {"eps": tuple(group["eps"]), "clip_threshold": group["clip_threshold"],
             "decay_rate": group["decay_rate"], "beta_1": group["beta1"],
             "weight_decay": group["weight_decay"], "scale_parameter": group["scale_parameter"],
             "relative_step": relative, "warmup_init": group["warmup_init"]}
        if not relative:
            h["learning_rate"] = lr
        return h
