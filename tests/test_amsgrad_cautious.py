"""AMSGrad and the cautious flag on the MLX-style Adam, AdamW and Lion.

``amsgrad=True`` follows ``torch.optim.Adam(amsgrad=True)`` (the maximum of the raw second
moment, bias-corrected afterwards); ``anyoptim.optax.amsgrad`` follows ``optax.amsgrad`` (the
maximum of the bias-corrected moment). ``cautious=True`` is the same update as the
``Cautious*`` classes, which are tested against their references in test_adabelief_family.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

import anyoptim as optim
from anyoptim.utils import tree_flatten
from test_adabelief_family import LR, _leaves, _problem, _rel, _tree, core_vs_torch, optax_pair

TOL = {"float64": 1e-12, "float32": 1e-6}
# MLX's Adam computes its bias corrections and its decay factor 1 - lr*wd in float32 (a
# float32 step and learning rate), which anyoptim keeps for MLX parity. Against torch's float64
# scalars that costs, over 60 steps, 1.1e-7 (float64) and 1.9e-7 (float32) relative without
# weight decay, 2.3e-6 with wd=0.1 (measured); without bias correction or decay the comparison
# is exact (1e-12, test_amsgrad_without_bias_correction_vs_written_out).
BC_TOL = 5e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_amsgrad_core_vs_torch(wd: float, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    if wd:
        def ours() -> optim.Optimizer:
            return optim.AdamW(LR, weight_decay=wd, bias_correction=True, amsgrad=True)

        def ref(ps: list[Any]) -> Any:
            return torch.optim.AdamW(ps, lr=LR, weight_decay=wd, amsgrad=True, foreach=False)
    else:
        def ours() -> optim.Optimizer:
            return optim.Adam(LR, betas=(0.8, 0.99), bias_correction=True, amsgrad=True)

        def ref(ps: list[Any]) -> Any:
            return torch.optim.Adam(ps, lr=LR, betas=(0.8, 0.99), amsgrad=True, foreach=False)
    core_vs_torch(ours, ref, dtype, f"Adam amsgrad wd={wd}/{dtype} vs torch.optim",
                  tol=BC_TOL)


def _written_out(p0: list[np.ndarray], grads: list[list[np.ndarray]], lr: float,
                 b1: float, b2: float, eps: float) -> list[np.ndarray]:
    """MLX's Adam (no bias correction) with the AMSGrad maximum, in float64."""
    ps = [p.astype(np.float64) for p in p0]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    vmax = [np.zeros_like(p) for p in ps]
    for gs in grads:
        for i, g in enumerate(gs):
            g = g.astype(np.float64)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            vmax[i] = np.maximum(vmax[i], v[i])
            ps[i] = ps[i] - lr * m[i] / (np.sqrt(vmax[i]) + eps)
    return ps


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_amsgrad_without_bias_correction_vs_written_out(dtype: str) -> None:
    p0, grads = _problem(5, dtype)
    opt = optim.Adam(LR, amsgrad=True)
    params = _tree([p.copy() for p in p0])
    for gs in grads:
        params = opt.apply_gradients(_tree(gs), params)
    expected = _written_out(p0, grads, LR, 0.9, 0.999, 1e-8)
    worst = max(_rel(x, y) for x, y in zip(_leaves(params), expected))
    assert worst <= TOL[dtype], worst
    # the maximum really is kept: v_max >= v everywhere, and > v somewhere after 60 steps
    v, vmax = opt.state["enc"]["w"]["v"], opt.state["enc"]["w"]["v_max"]
    assert np.all(vmax >= v) and np.any(vmax > v)


