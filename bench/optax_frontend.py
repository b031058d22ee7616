"""anyoptim.optax next to optax: one AdamW step under jax.jit with buffer donation.

    python bench/optax_frontend.py                  # cases a, b, c; 3 interleaved repeats
    python bench/optax_frontend.py --cases c --repeats 5 --steps 50

Variants (each in its own process, so that no compilation cache, allocator state or thread
pool is shared): ``optax.adamw``, ``anyoptim.optax.adamw`` (the same maths) and
``anyoptim.optax.from_optimizer(anyoptim.AdamW(..., bias_correction=True))`` (MLX's maths),
all driven the same way: ``u, s = tx.update(g, s, p); p = optax.apply_updates(p, u)`` in one
``jax.jit`` with the parameters and the state donated. A process reports the median of its
timed steps; the table gives the median over the repeats and the ratio to ``optax.adamw``
measured in the same run. Cases are those of ``anyoptim.benchmark`` (a: one 4096 x 4096
tensor, b: a 146-tensor transformer mix of 25.2M parameters, c: 2000 tensors of 1000).
Writes bench/optax_frontend.md and bench/optax_frontend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 0.01
VARIANTS = ("optax.adamw", "anyoptim.optax.adamw", "anyoptim.optax.from_optimizer(AdamW)")


def _transformation(variant: str) -> Any:
    if variant == "optax.adamw":
        import optax

        return optax.adamw(LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD)
    import anyoptim
    import anyoptim.optax

    if variant == "anyoptim.optax.adamw":
        return anyoptim.optax.adamw(LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD)
    return anyoptim.optax.from_optimizer(
        anyoptim.AdamW(LR, betas=[B1, B2], eps=EPS, weight_decay=WD, bias_correction=True))


def child(variant: str, shapes: list[list[int]], warmup: int, steps: int) -> dict[str, Any]:
    """Time ``variant`` in this process (called in a fresh interpreter)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    rng = np.random.default_rng(0)
    params = {f"t{i}": jnp.asarray(rng.standard_normal(s, dtype=np.float32))
              for i, s in enumerate(shapes)}
    grads = {k: jnp.asarray(rng.standard_normal(v.shape, dtype=np.float32) * 1e-2)
             for k, v in params.items()}
    tx = _transformation(variant)

    def update(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    fn = jax.jit(update, donate_argnums=(0, 1))
    p, s = params, tx.init(params)
    for _ in range(warmup):
        p, s = fn(p, s, grads)
    jax.block_until_ready(p)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        p, s = fn(p, s, grads)
        jax.block_until_ready(p)
        times.append(time.perf_counter() - t0)
    return {"variant": variant, "median_ms": statistics.median(times) * 1e3,
            "min_ms": min(times) * 1e3}


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true "
                        f"intra_op_parallelism_threads={threads}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(child(job["variant"], job["shapes"], args.warmup, args.steps)))
        return 0

    from anyoptim.benchmark import case_shapes

    rows = []
    for case in args.cases.split(","):
        shapes = [list(s) for s in case_shapes(case)]
        runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):  # interleaved: a slow moment hits every variant alike
            for variant in VARIANTS:
                job = json.dumps({"variant": variant, "shapes": shapes})
                out = subprocess.run(
                    [sys.executable, __file__, "--child", job, "--warmup", str(args.warmup),
                     "--steps", str(args.steps)],
                    capture_output=True, text=True, env=_env(args.threads), check=True)
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1])["median_ms"])
        base = statistics.median(runs["optax.adamw"])
        for variant in VARIANTS:
            ms = statistics.median(runs[variant])
            rows.append({"case": case, "tensors": len(shapes),
                         "params": sum(_size(s) for s in shapes), "variant": variant,
                         "median_ms": ms, "runs_ms": runs[variant], "ratio_to_optax": ms / base})
    table = ["| case | variant | ms / step (median) | ratio to optax.adamw |",
             "|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['case']} ({r['tensors']} tensors, {r['params'] / 1e6:.1f}M) | "
                     f"`{r['variant']}` | {r['median_ms']:.2f} | {r['ratio_to_optax']:.3f} |")
    text = "\n".join(table)
    print(text)
    stamp = time.strftime("%Y-%m-%d")
    (HERE / "optax_frontend.md").write_text(
        f"# anyoptim.optax vs optax (AdamW, jax.jit + donation, {args.threads} threads, "
        f"{stamp})\n\n{text}\n", encoding="utf-8")
    (HERE / "optax_frontend.json").write_text(json.dumps(rows, indent=1) + "\n",
                                              encoding="utf-8")
    return 0


def _size(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
