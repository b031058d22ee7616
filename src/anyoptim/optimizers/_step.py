"""One update on flat lists: checks, hyperparameter groups, executors, all-or-nothing.

:func:`apply` is what ``update``, ``apply_gradients`` and ``pure_step`` run. The trees are
walked once (:func:`._tree.gather`); the leaves are checked in one flat loop; the
hyperparameters are grouped; each group goes to the backend's executors (elementwise rules) or
to the optimizer's per-tensor hook; the new state is stored only once everything succeeded.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend
from .._backend import _numpy_batch, _numpy_walk, finalize, library_name
from .._backend._execute import Columns, KernelCache, run_elementwise
from ..errors import MissingStateError
from . import _tree
from ._checks import LeafError, check_leaves, located
from ._tree import PathError

if TYPE_CHECKING:
    from ._base import Hyperparameters, Optimizer

Commits = list[tuple[dict[str, Any], dict[str, Any]]]


def _init_tree(opt: Optimizer, gradients: Any, parameters: Any) -> Any:
    """What the lazy init sees: the gradients (as MLX), or, for state that starts at the
    parameters (``_init_from_parameters``: schedule-free's z, Prodigy's p0), the parameters
    matching the gradients (the gradients where they do not match: the update reports it)."""
    if not opt._init_from_parameters:
        return gradients
    try:
        like: list[Any] = []
        structure = _tree.gather(gradients, parameters, parameters, [], like, [])
        return _tree.unflatten(structure, iter(like))
    except Exception:
        return gradients


def apply(opt: Optimizer, gradients: Any, parameters: Any, hyper: Hyperparameters | None,
          inplace: bool) -> tuple[Any, bool]:
    """Run one update; return the new parameter tree and whether it was written in place
    (then, when ``inplace`` asked for it, None instead of the tree)."""
    from ._base import SKIPPED

    state = opt._state
    name = type(opt).__name__
    if "step" not in state:
        raise MissingStateError(
            f"{name}: the state has no 'step' entry. A state assigned with "
            "`optimizer.state = ...` must come from a saved optimizer state "
            "(tree_flatten(optimizer.state)), which always holds 'step'."
        )
    opt._check_reserved(gradients, "gradients")
    rollback = None
    if not opt._initialized:
        # All-or-nothing includes the lazy init: a failed call leaves no new state behind.
        rollback = _tree.snapshot_dicts(state)
        try:
            opt.init(_init_tree(opt, gradients, parameters))
        except BaseException:
            opt._rollback_init(rollback)
            raise
    grads: list[Any] = []
    params: list[Any] = []
    states: list[Any] = []
    structure = None
    like = None
    plan = _walk_plan(opt, hyper, gradients, parameters, inplace)
    if plan is not None:
        like = next(iter(gradients.values()))
    else:
        try:
            structure = _tree.gather(gradients, parameters, state, grads, params, states)
            # the batched NumPy kernel checks the leaves itself (in compiled code); the others
            # are checked here
            plan = _batch_plan(opt, hyper, grads, params, states, inplace)
            if plan is None:
                check_leaves(grads, params, states)
        except (PathError, LeafError) as err:
            opt._rollback_init(rollback)
            raise located(err, structure).build(f"{name}.apply_gradients: gradient") from None
        like = grads[0] if grads else None
    # Without gradient leaves (e.g. an empty MultiOptimizer part) the parameters tell which
    # library step and learning_rate belong to.
    owner = like if like is not None else _first_array(parameters)
    before = {k: state[k] for k in opt._scalar_keys() if k in state}
    skip = opt.skip_nonfinite and like is not None
    try:
        if owner is not None:
            opt._adopt_scalars(owner)
        elif "mlx.core" in sys.modules and library_name(state["step"]) == "numpy":
            # nothing to update and nothing to learn the library from: MLX's own state is made
            # of MLX arrays, which a compiled step (mx.compile(inputs=state, ...)) can carry
            import mlx.core as mx

            opt._adopt_scalars(mx.array(0.0))
        if opt.skip_nonfinite and SKIPPED not in state:
            state[SKIPPED] = finalize(state["step"] * 0)
        xp = _backend.namespace(like) if like is not None else None
        saved = opt._advance()
        commits: Commits = []
        new: list[Any] = []
        in_place = True
        if grads or plan is not None:
            # fused executors may reuse state buffers, which a skipped step must keep intact
            fused = not skip and opt._fused_allowed
            new, in_place = _execute(opt, xp, structure, grads, params, states, hyper,
                                     inplace and not skip, commits, fused, plan)
            if skip:
                new = _keep_if_finite(opt, xp, grads, params, new, commits, saved)
    except BaseException:
        state.update(saved if "saved" in locals() else {})
        state.update(before)
        opt._rollback_init(rollback)
        raise
    finally:
        opt._xp = None
    for target, values in commits:
        target.update(values)
    if inplace and in_place:
        return None, True  # nobody reads the tree of an update written in place
    return _tree.unflatten(structure, iter(new)), in_place


def _batchable(opt: Optimizer, hyper: Hyperparameters | None) -> bool:
    """Whether the update is one group of an elementwise rule on the fused path (what the
    batched NumPy kernel runs)."""
    return not (opt.rule is None or hyper is not None or opt.groups or opt.skip_nonfinite
                or not opt._fused_allowed or opt.state_dtype is not None
                or opt.stochastic_rounding or not _backend.fused_enabled()
                or not _backend.fused_numpy_available())


def _batch_plan(opt: Optimizer, hyper: Hyperparameters | None, grads: list[Any],
                params: list[Any], states: list[Any], inplace: bool) -> Any:
    """The checked leaves for the batched NumPy kernel (:mod:`.._backend._numpy_batch`), when
    the update is :func:`_batchable`; else None."""
    rule = opt.rule
    if rule is None or not _batchable(opt, hyper):
        return None
    return _numpy_batch.plan(rule.state, grads, params, states, inplace, _kernel_cache(opt))


def _walk_plan(opt: Optimizer, hyper: Hyperparameters | None, gradients: Any, parameters: Any,
               inplace: bool) -> Any:
    """The checked leaves of an in-place update of flat dicts of NumPy arrays, found by the
    compiled walk (:mod:`.._backend._numpy_walk`), or None: then the Python walk runs. Only for
    rules with no whole-update sums (``prepare`` and ``prepare_groups`` need the leaf lists)."""
    from ._base import Optimizer

    if (not inplace or type(gradients) is not dict or type(parameters) is not dict
            or len(gradients) < _numpy_walk.MIN_LEAVES):
        return None
    first = next(iter(gradients.values()))
    if type(first) is not np.ndarray:
        return None
    dtype = _numpy_batch.DTYPES.get(first.dtype)
    if (dtype is None or type(opt).prepare_groups is not Optimizer.prepare_groups
            or type(opt).prepare is not Optimizer.prepare or not _batchable(opt, hyper)):
        return None
    rule = opt.rule
    if rule is None:
        return None
    return _numpy_walk.plan(rule.state, gradients, parameters, opt._state, dtype,
                            _kernel_cache(opt))


def _kernel_cache(opt: Optimizer) -> KernelCache:
    cache = opt.__dict__.get("_kernels")
    if cache is None:
        cache = opt._kernels = KernelCache()
    return cache


def _execute(opt: Optimizer, xp: Any, structure: Any, grads: list[Any], params: list[Any],
             states: list[dict[str, Any]], hyper: Hyperparameters | None, inplace: bool,
             commits: Commits, fused: bool, plan: Any = None) -> tuple[list[Any], bool]:
    """Run every hyperparameter group; fill ``commits`` with the new state to store.

    Every group's ``prepare`` (``prepare_groups``: whole-update sums such as Prodigy's) sees
    all groups before any of them is updated. ``plan``: the leaves as already checked for the
    batched kernel (one group only)."""
    rule = opt.rule
    step = opt._state["step"]
    new: list[Any] = [None] * len(grads)
    in_place = True
    parts: list[tuple[list[Any], list[Any], list[dict[str, Any]], dict[str, Any],
                      list[int] | None, Any]] = []
    for h, index in groups(opt, structure, hyper, len(grads), params):
        if index is None:
            g_, p_, s_ = grads, params, states
        else:
            g_ = [grads[i] for i in index]
            p_ = [params[i] for i in index]
            s_ = [states[i] for i in index]
        cast = None
        if opt.state_dtype is not None or opt.stochastic_rounding:
            from ._precision import Cast

            cast = Cast(opt, g_, p_, s_)
            g_, p_, s_ = cast.inputs()
        parts.append((g_, p_, s_, h, index, cast))
    opt._xp = xp
    extras = opt.prepare_groups([part[:4] for part in parts])
    for (g_, p_, s_, h, index, cast), extra in zip(parts, extras):
        opt._xp = xp
        start = len(commits)
        group_inplace = inplace and cast is None
        if extra:
            h = {**h, **extra}
        if rule is not None:
            out, new_states = run_elementwise(rule, xp, h, step, Columns(g_, p_, s_),
                                              group_inplace, fused, _kernel_cache(opt), plan)
            if new_states is not None:
                in_place = False
                keys = rule.state
                commits.extend((s, dict(zip(keys, vals))) for s, vals in zip(s_, new_states))
        else:
            in_place = False
            out = []
            for g, p, s in zip(g_, p_, s_):
                staging = dict(s)
                new_p = opt.update_tensor(g, p, staging, h)
                for k, v in staging.items():
                    staging[k] = finalize(v)
                commits.append((s, staging))
                out.append(finalize(new_p))
        if cast is not None:
            out = cast.finish(commits, start, out)
        if index is None:
            new = out
        else:
            for i, value in zip(index, out):
                new[i] = value
    return new, in_place


def groups(opt: Optimizer, structure: Any, hyper: Hyperparameters | None,
           n: int, params: list[Any] | None = None,
           ) -> list[tuple[dict[str, Any], list[int] | None]]:
    """The hyperparameter mappings of the update and the leaves (None: all) each one takes:
    the optimizer's parameter groups (``opt.groups``), then the per-call ``hyper``."""
    base = opt.hyper()
    specs = opt.groups
    if hyper is None and not specs:
        return [(base, None)]
    if isinstance(hyper, Mapping) and not specs:
        return [(_merged(opt, base, hyper), None)]
    if hyper is not None and not isinstance(hyper, Mapping) and not callable(hyper):
        raise TypeError(
            f"{type(opt).__name__}: hyperparameters should be a mapping or a function of the "
            f"parameter path returning one, got {type(hyper).__name__}"
        )
    paths = _tree.paths(structure)
    member = [-1] * len(paths)
    values: list[dict[str, Any]] = []
    if specs:
        from . import _groups

        member = _groups.assign(opt, specs, paths, params if params is not None else [])
        values = [_groups.overrides(g, base) for g in specs]
    found: dict[Any, tuple[dict[str, Any], list[int]]] = {}
    for i, path in enumerate(paths):
        call = (hyper if isinstance(hyper, Mapping) else hyper(path) if hyper is not None
                else None) or {}
        key = (member[i], tuple(sorted((k, _identity(v)) for k, v in call.items())))
        entry = found.get(key)
        if entry is None:
            overrides = {**values[member[i]], **call} if member[i] >= 0 else call
            entry = found[key] = (_merged(opt, base, overrides), [])
        entry[1].append(i)
    if len(found) == 1:
        return [(next(iter(found.values()))[0], None)]
    return list(found.values())


