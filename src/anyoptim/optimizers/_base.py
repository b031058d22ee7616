"""The ``Optimizer`` base class: MLX's interface, lazy state, schedules and the step counter.

An optimizer states its maths once, in one of two forms:

* an elementwise rule (``rule = Elementwise(...)``, see :mod:`anyoptim._backend._rules`), from
  which the backend derives every executor (reference, numba, torch multi-tensor, jit);
* a per-tensor hook ``update_tensor(gradient, parameter, state, h)`` for updates that look at
  a whole tensor (factored moments, Newton-Schulz, norms), optionally with the whole-tree hook
  ``prepare(gradients, parameters, states, h)`` for sums over all parameters.

Hyperparameters reach both as the mapping ``h`` (the attributes named in ``hyperparameters``
plus ``learning_rate``, overridable per call and per group of parameters), never only through
``self``. MLX's hooks ``init_single`` / ``apply_single`` keep working, for user subclasses too.

One update walks the trees once (:mod:`._tree`); :mod:`._step` runs the flat lists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import _backend
from .._backend import finalize, library_name
from .._backend._rules import Elementwise
from ..errors import MissingStateError
from . import _groups, _init, _precision, _step, _tree

Schedule = Callable[[Any], Any]
LearningRate = float | Schedule
#: Per-call hyperparameters: one mapping for every parameter, or ``path -> mapping or None``.
Hyperparameters = Mapping[str, Any] | Callable[[str], Mapping[str, Any] | None]

RESERVED = ("step", "learning_rate")
SKIPPED = "skipped_steps"


class Optimizer:
    """Base class of all optimizers, with MLX's ``mlx.optimizers.Optimizer`` interface.

    Args:
        schedulers: optional mapping from a state name to a schedule ``step -> value``; the
            value is stored in ``state[name]`` before every update (as in MLX).

    The state is a dict ``{"step", "learning_rate", <tree mirroring the parameters>}``.
    ``step`` is a 0-d uint64 array and ``learning_rate`` a 0-d array; both are created as NumPy
    arrays and adopt the library of the first gradients they meet.
    """

    #: Opt-in policy for non-finite gradients. False (the default, as in MLX): NaN and Inf
    #: propagate into the parameters and state. True: an update whose gradients contain a NaN
    #: or an Inf is skipped entirely (parameters, state, step and schedules stay as they were),
    #: like optax's ``apply_if_finite``, and counted in ``state["skipped_steps"]``.
    skip_nonfinite: bool = False

    #: The elementwise rule of the optimizer, if its update is elementwise.
    rule: Elementwise | None = None

    #: The attributes passed to the rule (with ``learning_rate``) as the mapping ``h``.
    hyperparameters: tuple[str, ...] = ()

    # False while a MultiOptimizer that may undo the update drives this one (fused executors
    # may write the new state into buffers nobody else holds)
    _fused_allowed = True
    # what the executors keep between updates (anyoptim._backend._execute.KernelCache)
    _kernels: Any
    #: top-level scalar state entries of the optimizer itself (NAdam's mu_product, ...)
    _extra_scalars: tuple[str, ...] = ()
    #: whether the lazy init of the first update sees the parameters (state starting at them)
    _init_from_parameters = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # every optimizer's constructor takes the keyword-only option ``groups=`` (see the
        # ``groups`` property); its own signature stays as written (inspect follows __wrapped__)
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_takes_options", False):
            return

        @functools.wraps(init)
        def __init__(self: Optimizer, *args: Any, groups: Any = None, state_dtype: Any = None,
                     stochastic_rounding: Any = None, **kw: Any) -> None:
            init(self, *args, **kw)
            if groups is not None:
                self.groups = groups
            if state_dtype is not None:
                self.state_dtype = state_dtype
            if stochastic_rounding is not None:
                self.stochastic_rounding = stochastic_rounding

        __init__._takes_options = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, schedulers: Mapping[str, Schedule] | None = None) -> None:
        self._initialized = False
        self._state: dict[str, Any] = {"step": _backend.host_scalar(0, np.uint64)}
        self._schedulers: dict[str, Schedule] = dict(schedulers or {})
        self._xp: Any = None

    # ------------------------------------------------------------------ public API
    @property
    def xp(self) -> Any:
        """The array namespace of the arrays currently being processed (inside the hooks)."""
        return self._xp

    @property
    def state(self) -> dict[str, Any]:
        """The live optimizer state (the same dict object across updates)."""
        return self._state

    @state.setter
    def state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise TypeError(
                f"{type(self).__name__}.state must be a dict such as the one returned by "
                f"tree_unflatten(...), got {type(state).__name__}"
            )
        self._initialized = False
        self._state = state

    @property
    def groups(self) -> tuple[_groups.Group, ...]:
        """Parameter groups with their own hyperparameters (:func:`anyoptim.group`), on this
        optimizer and its one state; set with ``groups=[...]`` in any constructor or by
        assignment. Parameters in no group use the optimizer's own values; per-call
        ``hyperparameters`` apply on top of a group's values."""
        return self.__dict__.get("_groups", ())

    @groups.setter
    def groups(self, groups: Any) -> None:
        self._groups = _groups.validate(self, groups)

    @property
    def state_dtype(self) -> str | None:
        """The dtype of the floating state arrays (``"float32"``, ``"bfloat16"``,
        ``"float16"``) or None (the parameters' dtype); see :mod:`._precision`."""
        return self.__dict__.get("_state_dtype")

    @state_dtype.setter
    def state_dtype(self, value: Any) -> None:
        self._state_dtype = _precision.normalize(value)

    #: Round bfloat16 parameters stochastically (True, or a source of random bits for tests).
    stochastic_rounding: Any = False

    @property
    def step(self) -> Any:
        """The number of updates applied so far (a 0-d uint64 array)."""
        return self._get_reserved("step")

    @property
    def learning_rate(self) -> Any:
        """The learning rate in the state (a 0-d array)."""
        return self._get_reserved("learning_rate")

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        value = _backend.as_state_array(learning_rate)
        step = self._state.get("step")
        if step is not None:
            value = _backend.to_library(value, step)
        self._state["learning_rate"] = value

    def init(self, parameters: Any) -> None:
        """Create the state for every parameter in ``parameters`` that has none yet.

        Existing per-parameter state, ``step`` and ``learning_rate`` are never reset.
        """
        _init.create_state(self, parameters)
        self._initialized = True

    def update(self, model: Any, gradients: Any,
               hyperparameters: Hyperparameters | None = None) -> None:
        """Apply the gradients to ``model``.

        MLX modules are updated through ``model.update``; torch modules, NumPy arrays and
        torch tensors in dicts and lists are updated in place; other trees are merged
        recursively (only the locations present in ``gradients``).

        ``hyperparameters`` overrides hyperparameters for this update: a mapping (e.g.
        ``{"weight_decay": 0.0}``) for every parameter, or a function of the dotted parameter
        path returning such a mapping (or None) for per-group values.
        """
        params = _backend.model_parameters(model)
        new, in_place = self._apply(gradients, params, hyperparameters, inplace=True)
        if not in_place:
            leaves = _tree.leaves(new)
            with _backend.no_grad(leaves[0] if leaves else None):
                _backend.write_back(model, new)

    def apply_gradients(self, gradients: Any, parameters: Any,
                        hyperparameters: Hyperparameters | None = None) -> Any:
        """Return the updated parameters for ``gradients``; inputs are never modified.

        The update is all-or-nothing: if anything fails (a gradient without state or without a
        parameter, mismatched shapes or libraries, an error in the maths), ``step``,
        ``learning_rate`` and every state array are left exactly as they were.
        ``hyperparameters`` is as in :meth:`update`.
        """
        return self._apply(gradients, parameters, hyperparameters, inplace=False)[0]

    def apply_gradients_with_updates(
        self, gradients: Any, parameters: Any, hyperparameters: Hyperparameters | None = None
    ) -> tuple[Any, Any]:
        """``(new_parameters, updates)``: :meth:`apply_gradients` and the update direction
        ``new - old`` of every parameter (float32 for 16-bit parameters, else the parameter's
        dtype), for front-ends that add updates themselves (``optax.apply_updates``)."""
        new = self.apply_gradients(gradients, parameters, hyperparameters)
        n_structure, n_leaves = _tree.flatten(new)
        old: list[Any] = []
        _tree.gather(gradients, parameters, parameters, [], old, [])
        deltas = [_backend.difference(a, b) for a, b in zip(n_leaves, old)]
        return new, _tree.unflatten(n_structure, iter(deltas))

    def pure_step(self, parameters: Any, gradients: Any, state: Any,
                  hyperparameters: Hyperparameters | None = None) -> tuple[Any, Any]:
        """A pure function of its inputs: return ``(new_parameters, new_state)``.

        Neither the inputs nor ``self.state`` are modified, so this is the entry point for
        compilers and transformations: ``jax.jit`` (donate ``parameters`` and ``state``:
        ``donate_argnums=(0, 2)``; outputs come in the same order as those inputs, so every
        buffer is reused), ``jax.vmap``, ``jax.grad``, ``mx.compile`` and ``torch.compile``.
        ``state`` is a state dict as found in ``optimizer.state`` (for example after
        ``optimizer.init(params)``); entries missing for some parameters are created.
        Hyperparameters and schedules come from ``self``, overridden by ``hyperparameters``
        (which may be traced arrays under ``jax.jit``: no Python comparison looks at them).

        Example:
            >>> import numpy as np, anyoptim as optim
            >>> opt = optim.SGD(learning_rate=0.1)
            >>> params = {"w": np.ones(2, np.float32)}
            >>> opt.init(params)
            >>> grads = {"w": np.ones(2, np.float32)}
            >>> new_params, new_state = opt.pure_step(params, grads, opt.state)
            >>> new_params["w"], int(new_state["step"]), int(opt.state["step"])
            (array([0.9, 0.9], dtype=float32), 1, 0)
        """
        saved, saved_init = self._state, self._initialized
        self._state = _tree.copy_containers(state)
        self._initialized = False
        try:
            result = self.apply_gradients(gradients, parameters, hyperparameters)
            return result, self._state
        finally:
            self._state, self._initialized = saved, saved_init

    # ------------------------------------------------------------------ subclass hooks
    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        """Fill the empty per-parameter dict ``state`` for ``parameter``."""
        if self.rule is None:
            raise NotImplementedError
        for key in self.rule.state:
            state[key] = self.xp.zeros_like(parameter)

    def apply_single(self, gradient: Any, parameter: Any, state: dict[str, Any]) -> Any:
        """Return the updated ``parameter`` and write the new state arrays into ``state``."""
        if self.rule is None and type(self).update_tensor is Optimizer.update_tensor:
            raise NotImplementedError
        return self.update_tensor(gradient, parameter, state, self.hyper())

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Mapping[str, Any]) -> Any:
        """The per-tensor update with hyperparameters ``h``: return the new parameter and
        write the new state arrays into ``state``. ``self.xp`` is the arrays' namespace."""
        rule = self.rule
        if rule is None:
            return self.apply_single(gradient, parameter, state)
        new_p, new_state = _backend.run_reference(
            rule, self.xp, h, self._state["step"], gradient, parameter, state)
        state.update(zip(rule.state, new_state))
        return new_p

    def prepare(self, gradients: list[Any], parameters: list[Any], states: list[dict[str, Any]],
                h: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Whole-tree hook, called once per update and group before the per-parameter maths:
        return extra entries for ``h`` (e.g. sums over all parameters), or None."""
        return None

    def prepare_groups(self, parts: list[tuple[list[Any], list[Any], list[dict[str, Any]],
                                              Mapping[str, Any]]]) -> list[Mapping[str, Any] | None]:
        """Whole-update hook: ``parts`` holds ``(gradients, parameters, states, h)`` for every
        hyperparameter group; return the extra entries of each group's ``h``. By default
        :meth:`prepare` per group; optimizers whose scalars need sums over all groups (Prodigy)
        override this. Called once per update, before any parameter changes."""
        return [self.prepare(g, p, s, h) for g, p, s, h in parts]

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters as the rule sees them: the attributes named in
        ``hyperparameters`` and the current ``learning_rate`` (if the state has one)."""
        h = {name: getattr(self, name) for name in self.hyperparameters}
        if "learning_rate" in self._state:
            h["learning_rate"] = self._state["learning_rate"]
        return h

    # ------------------------------------------------------------------ helpers for hooks
    def _lr(self, gradient: Any) -> Any:
        """The learning rate cast to the gradient's dtype (what every MLX optimizer uses)."""
        return self._xp.astype(self.learning_rate, gradient.dtype)

    def _step_float(self) -> Any:
        """The (already increased) step as a float32 0-d array, for bias terms."""
        xp = self._xp
        return xp.astype(self._state["step"], xp.float32)

    def _maybe_schedule(self, name: str, value: Any) -> None:
        if callable(value):
            self._schedulers[name] = value
            self._state[name] = self._schedule_value(value(self._state["step"]))
        else:
            self._state[name] = _backend.as_state_array(value)

    # ------------------------------------------------------------------ internals
    def _apply(self, gradients: Any, parameters: Any, hyper: Hyperparameters | None,
               inplace: bool) -> tuple[Any, bool]:
        return _step.apply(self, gradients, parameters, hyper, inplace)

    def _adopt_extra(self, like: Any, initial: Mapping[str, float], wide_on_mlx: bool = False
                     ) -> None:
        """Create (from ``initial``, in float64) or move to ``like``'s library the top-level
        scalars of :attr:`_extra_scalars`; on MLX in float32 (its GPU has no float64), or in
        float64 with ``wide_on_mlx`` when ``like`` is float64."""
        state, lib = self._state, library_name(like)
        for key in self._extra_scalars:
            value = state.get(key)
            if value is None:
                value = np.asarray(initial[key], np.float64)
            if library_name(value) != lib:
                if lib == "mlx":
                    import mlx.core as mx

                    host = value if library_name(value) == "numpy" else _backend._to_numpy(value)
                    wide = wide_on_mlx and "float64" in str(getattr(like, "dtype", ""))
                    value = mx.array(np.asarray(host, np.float64 if wide else np.float32),
                                     dtype=mx.float64 if wide else mx.float32)
                else:
                    value = _backend.to_library(value, like)
            state[key] = value

    def _advance(self) -> dict[str, Any]:
        """Evaluate the schedules and increase the step; return what to restore on failure."""
        state = self._state
        saved = {k: state[k] for k in ("step", "learning_rate", *self._schedulers) if k in state}
        try:
            for name, schedule in self._schedulers.items():
                state[name] = self._schedule_value(schedule(state["step"]))
            state["step"] = finalize(state["step"] + 1)
        except BaseException:
            state.update(saved)
            raise
        return saved

    def _rollback_init(self, rollback: list[tuple[dict[str, Any], dict[str, Any]]] | None) -> None:
        """Undo a lazy ``init`` made by a failed ``apply_gradients`` call."""
        if rollback is not None:
            _tree.restore_dicts(rollback)
            self._initialized = False

    def _get_reserved(self, key: str) -> Any:
        try:
            return self._state[key]
        except KeyError:
            raise MissingStateError(
                f"{type(self).__name__}: the state has no {key!r} entry"
                + (
                    " (Adafactor without a learning_rate uses a relative step size and stores none)"
                    if key == "learning_rate" and type(self).__name__ == "Adafactor"
                    else "; a state assigned with `optimizer.state = ...` must hold it"
                )
            ) from None

    def _schedule_value(self, value: Any) -> Any:
        if library_name(value) is None:
            # Improvement over MLX: a schedule may return a plain Python number.
            value = _backend.to_library(_backend.as_state_array(value), self._state["step"])
        return finalize(value)

    def _scalar_keys(self) -> tuple[str, ...]:
        return ("step", "learning_rate", *self._schedulers,
                *((SKIPPED,) if self.skip_nonfinite else ()), *self._extra_scalars)

    def _adopt_scalars(self, like: Any) -> None:
        """Move ``step``, ``learning_rate`` and the scheduled entries to ``like``'s library,
        with the step in that library's counter dtype (a state restored from another library,
        e.g. a uint64 step read by safetensors into torch, which has no uint64 arithmetic)."""
        state = self._state
        lib = library_name(like)
        for key in ("step", SKIPPED):
            counter = state.get(key)
            if counter is not None and not _backend.is_counter(counter, lib):
                host = counter if library_name(counter) == "numpy" else _backend._to_numpy(counter)
                state[key] = _backend.to_library(np.asarray(host).astype(np.uint64), like)
        for key in ("learning_rate", *self._schedulers):
            value = state.get(key)
            if value is not None and library_name(value) not in (None, lib):
                state[key] = _backend.to_library(value, like)

    def _check_reserved(self, tree: Any, what: str) -> None:
        if isinstance(tree, Mapping):
            for key in (*RESERVED, *self._schedulers, *((SKIPPED,) if self.skip_nonfinite else ()),
                        *self._extra_scalars):
                if key in tree:
                    raise ValueError(
                        f"{type(self).__name__}: the {what} tree has a top-level entry named "
                        f"{key!r}, which collides with the optimizer's own {key!r} state entry. "
                        "Rename the parameter or nest the parameters one level deeper "
                        "(e.g. {'model': params})."
                    )
