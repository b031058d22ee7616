"""The schedules beyond MLX's five, checked against the libraries they come from.

Every reference value is computed by the reference library itself, in float64: PyTorch's LR
schedulers and transformers' ``LambdaLR`` schedules are *stepped* as in a training loop
(``optimizer.step()`` then ``scheduler.step()``) and the learning rate of each update is read
from the parameter group; optax schedules are evaluated with 64-bit JAX. anyoptim's value is
the float32 ``schedule(s)`` that update ``s + 1`` uses. All three line up at the same index:
update ``k`` uses PyTorch's value at scheduler step ``k - 1``, optax's at count ``k - 1`` and
anyoptim's ``schedule(k - 1)``; the ``step_offset=1`` and ``convention`` options are checked
against the references that count one step differently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import anyoptim as optim
from anyoptim.cli import main
from anyoptim.cli._expr import parse_schedule
from anyoptim.cli.schedule import evaluate
from anyoptim.schedulers import from_spec

RTOL = 1e-6  # float32 values against float64 references
ATOL = 1e-10  # times the largest reference value: only matters for values that are ~0


def ours(schedule: Callable[[Any], Any], n: int) -> np.ndarray:
    """The schedule at steps 0..n-1, called as the optimizer calls it (0-d uint64 arrays)."""
    return np.array([float(np.asarray(schedule(np.asarray(s, np.uint64)))) for s in range(n)])


def assert_matches(actual: np.ndarray, reference: np.ndarray) -> None:
    assert actual.shape == reference.shape
    scale = float(np.max(np.abs(reference))) or 1.0
    np.testing.assert_allclose(actual, reference, rtol=RTOL, atol=ATOL * scale)


# ------------------------------------------------------------------------- references
def torch_lrs(make: Callable[[Any], Any], n: int, lr: float = 1.0) -> np.ndarray:
    """The learning rate of updates 1..n of a torch optimizer driven by ``make(optimizer)``."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    scheduler = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])  # what this update uses
        opt.step()
        scheduler.step()
    return np.array(out, dtype=np.float64)


def lr_scheduler() -> Any:
    return pytest.importorskip("torch").optim.lr_scheduler


def hf() -> Any:
    return pytest.importorskip("transformers.optimization")


def optax_values(make: Callable[[Any], Any], n: int) -> np.ndarray:
    """An optax schedule at counts 0..n-1, evaluated with 64-bit JAX."""
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        schedule = make(optax)
        values = [np.asarray(schedule(jax.numpy.asarray(s)), dtype=np.float64) for s in range(n)]
        assert values[-1].dtype == np.float64
    return np.array(values)


# (ours, reference, number of steps); each covers every phase boundary and some steps beyond
Case = tuple[Callable[[], Any], Callable[[int], np.ndarray], int]

