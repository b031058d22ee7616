"""``anyoptim.torch.Optimizer``: any configured anyoptim optimizer as a torch.optim.Optimizer."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import optimizers as _core
from ._common import (
    _SCALAR_KEYS,
    Closure,
    _check_betas,
    _check_grad,
    _check_lr,
    _is_number,
    _lr_value,
    _SpecSchedule,
)
from ._frontend import _FrontEnd


# =============================================================================== any optimizer
def _same(a: Any, b: Any) -> bool:
    """Equal configuration values (a list equals a tuple; tensors only themselves)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _host_value(x: Any) -> Any:
    if _backend.library_name(x) is None:
        return x
    return float(np.asarray(_backend._to_numpy(x)))


class Optimizer(_FrontEnd):
    r"""Any configured anyoptim optimizer as a ``torch.optim.Optimizer``.

    The wrapped optimizer runs exactly as it does in anyoptim (MLX's update rules and
    defaults, one global step, anyoptim schedules, :class:`anyoptim.MultiOptimizer`), on the
    parameters with a gradient, keyed by their names (from ``(name, tensor)`` pairs, else
    their positions ``"0"``, ``"1"``, ...).

    Param groups hold ``lr`` and the optimizer's hyperparameters under their anyoptim names
    (``betas``, ``eps``, ``weight_decay``, ``momentum``, ...; a MultiOptimizer's groups hold
    none). A value written into a group (per-group weight decay, a torch LR scheduler, nanoGPT's
    ``group['lr'] = ...``) is used from the next step on. With an anyoptim learning-rate
    schedule, ``group['lr']`` shows the rate of the next step; writing another value there
    overrides the schedule for one step, and attaching a torch LR scheduler as well is an error.

    ``state[p]`` is the wrapped optimizer's state dict of ``p``; ``state_dict()`` adds the
    step counter to each parameter's entry (torch's format), and the optimizer's other
    top-level scalars (NAdam's ``mu_product``, the schedule-free weights), so that a resumed
    run continues them.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        optimizer: the anyoptim optimizer to run. If it already has state (e.g. from
            :func:`anyoptim.load`), that state is matched to the parameters by name.

    Example:
        >>> import torch, anyoptim, anyoptim.torch
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = anyoptim.torch.Optimizer(model.named_parameters(),
        ...                                anyoptim.AdamW(anyoptim.cosine_decay(1e-2, 100)))
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> opt.step()
        >>> int(opt.anyoptim_optimizer.step)
        1
    """

    def __init__(self, params: Any, optimizer: _core.Optimizer) -> None:
        if not isinstance(optimizer, _core.Optimizer):
            raise TypeError(
                f"anyoptim.torch.Optimizer: optimizer must be an anyoptim optimizer (e.g. "
                f"anyoptim.AdamW(1e-3)), got {type(optimizer).__name__}; for torch-style "
                "arguments use anyoptim.torch.AdamW(params, lr=...) and friends."
            )
        from ..optimizers._wrapper import Wrapper

        if isinstance(optimizer, Wrapper):
            raise TypeError(
                f"anyoptim.torch.Optimizer: {type(optimizer).__name__} wraps an optimizer, and "
                "its state (averages, accumulators) has no place in torch's per-parameter "
                "state_dict. Wrap the inner optimizer (anyoptim.torch.Optimizer(params, "
                f"{type(optimizer.optimizer).__name__}(...))) and use torch's own tools around "
                "it (torch.optim.swa_utils.AveragedModel for EMA/SWA, step() every k backward "
                "passes for accumulation, torch.nn.utils.clip_grad_norm_ for clipping), or "
                "call the wrapper with anyoptim's API: opt.update(model, grads)."
            )
        self.anyoptim_optimizer = optimizer
        self._lr_written: list[Any] = []
        super().__init__(params, self._defaults_of(optimizer))
        self._attach_existing_state()
        self._write_scheduled_lrs()

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def _subs(opt: _core.Optimizer) -> list[_core.Optimizer]:
        return list(opt.optimizers) if isinstance(opt, _core.MultiOptimizer) else [opt]

    def _defaults_of(self, opt: _core.Optimizer) -> dict[str, Any]:
        if isinstance(opt, _core.MultiOptimizer):
            return {}
        defaults: dict[str, Any] = {}
        if "learning_rate" in opt.state:
            defaults["lr"] = _host_value(opt.state["learning_rate"])
        elif isinstance(opt, _core.Adafactor):
            defaults["lr"] = None
        for name in opt.hyperparameters:
            value = getattr(opt, name)
            defaults[name] = tuple(value) if isinstance(value, list) else value
        return defaults

    def _schedule(self) -> Any:
        opt = self.anyoptim_optimizer
        if isinstance(opt, _core.MultiOptimizer):
            return None
        return opt._schedulers.get("learning_rate")

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        for key, value in group.items():
            if key == "lr" and value is not None:
                _check_lr("Optimizer", where, value)
            elif key == "betas":
                _check_betas("Optimizer", where, value)

    def _names(self) -> list[list[str]]:
        """Each group's parameter names (``param_names``, else global positions)."""
        out = []
        position = 0
        for group in self.param_groups:
            names = group.get("param_names")
            if names is None:
                names = [str(i) for i in range(position, position + len(group["params"]))]
            out.append(list(names))
            position += len(group["params"])
        return out

    def _leaf_states(self) -> dict[str, tuple[dict[str, Any], _core.Optimizer]]:
        """Per-parameter state dicts of the wrapped optimizer by name, with their owner."""
        found: dict[str, tuple[dict[str, Any], _core.Optimizer]] = {}
        for sub in self._subs(self.anyoptim_optimizer):
            for key, value in sub.state.items():
                if isinstance(value, dict) and key not in ("step", "learning_rate"):
                    found[key] = (value, sub)
        return found

    def _attach_existing_state(self) -> None:
        leaves = self._leaf_states()
        if not leaves:
            return
        for gi, (group, names) in enumerate(zip(self.param_groups, self._names())):
            for pi, (p, name) in enumerate(zip(group["params"], names)):
                entry = leaves.get(name)
                if entry is None:
                    continue
                st = entry[0]
                for key, value in st.items():
                    if _backend.library_name(value) is None:
                        continue
                    shape = tuple(value.shape)
                    if len(shape) == p.dim() and shape != tuple(p.shape):
                        raise ValueError(
                            f"anyoptim.torch.Optimizer: param_groups[{gi}]['params'][{pi}] "
                            f"({name!r}) has shape {tuple(p.shape)} but the optimizer's state "
                            f"{name}.{key} has shape {shape}; the state belongs to other "
                            "parameters."
                        )
                    if not isinstance(value, Tensor):
                        st[key] = torch.as_tensor(np.array(_backend._to_numpy(value)),
                                                  device=p.device)
                    elif value.device != p.device:
                        st[key] = value.to(p.device)
                self._mirror(p, st, entry[1])

    def _write_scheduled_lrs(self) -> None:
        """Show the learning rate of the next update in every group (schedules only)."""
        schedule = self._schedule()
        opt = self.anyoptim_optimizer
        self._lr_written = []
        for group in self.param_groups:
            if schedule is not None:
                value = _host_value(opt._schedule_value(schedule(opt.state["step"])))
                group["lr"] = value
            self._lr_written.append(group.get("lr"))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; its keys override the optimizer's hyperparameters."""
        super().add_param_group(param_group)
        if self.__dict__.get("_lr_written") is not None and self.param_groups:
            self._lr_written.append(self.param_groups[-1].get("lr"))

    def _overrides(self, gi: int, group: Mapping[str, Any]) -> dict[str, Any] | None:
        opt = self.anyoptim_optimizer
        if isinstance(opt, _core.MultiOptimizer):
            return None
        out: dict[str, Any] = {}
        for name in opt.hyperparameters:
            if name in group and not _same(group[name], getattr(opt, name)):
                out[name] = group[name]
        lr = group.get("lr")
        schedule = self._schedule()
        written = self._lr_written[gi] if gi < len(self._lr_written) else None
        if schedule is not None:
            wrapper = self.__dict__.get("step")
            if getattr(wrapper, "_wrapped_by_lr_sched", False):
                raise RuntimeError(
                    "anyoptim.torch.Optimizer: the wrapped optimizer has an anyoptim learning "
                    "rate schedule and a torch LR scheduler is attached too; use one of them "
                    "(give the anyoptim optimizer a constant learning rate to drive it with "
                    "torch.optim.lr_scheduler)."
                )
            if lr is not None and not _same(lr, written):
                out["learning_rate"] = _lr_value(lr)
        elif lr is not None and "learning_rate" in opt.state:
            if not _same(lr, written) or not _same(lr, self.defaults.get("lr")):
                out["learning_rate"] = _lr_value(lr)
        elif lr is not None:  # Adafactor with a relative step size
            out["learning_rate"] = _lr_value(lr)
        lr_set = out.get("learning_rate")
        if (lr_set is not None and _is_number(lr_set) and lr_set == 0
                and getattr(opt, "relative_step", False)):
            out["relative_step"] = False  # a zero lr moves nothing, even with a relative step
        return out or None

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Closure = None) -> Any:
        """Run one update of the wrapped optimizer on the parameters that have a gradient.

        Args:
            closure: optional; re-evaluates the model and returns the loss (called first,
                with gradients enabled).

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        opt = self.anyoptim_optimizer
        params: dict[str, Tensor] = {}
        grads: dict[str, Tensor] = {}
        per_name: dict[str, dict[str, Any]] = {}
        fresh: dict[str, Tensor] = {}
        for gi, (group, names) in enumerate(zip(self.param_groups, self._names())):
            self._validate(group, f"param_groups[{gi}]: ")
            overrides = self._overrides(gi, group)
            for pi, (p, name) in enumerate(zip(group["params"], names)):
                g = p.grad
                if g is None:
                    continue
                _check_grad("Optimizer", gi, pi, p, g)
                if name in params:
                    raise ValueError(
                        f"anyoptim.torch.Optimizer: two parameters are named {name!r}; give "
                        "every parameter its own name."
                    )
                params[name] = p
                grads[name] = g
                if overrides:
                    per_name[name] = overrides
                if not self.state.get(p):
                    fresh[name] = p
        if grads:
            leaves = self._leaf_states()
            for name, p in params.items():
                entry = leaves.get(name)
                mine = self.state.get(p)
                if entry is not None and mine:
                    # values replaced in state[p] (e.g. moved to another device) count
                    leaf = entry[0]
                    shared = _shared_keys(entry[1])
                    for key, value in mine.items():
                        if key not in _SCALAR_KEYS and key not in shared \
                                and leaf.get(key) is not value:
                            leaf[key] = value
            if fresh:
                opt.init(fresh)
            hyper = per_name.get if per_name else None
            opt.update(params, grads, hyperparameters=hyper)
            leaves = self._leaf_states()
            for name, p in params.items():
                entry = leaves.get(name)
                if entry is not None:
                    self._mirror(p, entry[0], entry[1])
        self._write_scheduled_lrs()
        return loss

    # ------------------------------------------------------------------ state dict
    def _state_shape(self, p: Tensor, key: str, value: Tensor) -> tuple[int, ...]:
        # any anyoptim optimizer: factored statistics have fewer dimensions than the parameter
        return tuple(p.shape) if value.dim() == p.dim() else tuple(value.shape)

    def _mirror(self, p: Tensor, leaf: dict[str, Any], owner: _core.Optimizer) -> None:
        """``state[p]``: the wrapped optimizer's entries of ``p`` plus its owner's step counter
        (torch's layout; distributed checkpoint restores only the keys it finds there)."""
        mine = self.state[p]
        mine.update(leaf)
        for key in (*_SCALAR_KEYS, *_shared_keys(owner)):
            value = owner.state.get(key)
            if value is not None:
                mine[key] = value

    def _export_state(self, p: Tensor, state: dict[str, Any]) -> dict[str, Any]:
        return {k: (_as_tensor(v) if k in _SCALAR_KEYS else v) for k, v in state.items()}

    def _adopt(self, state: defaultdict[Any, Any], groups: list[dict[str, Any]]) -> None:
        opt = self.anyoptim_optimizer
        names = {}
        for group in groups:
            saved_names = group.get("param_names")
            names.update({id(p): n for p, n in zip(group["params"], saved_names or [])})
        position = 0
        for group in groups:
            for p in group["params"]:
                names.setdefault(id(p), str(position))
                position += 1
        subs = self._subs(opt)
        per_sub: list[dict[str, Any]] = [{} for _ in subs]
        scalars: list[dict[str, Any]] = [{} for _ in subs]
        shared: list[dict[str, Any]] = [{} for _ in subs]
        for p, st in state.items():
            if not isinstance(p, Tensor):
                continue
            name = names[id(p)]
            index = 0
            if isinstance(opt, _core.MultiOptimizer):
                index = next(i for i, f in enumerate(opt.filters) if f(name, p))
            extra = _shared_keys(subs[index])
            leaf = {k: v for k, v in st.items() if k not in _SCALAR_KEYS and k not in extra}
            for key in extra:
                if key in st:  # one value for all parameters: the first one found
                    shared[index].setdefault(key, st[key])
            for key in _SCALAR_KEYS:
                if key in st:
                    value = int(st[key])
                    seen = scalars[index].setdefault(key, value)
                    if seen != value:
                        raise ValueError(
                            f"anyoptim.torch.Optimizer.load_state_dict: the saved {key!r} "
                            f"differs between parameters ({seen} and {value} at {name!r}); the "
                            "wrapped optimizer counts one step for all of them. Load a state "
                            "saved by anyoptim.torch.Optimizer."
                        )
            per_sub[index][name] = leaf
        for sub, leaves, found, extras in zip(subs, per_sub, scalars, shared):
            new = {k: v for k, v in sub.state.items() if not isinstance(v, dict)}
            for key, value in extras.items():
                new[key] = value.detach().clone() if isinstance(value, Tensor) else \
                    _backend.as_state_array(value)
            like = next((t for leaf in leaves.values() for t in leaf.values()
                         if isinstance(t, Tensor)), None)
            for key, value in found.items():
                host = _backend.host_scalar(value, np.uint64)
                new[key] = _backend.to_library(host, like) if like is not None else host
            new.update(leaves)
            sub.state = new
        super()._adopt(state, groups)
        self._write_scheduled_lrs()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        out = super().__getstate__()
        out["anyoptim_optimizer"] = _picklable(self.anyoptim_optimizer)
        out["_lr_written"] = list(self._lr_written)
        return out


def _shared_keys(owner: _core.Optimizer) -> tuple[str, ...]:
    """The top-level scalars of ``owner`` besides its step, learning rate and schedules (e.g.
    NAdam's ``mu_product``, the schedule-free weights): ``anyoptim.torch.Optimizer`` mirrors
    them into every parameter's entry, so that ``state_dict()`` carries them."""
    skip = {"learning_rate", *_SCALAR_KEYS, *owner._schedulers}
    return tuple(k for k in owner._scalar_keys() if k not in skip)


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().clone()
    return torch.as_tensor(int(np.asarray(_backend._to_numpy(value))), dtype=torch.int64)


def _picklable(opt: _core.Optimizer) -> _core.Optimizer:
    """A shallow copy of ``opt`` (same state) whose built-in schedules pickle."""
    clone = copy.copy(opt)
    if isinstance(opt, _core.MultiOptimizer) and isinstance(clone, _core.MultiOptimizer):
        clone.optimizers = [_picklable(o) for o in opt.optimizers]
        return clone
    schedules: dict[str, Any] = {}
    for name, fn in opt._schedulers.items():
        spec = getattr(fn, "spec", None)
        schedules[name] = fn if spec is None or isinstance(fn, _SpecSchedule) else \
            _SpecSchedule(spec)
    clone._schedulers = schedules
    return clone
