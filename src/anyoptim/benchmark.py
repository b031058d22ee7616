"""Side-by-side timing of one AdamW step: anyoptim on each library next to its peers.

Every variant runs in its own process (so libraries do not share thread pools or caches),
with the same thread count, separate warm-up steps and per-step timing; the figure reported
is the median. Two numba kernels over one flat buffer set the bar for NumPy:

* the "limit" updates p, m and v in place: it moves the 28 bytes per float32 parameter an Adam
  step needs (read p, g, m, v; write p, m, v) and so measures what the memory system allows;
* the "functional limit" does the same arithmetic but writes p, m and v into arrays allocated
  afresh each step (what any functional update has to pay for: allocation, page faults).

Everything else is stated as a ratio to a limit or to the peer it replaces, and the ratios
that the performance targets name are collected in a summary table (``TARGETS``).

Run ``python bench/run.py`` (full) or ``anyoptim bench`` (short).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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


# Variants that run numba's parallel loops: their process lets numba's thread pool settle before
# building (see settle_numba_threads); the others never import numba.
NUMBA_VARIANTS = frozenset({LIMIT, FUNCTIONAL_LIMIT, "anyoptim numpy update",
                            "anyoptim numpy apply_gradients"})


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


# ----------------------------------------------------------------------------- one measurement
def measure(variant: str, case: str, scale: float, warmup: int, steps: int) -> dict[str, Any]:
    """Time one variant on one case in this process; returns the figures as a dict."""
    params, grads = _host_tree(case, scale)
    n_params = sum(a.size for a in params.values())
    if (variant in NUMBA_VARIANTS and n_params >= PARALLEL_MIN
            and importlib.util.find_spec("numba") is not None):
        settle_numba_threads()
    step = VARIANTS[variant][2](params, grads)
    for _ in range(warmup):
        step()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "variant": variant,
        "case": case,
        "scale": scale,
        "tensors": len(params),
        "params": int(n_params),
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "peak_rss_growth_kib": rss_after - rss_before,
    }


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS"):
        env[var] = str(threads)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen=true "
                        f"intra_op_parallelism_threads={threads}").strip()
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
    return env


# A child runs this file by path rather than as ``anyoptim.benchmark``, so that a peer's process
# never imports the anyoptim package (nothing of it is loaded where it is not measured, and a
# broken anyoptim build fails only the anyoptim variants). runpy keeps the file's folder off
# sys.path, where anyoptim's own modules (io.py, ...) would shadow the standard library's.
_CHILD = [sys.executable, "-c",
          "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')",
          os.path.abspath(__file__)]


def run_all(
    cases: list[str],
    variants: list[str] | None = None,
    scale: float = 1.0,
    warmup: int = 5,
    steps: int = 30,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Measure the variants on every case, each in its own subprocess.

    ``variants`` None: every installed variant (see :func:`variants_for` for the exceptions).

    With ``repeats`` > 1 every variant runs in that many separate processes, interleaved
    (all variants once, then all again, ...), and the median of the per-process medians is
    reported: where the memory of a process lands (huge pages or not, which cache lines) moves a
    single process's figure by up to tens of percent on a shared machine.
    """
    results = []
    for case in cases:
        chosen = variants_for(case, variants)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in chosen}
        errors: dict[str, str] = {}
        for r in range(repeats):
            for variant in chosen:
                if variant in errors:
                    continue
                if progress:
                    progress(f"case {case}: {variant}" + (f" ({r + 1}/{repeats})" if repeats > 1 else ""))
                cmd = [*_CHILD, "--child", "--variant", variant, "--case", case,
                       "--scale", str(scale), "--warmup", str(warmup), "--steps", str(steps)]
                started = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      env=_child_env(threads), check=False)
                wall = time.perf_counter() - started
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                    errors[variant] = tail[0]
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["process_s"] = round(wall, 2)  # the whole child: start, build, all steps
                runs[variant].append(row)
        for variant in chosen:
            if variant in errors:
                results.append({"variant": variant, "case": case, "error": errors[variant]})
                continue
            per_process = sorted(runs[variant], key=lambda x: x["median_ms"])
            row = dict(per_process[len(per_process) // 2])
            row["process_medians_ms"] = [x["median_ms"] for x in runs[variant]]
            results.append(row)
    return results


# ----------------------------------------------------------------------------- reporting
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _per_tensor(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _cases_in_order(results: list[dict[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(r["case"] for r in results))
    return sorted(seen, key=lambda c: CASES.index(c) if c in CASES else len(CASES))


def table(results: list[dict[str, Any]]) -> str:
    """Markdown tables, one per case: ms, % of the memory limit and ratio to the best peer."""
    lines = []
    for case in _cases_in_order(results):
        rows = [r for r in results if r["case"] == case]
        ok = [r for r in rows if "error" not in r]
        limit = next((r for r in ok if r["variant"] == LIMIT), None)
        flimit = next((r for r in ok if r["variant"] == FUNCTIONAL_LIMIT), None)
        first: dict[str, Any] = ok[0] if ok else {"tensors": "?", "params": 0}
        lines.append(
            f"\n**Case ({case})**: {first['tensors']} tensors, {first['params'] / 1e6:.2f}M "
            f"float32 parameters, {BYTES_PER_PARAM * first['params'] / 1e6:.0f} MB moved per step"
        )
        notes = []
        if limit:
            gbs = BYTES_PER_PARAM * limit["params"] / (limit["median_ms"] / 1e3) / 1e9
            notes.append(f"limit: {_ms(limit['median_ms'])} ms = {gbs:.1f} GB/s")
        if flimit:
            notes.append(f"functional limit: {_ms(flimit['median_ms'])} ms")
        if notes:
            lines.append(f"({'; '.join(notes)})")
        lines.append("")
        lines.append("| variant | library | ms/step (median) | limit / time | vs best peer "
                     "| µs per tensor over limit | peak RSS growth |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['variant']} | | failed: {r['error'][:60]} | | | | |")
                continue
            lib = VARIANTS[r["variant"]][0]
            peers = [p for p in ok if VARIANTS[p["variant"]][0] == lib
                     and not p["variant"].startswith("anyoptim") and p is not r]
            best = min((p["median_ms"] for p in peers), default=None)
            ratio = f"{best / r['median_ms']:.2f}x" if best and r["variant"].startswith("anyoptim") else ""
            pct = f"{100 * limit['median_ms'] / r['median_ms']:.0f}%" if limit else ""
            per_tensor = (_per_tensor(1e3 * (r["median_ms"] - limit["median_ms"]) / r["tensors"])
                          if limit and r is not limit else "")
            lines.append(
                f"| {r['variant']} | {lib} | {_ms(r['median_ms'])} | {pct} | {ratio} "
                f"| {per_tensor} | {r['peak_rss_growth_kib']} KiB |"
            )
    lines.append("")
    lines.append("\"vs best peer\" = the fastest non-anyoptim variant on the same library divided by "
                 "anyoptim's time (> 1 means anyoptim is faster). \"limit / time\" is the share of "
                 "the memory-bandwidth limit (the in-place one) reached. \"µs per tensor over "
                 "limit\" = (time - limit time) / number of tensors: the per-tensor overhead.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """One performance target: ``variant`` measured against ``reference`` on ``case``.

    ``unit`` "x": the ratio time / reference time must be at most ``bound``;
    ``unit`` "us/tensor": (time - reference time) / number of tensors, in microseconds, must be
    at most ``bound``.
    """

    case: str
    variant: str
    reference: str
    bound: float
    unit: str = "x"

    @property
    def label(self) -> str:
        if self.unit == "x":
            return f"{self.variant} / {self.reference}"
        return f"{self.variant}: per-tensor overhead over {self.reference}"


def _targets() -> tuple[Target, ...]:
    out: list[Target] = []

    def each(cases: str, variant: str, reference: str, bounds: tuple[float, ...]) -> None:
        out.extend(Target(c, variant, reference, b) for c, b in zip(cases.split(","), bounds))

    each("a,b,c", "anyoptim numpy update", LIMIT, (1.15, 1.15, 2.0))
    each("a,b,c", "anyoptim numpy apply_gradients", FUNCTIONAL_LIMIT, (1.2, 1.2, 3.0))
    each("a,b,c", "anyoptim torch update", "torch AdamW fused", (1.05, 1.05, 1.0))
    each("a,b,c", "anyoptim torch apply_gradients", "torch AdamW fused", (2.0, 2.0, 2.0))
    each("a,b,c", "anyoptim jax pure_step jit+donate", "optax adamw jit+donate", (1.0, 1.0, 1.0))
    each("a,b,c", "anyoptim mlx compiled", "mlx.optimizers compiled", (1.0, 1.0, 1.0))
    out.append(Target("tiny", "anyoptim numpy update", LIMIT, 0.5, "us/tensor"))
    return tuple(out)


TARGETS = _targets()


def evaluate_targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets whose case was measured, each with its measured value and verdict.

    ``met`` is None (and ``note`` says why) where a variant was not run or failed.
    """
    by_key = {(r["case"], r["variant"]): r for r in results}
    cases = {r["case"] for r in results}
    rows = []
    for t in TARGETS:
        if t.case not in cases:
            continue
        row: dict[str, Any] = {"target": t.label, "case": t.case, "variant": t.variant,
                               "reference": t.reference, "unit": t.unit, "bound": t.bound,
                               "measured": None, "met": None}
        mine, ref = by_key.get((t.case, t.variant)), by_key.get((t.case, t.reference))
        missing = [name for name, r in ((t.variant, mine), (t.reference, ref)) if r is None]
        failed = [name for name, r in ((t.variant, mine), (t.reference, ref))
                  if r is not None and "error" in r]
        if missing or failed:
            row["note"] = "; ".join([f"{n}: not run" for n in missing]
                                    + [f"{n}: failed" for n in failed])
        else:
            assert mine is not None and ref is not None
            if t.unit == "x":
                value = mine["median_ms"] / ref["median_ms"]
            else:
                value = 1e3 * (mine["median_ms"] - ref["median_ms"]) / mine["tensors"]
            row["measured"] = value
            row["met"] = bool(value <= t.bound)
            if mine.get("scale", 1.0) != 1.0:
                row["scale"] = mine["scale"]
        rows.append(row)
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    """The evaluated targets (see :func:`evaluate_targets`) as a markdown table."""
    if not rows:
        return ""
    lines = ["", "**Targets** (ratio = time / reference time; lower is better)", "",
             "| target | case | measured | target | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        unit = "x" if r["unit"] == "x" else " µs"
        case = f"({r['case']})" + (f" at scale {r['scale']:g}" if "scale" in r else "")
        if r["measured"] is None:
            measured, verdict = "—", f"not measured ({r.get('note', '')})"
        else:
            digits = 2 if r["unit"] == "x" or abs(r["measured"]) < 10 else 1
            measured = f"{r['measured']:.{digits}f}{unit}"
            verdict = "met" if r["met"] else "**not met**"
        lines.append(f"| {r['target']} | {case} | {measured} | ≤ {r['bound']:g}{unit} | {verdict} |")
    met = sum(1 for r in rows if r["met"])
    measured_n = sum(1 for r in rows if r["met"] is not None)
    lines.append("")
    lines.append(f"{met} of {measured_n} measured targets met"
                 + (f" ({len(rows) - measured_n} not measured)." if measured_n < len(rows) else "."))
    return "\n".join(lines)


def report(results: list[dict[str, Any]]) -> str:
    """The per-case tables followed by the targets table."""
    return table(results) + "\n" + targets_table(evaluate_targets(results))


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({r["case"] for r in results})
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 5), squeeze=False)
    for ax, case in zip(axes[0], cases):
        rows = [r for r in results if r["case"] == case and "error" not in r]
        names = [r["variant"] for r in rows]
        ms = [r["median_ms"] for r in rows]
        colors = ["tab:green" if n.startswith("anyoptim") else
                  "tab:gray" if n.startswith("limit") else "tab:blue" for n in names]
        ax.barh(names, ms, color=colors)
        ax.set_xscale("log")
        ax.set_xlabel("ms per AdamW step (median, log scale)")
        ax.set_title(f"case ({case})")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    parser.add_argument("--variants", default="", help="comma-separated; default: all installed")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="processes per variant; the median of their medians is reported")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.variant, args.case, args.scale, args.warmup, args.steps)))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES] + [
        v for v in args.variants.split(",") if v and v not in VARIANTS]
    if unknown:
        parser.error(f"unknown case(s)/variant(s): {', '.join(unknown)}; cases: "
                     f"{', '.join(CASES)}; variants: {'; '.join(VARIANTS)}")
    variants = [v for v in args.variants.split(",") if v] or None
    results = run_all(cases, variants, args.scale, args.warmup, args.steps,
                      args.threads, progress=lambda s: print(s, file=sys.stderr, flush=True),
                      repeats=args.repeats)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, {args.threads} threads, "
              f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.repeats} "
              "process(es) per variant (median of the per-process medians).\n")
    text = header + report(results)
    with open(args.out + ".md", "w") as fh:
        fh.write(text + "\n")
    with open(args.out + ".json", "w") as fh:
        json.dump({"machine": machine(), "results": results,
                   "targets": evaluate_targets(results)}, fh, indent=1)
    plot(results, args.out + ".png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
