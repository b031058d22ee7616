r"""Prodigy against prodigyopt.Prodigy and optax.contrib.prodigy (differential).

The gradients are noisy gradients of a quadratic taken at the reference's parameters (so
that the estimate d grows as in training); 60 steps on a tree of four leaves.

Tolerances. float64: 1e-12 relative on the parameters and on the estimate ``d``. float32
cannot meet 1e-6: the estimate's numerator is :math:`\langle g, x_0 - x\rangle`, a
difference of nearly equal float32 numbers while ``d`` is small, so a one-ulp difference in
``x`` between two implementations (torch's vectorised kernels fuse multiply-adds, anyoptim's
do not; optax's XLA code orders its sums differently) becomes a relative difference of
ulp/|x0 - x| in ``d``, which then feeds back into every later step. The references
themselves are far less exact: prodigyopt in float32 drifts up to 19% (parameters) and 2%
(``d``) from prodigyopt in float64 over these runs, optax up to 64% and 7%. The float32
tests therefore assert fixed bounds (prodigyopt: 2e-4 on the parameters, 2e-6 on ``d``;
largest seen 8.9e-5 and 6.1e-7; optax, whose ``d`` is float32: 5e-3 and 1e-4, largest seen
1.6e-3 and 5.7e-5; in float32 anyoptim also computes the bias corrections' 1 - b^t as
-expm1(t log b), where optax's 1 - b^t loses about four digits: bounds 5e-3 and 1e-4) and that
anyoptim's difference from the float32 reference never exceeds the reference's own
float32-vs-float64 drift.
"""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim as optim

SHAPES = [(), (3,), (4, 5), (2, 3, 2)]
STEPS = 60

CASES = [
    ("default", {}),
    ("bias-correction", dict(use_bias_correction=True, d0=1e-4)),
    ("safeguard-bc-lr", dict(safeguard_warmup=True, use_bias_correction=True, lr=0.5, d0=1e-4)),
    ("decoupled-wd", dict(weight_decay=0.1)),
    ("coupled-wd", dict(weight_decay=0.1, decouple=False)),
    ("growth-beta1-0-coef", dict(growth_rate=1.02, betas=(0.0, 0.99), d_coef=2.0, d0=1e-4)),
    ("beta3-eps", dict(beta3=0.9, eps=1e-6, betas=(0.8, 0.95))),
]


def _check(worst_p, worst_d, dtype, drift_p, drift_d, bounds):
    """float64: 1e-12. float32: the fixed ``bounds`` (see the module docstring), and no more
    than the distance between the reference's own float32 and float64 runs (``drift_*``):
    anyoptim's float32 run is closer to the reference than the reference's own float32
    rounding error."""
    if dtype == np.float64:
        assert worst_p <= 1e-12 and worst_d <= 1e-12, (worst_p, worst_d)
        return
    assert worst_p <= bounds[0] and worst_d <= bounds[1], (worst_p, worst_d)
    assert worst_p <= max(1e-6, drift_p), (worst_p, drift_p)
    assert worst_d <= max(1e-6, drift_d), (worst_d, drift_d)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _gradients(rng, xs, targets, dtype):
    """Noisy gradients of a quadratic at the reference's parameters (the same gradients go
    to every implementation): the estimate d then grows, as in training."""
    return [(2.0 * (np.asarray(x, np.float64) - c) + 0.5 * rng.standard_normal(c.shape))
            .astype(dtype) for x, c in zip(xs, targets)]


def _ours_kwargs(kw):
    kw = dict(kw)
    if "lr" in kw:
        kw["learning_rate"] = kw.pop("lr")
    return kw


def _tree(arrays):
    # a nested tree: two top-level entries, one of them a list
    return {"a": {"w": arrays[0], "b": arrays[1]}, "layers": [arrays[2], arrays[3]]}


