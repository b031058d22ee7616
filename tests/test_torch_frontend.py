"""anyoptim.torch: genuine torch.optim optimizers that change no number beyond rounding, and
the contracts of the stacks that use them (LR schedulers, GradScaler, torch.compile, distributed
checkpoint, nanoGPT-style loops, Hugging Face Trainer, Lightning)."""

from __future__ import annotations

import copy
import io
import math
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import anyoptim  # noqa: E402
import anyoptim.torch as at  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- helpers
SHAPES = ((6, 4), (4,), (3, 2, 2), (1,))


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=dtype)) for s in SHAPES]


def _grads(dtype: torch.dtype, steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, generator=g, dtype=dtype) for s in SHAPES] for _ in range(steps)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the tensor's scale."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.abs().max().item() or 1.0
    return (a - b).abs().max().item() / scale


def _max_rel(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    return max(_rel(a, b) for a, b in zip(xs, ys))


def _drive(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
           grads: list[list[torch.Tensor]], lr_at=None) -> None:
    """Step with the given gradients; the last parameter has no gradient at step 3 (so its
    per-parameter step lags behind) and the learning rate is rewritten every step."""
    for t, gs in enumerate(grads):
        for i, (p, g) in enumerate(zip(params, gs)):
            p.grad = None if (t == 3 and i == len(params) - 1) else g.clone()
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        opt.step()


TOL = {torch.float32: 1e-6, torch.float64: 1e-12}

# name: (torch.optim factory, anyoptim.torch factory), the same keywords for both
PAIRS = {
    "AdamW": ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    "AdamW-defaults": ("AdamW", {}),
    "Adam": ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    "Adam-amsgrad-maximize": ("Adam", dict(lr=1e-2, amsgrad=True, maximize=True)),
    "Adam-decoupled": ("Adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    "SGD": ("SGD", dict(lr=1e-2)),
    "SGD-momentum-dampening": ("SGD", dict(lr=1e-2, momentum=0.9, dampening=0.3,
                                           weight_decay=0.1)),
    "SGD-nesterov": ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True)),
    "RMSprop": ("RMSprop", {}),
    "RMSprop-centered-momentum": ("RMSprop", dict(momentum=0.9, centered=True,
                                                  weight_decay=0.01)),
    "Adagrad": ("Adagrad", dict(lr_decay=0.01, initial_accumulator_value=0.1,
                                weight_decay=0.01)),
    "Adadelta": ("Adadelta", dict(weight_decay=0.01)),
    "Adamax": ("Adamax", dict(weight_decay=0.01)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(PAIRS))
def test_matches_torch_optim(case: str, dtype: torch.dtype) -> None:
    name, kwargs = PAIRS[case]
    steps = 30
    grads = _grads(dtype, steps)
    base = kwargs.get("lr", getattr(torch.optim, name)([torch.zeros(1)]).defaults["lr"])
    lr_at = (lambda t: base * (1 + 0.5 * math.cos(t))) if "lr" in kwargs else None
    ref_p, ours_p = _params(dtype), _params(dtype)
    ref = getattr(torch.optim, name)(ref_p, foreach=False, **kwargs)
    ours = getattr(at, name)(ours_p, **kwargs)
    assert isinstance(ours, torch.optim.Optimizer)
    _drive(ref, ref_p, grads, lr_at)
    _drive(ours, ours_p, grads, lr_at)
    assert _max_rel(ours_p, ref_p) < TOL[dtype]
    for p, q in zip(ours_p, ref_p):
        mine, theirs = ours.state[p], ref.state[q]
        assert set(mine) == set(theirs)
        for key in theirs:
            if key == "step":
                assert float(mine[key]) == float(theirs[key])
                assert mine[key].dtype == theirs[key].dtype
            else:
                assert _rel(mine[key], theirs[key]) < 100 * TOL[dtype], key


def test_defaults_are_torchs() -> None:
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax"):
        theirs = getattr(torch.optim, name)([torch.zeros(1)]).defaults
        ours = getattr(at, name)([torch.zeros(1)]).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (name, key)
        assert set(theirs) - set(ours) <= {"capturable", "differentiable", "fused", "foreach",
                                           "decoupled_weight_decay"}, name
    assert at.AdaDelta is at.Adadelta


def _core_equal(make_torch, make_core, steps: int = 8) -> None:
    params = _params(torch.float32)
    grads = _grads(torch.float32, steps)
    opt = make_torch(params)
    core = make_core()
    tree = {str(i): p.detach().clone() for i, p in enumerate(_params(torch.float32))}
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        tree = core.apply_gradients({str(i): g for i, g in enumerate(gs)}, tree)
    for i, p in enumerate(params):
        assert _rel(p, tree[str(i)]) < 1e-6


def test_lion_muon_adafactor_follow_anyoptims_rules() -> None:
    _core_equal(lambda ps: at.Lion(ps, lr=1e-2, weight_decay=0.1),
                lambda: anyoptim.Lion(1e-2, weight_decay=0.1))
    _core_equal(lambda ps: at.Muon(ps, lr=2e-2),
                lambda: anyoptim.Muon(2e-2, weight_decay=0.1, adjust_lr="original",
                                      normalize="clamp", decoupled_weight_decay=True,
                                      ns_dtype="bfloat16"))
    _core_equal(lambda ps: at.Adafactor(ps), lambda: anyoptim.Adafactor())
    _core_equal(lambda ps: at.Adafactor(ps, lr=1e-2, relative_step=False, beta1=0.9,
                                        weight_decay=0.1),
                lambda: anyoptim.Adafactor(1e-2, relative_step=False, beta_1=0.9,
                                           weight_decay=0.1))
    opt = at.Muon(_params(torch.float32))  # torch.optim.Muon's defaults
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 0.1


def test_wrapper_runs_the_anyoptim_optimizer_exactly() -> None:
    def multi() -> anyoptim.MultiOptimizer:
        return anyoptim.MultiOptimizer([anyoptim.SGD(0.1, momentum=0.9), anyoptim.Adam(1e-2)],
                                       [lambda path, a: a.ndim == 1])

    _core_equal(lambda ps: at.Optimizer(ps, anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 20))),
                lambda: anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 20)))
    _core_equal(lambda ps: at.Optimizer(ps, multi()), multi)
    params = _params(torch.float32)
    opt = at.Optimizer(params, anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 20)))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(float(anyoptim.cosine_decay(1e-2, 20)(1)))
    with pytest.raises(TypeError, match="anyoptim optimizer"):
        at.Optimizer(params, torch.optim.SGD(params))


