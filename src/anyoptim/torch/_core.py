"""The torch front-end's machinery and its first optimizers (re-exported by ``anyoptim.torch``)."""

from __future__ import annotations

import copy
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import optimizers as _core
from .._backend._execute import Columns, KernelCache, run_elementwise
from .._backend._rules import Elementwise, Hyper, is_positive
from ..schedulers import from_spec

__all__ = [
    "SGD",
    "AdaDelta",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Muon",
    "Optimizer",
    "RMSprop",
    "from_anyoptim",
    "load",
    "save",
    "to_anyoptim",
]

Closure = Callable[[], Any] | None
_SCALAR_KEYS = ("step", "skipped_steps")
#: The array namespace of torch tensors (looked up once, outside any compiled region).
_XP = _backend.namespace(torch.zeros(()))
_VIEW_DTYPES = (torch.float32, torch.float64)
#: Element functions of the traced path, by (element factory, flags).
_REFERENCE: dict[tuple[Any, ...], Callable[..., Any]] = {}


# =============================================================================== validation
def _fail(owner: str, where: str, key: str, value: Any, rule: str, fix: str) -> None:
    raise ValueError(
        f"anyoptim.torch.{owner}: {where}{key}={value!r:.60} is invalid: {key} must be {rule}. "
        f"{fix}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point()


def _check_number(owner: str, where: str, key: str, value: Any, low: float | None,
                  high: float | None, closed_high: bool = False, tensor_ok: bool = False,
                  fix: str = "") -> None:
    if tensor_ok and isinstance(value, Tensor):
        if not _is_scalar_tensor(value):
            _fail(owner, where, key, value, "a number or a 1-element floating tensor",
                  fix or f"Pass {key} as a float or as torch.tensor(value).")
        return  # its value is not read here: that would synchronise with the device
    rule = "a number"
    ok = _is_number(value) and not math.isnan(value)
    if low is not None:
        rule += f" >= {low}"
        ok = ok and value >= low
    if high is not None:
        rule += f" and {'<=' if closed_high else '<'} {high}"
        ok = ok and (value <= high if closed_high else value < high)
    if not ok:
        _fail(owner, where, key, value, rule, fix or f"Pass a valid {key}.")


def _check_bool(owner: str, where: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(owner, where, key, value, "True or False", f"Pass {key}=True or {key}=False.")


def _check_betas(owner: str, where: str, betas: Any, tensor_ok: bool = False) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        _fail(owner, where, "betas", betas, "a pair (beta1, beta2)",
              "Pass betas=(0.9, 0.999), for example.")
    for i, beta in enumerate(betas):
        _check_number(owner, where, f"betas[{i}]", beta, 0.0, 1.0, tensor_ok=tensor_ok,
                      fix="Betas are decay rates of moving averages, e.g. (0.9, 0.999).")


def _check_lr(owner: str, where: str, lr: Any) -> None:
    _check_number(owner, where, "lr", lr, 0.0, None, tensor_ok=True,
                  fix="Pass a non-negative learning rate (a float, or a 0-d tensor to change "
                      "it under torch.compile without recompiling).")


def _check_false(owner: str, key: str, value: Any, fix: str) -> None:
    if value:
        _fail(owner, "", key, value, "False", fix)


def _lr_value(lr: Any) -> Any:
    """A 1-element tensor lr as a 0-d tensor (torch's convention), a number as is."""
    if isinstance(lr, Tensor) and lr.dim() != 0:
        return lr.reshape(())
    return lr


# =============================================================================== shared helpers
def _step_dtype() -> torch.dtype:
    # torch's choice for the per-parameter step of its non-fused optimizers
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _new_step() -> Tensor:
    return torch.tensor(0.0, dtype=_step_dtype())


def _zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _real(x: Tensor) -> Tensor:
    """A real view of a complex tensor (the maths then runs on real and imaginary parts)."""
    return torch.view_as_real(x) if x.is_complex() else x


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def _check_grad(owner: str, gi: int, index: int, p: Tensor, g: Tensor) -> None:
    where = f"param_groups[{gi}]['params'][{index}]"
    if g.is_sparse:
        raise RuntimeError(
            f"anyoptim.torch.{owner}: {where} has a sparse gradient, which anyoptim does not "
            "support; use dense gradients (e.g. nn.Embedding(sparse=False)) or "
            "torch.optim.SparseAdam."
        )
    if g.shape != p.shape:
        raise ValueError(
            f"anyoptim.torch.{owner}: {where}: the gradient has shape {tuple(g.shape)} but the "
            f"parameter has shape {tuple(p.shape)}; assign .grad a tensor shaped like the "
            "parameter."
        )
    if not (g.is_floating_point() or g.is_complex()):
        raise TypeError(
            f"anyoptim.torch.{owner}: {where}: the gradient has dtype {g.dtype}; gradients must "
            "be floating point (cast it to the parameter's dtype)."
        )


def _leaf_views(p: Tensor, st: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """``(p, its data pointer, its state tensors, NumPy view of p, views of the state)`` when
    ``p`` and its state are contiguous CPU float tensors of one dtype, else None."""
    tensors = [st[k] for k in keys]
    views = []
    for t in (p, *tensors):
        if type(t) not in (Tensor, torch.nn.Parameter) or t.dtype != p.dtype \
                or t.dtype not in _VIEW_DTYPES or not t.is_cpu or not t.is_contiguous() \
                or t.is_conj() or t.is_neg() or t.shape != p.shape:
            return None
        views.append(t.detach().numpy())
    return (p, p.data_ptr(), tensors, views[0], dict(zip(keys, views[1:])))


def _store(ps: list[Any], new_p: list[Any], ss: list[dict[str, Any]],
           new_s: list[list[Any]], keys: tuple[str, ...]) -> None:
    """Write a functional executor's results into the parameters and state arrays."""
    for p, value, st, values in zip(ps, new_p, ss, new_s):
        if value is not p:
            _assign(p, value)
        for k, v in zip(keys, values):
            if v is not st[k]:
                _assign(st[k], v)


def _assign(target: Any, value: Any) -> None:
    if isinstance(target, np.ndarray):
        np.copyto(target, value, casting="unsafe")
    else:
        target.copy_(value)


class _SpecSchedule:
    """A built-in anyoptim schedule kept by its description, so that it pickles (the
    schedules themselves are closures)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._fn: Callable[[Any], Any] | None = None

    def __call__(self, step: Any) -> Any:
        if self._fn is None:
            self._fn = from_spec(self.spec)
        return self._fn(step)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec = state["spec"]
        self._fn = None


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


# ----------------------------------------------------------------------------- Adam, AdamW
def _adam_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if (_is_number(wd) and wd == 0) else (2 if h["decoupled_weight_decay"] else 1)
    return (bool(h["maximize"]), mode, bool(h["amsgrad"]), _lerp_small(1 - h["betas"][0]))


def _adam_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = h["lr"]
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    bias1 = 1 - b1**step
    bias2 = 1 - b2**step
    return (wd, 1 - lr * wd, 1 - b1, b1, b2, 1 - b2, -(lr / bias1), bias2**0.5, h["eps"])


def _adam_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, wd_mode, amsgrad, small = flags

    def update(p: Any, g: Any, m: Any, v: Any, sc: Any) -> tuple[Any, Any, Any]:
        wd, decay, w1, b1, b2, one_minus_b2, neg_step, bias2_sqrt, eps = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        # torch's lerp: one formula for weights below 0.5, another above
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        v = v * b2 + one_minus_b2 * g * g
        return p + neg_step * m / (ops.sqrt(v) / bias2_sqrt + eps), m, v

    def update_amsgrad(p: Any, g: Any, m: Any, v: Any, vmax: Any,
                       sc: Any) -> tuple[Any, Any, Any, Any]:
        wd, decay, w1, b1, b2, one_minus_b2, neg_step, bias2_sqrt, eps = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        v = v * b2 + one_minus_b2 * g * g
        vmax = ops.maximum(vmax, v)
        return p + neg_step * m / (ops.sqrt(vmax) / bias2_sqrt + eps), m, v, vmax

    return update_amsgrad if amsgrad else update


_ADAM = Elementwise(state=("exp_avg", "exp_avg_sq"), element=_adam_element,
                    scalars=_adam_scalars, flags=_adam_flags)
_ADAM_AMSGRAD = Elementwise(state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                            element=_adam_element, scalars=_adam_scalars, flags=_adam_flags)


def _torch_options(owner: str, capturable: bool, differentiable: bool) -> None:
    _check_false(owner, "capturable", capturable,
                 "anyoptim keeps torch's CPU step counters and never reads device values "
                 "between kernels, so it needs no capturable mode; drop the argument (or use "
                 "torch.optim for CUDA-graph capture).")
    _check_false(owner, "differentiable", differentiable,
                 "anyoptim's updates are not differentiable through the optimizer step; use "
                 "torch.optim with differentiable=True for that.")


class Adam(_Elementwise):
    r"""Adam with ``torch.optim.Adam``'s keywords, defaults and maths.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        p_t &= p_{t-1} - \frac{\eta}{1 - \beta_1^t} \,
              \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`t` counted per parameter (a parameter without a gradient does not advance).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta` (a float, or a 0-d tensor). Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: L2 penalty added to the gradient (decoupled with
            ``decoupled_weight_decay=True``, which is AdamW). Default ``0``.
        amsgrad: use the running maximum of :math:`v` (AMSGrad). Default ``False``.
        foreach: accepted for compatibility; anyoptim picks its executor itself.
        maximize: maximise the objective. Default ``False``.
        capturable: must be ``False``.
        differentiable: must be ``False``.
        fused: accepted for compatibility (anyoptim's CPU path is fused already).
        decoupled_weight_decay: decay the weights as AdamW does. Default ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.Adam([w], lr=0.1)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1000, -0.1000])
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _torch_options(type(self).__name__, capturable, differentiable)
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            betas = (_lr_value(betas[0]), _lr_value(betas[1]))
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
            "capturable": False, "differentiable": False, "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAM_AMSGRAD if h["amsgrad"] else _ADAM

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h.setdefault("decoupled_weight_decay", False)
        return h


class AdamW(Adam):
    r"""AdamW with ``torch.optim.AdamW``'s keywords, defaults and maths.

    Adam (see :class:`Adam`) with decoupled weight decay :math:`p \leftarrow p (1 - \eta
    \lambda)` before the moment update, bias correction on, a step per parameter.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta` (a float, or a 0-d tensor). Default ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``1e-2``.
        amsgrad: use the running maximum of :math:`v`. Default ``False``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility.
        capturable: must be ``False``.
        differentiable: must be ``False``.
        fused: accepted for compatibility.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = anyoptim.torch.AdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = torch.zeros(2)
        >>> opt.step()
        >>> w.detach()
        tensor([0.9500, 0.9500])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        h = super()._hyper(group)
        h["decoupled_weight_decay"] = True
        return h


# ----------------------------------------------------------------------------- SGD
def _sgd_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0), bool(h["nesterov"]),
            bool(h["_extra"][0]) if h["_extra"] else False)


def _sgd_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    return (-h["lr"], h["weight_decay"], h["momentum"], 1 - h["dampening"])


def _sgd_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, nesterov, first = flags

    def momentum_sgd(p: Any, g: Any, buf: Any, sc: Any) -> tuple[Any, Any]:
        neg_lr, wd, momentum, undamped = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        # torch starts the buffer at the gradient itself, and dampens from the second step
        buf = g if first else buf * momentum + undamped * g
        d = g + momentum * buf if nesterov else buf
        return p + neg_lr * d, buf

    return momentum_sgd


def _sgd_plain_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, _nesterov, _first = flags

    def plain_sgd(p: Any, g: Any, sc: Any) -> tuple[Any]:
        neg_lr, wd, _momentum, _undamped = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        return (p + neg_lr * g,)

    return plain_sgd


_SGD_MOMENTUM = Elementwise(state=("momentum_buffer",), element=_sgd_element,
                            scalars=_sgd_scalars, flags=_sgd_flags)
_SGD_PLAIN = Elementwise(state=(), element=_sgd_plain_element, scalars=_sgd_scalars,
                         flags=_sgd_flags)


class SGD(_Elementwise):
    r"""SGD with ``torch.optim.SGD``'s keywords, defaults and maths.

    .. math::

        g &\leftarrow g + \lambda p, \quad
        b_1 = g_1, \quad b_t = \mu b_{t-1} + (1 - \tau) g_t \\
        p &\leftarrow p - \eta \, (g + \mu b_t \text{ if nesterov else } b_t)

    As in torch, the first momentum buffer is the gradient itself (no dampening on that step)
    and no state is kept when ``momentum == 0``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        momentum: :math:`\mu`. Default ``0``.
        dampening: :math:`\tau`. Default ``0``.
        weight_decay: L2 penalty :math:`\lambda`. Default ``0``.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0). Default ``False``.
        maximize: maximise the objective. Default ``False``.
        foreach: accepted for compatibility.
        differentiable: must be ``False``.
        fused: accepted for compatibility.

    State per parameter: ``momentum_buffer`` (when momentum is non-zero).

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = anyoptim.torch.SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = torch.ones(2)
        >>> opt.step()
        >>> w.detach()
        tensor([-0.1000, -0.1000])
    """

    _checked = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _torch_options("SGD", False, differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
            "foreach": foreach, "differentiable": False, "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if group.get("nesterov") and not (
                _is_number(group.get("momentum")) and group["momentum"] > 0
                and group.get("dampening") == 0):
            _fail("SGD", where, "nesterov", True, "used with momentum > 0 and dampening == 0",
                  "Nesterov momentum needs a positive momentum and zero dampening: set them, "
                  "or pass nesterov=False.")

    def _rule(self, h: Hyper) -> Elementwise:
        m = h["momentum"]
        return _SGD_PLAIN if _is_number(m) and m == 0 else _SGD_MOMENTUM

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        pass

    def _bucket(self, state: Mapping[str, Any], h: Hyper) -> tuple[Any, ...]:
        return (state.get("momentum_buffer") is None,)


# ----------------------------------------------------------------------------- RMSprop
def _rmsprop_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0), _has_momentum(h),
            bool(h["centered"]), _lerp_small(1 - h["alpha"]))


