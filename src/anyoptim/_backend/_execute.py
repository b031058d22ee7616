"""Executors of elementwise rules: the backend's side of "one rule per optimizer".

:func:`run_elementwise` takes a rule (see :mod:`._rules`), the hyperparameters of one group of
parameters and the flat lists of gradients, parameters and state dicts, and runs the rule with
the best executor the arrays allow:

1. numba kernels (NumPy arrays, and CPU torch tensors through NumPy views of their memory);
2. torch multi-tensor kernels (any torch device; the learning rate stays a device tensor);
3. the reference path: the element function on whole arrays of any library, traceable under
   ``jax.jit``, ``mx.compile`` and ``torch.compile``.

All three evaluate the same expressions, so they agree bit for bit. Nothing here knows an
optimizer by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from . import finalize, library_name
from ._rules import Elementwise

Leaves = list[tuple[Any, Any, dict[str, Any]]]


class Columns(tuple):
    """``(gradients, parameters, state dicts)``: three parallel lists, the form the executors
    work on (a list of per-leaf tuples would cost an allocation per leaf)."""

    __slots__ = ()

    def __new__(cls, grads: list[Any], params: list[Any], states: list[Any]) -> Columns:
        return super().__new__(cls, (grads, params, states))


class KernelCache(dict):
    """What executors keep between the updates of one optimizer (NumPy views of its torch
    parameters and state, reused while the tensors stay the same objects at the same
    addresses).

    Never copied or pickled: the views belong to these tensors in this process.
    """

    def __copy__(self) -> KernelCache:
        return KernelCache()

    def __deepcopy__(self, memo: Any) -> KernelCache:
        return KernelCache()

    def __reduce__(self) -> Any:
        return (KernelCache, ())


@functools.cache
def _reference_element(element: Callable, xp: Any, flags: tuple) -> Callable:
    return element(xp, flags)


def _cast(xp: Any, value: Any, dtype: Any) -> Any:
    """Array scalars in the parameters' dtype (so a float32 hyperparameter given as an array,
    e.g. a traced one, does not promote bfloat16 parameters); Python numbers stay as they are
    (the libraries round them to the array's dtype)."""
    if library_name(value) is None or value.dtype == dtype:
        return value
    return xp.astype(value, dtype)


def scalar_inputs(
    rule: Elementwise, xp: Any, h: Mapping[str, Any], step: Any
) -> Callable[[Any], tuple[Any, ...]]:
    """``dtype -> scalars`` for one group, each dtype computed once."""
    cache: dict[Any, tuple[Any, ...]] = {}

    def scalars(dtype: Any) -> tuple[Any, ...]:
        found = cache.get(dtype)
        if found is None:
            # a list comprehension: tuple(<generator>) here kept every step's scalars alive
            # on CPython 3.11 (about 100 bytes per update)
            found = cache[dtype] = tuple(
                [_cast(xp, finalize(v), dtype) for v in rule.scalars(xp, h, step, dtype)]
            )
        return found

    return scalars


def run_elementwise(
    rule: Elementwise,
    xp: Any,
    h: Mapping[str, Any],
    step: Any,
    leaves: Leaves | Columns,
    inplace: bool,
    fused: bool = True,
    cache: KernelCache | None = None,
    plan: Any = None,
) -> tuple[list[Any], list[list[Any]] | None]:
    """Apply ``rule`` to ``leaves``: (gradient, parameter, state dict) tuples, or
    :class:`Columns`.

    Returns the new parameters and the new state arrays per leaf (in ``rule.state`` order),
    for the caller to store; with ``inplace`` an executor that writes into the parameters and
    state arrays may be used, and then the state part is None (nothing left to store).
    ``inplace`` is a permission: the reference path always returns new arrays. ``plan``:
    the leaves as checked by :func:`._numpy_batch.plan` (with the same ``inplace``), which
    then runs them.
    """
    if isinstance(leaves, Columns):
        grads, params, states = leaves
    else:
        grads, params, states = ([list(c) for c in zip(*leaves)] if leaves else ([], [], []))
    flags = rule.flags(h)
    scalars = scalar_inputs(rule, xp, h, step)
    if plan is not None:
        return plan.run(rule.element, flags, scalars(plan.library_dtype))
    from .. import _backend  # looked up at call time: the tests switch executors off there

    if fused and grads and _backend.fused_enabled():
        lib = library_name(grads[0])
        if lib in ("numpy", "torch") and _backend.fused_numpy_available():
            from . import _numpy_fused

            out = _numpy_fused.step(rule, flags, grads, params, states, scalars, inplace, cache)
            if out is not NotImplemented:
                return out
        if lib == "torch" and _plain_tensors(grads, params, states):
            from . import _torch_foreach

            return _torch_foreach.step(rule, flags, grads, params, states, scalars, inplace)
    fn = _reference_element(rule.element, xp, flags)
    keys = rule.state
    new_params = []
    new_states = []
    for g, p, s in zip(grads, params, states):
        out = fn(p, g, *[s[k] for k in keys], scalars(g.dtype))
        new_params.append(finalize(out[0]))
        new_states.append([finalize(o) for o in out[1:]])
    return new_params, new_states


def run_reference(rule: Elementwise, xp: Any, h: Mapping[str, Any], step: Any, g: Any, p: Any,
                  s: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """The reference path for one tensor: ``(new parameter, new state arrays)``."""
    new_params, new_states = run_elementwise(rule, xp, h, step, [(g, p, dict(s))], False,
                                             fused=False)
    return new_params[0], new_states[0]  # type: ignore[index]


def _plain_tensors(grads: list[Any], params: list[Any], states: list[Any]) -> bool:
    """Every gradient, parameter and state entry is a plain tensor (not a subclass such as
    DTensor, whose sharding rules are kept by the reference path), parameters and gradients on
    one device each."""
    import torch

    plain = (torch.Tensor, torch.nn.Parameter)
    for g, p, s in zip(grads, params, states):
        if type(g) not in plain or type(p) not in plain or g.dtype != p.dtype:
            return False
        for a in s.values():
            if type(a) not in plain or a.shape != p.shape:
                return False
    return True
