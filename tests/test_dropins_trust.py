"""Differential tests of the torch drop-ins ``Lamb``, ``LARS`` and ``SimplifiedAdEMAMix``
against pytorch_optimizer (same keywords, same numbers), the anyoptim classes with the
matching options against the same references, and the torch contract (groups, state-dict
round trip, closure, zero_grad).

The random problems and tolerances are those of ``test_more_optimizers`` (60 random steps,
float64 within 1e-12, float32 within 1e-6), with the error of a leaf taken relative to the
largest magnitude that leaf has had so far in the run: the scalar leaf crosses zero under
these optimizers, and float32 rounding (pytorch_optimizer's and ours differ in the order of
operations) is then large relative to its current value but not to its scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import anyoptim as optim
import test_more_optimizers as t

LAMB_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "decoupled-wd": {"weight_decay": 0.1},
    "coupled-wd": {"weight_decay": 0.1, "weight_decouple": False},
    "fixed-decay": {"weight_decay": 0.01, "fixed_decay": True},
    "no-grad-averaging": {"grad_averaging": False, "betas": (0.8, 0.99)},
    "adam": {"adam": True, "weight_decay": 0.1},
    "adam-debias": {"adam_debias": True, "eps": 1e-3},
    "maximize": {"maximize": True},
    "pre-norm": {"pre_norm": True, "max_grad_norm": 2.0},
    "pre-norm-off": {"pre_norm": True, "max_grad_norm": 0.0},
}

LARS_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "wd": {"weight_decay": 0.01},
    "nesterov-dampening": {"weight_decay": 0.01, "nesterov": True, "dampening": 0.1},
    "no-momentum": {"momentum": 0.0, "weight_decay": 0.1, "trust_coefficient": 0.02},
    "maximize": {"maximize": True, "momentum": 0.5},
}

SIMPLE_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "alpha-wd": {"alpha": 2.0, "weight_decay": 0.1},
    "coupled-wd": {"alpha": 1.0, "weight_decay": 0.1, "weight_decouple": False},
    "fixed-decay": {"weight_decay": 0.01, "fixed_decay": True},
    "warmup": {"beta1_warmup": 20, "min_beta1": 0.8, "alpha": 0.5},
    "maximize": {"maximize": True, "betas": (0.9, 0.99)},
}


def _ref_kwargs(name: str, kw: dict[str, Any], dtype: str) -> dict[str, Any]:
    # pytorch_optimizer's foreach path of SimplifiedAdEMAMix rounds sqrt(1 - b2^t) to
    # float32 even for float64 parameters: compare float64 with its per-parameter path
    if name == "SimplifiedAdEMAMix" and dtype == "float64":
        return {**kw, "foreach": False}
    return kw


def _pair(make_ours: Any, make_ref: Any, dtype: str, key: str, core: bool) -> float:
    """anyoptim (the torch drop-in, or the MLX-style class on NumPy with ``core``) vs a
    pytorch_optimizer optimizer, step by step."""
    torch = pytest.importorskip("torch")
    p0, grads = t._problem(1 if core else 0, dtype)
    params = {str(i): p.copy() for i, p in enumerate(p0)}
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    oa, ob = make_ours() if core else make_ours(a), make_ref(b)
    scale = [np.abs(p).max() for p in p0]
    worst = 0.0
    for gs in grads:
        if core:
            params = oa.apply_gradients({str(i): g for i, g in enumerate(gs)}, params)
        for x, y, g in zip(a, b, gs):
            x.grad = torch.from_numpy(g.copy())
            y.grad = torch.from_numpy(g.copy())
        if not core:
            oa.step()
        ob.step()
        for i, y in enumerate(b):
            ref = y.detach().numpy()
            ours = params[str(i)] if core else a[i].detach().numpy()
            scale[i] = max(scale[i], np.abs(ref).max())
            worst = max(worst, float(np.abs(ours - ref).max() / max(scale[i], 1e-30)))
    t._record(key, worst)
    assert worst <= t.TOL[dtype], (key, worst)
    return worst


REF = {"Lamb": LAMB_CASES, "LARS": LARS_CASES, "SimplifiedAdEMAMix": SIMPLE_CASES}
ALL = [(name, case) for name, cases in REF.items() for case in cases]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "case"), ALL)
def test_torch_drop_in_vs_pytorch_optimizer(name: str, case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    import anyoptim.torch as at

    kw = REF[name][case]
    lr = 0.5 if name == "LARS" else 0.01
    ours, ref = getattr(at, name), getattr(po, name)
    rkw = _ref_kwargs(name, kw, dtype)
    _pair(lambda ps: ours(ps, lr=lr, **kw), lambda ps: ref(ps, lr=lr, **rkw), dtype,
          f"{name} torch/{case}/{dtype} vs pytorch_optimizer.{name}", core=False)


def _core(name: str, kw: dict[str, Any]) -> optim.Optimizer:
    """The anyoptim class with the options of the drop-in's group."""
    from anyoptim.torch._simplified import simplified_options
    from anyoptim.torch._trust import lamb_options, lars_options

    if name == "Lamb":
        group = {"betas": (0.9, 0.999), "weight_decay": 0.0, "weight_decouple": True,
                 "fixed_decay": False, "grad_averaging": True, "adam": False, "eps": 1e-6, **kw}
        return optim.LAMB(t.LR, **lamb_options(group))
    if name == "LARS":
        group = {"weight_decay": 0.0, "momentum": 0.9, "dampening": 0.0,
                 "trust_coefficient": 1e-3, "nesterov": False, **kw}
        return optim.LARS(t.LR, **lars_options(group))
    group = {"betas": (0.99, 0.95), "alpha": 0.0, "eps": 1e-8, "weight_decay": 0.0,
             "weight_decouple": True, "fixed_decay": False, "beta1_warmup": None,
             "min_beta1": 0.9, **kw}
    return optim.SimplifiedAdEMAMix(t.LR, **simplified_options(group))