def test_wrapper_reads_group_hyperparameters() -> None:
    params = _params(torch.float32)
    opt = at.Optimizer([{"params": params[:2], "weight_decay": 0.0},
                        {"params": params[2:]}], anyoptim.AdamW(1e-2, weight_decay=0.5))
    ref = _params(torch.float32)
    core = anyoptim.AdamW(1e-2, weight_decay=0.5)
    tree = {str(i): p.detach().clone() for i, p in enumerate(ref)}
    for gs in _grads(torch.float32, 3):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        tree = core.apply_gradients({str(i): g for i, g in enumerate(gs)}, tree,
                                    lambda path: {"weight_decay": 0.0} if int(path) < 2 else None)
    for i, p in enumerate(params):
        assert torch.equal(p.detach(), tree[str(i)])


# ----------------------------------------------------------------------------- the contract
def test_super_init_and_param_forms() -> None:
    model = torch.nn.Linear(3, 2)
    for params in (model.parameters(), list(model.named_parameters()),
                   [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}]):
        opt = at.AdamW(params)
        assert isinstance(opt, torch.optim.Optimizer)
        assert hasattr(opt, "_optimizer_step_pre_hooks")
    named = at.AdamW(model.named_parameters())
    assert named.param_groups[0]["param_names"] == ["weight", "bias"]
    assert named.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
    groups = at.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in groups.param_groups] == [0.1, 0.5]
    with pytest.raises(ValueError, match="empty parameter list"):
        at.AdamW([])
    with pytest.raises(TypeError):
        at.AdamW(model.weight)


def test_per_group_hyperparameters_match_torch() -> None:
    grads = _grads(torch.float32, 10)

    def build(cls, params):
        return cls([{"params": params[:2], "weight_decay": 0.0, "betas": (0.8, 0.9)},
                    {"params": params[2:], "lr": 3e-2}], lr=1e-2, weight_decay=0.2)

    a, b = _params(torch.float32), _params(torch.float32)
    ours, ref = build(at.AdamW, a), build(torch.optim.AdamW, b)
    _drive(ours, a, grads)
    _drive(ref, b, grads)
    assert _max_rel(a, b) < 1e-6


