"""Tree helpers with the semantics of ``mlx.utils`` (MLX 0.32.4), in pure Python.

A *tree* is any nesting of :class:`dict`, :class:`list` and :class:`tuple`
(subclasses and namedtuples included). Everything else -- ``None``, numbers,
strings, arrays of any library -- is a *leaf*. These helpers never look inside
leaves, so they work for NumPy, PyTorch, JAX, CuPy and MLX arrays alike.

Container handling shared by the helpers:

* dicts are rebuilt as plain :class:`dict` (subclasses are not preserved);
* namedtuples are rebuilt with positional arguments, ``type(t)(*children)``;
* other list/tuple subclasses are rebuilt with ``type(seq)(iterable)``.

The only intentional difference from MLX is that :func:`tree_merge` gives merged
dicts a deterministic key order (the keys of the first tree, then the new keys
of the second) where MLX uses an arbitrary set order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import zip_longest
from typing import Any, overload

__all__ = [
    "tree_flatten",
    "tree_map",
    "tree_map_with_path",
    "tree_merge",
    "tree_reduce",
    "tree_unflatten",
]

_SEQUENCES = (list, tuple)
_CONTAINERS = (list, tuple, dict)

_DESTINATION_ERROR = "Destination should be either a list or a dictionary or None"
_NO_MERGE_FN_ERROR = (
    "Trees contain elements at the same locations but no merge function was provided"
)


def _children(node: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """Returns an iterator of ``(key, child)`` pairs of a container node."""
    if isinstance(node, dict):
        return iter(node.items())
    return enumerate(node)


def _rebuild(seq: Any, children: list[Any]) -> Any:
    """A sequence of ``seq``'s type holding ``children`` (namedtuples rebuilt positionally)."""
    kind = type(seq)
    if kind is list:
        return children
    if kind is tuple:
        return tuple(children)
    if hasattr(seq, "_fields"):
        return kind(*children)
    return kind(children)


@overload
def tree_flatten(
    tree: Any,
    prefix: str = ...,
    is_leaf: Callable[[Any], bool] | None = ...,
    destination: list[tuple[str, Any]] | None = ...,
) -> list[tuple[str, Any]]: ...


@overload
def tree_flatten(
    tree: Any,
    prefix: str = ...,
    is_leaf: Callable[[Any], bool] | None = ...,
    *,
    destination: dict[str, Any],
) -> dict[str, Any]: ...


@overload
def tree_flatten(
    tree: Any,
    prefix: str,
    is_leaf: Callable[[Any], bool] | None,
    destination: dict[str, Any],
) -> dict[str, Any]: ...


def tree_flatten(
    tree: Any,
    prefix: str = "",
    is_leaf: Callable[[Any], bool] | None = None,
    destination: list[tuple[str, Any]] | dict[str, Any] | None = None,
) -> list[tuple[str, Any]] | dict[str, Any]:
    """Flattens a tree into ``(dotted_key, leaf)`` pairs.

    Leaves are visited depth first, in dict insertion order and sequence order.
    A child's key is its parent's key, a ``"."`` and the child's dict key or
    index (formatted as by an f-string, so ``{1: x}`` gives ``"1"``). Empty containers produce
    no entry at all, while ``None`` is an ordinary leaf.

    Args:
        tree: The tree to flatten.
        prefix: Prepended to every key. Its first character is always dropped,
            as it is meant to be ``"."`` (or nothing): ``".x"`` gives keys
            ``"x.<...>"`` and ``"xy"`` gives ``"y.<...>"``. A tree that is a
            single leaf gets the key ``prefix[1:]``.
        is_leaf: Optional predicate called on every node before it is
            inspected; a node it accepts is emitted whole.
        destination: Where to put the pairs. ``None`` makes a new list, a list
            is appended to and a dict is updated (later duplicates win). The
            same object is returned.

    Returns:
        ``destination`` (a new list if it was ``None``) holding the pairs.

    Raises:
        ValueError: If ``destination`` is not a list, a dict or ``None``.

    Example:
        >>> tree_flatten({"a": [1, (2, 3)], "b": {"c": 4, "d": {}}, "e": None})
        [('a.0', 1), ('a.1.0', 2), ('a.1.1', 3), ('b.c', 4), ('e', None)]
        >>> tree_flatten([[0]], prefix=".w")
        [('w.0.0', 0)]
        >>> tree_flatten({"a": {"b": 1}}, destination={})
        {'a.b': 1}
    """
    if destination is None:
        destination = []
    if isinstance(destination, list):
        # Append straight into a plain list; a list subclass gets one extend().
        out = destination if type(destination) is list else []
    elif isinstance(destination, dict):
        out = []
    else:
        raise ValueError(_DESTINATION_ERROR)
    append = out.append

    if (is_leaf is not None and is_leaf(tree)) or not isinstance(tree, _CONTAINERS):
        append((prefix[1:], tree))
    else:
        # Iterative depth-first walk. Each stack entry holds the key prefix of a
        # container's children (with the first character already dropped and
        # the separating "." already added) and an iterator over its children.
        stack = [((prefix + ".")[1:], _children(tree))]
        while stack:
            base, items = stack[-1]
            for key, child in items:
                if (is_leaf is not None and is_leaf(child)) or not isinstance(child, _CONTAINERS):
                    append((f"{base}{key}", child))
                else:
                    stack.append((f"{base}{key}.", _children(child)))
                    break
            else:
                stack.pop()

    if out is not destination:
        if isinstance(destination, dict):
            destination.update(out)
        else:
            destination.extend(out)
    return destination


