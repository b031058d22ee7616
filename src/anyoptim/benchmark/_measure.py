"""The benchmark's cases and variants, and one measurement in one process.

A child process of :func:`anyoptim.benchmark.run_all` runs this file by path (``main`` below)
and prints its figures as one JSON line. The file imports nothing of anyoptim at module level
and no sibling module, so that a peer's process never loads anyoptim (see ``_CHILD`` in
``__init__``).

A variant builds a step function from the host (NumPy) trees of a case; calling the function
performs one optimizer step and waits until its results are ready. :func:`measure` times one
variant; :func:`measure_paired` times several in the same process, alternating short blocks
of steps, so that the machine's drift (other jobs, clock changes) falls on all of them alike.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 0.01
BYTES_PER_PARAM = 28  # float32 Adam: read p, g, m, v and write p, m, v
CASES = ("a", "b", "c", "small", "tiny")
LIMIT = "limit (numba flat buffer)"
FUNCTIONAL_LIMIT = "limit functional (numba flat buffer into new arrays)"


# ----------------------------------------------------------------------------- cases
def case_shapes(case: str, scale: float = 1.0) -> list[tuple[int, ...]]:
    """The tensor shapes of a benchmark case (``scale`` < 1 shrinks them for quick runs)."""

    def s(n: int) -> int:
        return max(1, round(n * scale))

    if case == "a":  # one big matrix
        return [(s(4096), 4096)]
    if case == "b":  # a 12-layer transformer (d=384, vocab 10,400): 146 tensors, ~25.2M
        d, vocab = 384, s(10400)
        shapes: list[tuple[int, ...]] = [(vocab, d)]
        for _ in range(12):
            shapes += [(d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d,), (d,),
                       (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
        shapes += [(d,)]
        return shapes if scale == 1.0 else shapes[: max(2, int(len(shapes) * scale))]
    if case == "c":  # many small tensors
        return [(1000,)] * s(2000)
    if case == "small":  # Python overhead: 10 small tensors
        return [(10, 10)] * 10
    if case == "tiny":  # per-tensor overhead: 10,000 tensors of 10 elements
        return [(10,)] * s(10000)
    raise ValueError(f"unknown case {case!r}; expected one of {', '.join(CASES)}")


def _host_tree(case: str, scale: float, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    shapes = case_shapes(case, scale)
    params = {f"t{i}": rng.standard_normal(sh, dtype=np.float32) for i, sh in enumerate(shapes)}
    grads = {k: rng.standard_normal(v.shape, dtype=np.float32) * 1e-2 for k, v in params.items()}
    return params, grads


# ----------------------------------------------------------------------------- variants
# A variant builds a step function from the host (NumPy) trees; calling the function performs
# one optimizer step and waits until its results are ready.


# Buffers below this many elements get the limit kernels' serial versions: on so little data a
# parallel launch costs more than it saves (anyoptim's own NumPy kernels use the same size).
PARALLEL_MIN = 1 << 17


@functools.cache
def limit_kernels(parallel: bool = True) -> tuple[Callable[..., None], Callable[..., None]]:
    """The two numba AdamW kernels over flat float32 buffers: (in place, into new arrays).

    Both compute the same thing element by element (no bias correction: a constant factor that
    costs nothing per element); the second reads p, m, v and writes the results to separate
    output arrays. ``parallel`` chooses the multi-threaded (``prange``) or the serial build.
    Compiled on the first call in a process.
    """
    import numba

    def in_place(p, g, m, v, lr, b1, omb1, b2, omb2, eps, decay):  # pragma: no cover - compiled
        for i in numba.prange(p.shape[0]):
            gi = g[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - lr * mi / (np.sqrt(vi) + eps)

    def into(p, g, m, v, p_out, m_out, v_out, lr, b1, omb1, b2, omb2, eps,
             decay):  # pragma: no cover - compiled
        for i in numba.prange(p.shape[0]):
            gi = g[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m_out[i] = mi
            v_out[i] = vi
            p_out[i] = p[i] * decay - lr * mi / (np.sqrt(vi) + eps)

    jit = numba.njit(parallel=parallel, fastmath=False, cache=False, error_model="numpy")
    return jit(in_place), jit(into)


def _kernel_args() -> tuple[np.float32, ...]:
    f = np.float32
    return f(LR), f(B1), f(1 - B1), f(B2), f(1 - B2), f(EPS), f(1 - LR * WD)


def settle_numba_threads(max_seconds: float = 1.0) -> None:
    """Compile the limit kernels and run them on a scratch buffer until numba's pool is steady.

    Right after the worker threads start (and whenever the machine is busy), a parallel
    launch can wait a scheduler tick or more (4 ms, 8 ms, ...) for a worker; this would land in
    the timed steps of a short run. Called before building the variants that run numba's
    parallel loops on a case big enough for them; it stops after 50 consecutive fast launches
    or after ``max_seconds``.
    """
    in_place = limit_kernels(parallel=True)[0]
    scratch = [np.zeros(4096, np.float32) for _ in range(4)]
    args = _kernel_args()
    streak, deadline = 0, time.perf_counter() + max_seconds
    while streak < 50 and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        in_place(*scratch[:4], *args)
        streak = streak + 1 if time.perf_counter() - t0 < 2e-4 else 0


def _flat(params: dict, grads: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The trees as flat float32 buffers p, g and zero-filled m, v."""
    p = np.concatenate([a.ravel() for a in params.values()])
    g = np.concatenate([a.ravel() for a in grads.values()])
    return p, g, np.zeros_like(p), np.zeros_like(p)


