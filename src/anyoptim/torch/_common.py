"""Shared pieces of the torch front-end: argument checks with clear messages, small tensor helpers and the schedule wrapper."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from ..schedulers import from_spec

Closure = Callable[[], Any] | None
_SCALAR_KEYS = ("step", "skipped_steps")
#: The array namespace of torch tensors (looked up once, outside any compiled region).
_XP = _backend.namespace(torch.zeros(()))
_VIEW_DTYPES = (torch.float32, torch.float64)
#: Element functions of the traced path, by (element factory, flags).
_REFERENCE: dict[tuple[Any, ...], Callable[..., Any]] = {}


# =============================================================================== validation
def _fail(owner: str, where: str, key: str, value: Any, rule: str, fix: str) -> None:
    raise ValueError(
        f"anyoptim.torch.{owner}: {where}{key}={value!r:.60} is invalid: {key} must be {rule}. "
        f"{fix}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point()


def _check_number(owner: str, where: str, key: str, value: Any, low: float | None,
                  high: float | None, closed_high: bool = False, tensor_ok: bool = False,
                  fix: str = "") -> None:
    if tensor_ok and isinstance(value, Tensor):
        if not _is_scalar_tensor(value):
            _fail(owner, where, key, value, "a number or a 1-element floating tensor",
                  fix or f"Pass {key} as a float or as torch.tensor(value).")
        return  # its value is not read here: that would synchronise with the device
    rule = "a number"
    ok = _is_number(value) and not math.isnan(value)
    if low is not None:
        rule += f" >= {low}"
        ok = ok and value >= low
    if high is not None:
        rule += f" and {'<=' if closed_high else '<'} {high}"
        ok = ok and (value <= high if closed_high else value < high)
    if not ok:
        _fail(owner, where, key, value, rule, fix or f"Pass a valid {key}.")


def _check_bool(owner: str, where: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(owner, where, key, value, "True or False", f"Pass {key}=True or {key}=False.")


def _check_betas(owner: str, where: str, betas: Any, tensor_ok: bool = False) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        _fail(owner, where, "betas", betas, "a pair (beta1, beta2)",
              "Pass betas=(0.9, 0.999), for example.")
    for i, beta in enumerate(betas):
        _check_number(owner, where, f"betas[{i}]", beta, 0.0, 1.0, tensor_ok=tensor_ok,
                      fix="Betas are decay rates of moving averages, e.g. (0.9, 0.999).")


def _check_lr(owner: str, where: str, lr: Any) -> None:
    _check_number(owner, where, "lr", lr, 0.0, None, tensor_ok=True,
                  fix="Pass a non-negative learning rate (a float, or a 0-d tensor to change "
                      "it under torch.compile without recompiling).")


def _check_false(owner: str, key: str, value: Any, fix: str) -> None:
    if value:
        _fail(owner, "", key, value, "False", fix)


def _lr_value(lr: Any) -> Any:
    """A 1-element tensor lr as a 0-d tensor (torch's convention), a number as is."""
    if isinstance(lr, Tensor) and lr.dim() != 0:
        return lr.reshape(())
    return lr


# =============================================================================== shared helpers
def _step_dtype() -> torch.dtype:
    # torch's choice for the per-parameter step of its non-fused optimizers
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _new_step() -> Tensor:
    return torch.tensor(0.0, dtype=_step_dtype())


def _zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _real(x: Tensor) -> Tensor:
    """A real view of a complex tensor (the maths then runs on real and imaginary parts)."""
    return torch.view_as_real(x) if x.is_complex() else x


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def _check_grad(owner: str, gi: int, index: int, p: Tensor, g: Tensor) -> None:
    where = f"param_groups[{gi}]['params'][{index}]"
    if g.is_sparse:
        raise RuntimeError(
            f"anyoptim.torch.{owner}: {where} has a sparse gradient, which anyoptim does not "
            "support; use dense gradients (e.g. nn.Embedding(sparse=False)) or "
            "torch.optim.SparseAdam."
        )
    if g.shape != p.shape:
        raise ValueError(
            f"anyoptim.torch.{owner}: {where}: the gradient has shape {tuple(g.shape)} but the "
            f"parameter has shape {tuple(p.shape)}; assign .grad a tensor shaped like the "
            "parameter."
        )
    if not (g.is_floating_point() or g.is_complex()):
        raise TypeError(
            f"anyoptim.torch.{owner}: {where}: the gradient has dtype {g.dtype}; gradients must "
            "be floating point (cast it to the parameter's dtype)."
        )


def _leaf_views(p: Tensor, st: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """``(p, its data pointer, its state tensors, NumPy view of p, views of the state)`` when
    ``p`` and its state are contiguous CPU float tensors of one dtype, else None."""
    tensors = [st[k] for k in keys]
    views = []
    for t in (p, *tensors):
        if type(t) not in (Tensor, torch.nn.Parameter) or t.dtype != p.dtype \
                or t.dtype not in _VIEW_DTYPES or not t.is_cpu or not t.is_contiguous() \
                or t.is_conj() or t.is_neg() or t.shape != p.shape:
            return None
        views.append(t.detach().numpy())
    return (p, p.data_ptr(), tensors, views[0], dict(zip(keys, views[1:])))


def _store(ps: list[Any], new_p: list[Any], ss: list[dict[str, Any]],
           new_s: list[list[Any]], keys: tuple[str, ...]) -> None:
    """Write a functional executor's results into the parameters and state arrays."""
    for p, value, st, values in zip(ps, new_p, ss, new_s):
        if value is not p:
            _assign(p, value)
        for k, v in zip(keys, values):
            if v is not st[k]:
                _assign(st[k], v)


def _assign(target: Any, value: Any) -> None:
    if isinstance(target, np.ndarray):
        np.copyto(target, value, casting="unsafe")
    else:
        target.copy_(value)


class _SpecSchedule:
    """A built-in anyoptim schedule kept by its description, so that it pickles (the
    schedules themselves are closures)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._fn: Callable[[Any], Any] | None = None

    def __call__(self, step: Any) -> Any:
        if self._fn is None:
            self._fn = from_spec(self.spec)
        return self._fn(step)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec = state["spec"]
        self._fn = None
