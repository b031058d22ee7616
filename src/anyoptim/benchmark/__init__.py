"""Side-by-side timing of one AdamW step: anyoptim on each library next to its peers.

Every variant runs in its own process (so libraries do not share thread pools or caches),
with the same thread count, separate warm-up steps and per-step timing; the figure reported
is the median. With ``paired``, the variants of one run share each process instead and take
turns in short blocks of steps, for ratios between variants of one library that the
machine's drift would otherwise blur. Two numba kernels over one flat buffer set the bar for
NumPy:

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
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ._measure import (
    BYTES_PER_PARAM,
    CASES,
    FUNCTIONAL_LIMIT,
    LIMIT,
    NUMBA_VARIANTS,
    ON_REQUEST_ONLY,
    PARALLEL_MIN,
    VARIANTS,
    case_shapes,
    installed,
    limit_kernels,
    measure,
    measure_paired,
    settle_numba_threads,
    variants_for,
)
from ._report import TARGETS, Target, evaluate_targets, machine, plot, report, table, targets_table

__all__ = [
    "BYTES_PER_PARAM",
    "CASES",
    "FUNCTIONAL_LIMIT",
    "LIMIT",
    "NUMBA_VARIANTS",
    "ON_REQUEST_ONLY",
    "PARALLEL_MIN",
    "TARGETS",
    "VARIANTS",
    "Target",
    "case_shapes",
    "evaluate_targets",
    "installed",
    "limit_kernels",
    "machine",
    "main",
    "measure",
    "measure_paired",
    "plot",
    "report",
    "run_all",
    "settle_numba_threads",
    "table",
    "targets_table",
    "variants_for",
]


def _counts_error(repeats: int, steps: int, block: int) -> str:
    """Why these counts cannot be run ("" if they can)."""
    bad = [f"--{name} must be at least 1, got {value}"
           for name, value in (("repeats", repeats), ("steps", steps), ("block", block))
           if value < 1]
    return "; ".join(bad)


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS"):
        env[var] = str(threads)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen=true "
                        f"intra_op_parallelism_threads={threads}").strip()
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
    return env


# A child runs _measure.py by path rather than as a module of anyoptim, so that a peer's process
# never imports the anyoptim package (nothing of it is loaded where it is not measured, and a
# broken anyoptim build fails only the anyoptim variants).
_CHILD = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_measure.py")]


def _child(variants: list[str], case: str, scale: float, warmup: int, steps: int,
           threads: int, block: int) -> tuple[list[dict[str, Any]] | None, str]:
    """Run one child process measuring ``variants`` (several: paired); (rows, "") or
    (None, the child's last line of error output)."""
    cmd = [*_CHILD, "--case", case, "--scale", str(scale), "--warmup", str(warmup),
           "--steps", str(steps), "--block", str(block)]
    for variant in variants:
        cmd += ["--variant", variant]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(threads),
                          check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return None, tail[0]
    rows: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in rows:
        row["process_s"] = round(wall, 2)  # the whole child: start, build, all steps
    return rows, ""


def run_all(
    cases: list[str],
    variants: list[str] | None = None,
    scale: float = 1.0,
    warmup: int = 5,
    steps: int = 30,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
    repeats: int = 1,
    paired: bool = False,
    block: int = 5,
) -> list[dict[str, Any]]:
    """Measure the variants on every case, each in its own subprocess.

    ``variants`` None: every installed variant (see :func:`variants_for` for the exceptions).

    With ``repeats`` > 1 every variant runs in that many separate processes, interleaved
    (all variants once, then all again, ...), and the median of the per-process medians is
    reported: where the memory of a process lands (huge pages or not, which cache lines) moves a
    single process's figure by up to tens of percent on a shared machine.

    With ``paired``, each of the ``repeats`` processes runs all the chosen variants of a case
    instead, taking turns in blocks of ``block`` timed steps (:func:`measure_paired`; the
    variant that starts rotates between processes). Pick variants of one library for it.
    """
    error = _counts_error(repeats, steps, block)
    if error:
        raise ValueError(error)
    results = []
    for case in cases:
        chosen = variants_for(case, variants)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in chosen}
        errors: dict[str, str] = {}
        for r in range(repeats):
            turn = r % len(chosen) if chosen else 0
            groups = [chosen[turn:] + chosen[:turn]] if paired and chosen else [[v] for v in chosen]
            for group in groups:
                group = [v for v in group if v not in errors]
                if not group:
                    continue
                if progress:
                    progress(f"case {case}: {' + '.join(group)}"
                             + (f" ({r + 1}/{repeats})" if repeats > 1 else ""))
                rows, error = _child(group, case, scale, warmup, steps, threads, block)
                if rows is None:
                    errors.update(dict.fromkeys(group, error))
                    continue
                for row in rows:
                    runs[row["variant"]].append(row)
        for variant in chosen:
            if variant in errors:
                results.append({"variant": variant, "case": case, "error": errors[variant]})
                continue
            per_process = sorted(runs[variant], key=lambda x: x["median_ms"])
            row = dict(per_process[len(per_process) // 2])
            row["process_medians_ms"] = [x["median_ms"] for x in runs[variant]]
            if paired:
                row["paired_with"] = [v for v in chosen if v != variant]
            results.append(row)
    return results


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
    parser.add_argument("--paired", action="store_true",
                        help="run the chosen variants together in each process, taking turns "
                             "in blocks of --block steps (for variants of one library)")
    parser.add_argument("--block", type=int, default=5, help="timed steps per turn (--paired)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES] + [
        v for v in args.variants.split(",") if v and v not in VARIANTS]
    if unknown:
        parser.error(f"unknown case(s)/variant(s): {', '.join(unknown)}; cases: "
                     f"{', '.join(CASES)}; variants: {'; '.join(VARIANTS)}")
    error = _counts_error(args.repeats, args.steps, args.block)
    if error:
        parser.error(error)
    variants = [v for v in args.variants.split(",") if v] or None
    results = run_all(cases, variants, args.scale, args.warmup, args.steps,
                      args.threads, progress=lambda s: print(s, file=sys.stderr, flush=True),
                      repeats=args.repeats, paired=args.paired, block=args.block)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    how = (f"{args.repeats} process(es), each running all variants of a case in turns of "
           f"{args.block} timed steps (paired; median of the per-process medians)"
           if args.paired else
           f"{args.repeats} process(es) per variant (median of the per-process medians)")
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, {args.threads} threads, "
              f"{args.steps} timed steps after {args.warmup} warm-up steps, {how}.\n")
    text = header + report(results)
    with open(args.out + ".md", "w") as fh:
        fh.write(text + "\n")
    with open(args.out + ".json", "w") as fh:
        json.dump({"machine": machine(), "paired": args.paired, "results": results,
                   "targets": evaluate_targets(results)}, fh, indent=1)
    plot(results, args.out + ".png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
