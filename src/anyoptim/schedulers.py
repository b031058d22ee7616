"""Learning-rate schedules: factories returning ``schedule(step) -> value`` closures.

The optimizer calls a schedule with its step counter (a 0-d uint64 array) *before* increasing
it, so update ``k`` uses ``schedule(k - 1)``. Schedules return float32 0-d arrays in the library
of the step; ``exponential_decay`` and ``step_decay`` return Python floats for Python int steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend
from .optimizers._validate import require

__all__ = [
    "cosine_decay",
    "exponential_decay",
    "from_spec",
    "join_schedules",
    "linear_schedule",
    "step_decay",
]

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


def from_spec(spec: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from the ``spec`` attribute of a built-in schedule.

    Only the five factories of this module can be named, so a spec read from a file can never
    run arbitrary code.
    """
    factories: dict[str, Callable[..., Schedule]] = {
        "cosine_decay": cosine_decay,
        "exponential_decay": exponential_decay,
        "join_schedules": join_schedules,
        "linear_schedule": linear_schedule,
        "step_decay": step_decay,
    }
    if not isinstance(spec, dict) or spec.get("name") not in factories:
        raise ValueError(
            f"not a built-in schedule description: {spec!r:.100}; expected one of "
            + ", ".join(sorted(factories))
        )
    args = list(spec.get("args", []))
    if spec["name"] == "join_schedules":
        if not args or any(s is None for s in args[0]):
            raise ValueError("join_schedules description contains a custom schedule")
        args[0] = [from_spec(s) for s in args[0]]
    for a in args:
        if spec["name"] != "join_schedules" and not isinstance(a, (int, float)):
            raise ValueError(f"schedule arguments must be numbers, got {a!r:.60}")
    return factories[spec["name"]](*args)


def exponential_decay(init: float, decay_rate: float) -> Schedule:
    r"""Exponential decay: :math:`\text{init} \cdot \text{decay\_rate}^{s}`.

    Example:
        >>> import anyoptim as optim
        >>> lr = optim.exponential_decay(0.1, 0.9)
        >>> opt = optim.SGD(learning_rate=lr)
        >>> for _ in range(5): opt.update({}, {})
        >>> opt.learning_rate
        array(0.06561, dtype=float32)
    """

    def schedule(step: Any) -> Any:
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            return init * decay_rate**step
        _xp, s = _as_float32(step)
        return _backend.finalize(init * decay_rate**s)

    return _describe(schedule, "exponential_decay", init, decay_rate)


def step_decay(init: float, decay_rate: float, step_size: int) -> Schedule:
    r"""Step decay: :math:`\text{init} \cdot \text{decay\_rate}^{\lfloor s / \text{step\_size} \rfloor}`.

    Example:
        >>> import anyoptim as optim
        >>> opt = optim.SGD(learning_rate=optim.step_decay(0.1, 0.9, 10))
        >>> for _ in range(21): opt.update({}, {})
        >>> round(float(opt.learning_rate), 6)
        0.081
    """
    require(step_size >= 1, "step_decay", "step_size", ">= 1 (a whole number of steps)", step_size)

    def schedule(step: Any) -> Any:
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            return init * decay_rate ** (step // step_size)
        _xp, s = _as_float32(step // step_size)
        return _backend.finalize(init * decay_rate**s)

    return _describe(schedule, "step_decay", init, decay_rate, step_size)


def cosine_decay(init: float, decay_steps: int, end: float = 0.0) -> Schedule:
    r"""Cosine decay from ``init`` to ``end`` over ``decay_steps`` steps, then constant ``end``.

    .. math::

        \text{end} + \tfrac12 (\text{init} - \text{end})
        \left(1 + \cos\left(\pi \min(s, D) / D\right)\right)

    Reference: Loshchilov and Hutter, "SGDR: stochastic gradient descent with warm restarts",
    ICLR 2017.

    Example:
        >>> import anyoptim as optim
        >>> round(float(optim.cosine_decay(1.0, 4, end=0.2)(2)), 6)
        0.6
    """
    require(decay_steps >= 1, "cosine_decay", "decay_steps", ">= 1", decay_steps)
    scale = math.pi / decay_steps

    def schedule(step: Any) -> Any:
        xp, s = _as_float32(step)
        s = xp.minimum(s, float(decay_steps))
        decay = 0.5 * (1.0 + xp.cos(scale * s))
        return _backend.finalize(end + decay * (init - end))

    return _describe(schedule, "cosine_decay", init, decay_steps, end)


def linear_schedule(init: float, end: float, steps: int) -> Schedule:
    r"""Linear interpolation from ``init`` to ``end`` over ``steps`` steps, then constant ``end``.

    Example:
        >>> import anyoptim as optim
        >>> warmup = optim.linear_schedule(0.0, 1e-1, 100)
        >>> warmup(50)
        array(0.05, dtype=float32)
    """
    require(steps >= 1, "linear_schedule", "steps", ">= 1", steps)
    slope = (end - init) / steps

    def schedule(step: Any) -> Any:
        xp, s = _as_float32(step)
        s = xp.minimum(s, float(steps))
        return _backend.finalize(s * slope + init)

    return _describe(schedule, "linear_schedule", init, end, steps)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Chain schedules: schedule ``i + 1`` takes over at ``boundaries[i]`` and counts from 0.

    Example:
        >>> import anyoptim as optim
        >>> warmup = optim.linear_schedule(0, 1e-1, steps=10)
        >>> cosine = optim.cosine_decay(1e-1, 200)
        >>> lr = optim.join_schedules([warmup, cosine], [10])
        >>> round(float(lr(5)), 6), round(float(lr(10)), 6)
        (0.05, 0.1)
    """
    if len(schedules) == 0:
        raise ValueError(
            "join_schedules: schedules should hold at least 1 schedule, an empty list was "
            "provided instead."
        )
    require(
        len(boundaries) == len(schedules) - 1,
        "join_schedules",
        "boundaries",
        f"a list of len(schedules) - 1 = {len(schedules) - 1} steps",
        list(boundaries),
    )
    schedules = list(schedules)
    boundaries = list(boundaries)

    def schedule(step: Any) -> Any:
        if _backend.library_name(step) is None:
            step = np.asarray(step)
        xp = _backend.namespace(step)
        out = _as_array(schedules[0](step), xp)
        for boundary, later in zip(boundaries, schedules[1:]):
            # Every schedule is evaluated (as in MLX); for steps before the boundary the
            # shifted step is clamped at 0 instead of wrapping around, and masked out anyway.
            shifted = xp.maximum(step, boundary) - boundary
            out = xp.where(step < boundary, out, _as_array(later(shifted), xp))
        return _backend.finalize(out)

    return _describe(schedule, "join_schedules", schedules, boundaries)


def _as_array(value: Any, xp: Any) -> Any:
    if _backend.library_name(value) is None:
        return xp.asarray(value, dtype=xp.float32)
    return value
