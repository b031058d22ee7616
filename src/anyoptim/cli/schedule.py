"""``anyoptim schedule``: evaluate, print and plot a learning-rate schedule."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from ._common import UsageError, check_writable, emit_json, wrap
from ._common import console as make_console
from ._expr import SCHEDULE_NAMES, parse_schedule
from .train import positive_int

DEFAULT_PLOT = "anyoptim-schedule.png"

EPILOG = """\
examples:
  anyoptim schedule "cosine_decay(1e-3, 1000, 1e-5)" --steps 1200 --at 0,500,1000
  anyoptim schedule "join_schedules([linear_schedule(0, 1e-3, 100), cosine_decay(1e-3, 900)], [100])"
  anyoptim schedule "step_decay(0.1, 0.5, step_size=300)" --plot step.png
  anyoptim schedule "exponential_decay(1e-2, 0.999)" --json --no-plot
  anyoptim schedule "warmup_cosine_decay(0, 1e-3, 100, 1000)" --steps 1100
  anyoptim schedule "one_cycle(0.1, 500, anneal_strategy='linear')" --no-plot

schedules (the same factories as in anyoptim and mlx.optimizers):
  cosine_decay(init, decay_steps, end=0.0)
  exponential_decay(init, decay_rate)
  join_schedules(schedules, boundaries)
  linear_schedule(init, end, steps)
  step_decay(init, decay_rate, step_size)
further schedules of anyoptim:
  constant_warmup(value, warmup_steps, init_value=0.0, step_offset=0)
  cosine_restarts(init_value, first_period, period_mult=1, end_value=0.0)
  inverse_sqrt(peak_value, warmup_steps, timescale=None, step_offset=0)
  one_cycle(max_value, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
            anneal_strategy="cos", three_phase=False, convention="torch")
  piecewise_constant(boundaries, values)
  piecewise_linear(boundaries, values)
  polynomial_decay(init_value, end_value, power, decay_steps, transition_begin=0)
  warmup_cosine_decay(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0,
                      exponent=1.0, step_offset=0)
  warmup_stable_decay(peak_value, warmup_steps, stable_steps, decay_steps, init_value=0.0,
                      end_value=0.0, decay_type="linear", step_offset=0)

The expression is parsed, never executed: only these calls, numbers (e.g. -1e-5), lists and
keyword arguments are accepted, plus True/False and option strings ("cosine") for the
arguments that take them. Step s is the optimizer's step counter before an update, so
update number s + 1 uses the value at step s.
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = subparsers.add_parser(
        "schedule",
        help="print and plot a learning-rate schedule",
        description=wrap(
            "Evaluate a schedule expression over a range of steps, print its value at "
            "chosen steps and plot it."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    p.add_argument(
        "expression",
        metavar="EXPR",
        help=f"a schedule expression using {', '.join(SCHEDULE_NAMES)}",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="number of steps to evaluate and plot, 0..N-1 (default 1000)",
    )
    p.add_argument(
        "--at",
        metavar="S1,S2,...",
        help="steps whose value to print (default: 0, 1/4, 1/2, 3/4 and the last step)",
    )
    p.add_argument(
        "--plot", metavar="PATH", help=f"where to write the PNG (default {DEFAULT_PLOT})"
    )
    p.add_argument("--no-plot", action="store_true", help="do not write a PNG")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (values at the chosen steps, summary) and nothing else",
    )
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = positive_int(text)
    if value > 10_000_000:
        raise argparse.ArgumentTypeError(f"at most 10,000,000 steps, got {value}")
    return value


def _parse_at(text: str | None, steps: int) -> list[int]:
    if text is None:
        marks = {0, steps // 4, steps // 2, (3 * steps) // 4, steps - 1}
        return sorted(marks)
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise UsageError(
                f"--at expects whole step numbers separated by commas, got {part!r}"
            ) from None
        if value < 0:
            raise UsageError(f"--at: steps start at 0, got {value}")
        out.append(value)
    if not out:
        raise UsageError("--at is empty")
    return out


def evaluate(schedule: Any, steps: np.ndarray) -> np.ndarray:
    """The schedule at every step, called as an optimizer calls it (a uint64 step array)."""
    try:
        values = np.asarray(schedule(steps.astype(np.uint64)), dtype=np.float64)
        if values.shape == steps.shape:
            return values
    except (TypeError, ValueError):
        pass
    return np.array([float(np.asarray(schedule(np.asarray(s, dtype=np.uint64)))) for s in steps])


def run(args: argparse.Namespace) -> int:
    schedule = parse_schedule(args.expression)
    n = args.steps
    marks = _parse_at(args.at, n)
    steps = np.arange(max(n, max(marks) + 1), dtype=np.int64)
    values = evaluate(schedule, steps)
    plot = None if args.no_plot else (args.plot or DEFAULT_PLOT)
    if plot is not None:
        check_writable(plot, "--plot")
        from . import _plot

        _plot.schedule(plot, steps[:n], values[:n], args.expression, [m for m in marks if m < n])

    shown = values[:n]
    summary = {
        "command": "schedule",
        "expression": args.expression,
        "description": getattr(schedule, "description", args.expression),
        "steps": n,
        "values": {str(m): float(values[m]) for m in marks},
        "min": float(shown.min()),
        "max": float(shown.max()),
        "first": float(shown[0]),
        "last": float(shown[-1]),
        "plot": os.path.abspath(plot) if plot else None,
    }
    if args.json:
        emit_json(summary)
        return 0
    try:
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(f"{summary['description']} over {n} steps")
        for m in marks:
            print(f"  step {m:>8}: {values[m]:.6g}")
        if plot:
            print(f"plot: {plot}")
        return 0
    console = make_console()
    console.print(f"[bold]{escape(summary['description'])}")
    table = Table()
    table.add_column("step", justify="right")
    table.add_column("learning rate", justify="right")
    for m in marks:
        table.add_row(str(m), f"{values[m]:.6g}")
    console.print(table)
    console.print(f"over steps 0..{n - 1}: min {summary['min']:.6g}, max {summary['max']:.6g}")
    if plot:
        console.print(f"plot: {plot}")
    return 0
