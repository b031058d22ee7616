"""Conversions between the torch drop-ins and plain anyoptim optimizers (``to_anyoptim``, ``from_anyoptim``) and their checkpoints (``save``, ``load``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import optimizers as _core
from . import _convert_more
from ._adam import Adam, AdamW
from ._adaptive import Adadelta, Adagrad, Adamax, Lion
from ._classic import SGD, RMSprop
from ._common import _SCALAR_KEYS, _zeros
from ._matrix import Adafactor, Muon, _muon_options
from ._wrap import Optimizer


# =============================================================================== across front-ends
def _param_names(opt: torch.optim.Optimizer,
                 model: torch.nn.Module | None) -> list[tuple[str, Tensor, int]]:
    by_id = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
    out = []
    position = 0
    for gi, group in enumerate(opt.param_groups):
        names = group.get("param_names")
        for i, p in enumerate(group["params"]):
            name = by_id.get(id(p)) or (names[i] if names else None) or str(position)
            out.append((name, p, gi))
            position += 1
    return out


def _plain_value(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item()
    if isinstance(value, tuple):
        return [_plain_value(v) for v in value]
    return value


_TO_ANYOPTIM: dict[str, tuple[type[_core.Optimizer], dict[str, str]]] = {
    "SGD": (_core.SGD, {"momentum_buffer": "v"}),
    "Adam": (_core.Adam, {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "v_max"}),
    "AdamW": (_core.AdamW, {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "v_max"}),
    "RMSprop": (_core.RMSprop, {"square_avg": "v"}),
    "Adagrad": (_core.Adagrad, {"sum": "v"}),
    "Adadelta": (_core.AdaDelta, {"square_avg": "v", "acc_delta": "u"}),
    "Lion": (_core.Lion, {"exp_avg": "m"}),
    "Muon": (_core.Muon, {"momentum_buffer": "v"}),
    "Adafactor": (_core.Adafactor, {}),
    **{name: (entry[1], entry[2]) for name, entry in _convert_more.TABLE.items()},
}


#: The drop-ins to_anyoptim converts (a subclass of one converts as that class)
_DROP_INS: dict[str, type] = {
    cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Lion, Muon,
                                  Adafactor, *(e[0] for e in _convert_more.TABLE.values()))
}


def _anyoptim_kwargs(cls_name: str, h: Mapping[str, Any]) -> dict[str, Any]:
    """The anyoptim constructor arguments equivalent to a torch-style group, or a ValueError
    naming the option anyoptim's class lacks."""
    def refuse(key: str, why: str) -> None:
        raise ValueError(
            f"anyoptim.torch.to_anyoptim: {cls_name} with {key}={h.get(key)!r} has no anyoptim "
            f"equivalent ({why}); keep training with anyoptim.torch.{cls_name}, or wrap an "
            "anyoptim optimizer in anyoptim.torch.Optimizer from the start."
        )

    if h.get("maximize"):
        refuse("maximize", "anyoptim always minimises")
    lr = _plain_value(h.get("lr"))
    if cls_name in ("Adam", "AdamW"):
        kw = {"learning_rate": lr, "betas": _plain_value(tuple(h["betas"])), "eps": h["eps"],
              "bias_correction": True, "amsgrad": bool(h.get("amsgrad", False))}
        if cls_name == "AdamW" or h.get("decoupled_weight_decay"):
            return {**kw, "weight_decay": h["weight_decay"], "_class": "AdamW"}
        if h["weight_decay"] != 0:
            refuse("weight_decay", "anyoptim's Adam has no L2 term")
        return kw
    if cls_name == "SGD":
        return {"learning_rate": lr, "momentum": h["momentum"],
                "weight_decay": h["weight_decay"], "dampening": h["dampening"],
                "nesterov": h["nesterov"]}
    if cls_name == "RMSprop":
        for key in ("momentum", "weight_decay"):
            if h[key] != 0:
                refuse(key, "anyoptim's RMSprop has none")
        if h["centered"]:
            refuse("centered", "anyoptim's RMSprop is not centered")
        return {"learning_rate": lr, "alpha": h["alpha"], "eps": h["eps"]}
    if cls_name == "Adagrad":
        for key in ("lr_decay", "weight_decay"):
            if h[key] != 0:
                refuse(key, "anyoptim's Adagrad has none")
        return {"learning_rate": lr, "eps": h["eps"]}
    if cls_name == "Adadelta":
        if h["weight_decay"] != 0:
            refuse("weight_decay", "anyoptim's AdaDelta has none")
        return {"learning_rate": lr, "rho": h["rho"], "eps": h["eps"]}
    if cls_name == "Lion":
        return {"learning_rate": lr, "betas": list(h["betas"]),
                "weight_decay": h["weight_decay"]}
    if cls_name == "Muon":
        return {"learning_rate": lr, **_muon_options(h)}
    if cls_name == "Adafactor":
        return {"learning_rate": lr, "eps": tuple(h["eps"]),
                "clip_threshold": h["clip_threshold"], "decay_rate": h["decay_rate"],
                "beta_1": h["beta1"], "weight_decay": h["weight_decay"],
                "scale_parameter": h["scale_parameter"], "relative_step": h["relative_step"],
                "warmup_init": h["warmup_init"]}
    if cls_name in _convert_more.TABLE:
        return _convert_more.TABLE[cls_name][3](h, lr, refuse)
    raise ValueError(
        f"anyoptim.torch.to_anyoptim: {cls_name} has no anyoptim equivalent with the same "
        "maths (torch's Adamax corrects the bias and puts eps inside the maximum); keep "
        "training with anyoptim.torch.Adamax."
    )