CASES: dict[str, Case] = {
    # ---- warmup + cosine decay
    "warmup_cosine_decay/optax": (
        lambda: optim.warmup_cosine_decay(1e-4, 1e-2, 10, 100, 1e-5),
        lambda n: optax_values(
            lambda o: o.warmup_cosine_decay_schedule(1e-4, 1e-2, 10, 100, 1e-5), n
        ),
        130,
    ),
    "warmup_cosine_decay/optax-exponent": (
        lambda: optim.warmup_cosine_decay(0.0, 3e-3, 7, 50, 1e-6, 2.5),
        lambda n: optax_values(
            lambda o: o.warmup_cosine_decay_schedule(0.0, 3e-3, 7, 50, 1e-6, exponent=2.5), n
        ),
        60,
    ),
    "warmup_cosine_decay/optax-no-warmup": (
        lambda: optim.warmup_cosine_decay(0.5, 1.0, 0, 40),
        lambda n: optax_values(lambda o: o.warmup_cosine_decay_schedule(0.5, 1.0, 0, 40), n),
        45,
    ),
    # transformers' cosine goes back up after num_training_steps: compared up to it
    "warmup_cosine_decay/transformers": (
        lambda: optim.warmup_cosine_decay(0.0, 2e-3, 10, 100),
        lambda n: torch_lrs(lambda o: hf().get_cosine_schedule_with_warmup(o, 10, 100), n, 2e-3),
        101,
    ),
    "warmup_cosine_decay/transformers-min-lr": (
        lambda: optim.warmup_cosine_decay(0.0, 2e-3, 10, 100, 0.1 * 2e-3),
        lambda n: torch_lrs(
            lambda o: hf().get_cosine_with_min_lr_schedule_with_warmup(o, 10, 100, min_lr_rate=0.1),
            n,
            2e-3,
        ),
        101,
    ),
    # the (step + 1) / W variant is the same curve one step ahead
    "warmup_cosine_decay/transformers-lr-rate-step_offset": (
        lambda: optim.warmup_cosine_decay(0.0, 2e-3, 10, 100, 0.1 * 2e-3, step_offset=1),
        lambda n: torch_lrs(
            lambda o: hf().get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
                o, 10, 100, min_lr_rate=0.1
            ),
            n,
            2e-3,
        ),
        100,
    ),
    # ---- warmup-stable-decay
    **{
        f"warmup_stable_decay/transformers-{decay}-{ratio}": (
            lambda decay=decay, ratio=ratio: optim.warmup_stable_decay(
                1e-3, 10, 30, 50, ratio * 1e-3, ratio * 1e-3, decay
            ),
            lambda n, decay=decay, ratio=ratio: torch_lrs(
                lambda o: hf().get_wsd_schedule(
                    o, 10, 50, num_stable_steps=30, decay_type=decay, min_lr_ratio=ratio
                ),
                n,
                1e-3,
            ),
            110,
        )
        for decay in ("linear", "cosine", "1-sqrt")
        for ratio in (0.0, 0.1)
    },
    "warmup_stable_decay/transformers-no-warmup-no-stable": (
        lambda: optim.warmup_stable_decay(1.0, 0, 0, 20, decay_type="cosine"),
        lambda n: torch_lrs(
            lambda o: hf().get_wsd_schedule(o, 0, 20, num_stable_steps=0, decay_type="cosine"), n
        ),
        25,
    ),
    # ---- one-cycle: PyTorch's phase ends
    **{
        f"one_cycle/torch-{strategy}-{'3' if three else '2'}-phase-T{T}-pct{pct}": (
            lambda T=T, pct=pct, strategy=strategy, three=three: optim.one_cycle(
                0.1, T, pct, 25.0, 1e4, strategy, three
            ),
            lambda n, T=T, pct=pct, strategy=strategy, three=three: torch_lrs(
                lambda o: lr_scheduler().OneCycleLR(
                    o, 0.1, total_steps=T, pct_start=pct, anneal_strategy=strategy,
                    cycle_momentum=False, three_phase=three,
                ),
                n,
            ),
            T,  # PyTorch refuses to go past total_steps
        )
        for strategy in ("cos", "linear")
        for three in (False, True)
        for T, pct in ((100, 0.3), (37, 0.25), (10, 0.05))
    },
    "one_cycle/torch-factors": (
        lambda: optim.one_cycle(2.0, 50, 0.4, div_factor=4.0, final_div_factor=100.0),
        lambda n: torch_lrs(
            lambda o: lr_scheduler().OneCycleLR(
                o, 2.0, total_steps=50, pct_start=0.4, div_factor=4.0, final_div_factor=100.0,
                cycle_momentum=False,
            ),
            n,
        ),
        50,
    ),
    # ---- one-cycle: optax's phase ends (one step later)
    **{
        f"one_cycle/optax-cos-T{T}-pct{pct}": (
            lambda T=T, pct=pct: optim.one_cycle(0.1, T, pct, convention="optax"),
            lambda n, T=T, pct=pct: optax_values(
                lambda o: o.cosine_onecycle_schedule(T, 0.1, pct), n
            ),
            T + 10,
        )
        for T, pct in ((100, 0.3), (37, 0.25), (10, 0.05))
    },
    **{
        f"one_cycle/optax-linear-T{T}-pct{pct}": (
            lambda T=T, pct=pct: optim.one_cycle(
                0.1, T, pct, 25.0, 1e4, "linear", True, "optax"
            ),
            lambda n, T=T, pct=pct: optax_values(
                lambda o: o.linear_onecycle_schedule(T, 0.1, pct, 2 * pct), n
            ),
            T + 10,
        )
        for T, pct in ((100, 0.3), (37, 0.25), (10, 0.05))
    },
    # ---- polynomial
    **{
        f"polynomial_decay/optax-p{power}-begin{begin}": (
            lambda power=power, begin=begin: optim.polynomial_decay(1e-2, 1e-4, power, 50, begin),
            lambda n, power=power, begin=begin: optax_values(
                lambda o: o.polynomial_schedule(1e-2, 1e-4, power, 50, begin), n
            ),
            70,
        )
        for power, begin in ((1.0, 0), (2.0, 5), (0.5, 3))
    },
    "polynomial_decay/torch-PolynomialLR": (
        lambda: optim.polynomial_decay(0.5, 0.0, 2.0, 30),
        lambda n: torch_lrs(
            lambda o: lr_scheduler().PolynomialLR(o, total_iters=30, power=2.0), n, 0.5
        ),
        40,
    ),
    # transformers' polynomial decay with warmup is a join of a warmup and this schedule
    "polynomial_decay/transformers-with-warmup": (
        lambda: optim.join_schedules(
            [optim.linear_schedule(0.0, 1e-3, 10), optim.polynomial_decay(1e-3, 1e-5, 3.0, 90)],
            [10],
        ),
        lambda n: torch_lrs(
            lambda o: hf().get_polynomial_decay_schedule_with_warmup(
                o, 10, 100, lr_end=1e-5, power=3.0
            ),
            n,
            1e-3,
        ),
        120,
    ),
    # ---- inverse square root
    **{
        f"inverse_sqrt/transformers-W{W}-timescale{tau}": (
            lambda W=W, tau=tau: optim.inverse_sqrt(1e-3, W, tau),
            lambda n, W=W, tau=tau: torch_lrs(
                lambda o: hf().get_inverse_sqrt_schedule(o, W, tau), n, 1e-3
            ),
            300,
        )
        for W, tau in ((10, None), (10, 25), (0, None), (1, None))
    },
    # ---- cosine with warm restarts
    **{
        f"cosine_restarts/torch-T0{T0}-mult{mult}": (
            lambda T0=T0, mult=mult: optim.cosine_restarts(1e-2, T0, mult, 1e-4),
            lambda n, T0=T0, mult=mult: torch_lrs(
                lambda o: lr_scheduler().CosineAnnealingWarmRestarts(o, T0, mult, 1e-4), n, 1e-2
            ),
            400,
        )
        for T0, mult in ((5, 1), (7, 1), (1, 2), (5, 2), (3, 3), (1, 1))
    },
    "cosine_restarts/optax-sgdr": (
        lambda: optim.cosine_restarts(0.1, 4, 2, 1e-3),
        lambda n: optax_values(
            lambda o: o.sgdr_schedule(
                [
                    {"init_value": 0.1, "peak_value": 0.1, "warmup_steps": 0,
                     "decay_steps": 4 * 2**i, "end_value": 1e-3}
                    for i in range(5)
                ]
            ),
            n,
        ),
        4 * (2**5 - 1),  # the five cycles of the reference
    ),
    # ---- constant with warmup
    "constant_warmup/transformers": (
        lambda: optim.constant_warmup(1e-3, 10),
        lambda n: torch_lrs(lambda o: hf().get_constant_schedule_with_warmup(o, 10), n, 1e-3),
        30,
    ),
    "constant_warmup/optax": (
        lambda: optim.constant_warmup(1e-3, 10, 1e-5),
        lambda n: optax_values(lambda o: o.warmup_constant_schedule(1e-5, 1e-3, 10), n),
        30,
    ),
    # the warmup that starts one step in: (s + 1) / W
    "constant_warmup/torch-LinearLR-step_offset": (
        lambda: optim.constant_warmup(1e-3, 10, step_offset=1),
        lambda n: torch_lrs(
            lambda o: lr_scheduler().LinearLR(o, 1 / 10, 1.0, total_iters=9), n, 1e-3
        ),
        30,
    ),
    # ---- piecewise
    "piecewise_constant/optax": (
        lambda: optim.piecewise_constant([10, 30, 31], [0.1, 0.05, 0.005, 0.0025]),
        lambda n: optax_values(
            lambda o: o.piecewise_constant_schedule(0.1, {10: 0.5, 30: 0.1, 31: 0.5}), n
        ),
        50,
    ),
    "piecewise_constant/torch-MultiStepLR": (
        lambda: optim.piecewise_constant([5, 12], [0.1, 0.1 * 0.3, 0.1 * 0.3**2]),
        lambda n: torch_lrs(lambda o: lr_scheduler().MultiStepLR(o, [5, 12], gamma=0.3), n, 0.1),
        20,
    ),
    "piecewise_linear/optax": (
        lambda: optim.piecewise_linear([0, 10, 30, 31], [0.1, 0.05, 0.005, 0.0025]),
        lambda n: optax_values(
            lambda o: o.piecewise_interpolate_schedule("linear", 0.1, {10: 0.5, 30: 0.1, 31: 0.5}),
            n,
        ),
        50,
    ),
    "piecewise_linear/optax-rising": (
        lambda: optim.piecewise_linear([0, 7, 20], [1e-4, 1e-2, 2e-2]),
        lambda n: optax_values(
            lambda o: o.piecewise_interpolate_schedule("linear", 1e-4, {7: 100.0, 20: 2.0}), n
        ),
        30,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schedule_matches_reference(case: str) -> None:
    make, reference, n = CASES[case]
    expected = reference(n)
    assert_matches(ours(make(), n), expected)


# Where a reference counts one step differently, the shifted option equals it one index later.
SHIFTED: dict[str, tuple[Callable[[], Any], Callable[[int], np.ndarray], int]] = {
    "inverse_sqrt": (
        lambda: optim.inverse_sqrt(1e-3, 10, step_offset=1),
        lambda n: torch_lrs(lambda o: hf().get_inverse_sqrt_schedule(o, 10), n, 1e-3),
        200,
    ),
    "warmup_stable_decay": (
        lambda: optim.warmup_stable_decay(1e-3, 10, 20, 30, 1e-4, 1e-4, "cosine", step_offset=1),
        lambda n: torch_lrs(
            lambda o: hf().get_wsd_schedule(
                o, 10, 30, num_stable_steps=20, decay_type="cosine", min_lr_ratio=0.1
            ),
            n,
            1e-3,
        ),
        70,
    ),
    "warmup_cosine_decay": (
        lambda: optim.warmup_cosine_decay(0.0, 1e-3, 10, 60, step_offset=1),
        lambda n: optax_values(lambda o: o.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 60), n),
        70,
    ),
}