def test_amsgrad_differs_from_adam_and_off_is_unchanged() -> None:
    p0, grads = _problem(6, "float64")
    runs = {}
    for label, opt in (("adam", optim.Adam(LR)), ("off", optim.Adam(LR, amsgrad=False)),
                       ("ams", optim.Adam(LR, amsgrad=True))):
        params = _tree([p.copy() for p in p0])
        for gs in grads:
            params = opt.apply_gradients(_tree(gs), params)
        runs[label] = _leaves(params)
        runs[label + "-state"] = sorted(opt.state["scale"])
    for x, y in zip(runs["adam"], runs["off"]):
        np.testing.assert_array_equal(x, y)
    assert max(_rel(x, y) for x, y in zip(runs["adam"], runs["ams"])) > 1e-6
    assert runs["off-state"] == ["m", "v"]
    assert runs["ams-state"] == ["m", "v", "v_max"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("flag", "named"), [
    (lambda: optim.Adam(LR, cautious=True), lambda: optim.CautiousAdam(LR)),
    (lambda: optim.AdamW(LR, weight_decay=0.1, bias_correction=True, cautious=True,
                         cautious_scale="count"),
     lambda: optim.CautiousAdamW(LR, weight_decay=0.1, bias_correction=True,
                                 cautious_scale="count")),
    (lambda: optim.Lion(LR, weight_decay=0.1, cautious=True),
     lambda: optim.CautiousLion(LR, weight_decay=0.1)),
], ids=["Adam", "AdamW-count", "Lion"])
def test_cautious_flag_equals_cautious_class(flag: Any, named: Any, dtype: str) -> None:
    p0, grads = _problem(8, dtype)
    a, b = flag(), named()
    pa, pb = _tree([p.copy() for p in p0]), _tree([p.copy() for p in p0])
    for gs in grads:
        pa = a.apply_gradients(_tree(gs), pa)
        pb = b.apply_gradients(_tree(gs), pb)
    for x, y in zip(_leaves(pa), _leaves(pb)):
        np.testing.assert_array_equal(x, y)
    # and it is cautious: a plain run differs
    plain = type(named()).__mro__[1](LR)
    pc = _tree([p.copy() for p in p0])
    for gs in grads:
        pc = plain.apply_gradients(_tree(gs), pc)
    assert max(_rel(x, y) for x, y in zip(_leaves(pa), _leaves(pc))) > 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cautious_amsgrad_adamw_vs_torch_written_out(dtype: str) -> None:
    """Both flags together: torch's AMSGrad step, masked and rescaled as in the paper."""
    torch = pytest.importorskip("torch")

    class Reference:
        def __init__(self, ps: list[Any]) -> None:
            self.ps, self.t = ps, 0
            self.m = [torch.zeros_like(p) for p in ps]
            self.v = [torch.zeros_like(p) for p in ps]
            self.vmax = [torch.zeros_like(p) for p in ps]

        @torch.no_grad()
        def step(self) -> None:
            self.t += 1
            b1, b2, eps, wd = 0.9, 0.999, 1e-8, 0.1
            for i, p in enumerate(self.ps):
                g = p.grad
                p.mul_(1 - LR * wd)
                self.m[i].mul_(b1).add_(g, alpha=1 - b1)
                self.v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
                torch.maximum(self.vmax[i], self.v[i], out=self.vmax[i])
                denom = self.vmax[i].sqrt() / (1 - b2**self.t) ** 0.5 + eps
                u = (self.m[i] / (1 - b1**self.t)) / denom
                mask = (u * g > 0).to(g.dtype)
                mask = mask / mask.mean().clamp(min=1e-3)
                p.add_(u * mask, alpha=-LR)

    core_vs_torch(lambda: optim.AdamW(LR, weight_decay=0.1, bias_correction=True,
                                      amsgrad=True, cautious=True),
                  Reference, dtype, f"AdamW amsgrad+cautious/{dtype} vs written out",
                  tol=BC_TOL)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kw", [{}, {"b1": 0.8, "b2": 0.95, "eps_root": 1e-10},
                                {"bias_correction_mu": False, "bias_correction_nu": False},
                                {"bias_correction_nu": False}], ids=str)
def test_optax_amsgrad_vs_optax(kw: dict, dtype: str) -> None:
    optax = pytest.importorskip("optax")
    from anyoptim import optax as aox

    optax_pair(lambda: aox.amsgrad(LR, **kw), lambda: optax.amsgrad(LR, **kw),
               f"anyoptim.optax.amsgrad {kw}/{dtype} vs optax.amsgrad", dtype)


def test_optax_amsgrad_schedule_state_and_errors() -> None:
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    from anyoptim import optax as aox

    schedule = optax.cosine_decay_schedule(LR, 20)
    optax_pair(lambda: aox.amsgrad(schedule), lambda: optax.amsgrad(schedule),
               "anyoptim.optax.amsgrad cosine/float32 vs optax.amsgrad", "float32")
    state = aox.amsgrad(LR).init({"w": jnp.zeros(3)})
    assert sorted(state.moments) == ["mu", "nu", "nu_max"]
    with pytest.raises(ValueError, match="b2"):
        aox.amsgrad(LR, b2=1.0)
    with pytest.raises(ValueError, match="bias_correction_nu"):
        aox.amsgrad(LR, bias_correction_nu=1)


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (optim.Adam, {"amsgrad": 1}, "amsgrad"),
    (optim.AdamW, {"cautious": "yes"}, "cautious"),
    (optim.Lion, {"cautious": True, "cautious_scale": "median"}, "cautious_scale"),
])
def test_bad_flags_are_refused(cls: Any, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(0.01, **kwargs)


def test_flags_are_keyword_only_and_saved(tmp_path: Any) -> None:
    for cls in (optim.Adam, optim.AdamW, optim.Lion):
        params = inspect.signature(cls.__init__).parameters
        assert params["cautious"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(optim.Adam).parameters["amsgrad"].kind is inspect.Parameter.KEYWORD_ONLY
    opt = optim.AdamW(optim.cosine_decay(0.01, 10), amsgrad=True, cautious=True,
                      bias_correction=True)
    p0, grads = _problem(9, "float32")
    params = _tree([p.copy() for p in p0])
    for gs in grads[:5]:
        params = opt.apply_gradients(_tree(gs), params)
    optim.save(tmp_path / "ckpt", opt, params)
    back = optim.load(tmp_path / "ckpt")
    params_back = optim.load_params(tmp_path / "ckpt")
    assert (back.amsgrad, back.cautious) == (True, True)
    for gs in grads[5:10]:
        params = opt.apply_gradients(_tree(gs), params)
        params_back = back.apply_gradients(_tree(gs), params_back)
    for (k, x), (_, y) in zip(tree_flatten(params), tree_flatten(params_back)):
        np.testing.assert_array_equal(x, y, err_msg=k)