def to_anyoptim(optimizer: torch.optim.Optimizer,
                model: torch.nn.Module | None = None) -> _core.Optimizer:
    """The plain anyoptim optimizer that continues a run of an ``anyoptim.torch`` optimizer.

    For :class:`Optimizer` this is the wrapped optimizer itself. For the torch-style classes
    it is the anyoptim class with the same maths (``AdamW`` becomes
    ``anyoptim.AdamW(..., bias_correction=True)``, ``Adam`` ``anyoptim.Adam``, ...), with the
    state keyed by parameter name (``model.named_parameters()`` names if ``model`` is given,
    else the ``(name, tensor)`` names the optimizer was built with, else positions ``"0"``,
    ``"1"``, ...) and state names translated (``exp_avg`` becomes ``m``). Parameter groups with
    different hyperparameters become a :class:`anyoptim.MultiOptimizer`. The state tensors are
    shared, not copied.

    Save the result with :func:`anyoptim.save` (or use :func:`save`) and load it on NumPy,
    JAX or MLX with :func:`anyoptim.load`; it continues within the dtype's rounding (the
    learning rate becomes a float32 value, as in MLX).

    Raises:
        ValueError: an option anyoptim's class lacks (e.g. ``maximize``, torch's ``Adamax``),
            or per-parameter steps that differ (anyoptim counts one step for all).
    """
    if isinstance(optimizer, Optimizer):
        return optimizer.anyoptim_optimizer
    cls_name = type(optimizer).__name__
    found = next((c for c in type(optimizer).__mro__ if _DROP_INS.get(c.__name__) is c), None)
    if found is None:
        if isinstance(optimizer, Adamax):
            _anyoptim_kwargs("Adamax", {})
        raise TypeError(
            f"anyoptim.torch.to_anyoptim: expected an anyoptim.torch optimizer, got "
            f"{type(optimizer).__module__}.{cls_name}"
        )
    cls_name = found.__name__
    core_cls, renames = _TO_ANYOPTIM[cls_name]
    names = _param_names(optimizer, model)
    kwargs_per_group = []
    for group in optimizer.param_groups:
        kw = _anyoptim_kwargs(cls_name, group)
        kwargs_per_group.append(kw)
    _convert_more.check_groups(cls_name, optimizer, kwargs_per_group)
    distinct: list[dict[str, Any]] = []
    for kw in kwargs_per_group:
        if kw not in distinct:
            distinct.append(kw)
    subs = []
    for kw in distinct:
        kw = dict(kw)
        cls = _core.AdamW if kw.pop("_class", None) == "AdamW" else core_cls
        subs.append(cls(**kw))
    owner = [distinct.index(kw) for kw in kwargs_per_group]
    states: list[dict[str, Any]] = [{} for _ in subs]
    steps: list[set[int]] = [set() for _ in subs]
    for name, p, gi in names:
        st = optimizer.state.get(p)
        if not st:
            continue
        sub = owner[gi]
        leaf = {renames.get(k, k): v for k, v in st.items() if k not in _SCALAR_KEYS}
        if cls_name == "SGD" and "v" not in leaf:
            leaf["v"] = _zeros(p)
        states[sub][name] = leaf
        if "step" in st:
            steps[sub].add(int(st["step"]))
    for sub_opt, state, counted in zip(subs, states, steps):
        if len(counted) > 1:
            raise ValueError(
                f"anyoptim.torch.to_anyoptim: the parameters have different step counts "
                f"{sorted(counted)} (some had no gradient at some steps); anyoptim counts one "
                "step for all parameters."
            )
        if not state:
            continue
        like = next(t for leaf in state.values() for t in leaf.values())
        # SGD, Lion, Muon, LARS: the step is not used
        step = _convert_more.step_of(cls_name, optimizer, counted)
        new = {"step": _backend.to_library(_backend.host_scalar(step, np.uint64), like)}
        if "learning_rate" in sub_opt.state:
            new["learning_rate"] = _backend.to_library(sub_opt.state["learning_rate"], like)
        new.update(_convert_more.extra_state(cls_name, optimizer, like))
        new.update(state)
        sub_opt.state = new
    if len(subs) == 1:
        return subs[0]
    members = [{name for name, _p, gi in names if owner[gi] == i} for i in range(len(subs))]
    return _core.MultiOptimizer(subs, [_NameFilter(m) for m in members[:-1]])


