"""Decays without a warmup phase: polynomial, cosine with restarts, piecewise constant and linear."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend
from ..optimizers._validate import require
from ._common import (
    Schedule,
    _as_float32,
    _check_float,
    _check_int,
    _describe,
    _fractions,
    _interpolate,
    _is_int,
    _segment,
)


def polynomial_decay(
    init_value: float,
    end_value: float,
    power: float,
    decay_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""Polynomial decay from ``init_value`` to ``end_value`` over ``decay_steps`` steps.

    With :math:`B` = ``transition_begin`` and :math:`D` = ``decay_steps``:

    .. math::

        \text{lr}(s) = \text{end} + (\text{init} - \text{end})
        \left(1 - \frac{\min(\max(s - B, 0), D)}{D}\right)^{\text{power}}

    Step alignment: ``optax.polynomial_schedule(init, end, power, D, B)`` at the same index
    (``count = s``; update ``k`` uses ``schedule(k - 1)``). ``power=1`` is a linear decay.
    transformers' ``get_polynomial_decay_schedule_with_warmup(opt, W, T, lr_end, power)``
    with lr = init is ``join_schedules([linear_schedule(0, init, W), polynomial_decay(init,
    lr_end, power, T - W)], [W])`` at the same index; ``torch.optim.lr_scheduler.PolynomialLR(
    opt, total_iters=D, power)`` is ``polynomial_decay(lr, 0, power, D)``.

    Args:
        init_value: value up to step ``transition_begin``.
        end_value: value from step ``transition_begin + decay_steps`` on.
        power: exponent of the polynomial, > 0.
        decay_steps: length of the decay, >= 1.
        transition_begin: steps to hold ``init_value`` before decaying, >= 0.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.polynomial_decay(1.0, 0.0, power=2.0, decay_steps=4)
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(6)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    name = "polynomial_decay"
    init_value = _check_float(name, "init_value", init_value)
    end_value = _check_float(name, "end_value", end_value)
    power = _check_float(name, "power", power, "a finite number > 0")
    require(power > 0, name, "power", "> 0", power)
    decay_steps = _check_int(name, "decay_steps", decay_steps, 1)
    transition_begin = _check_int(name, "transition_begin", transition_begin, 0)
    begin, stop = float(transition_begin), float(transition_begin + decay_steps)

    def schedule(step: Any) -> Any:
        xp, s = _as_float32(step)
        _, left = _fractions(xp, s, begin, stop)
        return _backend.finalize(end_value + (init_value - end_value) * left**power)

    return _describe(schedule, name, init_value, end_value, power, decay_steps, transition_begin)


def cosine_restarts(
    init_value: float,
    first_period: int,
    period_mult: int = 1,
    end_value: float = 0.0,
) -> Schedule:
    r"""Cosine annealing with warm restarts (SGDR): cosine cycles that grow by ``period_mult``.

    Cycle :math:`i = 0, 1, \dots` lasts :math:`T_i = T_0 m^i` steps (:math:`T_0` =
    ``first_period``, :math:`m` = ``period_mult``); with :math:`t_\text{cur}` the steps since
    the start of the current cycle:

    .. math::

        \text{lr}(s) = \text{end} + \tfrac12 (\text{init} - \text{end})
        \left(1 + \cos\left(\pi\, t_\text{cur} / T_i\right)\right)

    so each cycle starts at ``init_value`` and the value jumps back to it after approaching
    ``end_value``.

    Step alignment: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0, T_mult,
    eta_min)`` with lr = init, stepped once after every update, at the same index (its value at
    scheduler step ``s`` is used by update ``s + 1``, and so is ``schedule(s)``). optax's
    ``sgdr_schedule`` with one ``decay_steps=T_i`` cosine per cycle (no warmup) gives the
    same values. Reference: Loshchilov and Hutter, "SGDR: stochastic gradient descent with
    warm restarts", ICLR 2017.

    Args:
        init_value: value at the start of every cycle.
        first_period: length of the first cycle, >= 1.
        period_mult: each cycle is this many times longer than the one before; a whole
            number >= 1 (as in PyTorch).
        end_value: the value approached at the end of every cycle.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.cosine_restarts(1.0, first_period=2, period_mult=2)
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(8)]
        [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0, 0.9619]
    """
    name = "cosine_restarts"
    init_value = _check_float(name, "init_value", init_value)
    first_period = _check_int(name, "first_period", first_period, 1)
    period_mult = _check_int(name, "period_mult", period_mult, 1)
    end_value = _check_float(name, "end_value", end_value)
    T0, m = first_period, period_mult

    def schedule(step: Any) -> Any:
        if _backend.library_name(step) is None:
            step = np.asarray(step)
        xp = _backend.namespace(step)
        if m == 1:
            # remainder in the integer step's own dtype: exact for every step count
            cur = xp.astype(step % T0, xp.float32)
            period: Any = float(T0)
        else:
            s = xp.astype(step, xp.float32)
            # cycle i starts at T0 (m^i - 1) / (m - 1): estimate i with a logarithm, then
            # correct the estimate by one where rounding put it into a neighbouring cycle
            i = xp.floor(xp.log(s * ((m - 1) / T0) + 1.0) / math.log(m))
            i = xp.where(s < _cycle_start(xp, i, T0, m), i - 1.0, i)
            i = xp.where(s >= _cycle_start(xp, i + 1.0, T0, m), i + 1.0, i)
            cur = s - _cycle_start(xp, i, T0, m)
            period = xp.round(T0 * float(m) ** i)
        done = cur / period
        left = (period - cur) / period
        return _backend.finalize(_interpolate(xp, "cos", init_value, end_value, done, left))

    return _describe(schedule, name, init_value, first_period, period_mult, end_value)


def _cycle_start(xp: Any, i: Any, T0: int, m: int) -> Any:
    # rounded: the starts are whole numbers, and the power may be off by an ulp
    return xp.round(T0 * (float(m) ** i - 1.0) / (m - 1))


def _check_boundaries(name: str, boundaries: Any) -> list[int]:
    ok = isinstance(boundaries, (list, tuple)) and all(
        _is_int(b) and int(b) >= 0 for b in boundaries
    )
    require(ok, name, "boundaries", "a list of whole step numbers >= 0", boundaries)
    out = [int(b) for b in boundaries]
    require(
        all(a < b for a, b in itertools.pairwise(out)),
        name,
        "boundaries",
        "strictly increasing",
        out,
    )
    return out


def _check_values(name: str, values: Any, count: int, what: str) -> list[float]:
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        for v in values
    )
    require(ok, name, "values", "a list of finite numbers", values)
    require(len(values) == count, name, "values", f"a list of {what} = {count} numbers", values)
    return [float(v) for v in values]


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    r"""A step function: ``values[i]`` from step ``boundaries[i - 1]`` (inclusive) on.

    .. math::

        \text{lr}(s) = v_i \quad \text{for } b_{i-1} \le s < b_i
        \qquad (b_{-1} = 0,\ b_n = \infty)

    so ``values`` has one more entry than ``boundaries``.

    Step alignment: ``optax.piecewise_constant_schedule(init, {b: scale, ...})`` at the same
    index (``count = s``, a scale applies from its boundary on) is this schedule with
    ``values = [init, init * scale_1, init * scale_1 * scale_2, ...]``: optax multiplies its
    scales cumulatively, these are the values themselves. ``torch.optim.lr_scheduler.
    MultiStepLR(opt, milestones, gamma)`` is ``values = [lr, lr * gamma, lr * gamma**2, ...]``
    with ``boundaries = milestones``, at the same index.

    Args:
        boundaries: strictly increasing step numbers (>= 0) where the value changes.
        values: ``len(boundaries) + 1`` values.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.piecewise_constant([2, 4], [1.0, 0.1, 0.01])
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(6)]
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """
    name = "piecewise_constant"
    bounds = _check_boundaries(name, boundaries)
    vals = _check_values(name, values, len(bounds) + 1, "len(boundaries) + 1")

    def schedule(step: Any) -> Any:
        xp, s = _as_float32(step)
        out = xp.zeros_like(s) + vals[0]
        for b, v in zip(bounds, vals[1:]):
            out = xp.where(s >= float(b), v, out)
        return _backend.finalize(out)

    return _describe(schedule, name, bounds, vals)


def piecewise_linear(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    r"""Linear interpolation through the points ``(boundaries[i], values[i])``.

    .. math::

        \text{lr}(s) = v_i + (v_{i+1} - v_i) \frac{s - b_i}{b_{i+1} - b_i}
        \quad \text{for } b_i \le s \le b_{i+1}

    constant ``values[0]`` before the first boundary and ``values[-1]`` after the last.

    Step alignment: ``optax.piecewise_interpolate_schedule("linear", init, {b: scale, ...})``
    at the same index (``count = s``) is this schedule with ``boundaries = [0, b_1, b_2,
    ...]`` and ``values = [init, init * scale_1, init * scale_1 * scale_2, ...]`` (optax
    always starts at step 0 and multiplies its scales cumulatively).

    Args:
        boundaries: strictly increasing step numbers (>= 0).
        values: one value per boundary.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.piecewise_linear([0, 4, 6], [0.0, 1.0, 0.5])
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(8)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.5]
    """
    name = "piecewise_linear"
    bounds = _check_boundaries(name, boundaries)
    require(len(bounds) >= 1, name, "boundaries", "a list of at least 1 step", bounds)
    vals = _check_values(name, values, len(bounds), "len(boundaries)")
    points = [(float(b), v) for b, v in zip(bounds, vals)]

    def schedule(step: Any) -> Any:
        xp, s = _as_float32(step)
        out = xp.zeros_like(s) + points[0][1]
        for (xa, ya), (xb, yb) in itertools.pairwise(points):
            out = xp.where(s > xa, _segment(xp, s, "linear", xa, xb, ya, yb), out)
        return _backend.finalize(out)

    return _describe(schedule, name, bounds, vals)
