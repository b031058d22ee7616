"""``anyoptim.optax.muon`` against ``optax.contrib.muon`` (differential).

Each case runs 60 random steps, both transformations under ``jax.jit``, on a tree with a 0-d, a
1-d, a tall and a wide 2-d and a 3-d leaf (the 2-d ones orthogonalised, the others through
AdamW), and compares the parameters after every step: float64 within 1e-12 relative (to the
largest entry of the leaf), float32 within 1e-6. ``LARGEST`` collects the largest error per case
(printed by the last test with ``-s``). The two agree bit for bit in practice: the
Newton-Schulz iteration is evaluated in optax's order (``newton_schulz(scale_first=True)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
contrib = pytest.importorskip("optax.contrib")
if not hasattr(contrib, "muon"):  # pragma: no cover - optax < 0.2.5
    pytest.skip("this optax has no optax.contrib.muon", allow_module_level=True)
import jax.numpy as jnp  # noqa: E402

import anyoptim  # noqa: E402
import anyoptim.optax as ao  # noqa: E402

D = contrib.MuonDimensionNumbers
STEPS = 60
SHAPES = {"scale": (), "enc": {"b": (7,), "w": (5, 3)}, "head": [(4, 9), (2, 3, 4)]}
TOL = {"float64": 1e-12, "float32": 1e-6}
LARGEST: dict[str, float] = {}


def _shapes(make: Any) -> Any:
    return jax.tree.map(make, SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _problem(seed: int, dtype: str) -> tuple[Any, list[Any]]:
    rng = np.random.default_rng(seed)
    p0 = _shapes(lambda s: np.asarray(rng.standard_normal(s)).astype(dtype))
    grads = [_shapes(lambda s: np.asarray(rng.standard_normal(s)).astype(dtype))
             for _ in range(STEPS)]
    grads[3]["enc"]["b"][2] = 0  # an exact zero and a large gradient
    grads[7]["enc"]["w"][0, 0] = 50
    return p0, grads


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30)


def muon_pair(kw: dict[str, Any], key: str, dtype: str, seed: int = 0,
              steps: int = STEPS) -> None:
    """``ao.muon(**kw)`` vs ``optax.contrib.muon(**kw)``, both jitted, step by step."""
    with jax.enable_x64(dtype == "float64"):
        kw = {"learning_rate": 0.02, **kw}
        tx_a, tx_b = ao.muon(**kw), contrib.muon(**kw)
        p0, grads = _problem(seed, dtype)
        pa = pb = jax.tree.map(jnp.asarray, p0)
        sa, sb = tx_a.init(pa), tx_b.init(pb)
        ua_fn, ub_fn = jax.jit(tx_a.update), jax.jit(tx_b.update)
        worst = 0.0
        for gs in grads[:steps]:
            g = jax.tree.map(jnp.asarray, gs)
            ua, sa = ua_fn(g, sa, pa)
            ub, sb = ub_fn(g, sb, pb)
            pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
            for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
                assert x.dtype == y.dtype == np.dtype(dtype)
                worst = max(worst, _rel(x, y))
    LARGEST[f"{key}/{dtype}"] = max(LARGEST.get(f"{key}/{dtype}", 0.0), worst)
    assert worst <= TOL[dtype], (key, dtype, worst)


def _not_first_matrix(updates: Any) -> Any:
    return jax.tree.map(lambda u: u.shape != (5, 3), updates)


CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "nesterov-off": {"nesterov": False},
    "adaptive": {"adaptive": True},
    "adaptive-nesterov-off": {"adaptive": True, "nesterov": False, "beta": 0.9},
    "preset-dion": {"ns_coeffs": "dion"},
    "preset-standard-ns3": {"ns_coeffs": "standard", "ns_steps": 3},
    "per-step-triples": {"ns_coeffs": ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
                                       (3.4445, -4.7750, 2.0315))},
    "coeffs-ns2": {"ns_coeffs": (3.0, -3.2, 1.2), "ns_steps": 2},
    "wd-mask-tree": {"weight_decay": 0.1,
                     "weight_decay_mask": {"scale": True, "enc": {"b": True, "w": False},
                                           "head": [True, True]}},
    "wd-mask-fn": {"weight_decay": 0.1, "weight_decay_mask": _not_first_matrix},
    "wd-schedule": {"weight_decay": optax.linear_schedule(0.0, 0.2, 30)},
    "consistent-rms": {"consistent_rms": 0.2},
    "consistent-rms-adaptive": {"consistent_rms": 0.5, "adaptive": True},
    "lr-schedule": {"learning_rate": optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, STEPS)},
    "adam-options": {"adam_b1": 0.8, "adam_b2": 0.99, "adam_eps_root": 1e-10,
                     "adam_weight_decay": 0.1, "eps": 1e-6,
                     "adam_learning_rate": optax.cosine_decay_schedule(3e-3, STEPS)},
    "dimension-numbers": {"muon_weight_dimension_numbers": {
        "scale": None, "enc": {"b": None, "w": D(1, 0)},
        "head": [D(), D(reduction_axis=(0, 1), output_axis=2)]}},
    "dimension-numbers-batch-fn": {"muon_weight_dimension_numbers": (
        lambda params: jax.tree.map(lambda p: D(1, 2) if p.ndim == 3 else None, params))},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_muon_matches_optax_contrib(case: str, dtype: str) -> None:
    muon_pair(CASES[case], case, dtype)


def test_mu_dtype_bfloat16() -> None:
    muon_pair({"mu_dtype": jnp.bfloat16}, "mu_dtype-bfloat16", "float32", steps=20)
    tx = ao.muon(0.02, mu_dtype=jnp.bfloat16)
    p0, grads = _problem(1, "float32")
    state = tx.init(jax.tree.map(jnp.asarray, p0))
    _, state = jax.jit(tx.update)(grads[0], state, p0)
    bf16 = np.dtype(jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(state.muon.moments["mu"])} == {bf16}
    assert {x.dtype for x in jax.tree.leaves(state.adam.moments["mu"])} == {bf16}


def test_state_layout_and_partition() -> None:
    """Matrices in the Muon state, the other leaves in AdamW's; layout fixed after init."""
    p0, grads = _problem(2, "float32")
    params = jax.tree.map(jnp.asarray, p0)
    tx = ao.muon(0.02)
    target = jax.eval_shape(tx.init, params)
    state = tx.init(params)
    assert [x.shape for x in jax.tree.leaves(state.muon.moments["mu"])] == [(5, 3), (4, 9)]
    assert sorted(x.shape for x in jax.tree.leaves(state.adam.moments["nu"])) == [
        (), (2, 3, 4), (7,)]
    step = jax.jit(tx.update)
    for g in grads[:3]:
        _, state = step(g, state, params)
    assert jax.tree.structure(state) == jax.tree.structure(target)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(target)):
        assert (x.shape, x.dtype) == (y.shape, y.dtype)