@pytest.mark.parametrize("name", list(SHIFTED))
def test_step_offset_is_the_reference_one_step_ahead(name: str) -> None:
    make, reference, n = SHIFTED[name]
    expected = reference(n + 1)
    assert_matches(ours(make(), n), expected[1:])


@pytest.mark.parametrize(("first", "mult"), [(1, 2), (3, 2), (10, 2), (1, 3), (7, 3), (2, 4)])
def test_cosine_restarts_at_every_restart_of_a_long_run(first: int, mult: int) -> None:
    """Around each restart up to 2**24 steps, against cycles counted in exact integers."""
    init, end = 0.1, 1e-3
    steps, expected = [], []
    start, period = 0, first
    while start < 2**24:
        for s in (start - 1, start, start + 1):
            if s < 0:
                continue
            # the cycle holding s, found by walking the cycles from the start
            a, p = 0, first
            while s >= a + p:
                a, p = a + p, p * mult
            steps.append(s)
            expected.append(end + (init - end) * (1 + math.cos(math.pi * (s - a) / p)) / 2)
        start, period = start + period, period * mult
    schedule = optim.cosine_restarts(init, first, mult, end)
    actual = [float(schedule(np.asarray(s, np.uint64))) for s in steps]
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * init)


def test_cosine_restarts_without_growth_is_exact_for_any_step() -> None:
    schedule = optim.cosine_restarts(1.0, 1000)
    for s in (10**9 + 3, 2**40 + 999, 2**62 + 500):
        expected = (1 + math.cos(math.pi * (s % 1000) / 1000)) / 2
        assert float(schedule(np.asarray(s, np.uint64))) == pytest.approx(expected, rel=RTOL)


