"""PyTorch multi-tensor executor: an elementwise rule run on lists of tensors.

The element function of a rule is called once with :class:`TensorList` values in place of
arrays: each arithmetic operator and each ``ops`` function becomes one ``torch._foreach_*``
call over all tensors of a group (one kernel launch per operation on CUDA instead of one per
tensor). Scalars stay what the rule made them, 0-d tensors on the parameters' device included
(learning rate, bias terms), so nothing is read back to the host. The operations are the
reference path's, tensor by tensor, so the results are the same.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any


class TensorList:
    """A list of tensors that does arithmetic with ``torch._foreach_*`` kernels."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    @staticmethod
    def _other(other: Any) -> Any:
        return other.items if isinstance(other, TensorList) else other

    def __add__(self, other: Any) -> TensorList:
        import torch

        return TensorList(torch._foreach_add(self.items, self._other(other)))

    __radd__ = __add__

    def __sub__(self, other: Any) -> TensorList:
        import torch

        return TensorList(torch._foreach_sub(self.items, self._other(other)))

    def __rsub__(self, other: Any) -> TensorList:
        import torch

        # other - x == (-x) + other exactly (negation is exact)
        return TensorList(torch._foreach_add(torch._foreach_neg(self.items), other))

    def __mul__(self, other: Any) -> TensorList:
        import torch

        return TensorList(torch._foreach_mul(self.items, self._other(other)))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> TensorList:
        import torch

        return TensorList(torch._foreach_div(self.items, self._other(other)))

    def __rtruediv__(self, other: Any) -> TensorList:
        return TensorList([other / t for t in self.items])

    def __neg__(self) -> TensorList:
        import torch

        return TensorList(torch._foreach_neg(self.items))


def _pairwise(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> TensorList:
    la = a.items if isinstance(a, TensorList) else None
    lb = b.items if isinstance(b, TensorList) else None
    n = len(la if la is not None else lb)  # type: ignore[arg-type]
    return TensorList([
        fn(la[i] if la is not None else a, lb[i] if lb is not None else b) for i in range(n)
    ])


@functools.lru_cache(maxsize=1)
def list_ops() -> types.ModuleType:
    """The ``ops`` an element function sees when called with :class:`TensorList` values."""
    import torch

    def maximum(a: Any, b: Any) -> TensorList:
        if isinstance(a, TensorList) and isinstance(b, TensorList):
            return TensorList(torch._foreach_maximum(a.items, b.items))
        return _pairwise(torch.maximum, _as_tensor(a, b), _as_tensor(b, a))

    def minimum(a: Any, b: Any) -> TensorList:
        if isinstance(a, TensorList) and isinstance(b, TensorList):
            return TensorList(torch._foreach_minimum(a.items, b.items))
        return _pairwise(torch.minimum, _as_tensor(a, b), _as_tensor(b, a))

    def sign(x: TensorList) -> TensorList:
        # NaN stays NaN, as NumPy's and the reference path's sign
        return TensorList([torch.where(torch.isnan(t), t, torch.sign(t)) for t in x.items])

    def where(c: Any, a: Any, b: Any) -> TensorList:
        lists = [v for v in (c, a, b) if isinstance(v, TensorList)]
        n = len(lists[0].items)
        pick = lambda v, i: v.items[i] if isinstance(v, TensorList) else v  # noqa: E731
        return TensorList([torch.where(pick(c, i), pick(a, i), pick(b, i)) for i in range(n)])

    ops = types.ModuleType("anyoptim_tensor_list_ops")
    ops.sqrt = lambda x: TensorList(torch._foreach_sqrt(x.items))  # type: ignore[attr-defined]
    ops.abs = lambda x: TensorList(torch._foreach_abs(x.items))  # type: ignore[attr-defined]
    ops.sign = sign  # type: ignore[attr-defined]
    ops.maximum = maximum  # type: ignore[attr-defined]
    ops.minimum = minimum  # type: ignore[attr-defined]
    ops.where = where  # type: ignore[attr-defined]
    ops.atan2 = lambda a, b: _pairwise(torch.atan2, _as_tensor(a, b), _as_tensor(b, a))  # type: ignore[attr-defined]
    return ops


def _as_tensor(x: Any, like: Any) -> Any:
    """A Python number next to a TensorList becomes a 0-d tensor for torch.maximum."""
    if isinstance(x, (int, float)) and isinstance(like, TensorList) and like.items:
        import torch

        t = like.items[0]
        return torch.tensor(x, dtype=t.dtype, device=t.device)
    return x


@functools.cache
def element_for(element: Callable, flags: tuple) -> Callable:
    return element(list_ops(), flags)


def step(
    rule: Any,
    flags: tuple,
    grads: list[Any],
    params: list[Any],
    dicts: list[dict[str, Any]],
    scalars: Callable[[Any], tuple[Any, ...]],
    inplace: bool,
) -> tuple[list[Any], list[list[Any]] | None]:
    """Run ``rule`` over the leaves grouped by (device, dtype).

    In place, the parameters and state tensors are overwritten (``torch._foreach_copy_``) and
    ``(parameters, None)`` is returned; otherwise ``(new parameters, new state tensors per
    leaf)``, the inputs untouched.
    """
    import torch

    keys = rule.state
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, g in enumerate(grads):
        groups.setdefault((g.device, g.dtype), []).append(i)
    fn = element_for(rule.element, flags)
    new_params: list[Any] = [None] * len(grads)
    new_states: list[Any] = [None] * len(grads)
    with torch.no_grad():
        for (_device, dtype), index in groups.items():
            ps = [params[i] for i in index]
            gs = [grads[i] for i in index]
            states = [TensorList([dicts[i][k] for i in index]) for k in keys]
            out = fn(TensorList(ps), TensorList(gs), *states, scalars(dtype))
            new_p = out[0].items
            if inplace:
                torch._foreach_copy_(ps, new_p)
                for olds, news in zip(states, out[1:]):
                    if news is not olds:
                        torch._foreach_copy_(olds.items, news.items)
                new_p = ps
            for j, i in enumerate(index):
                new_params[i] = new_p[j]
                new_states[i] = [o.items[j] for o in out[1:]]
    return new_params, (None if inplace else new_states)
