"""The benchmark's report: per-case tables, the performance targets and a plot."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

from ._measure import BYTES_PER_PARAM, CASES, FUNCTIONAL_LIMIT, LIMIT, VARIANTS


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