def test_warmup_conventions_differ_only_in_the_first_update() -> None:
    """step_offset=0 gives the first update init_value (optax, transformers); 1 gives value/W."""
    plain, shifted = optim.constant_warmup(1.0, 4), optim.constant_warmup(1.0, 4, step_offset=1)
    assert ours(plain, 6).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert ours(shifted, 6).tolist() == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_one_cycle_conventions_put_the_peak_one_step_apart() -> None:
    torch_style = ours(optim.one_cycle(1.0, 20, 0.25), 22)
    optax_style = ours(optim.one_cycle(1.0, 20, 0.25, convention="optax"), 22)
    assert int(np.argmax(torch_style)) == 4 and int(np.argmax(optax_style)) == 5
    final = 1.0 / 25.0 / 1e4
    assert torch_style[19] == pytest.approx(final) and optax_style[19] > final
    assert optax_style[20] == pytest.approx(final) and torch_style[21] == pytest.approx(final)


# ------------------------------------------------------------------------- through optimizers
def _sgd_lrs(schedule: Any, n: int) -> np.ndarray:
    """The learning rate each of n updates of anyoptim.SGD applies (from the parameter)."""
    opt = optim.SGD(learning_rate=schedule)
    out = []
    for _ in range(n):
        new = opt.apply_gradients({"w": np.ones(1, np.float32)}, {"w": np.zeros(1, np.float32)})
        out.append(-float(new["w"][0]))
    return np.array(out)


def test_update_k_uses_schedule_k_minus_1_against_torch() -> None:
    """One-cycle and warm restarts give the same per-update learning rates in both libraries."""
    T = 40
    expected = torch_lrs(
        lambda o: lr_scheduler().OneCycleLR(o, 0.1, total_steps=T, cycle_momentum=False), T
    )
    assert_matches(_sgd_lrs(optim.one_cycle(0.1, T), T), expected)
    expected = torch_lrs(
        lambda o: lr_scheduler().CosineAnnealingWarmRestarts(o, 3, 2, 1e-3), 60, 0.1
    )
    assert_matches(_sgd_lrs(optim.cosine_restarts(0.1, 3, 2, 1e-3), 60), expected)


