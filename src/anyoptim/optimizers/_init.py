"""``Optimizer.init``: the state of every parameter that has none yet.

The per-parameter dicts are filled by the optimizer's ``init_single`` hook, cast to its
``state_dtype`` and, for many small NumPy parameters, laid out one block per state entry
(:mod:`.._backend._numpy_pack`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _backend
from .._backend import _numpy_pack, finalize, library_name
from . import _precision, _tree
from ._tree import PathError

if TYPE_CHECKING:
    from ._base import Optimizer


def create_state(opt: Optimizer, parameters: Any) -> None:
    """Create the state for every parameter in ``parameters`` that has none yet (``step``,
    ``learning_rate`` and existing entries are kept)."""
    opt._check_reserved(parameters, "parameters")
    name = type(opt).__name__
    structure, leaves = _tree.flatten(parameters)
    for i, leaf in enumerate(leaves):
        if library_name(leaf) is None:
            path = _tree.paths(structure)[i]
            raise TypeError(
                f"{name}.init: parameter at {path or '<root>'!r}: expected an array, got "
                f"{type(leaf).__name__} ({leaf!r:.60}). Remove non-array leaves (None, "
                "numbers) from the tree."
            )
    _tree.merge_structure(parameters, opt._state, name)
    if leaves:
        opt._adopt_scalars(leaves[0])
    grads: list[Any] = []
    states: list[Any] = []
    try:
        structure = _tree.gather(parameters, parameters, opt._state, grads, [], states)
    except PathError as err:
        raise err.build(f"{name}.init: parameter") from None
    fresh: list[dict[str, Any]] = []
    try:
        for i, (p, s) in enumerate(zip(grads, states)):
            if not isinstance(s, dict):
                raise PathError.at(
                    _tree.paths(structure)[i].split("."), _tree.TreeMismatchError,
                    f"the state entry is a {type(s).__name__}, expected a dict of state "
                    "arrays",
                )
            if s:
                continue
            opt._xp = _backend.namespace(p)
            opt.init_single(p, s)
            for k, v in s.items():
                s[k] = finalize(v)
            _precision.cast_state(opt, p, s)
            fresh.append(s)
    except PathError as err:
        raise err.build(f"{name}.init: parameter") from None
    finally:
        opt._xp = None
    _numpy_pack.pack(fresh)