CORE = [(n, c) for n, c in ALL if c not in ("maximize", "pre-norm", "pre-norm-off")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "case"), CORE)
def test_core_options_vs_pytorch_optimizer(name: str, case: str, dtype: str) -> None:
    po = pytest.importorskip("pytorch_optimizer")
    kw = REF[name][case]
    rkw = _ref_kwargs(name, kw, dtype)
    ref = getattr(po, name)
    _pair(lambda: _core(name, kw), lambda ps: ref(ps, lr=t.LR, **rkw), dtype,
          f"{name} core/{case}/{dtype} vs pytorch_optimizer.{name}", core=True)


# ----------------------------------------------------------------------------- torch contract
def _model(torch: Any) -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


def _make(name: str, model: Any) -> Any:
    import anyoptim.torch as at

    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "lr": 0.02}]
    lr = 0.5 if name == "LARS" else 0.01
    return getattr(at, name)(groups, lr=lr)


@pytest.mark.parametrize("name", list(REF))
def test_torch_contract_groups_state_dict_closure(name: str, tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    ma, mb = _model(torch), _model(torch)
    oa, ob = _make(name, ma), _make(name, mb)
    assert isinstance(oa, torch.optim.Optimizer)
    for step in range(10):
        for model, opt in ((ma, oa), (mb, ob)):
            def closure(model: Any = model, opt: Any = opt) -> Any:
                opt.zero_grad()
                loss = model(x).square().mean()
                loss.backward()
                return loss

            loss = opt.step(closure)
            assert float(loss.detach()) > 0
            assert all(p.grad is not None for p in model.parameters())
        if step == 4:  # ob restarts from a saved state dict
            path = tmp_path / "opt.pt"
            torch.save(ob.state_dict(), path)
            ob = _make(name, mb)
            ob.load_state_dict(torch.load(path, weights_only=True))
            assert ob.param_groups[1]["lr"] == 0.02
    oa.zero_grad()
    assert all(p.grad is None for p in ma.parameters())
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_refusals_name_the_option() -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    w = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="rectify"):
        at.Lamb(w, rectify=True)
    with pytest.raises(ValueError, match="adanorm"):
        at.Lamb(w, adanorm=True)
    with pytest.raises(ValueError, match="momentum"):
        at.LARS(w, momentum=1.0)
    with pytest.raises(ValueError, match="beta1_warmup"):
        at.SimplifiedAdEMAMix(w, beta1_warmup=-1)
    with pytest.raises(ValueError, match="min_beta1"):
        at.SimplifiedAdEMAMix(w, min_beta1=1.5)


def test_lamb_pre_norm_leaves_grad_unchanged() -> None:
    torch = pytest.importorskip("torch")
    import anyoptim.torch as at

    w = torch.nn.Parameter(torch.ones(3, 3))
    opt = at.Lamb([w], pre_norm=True)
    w.grad = torch.full((3, 3), 5.0)
    opt.step()
    np.testing.assert_array_equal(w.grad.numpy(), np.full((3, 3), 5.0, np.float32))


def test_zz_report_largest_errors() -> None:
    """Print the largest errors of this module (run with -s); always passes."""
    for key in sorted(k for k in t.LARGEST if "pytorch_optimizer." in k and any(
            n in k for n in REF)):
        print(f"{key}: {t.LARGEST[key]:.3g}")