def test_update_k_uses_schedule_k_minus_1_against_transformers() -> None:
    expected = torch_lrs(lambda o: hf().get_wsd_schedule(o, 5, 10, num_stable_steps=5), 25, 0.01)
    schedule = optim.warmup_stable_decay(0.01, 5, 5, 10, decay_type="cosine")
    assert_matches(_sgd_lrs(schedule, 25), expected)


def test_update_k_uses_schedule_k_minus_1_against_optax() -> None:
    """optax.sgd with the optax schedule and anyoptim.SGD apply the same learning rates."""
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        tx = optax.sgd(optax.warmup_cosine_decay_schedule(1e-4, 1e-2, 5, 30, 1e-5))
        params = {"w": jax.numpy.zeros(1)}
        state = tx.init(params)
        expected = []
        for _ in range(35):
            updates, state = tx.update({"w": jax.numpy.ones(1)}, state, params)
            expected.append(-float(updates["w"][0]))
    actual = _sgd_lrs(optim.warmup_cosine_decay(1e-4, 1e-2, 5, 30, 1e-5), 35)
    # optax.sgd keeps an int32 count, so it evaluates the schedule in float32, where its
    # (init - end) * frac + end form loses digits near the ends: compared to 1e-6 of the peak.
    # A one-step shift would differ by about peak / warmup_steps.
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6 * 1e-2)


# ------------------------------------------------------------------------- every library
N = 160
EXAMPLES: dict[str, Callable[[], Any]] = {
    "warmup_cosine_decay": lambda: optim.warmup_cosine_decay(1e-4, 1e-2, 10, 100, 1e-5),
    "warmup_cosine_decay-exponent-offset": lambda: optim.warmup_cosine_decay(
        0.0, 1e-2, 10, 100, 0.0, 2.0, 1
    ),
    "warmup_stable_decay-1-sqrt": lambda: optim.warmup_stable_decay(
        1e-2, 10, 30, 50, 0.0, 1e-4, "1-sqrt"
    ),
    "warmup_stable_decay-cosine-offset": lambda: optim.warmup_stable_decay(
        1e-2, 10, 30, 50, 1e-3, 0.0, "cosine", 1
    ),
    "warmup_stable_decay-linear": lambda: optim.warmup_stable_decay(1e-2, 0, 30, 50),
    "one_cycle": lambda: optim.one_cycle(0.1, 100),
    "one_cycle-linear-3-phase-optax": lambda: optim.one_cycle(
        0.1, 100, 0.25, 25.0, 1e4, "linear", True, "optax"
    ),
    "polynomial_decay": lambda: optim.polynomial_decay(1e-2, 1e-4, 2.0, 50, 5),
    "inverse_sqrt": lambda: optim.inverse_sqrt(1e-2, 10),
    "inverse_sqrt-offset": lambda: optim.inverse_sqrt(1e-2, 10, 25, 1),
    "cosine_restarts": lambda: optim.cosine_restarts(1e-2, 7, 1, 1e-4),
    "cosine_restarts-mult": lambda: optim.cosine_restarts(1e-2, 5, 2),
    "cosine_restarts-mult3": lambda: optim.cosine_restarts(1e-2, 1, 3, 1e-3),
    "constant_warmup": lambda: optim.constant_warmup(1e-2, 10, 1e-4, 1),
    "constant_warmup-none": lambda: optim.constant_warmup(1e-2, 0),
    "piecewise_constant": lambda: optim.piecewise_constant(
        [10, 30, 31], [0.1, 0.05, 0.005, 0.0025]
    ),
    "piecewise_linear": lambda: optim.piecewise_linear([5, 30, 60], [0.0, 0.1, 0.001]),
    "join_schedules": lambda: optim.join_schedules(
        [optim.constant_warmup(1e-2, 10), optim.polynomial_decay(1e-2, 0.0, 1.5, 100)], [10]
    ),
}


@pytest.fixture(params=list(EXAMPLES))
def example(request: pytest.FixtureRequest) -> tuple[Any, np.ndarray]:
    schedule = EXAMPLES[request.param]()
    return schedule, ours(schedule, N)


def test_numpy_steps_give_float32_0d_arrays(example: tuple[Any, np.ndarray]) -> None:
    schedule, _ = example
    # the optimizer's step, a NumPy scalar and a Python int
    for step in (np.asarray(3, np.uint64), np.uint64(3), 3):
        value = schedule(step)
        assert type(value) is np.ndarray and value.dtype == np.float32 and value.shape == ()


