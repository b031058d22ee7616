"""Long runs: no growth in memory or in per-step time.

CI runs 2,000 steps on NumPy; ``--runslow`` runs 10,000 steps on every installed library.
"""

from __future__ import annotations

import gc
import importlib.util
import resource
import statistics
import time
from typing import Any

import numpy as np
import pytest

import anyoptim as optim


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() // 1024


def _setup(library: str) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(0)
    host_p = {"w": rng.standard_normal((64, 32)).astype(np.float32),
              "layers": [{"b": rng.standard_normal(32).astype(np.float32)} for _ in range(4)]}
    host_g = {"w": rng.standard_normal((64, 32)).astype(np.float32) * 1e-3,
              "layers": [{"b": rng.standard_normal(32).astype(np.float32) * 1e-3}
                         for _ in range(4)]}
    opt = optim.AdamW(optim.cosine_decay(1e-3, 5000, 1e-5), bias_correction=True)
    if library == "numpy":
        params, grads = host_p, host_g

        def step() -> None:
            opt.update(params, grads)

    elif library == "numpy-functional":
        box = [host_p]

        def step() -> None:
            box[0] = opt.apply_gradients(host_g, box[0])

    elif library == "torch":
        import torch

        params = optim.utils.tree_map(lambda a: torch.from_numpy(a.copy()), host_p)
        grads = optim.utils.tree_map(torch.from_numpy, host_g)

        def step() -> None:
            opt.update(params, grads)

    elif library == "jax":
        import jax
        import jax.numpy as jnp

        params = optim.utils.tree_map(jnp.asarray, host_p)
        grads = optim.utils.tree_map(jnp.asarray, host_g)
        opt.init(params)
        fn = jax.jit(opt.pure_step, donate_argnums=(0, 2))
        box = [params, opt.state]

        def step() -> None:
            box[0], box[1] = fn(box[0], grads, box[1])
            jax.block_until_ready(box[0])

        return (lambda: box[1]["step"]), step, None  # the donated opt.state is gone

    elif library == "mlx":
        import mlx.core as mx

        box = [optim.utils.tree_map(mx.array, host_p)]
        grads = optim.utils.tree_map(mx.array, host_g)

        def step() -> None:
            box[0] = opt.apply_gradients(grads, box[0])
            mx.eval(box[0], opt.state)

    else:
        raise ValueError(library)
    return (lambda: opt.step), step, None


def _long_run(library: str, steps: int) -> None:
    current_step, step, _ = _setup(library)
    window = steps // 10
    for _ in range(window):  # warm-up: compilation, caches, allocator pools
        step()
    gc.collect()
    rss_start = _rss_kib()
    times = []
    for _ in range(steps - window):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    gc.collect()
    growth = _rss_kib() - rss_start
    early = statistics.median(times[:window])
    late = statistics.median(times[-window:])
    assert int(np.asarray(current_step())) == steps
    assert growth < 8 * 1024, f"{library}: resident memory grew by {growth} KiB"
    assert late < 1.5 * early + 20e-6, f"{library}: {early * 1e6:.1f} -> {late * 1e6:.1f} µs/step"


def test_numpy_2000_steps_no_growth() -> None:
    _long_run("numpy", 2000)


LIBRARIES = ["numpy", "numpy-functional", "torch", "jax", "mlx"]


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_10000_steps_no_growth(library: str) -> None:
    module = library.split("-")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    _long_run(library, 10_000)
