"""Tree walking for the optimizers: one joint walk per update, then flat lists.

:func:`gather` walks the gradient tree once, picking the matching parameter and state entries
on the way, and returns flat lists (gradients, parameters, per-parameter state dicts) and a
compact description of the gradients' structure, from which :func:`unflatten` builds the
result. Everything else an update does (checks, fused dispatch, rollback, finite checks)
works on the flat lists.

The helpers for ``init`` (merging the parameters' structure into the state, the per-leaf
init) and for undoing a failed call live here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import Any

from ..errors import MissingStateError, TreeMismatchError
from ..utils import _rebuild

_NO_STATE = (
    "this parameter has no optimizer state (it was added after the state was created). "
    "Call optimizer.init(parameters) with the full parameter tree first."
)


class PathError(Exception):
    """An error raised deep in a tree walk, collecting the path on the way out."""

    def __init__(self, kind: type[Exception], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.segments: list[str] = []

    def build(self, what: str) -> Exception:
        path = ".".join(reversed(self.segments)) or "<root>"
        return self.kind(f"{what} at {path!r}: {self.message}")

    @classmethod
    def at(cls, path: list[str], kind: type[Exception], message: str) -> PathError:
        err = cls(kind, message)
        err.segments.extend(reversed(path))
        return err


# A structure is None for a leaf, ("d", keys, kids) for a dict and ("s", sequence, kids) for
# a list or tuple; kids is None when every child is a leaf.
Structure = Any


_LEAF, _MAPPING, _SEQUENCE = 0, 1, 2
# the kind of node each type is (filled as types are met; plain dict lookups are what keep
# the walk cheap: isinstance against the Mapping ABC costs several times more)
_KINDS: dict[type, int] = {dict: _MAPPING, list: _SEQUENCE, tuple: _SEQUENCE}


def _kind(value: Any) -> int:
    cls = type(value)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = (
            _MAPPING if isinstance(value, Mapping)
            else _SEQUENCE if isinstance(value, (list, tuple)) else _LEAF
        )
    return kind


# Nodes with more children than this pick them with one itemgetter (about 20 ns a child
# less); smaller ones with map. With itemgetter on small nodes, the memory CPython keeps for
# freed small tuples (its free lists, up to 2,000 per size) grew by two tuples per update
# until full: held memory that test_memory's in-place steps must not show.
_PICK_MIN = 20


def _all_leaves(g: Any, p: Any, s: Any, keys: Any, values: list[Any], grads: list,
                params: list, states: list) -> bool:
    """The fast path of :func:`gather` for a node whose children are all leaves: the lookups
    run in C. False (nothing appended) when a child is a container or an entry is missing,
    so that the general walk reports the problem."""
    # one lookup per distinct type (usually a single array type), not per child
    for cls in set(map(type, values)):
        kind = _KINDS.get(cls)
        if kind is None:
            kind = _kind(next(v for v in values if type(v) is cls))
        if kind != _LEAF:
            return False
    try:
        if len(keys) > _PICK_MIN:
            # one C call per tree (itemgetter of several keys returns a tuple)
            pick = itemgetter(*keys)
            pv, sv = pick(p), pick(s)
        else:
            pv, sv = list(map(p.__getitem__, keys)), list(map(s.__getitem__, keys))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False
    grads += values
    params += pv
    states += sv
    return True


def gather(g: Any, p: Any, s: Any, grads: list, params: list, states: list) -> Structure:
    """Walk ``g`` with ``p`` and ``s``, appending the leaves to the three lists.

    Raises :class:`PathError` where the parameter or state tree lacks an entry of the
    gradient tree.
    """
    kind = _KINDS.get(type(g))
    if kind is None:
        kind = _kind(g)
    if kind == _MAPPING:
        keys = list(g)
        values = list(g.values())
        if _all_leaves(g, p, s, keys, values, grads, params, states):
            return ("d", keys, None)
        return ("d", keys, _children(zip(keys, values), p, s, grads, params, states))
    if kind == _SEQUENCE:
        if _all_leaves(g, p, s, range(len(g)), list(g), grads, params, states):
            return ("s", g, [None] * len(g))
        return ("s", g, _children(enumerate(g), p, s, grads, params, states))
    grads.append(g)
    params.append(p)
    states.append(s)
    return None


def _children(items: Any, p: Any, s: Any, grads: list, params: list,
              states: list) -> list[Structure]:
    """The general walk of one container's ``(key, child)`` items (see :func:`gather`)."""
    kids: list[Structure] = []
    for key, gv in items:
        if isinstance(gv, (Mapping, list, tuple)) and not gv:
            # an empty sub-tree (a layer without parameters) needs no parameter or state
            kids.append(("d", [], None) if isinstance(gv, Mapping) else ("s", gv, []))
            continue
        try:
            pv = p[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise _missing(p, key, "parameters", gv, exc) from None
        try:
            sv = s[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise _missing(s, key, "state", gv, exc) from None
        if isinstance(gv, (Mapping, list, tuple)):
            try:
                kids.append(gather(gv, pv, sv, grads, params, states))
            except PathError as err:
                err.segments.append(str(key))
                raise
        else:
            grads.append(gv)
            params.append(pv)
            states.append(sv)
            kids.append(None)
    return kids


def _missing(tree: Any, key: Any, what: str, below: Any, exc: Exception) -> PathError:
    """The error for a gradient entry ``key`` that ``tree`` (parameters or state) lacks."""
    wrong_kind = isinstance(exc, TypeError) or (
        isinstance(exc, KeyError) and not isinstance(tree, Mapping)
    )
    if what == "state" and isinstance(below, (Mapping, list, tuple)) and not wrong_kind:
        # a whole sub-tree has no state: name its first leaf, the parameter to look at
        return PathError.at([str(key), *first_path(below)], MissingStateError, _NO_STATE)
    if wrong_kind:
        hint = (
            " (tree_unflatten turns dicts with all-digit keys into lists; build the "
            "parameter tree with non-digit keys or call optimizer.init(parameters))"
            if what == "state" else ""
        )
        return PathError.at(
            [str(key)], TreeMismatchError,
            f"the gradients have {'a dict' if isinstance(key, str) else 'a list'} here but "
            f"the {what} has a {type(tree).__name__}{hint}",
        )
    if what == "state":
        return PathError.at([str(key)], MissingStateError, _NO_STATE)
    return PathError.at(
        [str(key)], TreeMismatchError,
        f"the gradient has no matching entry in the {what} "
        f"({type(tree).__name__} without key {key!r})",
    )


def unflatten(structure: Structure, leaves: Iterator[Any]) -> Any:
    """The tree of ``structure`` holding ``leaves`` (in :func:`gather` order)."""
    if structure is None:
        return next(leaves)
    kind, template, kids = structure
    if kind == "d":
        if kids is None:
            return dict(zip(template, leaves))
        return {k: unflatten(kid, leaves) for k, kid in zip(template, kids)}
    return _rebuild(template, [unflatten(kid, leaves) for kid in kids])


def paths(structure: Structure, prefix: str = "") -> list[str]:
    """The dotted paths of the leaves of ``structure``, in order."""
    if structure is None:
        return [prefix]
    kind, template, kids = structure
    names = [str(k) for k in template] if kind == "d" else [str(i) for i in range(len(kids))]
    out: list[str] = []
    for name, kid in zip(names, kids or [None] * len(names)):
        out += paths(kid, f"{prefix}.{name}" if prefix else name)
    return out


def first_path(tree: Any) -> list[str]:
    """The key path to the first leaf of ``tree`` (empty if it has none)."""
    path: list[str] = []
    node = tree
    while True:
        if isinstance(node, Mapping) and node:
            key = next(iter(node))
            path.append(str(key))
            node = node[key]
        elif isinstance(node, (list, tuple)) and node:
            path.append("0")
            node = node[0]
        else:
            return path


def leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree`` in traversal order."""
    out: list[Any] = []
    _collect(tree, out)
    return out


def _collect(tree: Any, out: list[Any]) -> None:
    if isinstance(tree, Mapping):
        for v in tree.values():
            _collect(v, out)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _collect(v, out)
    else:
        out.append(tree)


def snapshot_dicts(tree: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Shallow copies of every dict in a state tree, to undo a structural merge."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append((node, dict(node)))
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return out


def restore_dicts(snapshot: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Put back what :func:`snapshot_dicts` recorded (the same dict objects, old contents)."""
    for target, saved in snapshot:
        target.clear()
        target.update(saved)


def skeleton(tree: Any) -> Any:
    """The tree with every leaf replaced by a fresh empty dict (containers preserved)."""
    if isinstance(tree, Mapping):
        return {k: skeleton(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return _rebuild(tree, [skeleton(v) for v in tree])
    return {}


def copy_containers(tree: Any) -> Any:
    """A copy of the dicts, lists and tuples of ``tree``; the leaves (arrays) are shared."""
    if isinstance(tree, Mapping):
        return {k: copy_containers(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return _rebuild(tree, [copy_containers(v) for v in tree])
    return tree


def merge_structure(params: Any, state: Any, owner: str) -> Any:
    """Make ``state`` mirror the containers of ``params`` (new leaves get empty dicts)."""
    if isinstance(params, (list, tuple)):
        if not isinstance(state, (list, tuple)):
            raise TreeMismatchError(
                f"{owner}.init: parameters have a {type(params).__name__} "
                f"where the state has a {type(state).__name__}"
            )
        items = list(state)
        merged = [merge_structure(p, s, owner) for p, s in zip(params, items)]
        if len(params) < len(items):
            # MLX raises IndexError here; keep the extra (stale) entries instead.
            merged += items[len(params):]
            return merged if type(params) is list else list(merged)
        merged += [skeleton(p) for p in params[len(items):]]
        return _rebuild(params, merged)
    if isinstance(params, Mapping):
        if not isinstance(state, dict):
            raise TreeMismatchError(
                f"{owner}.init: parameters have a dict where the state has "
                f"a {type(state).__name__} (a state restored with tree_unflatten turns "
                "dicts with all-digit keys into lists)"
            )
        for key, value in params.items():
            state[key] = merge_structure(value, state[key], owner) if key in state else skeleton(value)
        return state
    return state


def split(tree: Any, part_of: Iterator[int], n: int) -> list[Any]:
    """``tree`` split into ``n`` trees of the same containers, leaf ``i`` going to part
    ``next(part_of)`` (leaves in traversal order).

    Dicts keep their keys (digit strings included) and sequences their positions: a leaf that
    belongs elsewhere leaves an empty dict in its place, so every part still lines up with the
    parameters. Sequences become lists and containers left without leaves in a part are
    dropped (a dict entry, trailing sequence positions) or become empty dicts (other
    positions): the layout ``tree_unflatten(tree_flatten(part))`` gives, which is MLX's.
    """
    parts, _ = _split(tree, part_of, n)
    return [p if p is not _EMPTY else {} for p in parts]


_EMPTY: Any = object()


def _split(tree: Any, part_of: Iterator[int], n: int) -> tuple[list[Any], bool]:
    if isinstance(tree, Mapping):
        outs: list[Any] = [{} for _ in range(n)]
        for key, value in tree.items():
            sub, _ = _split(value, part_of, n)
            for i in range(n):
                if sub[i] is not _EMPTY:
                    outs[i][key] = sub[i]
        return [o if o else _EMPTY for o in outs], True
    if isinstance(tree, (list, tuple)):
        cols: list[list[Any]] = [[] for _ in range(n)]
        for value in tree:
            sub, _ = _split(value, part_of, n)
            for i in range(n):
                cols[i].append(sub[i])
        result = []
        for col in cols:
            while col and col[-1] is _EMPTY:
                col.pop()
            if not col:
                result.append(_EMPTY)
                continue
            # lists, as tree_unflatten (and so MLX) builds them: the state layout matches
            result.append([{} if c is _EMPTY else c for c in col])
        return result, True
    target = next(part_of)
    return [tree if i == target else _EMPTY for i in range(n)], False


def flatten(tree: Any) -> tuple[Structure, list[Any]]:
    """The structure and the leaves of ``tree`` (for :func:`unflatten`)."""
    out: list[Any] = []
    return gather(tree, tree, tree, out, [], []), out
