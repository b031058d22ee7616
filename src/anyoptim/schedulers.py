"""Learning-rate schedules: factories returning ``schedule(step) -> value`` closures.

The optimizer calls a schedule with its step counter (a 0-d uint64 array) *before* increasing
it, so update ``k`` uses ``schedule(k - 1)``: the argument is the number of updates done so far,
optax's ``count``. Schedules return float32 0-d arrays in the library of the step (NumPy for a
Python int); ``exponential_decay`` and ``step_decay`` return Python floats for Python int steps,
as in MLX. Every schedule is elementwise and free of Python branches on the step, so it also
accepts an array of steps and traces under ``jax.jit``.

Step alignment with other libraries: a PyTorch LR scheduler (and a transformers ``LambdaLR``
schedule) that is stepped after every ``optimizer.step()`` gives update ``k`` its value at
scheduler step ``k - 1``, and an optax schedule gives update ``k`` its value at count ``k - 1``;
so ``schedule(s)`` is compared with the reference's value at index ``s`` for all three.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend
from .optimizers._validate import require

__all__ = [
    "constant_warmup",
    "cosine_decay",
    "cosine_restarts",
    "exponential_decay",
    "from_spec",
    "inverse_sqrt",
    "join_schedules",
    "linear_schedule",
    "one_cycle",
    "piecewise_constant",
    "piecewise_linear",
    "polynomial_decay",
    "step_decay",
    "warmup_cosine_decay",
    "warmup_stable_decay",
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

    Only the factories of this module can be named, and their arguments can only be numbers,
    booleans, short option strings and lists of numbers, so a spec read from a file can never
    run arbitrary code.
    """
    factories: dict[str, Callable[..., Schedule]] = {
        "constant_warmup": constant_warmup,
        "cosine_decay": cosine_decay,
        "cosine_restarts": cosine_restarts,
        "exponential_decay": exponential_decay,
        "inverse_sqrt": inverse_sqrt,
        "join_schedules": join_schedules,
        "linear_schedule": linear_schedule,
        "one_cycle": one_cycle,
        "piecewise_constant": piecewise_constant,
        "piecewise_linear": piecewise_linear,
        "polynomial_decay": polynomial_decay,
        "step_decay": step_decay,
        "warmup_cosine_decay": warmup_cosine_decay,
        "warmup_stable_decay": warmup_stable_decay,
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
    elif spec["name"] in _MLX_FACTORIES:
        for a in args:
            if not _is_number(a):
                raise ValueError(f"schedule arguments must be numbers, got {a!r:.60}")
    else:
        for a in args:
            plain = isinstance(a, (bool, str)) and len(str(a)) <= 20
            if not (plain or _is_number(a) or (isinstance(a, list) and all(map(_is_number, a)))):
                raise ValueError(
                    "schedule arguments must be numbers, booleans, option strings or lists "
                    f"of numbers, got {a!r:.60}"
                )
    return factories[spec["name"]](*args)


_MLX_FACTORIES = ("cosine_decay", "exponential_decay", "linear_schedule", "step_decay")


def _is_number(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


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


def warmup_cosine_decay(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
    step_offset: int = 0,
) -> Schedule:
    r"""Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    With :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps`` (the whole schedule,
    warmup included, as in optax) and :math:`t = s + \text{step\_offset}`:

    .. math::

        \text{lr}(t) = \begin{cases}
        \text{init} + (\text{peak} - \text{init})\, t / W & t < W \\
        \text{end} + (\text{peak} - \text{end})
        \left[\tfrac12\left(1 + \cos\left(\pi \tfrac{\min(t, D) - W}{D - W}\right)\right)
        \right]^{\text{exponent}} & t \ge W
        \end{cases}

    Step alignment (update ``k`` uses ``schedule(k - 1)``):

    * optax ``warmup_cosine_decay_schedule(init, peak, W, D, end, exponent)``: the same
      values at the same index (``count = s``); optax ignores ``end_value`` when
      ``peak_value`` is 0.
    * transformers ``get_cosine_schedule_with_warmup(opt, W, D)`` (lr = peak, the schedule
      from 0): the same index for ``s <= D``; it then rises again, this one stays at
      ``end_value``. ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=r)`` is
      ``end_value = r * peak``.
    * transformers ``get_cosine_with_min_lr_schedule_with_warmup_lr_rate`` is the same curve
      one step ahead: ``step_offset=1``. The first update then already uses ``peak / W``, the
      peak is used by update ``W`` and ``end_value`` by update ``D``.

    Args:
        init_value: value at step 0 (the start of the warmup).
        peak_value: value at the end of the warmup.
        warmup_steps: length of the warmup (0 for none).
        decay_steps: length of the whole schedule, warmup included; > ``warmup_steps``.
        end_value: value from step ``decay_steps`` on.
        exponent: power of the cosine factor (optax's ``exponent``), > 0.
        step_offset: 0, or 1 to evaluate the curve one step ahead.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.warmup_cosine_decay(0.0, 1.0, warmup_steps=2, decay_steps=6)
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(8)]
        [0.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """
    name = "warmup_cosine_decay"
    init_value = _check_float(name, "init_value", init_value)
    peak_value = _check_float(name, "peak_value", peak_value)
    warmup_steps = _check_int(name, "warmup_steps", warmup_steps, 0)
    decay_steps = _check_int(name, "decay_steps", decay_steps, 1)
    require(
        decay_steps > warmup_steps,
        name,
        "decay_steps",
        f"> warmup_steps = {warmup_steps} (it counts the warmup too, as in optax)",
        decay_steps,
    )
    end_value = _check_float(name, "end_value", end_value)
    exponent = _check_float(name, "exponent", exponent, "a finite number > 0")
    require(exponent > 0, name, "exponent", "> 0", exponent)
    step_offset = _check_offset(name, step_offset)
    W, D = float(warmup_steps), float(decay_steps)

    def schedule(step: Any) -> Any:
        xp, t = _steps(step, step_offset)
        if exponent == 1.0:
            out = _segment(xp, t, "cos", W, D, peak_value, end_value)
        else:
            _, left = _fractions(xp, t, W, D)
            w = xp.sin(_HALF_PI * left)
            out = end_value + (peak_value - end_value) * (w * w) ** exponent
        if warmup_steps:
            warm = _segment(xp, t, "linear", 0.0, W, init_value, peak_value)
            out = xp.where(t < W, warm, out)
        return _backend.finalize(out)

    return _describe(
        schedule, name, init_value, peak_value, warmup_steps, decay_steps, end_value, exponent,
        step_offset,
    )


_WSD_DECAYS = ("linear", "cosine", "1-sqrt")


def warmup_stable_decay(
    peak_value: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    init_value: float = 0.0,
    end_value: float = 0.0,
    decay_type: str = "linear",
    step_offset: int = 0,
) -> Schedule:
    r"""Warmup-stable-decay ("WSD", trapezoidal): warm up linearly, hold, then decay.

    With :math:`W, S, D` = ``warmup_steps, stable_steps, decay_steps``,
    :math:`t = s + \text{step\_offset}` and :math:`p = \min(1, (t - W - S) / D)` the
    fraction of the decay done:

    .. math::

        \text{lr}(t) = \begin{cases}
        \text{init} + (\text{peak} - \text{init})\, t / W & t < W \\
        \text{peak} & W \le t < W + S \\
        \text{end} + (\text{peak} - \text{end})\, f(p) & t \ge W + S
        \end{cases}

    with :math:`f(p) = 1 - p` (``"linear"``), :math:`\tfrac12(1 + \cos \pi p)`
    (``"cosine"``) or :math:`1 - \sqrt{p}` (``"1-sqrt"``, Hägele et al. 2024). From step
    :math:`W + S + D` on the value is ``end_value``.

    Step alignment (update ``k`` uses ``schedule(k - 1)``): transformers
    ``get_wsd_schedule(opt, W, D, num_stable_steps=S, decay_type=..., min_lr_ratio=r)`` with
    lr = peak is this schedule with ``init_value = end_value = r * peak`` at the same index
    (its linear warmup, and its default ``num_cycles=0.5`` for the cosine). ``step_offset=1``
    evaluates the curve one step ahead, so the first update already moves. References: Hu et
    al., "MiniCPM", 2024; Hägele et al., "Scaling laws and compute-optimal training beyond
    fixed training durations", 2024.

    Args:
        peak_value: value of the stable phase.
        warmup_steps: length of the linear warmup (0 for none).
        stable_steps: length of the constant phase (0 for none).
        decay_steps: length of the decay, >= 1.
        init_value: value at step 0.
        end_value: value at the end of the decay and after it.
        decay_type: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
        step_offset: 0, or 1 to evaluate the curve one step ahead.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.warmup_stable_decay(1.0, 2, 2, 4, decay_type="1-sqrt")
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(9)]
        [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.2929, 0.134, 0.0]
    """
    name = "warmup_stable_decay"
    peak_value = _check_float(name, "peak_value", peak_value)
    warmup_steps = _check_int(name, "warmup_steps", warmup_steps, 0)
    stable_steps = _check_int(name, "stable_steps", stable_steps, 0)
    decay_steps = _check_int(name, "decay_steps", decay_steps, 1)
    init_value = _check_float(name, "init_value", init_value)
    end_value = _check_float(name, "end_value", end_value)
    decay_type = _check_choice(name, "decay_type", decay_type, _WSD_DECAYS)
    step_offset = _check_offset(name, step_offset)
    W = float(warmup_steps)
    start = float(warmup_steps + stable_steps)
    stop = start + decay_steps

    def schedule(step: Any) -> Any:
        xp, t = _steps(step, step_offset)
        if decay_type == "1-sqrt":
            done, left = _fractions(xp, t, start, stop)
            # 1 - sqrt(p) == (1 - p) / (1 + sqrt(p)), without the cancellation near p = 1
            out = end_value + (peak_value - end_value) * (left / (1.0 + xp.sqrt(done)))
        else:
            kind = "linear" if decay_type == "linear" else "cos"
            out = _segment(xp, t, kind, start, stop, peak_value, end_value)
        if warmup_steps:
            warm = _segment(xp, t, "linear", 0.0, W, init_value, peak_value)
            out = xp.where(t < W, warm, out)
        return _backend.finalize(out)

    return _describe(
        schedule, name, peak_value, warmup_steps, stable_steps, decay_steps, init_value,
        end_value, decay_type, step_offset,
    )


def one_cycle(
    max_value: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
    convention: str = "torch",
) -> Schedule:
    r"""The 1cycle policy: up from ``max_value / div_factor`` to ``max_value``, then down.

    With :math:`T` = ``total_steps``, :math:`p` = ``pct_start``, the initial value
    :math:`a = \text{max} / \text{div\_factor}` and the final value
    :math:`z = a / \text{final\_div\_factor}`, the schedule passes through the points

    .. math::

        (0, a) \to (e_1, \text{max}) \to (e_2, a) \to (e_3, z)

    (the middle point only with ``three_phase=True``, otherwise :math:`(e_1, \text{max}) \to
    (e_3, z)`). Between two points :math:`(e, y_0)` and :math:`(e', y_1)` the value is
    :math:`y_1 + \tfrac12 (y_0 - y_1)(1 + \cos \pi x)` (``"cos"``) or
    :math:`y_0 + (y_1 - y_0)\, x` (``"linear"``), with :math:`x = (s - e) / (e' - e)`, and
    it stays at :math:`z` after :math:`e_3`. The phase ends are

    * ``convention="torch"``: :math:`e_1 = pT - 1`, :math:`e_2 = 2pT - 2`, :math:`e_3 = T - 1`,
      the learning rates of ``torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps=T,
      pct_start, anneal_strategy, div_factor, final_div_factor, three_phase)`` at the same
      index: its value at scheduler step ``s`` is used by update ``s + 1``, and so is
      ``schedule(s)``. The last update of ``T`` uses :math:`z`. PyTorch also cycles the
      momentum (β1), which a learning-rate schedule does not (compare with
      ``cycle_momentum=False``); it raises after step ``T`` and extrapolates at ``T``, where
      this schedule stays at :math:`z`.
    * ``convention="optax"``: :math:`e_1 = \lfloor pT \rfloor`,
      :math:`e_2 = \lfloor 2pT \rfloor`, :math:`e_3 = T`, one step later than PyTorch's:
      ``optax.cosine_onecycle_schedule(T, max, p, div_factor, final_div_factor)`` for
      ``"cos"`` (two phases) and ``optax.linear_onecycle_schedule(T, max, p, pct_final=2p,
      ...)`` for ``"linear"`` with ``three_phase=True``, at the same index (``count = s``).
      :math:`z` is first used by update ``T + 1``.

    Reference: Smith and Topin, "Super-convergence: very fast training of neural networks
    using large learning rates", 2017.

    Args:
        max_value: the peak value.
        total_steps: the length of the cycle, >= 1.
        pct_start: the fraction of the cycle spent increasing, in [0, 1] (<= 0.5 with
            ``three_phase``).
        div_factor: the initial value is ``max_value / div_factor``; > 0.
        final_div_factor: the final value is the initial one divided by this; > 0.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        three_phase: go back down to the initial value first (symmetrically), then to the
            final value, as PyTorch's ``three_phase=True``.
        convention: ``"torch"`` or ``"optax"``: where the phases end (see above).

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.one_cycle(1.0, 10, pct_start=0.3, div_factor=10.0, final_div_factor=10.0)
        >>> [round(float(lr(np.uint64(s))), 4) for s in (0, 1, 2, 9)]
        [0.1, 0.55, 1.0, 0.01]
    """
    name = "one_cycle"
    max_value = _check_float(name, "max_value", max_value)
    total_steps = _check_int(name, "total_steps", total_steps, 1)
    pct_start = _check_float(name, "pct_start", pct_start, "a number in [0, 1]")
    require(0.0 <= pct_start <= 1.0, name, "pct_start", "in [0, 1]", pct_start)
    div_factor = _check_float(name, "div_factor", div_factor, "a finite number > 0")
    require(div_factor > 0, name, "div_factor", "> 0", div_factor)
    final_div_factor = _check_float(
        name, "final_div_factor", final_div_factor, "a finite number > 0"
    )
    require(final_div_factor > 0, name, "final_div_factor", "> 0", final_div_factor)
    anneal_strategy = _check_choice(name, "anneal_strategy", anneal_strategy, ("cos", "linear"))
    require(isinstance(three_phase, bool), name, "three_phase", "True or False", three_phase)
    if three_phase:
        require(
            pct_start <= 0.5,
            name,
            "pct_start",
            "<= 0.5 with three_phase=True (two phases of pct_start * total_steps must fit)",
            pct_start,
        )
    convention = _check_choice(name, "convention", convention, ("torch", "optax"))
    T = total_steps
    initial = max_value / div_factor
    final = initial / final_div_factor
    if convention == "torch":
        ends = [float(pct_start * T) - 1, float(2 * pct_start * T) - 2, float(T - 1)]
    else:
        ends = [float(int(pct_start * T)), float(int(2 * pct_start * T)), float(T)]
    if three_phase:
        points = [(0.0, initial), (ends[0], max_value), (ends[1], initial), (ends[2], final)]
    else:
        points = [(0.0, initial), (ends[0], max_value), (ends[2], final)]
    kind = anneal_strategy

    def schedule(step: Any) -> Any:
        xp, s = _as_float32(step)
        (x0, y0), (x1, y1) = points[0], points[1]
        out = _segment(xp, s, kind, x0, x1, y0, y1)
        for (xa, ya), (xb, yb) in itertools.pairwise(points[1:]):
            # a phase takes over after the end of the previous one (PyTorch's ``step <=
            # end_step`` test; at the end itself both phases give the same value)
            out = xp.where(s > xa, _segment(xp, s, kind, xa, xb, ya, yb), out)
        return _backend.finalize(out)

    return _describe(
        schedule, name, max_value, total_steps, pct_start, div_factor, final_div_factor,
        anneal_strategy, three_phase, convention,
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


def inverse_sqrt(
    peak_value: float,
    warmup_steps: int,
    timescale: int | None = None,
    step_offset: int = 0,
) -> Schedule:
    r"""Linear warmup from 0 to ``peak_value``, then decay with the inverse square root.

    With :math:`W` = ``warmup_steps``, :math:`\tau` = ``timescale`` and
    :math:`t = s + \text{step\_offset}`:

    .. math::

        \text{lr}(t) = \begin{cases}
        \text{peak}\; t / W & t < W \\
        \text{peak} \sqrt{\tau / (t - W + \tau)} & t \ge W
        \end{cases}

    ``timescale`` defaults to ``warmup_steps`` (the value falls as
    :math:`\text{peak}\sqrt{W / t}` then), or to 10000 without a warmup.

    Step alignment (update ``k`` uses ``schedule(k - 1)``): transformers
    ``get_inverse_sqrt_schedule(opt, W, timescale)`` with lr = peak at the same index,
    defaults included. ``step_offset=1`` evaluates the curve one step ahead, so that the first
    update uses ``peak / W`` instead of 0. Reference: Vaswani et al., "Attention is all you
    need", 2017 (its warmup-then-rsqrt rate).

    Args:
        peak_value: value at the end of the warmup.
        warmup_steps: length of the warmup (0 for none).
        timescale: steps over which the value falls to :math:`1/\sqrt2` of the peak, >= 1.
        step_offset: 0, or 1 to evaluate the curve one step ahead.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.inverse_sqrt(1.0, warmup_steps=4)
        >>> [round(float(lr(np.uint64(s))), 4) for s in (0, 2, 4, 12, 20)]
        [0.0, 0.5, 1.0, 0.5774, 0.4472]
    """
    name = "inverse_sqrt"
    peak_value = _check_float(name, "peak_value", peak_value)
    warmup_steps = _check_int(name, "warmup_steps", warmup_steps, 0)
    if timescale is None:
        timescale = warmup_steps or 10_000
    timescale = _check_int(name, "timescale", timescale, 1)
    step_offset = _check_offset(name, step_offset)
    W, tau = float(warmup_steps), float(timescale)

    def schedule(step: Any) -> Any:
        xp, t = _steps(step, step_offset)
        # (t - W) is clamped at 0 so the branch not taken has no square root of a negative
        out = peak_value * xp.sqrt(tau / (xp.maximum(t - W, 0.0) + tau))
        if warmup_steps:
            warm = _segment(xp, t, "linear", 0.0, W, 0.0, peak_value)
            out = xp.where(t < W, warm, out)
        return _backend.finalize(out)

    return _describe(schedule, name, peak_value, warmup_steps, timescale, step_offset)


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


def constant_warmup(
    value: float,
    warmup_steps: int,
    init_value: float = 0.0,
    step_offset: int = 0,
) -> Schedule:
    r"""Linear warmup from ``init_value`` to ``value``, then constant.

    .. math::

        \text{lr}(t) = \text{init} + (\text{value} - \text{init}) \min(t / W, 1),
        \qquad t = s + \text{step\_offset}

    Step alignment (update ``k`` uses ``schedule(k - 1)``): transformers
    ``get_constant_schedule_with_warmup(opt, W)`` with lr = value, and
    ``optax.warmup_constant_schedule(init, value, W)``, at the same index; both give the
    first update ``init_value``. ``step_offset=1`` is the warmup that starts one step in
    (``(s + 1) / W``, as in schedulefree's warmup): the first update uses ``value / W``
    (with ``init_value = 0``) and update ``W`` the full value. It equals
    ``torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / W, total_iters=W - 1)``.

    Args:
        value: the value after the warmup.
        warmup_steps: length of the warmup (0 for a constant).
        init_value: value at step 0.
        step_offset: 0, or 1 to evaluate the curve one step ahead.

    Example:
        >>> import numpy as np
        >>> import anyoptim as optim
        >>> lr = optim.constant_warmup(1.0, warmup_steps=4)
        >>> [round(float(lr(np.uint64(s))), 4) for s in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    name = "constant_warmup"
    value = _check_float(name, "value", value)
    warmup_steps = _check_int(name, "warmup_steps", warmup_steps, 0)
    init_value = _check_float(name, "init_value", init_value)
    step_offset = _check_offset(name, step_offset)
    W = float(warmup_steps)

    def schedule(step: Any) -> Any:
        xp, t = _steps(step, step_offset)
        if not warmup_steps:
            return _backend.finalize(xp.zeros_like(t) + value)
        return _backend.finalize(_segment(xp, t, "linear", 0.0, W, init_value, value))

    return _describe(schedule, name, value, warmup_steps, init_value, step_offset)


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
