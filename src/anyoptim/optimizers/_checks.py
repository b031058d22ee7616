"""The checks of the leaves of an update, before anything is changed.

:func:`check_leaves` runs on the flat lists of one update: whole-list operations in C for the
common case, then a leaf-by-leaf search for the first problem, reported with its path
(:func:`located`) by the caller.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

from .. import _backend
from .._backend import library_name
from ..errors import MissingStateError, TreeMismatchError
from . import _tree
from ._tree import PathError


class LeafError(Exception):
    """A problem with the ``index``-th leaf; the path is found only when it is reported."""

    def __init__(self, index: int, kind: type[Exception], message: str) -> None:
        super().__init__(message)
        self.index, self.kind, self.message = index, kind, message


def located(err: Exception, structure: Any) -> PathError:
    """A :class:`PathError` for ``err``, with the path of a leaf error looked up."""
    if isinstance(err, LeafError):
        path = _tree.paths(structure)[err.index]
        return PathError.at(path.split(".") if path else [], err.kind, err.message)
    assert isinstance(err, PathError)
    return err


def check_leaves(grads: list[Any], params: list[Any], states: list[Any] | None) -> None:
    """Raise :class:`LeafError` for the first leaf that cannot be updated (``states=None``:
    check gradients against parameters only)."""
    if not grads or _all_fine(grads, params, states):
        return
    _find_problem(grads, params, states)


_shape = operator.attrgetter("shape")
_dtype = operator.attrgetter("dtype")
_device = operator.attrgetter("device")


def _all_fine(grads: list[Any], params: list[Any], states: list[Any] | None) -> bool:
    """The common case, checked with whole-list operations that run in C: one array type for
    the gradients, parameters of the same library, equal shapes (and devices), floating
    gradients, non-empty state dicts holding arrays of that library. False means "look
    closer" (:func:`_find_problem` then finds the leaf and the message)."""
    types = set(map(type, grads))
    if len(types) != 1:
        return False
    t0 = next(iter(types))
    lib = library_name(grads[0])
    if lib is None:
        return False
    for t in set(map(type, params)) - types:
        if _backend.library_name_of_type(t) != lib:
            return False
    if list(map(_shape, grads)) != list(map(_shape, params)):
        return False
    if lib == "torch" and list(map(_device, grads)) != list(map(_device, params)):
        return False
    for dtype in set(map(_dtype, grads)):
        if dtype not in _INEXACT and not _remember_inexact(grads, dtype):
            return False
    if states is None:
        return True
    if set(map(type, states)) != {dict} or not all(states):
        return False
    for t in set(map(type, itertools.chain.from_iterable(map(dict.values, states)))):
        if t is not t0 and _backend.library_name_of_type(t) not in (lib, None):
            return False
    return True


_INEXACT: set[Any] = set()


def _remember_inexact(grads: list[Any], dtype: Any) -> bool:
    g = next(g for g in grads if g.dtype == dtype)
    if _backend.is_inexact(g):
        _INEXACT.add(dtype)
        return True
    return False


def _find_problem(grads: list[Any], params: list[Any], states: list[Any] | None) -> None:
    first = grads[0]
    lib = library_name(first)
    t0 = type(first)
    inexact: set[Any] = set()
    torch = lib == "torch"
    for i, (g, p) in enumerate(zip(grads, params)):
        tg = type(g)
        if tg is not t0:
            glib = library_name(g)
            if glib is None:
                raise LeafError(
                    i, TypeError,
                    f"expected an array, got {tg.__name__} ({g!r:.60}). Drop entries without "
                    "a gradient from the gradient tree instead of passing None or numbers.",
                )
            if glib != lib:
                raise LeafError(
                    i, TypeError,
                    f"gradients mix array libraries ({lib} and {glib}); convert them all to one "
                    "library",
                )
        elif lib is None:
            raise LeafError(
                i, TypeError,
                f"expected an array, got {tg.__name__} ({g!r:.60}). Drop entries without "
                "a gradient from the gradient tree instead of passing None or numbers.",
            )
        if type(p) is not tg:
            plib = library_name(p)
            if plib != lib:
                raise LeafError(
                    i, TypeError,
                    f"the gradient is a {lib} array but the parameter is "
                    f"{plib + ' array' if plib else type(p).__name__}; pass parameters and "
                    "gradients from the same array library",
                )
        if torch and g.device != p.device:
            raise LeafError(
                i, ValueError,
                f"the gradient is on {g.device} but the parameter is on {p.device}; move them "
                "to the same device",
            )
        if g.shape != p.shape:
            raise LeafError(
                i, ValueError,
                f"gradient shape {tuple(g.shape)} does not match parameter shape "
                f"{tuple(p.shape)}",
            )
        dtype = g.dtype
        if dtype not in inexact:
            if not _backend.is_inexact(g):
                raise LeafError(
                    i, TypeError,
                    f"the gradient has dtype {dtype}, but gradients must be floating point "
                    f"(the parameter is {p.dtype}); an integer or bool gradient would silently "
                    "change the parameter's dtype. Cast the gradient to the parameter's dtype.",
                )
            inexact.add(dtype)
        if states is None:
            continue
        s = states[i]
        if type(s) is not dict or not s:
            raise LeafError(
                i, MissingStateError if not isinstance(s, (list, tuple)) else TreeMismatchError,
                "this parameter has no optimizer state (it was added after the state was "
                "created). Call optimizer.init(parameters) with the full parameter tree first."
                if not isinstance(s, (list, tuple)) else
                f"the state entry is a {type(s).__name__}, expected a dict of state arrays",
            )
        for key, value in s.items():
            if type(value) is not tg and library_name(value) not in (lib, None):
                slib = library_name(value)
                raise LeafError(
                    i, TypeError,
                    f"the optimizer state entry {key!r} is a {slib} array but the gradient is a "
                    f"{lib} array; load the state into {lib} (anyoptim.io.load_state(path, "
                    f"library={lib!r})) or pass {slib} gradients and parameters",
                )
