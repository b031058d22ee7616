"""``anyoptim bench``: a short run of the benchmark against the installed peers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import UsageError, check_writable, emit_json, wrap

EPILOG = """\
examples:
  anyoptim bench                         quick run: cases a, c, small and tiny at 1/4 size
  anyoptim bench --cases c --scale 1     case (c) at full size (2000 tensors of 1000)
  anyoptim bench --full                  what bench/run.py measures (minutes)
  anyoptim bench --json --plot bench.png

cases: (a) one 4096x4096 matrix, (b) a 146-tensor transformer (25.2M), (c) 2000 tensors of
1000 elements, (small) 10 tensors of 10x10 (Python overhead), (tiny) 10,000 tensors of 10
elements (per-tensor overhead). --scale shrinks a, b, c and tiny.
Each variant runs in its own process with the same thread count; figures are medians. The
"limit" variant is a numba kernel over one flat buffer, in place: the memory-bandwidth limit;
the "functional limit" writes new arrays each step. A targets table follows the per-case
tables (at a reduced --scale its ratios are only indicative).
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time one AdamW step: anyoptim next to its peers",
        description=wrap(
            "Time one AdamW step with anyoptim on every installed library next to its peers "
            "(torch fused/foreach, optax, mlx.optimizers) and the memory-bandwidth limit."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("--cases", default=None,
                   help="comma-separated cases (default a,c,small,tiny)")
    p.add_argument("--variants", default="", help="comma-separated variant names (default all)")
    p.add_argument("--scale", type=float, default=None, help="size factor (default 0.25)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads per variant (default 2)")
    p.add_argument("--full", action="store_true", help="all cases at full size, 30 steps")
    p.add_argument("--plot", default=None, metavar="PATH", help="write a PNG of the timings")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import benchmark

    default_cases = ",".join(benchmark.CASES) if args.full else "a,c,small,tiny"
    cases = (args.cases or default_cases).split(",")
    for case in cases:
        if case not in benchmark.CASES:
            raise UsageError(f"unknown case {case!r}; choose from {', '.join(benchmark.CASES)}")
    scale = args.scale if args.scale is not None else (1.0 if args.full else 0.25)
    steps = args.steps if args.steps is not None else (30 if args.full else 10)
    if not 0 < scale <= 1:
        raise UsageError(f"--scale must be in (0, 1], got {scale}")
    variants = [v for v in args.variants.split(",") if v] or None
    unknown = [v for v in variants or [] if v not in benchmark.VARIANTS]
    if unknown:
        raise UsageError(
            f"unknown variant(s) {', '.join(unknown)}; choose from: "
            + "; ".join(benchmark.VARIANTS)
        )
    if args.plot:
        check_writable(args.plot, "plot")
    progress = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    results = benchmark.run_all(cases, variants, scale, args.warmup, steps, args.threads,
                                progress=progress)
    if args.plot:
        benchmark.plot(results, args.plot)
    if args.json:
        emit_json({"machine": benchmark.machine(), "scale": scale, "results": results,
                   "targets": benchmark.evaluate_targets(results)})
    else:
        print(f"{benchmark.machine()}; scale {scale}, {steps} steps, {args.threads} threads")
        print(benchmark.report(results))
    failed = [r for r in results if "error" in r]
    return 1 if failed and len(failed) == len(results) else 0
