"""torch ``param_groups`` from anyoptim's group specs (:func:`anyoptim.group`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..optimizers._groups import SCALES, Group, assign

__all__ = ["param_groups"]

# anyoptim's hyperparameter names that torch optimizers spell differently
_TORCH_NAMES = {"learning_rate": "lr"}


def param_groups(model: Any, groups: Group | Sequence[Group], **defaults: Any) -> list[dict[str, Any]]:
    """torch ``param_groups`` for ``model`` (an ``nn.Module`` or ``(name, parameter)`` pairs):
    one dict per group that selects parameters, then one for the rest; each carries its
    group's values (``learning_rate`` as ``lr``; ``lr_scale`` / ``wd_scale`` multiply
    ``defaults["lr"]`` / ``defaults["weight_decay"]``, which must then be given).

    Example:
        >>> import torch, anyoptim as optim
        >>> from anyoptim.torch import param_groups
        >>> model = torch.nn.Linear(3, 2)
        >>> pg = param_groups(model, [optim.no_decay_1d()])
        >>> opt = torch.optim.AdamW(pg, lr=1e-3, weight_decay=0.1)
        >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
        [(1, 0.0), (1, 0.1)]
    """
    named: Iterable[tuple[str, Any]] = (
        model.named_parameters() if hasattr(model, "named_parameters") else model)
    pairs = [(n, p) for n, p in named if getattr(p, "requires_grad", True)]
    specs = (groups,) if isinstance(groups, Group) else tuple(groups)
    member = assign(type("param_groups", (), {})(), specs, [n for n, _ in pairs],
                    [p for _, p in pairs])
    out: list[dict[str, Any]] = []
    for i, g in enumerate(specs):
        params = [p for (_, p), m in zip(pairs, member) if m == i]
        if not params:
            continue
        entry: dict[str, Any] = {"params": params}
        for key, value in g.values.items():
            if key in SCALES:
                base_key = "lr" if key == "lr_scale" else "weight_decay"
                base = entry.get(base_key, g.values.get(
                    "learning_rate" if base_key == "lr" else base_key, defaults.get(base_key)))
                if base is None:
                    raise ValueError(
                        f"param_groups: {g} uses {key}; pass {base_key}=... to param_groups so "
                        "the scaled value can be computed"
                    )
                entry[base_key] = base * value
            else:
                entry.setdefault(_TORCH_NAMES.get(key, key), value)
        out.append(entry)
    rest = [p for (_, p), m in zip(pairs, member) if m < 0]
    if rest:
        out.append({"params": rest})
    return out