def _limit(params: dict, grads: dict) -> Callable[[], None]:
    p, g, m, v = _flat(params, grads)
    in_place = limit_kernels(parallel=p.size >= PARALLEL_MIN)[0]
    args = _kernel_args()
    return lambda: in_place(p, g, m, v, *args)


def _functional_limit(params: dict, grads: dict) -> Callable[[], None]:
    p, g, m, v = _flat(params, grads)
    into = limit_kernels(parallel=p.size >= PARALLEL_MIN)[1]
    args = _kernel_args()
    box = [p, m, v]

    def step() -> None:
        p, m, v = box
        # fresh outputs every step, as a functional update must allocate them; the previous
        # step's arrays are released when the box lets go of them
        out = (np.empty_like(p), np.empty_like(m), np.empty_like(v))
        into(p, g, m, v, *out, *args)
        box[:] = out

    return step


def _numpy_in_place(params: dict, grads: dict) -> Callable[[], None]:
    """Hand-written NumPy AdamW, in place with ``out=`` (what a careful NumPy user writes)."""
    ps = [a.copy() for a in params.values()]
    gs = list(grads.values())
    ms = [np.zeros_like(a) for a in ps]
    vs = [np.zeros_like(a) for a in ps]
    tmp = [np.empty_like(a) for a in ps]

    def step() -> None:
        for p, g, m, v, t in zip(ps, gs, ms, vs, tmp):
            p *= 1 - LR * WD
            m *= B1
            np.multiply(g, 1 - B1, out=t)
            m += t
            v *= B2
            np.multiply(g, g, out=t)
            t *= 1 - B2
            v += t
            np.sqrt(v, out=t)
            t += EPS
            np.divide(m, t, out=t)
            t *= LR
            p -= t

    return step


def _anyoptim_numpy(mode: str) -> Callable[[dict, dict], Callable[[], None]]:
    def build(params: dict, grads: dict) -> Callable[[], None]:
        import anyoptim as optim

        opt = optim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD, bias_correction=True)
        tree = {k: v.copy() for k, v in params.items()}
        if mode == "update":
            return lambda: opt.update(tree, grads)
        holder = [tree]

        def step() -> None:
            holder[0] = opt.apply_gradients(grads, holder[0])

        return step

    return build


def _torch(kind: str) -> Callable[[dict, dict], Callable[[], None]]:
    def build(params: dict, grads: dict) -> Callable[[], None]:
        import torch

        if kind == "apply":  # functional: plain tensors in, new tensors out, fed back next step
            import anyoptim as optim

            opt = optim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD, bias_correction=True)
            box = [{k: torch.from_numpy(a.copy()) for k, a in params.items()}]
            gtree = {k: torch.from_numpy(a.copy()) for k, a in grads.items()}

            def apply_step() -> None:
                box[0] = opt.apply_gradients(gtree, box[0])

            return apply_step
        ps = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params.values()]
        for p, g in zip(ps, grads.values()):
            p.grad = torch.from_numpy(g.copy())
        if kind == "anyoptim":
            import anyoptim as optim

            opt = optim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD, bias_correction=True)
            tree = dict(zip(params, ps))
            gtree = {k: p.grad for k, p in tree.items()}
            return lambda: opt.update(tree, gtree)
        flags = {"fused": True} if kind == "fused" else {"foreach": True}
        topt = torch.optim.AdamW(ps, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD, **flags)
        return topt.step

    return build