def _leaves(tree):
    return [tree["a"]["w"], tree["a"]["b"], tree["layers"][0], tree["layers"][1]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_against_prodigyopt(name, kw, dtype):
    torch = pytest.importorskip("torch")
    prodigyopt = pytest.importorskip("prodigyopt")
    import anyoptim.torch as aot

    rng = np.random.default_rng(1)
    x0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ref_p = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    drop_p = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    shadow_p = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float64)) for x in x0]
    ref = prodigyopt.Prodigy(ref_p, **kw)
    shadow = prodigyopt.Prodigy(shadow_p, **kw)  # the reference in float64
    drop = aot.Prodigy(drop_p, **kw)
    ours = optim.Prodigy(**_ours_kwargs(kw))
    params = _tree([x.copy() for x in x0])
    worst = {"p": 0.0, "d": 0.0, "drop_p": 0.0, "drop_d": 0.0, "ref_p": 0.0, "ref_d": 0.0}
    target = [rng.standard_normal(s) for s in SHAPES]
    for _ in range(STEPS):
        g = _gradients(rng, [a.detach().numpy() for a in ref_p], target, dtype)
        for a, b, c, x in zip(ref_p, drop_p, shadow_p, g):
            a.grad = torch.tensor(x)
            b.grad = torch.tensor(x)
            c.grad = torch.tensor(x, dtype=torch.float64)
        ref.step()
        drop.step()
        shadow.step()
        params = ours.apply_gradients(_tree(g), params)
        d_ref = ref.param_groups[0]["d"]
        worst["ref_d"] = max(worst["ref_d"], abs(shadow.param_groups[0]["d"] - d_ref) / d_ref)
        for a, c in zip(ref_p, shadow_p):
            worst["ref_p"] = max(worst["ref_p"], _rel(c.detach().numpy(), a.detach().numpy()))
        worst["d"] = max(worst["d"], abs(float(ours.state["d"]) - d_ref) / d_ref)
        worst["drop_d"] = max(worst["drop_d"], abs(drop.param_groups[0]["d"] - d_ref) / d_ref)
        for a, b, mine in zip(ref_p, drop_p, _leaves(params)):
            worst["p"] = max(worst["p"], _rel(mine, a.detach().numpy()))
            worst["drop_p"] = max(worst["drop_p"], _rel(b.detach().numpy(), a.detach().numpy()))
    assert d_ref > 1.5 * ref.param_groups[0]["d0"], "the estimate should have grown"
    assert ours.state["d"].dtype == np.float64
    for who in ("", "drop_"):
        _check(worst[who + "p"], worst[who + "d"], dtype, worst["ref_p"], worst["ref_d"],
               (2e-4, 2e-6))
    assert drop.param_groups[0]["k"] == ref.param_groups[0]["k"] == STEPS


def test_drop_in_resumes_from_a_prodigyopt_state_dict():
    torch = pytest.importorskip("torch")
    prodigyopt = pytest.importorskip("prodigyopt")
    import anyoptim.torch as aot

    rng = np.random.default_rng(2)
    x0 = [rng.standard_normal(s) for s in SHAPES]
    x0[1][:] = 0.0  # prodigyopt stores p0 = tensor(0) for an all-zero parameter
    ref_p = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    ref = prodigyopt.Prodigy(ref_p, weight_decay=0.05, use_bias_correction=True)
    target = [rng.standard_normal(s) for s in SHAPES]
    for _ in range(25):
        g = _gradients(rng, [a.detach().numpy() for a in ref_p], target, np.float64)
        for a, x in zip(ref_p, g):
            a.grad = torch.tensor(x)
        ref.step()
    assert ref.state[ref_p[1]]["p0"].dim() == 0
    drop_p = [torch.nn.Parameter(a.detach().clone()) for a in ref_p]
    drop = aot.Prodigy(drop_p, weight_decay=0.05, use_bias_correction=True)
    drop.load_state_dict(ref.state_dict())
    for _ in range(25):
        g = _gradients(rng, [a.detach().numpy() for a in ref_p], target, np.float64)
        for a, b, x in zip(ref_p, drop_p, g):
            a.grad = torch.tensor(x)
            b.grad = torch.tensor(x)
        ref.step()
        drop.step()
    for a, b in zip(ref_p, drop_p):
        assert _rel(b.detach().numpy(), a.detach().numpy()) <= 1e-12
    assert abs(drop.param_groups[0]["d"] / ref.param_groups[0]["d"] - 1) <= 1e-12
    # and the drop-in's own state dict has prodigyopt's layout (flattened s and p0)
    saved = drop.state_dict()
    assert set(saved["state"][0]) == {"step", "s", "p0", "exp_avg", "exp_avg_sq"}
    assert tuple(saved["state"][2]["s"].shape) == (20,)
    assert saved["state"][0]["step"] == 50
    back = prodigyopt.Prodigy([torch.nn.Parameter(b.detach().clone()) for b in drop_p])
    back.load_state_dict(saved)  # prodigyopt reads it too


