"""What each training-loop transform costs on top of AdamW, on the benchmark cases (NumPy).

    python bench/transforms.py                       # cases a, b, c; 20 timed steps each
    python bench/transforms.py --cases c --out bench/transforms.json

Each variant wraps ``anyoptim.AdamW(1e-3, weight_decay=0.01)`` (or sets an option on it) and
runs in its own process (2 threads), on float32 NumPy arrays updated in place with
``opt.update(params, grads)``: 3 warm-up steps, then ``--steps`` timed calls; a round's figure
is the median. The variants take turns for ``--rounds`` rounds and the best round counts.
Ratios are to plain AdamW in the same run. ``GradientAccumulation(k=4)`` is timed per call
(three of four calls only add the gradient to the accumulator), so its figure is the mean
over the k calls. The cases are anyoptim.benchmark's: (a) one 4096 x 4096 tensor, (b) a
146-tensor transformer (25.2M parameters), (c) 2000 tensors of 1000.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

VARIANTS = [
    "AdamW",
    "groups=[no_decay_1d()]",
    "state_dtype='bfloat16'",
    "GradientAccumulation(k=4)",
    "EMA(0.999)",
    "SWA",
    "Lookahead",
    "ClipByGlobalNorm(1.0)",
    "ClipByValue(0.01)",
    "ClipByTensorNorm(1.0)",
    "ClipByBlockRMS(1.0)",
    "AdaptiveGradClip(0.01)",
    "ZeroNaNs",
    "ApplyIfFinite",
]


def make(variant: str) -> Any:
    import anyoptim as optim

    base = optim.AdamW(1e-3, weight_decay=0.01)
    wrappers = {
        "GradientAccumulation(k=4)": lambda o: optim.GradientAccumulation(o, 4),
        "EMA(0.999)": lambda o: optim.EMA(o, 0.999),
        "SWA": lambda o: optim.SWA(o),
        "Lookahead": lambda o: optim.Lookahead(o),
        "ClipByGlobalNorm(1.0)": lambda o: optim.ClipByGlobalNorm(o, 1.0),
        "ClipByValue(0.01)": lambda o: optim.ClipByValue(o, 0.01),
        "ClipByTensorNorm(1.0)": lambda o: optim.ClipByTensorNorm(o, 1.0),
        "ClipByBlockRMS(1.0)": lambda o: optim.ClipByBlockRMS(o, 1.0),
        "AdaptiveGradClip(0.01)": lambda o: optim.AdaptiveGradClip(o, 0.01),
        "ZeroNaNs": lambda o: optim.ZeroNaNs(o),
        "ApplyIfFinite": lambda o: optim.ApplyIfFinite(o),
    }
    if variant == "groups=[no_decay_1d()]":
        base.groups = [optim.no_decay_1d()]
    elif variant == "state_dtype='bfloat16'":
        base.state_dtype = "bfloat16"
    elif variant != "AdamW":
        return wrappers[variant](base)
    return base


def _measure(variant: str, case: str, steps: int) -> float:
    import numpy as np

    from anyoptim.benchmark import case_shapes

    rng = np.random.default_rng(0)
    shapes = case_shapes(case)
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = {k: (1e-3 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in params.items()}
    opt = make(variant)
    for _ in range(3):
        opt.update(params, grads)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.update(params, grads)
        times.append(time.perf_counter() - start)
    if variant.startswith("GradientAccumulation"):
        return statistics.mean(times) * 1e3
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=None, help="comma-separated subset")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args.steps)))
        return 0
    variants = VARIANTS if args.variants is None else args.variants.split(",")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    cases = args.cases.split(",")
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for case in cases:
            for variant in variants:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, case, "--steps",
                     str(args.steps)],
                    capture_output=True, text=True, env=env, check=True,
                )
                ms = float(out.stdout.strip().splitlines()[-1])
                key = (variant, case)
                best[key] = min(ms, best.get(key, float("inf")))
    rows = []
    for case in cases:
        base = best[("AdamW", case)]
        for variant in variants:
            ms = best[(variant, case)]
            rows.append({"case": case, "variant": variant, "ms": round(ms, 3),
                         "ratio_to_adamw": round(ms / base, 3)})
    print(f"{'case':<5} {'variant':<28} {'ms/step':>9} {'x AdamW':>8}")
    for r in rows:
        print(f"{r['case']:<5} {r['variant']:<28} {r['ms']:>9.3f} {r['ratio_to_adamw']:>8.2f}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"steps": args.steps, "rounds": args.rounds, "results": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
