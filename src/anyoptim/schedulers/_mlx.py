"""MLX's schedules (exponential, step, cosine and linear decay, joined schedules)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend
from ..optimizers._validate import require
from ._common import (
    Schedule,
    _as_array,
    _as_float32,
    _describe,
)


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