def test_closure_is_called_with_gradients_enabled() -> None:
    model = torch.nn.Linear(3, 1)
    opt = at.SGD(model.parameters(), lr=0.1)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = model(torch.ones(2, 3)).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor)
    assert opt.step() is None


def test_parameters_without_grad_are_skipped_and_zero_grad() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = at.AdamW([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert b not in opt.state and torch.equal(b.detach(), torch.ones(2))
    assert float(opt.state[a]["step"]) == 1
    opt.zero_grad(set_to_none=False)
    assert torch.equal(a.grad, torch.zeros(2))
    opt.zero_grad()
    assert a.grad is None


def test_add_param_group_and_step_hooks() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = at.AdamW([a], lr=0.1)
    opt.add_param_group({"params": [b], "lr": 0.2, "weight_decay": 0.0})
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()
    assert seen == ["pre", "post"]
    assert opt.param_groups[1]["lr"] == 0.2 and b in opt.state
    with pytest.raises(ValueError, match=r"param_groups\[2\]: betas\[0\]=1.5"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "betas": (1.5, 0.9)})
    assert len(opt.param_groups) == 2


def test_state_dict_format_and_weights_only_round_trip() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = at.AdamW(model.parameters(), lr=torch.tensor(0.01))
    for _ in range(2):
        model(torch.ones(2, 3)).sum().backward()
        opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3]

    def leaves(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from leaves(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from leaves(v)
        else:
            yield x

    assert all(isinstance(v, (torch.Tensor, int, float, bool, str, type(None)))
               for v in leaves(sd))
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    # our state dict loads into torch.optim.AdamW, and torch's into ours
    ref_model = copy.deepcopy(model)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=0.01, foreach=False)
    ref.load_state_dict(loaded)
    back = at.AdamW(copy.deepcopy(model).parameters())
    back.load_state_dict(ref.state_dict())
    assert float(back.state_dict()["state"][0]["step"]) == 2


def test_torch_state_dict_continues_identically() -> None:
    a, b = _params(torch.float32), _params(torch.float32)
    grads = _grads(torch.float32, 10)
    ref = torch.optim.AdamW(a, lr=1e-2, foreach=False)
    _drive(ref, a, grads[:5])
    ours = at.AdamW(b, lr=1e-2)
    with torch.no_grad():
        for p, q in zip(b, a):
            p.copy_(q)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    _drive(ref, a, grads[5:])
    _drive(ours, b, grads[5:])
    assert _max_rel(b, a) < 1e-6


def test_load_state_dict_checks_shapes_and_changes_nothing() -> None:
    w, v = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(2))
    opt = at.AdamW([w, v])
    w.grad, v.grad = torch.ones(3, 2), torch.ones(2)
    opt.step()
    sd = opt.state_dict()
    swapped = at.AdamW([v, w])
    swapped_state_before = dict(swapped.state)
    with pytest.raises(ValueError) as err:
        swapped.load_state_dict(sd)
    message = str(err.value)
    assert "param_groups[0]['params'][0]" in message
    assert "(3, 2)" in message and "(2,)" in message
    assert dict(swapped.state) == swapped_state_before and not swapped.state
    # torch's own AdamW puts the moments on the wrong tensors without a word
    torch.optim.AdamW([v, w]).load_state_dict(sd)


def test_load_state_dict_keeps_saved_dtypes() -> None:
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float32))
    opt = at.AdamW([w], lr=0.1)
    w.grad = torch.ones(4)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].double()
    opt.load_state_dict(sd)
    assert opt.state[w]["exp_avg"].dtype == torch.float64
    assert opt.state[w]["step"].dtype == torch.float32
    w.grad = torch.ones(4)
    opt.step()  # the mixed-dtype leaf takes the reference path, results keep their dtypes
    assert opt.state[w]["exp_avg"].dtype == torch.float64 and w.dtype == torch.float32
    assert opt.state_dict()["state"][0]["exp_avg"].dtype == torch.float64


def test_deepcopy_and_pickle_keep_configuration_and_schedules() -> None:
    for make in (lambda ps: at.AdamW(ps, lr=1e-2, betas=(0.8, 0.9)),
                 lambda ps: at.Optimizer(ps, anyoptim.AdamW(
                     anyoptim.warmup_cosine_decay(0.0, 1e-2, 3, 20)))):
        params = _params(torch.float32)
        opt = make(params)
        grads = _grads(torch.float32, 6)
        _drive(opt, params, grads[:3])
        twin_copy = copy.deepcopy((opt, params))
        twin_pickle = pickle.loads(pickle.dumps((opt, params)))
        _drive(opt, params, grads[3:])
        for twin_opt, twin_params in (twin_copy, twin_pickle):
            assert type(twin_opt) is type(opt)
            assert {**twin_opt.defaults, "differentiable": False} == \
                {**opt.defaults, "differentiable": False}
            _drive(twin_opt, twin_params, grads[3:])
            for p, q in zip(twin_params, params):
                assert torch.equal(p, q)


