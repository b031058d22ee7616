"""anyoptim.torch.AdamW against torch.optim.AdamW, side by side, on the benchmark cases.

    python bench/torch_frontend.py                  # cases a, b, c; 20 timed steps each
    python bench/torch_frontend.py --cases c --steps 50 --out bench/torch_frontend.json

Every variant runs in its own process (2 threads: torch, numba), on float32 CPU tensors with
gradients in place, 3 warm-up steps, then ``--steps`` timed ``optimizer.step()`` calls; a
round's figure is the median. The variants take turns for ``--rounds`` rounds and the best
round counts (other load on the machine only ever slows a round down). Ratios are to ``torch.optim.AdamW(fused=True)``; below 1 is faster.
The cases are anyoptim.benchmark's: (a) one 4096 x 4096 tensor, (b) a 146-tensor transformer
(25.2M parameters), (c) 2000 tensors of 1000.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "torch.optim.AdamW(fused=True)": "fused",
    "torch.optim.AdamW(foreach=True)": "foreach",
    "anyoptim.torch.AdamW": "anyoptim",
    "anyoptim.torch.Optimizer(anyoptim.AdamW)": "wrapper",
}


def _measure(variant: str, case: str, steps: int) -> float:
    import torch

    from anyoptim.benchmark import case_shapes

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in case_shapes(case)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    kw = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
    if variant == "fused":
        opt = torch.optim.AdamW(params, fused=True, **kw)
    elif variant == "foreach":
        opt = torch.optim.AdamW(params, foreach=True, **kw)
    elif variant == "anyoptim":
        import anyoptim.torch

        opt = anyoptim.torch.AdamW(params, **kw)
    else:
        import anyoptim
        import anyoptim.torch

        opt = anyoptim.torch.Optimizer(params, anyoptim.AdamW(1e-3, bias_correction=True))
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args.steps)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    results: dict[str, dict[str, float]] = {}
    for case in args.cases.split(","):
        row = results.setdefault(case, {})
        for _ in range(args.rounds):
            for label, key in VARIANTS.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--steps", str(args.steps), "--child", key, case],
                    capture_output=True, text=True, env=env, check=True)
                ms = float(out.stdout.strip().splitlines()[-1])
                row[label] = min(ms, row.get(label, ms))
    base = "torch.optim.AdamW(fused=True)"
    print(f"| variant | {' | '.join(f'({c}) ms' for c in results)} | "
          f"{' | '.join(f'({c}) ratio' for c in results)} |")
    print("|---" * (1 + 2 * len(results)) + "|")
    for label in VARIANTS:
        ms = " | ".join(f"{results[c][label]:.2f}" for c in results)
        ratio = " | ".join(f"{results[c][label] / results[c][base]:.2f}" for c in results)
        print(f"| {label} | {ms} | {ratio} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"steps": args.steps, "rounds": args.rounds, "ms": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
