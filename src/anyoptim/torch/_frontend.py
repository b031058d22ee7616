"""The base classes of the torch drop-ins: ``_FrontEnd`` (torch.optim.Optimizer's contract: param groups, closures, state dicts) and ``_Elementwise`` (one anyoptim rule run over a group through torch's multi-tensor, fused or traced paths)."""

from __future__ import annotations

import copy
import operator
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .._backend._execute import Columns, KernelCache, run_elementwise
from .._backend._rules import Elementwise, Hyper
from ._common import (
    _REFERENCE,
    _SCALAR_KEYS,
    _XP,
    Closure,
    _check_betas,
    _check_bool,
    _check_grad,
    _check_lr,
    _check_number,
    _compiling,
    _is_number,
    _leaf_views,
    _lr_value,
    _new_step,
    _real,
    _step_dtype,
    _store,
    _zeros,
)


# =============================================================================== the base class
class _FrontEnd(torch.optim.Optimizer):
    """What every class of this module shares: validated groups, ``step(closure)``, torch's
    state-dict format with shape checks, pickling."""

    #: Keys of ``defaults`` that are hyperparameters read at every step (validated).
    _checked: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._validate(defaults, "")
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ groups
    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        """Raise a ValueError naming the key, the rule, the value and the fix."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (torch's rules), after checking its hyperparameters."""
        if isinstance(param_group, dict):
            merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
            self._validate(merged, f"param_groups[{len(self.param_groups)}]: ")
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Closure = None) -> Any:
        """Update the parameters that have a gradient, with each group's hyperparameters.

        Args:
            closure: optional; re-evaluates the model and returns the loss. It is called
                first, with gradients enabled.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        # everything is checked before anything changes
        for gi, group in enumerate(self.param_groups):
            self._validate(group, f"param_groups[{gi}]: ")
            params = []
            for index, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse or g.dtype != p.dtype:
                    _check_grad(type(self).__name__, gi, index, p, g)
                params.append(p)
            if params:
                work.append((gi, group, params))
        for gi, group, params in work:
            self._update_group(gi, group, params)
        return loss

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state dict
    def _export_state(self, p: Tensor, state: dict[str, Any]) -> dict[str, Any]:
        """The state-dict entry of ``p`` (a subclass may add entries; never mutate)."""
        return state

    @torch._disable_dynamo
    def state_dict(self) -> dict[str, Any]:
        """The state in torch's format: ``{"state": {id: {...}}, "param_groups": [...]}``.

        Ids are positions in the concatenated groups; values are tensors and Python scalars
        only, so ``torch.load(weights_only=True)`` reads the saved file.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        ids: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            indices = []
            for p in group["params"]:
                if id(p) not in ids:
                    ids[id(p)] = len(ids)
                indices.append(ids[id(p)])
            packed["params"] = indices
            groups.append(packed)
        state: dict[Any, Any] = {}
        for key, value in self.state.items():
            if isinstance(key, Tensor) and id(key) in ids:
                if value:
                    state[ids[id(key)]] = self._export_state(key, value)
            else:
                state[key] = value
        result: dict[str, Any] = {"state": state, "param_groups": groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            out = post_hook(self, result)
            if out is not None:
                result = out
        return result

    def _import_state(self, p: Tensor, saved: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The live state of ``p`` from its saved entry: tensors moved to ``p``'s device with
        their saved dtype, shapes checked."""
        out: dict[str, Any] = {}
        for key, value in saved.items():
            if isinstance(value, Tensor):
                if key in _SCALAR_KEYS:
                    out[key] = value.detach().clone()  # step stays where torch keeps it (CPU)
                    continue
                if value.dim() != 0 and value.shape != self._state_shape(p, key, value):
                    raise ValueError(
                        f"anyoptim.torch.{type(self).__name__}.load_state_dict: {where}: state "
                        f"{key!r} has shape {tuple(value.shape)} but the parameter has shape "
                        f"{tuple(p.shape)}. The saved state belongs to other parameters (a "
                        "different model, or parameters in another order): build the optimizer "
                        "with the parameters in the order used when saving."
                    )
                out[key] = value.detach().to(device=p.device, copy=True)
            else:
                out[key] = copy.deepcopy(value)
        return out

    def _state_shape(self, p: Tensor, key: str, value: Tensor) -> tuple[int, ...]:
        """The shape state ``key`` must have for parameter ``p``."""
        return tuple(p.shape)

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state saved by :meth:`state_dict` (or by the same ``torch.optim`` class).

        Unlike ``torch.optim``, every state tensor is checked against the shape of the
        parameter it lands on (a clear ValueError naming the group, the parameter and both
        shapes, and nothing is changed), and state tensors keep their saved dtype (only their
        device follows the parameter). Groups take the saved hyperparameters, as in torch.
        """
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            out = pre_hook(self, state_dict)
            if out is not None:
                state_dict = out
        name = f"anyoptim.torch.{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict.get("state"), Mapping) or not isinstance(
                state_dict.get("param_groups"), (list, tuple)):
            raise ValueError(
                f"{name}: expected a dict with 'state' and 'param_groups' (what state_dict() "
                f"returns), got keys {sorted(map(str, state_dict))}"
            )
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
        groups = self.param_groups
        if len(saved_groups) != len(groups):
            raise ValueError(
                f"{name}: the state dict has {len(saved_groups)} parameter groups, this optimizer "
                f"has {len(groups)}; build the optimizer with the same parameter groups."
            )
        for gi, (g, sg) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(
                    f"{name}: param_groups[{gi}] has {len(g['params'])} parameters here but "
                    f"{len(sg['params'])} in the state dict; build the optimizer with the same "
                    "parameters."
                )
            self._validate({**self.defaults, **{k: v for k, v in sg.items() if k != "params"}},
                           f"saved param_groups[{gi}]: ")
        where_of: dict[Any, tuple[Tensor, str]] = {}
        for gi, (g, sg) in enumerate(zip(groups, saved_groups)):
            for pi, (p, saved_id) in enumerate(zip(g["params"], sg["params"])):
                where_of[saved_id] = (p, f"param_groups[{gi}]['params'][{pi}] (saved id "
                                         f"{saved_id})")
        state: defaultdict[Any, Any] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in where_of:
                p, where = where_of[key]
                if not isinstance(value, Mapping):
                    raise ValueError(f"{name}: the state of {where} is not a dict")
                state[p] = self._import_state(p, value, where)
            else:
                state[key] = value
        new_groups = []
        for g, sg in zip(groups, saved_groups):
            sg["params"] = g["params"]
            if "param_names" in g and "param_names" not in sg:
                sg["param_names"] = g["param_names"]
            new_groups.append(sg)
        self._adopt(state, new_groups)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _adopt(self, state: defaultdict[Any, Any], groups: list[dict[str, Any]]) -> None:
        """Install a loaded (already checked) state and groups."""
        for cache in ("_numpy_views", "_step_packs", "_kernels"):
            self.__dict__.pop(cache, None)
        self.__setstate__({"state": state, "param_groups": groups})

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # torch keeps only these three (an LR scheduler's instance-level `step` wrapper and
        # the hook dictionaries are not part of an optimizer's configuration)
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}