def _ours_equal_optax(make: Any, seed: int, steps: int) -> None:
    """``make(muon)`` with ours and optax.contrib's, ``steps`` jitted updates: equal to 1e-6."""
    p0, grads = _problem(seed, "float32")
    params = jax.tree.map(jnp.asarray, p0)
    results = []
    for muon in (ao.muon, contrib.muon):
        tx = make(muon)
        p, s = params, tx.init(params)
        step = jax.jit(tx.update)
        for g in grads[:steps]:
            u, s = step(g, s, p)
            p = optax.apply_updates(p, u)
        results.append(p)
    assert max(_rel(x, y) for x, y in zip(*map(jax.tree.leaves, results))) <= 1e-6


def test_chains_with_optax() -> None:
    _ours_equal_optax(lambda muon: optax.chain(optax.clip_by_global_norm(1.0),
                                               muon(0.02, weight_decay=0.01)), 3, 10)


def test_inject_hyperparams() -> None:
    """Traced hyperparameters (optax.inject_hyperparams, ns_steps static) give optax's result."""
    _ours_equal_optax(lambda muon: optax.inject_hyperparams(muon, static_args=("ns_steps",))(
        learning_rate=0.02, beta=0.9, weight_decay=0.1, consistent_rms=0.2), 5, 5)