def test_drop_in_signature_is_prodigyopt_s():
    import inspect

    pytest.importorskip("torch")
    prodigyopt = pytest.importorskip("prodigyopt")
    import anyoptim.torch as aot

    ours = inspect.signature(aot.Prodigy)
    ref = inspect.signature(prodigyopt.Prodigy)
    assert [(p.name, p.default) for p in ours.parameters.values()] == \
        [(p.name, p.default) for p in ref.parameters.values()]


OPTAX_CASES = [
    ("default", {}),
    ("wd-safeguard-lr", dict(weight_decay=0.1, safeguard_warmup=True, learning_rate=0.5,
                             estim_lr0=1e-3)),
    ("schedule-betas-beta3-d0", dict(schedule=True, betas=(0.8, 0.99), beta3=0.9,
                                     estim_lr0=1e-4, estim_lr_coef=1.5, eps=1e-6)),
]


@pytest.mark.parametrize("real", ["float64", "float32"])
@pytest.mark.parametrize("name,kw", OPTAX_CASES, ids=[c[0] for c in OPTAX_CASES])
def test_against_optax_contrib(name, kw, real):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    import anyoptim.optax as aox

    kw = dict(kw)
    if kw.pop("schedule", False):
        base = optax.linear_schedule(1.0, 0.1, STEPS)
        # optax's int32 count would give a float32 learning rate even under x64
        kw["learning_rate"] = lambda count: base(jnp.asarray(count, jnp.float64)
                                                 if real == "float64" else count)
    with jax.enable_x64(real == "float64"):
        dt = np.float64 if real == "float64" else np.float32
        rng = np.random.default_rng(3)
        params = {f"p{i}": jnp.asarray(rng.standard_normal(s).astype(dt))
                  for i, s in enumerate(SHAPES)}
        ref = optax.contrib.prodigy(**kw)
        mine = aox.prodigy(**kw)
        sa, sb = ref.init(params), mine.init(params)
        pa = pb = params
        worst_p = worst_d = 0.0
        target = [rng.standard_normal(s) for s in SHAPES]
        trajectory = []
        for _ in range(STEPS):
            g = dict(zip(params, map(jnp.asarray, _gradients(rng, list(pa.values()), target, dt))))
            ua, sa = ref.update(g, sa, pa)
            ub, sb = mine.update(g, sb, pb)
            pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
            for k in pa:
                assert pb[k].dtype == pa[k].dtype
                worst_p = max(worst_p, _rel(pb[k], pa[k]))
            d_ref = float(sa.estim_lr)
            worst_d = max(worst_d, abs(float(sb["d"]) - d_ref) / d_ref)
            trajectory.append((g, {k: np.asarray(v) for k, v in pa.items()}, d_ref))
        assert d_ref > 1.5 * kw.get("estim_lr0", 1e-6)
    drift_p = drift_d = 0.0
    if real == "float32":  # the reference's own float32 rounding error
        with jax.enable_x64(True):
            wide = {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in params.items()}
            state = ref.init(wide)
            for g, p32, d32 in trajectory:
                u, state = ref.update({k: jnp.asarray(np.asarray(v, np.float64))
                                       for k, v in g.items()}, state, wide)
                wide = optax.apply_updates(wide, u)
                drift_p = max(drift_p, *(_rel(wide[k], p32[k]) for k in wide))
                drift_d = max(drift_d, abs(float(state.estim_lr) - d32) / d32)
    _check(worst_p, worst_d, np.dtype(real).type, drift_p, drift_d, (5e-3, 1e-4))


def test_optax_factory_signature():
    import inspect

    optax = pytest.importorskip("optax")
    import anyoptim.optax as aox

    ours = inspect.signature(aox.prodigy)
    ref = inspect.signature(optax.contrib.prodigy)
    assert [(p.name, p.default) for p in ours.parameters.values()] == \
        [(p.name, p.default) for p in ref.parameters.values()]


