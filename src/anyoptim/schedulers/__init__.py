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

from collections.abc import Callable
from typing import Any

from ._common import _MLX_FACTORIES, Schedule, _is_number
from ._decay import cosine_restarts, piecewise_constant, piecewise_linear, polynomial_decay
from ._mlx import cosine_decay, exponential_decay, join_schedules, linear_schedule, step_decay
from ._warmup import (
    constant_warmup,
    inverse_sqrt,
    one_cycle,
    warmup_cosine_decay,
    warmup_stable_decay,
)

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


