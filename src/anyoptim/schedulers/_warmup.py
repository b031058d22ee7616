"""Schedules with a warmup: warmup + cosine, warmup-stable-decay, one-cycle, inverse square root, constant."""

from __future__ import annotations

import itertools
from typing import Any

from .. import _backend
from ..optimizers._validate import require
from ._common import (
    _HALF_PI,
    Schedule,
    _as_float32,
    _check_choice,
    _check_float,
    _check_int,
    _check_offset,
    _describe,
    _fractions,
    _segment,
    _steps,
)


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


