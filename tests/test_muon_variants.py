"""Muon's variants against torch.optim.Muon and pytorch_optimizer's Muon / NorMuon.

Both references run the Newton-Schulz iteration in bfloat16. For the exact comparisons
(float64 within 1e-12, float32 within 1e-6) the reference's cast is switched off: torch's
``Tensor.bfloat16`` is made the identity for torch.optim.Muon, and pytorch_optimizer's own
``zero_power_via_newton_schulz_5`` is called with ``dtype`` set to the parameters' dtype.
Nothing else of the references is touched. The bfloat16 runs are compared at a loose
tolerance (``test_torch_bfloat16_iteration``).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import anyoptim as optim

LR = 2.0**-6  # exact in float32 (the MLX-style learning rate is stored as float32)
STEPS = 60
TOL = {np.float64: 1e-12, np.float32: 1e-6}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _run(ref, ref_params, ours, shapes, dtype, steps=STEPS, seed=0):
    """``steps`` updates of both with the same gradients; the largest relative difference."""
    import torch

    rng = np.random.default_rng(seed)
    params = {f"p{i}": p.detach().numpy().copy() for i, p in enumerate(ref_params)}
    worst = 0.0
    for _ in range(steps):
        g = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for p, x in zip(ref_params, g):
            p.grad = torch.tensor(x)
        ref.step()
        params = ours.apply_gradients({f"p{i}": x for i, x in enumerate(g)}, params)
        for i, p in enumerate(ref_params):
            worst = max(worst, _rel(params[f"p{i}"], p.detach().numpy()))
    return worst


def _params(shapes, dtype, seed=1):
    import torch

    rng = np.random.default_rng(seed)
    return [torch.nn.Parameter(torch.tensor(rng.standard_normal(s).astype(dtype)))
            for s in shapes]


# --------------------------------------------------------------------------- torch.optim.Muon
TORCH_SHAPES = [(6, 4), (3, 7), (5, 5)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", [None, "original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_against_torch_muon(mode, nesterov, dtype, monkeypatch):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    # (a copy, as .bfloat16() makes one: the reference normalises it in place)
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
    ref_params = _params(TORCH_SHAPES, dtype)
    ref = torch.optim.Muon(ref_params, lr=LR, weight_decay=0.1, momentum=0.9,
                           nesterov=nesterov, adjust_lr_fn=mode)
    ours = optim.Muon(LR, momentum=0.9, weight_decay=0.1, nesterov=nesterov,
                      adjust_lr=mode or "original", normalize="clamp",
                      decoupled_weight_decay=True)
    assert _run(ref, ref_params, ours, TORCH_SHAPES, dtype) <= TOL[dtype]


def test_torch_bfloat16_iteration():
    """Unpatched torch.optim.Muon (bfloat16 iteration) against ``ns_dtype="bfloat16"`` on
    torch tensors and against the float32 iteration: bfloat16 keeps 8 bits, and the two
    bfloat16 iterations round differently (torch's norm and addmm accumulate in float32,
    anyoptim rounds each product), so both agree with torch to bfloat16 precision only
    (measured 1.9e-3 and 1.1e-3 after 20 steps; bound 1e-2)."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    for ns_dtype in ("bfloat16", None):
        ref_params = _params(TORCH_SHAPES, np.float32)
        ref = torch.optim.Muon(ref_params, lr=LR, weight_decay=0.1)
        ours = optim.Muon(LR, weight_decay=0.1, adjust_lr="original", normalize="clamp",
                          decoupled_weight_decay=True, ns_dtype=ns_dtype)
        rng = np.random.default_rng(0)
        params = {f"p{i}": p.detach().clone() for i, p in enumerate(ref_params)}
        worst = 0.0
        for _ in range(20):
            g = [torch.tensor(rng.standard_normal(s).astype(np.float32)) for s in TORCH_SHAPES]
            for p, x in zip(ref_params, g):
                p.grad = x.clone()
            ref.step()
            params = ours.apply_gradients({f"p{i}": x for i, x in enumerate(g)}, params)
            for i, p in enumerate(ref_params):
                assert params[f"p{i}"].dtype == torch.float32
                worst = max(worst, _rel(params[f"p{i}"].numpy(), p.detach().numpy()))
        assert worst <= 1e-2, (ns_dtype, worst)


# --------------------------------------------------------------------------- pytorch_optimizer
PO_SHAPES = [(6, 4), (3, 7), (4, 2, 3), (5, 5)]


