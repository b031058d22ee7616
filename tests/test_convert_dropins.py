"""``anyoptim.torch.to_anyoptim`` for the drop-ins of prodigyopt's and pytorch_optimizer's
optimizers: k steps under torch, converted, saved and continued on NumPy, against an
uninterrupted torch run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import anyoptim

torch = pytest.importorskip("torch")
import anyoptim.torch as at  # noqa: E402

CASES: dict[str, tuple[Any, type, float]] = {
    "Prodigy": (lambda ps: at.Prodigy(ps, weight_decay=0.01, d0=1e-2), anyoptim.Prodigy, 1e-5),
    "Prodigy-bias-correction": (
        lambda ps: at.Prodigy(ps, use_bias_correction=True, safeguard_warmup=True, d0=1e-2),
        anyoptim.Prodigy, 1e-5),
    "Lamb": (lambda ps: at.Lamb(ps, lr=1e-2, weight_decay=0.1), anyoptim.LAMB, 1e-6),
    "Lamb-coupled-adam": (lambda ps: at.Lamb(ps, lr=1e-2, weight_decay=0.1,
                                             weight_decouple=False, adam=True),
                          anyoptim.LAMB, 1e-6),
    "LARS": (lambda ps: at.LARS(ps, lr=0.5, weight_decay=0.01, nesterov=True),
             anyoptim.LARS, 1e-6),
    "SimplifiedAdEMAMix": (lambda ps: at.SimplifiedAdEMAMix(ps, lr=1e-3, alpha=2.0,
                                                             weight_decay=0.1,
                                                             beta1_warmup=8),
                           anyoptim.SimplifiedAdEMAMix, 1e-6),
}


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("case", list(CASES))
def test_torch_run_continues_on_numpy(case: str, tmp_path: Path) -> None:
    make, core_cls, tol = CASES[case]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = make(model.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    gen = torch.Generator().manual_seed(3)
    grads = [{n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
             for _ in range(12)]

    def torch_steps(model: Any, opt: Any, steps: list[dict[str, Any]]) -> None:
        for gs in steps:
            for n, p in model.named_parameters():
                p.grad = gs[n].clone()
            opt.step()

    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch_steps(model, opt, grads[:5])
    converted = at.to_anyoptim(opt, model)
    assert type(converted) is core_cls
    path = tmp_path / "run.safetensors"
    at.save(path, opt, model)
    reference = copy.deepcopy((model, opt))
    torch_steps(*reference, grads[5:])
    restored = anyoptim.load(path, library="numpy")
    assert type(restored) is core_cls
    params = anyoptim.load_params(path, library="numpy")
    assert sorted(params) == sorted(names)
    for gs in grads[5:]:
        restored.update(params, {n: g.numpy() for n, g in gs.items()})
    worst = max(_rel(params[n], p.detach().numpy()) for n, p in reference[0].named_parameters())
    moved = max(_rel(params[n], start[n].numpy()) for n in names)
    print(f"\n{case}: {worst:.3g} (moved {moved:.3g})")
    assert moved > 1e-3
    assert worst < tol, worst


def test_refusals() -> None:
    w = [torch.nn.Parameter(torch.ones(2, 2))]
    for opt, match in ((at.Lamb(w, pre_norm=True), "pre_norm"),
                       (at.LARS(w, maximize=True), "maximize"),
                       (at.SimplifiedAdEMAMix(w, maximize=True), "maximize")):
        with pytest.raises(ValueError, match=match):
            at.to_anyoptim(opt)
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = at.Prodigy([{"params": [a]}, {"params": [b], "weight_decay": 0.1}])
    with pytest.raises(ValueError, match="one d for"):
        at.to_anyoptim(opt)