class _NameFilter:
    """A MultiOptimizer filter accepting the parameters with these names (picklable)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def __call__(self, path: str, array: Any) -> bool:
        return path in self.names


def from_anyoptim(optimizer: _core.Optimizer, params: Any) -> Optimizer:
    """Continue a plain anyoptim optimizer (e.g. restored by :func:`anyoptim.load`) on torch
    parameters: an :class:`Optimizer` wrapping it, its state matched to ``params`` by name.

    Args:
        optimizer: the anyoptim optimizer, with or without state.
        params: ``model.named_parameters()`` (names must match the state's keys), or tensors /
            groups (then the state's keys must be positions ``"0"``, ``"1"``, ...).
    """
    return Optimizer(params, optimizer)


def save(path: Any, optimizer: torch.optim.Optimizer, model: torch.nn.Module | None = None,
         params: bool = True) -> None:
    """Write an ``anyoptim.torch`` optimizer (and the parameters) as an anyoptim checkpoint.

    The file loads with :func:`anyoptim.load` into any array library (state keyed by
    parameter name) and with :func:`load` back into torch.

    Args:
        path: the safetensors file to write.
        optimizer: an optimizer of this module.
        model: optional, gives the parameter names (else the optimizer's ``(name, tensor)``
            names, else positions).
        params: also store the parameters (read them with :func:`anyoptim.load_params`).
    """
    from ..io import save as _save

    opt = to_anyoptim(optimizer, model)
    tree = None
    if params:
        tree = {name: p.detach() for name, p, _ in _param_names(optimizer, model)}
    if isinstance(optimizer, Optimizer):
        names = {p: n for names_, g in zip(optimizer._names(), optimizer.param_groups)
                 for p, n in zip(g["params"], names_)}
        tree = {names[p]: p.detach() for g in optimizer.param_groups for p in g["params"]} \
            if params else None
    _save(path, opt, tree)


def load(path: Any, params: Any, *, filters: Any = None,
         schedules: Mapping[str, Callable[[Any], Any]] | None = None) -> Optimizer:
    """Continue an anyoptim checkpoint (from any front-end) on torch parameters.

    Args:
        path: a file written by :func:`anyoptim.save` or :func:`save`.
        params: ``model.named_parameters()`` (names must match the file's), or tensors.
        filters: the filters of a saved MultiOptimizer (see :func:`anyoptim.load`).
        schedules: custom schedules (see :func:`anyoptim.load`).

    Returns:
        An :class:`Optimizer` running the saved optimizer, state on the parameters' devices.
    """
    from ..io import load as _load

    params = list(params)
    opt = _load(path, library="torch", filters=filters, schedules=schedules)
    return Optimizer(params, opt)