def _patch_pytorch_optimizer(monkeypatch, dtype):
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer.optimizer.muon import base, normuon
    from pytorch_optimizer.optimizer.utils import matrix

    wide = functools.partial(matrix.zero_power_via_newton_schulz_5,
                             dtype=torch.float64 if dtype == np.float64 else torch.float32)
    monkeypatch.setattr(base, "zero_power_via_newton_schulz_5", wide)
    monkeypatch.setattr(normuon, "zero_power_via_newton_schulz_5", wide)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("coefficients,adjusted,wd,decouple", [
    ("original", False, 0.1, True),
    ("polar_express", False, 0.0, True),
    ("polar_express", True, 0.1, False),
    ("original", True, 0.0, True),
])
def test_against_pytorch_optimizer_muon(coefficients, adjusted, wd, decouple, dtype, monkeypatch):
    _patch_pytorch_optimizer(monkeypatch, dtype)
    import pytorch_optimizer

    ref_params = _params(PO_SHAPES, dtype)
    ref = pytorch_optimizer.Muon(
        [dict(params=ref_params, use_muon=True)], lr=LR, weight_decay=wd,
        weight_decouple=decouple, ns_coeffs=coefficients, use_adjusted_lr=adjusted,
        ns_steps=6 if coefficients == "polar_express" else 5)
    ours = optim.Muon(LR, weight_decay=wd, decoupled_weight_decay=decouple,
                      ns_coefficients="classic" if coefficients == "original" else coefficients,
                      ns_steps=6 if coefficients == "polar_express" else 5,
                      adjust_lr="match_rms_adamw" if adjusted else "original",
                      normalize="clamp")
    assert _run(ref, ref_params, ours, PO_SHAPES, dtype) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale,adjusted,wd,decouple,coefficients", [
    ("preserve_norm", False, 0.0, True, "original"),
    ("preserve_norm", True, 0.1, True, "polar_express"),
    ("match_rms", False, 0.1, False, "original"),
])
def test_against_pytorch_optimizer_normuon(scale, adjusted, wd, decouple, coefficients, dtype,
                                           monkeypatch):
    _patch_pytorch_optimizer(monkeypatch, dtype)
    import pytorch_optimizer

    ref_params = _params(PO_SHAPES, dtype)
    ref = pytorch_optimizer.NorMuon(
        [dict(params=ref_params, use_muon=True)], lr=LR, beta2=0.9, weight_decay=wd,
        weight_decouple=decouple, update_scale=scale, use_adjusted_lr=adjusted,
        ns_coeffs=coefficients)
    # in "match_rms" pytorch_optimizer leaves the learning rate as it is
    adjusted_mode = "match_rms_adamw" if adjusted else "original"
    adjust = "none" if scale == "match_rms" else adjusted_mode
    ours = optim.Muon(LR, weight_decay=wd, decoupled_weight_decay=decouple, normuon=True,
                      beta2=0.9, normuon_scale=scale, adjust_lr=adjust, normalize="clamp",
                      ns_coefficients="classic" if coefficients == "original" else coefficients)
    assert _run(ref, ref_params, ours, PO_SHAPES, dtype) <= TOL[dtype]
    v_row = ours.state["p2"]["v_row"]
    assert tuple(v_row.shape) == (4, 1)
    np.testing.assert_allclose(
        v_row, ref.state[ref_params[2]]["second_momentum_buffer"].numpy(),
        rtol=TOL[dtype] * 10)


# --------------------------------------------------------------------------- MLX's default
def test_explicit_mlx_options_change_nothing():
    """Spelling out MLX's options (and a custom classic triple, which takes the general path)
    gives MLX's Muon bit for bit."""
    rng = np.random.default_rng(5)
    shapes = {"a": (6, 4), "b": (2, 5, 3), "c": (4,)}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    runs = [optim.Muon(0.02),
            optim.Muon(0.02, adjust_lr="mlx", ns_coefficients="classic", eps=1e-7,
                       normalize="add", decoupled_weight_decay=False, ns_dtype=None,
                       normuon=False),
            optim.Muon(0.02, ns_coefficients=[(3.4445, -4.7750, 2.0315)])]
    outs = []
    for opt in runs:
        p = params
        for i in range(5):
            g = {k: np.random.default_rng(i).standard_normal(s).astype(np.float32)
                 for k, s in shapes.items()}
            p = opt.apply_gradients(g, p)
        outs.append(p)
    for other in outs[1:]:
        for k in shapes:
            np.testing.assert_array_equal(other[k], outs[0][k])


def test_against_mlx_optimizers_default():
    mx = pytest.importorskip("mlx.core")
    mlx_optim = pytest.importorskip("mlx.optimizers")
    rng = np.random.default_rng(6)
    shapes = {"a": (6, 4), "b": (2, 5, 3)}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    ref = mlx_optim.Muon(learning_rate=0.02, weight_decay=0.1)
    ours = optim.Muon(0.02, weight_decay=0.1)
    rp = {k: mx.array(v) for k, v in params.items()}
    op = {k: mx.array(v) for k, v in params.items()}
    for _ in range(20):
        g = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        rp = ref.apply_gradients({k: mx.array(v) for k, v in g.items()}, rp)
        op = ours.apply_gradients({k: mx.array(v) for k, v in g.items()}, op)
    for k in shapes:
        assert _rel(np.array(op[k]), np.array(rp[k])) <= 1e-6