def _unflatten(items: Any) -> Any:
    """Rebuilds one level of a flat tree (see :func:`tree_unflatten`)."""
    if len(items) == 1:
        key, value = next(iter(items))
        if key == "":
            return value

    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in items:
        head, _, tail = key.partition(".")
        group = groups.get(head)
        if group is None:
            groups[head] = [(tail, value)]
        else:
            group.append((tail, value))

    # A group of two or more entries whose remaining keys are all empty can
    # never be split further (it comes from a repeated key). MLX recurses on it
    # until Python's recursion limit; fail the same way, but straight away.
    empty = groups.get("")
    if empty is not None and len(empty) > 1 and all(not tail for tail, _ in empty):
        raise RecursionError("tree_unflatten: the flat tree contains a repeated key")

    # A list iff every group name parses with int() and the integers are distinct.
    # (An empty input therefore gives an empty list.)
    indices: dict[int, str] = {}
    try:
        for name in groups:
            indices[int(name)] = name
        is_list = len(indices) == len(groups)
    except ValueError:
        is_list = False
    if is_list:
        result: list[Any] = []
        for index, name in sorted(indices.items()):
            gap = index - len(result)
            if gap > 0:
                result.extend([{} for _ in range(gap)])
            result.append(_unflatten(groups[name]))
        return result
    return {name: _unflatten(group) for name, group in groups.items()}


def tree_unflatten(tree: list[tuple[str, Any]] | dict[str, Any]) -> Any:
    """Rebuilds a tree from its flat ``(dotted_key, leaf)`` representation.

    Entries are grouped by the first segment of their key (up to the first
    ``"."``), groups keeping first-seen order, and each group is rebuilt from
    the rest of its keys. A level becomes a list if every group name parses
    with ``int()`` and the integers are distinct, otherwise a dict keyed by the
    segment strings. Lists are ordered by index, with gaps filled by empty
    dicts. Tuples are never produced, and an empty input gives ``[]``.

    Args:
        tree: A list of ``(key, value)`` pairs or a dict of them, for instance
            as returned by :func:`tree_flatten`.

    Returns:
        The rebuilt tree. A single entry with key ``""`` gives its value back.

    Raises:
        RecursionError: If the same key occurs twice (MLX recurses forever).

    Example:
        >>> tree_unflatten([("hello.world", 42), ("list.1", 1)])
        {'hello': {'world': 42}, 'list': [{}, 1]}
        >>> tree_unflatten({"0.w": 1, "1.w": 2})
        [{'w': 1}, {'w': 2}]
    """
    return _unflatten(tree.items() if isinstance(tree, dict) else tree)


