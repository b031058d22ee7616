"""Schedule-free AdamW / SGD / RAdam against schedulefree and optax.contrib (differential)."""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim as optim

SHAPES = [(), (3,), (4, 5)]
LR = 2.0**-6  # exact in float32 (the MLX-style learning rate is stored as float32)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


CASES = [
    ("AdamWScheduleFree", "ScheduleFreeAdamW", dict(warmup_steps=10, weight_decay=0.1, r=0.5)),
    ("SGDScheduleFree", "ScheduleFreeSGD", dict(warmup_steps=10, weight_decay=0.1, momentum=0.8)),
    ("RAdamScheduleFree", "ScheduleFreeRAdam", dict(weight_decay=0.1, betas=(0.9, 0.99))),
    ("RAdamScheduleFree", "ScheduleFreeRAdam", dict(silent_sgd_phase=False)),
]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("ref_name,ours_name,kw", CASES)
def test_against_schedulefree(ref_name, ours_name, kw, dtype, tol):
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    import anyoptim.torch as aot

    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    tp = [torch.nn.Parameter(torch.tensor(x)) for x in p0]
    dp = [torch.nn.Parameter(torch.tensor(x)) for x in p0]
    ref = getattr(schedulefree, ref_name)(tp, lr=LR, **kw)
    drop = getattr(aot, ref_name)(dp, lr=LR, **kw)
    ref.train()
    drop.train()
    ours = getattr(optim, ours_name)(learning_rate=LR, **kw)
    params = {f"p{i}": x.copy() for i, x in enumerate(p0)}
    worst = worst_drop = 0.0
    for k in range(60):
        g = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        for a, b, x in zip(tp, dp, g):
            a.grad = torch.tensor(x)
            b.grad = torch.tensor(x)
        ref.step()
        drop.step()
        params = ours.apply_gradients({f"p{i}": x for i, x in enumerate(g)}, params)
        if k % 20 == 19:  # the evaluation points, and back
            ref.eval()
            drop.eval()
            ev = ours.eval_params(params)
            for i, (a, b) in enumerate(zip(tp, dp)):
                worst = max(worst, _rel(ev[f"p{i}"], a.detach().numpy()))
                worst_drop = max(worst_drop, _rel(b.detach().numpy(), a.detach().numpy()))
            ref.train()
            drop.train()
        for i, (a, b) in enumerate(zip(tp, dp)):
            worst = max(worst, _rel(params[f"p{i}"], a.detach().numpy()))
            worst_drop = max(worst_drop, _rel(b.detach().numpy(), a.detach().numpy()))
    assert worst < tol, worst
    assert worst_drop < tol, worst_drop
    assert ref.param_groups[0]["k"] == drop.param_groups[0]["k"]
    assert drop.param_groups[0]["weight_sum"] == pytest.approx(ref.param_groups[0]["weight_sum"],
                                                               rel=1e-12)


def test_torch_step_needs_train_mode():
    torch = pytest.importorskip("torch")
    import anyoptim.torch as aot

    w = torch.nn.Parameter(torch.zeros(2))
    opt = aot.AdamWScheduleFree([w])
    w.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="train"):
        opt.step()


@pytest.mark.parametrize("warmup", [None, 5])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_against_optax_contrib(kind, warmup):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    import anyoptim.optax as aox

    if kind == "adamw":
        ref = optax.contrib.schedule_free_adamw(0.01, warmup_steps=warmup, weight_decay=0.1)
        ours = aox.schedule_free_adamw(0.01, warmup_steps=warmup, weight_decay=0.1)
    else:
        ref = optax.contrib.schedule_free_sgd(0.01, warmup_steps=warmup, weight_decay=0.1)
        ours = aox.schedule_free_sgd(0.01, warmup_steps=warmup, weight_decay=0.1)
    rng = np.random.default_rng(1)
    params = {f"p{i}": jnp.asarray(rng.standard_normal(s), jnp.float32)
              for i, s in enumerate(SHAPES)}
    pa, pb = params, params
    sa, sb = ref.init(pa), ours.init(pb)
    worst = 0.0
    for _ in range(50):
        g = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in params.items()}
        ua, sa = ref.update(g, sa, pa)
        ub, sb = ours.update(g, sb, pb)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
        ea = optax.contrib.schedule_free_eval_params(sa, pa)
        eb = aox.schedule_free_eval_params(sb, pb)
        for k in params:
            worst = max(worst, _rel(pb[k], pa[k]), _rel(eb[k], ea[k]))
    assert worst < 1e-6, worst
    del jax


def test_eval_train_roundtrip_and_state():
    opt = optim.ScheduleFreeAdamW(0.1)
    y = opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
    assert set(opt.state) >= {"step", "learning_rate", "b1", "max_lr", "weight_sum"}
    x = opt.eval_params(y)
    back = opt.train_params(x)
    np.testing.assert_allclose(back["w"], y["w"], rtol=1e-6)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.ScheduleFreeAdamW(warmup_steps=-1)
    with pytest.raises(ValueError, match="momentum"):
        optim.ScheduleFreeSGD(momentum=0.0)