def test_python_int_steps(example: tuple[Any, np.ndarray]) -> None:
    schedule, expected = example
    assert [float(schedule(s)) for s in range(N)] == expected.tolist()


def test_vector_of_steps(example: tuple[Any, np.ndarray]) -> None:
    """Elementwise: an array of steps gives the same values (used by ``anyoptim schedule``)."""
    schedule, expected = example
    values = np.asarray(schedule(np.arange(N, dtype=np.uint64)))
    assert values.dtype == np.float32 and values.shape == (N,)
    # NumPy's vectorised float32 sin/power may round differently from its scalar loop (1 ulp)
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(evaluate(schedule, np.arange(N)), expected, rtol=1e-6, atol=0)


def test_torch_steps(example: tuple[Any, np.ndarray]) -> None:
    torch = pytest.importorskip("torch")
    schedule, expected = example
    values = []
    for s in range(N):
        value = schedule(torch.tensor(s, dtype=torch.int64))
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.ndim == 0
        values.append(float(value))
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12)


def test_mlx_steps(example: tuple[Any, np.ndarray]) -> None:
    mx = pytest.importorskip("mlx.core")
    schedule, expected = example
    values = []
    for s in range(N):
        value = schedule(mx.array(s, dtype=mx.uint64))
        assert isinstance(value, mx.array) and value.dtype == mx.float32 and value.ndim == 0
        values.append(value.item())
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12)