def tree_map(
    fn: Callable[..., Any],
    tree: Any,
    *rest: Any,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Applies ``fn`` to every leaf of ``tree`` and returns the new tree.

    The trees in ``rest`` are walked alongside ``tree`` and their nodes at the
    same place are passed as extra arguments, ``fn(leaf, *rest_nodes)``. They
    are only indexed where ``tree`` has children (``r[i]`` or ``r[key]``), so
    they may be supersets of ``tree``; where ``tree`` has a leaf, ``fn`` gets
    whatever ``rest`` holds there, even a whole subtree.

    Args:
        fn: Called on each leaf (and the matching nodes of ``rest``).
        tree: The tree whose structure is followed.
        *rest: Extra trees walked alongside ``tree``.
        is_leaf: Optional predicate; a node it accepts is passed to ``fn``
            whole.

    Returns:
        A tree of ``fn``'s results. Dicts (subclasses included) come back as
        plain dicts; lists and tuples keep their type.

    Example:
        >>> tree_map(lambda x: x * 10, {"a": [1, 2], "b": (3,)})
        {'a': [10, 20], 'b': (30,)}
        >>> tree_map(lambda g, s: (g, s), {"w": 1}, {"w": {"m": 0}, "v": 5})
        {'w': (1, {'m': 0})}
    """
    if rest:

        def walk_many(node: Any, others: tuple[Any, ...]) -> Any:
            if (is_leaf is not None and is_leaf(node)) or not isinstance(node, _CONTAINERS):
                return fn(node, *others)
            if isinstance(node, dict):
                return {k: walk_many(v, tuple([r[k] for r in others])) for k, v in node.items()}
            children = [walk_many(v, tuple([r[i] for r in others])) for i, v in enumerate(node)]
            return _rebuild(node, children)

        return walk_many(tree, rest)

    def walk(node: Any) -> Any:
        if (is_leaf is not None and is_leaf(node)) or not isinstance(node, _CONTAINERS):
            return fn(node)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        kind = type(node)
        if kind is list:
            return [walk(v) for v in node]
        if kind is tuple:
            return tuple([walk(v) for v in node])
        if hasattr(node, "_fields"):
            return kind(*[walk(v) for v in node])
        return kind([walk(v) for v in node])

    return walk(tree)


def tree_map_with_path(
    fn: Callable[..., Any],
    tree: Any,
    *rest: Any,
    is_leaf: Callable[[Any], bool] | None = None,
    path: Any = None,
) -> Any:
    """Like :func:`tree_map`, but ``fn`` also gets the leaf's dotted path.

    ``fn`` is called as ``fn(path, leaf, *rest_nodes)``. A child's path is
    ``f"{path}.{key}"`` when its parent's path is truthy and ``f"{key}"``
    otherwise, so the paths match the keys of :func:`tree_flatten`. A tree
    that is a single leaf is passed ``path`` unchanged.

    Args:
        fn: Called on each leaf with its path first.
        tree: The tree whose structure is followed.
        *rest: Extra trees walked alongside ``tree`` (see :func:`tree_map`).
        is_leaf: Optional predicate; a node it accepts is passed to ``fn``
            whole.
        path: The path of ``tree`` itself, prepended to every path.

    Returns:
        A tree of ``fn``'s results, rebuilt as in :func:`tree_map`.

    Example:
        >>> tree_map_with_path(lambda p, x: p, {"model": [{"w": 0, "b": 1}]})
        {'model': [{'w': 'model.0.w', 'b': 'model.0.b'}]}
        >>> print(tree_map_with_path(lambda p, x: p, 7))
        None
    """

    def walk(node: Any, others: tuple[Any, ...], here: Any) -> Any:
        if (is_leaf is not None and is_leaf(node)) or not isinstance(node, _CONTAINERS):
            return fn(here, node, *others)
        base = f"{here}." if here else ""
        if isinstance(node, dict):
            return {
                k: walk(v, tuple([r[k] for r in others]), f"{base}{k}") for k, v in node.items()
            }
        children = [
            walk(v, tuple([r[i] for r in others]), f"{base}{i}") for i, v in enumerate(node)
        ]
        return _rebuild(node, children)

    return walk(tree, rest, path)


def tree_reduce(
    fn: Callable[[Any, Any], Any],
    tree: Any,
    initializer: Any = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Folds the leaves of a tree into one value.

    The leaves are visited in :func:`tree_flatten` order with an accumulator
    that starts as ``initializer``. At each leaf the accumulator becomes the
    leaf itself if it is ``None``, and ``fn(accumulator, leaf)`` otherwise. So
    without an initializer the first leaf seeds the reduction, and a leading
    ``None`` leaf is skipped over.

    Args:
        fn: The reducer, ``fn(accumulator, leaf) -> accumulator``.
        tree: The tree to reduce.
        initializer: The starting accumulator (``None`` for none).
        is_leaf: Optional predicate; a node it accepts counts as one leaf.

    Returns:
        The final accumulator: ``initializer`` for a tree without leaves.

    Example:
        >>> tree_reduce(lambda acc, x: acc + x, {"a": [1, 2, 3], "b": (4, 5)})
        15
        >>> tree_reduce(lambda acc, x: acc * x, [[2], [3]], initializer=10)
        60
    """
    acc = initializer
    if (is_leaf is not None and is_leaf(tree)) or not isinstance(tree, _CONTAINERS):
        return tree if acc is None else fn(acc, tree)

    # Iterative depth-first walk over iterators of the containers' children.
    stack = [iter(tree.values()) if isinstance(tree, dict) else iter(tree)]
    while stack:
        for child in stack[-1]:
            if (is_leaf is not None and is_leaf(child)) or not isinstance(child, _CONTAINERS):
                acc = child if acc is None else fn(acc, child)
            else:
                stack.append(iter(child.values()) if isinstance(child, dict) else iter(child))
                break
        else:
            stack.pop()
    return acc


def tree_merge(
    tree_a: Any,
    tree_b: Any,
    merge_fn: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Merges two trees into one holding the values of both (a deep ``dict.update``).

    Empty dicts, lists and tuples count as absent, and so does ``None`` next
    to a present value. Where only one tree has a value it is used as is (not
    copied). Two sequences are merged position by position (the shorter one
    padded with ``None``) into ``tree_a``'s type; two dicts are merged key by
    key, ordered as ``tree_a``'s keys followed by the keys only ``tree_b``
    has. Any other pair (two leaves, ``None`` with ``None``, a dict with a
    list, a leaf with a container) is combined by ``merge_fn``. Note that this
    includes an empty container facing a missing key: ``tree_merge({"k": {}},
    {"j": 1})`` calls ``merge_fn(None, None)`` for ``"k"``, as MLX does.

    Args:
        tree_a: The first tree.
        tree_b: The second tree.
        merge_fn: Combines two values found at the same place,
            ``merge_fn(a, b)``.

    Returns:
        The merged tree. If both trees are empty, a new empty container of
        their type.

    Raises:
        ValueError: If both trees are empty containers of different types, or
            if two values meet at the same place and ``merge_fn`` is ``None``.

    Example:
        >>> tree_merge({"a": [1, None]}, {"a": [None, 2, 3], "c": 4})
        {'a': [1, 2, 3], 'c': 4}
        >>> tree_merge({"x": 1}, {"x": 2}, merge_fn=lambda a, b: a + b)
        {'x': 3}
    """
    empty_a = isinstance(tree_a, _CONTAINERS) and len(tree_a) == 0
    empty_b = isinstance(tree_b, _CONTAINERS) and len(tree_b) == 0
    if empty_a and empty_b:
        if type(tree_a) is not type(tree_b):
            raise ValueError(f"Cannot merge {type(tree_a).__name__} with {type(tree_b).__name__}")
        return type(tree_a)()
    if empty_a:
        tree_a = None
    if empty_b:
        tree_b = None
    if tree_a is None:
        if tree_b is not None:
            return tree_b
    elif tree_b is None:
        return tree_a

    if isinstance(tree_a, _SEQUENCES) and isinstance(tree_b, _SEQUENCES):
        kind = type(tree_a)
        merged = [tree_merge(a, b, merge_fn) for a, b in zip_longest(tree_a, tree_b)]
        if kind is list:
            return merged
        if kind is tuple:
            return tuple(merged)
        if hasattr(tree_a, "_fields"):
            return kind(*merged)
        return kind(merged)
    if isinstance(tree_a, dict) and isinstance(tree_b, dict):
        keys = list(tree_a.keys())
        keys.extend(k for k in tree_b if k not in tree_a)
        return {k: tree_merge(tree_a.get(k, None), tree_b.get(k, None), merge_fn) for k in keys}

    if merge_fn is None:
        raise ValueError(_NO_MERGE_FN_ERROR)
    return merge_fn(tree_a, tree_b)
