"""``to_anyoptim`` for the drop-ins of other libraries' optimizers: prodigyopt's ``Prodigy``
and pytorch_optimizer's ``Lamb``, ``LARS`` and ``SimplifiedAdEMAMix``.

Each entry gives the anyoptim class with the same maths, the state names it uses, the
constructor arguments equivalent to a group (or a ValueError naming what it lacks), and the
optimizer-wide scalars (Prodigy's ``d``) that live in the groups on the torch side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .. import _backend
from .. import optimizers as _core
from ._prodigy import Prodigy
from ._simplified import SimplifiedAdEMAMix, simplified_options
from ._trust import LARS, Lamb, lamb_options, lars_options

Refuse = Callable[[str, str], None]


def _prodigy_kwargs(h: Mapping[str, Any], lr: Any, refuse: Refuse) -> dict[str, Any]:
    return {"learning_rate": lr, "betas": [float(b) for b in h["betas"]], "beta3": h["beta3"],
            "eps": h["eps"], "weight_decay": h["weight_decay"], "decouple": h["decouple"],
            "use_bias_correction": h["use_bias_correction"],
            "safeguard_warmup": h["safeguard_warmup"], "d0": h["d0"], "d_coef": h["d_coef"],
            "growth_rate": h["growth_rate"]}


def _lamb_kwargs(h: Mapping[str, Any], lr: Any, refuse: Refuse) -> dict[str, Any]:
    if h.get("pre_norm") and h.get("max_grad_norm", 0) != 0:
        refuse("pre_norm", "anyoptim.LAMB does not scale by the global gradient norm; wrap it "
                           "in a clipping transform instead")
    kw = lamb_options(h)
    kw["betas"] = list(kw["betas"])
    return {"learning_rate": lr, **kw}


def _lars_kwargs(h: Mapping[str, Any], lr: Any, refuse: Refuse) -> dict[str, Any]:
    return {"learning_rate": lr, **lars_options(h)}


def _simplified_kwargs(h: Mapping[str, Any], lr: Any, refuse: Refuse) -> dict[str, Any]:
    kw = simplified_options(h)
    kw["betas"] = [float(b) for b in kw["betas"]]
    return {"learning_rate": lr, **kw}


#: class name -> (drop-in, anyoptim class, torch name -> anyoptim name, group -> kwargs)
TABLE: dict[str, tuple[type, type[_core.Optimizer], dict[str, str],
                       Callable[[Mapping[str, Any], Any, Refuse], dict[str, Any]]]] = {
    "Prodigy": (Prodigy, _core.Prodigy, {"exp_avg": "m", "exp_avg_sq": "v"}, _prodigy_kwargs),
    "Lamb": (Lamb, _core.LAMB, {"exp_avg": "m", "exp_avg_sq": "v"}, _lamb_kwargs),
    "LARS": (LARS, _core.LARS, {"momentum_buffer": "b"}, _lars_kwargs),
    "SimplifiedAdEMAMix": (SimplifiedAdEMAMix, _core.SimplifiedAdEMAMix,
                           {"exp_avg": "m", "exp_avg_sq": "v"}, _simplified_kwargs),
}


def check_groups(cls_name: str, optimizer: torch.optim.Optimizer,
                 kwargs_per_group: list[dict[str, Any]]) -> None:
    """Prodigy estimates one ``d`` for all groups: one anyoptim Prodigy, so the groups must
    agree."""
    if cls_name == "Prodigy" and any(kw != kwargs_per_group[0] for kw in kwargs_per_group):
        raise ValueError(
            "anyoptim.torch.to_anyoptim: Prodigy's parameter groups have different "
            "hyperparameters (or a frozen lr=0 group); anyoptim's Prodigy estimates one d for "
            "all of them from one set of hyperparameters. Keep training with "
            "anyoptim.torch.Prodigy."
        )


def extra_state(cls_name: str, optimizer: torch.optim.Optimizer, like: Any) -> dict[str, Any]:
    """The optimizer-wide scalars of the anyoptim state (Prodigy's ``d``, ``d_max``,
    ``d_numerator``, kept in float64 as anyoptim keeps them), in ``like``'s library."""
    if cls_name != "Prodigy":
        return {}
    first = optimizer.param_groups[0]
    return {key: _backend.to_library(np.asarray(float(first[key]), np.float64), like)
            for key in ("d", "d_max", "d_numerator")}


def step_of(cls_name: str, optimizer: torch.optim.Optimizer, counted: set[int]) -> int:
    """The anyoptim step: Prodigy counts its updates in the groups' ``k``."""
    if cls_name == "Prodigy":
        return int(optimizer.param_groups[0]["k"])
    return counted.pop() if counted else 0
