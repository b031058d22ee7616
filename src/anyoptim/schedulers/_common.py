"""Helpers shared by the schedules: descriptions, step conversion, argument checks, phases."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import _backend
from ..optimizers._validate import require

Schedule = Callable[[Any], Any]


def _as_float32(step: Any) -> tuple[Any, Any]:
    """The namespace of ``step`` and ``step`` as a float32 array (Python ints become NumPy)."""
    step = _backend.finalize(step)
    if _backend.library_name(step) is None:
        step = np.asarray(step)
    xp = _backend.namespace(step)
    return xp, xp.astype(step, xp.float32)


def _describe(fn: Schedule, name: str, *args: Any) -> Schedule:
    """Attach a JSON-able description (``fn.spec``) and a readable text to a schedule."""

    def text(arg: Any) -> str:
        if isinstance(arg, list) and arg and all(callable(a) for a in arg):
            return "[" + ", ".join(getattr(a, "description", "<custom>") for a in arg) + "]"
        return repr(arg)

    fn.__qualname__ = fn.__name__ = name
    fn.description = f"{name}({', '.join(text(a) for a in args)})"  # type: ignore[attr-defined]
    fn.spec = {  # type: ignore[attr-defined]
        "name": name,
        "args": [
            [getattr(a, "spec", None) for a in arg] if name == "join_schedules" and i == 0 else arg
            for i, arg in enumerate(args)
        ],
    }
    return fn


_MLX_FACTORIES = ("cosine_decay", "exponential_decay", "linear_schedule", "step_decay")


def _is_number(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _as_array(value: Any, xp: Any) -> Any:
    if _backend.library_name(value) is None:
        return xp.asarray(value, dtype=xp.float32)
    return value


# --------------------------------------------------------------------------------------------
# Schedules beyond MLX's five. Each is built from the helpers below: a phase is an interval
# [start, end] of steps, and inside it the step is turned into the fraction of the phase done
# and the fraction left (both clipped to [0, 1] and each computed from the step directly, so
# neither is obtained by subtracting the other from 1). Interpolating with those keeps about
# float32 precision *relative to the value*, also where a decay gets close to zero; the usual
# ``0.5 * (1 + cos(pi * t))`` loses most of its digits there.

_HALF_PI = 0.5 * math.pi


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(schedule: str, name: str, value: Any, minimum: int) -> int:
    ok = _is_int(value) and int(value) >= minimum
    require(ok, schedule, name, f"a whole number >= {minimum}", value)
    return int(value)


def _check_float(schedule: str, name: str, value: Any, rule: str = "a finite number") -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    require(ok, schedule, name, rule, value)
    return float(value)


def _check_choice(schedule: str, name: str, value: Any, options: Sequence[str]) -> str:
    require(
        isinstance(value, str) and value in options,
        schedule,
        name,
        "one of " + ", ".join(repr(o) for o in options),
        value,
    )
    return str(value)


def _check_offset(schedule: str, value: Any) -> int:
    require(
        _is_int(value) and int(value) in (0, 1),
        schedule,
        "step_offset",
        "0 (the curve at the number of updates done, as optax and transformers) or 1 (at "
        "the number of the update being made)",
        value,
    )
    return int(value)


def _fractions(xp: Any, s: Any, start: float, end: float) -> tuple[Any, Any]:
    """The fraction of the phase ``[start, end]`` done at step ``s``, and the fraction left."""
    width = end - start
    done = xp.minimum(xp.maximum((s - start) / width, 0.0), 1.0)
    left = xp.minimum(xp.maximum((end - s) / width, 0.0), 1.0)
    return done, left


def _interpolate(xp: Any, kind: str, a: float, b: float, done: Any, left: Any) -> Any:
    """From ``a`` (nothing done) to ``b`` (all done), linearly or along a half cosine."""
    if kind == "linear":
        return a * left + b * done
    # 0.5 * (1 + cos(pi * done)) == sin(pi/2 * left)**2: the weight of ``a`` is the squared
    # sine of what is left and the weight of ``b`` that of what is done. Adding the smaller
    # end value to the non-negative part keeps the relative precision at both ends.
    if b <= a:
        w = xp.sin(_HALF_PI * left)
        return b + (a - b) * (w * w)
    w = xp.sin(_HALF_PI * done)
    return a + (b - a) * (w * w)


def _segment(xp: Any, s: Any, kind: str, start: float, end: float, a: float, b: float) -> Any:
    """``a -> b`` over ``[start, end]``, constant outside; a phase of no width is ``b``."""
    if end <= start:
        return xp.zeros_like(s) + b
    done, left = _fractions(xp, s, start, end)
    return _interpolate(xp, kind, a, b, done, left)


def _steps(step: Any, offset: int = 0) -> tuple[Any, Any]:
    xp, s = _as_float32(step)
    return xp, (s + float(offset) if offset else s)