def test_tensor_lr_compiles_once() -> None:
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = torch.nn.Linear(4, 3)
    lr = torch.tensor(0.01)
    opt = at.AdamW(model.parameters(), lr=lr)
    counter = CompileCounter()
    step = torch.compile(opt.step, backend=counter)
    ref_model = copy.deepcopy(model)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=torch.tensor(0.01), foreach=False)
    x = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(0))
    frames = None
    for i in range(6):
        for m in (model, ref_model):
            m.zero_grad()
            m(x[i]).sum().backward()
        step()
        ref.step()
        if i == 1:  # the first step also created the state: the second is the steady one
            frames = counter.frame_count
        for o in (opt, ref):
            o.param_groups[0]["lr"].fill_(0.01 * (i + 2))
    assert opt.param_groups[0]["lr"] is lr
    assert counter.frame_count == frames  # a changed lr tensor needs no recompilation
    assert _max_rel(list(model.parameters()), list(ref_model.parameters())) < 1e-5
    torch._dynamo.reset()


def test_grad_scaler_skips_inf_steps_and_unscales() -> None:
    model = torch.nn.Linear(3, 1)
    opt = at.AdamW(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = model(torch.ones(2, 3)).sum()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    assert torch.allclose(model.bias.grad, torch.tensor([2.0]))
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    assert float(opt.state[model.bias]["step"]) == 1
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    scaler.scale(model(torch.ones(2, 3)).sum()).backward()
    model.weight.grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert float(opt.state[model.bias]["step"]) == 1
    assert scaler.get_scale() == 512.0


def _schedulers() -> dict[str, object]:
    S = torch.optim.lr_scheduler
    return {
        "LambdaLR": lambda o: S.LambdaLR(o, lambda t: 0.9**t),
        "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, lambda t: 0.95),
        "StepLR": lambda o: S.StepLR(o, 3, 0.5),
        "MultiStepLR": lambda o: S.MultiStepLR(o, [2, 5], 0.5),
        "ConstantLR": lambda o: S.ConstantLR(o, 0.5, 4),
        "LinearLR": lambda o: S.LinearLR(o, 0.1, 1.0, 5),
        "ExponentialLR": lambda o: S.ExponentialLR(o, 0.9),
        "PolynomialLR": lambda o: S.PolynomialLR(o, 8, 2.0),
        "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, 8),
        "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, 3, 2),
        "CyclicLR": lambda o: S.CyclicLR(o, 1e-3, 1e-2, step_size_up=3),
        "OneCycleLR": lambda o: S.OneCycleLR(o, 1e-2, total_steps=12),
        "SequentialLR": lambda o: S.SequentialLR(
            o, [S.LinearLR(o, 0.1, 1.0, 3), S.ExponentialLR(o, 0.9)], [3]),
        "ChainedScheduler": lambda o: S.ChainedScheduler(
            [S.ConstantLR(o, 0.5, 4), S.ExponentialLR(o, 0.9)]),
        "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, patience=1),
    }


@pytest.mark.parametrize("name", list(_schedulers()))
def test_every_lr_scheduler_works_without_warnings(name: str) -> None:
    make = _schedulers()[name]
    grads = _grads(torch.float32, 10)
    results = []
    for cls in (at.AdamW, lambda ps, **kw: torch.optim.AdamW(ps, foreach=False, **kw)):
        params = _params(torch.float32)
        opt = cls(params, lr=1e-2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sched = make(opt)
            lrs, betas = [], []
            for gs in grads:
                for p, g in zip(params, gs):
                    p.grad = g.clone()
                opt.step()
                if name == "ReduceLROnPlateau":
                    sched.step(1.0)
                else:
                    sched.step()
                lrs.append(opt.param_groups[0]["lr"])
                betas.append(opt.param_groups[0]["betas"][0])
        results.append((params, lrs, betas))
    (ours, our_lrs, our_betas), (ref, ref_lrs, ref_betas) = results
    assert our_lrs == ref_lrs and our_betas == ref_betas  # OneCycleLR/CyclicLR cycle beta1
    assert _max_rel(ours, ref) < 1e-6


def test_distributed_checkpoint_initialising_step_moves_nothing() -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    makers = {
        "AdamW": lambda ps: at.AdamW(ps, lr=0.1),
        "SGD": lambda ps: at.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
        "Lion": lambda ps: at.Lion(ps, lr=0.1, weight_decay=0.5),
        "Muon": lambda ps: at.Muon(ps),
        "Adafactor": lambda ps: at.Adafactor(ps, weight_decay=0.5),
        "Adagrad": lambda ps: at.Adagrad(ps),
        "wrapper": lambda ps: at.Optimizer(ps, anyoptim.AdamW(
            anyoptim.cosine_decay(0.1, 10), weight_decay=0.5)),
        "wrapper-adafactor": lambda ps: at.Optimizer(ps, anyoptim.Adafactor(weight_decay=0.5)),
    }
    for name, make in makers.items():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
        opt = make(model.parameters())
        before = [p.detach().clone() for p in model.parameters()]
        sd = dcp.get_optimizer_state_dict(model, opt)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), name
        assert all(p.grad is None for p in model.parameters())
        # train a little, save through DCP, restore into a fresh optimizer, continue equally
        x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
        for i in range(2):
            opt.zero_grad()
            model(x[i]).sum().backward()
            opt.step()
        sd = dcp.get_optimizer_state_dict(
            model, opt, options=dcp.StateDictOptions(flatten_optimizer_state_dict=True))
        twin = copy.deepcopy(model)
        twin_opt = make(twin.parameters())
        dcp.set_optimizer_state_dict(
            twin, twin_opt, copy.deepcopy(sd),
            options=dcp.StateDictOptions(flatten_optimizer_state_dict=True))
        for m, o in ((model, opt), (twin, twin_opt)):
            o.zero_grad()
            m(x[2]).sum().backward()
            o.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            assert torch.equal(p, q), name


def test_bad_input_names_the_key_value_rule_and_fix_and_changes_nothing() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"AdamW: lr=-1.0 is invalid: lr must be a number >= 0"):
        at.AdamW([w], lr=-1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]=1.0 is invalid.*\[0, 1\)|betas\[1\]=1.0"):
        at.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="capturable"):
        at.AdamW([w], capturable=True)
    with pytest.raises(ValueError, match="Nesterov"):
        at.SGD([w], nesterov=True)
    with pytest.raises(ValueError, match="relative_step"):
        at.Adafactor([w], lr=1e-3)
    opt = at.AdamW([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    value = w.detach().clone()
    opt.param_groups[0]["betas"] = (0.9, 2.0)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: betas\[1\]=2.0.*Betas are decay"):
        opt.step()
    assert torch.equal(w.detach(), value)
    assert float(opt.state[w]["step"]) == 1
    assert torch.equal(opt.state[w]["exp_avg"], saved["state"][0]["exp_avg"])
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    w.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert float(opt.state[w]["step"]) == 1


def test_complex_parameters_match_torch() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, dtype=torch.complex64, generator=g))
    b = torch.nn.Parameter(a.detach().clone())
    ours, ref = at.AdamW([a], lr=0.1), torch.optim.AdamW([b], lr=0.1, foreach=False)
    for _ in range(5):
        grad = torch.randn(5, dtype=torch.complex64, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    assert (a - b).abs().max().item() < 1e-6


# ----------------------------------------------------------------------------- nanoGPT loop
NANOGPT = r'''
import math, sys, torch
import anyoptim.torch

def build(kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(32, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 32),
        torch.nn.GELU(), torch.nn.Linear(32, 32))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    cls = anyoptim.torch.AdamW if kind == "anyoptim" else torch.optim.AdamW
    extra = {} if kind == "anyoptim" else {"foreach": False}
    opt = cls(groups, lr=1e-3, betas=(0.9, 0.95), **extra)
    return model, opt, torch.amp.GradScaler("cpu", init_scale=2.0**10)

def get_lr(it, warmup=5, total=30, top=1e-2, low=1e-3):
    if it < warmup:
        return top * (it + 1) / (warmup + 1)
    ratio = (it - warmup) / (total - warmup)
    return low + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (top - low)

def train(model, opt, scaler, start, stop, inf_at=7):
    skipped = []
    for it in range(start, stop):
        for group in opt.param_groups:
            group["lr"] = get_lr(it)
        for micro in range(2):
            g = torch.Generator().manual_seed(1000 * it + micro)
            x = torch.randint(0, 32, (4, 8), generator=g)
            y = torch.randint(0, 32, (4, 8), generator=g)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, 32), y.view(-1)) / 2
            scaler.scale(loss).backward()
        if it == inf_at:
            model[2].weight.grad[0, 0] = float("inf")
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < scale:
            skipped.append((it, scale, scaler.get_scale()))
        opt.zero_grad(set_to_none=True)
    return skipped

if __name__ == "__main__":
    ckpt, out = sys.argv[1], sys.argv[2]
    model, opt, scaler = build("anyoptim")
    checkpoint = torch.load(ckpt)   # the default: weights_only=True
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    train(model, opt, scaler, checkpoint["iter_num"], 30)
    torch.save({k: v for k, v in model.state_dict().items()}, out)
'''


def test_nanogpt_style_loop(tmp_path: Path) -> None:
    script = tmp_path / "nanogpt_loop.py"
    script.write_text(NANOGPT)
    namespace: dict = {"__name__": "nanogpt_loop"}
    exec(compile(NANOGPT, str(script), "exec"), namespace)
    build, train = namespace["build"], namespace["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = build("anyoptim")
        ref = build("torch")
        skipped = train(*ours, 0, 30)
        assert train(*ref, 0, 30) == skipped
    # the injected inf skipped its step and halved the scale
    assert skipped[0] == (7, 1024.0, 512.0)
    assert float(ours[1].state[ours[0][2].weight]["step"]) == 30 - len(skipped)
    worst = _max_rel(list(ours[0].parameters()), list(ref[0].parameters()))
    assert worst < 1e-6, worst
    # torch.save at step 15, torch.load in a fresh process, continue to 30: bit-identical
    model, opt, scaler = build("anyoptim")
    train(model, opt, scaler, 0, 15)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "iter_num": 15}, ckpt)
    out = tmp_path / "final.pt"
    result = subprocess.run([sys.executable, "-W", "error", str(script), str(ckpt), str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    final = torch.load(out)
    for name, value in ours[0].state_dict().items():
        assert torch.equal(final[name], value), name


# ----------------------------------------------------------------------------- across front-ends
def test_torch_run_continues_on_numpy_and_back(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = at.AdamW(model.named_parameters(), lr=1e-2, weight_decay=0.1)
    grads = [{n: torch.randn(p.shape, generator=torch.Generator().manual_seed(10 * t + i))
              for i, (n, p) in enumerate(model.named_parameters())} for t in range(10)]

    def torch_steps(model, opt, steps):
        for gs in steps:
            for n, p in model.named_parameters():
                p.grad = gs[n].clone()
            opt.step()

    torch_steps(model, opt, grads[:5])
    path = tmp_path / "run.safetensors"
    at.save(path, opt, model)
    reference = copy.deepcopy((model, opt))
    torch_steps(*reference, grads[5:])
    # continue on NumPy from the file: state matched by parameter name
    restored = anyoptim.load(path, library="numpy")
    assert type(restored) is anyoptim.AdamW and restored.bias_correction
    params = anyoptim.load_params(path, library="numpy")
    assert sorted(params) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    for gs in grads[5:]:
        restored.update(params, {n: g.numpy() for n, g in gs.items()})
    for n, p in reference[0].named_parameters():
        assert _rel(torch.from_numpy(params[n]), p) < 1e-6, n
    # and back: the NumPy run saved with anyoptim.save continues under torch
    anyoptim.save(tmp_path / "numpy.safetensors", restored, params)
    back_model = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in back_model.named_parameters():
            p.copy_(torch.from_numpy(params[n]))
    back = at.load(tmp_path / "numpy.safetensors", back_model.named_parameters())
    more = [{n: torch.randn(p.shape, generator=torch.Generator().manual_seed(99 + t))
             for n, p in model.named_parameters()} for t in range(3)]
    torch_steps(back_model, back, more)
    for gs in more:
        restored.update(params, {n: g.numpy() for n, g in gs.items()})
    for n, p in back_model.named_parameters():
        assert _rel(p, torch.from_numpy(params[n])) < 1e-6, n


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_to_anyoptim_continues_an_amsgrad_run(cls: str) -> None:
    torch.manual_seed(3)
    model = torch.nn.Linear(5, 3).double()
    opt = getattr(at, cls)(model.named_parameters(), lr=1e-2, amsgrad=True)
    grads = [{n: torch.randn(p.shape, dtype=torch.float64) for n, p in model.named_parameters()}
             for _ in range(12)]
    for gs in grads[:6]:
        for n, p in model.named_parameters():
            p.grad = gs[n].clone()
        opt.step()
    core = at.to_anyoptim(opt, model)
    assert type(core).__name__ == cls and core.amsgrad and core.bias_correction
    assert sorted(core.state["weight"]) == ["m", "v", "v_max"]
    params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    core.state = anyoptim.utils.tree_map(lambda x: x.detach().numpy().copy(), core.state)
    for gs in grads[6:]:
        for n, p in model.named_parameters():
            p.grad = gs[n].clone()
        opt.step()
        params = core.apply_gradients({n: g.numpy() for n, g in gs.items()}, params)
    for n, p in model.named_parameters():
        # the MLX-style class keeps MLX's float32 bias corrections and learning rate
        assert _rel(torch.from_numpy(params[n]), p) < 5e-6, n


def test_to_anyoptim_refuses_what_anyoptim_lacks() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    for opt, match in ((at.Adam([w], maximize=True), "maximize"),
                       (at.Adamax([w]), "Adamax"),
                       (at.RMSprop([w], centered=True), "centered")):
        with pytest.raises(ValueError, match=match):
            at.to_anyoptim(opt)
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = at.AdamW([a, b])
    a.grad = torch.ones(2)
    opt.step()
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    with pytest.raises(ValueError, match="different step counts"):
        at.to_anyoptim(opt)
    groups = at.AdamW([{"params": [a], "weight_decay": 0.0}, {"params": [b]}])
    assert isinstance(at.to_anyoptim(groups), anyoptim.MultiOptimizer)


# ----------------------------------------------------------------------------- Hugging Face
def _gpt2_trainer(tmp_path: Path, make_optimizers, steps: int = 8, resume: str | None = None,
                  **extra):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                     n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids}
            for ids in torch.randint(0, 64, (64, 16), generator=g)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, save_steps=4, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, max_grad_norm=1.0, report_to="none", use_cpu=True,
        logging_steps=2, seed=0, learning_rate=3e-3, weight_decay=0.1, lr_scheduler_type="cosine",
        warmup_steps=2, dataloader_num_workers=0, disable_tqdm=True, save_only_model=False,
        **extra)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   **make_optimizers(model))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hf_trainer_with_optimizers_and_resume(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")

    def optimizers(model):
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        rest = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = at.AdamW([{"params": decay, "weight_decay": 0.1},
                        {"params": rest, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95))
        return {"optimizers": (opt, transformers.get_cosine_schedule_with_warmup(opt, 2, 8))}

    full = _gpt2_trainer(tmp_path / "full", optimizers)
    logged = [e["learning_rate"] for e in full.state.log_history if "learning_rate" in e]
    probe = torch.optim.SGD([torch.zeros(1)], lr=3e-3)
    sched = transformers.get_cosine_schedule_with_warmup(probe, 2, 8)
    expected = []
    for _ in range(8):
        expected.append(sched.get_last_lr()[0])
        probe.step()
        sched.step()
    assert logged == pytest.approx(expected[1::2])  # logged every 2 steps, after the step
    ckpt = tmp_path / "full" / "checkpoint-4"
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file()
    resumed = _gpt2_trainer(tmp_path / "resumed", optimizers, resume=str(ckpt))
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 8


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hf_trainer_optimizer_cls_and_kwargs_matches_torch(tmp_path: Path) -> None:
    kwargs = {"lr": 3e-3, "betas": (0.9, 0.95)}
    ours = _gpt2_trainer(tmp_path / "ours", lambda m: {
        "optimizer_cls_and_kwargs": (at.AdamW, kwargs)})
    ref = _gpt2_trainer(tmp_path / "ref", lambda m: {
        "optimizer_cls_and_kwargs": (torch.optim.AdamW, {**kwargs, "foreach": False})})
    fused = _gpt2_trainer(tmp_path / "fused", lambda m: {
        "optimizer_cls_and_kwargs": (torch.optim.AdamW, {**kwargs, "fused": True})})
    assert type(ours.optimizer.optimizer) is at.AdamW
    groups = ours.optimizer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    # The key part of GPT-2's c_attn bias has an exactly zero gradient (softmax ignores a
    # shift of all keys): Adam turns its rounding noise into steps of size lr. There, torch's
    # own fused AdamW departs from its for-loop AdamW as much as anyoptim does.
    for (name, p), q, f in zip(ours.model.named_parameters(), ref.model.parameters(),
                               fused.model.parameters()):
        if name.endswith("c_attn.bias"):
            assert _rel(p, q) < 3 * _rel(f, q) + 1e-6, name
        else:
            assert _rel(p, q) < 1e-5, name


# ----------------------------------------------------------------------------- Lightning
def _lightning_module(manual: bool, torch_optim: bool = False):
    L = pytest.importorskip("lightning.pytorch")

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                           torch.nn.Linear(16, 1))
            self.automatic_optimization = not manual
            self.calls = 0

        def training_step(self, batch, batch_idx):
            self.calls += 1
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
                opt.step()
                self.lr_schedulers().step()
                return None
            return loss

        def configure_optimizers(self):
            if torch_optim:
                opt = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.05,
                                        foreach=False)
            else:
                opt = at.AdamW(self.parameters(), lr=1e-3, weight_decay=0.05)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=8)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            # one batch, repeated: Lightning 2.6 replays a batch when it resumes a run
            x = torch.randn(4, 8, generator=g).repeat(4, 1)
            data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
            return torch.utils.data.DataLoader(data, batch_size=4, num_workers=0)

    return L, Module