def test_jax_steps_and_jit(example: tuple[Any, np.ndarray]) -> None:
    """Traced once under jax.jit (no Python branch on the step), same values at every step."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    schedule, expected = example
    eager = [float(schedule(jnp.asarray(s, dtype=jnp.uint32))) for s in range(0, N, 7)]
    np.testing.assert_allclose(eager, expected[::7], rtol=1e-6, atol=1e-12)

    traces = 0

    def traced(step: Any) -> Any:
        nonlocal traces
        traces += 1
        return schedule(step)

    jitted = jax.jit(traced)
    values = []
    for s in range(N):
        value = jitted(jnp.asarray(s, dtype=jnp.uint32))
        assert value.dtype == jnp.float32 and value.shape == ()
        values.append(float(value))
    assert traces == 1
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12)


def test_spec_round_trip(example: tuple[Any, np.ndarray]) -> None:
    schedule, expected = example
    spec = json.loads(json.dumps(schedule.spec))  # what a checkpoint stores
    assert spec == schedule.spec
    rebuilt = from_spec(spec)
    assert rebuilt.spec == schedule.spec and rebuilt.description == schedule.description
    assert ours(rebuilt, N).tolist() == expected.tolist()


def test_description_parses_back_in_the_cli(example: tuple[Any, np.ndarray]) -> None:
    schedule, expected = example
    parsed = parse_schedule(schedule.description)
    assert parsed.spec == schedule.spec
    assert ours(parsed, N).tolist() == expected.tolist()


def test_sgd_update_k_uses_schedule_k_minus_1(example: tuple[Any, np.ndarray]) -> None:
    schedule, expected = example
    n = 40
    assert _sgd_lrs(schedule, n).tolist() == expected[:n].tolist()
    opt = optim.SGD(learning_rate=schedule)
    assert float(opt.learning_rate) == expected[0]  # before any update: schedule(0)
    for _ in range(5):
        opt.update({}, {})
    assert float(opt.learning_rate) == expected[4]  # after k updates: schedule(k - 1)


def test_torch_optimizer_uses_the_schedule() -> None:
    torch = pytest.importorskip("torch")
    schedule = optim.one_cycle(0.1, 30)
    opt = optim.SGD(learning_rate=schedule)
    for k in range(1, 31):
        new = opt.apply_gradients({"w": torch.ones(1)}, {"w": torch.zeros(1)})
        assert opt.step.dtype == torch.int64
        assert -float(new["w"][0]) == float(schedule(torch.tensor(k - 1))), k


def test_save_load_round_trip(example: tuple[Any, np.ndarray], tmp_path: Path) -> None:
    schedule, expected = example
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal(4).astype(np.float32)}
    grads = [{"w": rng.standard_normal(4).astype(np.float32)} for _ in range(12)]

    straight = optim.SGD(learning_rate=schedule, momentum=0.9)
    p_straight = params
    for g in grads:
        p_straight = straight.apply_gradients(g, p_straight)

    first = optim.SGD(learning_rate=schedule, momentum=0.9)
    p = params
    for g in grads[:6]:
        p = first.apply_gradients(g, p)
    path = tmp_path / "opt.safetensors"
    optim.save(path, first, p)
    restored = optim.load(path)
    assert restored._schedulers["learning_rate"].spec == schedule.spec
    p = optim.load_params(path)
    for g in grads[6:]:
        p = restored.apply_gradients(g, p)
    np.testing.assert_array_equal(p["w"], p_straight["w"])
    assert float(restored.learning_rate) == expected[11]


# ------------------------------------------------------------------------- command line
def test_cli_schedule_command(capsys: pytest.CaptureFixture[str]) -> None:
    expr = "warmup_cosine_decay(0, 1e-3, 100, 1000)"
    assert main(["schedule", expr, "--steps", "1100", "--at", "0,50,100,550,1000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    reference = optim.warmup_cosine_decay(0.0, 1e-3, 100, 1000)
    for step in (0, 50, 100, 550, 1000):
        assert result["values"][str(step)] == float(reference(np.asarray(step, np.uint64)))
    assert result["values"]["100"] == pytest.approx(1e-3)
    assert result["values"]["550"] == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "expr",
    [
        "one_cycle(0.1, 500, anneal_strategy='linear', three_phase=True)",
        'warmup_stable_decay(1e-3, 10, 50, 40, decay_type="1-sqrt", step_offset=1)',
        "optim.piecewise_constant([10, 20], [1e-2, 1e-3, 1e-4])",
        "join_schedules([constant_warmup(1e-3, 10), cosine_restarts(1e-3, 20, 2)], [10])",
        "inverse_sqrt(1e-3, 100)",
        "polynomial_decay(1e-2, 0, 2, 100, transition_begin=10)",
        "piecewise_linear(boundaries=[0, 10], values=[0, 1])",
    ],
)
def test_cli_expressions_for_new_schedules(expr: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", expr, "--no-plot", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1000


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("one_cycle(0.1, 100, three_phase=1)", "'three_phase' takes True or False, not 1"),
        ("warmup_stable_decay(1, 1, 1, 1, decay_type=2)", "'decay_type' takes an option string"),
        ("warmup_stable_decay(1, 1, 1, 1, decay_type='cos')", "decay_type should be one of"),
        ("constant_warmup('1e-3', 10)", "'value' takes a number, not '1e-3'"),
        ("cosine_decay(True, 10)", "'init' takes a number, not True"),
        ("piecewise_constant([10], [1, 'x'])", "'values' takes a list of numbers"),
        ("piecewise_linear([0, 10], 1)", "'values' takes a list of numbers"),
        ("warmup_cosine_decay(0, 1, 10, 10)", "decay_steps should be > warmup_steps = 10"),
        ("one_cycle(0.1, 100, pct_start='x' * 99)", "not allowed"),
    ],
)
def test_cli_rejects_bad_schedule_arguments(
    expr: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", expr, "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "invalid schedule expression" in err and message in err, err
    assert "column" in err


def test_cli_help_lists_the_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("warmup_cosine_decay(", "warmup_stable_decay(", "one_cycle(", "polynomial_decay(",
                 "inverse_sqrt(", "cosine_restarts(", "constant_warmup(", "piecewise_constant(",
                 "piecewise_linear("):
        assert name in out, name


# ------------------------------------------------------------------------- bad arguments
INVALID: dict[str, tuple[Callable[[], Any], list[str]]] = {
    "wcd-decay-steps": (
        lambda: optim.warmup_cosine_decay(0.0, 1.0, 100, 100),
        ["warmup_cosine_decay", "decay_steps", "> warmup_steps = 100", "100"],
    ),
    "wcd-warmup-negative": (
        lambda: optim.warmup_cosine_decay(0.0, 1.0, -1, 100),
        ["warmup_cosine_decay", "warmup_steps", ">= 0", "-1"],
    ),
    "wcd-exponent": (
        lambda: optim.warmup_cosine_decay(0.0, 1.0, 1, 10, exponent=0.0),
        ["warmup_cosine_decay", "exponent", "> 0", "0.0"],
    ),
    "wcd-offset": (
        lambda: optim.warmup_cosine_decay(0.0, 1.0, 1, 10, step_offset=2),
        ["warmup_cosine_decay", "step_offset", "0 (", "2"],
    ),
    "wcd-nan": (
        lambda: optim.warmup_cosine_decay(0.0, float("nan"), 1, 10),
        ["warmup_cosine_decay", "peak_value", "finite", "nan"],
    ),
    "wsd-decay-type": (
        lambda: optim.warmup_stable_decay(1.0, 1, 1, 1, decay_type="exp"),
        ["warmup_stable_decay", "decay_type", "'linear', 'cosine', '1-sqrt'", "'exp'"],
    ),
    "wsd-decay-steps": (
        lambda: optim.warmup_stable_decay(1.0, 1, 1, 0),
        ["warmup_stable_decay", "decay_steps", ">= 1", "0"],
    ),
    "wsd-stable-float": (
        lambda: optim.warmup_stable_decay(1.0, 1, 2.5, 3),
        ["warmup_stable_decay", "stable_steps", "whole number", "2.5"],
    ),
    "one_cycle-pct": (
        lambda: optim.one_cycle(0.1, 100, pct_start=1.5),
        ["one_cycle", "pct_start", "[0, 1]", "1.5"],
    ),
    "one_cycle-three-phase-pct": (
        lambda: optim.one_cycle(0.1, 100, pct_start=0.6, three_phase=True),
        ["one_cycle", "pct_start", "<= 0.5 with three_phase=True", "0.6"],
    ),
    "one_cycle-total": (
        lambda: optim.one_cycle(0.1, 0),
        ["one_cycle", "total_steps", ">= 1", "0"],
    ),
    "one_cycle-strategy": (
        lambda: optim.one_cycle(0.1, 10, anneal_strategy="cosine"),
        ["one_cycle", "anneal_strategy", "'cos', 'linear'", "'cosine'"],
    ),
    "one_cycle-div": (
        lambda: optim.one_cycle(0.1, 10, div_factor=0.0),
        ["one_cycle", "div_factor", "> 0", "0.0"],
    ),
    "one_cycle-convention": (
        lambda: optim.one_cycle(0.1, 10, convention="keras"),
        ["one_cycle", "convention", "'torch', 'optax'", "'keras'"],
    ),
    "one_cycle-three-phase": (
        lambda: optim.one_cycle(0.1, 10, three_phase=1),
        ["one_cycle", "three_phase", "True or False", "1"],
    ),
    "polynomial-power": (
        lambda: optim.polynomial_decay(1.0, 0.0, -1.0, 10),
        ["polynomial_decay", "power", "> 0", "-1.0"],
    ),
    "polynomial-begin": (
        lambda: optim.polynomial_decay(1.0, 0.0, 1.0, 10, -5),
        ["polynomial_decay", "transition_begin", ">= 0", "-5"],
    ),
    "inverse_sqrt-timescale": (
        lambda: optim.inverse_sqrt(1.0, 10, 0),
        ["inverse_sqrt", "timescale", ">= 1", "0"],
    ),
    "restarts-period": (
        lambda: optim.cosine_restarts(1.0, 0),
        ["cosine_restarts", "first_period", ">= 1", "0"],
    ),
    "restarts-mult": (
        lambda: optim.cosine_restarts(1.0, 10, 1.5),
        ["cosine_restarts", "period_mult", "whole number >= 1", "1.5"],
    ),
    "constant_warmup-steps": (
        lambda: optim.constant_warmup(1.0, True),
        ["constant_warmup", "warmup_steps", "whole number", "True"],
    ),
    "piecewise_constant-count": (
        lambda: optim.piecewise_constant([10, 20], [1.0, 0.1]),
        ["piecewise_constant", "values", "len(boundaries) + 1 = 3", "[1.0, 0.1]"],
    ),
    "piecewise_constant-order": (
        lambda: optim.piecewise_constant([20, 10], [1.0, 0.1, 0.01]),
        ["piecewise_constant", "boundaries", "strictly increasing", "[20, 10]"],
    ),
    "piecewise_linear-empty": (
        lambda: optim.piecewise_linear([], []),
        ["piecewise_linear", "boundaries", "at least 1", "[]"],
    ),
    "piecewise_linear-negative": (
        lambda: optim.piecewise_linear([-1, 10], [1.0, 0.0]),
        ["piecewise_linear", "boundaries", ">= 0", "[-1, 10]"],
    ),
    "piecewise_linear-values": (
        lambda: optim.piecewise_linear([0, 10], [1.0, "x"]),
        ["piecewise_linear", "values", "finite numbers", "'x'"],
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_bad_schedule_arguments_are_explained(case: str) -> None:
    make, parts = INVALID[case]
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert message.startswith(parts[0] + ": "), message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "one_cycle", "args": [0.1, 100, {"evil": 1}]},
        {"name": "warmup_stable_decay", "args": [1.0, 1, 1, 1, 0.0, 0.0, "x" * 40]},
        {"name": "piecewise_linear", "args": [[0, 1], [0.0, "1"]]},
        {"name": "cosine_decay", "args": [True, 10]},
        {"name": "eval", "args": []},
    ],
)
def test_from_spec_rejects_what_no_factory_wrote(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        from_spec(spec)


def test_from_spec_passes_factory_errors_on() -> None:
    with pytest.raises(ValueError, match="decay_type should be one of"):
        from_spec({"name": "warmup_stable_decay", "args": [1.0, 1, 1, 1, 0.0, 0.0, "exp"]})