def _identity(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else id(value)


def _merged(opt: Optimizer, base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    known = (*opt.hyperparameters, "learning_rate")
    for key in overrides:
        if key not in known:
            raise ValueError(
                f"{type(opt).__name__}: unknown hyperparameter {key!r} in hyperparameters; "
                f"this optimizer takes {', '.join(repr(k) for k in known)}."
            )
    merged = {**base, **overrides}
    lr = overrides.get("learning_rate")
    if lr is not None and library_name(lr) is None:
        merged["learning_rate"] = _backend.to_library(
            _backend.as_state_array(lr), opt._state["step"])
    return merged


def _keep_if_finite(opt: Optimizer, xp: Any, grads: list[Any], params: list[Any],
                    new: list[Any], commits: Commits, saved: dict[str, Any]) -> list[Any]:
    """Undo this update (parameters, state, step, schedules) if a gradient is not finite,
    and count the skipped step.

    The choice is made with ``where`` on a 0-d flag, so it works under ``jax.jit`` and
    ``mx.compile`` and does not wait for the device.
    """
    from ._base import SKIPPED

    ok = None
    for g in grads:
        finite = xp.all(xp.isfinite(g))
        ok = finite if ok is None else xp.logical_and(ok, finite)
    for target, values in commits:
        for key, value in values.items():
            if key in target:
                values[key] = finalize(xp.where(ok, value, target[key]))
    state = opt._state
    for key, old in saved.items():
        state[key] = finalize(xp.where(ok, state[key], old))
    count = state[SKIPPED]
    state[SKIPPED] = finalize(xp.where(ok, count, count + 1))
    return [finalize(xp.where(ok, a, b)) for a, b in zip(new, params)]


def _first_array(tree: Any) -> Any:
    for leaf in _tree.leaves(tree):
        if library_name(leaf) is not None:
            return leaf
    return None