@pytest.mark.parametrize("kw,name", [
    (dict(adjust_lr="moonshot"), "adjust_lr"),
    (dict(ns_coefficients="cubic"), "ns_coefficients"),
    (dict(ns_coefficients=[(1.0, 2.0)]), "ns_coefficients"),
    (dict(ns_coefficients=[]), "ns_coefficients"),
    (dict(normalize="divide"), "normalize"),
    (dict(eps=-1.0), "eps"),
    (dict(decoupled_weight_decay="yes"), "decoupled_weight_decay"),
    (dict(ns_dtype="int8"), "ns_dtype"),
    (dict(beta2=1.0), "beta2"),
    (dict(normuon_scale="rms"), "normuon_scale"),
    (dict(normuon_eps=-1e-3), "normuon_eps"),
])
def test_bad_options(kw, name):
    with pytest.raises(ValueError, match=name):
        optim.Muon(0.02, **kw)


def test_options_survive_a_checkpoint(tmp_path):
    opt = optim.Muon(0.02, adjust_lr="match_rms_adamw", ns_coefficients="polar_express",
                     normuon=True, normuon_scale="match_rms", decoupled_weight_decay=True,
                     normalize="clamp")
    params = {"w": np.ones((4, 3), np.float32)}
    params = opt.apply_gradients({"w": np.full((4, 3), 0.5, np.float32)}, params)
    path = tmp_path / "muon.safetensors"
    optim.save(path, opt)
    back = optim.load(path)
    for key in ("adjust_lr", "ns_coefficients", "normuon", "normuon_scale",
                "decoupled_weight_decay", "normalize"):
        assert getattr(back, key) == getattr(opt, key), key
    g = {"w": np.full((4, 3), -0.25, np.float32)}
    np.testing.assert_array_equal(back.apply_gradients(g, params)["w"],
                                  opt.apply_gradients(g, params)["w"])


def test_normuon_switched_on_per_call():
    """``normuon`` given per call (a state without ``v_row`` yet) creates the row moment."""
    opt = optim.Muon(0.02)
    params = {"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)}
    grads = {"w": np.arange(12, dtype=np.float32).reshape(4, 3), "b": np.ones(3, np.float32)}
    params = opt.apply_gradients(grads, params)
    assert "v_row" not in opt.state["w"]
    params = opt.apply_gradients(grads, params, {"normuon": True})
    assert opt.state["w"]["v_row"].shape == (4, 1) and "v_row" not in opt.state["b"]
    assert np.isfinite(params["w"]).all()


# --------------------------------------------------------------------------- the torch drop-in
def test_drop_in_signature_is_torch_s():
    import inspect

    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    import anyoptim.torch as aot

    ours = inspect.signature(aot.Muon).parameters.values()
    ref = inspect.signature(torch.optim.Muon).parameters.values()
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in ref]


@pytest.mark.parametrize("mode", [None, "original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_drop_in_against_torch_muon(mode, nesterov):
    """Both in bfloat16 (torch's precision): measured 2.2e-3 after 20 steps; bound 1e-2."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    import anyoptim.torch as aot

    ref_params = _params(TORCH_SHAPES, np.float32)
    drop_params = [torch.nn.Parameter(p.detach().clone()) for p in ref_params]
    kw = dict(lr=LR, weight_decay=0.05, momentum=0.9, nesterov=nesterov, adjust_lr_fn=mode)
    ref = torch.optim.Muon(ref_params, **kw)
    drop = aot.Muon(drop_params, **kw)
    rng = np.random.default_rng(3)
    for _ in range(20):
        for a, b in zip(ref_params, drop_params):
            g = torch.tensor(rng.standard_normal(tuple(a.shape)).astype(np.float32))
            a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        drop.step()
    for a, b in zip(ref_params, drop_params):
        assert _rel(b.detach().numpy(), a.detach().numpy()) <= 1e-2
    assert set(drop.state[drop_params[0]]) == set(ref.state[ref_params[0]]) == {"momentum_buffer"}
    drop.load_state_dict(ref.state_dict())  # torch's state dict loads


def test_drop_in_bad_keywords():
    torch = pytest.importorskip("torch")
    import anyoptim.torch as aot

    w = [torch.nn.Parameter(torch.zeros(2, 2))]
    for kw, name in [(dict(adjust_lr_fn="moonlight"), "adjust_lr_fn"),
                     (dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"),
                     (dict(ns_steps=100), "ns_steps"), (dict(lr=-1.0), "lr")]:
        with pytest.raises(ValueError, match=name):
            aot.Muon(w, **kw)