def _jax(kind: str) -> Callable[[dict, dict], Callable[[], None]]:
    def build(params: dict, grads: dict) -> Callable[[], None]:
        import jax
        import jax.numpy as jnp

        p = {k: jnp.asarray(v) for k, v in params.items()}
        g = {k: jnp.asarray(v) for k, v in grads.items()}
        if kind == "optax":
            import optax

            tx = optax.adamw(LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD)
            state = tx.init(p)

            def update(p, s, g):
                u, s = tx.update(g, s, p)
                return optax.apply_updates(p, u), s

            fn = jax.jit(update, donate_argnums=(0, 1))
            box = [p, state]

            def optax_step() -> None:
                box[0], box[1] = fn(box[0], box[1], g)
                jax.block_until_ready(box[0])

            return optax_step
        import anyoptim as optim

        opt = optim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD, bias_correction=True)
        opt.init(p)
        fn = jax.jit(opt.pure_step, donate_argnums=(0, 2))
        box = [p, opt.state]

        def step() -> None:
            box[0], box[1] = fn(box[0], g, box[1])
            jax.block_until_ready(box[0])

        return step

    return build


def _mlx(kind: str, compiled: bool) -> Callable[[dict, dict], Callable[[], None]]:
    def build(params: dict, grads: dict) -> Callable[[], None]:
        import mlx.core as mx

        if kind == "mlx":
            import mlx.optimizers as mlx_optim

            opt: Any = mlx_optim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD,
                                       bias_correction=True)
        else:
            import anyoptim as optim

            opt = optim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD, bias_correction=True)
        model = {k: mx.array(v) for k, v in params.items()}
        g = {k: mx.array(v) for k, v in grads.items()}
        opt.init(model)
        box = [model]
        if compiled:
            state = [opt.state]

            def raw(gr: dict, p: dict) -> dict:
                return opt.apply_gradients(gr, p)

            fn = mx.compile(raw, inputs=state, outputs=state)
        else:
            fn = opt.apply_gradients

        def step() -> None:
            box[0] = fn(g, box[0])
            mx.eval(box[0], opt.state)

        return step

    return build


VARIANTS: dict[str, tuple[str, str, Callable[[dict, dict], Callable[[], None]]]] = {
    # name: (library, module that must be installed, builder)
    LIMIT: ("limit", "numba", _limit),
    FUNCTIONAL_LIMIT: ("limit", "numba", _functional_limit),
    "numpy hand-written in place": ("numpy", "numpy", _numpy_in_place),
    "anyoptim numpy update": ("numpy", "numpy", _anyoptim_numpy("update")),
    "anyoptim numpy apply_gradients": ("numpy", "numpy", _anyoptim_numpy("apply")),
    "torch AdamW fused": ("torch", "torch", _torch("fused")),
    "torch AdamW foreach": ("torch", "torch", _torch("foreach")),
    "anyoptim torch update": ("torch", "torch", _torch("anyoptim")),
    "anyoptim torch apply_gradients": ("torch", "torch", _torch("apply")),
    "optax adamw jit+donate": ("jax", "optax", _jax("optax")),
    "anyoptim jax pure_step jit+donate": ("jax", "jax", _jax("anyoptim")),
    "mlx.optimizers eager": ("mlx", "mlx", _mlx("mlx", False)),
    "mlx.optimizers compiled": ("mlx", "mlx", _mlx("mlx", True)),
    "anyoptim mlx eager": ("mlx", "mlx", _mlx("anyoptim", False)),
    "anyoptim mlx compiled": ("mlx", "mlx", _mlx("anyoptim", True)),
}