def test_mlx_muon_is_from_optimizer() -> None:
    """The old behaviour (MLX's Muon) stays reachable: from_optimizer(anyoptim.Muon)."""
    p0, grads = _problem(4, "float32")
    params = jax.tree.map(jnp.asarray, p0)
    tx = ao.from_optimizer(anyoptim.Muon(0.02))
    p, s = params, tx.init(params)
    for g in grads[:5]:
        u, s = tx.update(jax.tree.map(jnp.asarray, g), s, p)
        p = optax.apply_updates(p, u)
    ref = anyoptim.Muon(0.02)
    q = p0
    for g in grads[:5]:
        q = ref.apply_gradients(g, q)
    assert max(_rel(x, y) for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(q))) <= 1e-6


# ----------------------------------------------------------------------------- bad input
BAD = [
    (dict(preconditioning="aol"), ValueError, r"muon: preconditioning='aol' is not implemented"),
    (dict(preconditioning="spectral"), ValueError, r"preconditioning='spectral' is not impl"),
    (dict(preconditioning="fro"), ValueError, r"preconditioning='fro' is not one of optax's"),
    (dict(ns_coeffs="muon"), ValueError, r"muon: ns_coeffs should be one of \['dion', 'stand"),
    (dict(ns_coeffs=(1.0, 2.0)), ValueError, r"muon: ns_coeffs should be three numbers"),
    (dict(ns_coeffs=((1.0, 2.0, 3.0, 4.0),)), ValueError, r"ns_coeffs should be three numbers"),
    (dict(ns_coeffs=((3.0, -3.0, 1.0),) * 6), ValueError,
     r"ns_coeffs has 6 triples, more than ns_steps=5"),
    (dict(ns_steps=2.5), TypeError, r"muon: ns_steps should be a Python int"),
    (dict(ns_steps=-1), ValueError, r"muon: ns_steps should be >= 0"),
    (dict(beta=1.0), ValueError, r"muon: beta should be in \[0, 1\)"),
    (dict(eps=-1e-8), ValueError, r"muon: eps should be >= 0"),
    (dict(weight_decay="lots"), TypeError, r"muon: weight_decay should be a number"),
    (dict(nesterov="yes"), TypeError, r"muon: nesterov should be True or False"),
    (dict(adaptive=1), TypeError, r"muon: adaptive should be True or False"),
    (dict(adam_b1=1.5), ValueError, r"muon: adam_b1 should be in \[0, 1\)"),
    (dict(adam_b2=-0.1), ValueError, r"muon: adam_b2 should be in \[0, 1\)"),
    (dict(adam_eps_root=-1.0), ValueError, r"muon: adam_eps_root should be >= 0"),
    (dict(adam_learning_rate=-1.0), ValueError, r"muon: adam_learning_rate should be >= 0"),
    (dict(consistent_rms="0.2"), TypeError, r"muon: consistent_rms should be a number"),
    (dict(muon_weight_dimension_numbers=3), TypeError,
     r"muon: muon_weight_dimension_numbers should be None, a tree"),
]


@pytest.mark.parametrize("kw,kind,pattern", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_names_the_parameter(kw: dict[str, Any], kind: type, pattern: str) -> None:
    with pytest.raises(kind, match=pattern):
        ao.muon(0.02, **kw)


def test_bad_dimension_numbers_are_explained() -> None:
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"gives dimension numbers to a leaf of shape \(4,\)"):
        ao.muon(0.02, muon_weight_dimension_numbers={"w": D(), "b": D()}).init(params)
    with pytest.raises(ValueError, match=r"reduction axes \(0,\) and output axes \(0,\)"):
        ao.muon(0.02, muon_weight_dimension_numbers={"w": D(0, -2), "b": None}).init(params)
    with pytest.raises(ValueError, match="muon_weight_dimension_numbers should have the struct"):
        ao.muon(0.02, muon_weight_dimension_numbers={"w": D(), "x": None}).init(params)


def test_update_needs_params() -> None:
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    with pytest.raises(ValueError) as theirs:
        contrib.muon(0.02).update(params, contrib.muon(0.02).init(params), None)
    tx = ao.muon(0.02)
    with pytest.raises(ValueError) as ours:
        tx.update(params, tx.init(params), None)
    assert str(ours.value) == str(theirs.value)


def test_zz_print_largest_errors() -> None:
    for key in sorted(LARGEST):
        print(f"{key:40s} {LARGEST[key]:.3g}")