# =============================================================================== elementwise
def _lerp_small(weight: Any) -> bool:
    """torch's lerp switches formulas at |weight| = 0.5; a tensor weight takes the first."""
    return not _is_number(weight) or abs(weight) < 0.5


class _Elementwise(_FrontEnd):
    """A torch optimizer whose update is an anyoptim elementwise rule in torch's form."""

    #: Whether the state holds a per-parameter ``step`` (torch counts it before the maths).
    _counts_steps: ClassVar[bool] = True

    def _rule(self, h: Hyper) -> Elementwise:
        raise NotImplementedError

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """What the rule sees: the group's hyperparameters."""
        return {k: v for k, v in group.items() if k not in ("params", "param_names")}

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        if self._counts_steps:
            state["step"] = _new_step()

    def _new_buffer(self, key: str, p: Tensor, h: Hyper) -> Tensor:
        return _zeros(p)

    def _bucket(self, state: Mapping[str, Any], h: Hyper) -> tuple[Any, ...]:
        """Flags that differ between parameters of one group (read before the update)."""
        return ()

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        h = self._hyper(group)
        h["lr"] = _lr_value(h["lr"])
        lr = h["lr"]
        if isinstance(lr, Tensor) and params and lr.device != params[0].device:
            h["lr"] = lr.to(params[0].device, non_blocking=True)
        rule = self._rule(h)
        keys = rule.state
        compiling = _compiling()
        state = self.state
        bucketed = type(self)._bucket is not _Elementwise._bucket
        states = []
        extras: list[tuple[Any, ...]] = []
        for p in params:
            st = state[p]
            if not st:
                self._init_state(p, st, h)
            if bucketed:
                extras.append(self._bucket(st, h))
            for k in keys:
                if st.get(k) is None:
                    st[k] = self._new_buffer(k, p, h)
            states.append(st)
        if not bucketed:
            extras = [()] * len(params)
        counts: list[Any]
        if not self._counts_steps:
            counts = [None] * len(params)
        elif compiling:
            counts = [st["step"] for st in states]
            for step in counts:
                step += 1
        else:
            counts = self._advance_steps(gi, group, params, states)
        if compiling:
            self._traced_update(rule, h, params, states, counts, extras)
            return
        first = (counts[0], extras[0])
        if all(c == first[0] for c in counts) and all(e == first[1] for e in extras):
            buckets = {first: list(range(len(params)))}
        else:
            buckets = {}
            for i, key in enumerate(zip(counts, extras)):
                buckets.setdefault(key, []).append(i)
        for (step, extra), index in buckets.items():
            hb = {**h, "_extra": extra}
            ps_ = params if len(index) == len(params) else [params[i] for i in index]
            ss_ = states if len(index) == len(params) else [states[i] for i in index]
            if self._numpy_update(rule, hb, step, ps_, ss_):
                continue
            self._tensor_update(rule, hb, step, ps_, ss_)

    # ------------------------------------------------------------------ step counters
    def _advance_steps(self, gi: int, group: dict[str, Any], params: list[Tensor],
                       states: list[dict[str, Any]]) -> list[float]:
        """Add one to the step of every parameter in ``params``; return the new values.

        The steps of a group are 0-d views into one buffer (torch's format: a 0-d float
        tensor per parameter), so that a step with every gradient present adds one to all of
        them with a single operation and reads them back at once.
        """
        steps = [st["step"] for st in states]
        packs = self.__dict__.setdefault("_step_packs", {})
        pack = packs.get(gi)
        if len(params) == len(group["params"]):
            if pack is None or len(pack[1]) != len(steps) or not all(
                    map(operator.is_, pack[1], steps)):
                pack = self._pack_steps(steps, states)
                packs[gi] = pack
            buffer = pack[0]
            buffer += 1
            return buffer.tolist()
        if all(isinstance(s, Tensor) for s in steps):
            torch._foreach_add_(steps, 1)
        else:
            for st in states:
                st["step"] = torch.tensor(float(st["step"]) + 1, dtype=_step_dtype())
            steps = [st["step"] for st in states]
        return [s.item() for s in steps]

    @staticmethod
    def _pack_steps(steps: list[Any], states: list[dict[str, Any]]) -> tuple[Tensor, list[Any]]:
        dtypes = {s.dtype for s in steps if isinstance(s, Tensor)}
        dtype = dtypes.pop() if len(dtypes) == 1 else _step_dtype()
        buffer = torch.tensor([float(s) for s in steps], dtype=dtype)
        views = list(buffer.unbind())
        for st, view in zip(states, views):
            st["step"] = view
        return buffer, views

    # ------------------------------------------------------------------ executors
    def _numpy_update(self, rule: Elementwise, h: dict[str, Any], step: Any,
                      params: list[Tensor], states: list[dict[str, Any]]) -> bool:
        """The update on NumPy views of CPU tensors (anyoptim's numba kernels, one call for
        all small tensors), if every tensor qualifies; False (nothing done) otherwise.

        The views of a parameter and its state are kept while the tensors stay the same
        objects and the parameter's memory stays where it was (``p.data = ...`` moves it).
        """
        if not _backend.fused_enabled() or not _backend.fused_numpy_available():
            return False
        cache = self.__dict__.setdefault("_numpy_views", {})
        keys = rule.state
        gs: list[Any] = []
        ps: list[Any] = []
        ss: list[dict[str, Any]] = []
        for p, st in zip(params, states):
            entry = cache.get(id(p))
            if entry is None or entry[0] is not p or entry[1] != p.data_ptr() or not all(
                    map(operator.is_, entry[2], [st[k] for k in keys])):
                entry = _leaf_views(p, st, keys)
                if entry is None:
                    return False
                if len(cache) > 65536:
                    cache.clear()
                cache[id(p)] = entry
            pv = entry[3]
            g = p.grad
            try:
                gv = g.numpy() if not g.requires_grad else g.detach().numpy()
            except (RuntimeError, TypeError):  # another device, a conjugate/negative view
                return False
            if gv.dtype != pv.dtype:
                return False
            gs.append(gv)
            ps.append(pv)
            ss.append(entry[4])
        lr = h["lr"]
        if isinstance(lr, Tensor):
            h = {**h, "lr": lr.item()}
        kernels = self.__dict__.get("_kernels")
        if kernels is None:
            kernels = self.__dict__["_kernels"] = KernelCache()
        new_p, new_s = run_elementwise(rule, np, h, step, Columns(gs, ps, ss), True,
                                       fused=True, cache=kernels)
        if new_s is not None:  # not run in place after all: store the results
            _store(ps, new_p, ss, new_s, keys)
        return True

    def _tensor_update(self, rule: Elementwise, h: dict[str, Any], step: Any,
                       params: list[Tensor], states: list[dict[str, Any]]) -> None:
        """The update on the tensors: numba (CPU) or torch multi-tensor kernels; leaves whose
        state keeps another dtype (as loaded) take the reference path."""
        keys = rule.state
        plain: list[int] = []
        mixed: list[int] = []
        for i, (p, st) in enumerate(zip(params, states)):
            g = p.grad
            same = g.dtype == p.dtype and all(st[k].dtype == p.dtype for k in keys)
            (plain if same else mixed).append(i)
        for part, fused in ((plain, True), (mixed, False)):
            if not part:
                continue
            gs = [_real(params[i].grad) for i in part]
            ps = [_real(params[i]) for i in part]
            ss = [{k: _real(states[i][k]) for k in keys} for i in part]
            new_p, new_s = run_elementwise(rule, _XP, h, step, Columns(gs, ps, ss), True,
                                           fused=fused)
            if new_s is not None:  # a functional executor: store the results
                _store(ps, new_p, ss, new_s, keys)

    def _traced_update(self, rule: Elementwise, h: dict[str, Any], params: list[Tensor],
                       states: list[dict[str, Any]], counts: list[Any],
                       extras: list[tuple[Any, ...]]) -> None:
        """The update under ``torch.compile``: plain tensor code, one parameter at a time,
        each with its own step tensor (no value is read on the host, so nothing is guarded)."""
        keys = rule.state
        for p, st, count, extra in zip(params, states, counts, extras):
            hb = {**h, "_extra": extra}
            flags = rule.flags(hb)
            fn = _REFERENCE.get((rule.element, flags))
            if fn is None:
                fn = _REFERENCE[(rule.element, flags)] = rule.element(_XP, flags)
            pr = _real(p)
            olds = [_real(st[k]) for k in keys]
            out = fn(pr, _real(p.grad), *olds, rule.scalars(_XP, hb, count, pr.dtype))
            pr.copy_(out[0])
            for old, new in zip(olds, out[1:]):
                old.copy_(new)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        owner = type(self).__name__
        for key in self._checked:
            if key not in group:
                continue
            value = group[key]
            if key == "lr":
                _check_lr(owner, where, value)
            elif key == "betas":
                _check_betas(owner, where, value, tensor_ok=owner in ("Adam", "AdamW"))
            elif key in ("maximize", "amsgrad", "nesterov", "centered"):
                _check_bool(owner, where, key, value)
            elif key == "rho":
                _check_number(owner, where, key, value, 0.0, 1.0, closed_high=True,
                              fix="rho is a decay rate in [0, 1], e.g. 0.9.")
            else:
                _check_number(owner, where, key, value, 0.0, None,
                              fix=f"Pass a non-negative {key}.")