# Variants that run numba's parallel loops (anyoptim runs its NumPy kernels on CPU torch tensors
# too): their process lets numba's thread pool settle before building (see
# settle_numba_threads); the others never import numba.
NUMBA_VARIANTS = frozenset({LIMIT, FUNCTIONAL_LIMIT, "anyoptim numpy update",
                            "anyoptim numpy apply_gradients", "anyoptim torch update",
                            "anyoptim torch apply_gradients"})


# Libraries whose variants a case runs only when they are named in ``variants``: on "tiny"
# (10,000 leaves) jax.jit and mx.compile spend minutes compiling the step, and the case exists
# for the per-tensor overhead of the NumPy and PyTorch paths.
ON_REQUEST_ONLY: dict[str, frozenset[str]] = {"tiny": frozenset({"jax", "mlx"})}


def variants_for(case: str, variants: list[str] | None = None) -> list[str]:
    """The installed variants that run on ``case``: ``variants`` as given, or the default set."""
    if variants:
        return [v for v in variants if installed(v)]
    skip = ON_REQUEST_ONLY.get(case, frozenset())
    return [v for v in VARIANTS if installed(v) and VARIANTS[v][0] not in skip]


def installed(variant: str) -> bool:
    """Whether the library a variant needs can be imported here (unknown names: False)."""
    entry = VARIANTS.get(variant)
    if entry is None:
        return False
    try:
        return importlib.util.find_spec(entry[1]) is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- measurements
def _prepare(variants: list[str], case: str, scale: float) -> tuple[dict, dict, int]:
    params, grads = _host_tree(case, scale)
    n_params = int(sum(a.size for a in params.values()))
    if (any(v in NUMBA_VARIANTS for v in variants) and n_params >= PARALLEL_MIN
            and importlib.util.find_spec("numba") is not None):
        settle_numba_threads()
    return params, grads, n_params


def _row(variant: str, case: str, scale: float, tensors: int, n_params: int,
         times: list[float], rss_growth: int) -> dict[str, Any]:
    return {
        "variant": variant,
        "case": case,
        "scale": scale,
        "tensors": tensors,
        "params": n_params,
        "steps": len(times),
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "peak_rss_growth_kib": rss_growth,
    }


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(variant: str, case: str, scale: float, warmup: int, steps: int) -> dict[str, Any]:
    """Time one variant on one case in this process; returns the figures as a dict."""
    params, grads, n_params = _prepare([variant], case, scale)
    step = VARIANTS[variant][2](params, grads)
    for _ in range(warmup):
        step()
    rss_before = _max_rss()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return _row(variant, case, scale, len(params), n_params, times, _max_rss() - rss_before)


def measure_paired(variants: list[str], case: str, scale: float, warmup: int, steps: int,
                   block: int = 5) -> list[dict[str, Any]]:
    """Time several variants on one case in this process, in alternating blocks of ``block``
    steps (the variant that goes first changes from round to round); one dict per variant.

    Each block starts with one untimed step, which brings the variant's data and thread pool
    back after the others ran. Peak RSS growth is counted in the variant's own blocks. The
    variants share the process, so they should be of one library (their thread pools would
    otherwise compete) and small enough to fit in memory side by side.
    """
    params, grads, n_params = _prepare(variants, case, scale)
    steps_of = [(v, VARIANTS[v][2](params, grads)) for v in variants]
    for _, step in steps_of:
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {v: [] for v in variants}
    growth = dict.fromkeys(variants, 0)
    done, turn = 0, 0
    while done < steps:
        count = min(block, steps - done)
        for variant, step in steps_of[turn:] + steps_of[:turn]:
            step()
            rss_before = _max_rss()
            for _ in range(count):
                t0 = time.perf_counter()
                step()
                times[variant].append(time.perf_counter() - t0)
            growth[variant] += _max_rss() - rss_before
        done += count
        turn = (turn + 1) % len(steps_of)
    return [_row(v, case, scale, len(params), n_params, times[v], growth[v]) for v in variants]


def main(argv: list[str] | None = None) -> int:
    """The child's entry: measure the ``--variant`` (one, or several paired) and print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--block", type=int, default=5)
    args = parser.parse_args(argv)
    if len(args.variant) == 1:
        rows = [measure(args.variant[0], args.case, args.scale, args.warmup, args.steps)]
    else:
        rows = measure_paired(args.variant, args.case, args.scale, args.warmup, args.steps,
                              args.block)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
