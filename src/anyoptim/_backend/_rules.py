"""The form in which an optimizer hands its maths to the backend.

An elementwise optimizer describes its update once, as an :class:`Elementwise` rule:

* ``state``: the names of its per-parameter state arrays (each shaped like the parameter);
* ``flags(h)``: static switches computed from the hyperparameters ``h`` (a mapping), such as
  "weight decay is on". A switch must not depend on a traced value: use :func:`static` to read
  a hyperparameter as a Python number where it is one, and choose the general branch otherwise;
* ``scalars(xp, h, step, dtype)``: the scalar inputs of one update, computed once per group of
  parameters of one dtype (Python numbers, or 0-d arrays of the parameters' ``dtype``);
* ``element(ops, flags)``: a factory returning the element function
  ``f(p, g, *state, scalars) -> (new_p, *new_state)``. It may use only arithmetic operators and
  the functions of ``ops`` listed in :data:`OPS`.

The backend calls the element function with whole arrays (``ops`` is the array namespace:
the reference path, any library, traceable under ``jax.jit`` / ``mx.compile`` /
``torch.compile``), with lists of tensors (torch multi-tensor kernels) and with scalars inside
numba loops (the fused NumPy path, also used for CPU torch tensors). Every executor therefore
evaluates the same expressions in the same order, which is why they agree bit for bit.

Nothing here knows an optimizer by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: The functions an element function may take from ``ops``.
OPS = ("sqrt", "abs", "sign", "maximum", "minimum", "where", "atan2")

Hyper = Mapping[str, Any]


@dataclass(frozen=True)
class Elementwise:
    """An elementwise update rule (see the module docstring)."""

    state: tuple[str, ...]
    element: Callable[[Any, tuple[Any, ...]], Callable[..., tuple[Any, ...]]]
    scalars: Callable[[Any, Hyper, Any, Any], tuple[Any, ...]]
    flags: Callable[[Hyper], tuple[Any, ...]] = lambda h: ()


def static(value: Any) -> Any:
    """``value`` as a Python number if it is a concrete number, else None (an array: possibly
    traced, so no Python comparison may look at it)."""
    if isinstance(value, (bool, int, float)):
        return value
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return item()
    return None


def is_zero(value: Any) -> bool:
    """True only for a concrete zero (a traced value is never known to be zero)."""
    v = static(value)
    return v is not None and v == 0


def is_positive(value: Any) -> bool | None:
    """True/False for a concrete number, None for an array (possibly traced)."""
    v = static(value)
    return None if v is None else v > 0


def learning_rate(xp: Any, h: Hyper, dtype: Any) -> Any:
    """The learning rate of ``h`` cast to ``dtype`` (what every MLX optimizer multiplies by)."""
    return xp.astype(h["learning_rate"], dtype)
