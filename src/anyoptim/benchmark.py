"""Side-by-side timing of one AdamW step: anyoptim on each library next to its peers.

Every variant runs in its own process (so libraries do not share thread pools or caches),
with the same thread count, separate warm-up steps and per-step timing; the figure reported
is the median. The "limit" variant is a numba kernel over one flat buffer, updating in place:
it moves the 28 bytes per float32 parameter an Adam step needs (read p, g, m, v; write p, m, v)
and so measures what the memory system allows on this machine. Everything else is stated as
a ratio to it.

Run ``python bench/run.py`` (full) or ``anyoptim bench`` (short).
"""

from __future__ import annotations

import argparse
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
from typing import Any

import numpy as np

LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 0.01
BYTES_PER_PARAM = 28  # float32 Adam: read p, g, m, v and write p, m, v


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
    raise ValueError(f"unknown case {case!r}; expected a, b, c or small")


def _host_tree(case: str, scale: float, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    shapes = case_shapes(case, scale)
    params = {f"t{i}": rng.standard_normal(sh, dtype=np.float32) for i, sh in enumerate(shapes)}
    grads = {k: rng.standard_normal(v.shape, dtype=np.float32) * 1e-2 for k, v in params.items()}
    return params, grads


# ----------------------------------------------------------------------------- variants
# A variant builds a step function from the host (NumPy) trees; calling the function performs
# one optimizer step and waits until its results are ready.


def _limit(params: dict, grads: dict) -> Callable[[], None]:
    import numba

    @numba.njit(parallel=True, fastmath=False, cache=False, error_model="numpy")
    def adamw(p, g, m, v, lr, b1, omb1, b2, omb2, eps, decay):  # pragma: no cover - compiled
        for i in numba.prange(p.shape[0]):
            gi = g[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - lr * mi / (np.sqrt(vi) + eps)

    p = np.concatenate([a.ravel() for a in params.values()])
    g = np.concatenate([a.ravel() for a in grads.values()])
    m, v = np.zeros_like(p), np.zeros_like(p)
    f = np.float32
    args = (f(LR), f(B1), f(1 - B1), f(B2), f(1 - B2), f(EPS), f(1 - LR * WD))
    return lambda: adamw(p, g, m, v, *args)


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
    "limit (numba flat buffer)": ("limit", "numba", _limit),
    "numpy hand-written in place": ("numpy", "numpy", _numpy_in_place),
    "anyoptim numpy update": ("numpy", "numpy", _anyoptim_numpy("update")),
    "anyoptim numpy apply_gradients": ("numpy", "numpy", _anyoptim_numpy("apply")),
    "torch AdamW fused": ("torch", "torch", _torch("fused")),
    "torch AdamW foreach": ("torch", "torch", _torch("foreach")),
    "anyoptim torch update": ("torch", "torch", _torch("anyoptim")),
    "optax adamw jit+donate": ("jax", "optax", _jax("optax")),
    "anyoptim jax pure_step jit+donate": ("jax", "jax", _jax("anyoptim")),
    "mlx.optimizers eager": ("mlx", "mlx", _mlx("mlx", False)),
    "mlx.optimizers compiled": ("mlx", "mlx", _mlx("mlx", True)),
    "anyoptim mlx eager": ("mlx", "mlx", _mlx("anyoptim", False)),
    "anyoptim mlx compiled": ("mlx", "mlx", _mlx("anyoptim", True)),
}


def installed(variant: str) -> bool:
    return importlib.util.find_spec(VARIANTS[variant][1]) is not None


# ----------------------------------------------------------------------------- one measurement
def measure(variant: str, case: str, scale: float, warmup: int, steps: int) -> dict[str, Any]:
    """Time one variant on one case in this process; returns the figures as a dict."""
    params, grads = _host_tree(case, scale)
    n_params = sum(a.size for a in params.values())
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
    """Measure every installed variant on every case, each in its own subprocess.

    With ``repeats`` > 1 every variant runs in that many separate processes, interleaved
    (all variants once, then all again, ...), and the median of the per-process medians is
    reported: where the memory of a process lands (huge pages or not, which cache lines) moves a
    single process's figure by up to tens of percent on a shared machine.
    """
    chosen = [v for v in (variants or list(VARIANTS)) if installed(v)]
    results = []
    for case in cases:
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in chosen}
        errors: dict[str, str] = {}
        for r in range(repeats):
            for variant in chosen:
                if variant in errors:
                    continue
                if progress:
                    progress(f"case {case}: {variant}" + (f" ({r + 1}/{repeats})" if repeats > 1 else ""))
                cmd = [sys.executable, "-m", "anyoptim.benchmark", "--child", "--variant", variant,
                       "--case", case, "--scale", str(scale), "--warmup", str(warmup),
                       "--steps", str(steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      env=_child_env(threads), check=False)
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                    errors[variant] = tail[0]
                    continue
                runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
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


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table: ms, % of the memory limit and ratio to the best peer, per case."""
    lines = []
    cases = sorted({r["case"] for r in results})
    for case in cases:
        rows = [r for r in results if r["case"] == case]
        ok = [r for r in rows if "error" not in r]
        limit = next((r for r in ok if r["variant"].startswith("limit")), None)
        first: dict[str, Any] = ok[0] if ok else {"tensors": "?", "params": 0}
        lines.append(
            f"\n**Case ({case})**: {first['tensors']} tensors, {first['params'] / 1e6:.2f}M "
            f"float32 parameters, {BYTES_PER_PARAM * first['params'] / 1e6:.0f} MB moved per step"
        )
        if limit:
            gbs = BYTES_PER_PARAM * limit["params"] / (limit["median_ms"] / 1e3) / 1e9
            lines.append(f"(limit: {_ms(limit['median_ms'])} ms = {gbs:.1f} GB/s)")
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
            per_tensor = (f"{1e3 * (r['median_ms'] - limit['median_ms']) / r['tensors']:.1f}"
                          if limit and r is not limit else "")
            lines.append(
                f"| {r['variant']} | {lib} | {_ms(r['median_ms'])} | {pct} | {ratio} "
                f"| {per_tensor} | {r['peak_rss_growth_kib']} KiB |"
            )
    lines.append("")
    lines.append("\"vs best peer\" = the fastest non-anyoptim variant on the same library divided by "
                 "anyoptim's time (> 1 means anyoptim is faster). \"limit / time\" is the share of "
                 "the memory-bandwidth limit reached.")
    return "\n".join(lines)


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
    parser.add_argument("--cases", default="a,b,c,small")
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
    variants = [v for v in args.variants.split(",") if v] or None
    results = run_all(args.cases.split(","), variants, args.scale, args.warmup, args.steps,
                      args.threads, progress=lambda s: print(s, file=sys.stderr, flush=True),
                      repeats=args.repeats)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, {args.threads} threads, "
              f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.repeats} "
              "process(es) per variant (median of the per-process medians).\n")
    text = header + table(results)
    with open(args.out + ".md", "w") as fh:
        fh.write(text + "\n")
    with open(args.out + ".json", "w") as fh:
        json.dump({"machine": machine(), "results": results}, fh, indent=1)
    plot(results, args.out + ".png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
