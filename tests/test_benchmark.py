"""The benchmark harness (``anyoptim.benchmark``): cases, variants, limit kernels, targets.

These check the harness itself, not anyoptim's speed: the timed runs use the limit variants
only (they do not depend on anyoptim's optimizers) at a tiny scale.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from anyoptim import benchmark as bm
from anyoptim.benchmark import _measure

HAS_NUMBA = importlib.util.find_spec("numba") is not None

# Names that reports, scripts and earlier results refer to: they must not change.
STABLE_NAMES = {
    "limit (numba flat buffer)",
    "limit functional (numba flat buffer into new arrays)",
    "numpy hand-written in place",
    "anyoptim numpy update",
    "anyoptim numpy apply_gradients",
    "torch AdamW fused",
    "torch AdamW foreach",
    "anyoptim torch update",
    "anyoptim torch apply_gradients",
    "optax adamw jit+donate",
    "anyoptim jax pure_step jit+donate",
    "mlx.optimizers eager",
    "mlx.optimizers compiled",
    "anyoptim mlx eager",
    "anyoptim mlx compiled",
}


def test_variant_names_are_stable_unique_and_listable() -> None:
    assert set(bm.VARIANTS) == STABLE_NAMES
    lowered = [v.lower() for v in bm.VARIANTS]
    assert len(set(lowered)) == len(lowered)
    for name in bm.VARIANTS:
        assert "," not in name  # --variants is comma-separated
        assert name == name.strip()
    assert bm.LIMIT in bm.VARIANTS and bm.FUNCTIONAL_LIMIT in bm.VARIANTS
    for target in bm.TARGETS:
        assert target.variant in bm.VARIANTS and target.reference in bm.VARIANTS
        assert target.case in bm.CASES


def test_installed_follows_the_required_module(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bm.installed("anyoptim numpy update")
    assert not bm.installed("no such variant")
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "torch" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    assert not bm.installed("torch AdamW fused")
    assert not bm.installed("anyoptim torch apply_gradients")
    assert bm.installed("anyoptim numpy apply_gradients")


def test_cases_and_their_scaling() -> None:
    assert bm.case_shapes("tiny") == [(10,)] * 10_000
    assert bm.case_shapes("tiny", 0.25) == [(10,)] * 2_500
    assert bm.case_shapes("c", 0.25) == [(1000,)] * 500
    assert len(bm.case_shapes("b")) == 146
    assert bm.case_shapes("small", 0.25) == [(10, 10)] * 10
    with pytest.raises(ValueError, match="tiny"):
        bm.case_shapes("huge")


def _reference_adamw(p, g, m, v):  # type: ignore[no-untyped-def]
    lr, b1, omb1, b2, omb2, eps, decay = _measure._kernel_args()
    m = b1 * m + omb1 * g
    v = b2 * v + omb2 * (g * g)
    return p * decay - lr * m / (np.sqrt(v) + eps), m, v


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
@pytest.mark.parametrize("parallel", [False, True])
def test_functional_limit_kernel_matches_in_place_and_leaves_inputs(parallel: bool) -> None:
    in_place, into = bm.limit_kernels(parallel)
    rng = np.random.default_rng(1)
    p0, g = (rng.standard_normal(3001, dtype=np.float32) for _ in range(2))
    p1, m1, v1 = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    p2, m2, v2 = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    pr, mr, vr = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for _ in range(3):
        in_place(p1, g, m1, v1, *_measure._kernel_args())
        outs = tuple(np.empty_like(a) for a in (p2, m2, v2))
        before = (p2.copy(), m2.copy(), v2.copy())
        into(p2, g, m2, v2, *outs, *_measure._kernel_args())
        for old, now in zip(before, (p2, m2, v2)):
            np.testing.assert_array_equal(old, now)  # inputs untouched
        p2, m2, v2 = outs
        pr, mr, vr = _reference_adamw(pr, g, mr, vr)
    for a, b in ((p1, p2), (m1, m2), (v1, v2)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(p2, pr, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v2, vr, rtol=1e-6)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_functional_limit_variant_allocates_and_advances() -> None:
    params, grads = _measure._host_tree("small", 1.0)
    step = bm.VARIANTS[bm.FUNCTIONAL_LIMIT][2](params, grads)
    step()
    step()  # runs repeatedly on its own outputs


def _row(case: str, variant: str, ms: float, tensors: int = 1, **extra: object) -> dict:
    return {"case": case, "variant": variant, "median_ms": ms, "tensors": tensors,
            "params": tensors, "peak_rss_growth_kib": 0, **extra}


def test_targets_are_the_ones_issue_11_names() -> None:
    bounds = {(t.case, t.variant, t.reference): (t.bound, t.unit) for t in bm.TARGETS}
    limit, flimit, fused = bm.LIMIT, bm.FUNCTIONAL_LIMIT, "torch AdamW fused"
    expected = {
        ("a", "anyoptim numpy update", limit): 1.15, ("b", "anyoptim numpy update", limit): 1.15,
        ("c", "anyoptim numpy update", limit): 2.0,
        ("a", "anyoptim numpy apply_gradients", flimit): 1.2,
        ("b", "anyoptim numpy apply_gradients", flimit): 1.2,
        ("c", "anyoptim numpy apply_gradients", flimit): 3.0,
        ("a", "anyoptim torch update", fused): 1.05, ("b", "anyoptim torch update", fused): 1.05,
        ("c", "anyoptim torch update", fused): 1.0,
    }
    for case in "abc":
        expected[(case, "anyoptim torch apply_gradients", fused)] = 2.0
    for key, bound in expected.items():
        assert bounds[key] == (bound, "x"), key
    assert bounds[("tiny", "anyoptim numpy update", limit)] == (0.5, "us/tensor")


def test_evaluate_targets_ratios_verdicts_and_gaps() -> None:
    results = [
        _row("a", bm.LIMIT, 10.0),
        _row("a", bm.FUNCTIONAL_LIMIT, 12.0),
        _row("a", "anyoptim numpy update", 11.0),  # 1.10x <= 1.15x: met
        _row("a", "anyoptim numpy apply_gradients", 15.0),  # 1.25x > 1.2x: not met
        _row("a", "torch AdamW fused", 10.0),
        {"case": "a", "variant": "anyoptim torch update", "error": "boom"},
        _row("tiny", bm.LIMIT, 0.01, tensors=10_000),
        _row("tiny", "anyoptim numpy update", 4.01, tensors=10_000),  # 0.4 µs/tensor
    ]
    rows = bm.evaluate_targets(results)
    assert {r["case"] for r in rows} == {"a", "tiny"}  # cases not run are left out
    got = {(r["case"], r["variant"]): r for r in rows}
    update = got[("a", "anyoptim numpy update")]
    assert update["measured"] == pytest.approx(1.1) and update["met"] is True
    apply = got[("a", "anyoptim numpy apply_gradients")]
    assert apply["measured"] == pytest.approx(1.25) and apply["met"] is False
    assert apply["reference"] == bm.FUNCTIONAL_LIMIT
    failed = got[("a", "anyoptim torch update")]
    assert failed["met"] is None and "failed" in failed["note"]
    not_run = got[("a", "anyoptim jax pure_step jit+donate")]
    assert not_run["met"] is None and "not run" in not_run["note"]
    tiny = got[("tiny", "anyoptim numpy update")]
    assert tiny["measured"] == pytest.approx(0.4) and tiny["met"] is True
    json.dumps(rows)  # goes into results.json as it is

    text = bm.targets_table(rows)
    assert "| target | case | measured | target | verdict |" in text
    assert "1.10x | ≤ 1.15x | met" in text
    assert "1.25x | ≤ 1.2x | **not met**" in text
    assert "0.40 µs | ≤ 0.5 µs | met" in text
    assert "not measured" in text
    assert bm.targets_table([]) == ""


def test_report_shows_per_tensor_overhead_and_targets_after_the_cases() -> None:
    results = [
        _row("tiny", bm.LIMIT, 0.01, tensors=10_000),
        _row("tiny", "anyoptim numpy update", 3.01, tensors=10_000),
        _row("c", bm.LIMIT, 0.3, tensors=2000),
    ]
    text = bm.report(results)
    assert text.index("**Case (c)**") < text.index("**Case (tiny)**") < text.index("**Targets**")
    assert "| anyoptim numpy update | numpy | 3.01 | 0% |  | 0.30 |" in text


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_run_writes_targets_into_results_json(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "res"
    code = bm.main(["--cases", "tiny", "--scale", "0.01", "--steps", "3", "--warmup", "1",
                    "--variants", f"{bm.LIMIT},{bm.FUNCTIONAL_LIMIT}", "--out", str(out)])
    assert code == 0
    data = json.loads((tmp_path / "res.json").read_text())
    rows = {r["variant"]: r for r in data["results"]}
    assert set(rows) == {bm.LIMIT, bm.FUNCTIONAL_LIMIT}
    for row in rows.values():
        assert "error" not in row, row
        assert row["tensors"] == 100 and row["params"] == 1000 and row["median_ms"] > 0
    (target,) = data["targets"]
    assert target["case"] == "tiny" and target["met"] is None  # anyoptim was not run
    md = (tmp_path / "res.md").read_text()
    assert "**Case (tiny)**" in md and "**Targets**" in md


def test_run_rejects_unknown_cases_and_variants(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bm.main(["--cases", "huge"])
    assert "huge" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bm.main(["--variants", "nope"])
    assert "nope" in capsys.readouterr().err


def test_tiny_runs_jax_and_mlx_only_when_asked_for() -> None:
    default = bm.variants_for("tiny")
    assert bm.LIMIT in default and "anyoptim numpy update" in default
    assert not [v for v in default if bm.VARIANTS[v][0] in ("jax", "mlx")]
    assert bm.variants_for("c") == [v for v in bm.VARIANTS if bm.installed(v)]
    asked = ["optax adamw jit+donate", bm.LIMIT]
    assert bm.variants_for("tiny", asked) == [v for v in asked if bm.installed(v)]


def _recording_variants(log: list[str]) -> dict[str, tuple[str, str, object]]:
    """Two fake variants whose steps append their name to ``log``."""

    def builder(name: str) -> object:
        def build(params: dict, grads: dict) -> object:
            assert params and grads
            return lambda: log.append(name)

        return build

    return {"A": ("numpy", "numpy", builder("A")), "B": ("numpy", "numpy", builder("B"))}


def test_measure_paired_alternates_blocks_and_times_each_step_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []
    monkeypatch.setattr(_measure, "VARIANTS", _recording_variants(log))
    rows = _measure.measure_paired(["A", "B"], "small", 1.0, warmup=2, steps=7, block=3)
    assert [r["variant"] for r in rows] == ["A", "B"]
    assert all(r["steps"] == 7 and r["median_ms"] >= 0 and r["tensors"] == 10 for r in rows)
    # warm-up of each, then rounds of (1 untimed + a block) per variant; who starts rotates
    # and the last block is short (7 = 3 + 3 + 1)
    expected = (["A"] * 2 + ["B"] * 2 + ["A"] * 4 + ["B"] * 4 + ["B"] * 4 + ["A"] * 4
                + ["A"] * 2 + ["B"] * 2)
    assert log == expected


def test_measure_paired_keeps_its_variants_apart_in_the_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    times = iter(range(1000))
    monkeypatch.setattr(_measure.time, "perf_counter", lambda: float(next(times)))
    log: list[str] = []
    monkeypatch.setattr(_measure, "VARIANTS", _recording_variants(log))
    rows = _measure.measure_paired(["A", "B"], "small", 1.0, warmup=0, steps=4, block=2)
    # every timed step takes exactly one tick of the fake clock: 1 ms after scaling
    assert [r["median_ms"] for r in rows] == [1e3, 1e3]
    assert [r["min_ms"] for r in rows] == [1e3, 1e3]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_paired_run_measures_all_variants_in_each_process(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "res"
    code = bm.main(["--cases", "tiny", "--scale", "0.01", "--steps", "4", "--warmup", "1",
                    "--variants", f"{bm.LIMIT},anyoptim numpy update", "--paired",
                    "--block", "2", "--repeats", "2", "--out", str(out)])
    assert code == 0
    data = json.loads((tmp_path / "res.json").read_text())
    assert data["paired"] is True
    rows = {r["variant"]: r for r in data["results"]}
    assert set(rows) == {bm.LIMIT, "anyoptim numpy update"}
    for name, row in rows.items():
        assert "error" not in row, row
        assert row["steps"] == 4 and len(row["process_medians_ms"]) == 2
        assert row["paired_with"] == [v for v in rows if v != name]
    assert data["targets"][0]["measured"] is not None
    assert "paired" in (tmp_path / "res.md").read_text().splitlines()[0]


def test_run_all_reports_a_failed_paired_child_for_each_of_its_variants() -> None:
    names = ["numpy hand-written in place", "anyoptim numpy update"]
    rows = bm.run_all(["nope"], names, steps=1, warmup=0, paired=True, block=1)
    assert [r["variant"] for r in rows] == names
    for row in rows:
        assert "unknown case 'nope'" in row["error"], row
    with pytest.raises(ValueError, match="block"):
        bm.run_all(["small"], names, block=0, paired=True)


def test_run_rejects_bad_counts(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--block", "--repeats", "--steps"):
        with pytest.raises(SystemExit):
            bm.main(["--cases", "small", flag, "0"])
        assert f"--{flag[2:]} must be at least 1" in capsys.readouterr().err