def _fit(L, module, manual: bool, steps: int, ckpt: str | None = None):
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, deterministic=True,
        **({} if manual else {"gradient_clip_val": 1.0, "accumulate_grad_batches": 2}))
    trainer.fit(module, ckpt_path=ckpt)
    return trainer


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
# Lightning 2.6.6 itself uses a torch pytree API that torch 2.13 deprecates
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_lightning_fit_clip_accumulate_resume(tmp_path: Path, manual: bool) -> None:
    runs = {}
    for torch_optim in (False, True):
        L, Module = _lightning_module(manual, torch_optim)
        full = Module()
        trainer = _fit(L, full, manual, 8)
        assert full.calls == (8 if manual else 16)  # the closure ran training_step each batch
        opt = trainer.optimizers[0]
        if not torch_optim:
            assert isinstance(opt, at.AdamW)
            assert float(next(iter(opt.state.values()))["step"]) == 8
            assert opt.param_groups[0]["betas"][0] != 0.9  # OneCycleLR cycles beta1
        half = Module()
        _fit(L, half, manual, 4).save_checkpoint(tmp_path / f"half-{torch_optim}.ckpt")
        resumed = Module()
        _fit(L, resumed, manual, 8, ckpt=str(tmp_path / f"half-{torch_optim}.ckpt"))
        runs[torch_optim] = (list(full.parameters()), list(resumed.parameters()))
    (ours_full, ours_resumed), (ref_full, ref_resumed) = runs[False], runs[True]
    assert _max_rel(ours_full, ref_full) < 1e-6
    assert _max_rel(ours_resumed, ref_resumed) < 1e-6
    if manual:  # resuming reproduces the uninterrupted run exactly
        for p, q in zip(ours_full, ours_resumed):
            assert torch.equal(p, q)


def test_docs_page_examples_run(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "use-with-pytorch.md").read_text(encoding="utf-8")
    import re

    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 4
    # every warning is an error, except Lightning 2.6's own deprecation notice from torch's
    # pytree module (raised inside lightning, not by anything the page does)
    prelude = ("import warnings\nwarnings.simplefilter('error')\n"
               "warnings.filterwarnings('ignore', message='.*LeafSpec', category=FutureWarning)\n")
    code = prelude + "\n".join(textwrap.dedent(b) for b in blocks)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


def test_numpy_dependency_is_not_required_for_import() -> None:
    # anyoptim never imports anyoptim.torch (nor torch) by itself
    code = "import sys, anyoptim; assert 'anyoptim.torch' not in sys.modules; " \
           "assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert np.__name__ == "numpy"


def test_wrapper_of_a_training_loop_transform_is_a_clear_error() -> None:
    """torch's state_dict has no place for an EMA's average or an accumulator: refused, with
    the torch-side equivalents named, instead of silently dropping that state."""
    model = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="AveragedModel"):
        at.Optimizer(model.parameters(), anyoptim.EMA(anyoptim.AdamW(1e-3), 0.99))