@pytest.mark.parametrize("kw,name", [
    (dict(d0=0.0), "d0"), (dict(d_coef=-1.0), "d_coef"), (dict(growth_rate=0.5), "growth_rate"),
    (dict(betas=(0.9, 1.0)), "beta2"), (dict(beta3=1.5), "beta3"), (dict(eps=-1.0), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(decouple=1), "decouple"),
    (dict(learning_rate=-1.0), "learning_rate"),
])
def test_bad_hyperparameters(kw, name):
    with pytest.raises(ValueError, match=name):
        optim.Prodigy(**kw)


@pytest.mark.parametrize("kw,name", [
    (dict(d0=0.0), "d0"), (dict(slice_p=11), "slice_p"), (dict(fsdp_in_use=True), "fsdp_in_use"),
    (dict(growth_rate=0.5), "growth_rate"), (dict(betas=(0.9, 1.5)), "betas"),
])
def test_drop_in_bad_hyperparameters(kw, name):
    torch = pytest.importorskip("torch")
    import anyoptim.torch as aot

    with pytest.raises(ValueError, match=name):
        aot.Prodigy([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_zero_gradients_change_nothing_but_the_step():
    opt = optim.Prodigy(weight_decay=0.1)
    params = {"w": np.ones(3)}
    new = opt.apply_gradients({"w": np.zeros(3)}, params)
    np.testing.assert_array_equal(new["w"], params["w"])
    assert float(opt.state["d"]) == 1e-6 and float(opt.state["d_numerator"]) == 0.0
    assert int(opt.state["step"]) == 1


def test_groups_must_share_the_estimate_hyperparameters():
    opt = optim.Prodigy()
    params = {"a": np.ones(2), "b": np.ones(2)}
    grads = {"a": np.ones(2), "b": np.ones(2)}
    opt.apply_gradients(grads, params)
    before = {k: np.copy(v) for k, v in opt.state.items() if not isinstance(v, dict)}
    with pytest.raises(ValueError, match="d_coef"):
        opt.apply_gradients(grads, params, lambda path: {"d_coef": 2.0} if path == "b" else None)
    for k, v in before.items():
        np.testing.assert_array_equal(opt.state[k], v)
    # weight decay may differ: the sums then cover both groups with their own decay
    opt.apply_gradients(grads, params, lambda path: {"weight_decay": 0.1} if path == "b" else None)
    assert int(opt.state["step"]) == 2


def test_groups_sum_over_every_parameter():
    """Two groups with equal hyperparameters give the same update as one group."""
    params = {"a": np.array([1.0, -2.0]), "b": np.array([0.5, 3.0])}
    one, two = optim.Prodigy(), optim.Prodigy()
    p1 = p2 = params
    rng = np.random.default_rng(4)
    for _ in range(10):
        g = {k: rng.standard_normal(2) for k in params}
        p1 = one.apply_gradients(g, p1)
        # (decouple does nothing without weight decay, but makes "b" a group of its own)
        p2 = two.apply_gradients(g, p2, lambda path: {"decouple": False} if path == "b" else None)
    for k in params:
        np.testing.assert_allclose(p2[k], p1[k], rtol=1e-15)
    assert float(one.state["d"]) == float(two.state["d"])


def test_parameter_groups_against_prodigyopt():
    """Groups with their own weight decay and eps (prodigyopt reads the other settings,
    ``decouple`` included, from the first group): the MLX-style class with per-path
    hyperparameters and the drop-in with groups, against prodigyopt with groups, float64."""
    torch = pytest.importorskip("torch")
    prodigyopt = pytest.importorskip("prodigyopt")
    import anyoptim.torch as aot

    rng = np.random.default_rng(7)
    x0 = [rng.standard_normal(s) for s in SHAPES]

    def groups(ps):
        return [dict(params=ps[:2], weight_decay=0.1, decouple=False),
                dict(params=ps[2:], weight_decay=0.05, eps=1e-6)]

    ref_p = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    drop_p = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    ref = prodigyopt.Prodigy(groups(ref_p), use_bias_correction=True)
    drop = aot.Prodigy(groups(drop_p), use_bias_correction=True)
    ours = optim.Prodigy(use_bias_correction=True, decouple=False)

    def hyper(path):
        return {"weight_decay": 0.1} if path.startswith("a.") else \
            {"weight_decay": 0.05, "eps": 1e-6}

    params = _tree([x.copy() for x in x0])
    target = [rng.standard_normal(s) for s in SHAPES]
    for _ in range(STEPS):
        g = _gradients(rng, [a.detach().numpy() for a in ref_p], target, np.float64)
        for a, b, x in zip(ref_p, drop_p, g):
            a.grad = torch.tensor(x)
            b.grad = torch.tensor(x)
        ref.step()
        drop.step()
        params = ours.apply_gradients(_tree(g), params, hyper)
    d_ref = ref.param_groups[0]["d"]
    assert d_ref > 100 * 1e-6
    assert abs(float(ours.state["d"]) / d_ref - 1) <= 1e-12
    assert abs(drop.param_groups[1]["d"] / d_ref - 1) <= 1e-12
    for a, b, mine in zip(ref_p, drop_p, _leaves(params)):
        assert _rel(mine, a.detach().numpy()) <= 1e-12
        assert _rel(b.detach().numpy(), a.detach().numpy()) <= 1e-12


def test_drop_in_lr_rules():
    torch = pytest.importorskip("torch")
    import anyoptim.torch as aot

    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = aot.Prodigy([dict(params=[a]), dict(params=[b], lr=0.5)])
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    with pytest.raises(RuntimeError, match="lr"):
        opt.step()
    assert opt.param_groups[0]["k"] == 0 and not opt.state  # nothing changed
    frozen = aot.Prodigy([dict(params=[a]), dict(params=[b], lr=0.0)], weight_decay=0.1)
    for _ in range(3):
        a.grad, b.grad = torch.ones(2), torch.ones(2)
        frozen.step()
    assert torch.equal(b.detach(), torch.ones(2))  # a group with lr 0 is left as it is
    assert not torch.equal(a.detach(), torch.ones(2))


def test_all_or_nothing():
    """A failing update (a gradient without a parameter of that shape) or a skipped
    non-finite one leaves d, d_max, d_numerator, the step and every array as they were."""
    opt = optim.Prodigy()
    params = {"a": np.array([1.0, -2.0]), "b": np.ones(3)}
    rng = np.random.default_rng(8)
    for _ in range(3):
        params = opt.apply_gradients({"a": rng.standard_normal(2), "b": rng.standard_normal(3)},
                                     params)
    snapshot = {k: np.copy(v) for k, v in opt.state.items() if not isinstance(v, dict)}
    arrays = {k: {n: np.copy(x) for n, x in v.items()} for k, v in opt.state.items()
              if isinstance(v, dict)}
    with pytest.raises(ValueError):
        opt.apply_gradients({"a": np.ones(2), "b": np.ones(4)}, params)
    opt.skip_nonfinite = True
    new = opt.apply_gradients({"a": np.array([np.nan, 1.0]), "b": np.ones(3)}, params)
    np.testing.assert_array_equal(new["a"], params["a"])
    assert int(opt.state["skipped_steps"]) == 1
    for k, v in snapshot.items():
        np.testing.assert_array_equal(opt.state[k], v, err_msg=k)
    for k, v in arrays.items():
        for n, x in v.items():
            np.testing.assert_array_equal(opt.state[k][n], x, err_msg=f"{k}.{n}")


def test_drop_in_resumes_bit_for_bit_from_its_own_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    import anyoptim.torch as aot

    rng = np.random.default_rng(9)
    x0 = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    a = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    b = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    oa = aot.Prodigy(a, weight_decay=0.1, use_bias_correction=True)
    ob = aot.Prodigy(b, weight_decay=0.1, use_bias_correction=True)
    target = [rng.standard_normal(s) for s in SHAPES]
    for t in range(10):
        g = _gradients(rng, [x.detach().numpy() for x in a], target, np.float32)
        for x, y, gi in zip(a, b, g):
            x.grad = torch.tensor(gi)
            y.grad = torch.tensor(gi)
        oa.step()
        ob.step()
        if t == 4:
            path = tmp_path / "prodigy.pt"
            torch.save(ob.state_dict(), path)
            ob = aot.Prodigy(b, weight_decay=0.1, use_bias_correction=True)
            ob.load_state_dict(torch.load(path, weights_only=True))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert oa.param_groups[0]["d"] == ob.param_groups[0]["d"]
