"""NumPy views of CPU torch tensors, so that the batched NumPy kernel updates them in place.

A view costs about a microsecond to make (``Tensor.numpy``). Gradients are new tensors at
every step and get new views; parameters and state tensors usually stay the same objects, so
their views are kept between calls in the optimizer's kernel cache, keyed by the tensor and
checked against its current data address (``param.data = ...`` or a resize that moves the
memory makes a new view). The cache holds the tensors of the latest call only: it is rebuilt
whenever one of them changed.
"""

from __future__ import annotations

import functools
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


class _Kept:
    """The views of one role's tensors at the latest call, in the order of that call."""

    __slots__ = ("addresses", "ids", "owns", "tensors", "views")

    def __init__(self, tensors: list[Any], addresses: list[int], views: list[Any],
                 owns: list[int]) -> None:
        self.tensors = tensors  # held, so that their ids stay theirs while this entry lives
        self.ids = list(map(id, tensors))
        self.addresses = addresses
        self.views = views
        self.owns = owns  # 1: the view holds the tensor's storage; 0: the tensor holds the view


def kept(tensors: list[Any], cache: dict[Any, Any], role: str) -> list[Any] | None:
    """Views of tensors that persist between calls (parameters, or the state entry ``role``),
    or None if one has none; ``cache`` is the optimizer's kernel cache."""
    if not _plain(tensors):
        return None
    torch = sys.modules["torch"]
    key = (_KEY, role)
    entry: _Kept | None = cache.get(key)
    addresses = list(map(torch.Tensor.data_ptr, tensors))
    if entry is not None and entry.ids == list(map(id, tensors)) and entry.addresses == addresses:
        return entry.views  # the same tensors, at the same addresses, in the same order
    index = {} if entry is None else dict(zip(entry.ids, range(len(entry.ids))))
    views, owns = [], []
    for t, address in zip(tensors, addresses):
        i = index.get(id(t))
        if i is not None and entry is not None and entry.tensors[i] is t \
                and entry.addresses[i] == address:
            views.append(entry.views[i])
            owns.append(entry.owns[i])
            continue
        view = _view(t)
        if view is None:
            return None
        views.append(view)
        owns.append(1)  # the view holds the tensor's storage
    cache[key] = _Kept(list(tensors), addresses, views, owns)
    return views


def remember(cache: dict[Any, Any], role: str, tensors: list[Any], arrays: list[Any],
             addresses: list[int]) -> None:
    """Keep the views of tensors made here from NumPy arrays (``torch.from_numpy``): the new
    parameters and state tensors of a functional update, which usually come back next call."""
    # a tensor made from an array holds the array; the array does not hold the storage
    cache[(_KEY, role)] = _Kept(list(tensors), list(addresses), list(arrays), [0] * len(arrays))


def _counts(tensors: list[Any]) -> list[tuple[int, int]]:
    """(Python references, storage users) of each tensor, as :func:`private` sees them."""
    torch = sys.modules["torch"]
    use = torch._C._storage_Use_Count
    return [(sys.getrefcount(t), use(t.untyped_storage()._cdata)) for t in tensors]


@functools.lru_cache(maxsize=1)
def _alone() -> tuple[int, int]:
    """The counts of a state tensor held only by its state dict and this module's cache."""
    torch = sys.modules["torch"]
    holder = {"m": torch.zeros(2)}
    cache: dict[Any, Any] = {}
    kept([holder["m"]], cache, "m")
    return _counts([holder["m"]])[0]


def private(tensors: list[Any], cache: dict[Any, Any], role: str) -> list[bool]:
    """Which state tensors (just seen by :func:`kept` for ``role``, held in one list) a
    functional update may overwrite: held by nobody else (no other Python reference, no view
    or NumPy array of their memory), covering their whole storage, outside autograd."""
    refs, uses = _alone()
    entry: _Kept = cache[(_KEY, role)]
    out = []
    for t, counts, owns in zip(tensors, _counts(tensors), entry.owns):
        # the kept view of a tensor made from an array is that array: one storage use fewer
        alone = (refs, uses - 1 + owns)
        out.append(counts == alone and not t.requires_grad and t.storage_offset() == 0
                   and t.untyped_storage().nbytes() == t.numel() * t.element_size())
    return out
