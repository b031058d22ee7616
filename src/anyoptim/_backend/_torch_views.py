"""NumPy views of CPU torch tensors, so that the batched NumPy kernel updates them in place.

A view costs about a microsecond to make (``Tensor.numpy``). Gradients are new tensors at
every step and get new views; parameters and state tensors usually stay the same objects, so
their views are kept between calls in the optimizer's kernel cache, keyed by the tensor and
checked against its current data address (``param.data = ...`` or a resize that moves the
memory makes a new view). The cache holds the tensors of the latest call only: it is rebuilt
whenever one of them changed.
"""

from __future__ import annotations

import sys
from typing import Any

_KEY = "torch views"


def _view(t: Any) -> Any:
    """A NumPy view of the CPU tensor ``t``, or None (another device, a dtype NumPy lacks,
    a conjugate or negative view)."""
    try:
        return t.numpy() if not t.requires_grad else t.detach().numpy()
    except (RuntimeError, TypeError):
        return None


def _plain(tensors: list[Any]) -> bool:
    torch = sys.modules["torch"]
    return set(map(type, tensors)) <= {torch.Tensor, torch.nn.Parameter}


def fresh(tensors: list[Any]) -> list[Any] | None:
    """Views of tensors seen once (gradients), or None if one has none."""
    if not _plain(tensors):
        return None
    torch = sys.modules["torch"]
    try:
        return list(map(torch.Tensor.numpy, tensors))
    except (RuntimeError, TypeError):  # e.g. a gradient that requires grad
        views = list(map(_view, tensors))
        return None if any(v is None for v in views) else views


def kept(tensors: list[Any], cache: dict[Any, Any], role: str) -> list[Any] | None:
    """Views of tensors that persist between calls (parameters, or the state entry ``role``),
    or None if one has none; ``cache`` is the optimizer's kernel cache."""
    if not _plain(tensors):
        return None
    torch = sys.modules["torch"]
    key = (_KEY, role)
    known: dict[int, Any] = cache.get(key) or {}
    addresses = list(map(torch.Tensor.data_ptr, tensors))
    out = []
    missed = False
    for t, address in zip(tensors, addresses):
        entry = known.get(id(t))
        if entry is None or entry[0] is not t or entry[1] != address:
            view = _view(t)
            if view is None:
                return None
            entry = (t, address, view)
            missed = True
        out.append(entry)
    if missed or key not in cache:
        cache[key] = {id(e[0]): e for e in out}
    return [e[2] for e in out]