def _has_momentum(h: Hyper) -> bool:
    m = h["momentum"]
    return not _is_number(m) or m > 0


def _rmsprop_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    alpha = h["alpha"]
    return (-h["lr"], h["weight_decay"], alpha, 1 - alpha, h["eps"], h["momentum"])


def _rmsprop_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, momentum_on, centered, small = flags

    # numba compiles only the returned function: one explicit variant per state layout
    def plain(p: Any, g: Any, sq: Any, sc: Any) -> tuple[Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, _momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        return p + neg_lr * g / (ops.sqrt(sq) + eps), sq

    def with_momentum(p: Any, g: Any, sq: Any, buf: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        buf = buf * momentum + g / (ops.sqrt(sq) + eps)
        return p + neg_lr * buf, sq, buf

    def centered_(p: Any, g: Any, sq: Any, ga: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, _momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        ga = ga + one_minus_alpha * (g - ga) if small else g - (g - ga) * alpha
        return p + neg_lr * g / (ops.sqrt(sq + -1 * ga * ga) + eps), sq, ga

    def centered_momentum(p: Any, g: Any, sq: Any, buf: Any, ga: Any,
                          sc: Any) -> tuple[Any, Any, Any, Any]:
        neg_lr, wd, alpha, one_minus_alpha, eps, momentum = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * alpha + one_minus_alpha * g * g
        ga = ga + one_minus_alpha * (g - ga) if small else g - (g - ga) * alpha
        buf = buf * momentum + g / (ops.sqrt(sq + -1 * ga * ga) + eps)
        return p + neg_lr * buf, sq, buf, ga

    if centered:
        return centered_momentum if momentum_on else centered_
    return with_momentum if momentum_on else plain


_RMSPROP_RULES = {
    (m, c): Elementwise(
        state=("square_avg", *(("momentum_buffer",) if m else ()), *(("grad_avg",) if c else ())),
        element=_rmsprop_element, scalars=_rmsprop_scalars, flags=_rmsprop_flags)
    for m in (False, True) for c in (False, True)
}


class RMSprop(_Elementwise):
    r"""RMSprop with ``torch.optim.RMSprop``'s keywords, defaults and maths.

    .. math::

        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2, \quad
        \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \text{ (centered)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t, \quad p_t = p_{t-1} - \eta b_t
        \text{ (or } p_{t-1} - \eta g_t / d_t \text{ without momentum)}

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate. Default ``1e-2``.
        alpha: smoothing constant. Default ``0.99``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: L2 penalty. Default ``0``.
        momentum: :math:`\mu`. Default ``0``.
        centered: normalise by the estimated variance. Default ``False``.
        capturable: must be ``False``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.

    State per parameter: ``step``, ``square_avg`` (and ``momentum_buffer``, ``grad_avg``).
    """

    _checked = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _torch_options("RMSprop", capturable, differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
            "weight_decay": weight_decay, "capturable": False, "foreach": foreach,
            "maximize": maximize, "differentiable": False,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _RMSPROP_RULES[(_has_momentum(h), bool(h["centered"]))]


# ----------------------------------------------------------------------------- Adagrad
def _adagrad_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0))


def _adagrad_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    clr = h["lr"] / (1 + (step - 1) * h["lr_decay"])
    return (-clr, h["weight_decay"], h["eps"])


def _adagrad_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd = flags

    def adagrad(p: Any, g: Any, s: Any, sc: Any) -> tuple[Any, Any]:
        neg_clr, wd, eps = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        s = s + g * g
        return p + neg_clr * g / (ops.sqrt(s) + eps), s

    return adagrad


_ADAGRAD = Elementwise(state=("sum",), element=_adagrad_element, scalars=_adagrad_scalars,
                       flags=_adagrad_flags)


class Adagrad(_Elementwise):
    r"""Adagrad with ``torch.optim.Adagrad``'s keywords, defaults and maths.

    .. math::

        \eta_t = \frac{\eta}{1 + (t - 1) \delta}, \quad s_t = s_{t-1} + g_t^2, \quad
        p_t = p_{t-1} - \eta_t \frac{g_t}{\sqrt{s_t} + \epsilon}

    As in torch, the state (``sum`` filled with ``initial_accumulator_value``, ``step``) is
    created for every parameter at construction.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-2``.
        lr_decay: :math:`\delta`. Default ``0``.
        weight_decay: L2 penalty. Default ``0``.
        initial_accumulator_value: initial value of ``sum``. Default ``0``.
        eps: :math:`\epsilon`. Default ``1e-10``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.
        fused: accepted for compatibility.

    State per parameter: ``step``, ``sum``.
    """

    _checked = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _torch_options("Adagrad", False, differentiable)
        defaults = {
            "lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
            "maximize": maximize, "differentiable": False, "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p], group)

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        state["step"] = _new_step()
        value = h.get("initial_accumulator_value", self.defaults["initial_accumulator_value"])
        fill = complex(value, value) if p.is_complex() else value
        state["sum"] = torch.full_like(p, fill, memory_format=torch.preserve_format)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAGRAD


# ----------------------------------------------------------------------------- Adadelta
def _adadelta_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0))


def _adadelta_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    rho = h["rho"]
    return (-h["lr"], h["weight_decay"], rho, 1 - rho, h["eps"])


def _adadelta_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd = flags

    def adadelta(p: Any, g: Any, sq: Any, acc: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_lr, wd, rho, one_minus_rho, eps = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        sq = sq * rho + one_minus_rho * g * g
        delta = ops.sqrt(acc + eps) / ops.sqrt(sq + eps) * g
        acc = acc * rho + one_minus_rho * delta * delta
        return p + neg_lr * delta, sq, acc

    return adadelta


_ADADELTA = Elementwise(state=("square_avg", "acc_delta"), element=_adadelta_element,
                        scalars=_adadelta_scalars, flags=_adadelta_flags)


class Adadelta(_Elementwise):
    r"""Adadelta with ``torch.optim.Adadelta``'s keywords, defaults and maths.

    .. math::

        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2, \quad p_t = p_{t-1} - \eta \Delta_t

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1.0``.
        rho: :math:`\rho`. Default ``0.9``.
        eps: :math:`\epsilon`. Default ``1e-6``.
        weight_decay: L2 penalty. Default ``0``.
        foreach: accepted for compatibility.
        capturable: must be ``False``.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.

    State per parameter: ``step``, ``square_avg``, ``acc_delta``.
    """

    _checked = ("lr", "rho", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _torch_options("Adadelta", capturable, differentiable)
        defaults = {
            "lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
            "maximize": maximize, "capturable": False, "foreach": foreach,
            "differentiable": False,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADADELTA


#: anyoptim's spelling of :class:`Adadelta`.
AdaDelta = Adadelta


# ----------------------------------------------------------------------------- Adamax
def _adamax_flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    return (bool(h["maximize"]), not (_is_number(wd) and wd == 0),
            _lerp_small(1 - h["betas"][0]))


def _adamax_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    b1, b2 = h["betas"]
    return (-(h["lr"] / (1 - b1**step)), h["weight_decay"], 1 - b1, b1, b2, h["eps"])


def _adamax_element(ops: Any, flags: tuple[Any, ...]) -> Callable[..., tuple[Any, ...]]:
    maximize, use_wd, small = flags

    def adamax(p: Any, g: Any, m: Any, u: Any, sc: Any) -> tuple[Any, Any, Any]:
        neg_clr, wd, w1, b1, b2, eps = sc
        if maximize:
            g = -g
        if use_wd:
            g = g + wd * p
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        u = ops.maximum(u * b2, ops.abs(g) + eps)
        return p + neg_clr * m / u, m, u

    return adamax


_ADAMAX = Elementwise(state=("exp_avg", "exp_inf"), element=_adamax_element,
                      scalars=_adamax_scalars, flags=_adamax_flags)


class Adamax(_Elementwise):
    r"""Adamax with ``torch.optim.Adamax``'s keywords, defaults and maths.

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
        p_t = p_{t-1} - \frac{\eta}{1 - \beta_1^t} \frac{m_t}{u_t}

    (torch's form: bias correction, :math:`\epsilon` inside the maximum; anyoptim's own
    :class:`anyoptim.Adamax` follows MLX instead.)

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate. Default ``2e-3``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: L2 penalty. Default ``0``.
        foreach: accepted for compatibility.
        maximize: maximise the objective. Default ``False``.
        differentiable: must be ``False``.
        capturable: must be ``False``.

    State per parameter: ``step``, ``exp_avg``, ``exp_inf``.
    """

    _checked = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        _torch_options("Adamax", capturable, differentiable)
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "foreach": foreach, "maximize": maximize, "differentiable": False,
            "capturable": False,
        }
        super().__init__(params, defaults)

    def _rule(self, h: Hyper) -> Elementwise:
        return _ADAMAX


# ----------------------------------------------------------------------------- Lion
def _lion_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = h["lr"]
    b1, b2 = h["betas"]
    return (lr, b1, 1 - b1, b2, 1 - b2, 1 - lr * h["weight_decay"])


def _lion_flags(h: Hyper) -> tuple[Any, ...]:
    return (is_positive(h["weight_decay"]) is not False,)


# anyoptim's (MLX's) element function, with torch's state name
_LION_ELEMENT = _core.Lion.rule.element if _core.Lion.rule is not None else None
_LION = Elementwise(state=("exp_avg",), element=_LION_ELEMENT,
                    scalars=_lion_scalars, flags=_lion_flags)


class Lion(_Elementwise):
    r"""Lion (Chen et al., 2023) with anyoptim's (MLX's) update and torch-style names.

    .. math::

        c_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t \\
        p_t &= p_{t-1} (1 - \eta \lambda) - \eta \, \mathrm{sign}(c_t)

    ``torch.optim`` has no Lion. The weights decay only for ``weight_decay > 0`` (as in MLX).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-4`` (Lion wants a 3-10x smaller lr
            than AdamW).
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0``.

    State per parameter: ``exp_avg`` (:math:`m`).
    """

    _checked = ("lr", "betas")
    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        super()._validate(group, where)
        if "weight_decay" in group:
            _check_number("Lion", where, "weight_decay", group["weight_decay"], None, None)

    def _rule(self, h: Hyper) -> Elementwise:
        return _LION

    def _init_state(self, p: Tensor, state: dict[str, Any], h: Hyper) -> None:
        pass


# =============================================================================== Muon, Adafactor
class _PerTensor(_FrontEnd):
    """A torch optimizer running one of anyoptim's per-tensor optimizers (Muon, Adafactor)
    through its pure step, per group."""

    _core_class: ClassVar[type[_core.Optimizer]]
    #: anyoptim state name -> torch state name
    _renames: ClassVar[dict[str, str]] = {}
    _counts_steps: ClassVar[bool] = False

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        """The anyoptim optimizer doing the maths (cheap to build; built per update so that its
        lazily created state follows the group's configuration)."""
        raise NotImplementedError

    def _update_group(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        core = self._build_core(group)
        h = self._core_hyper(group)
        back = {v: k for k, v in self._renames.items()}
        buckets: dict[Any, list[Tensor]] = {}
        for p in params:
            st = self.state[p]
            if self._counts_steps:
                if "step" not in st:
                    st["step"] = _new_step()
                st["step"] += 1
                count = st["step"] if _compiling() else int(st["step"].item())
                buckets.setdefault(id(p) if _compiling() else count, []).append(p)
            else:
                buckets.setdefault(None, []).append(p)
        for members in buckets.values():
            names = [str(i) for i in range(len(members))]
            ps = dict(zip(names, members))
            gs = {n: p.grad for n, p in ps.items()}
            first = self.state[members[0]]
            step = (first["step"] - 1).to(torch.int64) if self._counts_steps \
                else torch.tensor(0, dtype=torch.int64)
            state: dict[str, Any] = {"step": step}
            for n, p in ps.items():
                st = self.state[p]
                started = any(k not in _SCALAR_KEYS for k in st)
                if started and group.get("beta1") is not None and "exp_avg" not in st:
                    st["exp_avg"] = _zeros(p)  # a first moment switched on after the start
                sub = {back.get(k, k): v for k, v in st.items() if k not in _SCALAR_KEYS}
                state[n] = sub
            new_params, new_state = core.pure_step(ps, gs, state, hyperparameters=h)
            for n, p in ps.items():
                p.copy_(new_params[n])
                st = self.state[p]
                for k, v in new_state[n].items():
                    key = self._renames.get(k, k)
                    if key in st and isinstance(st[key], Tensor) and st[key].shape == v.shape:
                        st[key].copy_(v)
                    else:
                        st[key] = v

    def _state_shape(self, p: Tensor, key: str, value: Tensor) -> tuple[int, ...]:
        if key == "exp_avg_sq_row":
            return tuple(p.shape[:-1])
        if key == "exp_avg_sq_col":
            return (*p.shape[:-2], p.shape[-1])
        return tuple(p.shape)


class Muon(_PerTensor):
    r"""Muon with ``torch.optim.Muon``'s keywords, defaults and maths (anyoptim's
    :class:`anyoptim.Muon` with ``adjust_lr=adjust_lr_fn or "original"``,
    ``normalize="clamp"``, ``decoupled_weight_decay=True``, ``ns_dtype="bfloat16"``).

    .. math::

        B &\leftarrow \mu B + (1-\mu) g, \qquad
        \tilde B = (1-\mu) g + \mu B \text{ (Nesterov) or } B \\
        O &= \mathrm{NS}^{(a,b,c)}_k(\tilde B / \max(\|\tilde B\|_F, \epsilon)), \qquad
        p \leftarrow p(1 - \eta\lambda) - \eta f(A, B)\, O

    with :math:`f = \sqrt{\max(1, A/B)}` (``adjust_lr_fn=None`` or ``"original"``) or
    :math:`0.2\sqrt{\max(A, B)}` (``"match_rms_adamw"``, Moonlight's). The Newton-Schulz
    iteration runs in bfloat16, as torch's does (the two bfloat16 iterations round
    differently: they agree to about 2e-3). Unlike torch, tensors that are not matrices are
    accepted: ndim > 2 is reshaped to ``(S[0], -1)``, scalars and vectors get momentum SGD.
    For MLX's Muon on torch tensors use ``anyoptim.torch.Optimizer(params,
    anyoptim.Muon(...))``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: learning rate :math:`\eta`. Default ``1e-3``.
        weight_decay: decoupled weight decay :math:`\lambda`. Default ``0.1``.
        momentum: :math:`\mu`. Default ``0.95``.
        nesterov: Nesterov momentum. Default ``True``.
        ns_coefficients: :math:`(a, b, c)`. Default ``(3.4445, -4.775, 2.0315)``.
        eps: lower bound of the norm. Default ``1e-7``.
        ns_steps: Newton-Schulz iterations :math:`k`. Default ``5``.
        adjust_lr_fn: None, ``"original"`` or ``"match_rms_adamw"``. Default None.

    State per parameter: ``momentum_buffer``.

    Example:
        >>> import torch, anyoptim.torch
        >>> w = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = anyoptim.torch.Muon([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.eye(2)
        >>> opt.step()
        >>> torch.round(w.detach().diagonal(), decimals=2)
        tensor([-0.1100, -0.1100])
    """

    _core_class = _core.Muon
    _renames: ClassVar[dict[str, str]] = {"v": "momentum_buffer"}

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-07,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov, "ns_coefficients": ns_coefficients,
                                  "eps": eps, "ns_steps": ns_steps,
                                  "adjust_lr_fn": adjust_lr_fn})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        if "lr" in group:
            _check_lr("Muon", where, group["lr"])
        if "momentum" in group:
            _check_number("Muon", where, "momentum", group["momentum"], 0.0, 1.0,
                          fix="momentum is a decay rate in [0, 1), e.g. 0.95.")
        for key in ("weight_decay", "eps"):
            if key in group:
                _check_number("Muon", where, key, group[key], 0.0, None)
        if "nesterov" in group:
            _check_bool("Muon", where, "nesterov", group["nesterov"])
        steps = group.get("ns_steps", 5)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < 100:
            _fail("Muon", where, "ns_steps", steps, "an int in [0, 100)",
                  "Pass ns_steps=5, say.")
        coefficients = group.get("ns_coefficients", (3.4445, -4.775, 2.0315))
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3 or not all(
                _is_number(c) for c in coefficients):
            _fail("Muon", where, "ns_coefficients", coefficients, "three numbers (a, b, c)",
                  "Pass ns_coefficients=(3.4445, -4.775, 2.0315), say.")
        mode = group.get("adjust_lr_fn")
        if mode not in (None, "original", "match_rms_adamw"):
            _fail("Muon", where, "adjust_lr_fn", mode, "None, 'original' or 'match_rms_adamw'",
                  "torch.optim.Muon supports these two adjustments.")

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        return _core.Muon(learning_rate=0.0)

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"learning_rate": _lr_value(group["lr"]), **_muon_options(group)}


def _muon_options(group: Mapping[str, Any]) -> dict[str, Any]:
    """torch.optim.Muon's group as anyoptim.Muon's options."""
    return {"momentum": group["momentum"], "weight_decay": group["weight_decay"],
            "nesterov": group["nesterov"], "ns_steps": group["ns_steps"],
            "adjust_lr": group["adjust_lr_fn"] or "original",
            "ns_coefficients": [list(group["ns_coefficients"])], "eps": group["eps"],
            "normalize": "clamp", "decoupled_weight_decay": True, "ns_dtype": "bfloat16"}


class Adafactor(_PerTensor):
    r"""Adafactor (Shazeer and Stern, 2018) with anyoptim's (MLX's) update and the keywords
    of Hugging Face's ``transformers.optimization.Adafactor``.

    Factored second moments for tensors with two or more dimensions, a relative step size
    :math:`\max(\epsilon_2, \mathrm{RMS}(p)) \min(10^{-2}, 1/\sqrt{t})` unless
    ``relative_step=False`` (then ``lr`` is the step size); see :class:`anyoptim.Adafactor`.
    ``torch.optim.Adafactor`` differs in weight decay, learning rate and :math:`\epsilon_1`
    ("Coming from PyTorch" in the docs). A group whose ``lr`` is set to ``0`` is not moved,
    even with the relative step size (what distributed checkpoint's initialising step needs).

    Args:
        params: tensors, ``(name, tensor)`` pairs or parameter-group dicts.
        lr: the step size, used with ``relative_step=False``. Default ``None``.
        eps: :math:`(\epsilon_1, \epsilon_2)`. Default ``(1e-30, 1e-3)``.
        clip_threshold: RMS clipping threshold of the update. Default ``1.0``.
        decay_rate: exponent of the second-moment decay. Default ``-0.8``.
        beta1: first-moment decay, or None for none. Default ``None``.
        weight_decay: weight decay scaled by the step size. Default ``0``.
        scale_parameter: scale the step by the parameter's RMS. Default ``True``.
        relative_step: use the relative step size. Default ``True``.
        warmup_init: warm the relative step size up. Default ``False``.

    State per parameter: ``step``, ``exp_avg_sq_row`` and ``exp_avg_sq_col`` (or
    ``exp_avg_sq``), ``exp_avg`` with ``beta1``.
    """

    _core_class = _core.Adafactor
    _counts_steps = True

    def __init__(
        self,
        params: Any,
        lr: float | Tensor | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
    ) -> None:
        if lr is not None and relative_step:
            _fail("Adafactor", "", "lr", lr, "None when relative_step=True",
                  "The relative step size ignores lr: pass relative_step=False to use lr.")
        if warmup_init and not relative_step:
            _fail("Adafactor", "", "warmup_init", True, "False when relative_step=False",
                  "warmup_init warms up the relative step size; pass relative_step=True.")
        super().__init__(params, {
            "lr": lr, "eps": eps, "clip_threshold": clip_threshold, "decay_rate": decay_rate,
            "beta1": beta1, "weight_decay": weight_decay, "scale_parameter": scale_parameter,
            "relative_step": relative_step, "warmup_init": warmup_init})

    def _validate(self, group: Mapping[str, Any], where: str) -> None:
        lr = group.get("lr")
        if lr is not None:
            _check_lr("Adafactor", where, lr)
        elif not group.get("relative_step", True):
            _fail("Adafactor", where, "lr", None, "a number when relative_step=False",
                  "Pass lr=1e-3, say, or relative_step=True.")
        eps = group.get("eps", (1e-30, 1e-3))
        if not isinstance(eps, (tuple, list)) or len(eps) != 2 or not all(map(_is_number, eps)):
            _fail("Adafactor", where, "eps", eps, "a pair of numbers (eps1, eps2)",
                  "Pass eps=(1e-30, 1e-3).")
        beta1 = group.get("beta1")
        if beta1 is not None:
            _check_number("Adafactor", where, "beta1", beta1, 0.0, 1.0)
        for key in ("clip_threshold", "weight_decay"):
            if key in group:
                _check_number("Adafactor", where, key, group[key], 0.0, None)
        for key in ("scale_parameter", "relative_step", "warmup_init"):
            if key in group:
                _check_bool("Adafactor", where, key, group[key])

    def _build_core(self, group: Mapping[str, Any]) -> _core.Optimizer:
        return _core.Adafactor(beta_1=group["beta1"])

    def _core_hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        lr = _lr_value(group["lr"])
        relative = group["relative_step"]
        if relative and lr is not None and _is_number(lr) and lr == 0:
            relative = False  # a zero lr (e.g. distributed checkpoint's init step): no move
        h = {"eps": tuple(group["eps"]), "clip_threshold": group["clip_threshold"],
             "decay_rate": group["decay_rate"], "beta_1": group["beta1"],
             "weight_decay": group["weight_decay"], "scale_parameter": group["scale_parameter"],
             "relative_step": relative, "warmup_init": group["warmup_init"]}
        if not relative:
            h["learning_rate"] = lr
        return h


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
    "Adam": (_core.Adam, {"exp_avg": "m", "exp_avg_sq": "v"}),
    "AdamW": (_core.AdamW, {"exp_avg": "m", "exp_avg_sq": "v"}),
    "RMSprop": (_core.RMSprop, {"square_avg": "v"}),
    "Adagrad": (_core.Adagrad, {"sum": "v"}),
    "Adadelta": (_core.AdaDelta, {"square_avg": "v", "acc_delta": "u"}),
    "Lion": (_core.Lion, {"exp_avg": "m"}),
    "Muon": (_core.Muon, {"momentum_buffer": "v"}),
    "Adafactor": (_core.Adafactor, {}),
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
        if h.get("amsgrad"):
            refuse("amsgrad", "anyoptim's Adam has no AMSGrad")
        kw = {"learning_rate": lr, "betas": _plain_value(tuple(h["betas"])), "eps": h["eps"],
              "bias_correction": True}
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
        ValueError: an option anyoptim's class lacks (e.g. ``amsgrad``, torch's ``Adamax``),
            or per-parameter steps that differ (anyoptim counts one step for all).
    """
    if isinstance(optimizer, Optimizer):
        return optimizer.anyoptim_optimizer
    cls_name = type(optimizer).__name__
    found = next((c for c in type(optimizer).__mro__ if c.__module__ == __name__
                  and c.__name__ in _TO_ANYOPTIM), None)
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
        step = counted.pop() if counted else 0  # SGD, Lion, Muon: the step is not used
        new = {"step": _backend.to_library(_backend.host_scalar(step, np.uint64), like)}
        if "learning_rate" in sub_opt.state:
            new["learning_rate"] = _backend.to_library(sub_opt.state["learning_rate"], like)
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
