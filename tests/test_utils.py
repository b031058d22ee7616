"""Tests for ``anyoptim.utils``: the pure-Python port of ``mlx.utils``' tree helpers.

Three groups of tests:

* expected values written out from the spec (run without MLX);
* differential tests against the real ``mlx.utils`` on hand-picked edge cases
  (skipped when MLX is not installed);
* hypothesis property tests (round trips, structure preservation) plus random
  differential checks against ``mlx.utils``.
"""

from __future__ import annotations

import ast
import doctest
import inspect
from collections import namedtuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyoptim import utils
from anyoptim.utils import (
    tree_flatten,
    tree_map,
    tree_map_with_path,
    tree_merge,
    tree_reduce,
    tree_unflatten,
)

Point = namedtuple("Point", ["x", "y"])
Empty = namedtuple("Empty", [])


class MyList(list):
    pass


class MyTuple(tuple):
    __slots__ = ()


class MyDict(dict):
    pass


NO_MERGE = "Trees contain elements at the same locations but no merge function was provided"
BAD_DESTINATION = "Destination should be either a list or a dictionary or None"


# --------------------------------------------------------------------------------------------
# Helpers


def shape(tree: Any, ordered: bool = True) -> Any:
    """A comparable view of a tree that records container types (and dict key order)."""
    if isinstance(tree, dict):
        items = [(k, shape(v, ordered)) for k, v in tree.items()]
        if not ordered:
            items.sort(key=lambda kv: repr(kv[0]))
        return (type(tree), tuple(items))
    if isinstance(tree, (list, tuple)):
        return (type(tree), tuple(shape(v, ordered) for v in tree))
    return (type(tree), tree)


def outcome(fn: Any, *args: Any, ordered: bool = True, **kwargs: Any) -> Any:
    """Runs ``fn`` and returns a comparable record of its result or exception."""
    try:
        result = fn(*args, **kwargs)
    except (RecursionError, AttributeError) as exc:
        # RecursionError: MLX hits the interpreter's limit, we raise early with our own
        # message. AttributeError: a non-string key to tree_unflatten; the message names
        # the str method that was tried.
        return ("raised", type(exc))
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("returned", shape(result, ordered))


@pytest.fixture(scope="module")
def ref() -> Any:
    """The real ``mlx.utils`` module (the tests using it skip when MLX is absent)."""
    pytest.importorskip("mlx.core")
    import mlx.utils

    return mlx.utils


# --------------------------------------------------------------------------------------------
# Module hygiene


def test_all_exports() -> None:
    assert sorted(utils.__all__) == sorted(
        [
            "tree_flatten",
            "tree_unflatten",
            "tree_map",
            "tree_map_with_path",
            "tree_reduce",
            "tree_merge",
        ]
    )
    for name in utils.__all__:
        assert callable(getattr(utils, name))


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(inspect.getsource(utils))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            modules.add(node.module.split(".")[0])
    assert modules <= {"__future__", "collections", "itertools", "typing"}


def test_public_signatures_are_annotated() -> None:
    for name in utils.__all__:
        sig = inspect.signature(getattr(utils, name))
        assert sig.return_annotation is not inspect.Signature.empty, name
        for param in sig.parameters.values():
            assert param.annotation is not inspect.Parameter.empty, (name, param.name)


def test_docstring_examples() -> None:
    failed, attempted = doctest.testmod(utils, verbose=False, report=False)
    assert attempted >= 6
    assert failed == 0


# --------------------------------------------------------------------------------------------
# Expected values from the spec (no MLX needed)


def test_flatten_spec_example() -> None:
    tree = {"a": [1, (2, 3)], "b": {"c": 4, "d": {}}, "e": [], "f": None}
    assert tree_flatten(tree) == [
        ("a.0", 1),
        ("a.1.0", 2),
        ("a.1.1", 3),
        ("b.c", 4),
        ("f", None),
    ]


def test_flatten_leaf_and_prefix() -> None:
    assert tree_flatten(5) == [("", 5)]
    assert tree_flatten(None) == [("", None)]
    assert tree_flatten(5, prefix=".x") == [("x", 5)]
    assert tree_flatten([[[0]]]) == [("0.0.0", 0)]
    assert tree_flatten([[[0]]], prefix=".hello") == [("hello.0.0.0", 0)]
    assert tree_flatten({"a": 1}, prefix="xy") == [("y.a", 1)]
    assert tree_flatten({"a": 1}, prefix=".") == [(".a", 1)]
    assert tree_flatten({"a": {}}) == []
    assert tree_flatten({}) == []
    assert tree_flatten({1: "x", (2, 3): "y"}) == [("1", "x"), ("(2, 3)", "y")]
    assert tree_flatten(Point(1, [2])) == [("0", 1), ("1.0", 2)]


def test_flatten_is_leaf() -> None:
    tree = {"a": (1, 2), "b": [(3,), 4]}
    assert tree_flatten(tree, is_leaf=lambda n: isinstance(n, tuple)) == [
        ("a", (1, 2)),
        ("b.0", (3,)),
        ("b.1", 4),
    ]
    # The root is checked too.
    assert tree_flatten(tree, prefix=".r", is_leaf=lambda n: n is tree) == [("r", tree)]


def test_flatten_destination() -> None:
    dest: list[tuple[str, Any]] = [("old", 0)]
    out = tree_flatten({"a": 1}, destination=dest)
    assert out is dest
    assert dest == [("old", 0), ("a", 1)]

    ddest: dict[str, Any] = {"a": 0, "z": 9}
    dout = tree_flatten({"a": 1, "b": [2]}, "", None, ddest)
    assert dout is ddest
    assert ddest == {"a": 1, "z": 9, "b.0": 2}

    # A later duplicate overwrites in a dict destination.
    assert tree_flatten({"a.b": 1, "a": {"b": 2}}, destination={}) == {"a.b": 2}

    sub = MyList()
    assert tree_flatten([1, 2], destination=sub) is sub
    assert sub == [("0", 1), ("1", 2)]

    for bad in ((), "x", 0, {1}):
        with pytest.raises(ValueError, match=BAD_DESTINATION):
            tree_flatten({"a": 1}, destination=bad)  # type: ignore[call-overload]


def test_unflatten_spec_examples() -> None:
    assert tree_unflatten([("a.2", 3)]) == {"a": [{}, {}, 3]}
    assert tree_unflatten([]) == []
    assert tree_unflatten({}) == []
    assert tree_unflatten([("", 5)]) == 5
    assert tree_unflatten({"": 5}) == 5
    assert tree_unflatten([("hello.world", 42)]) == {"hello": {"world": 42}}
    assert tree_unflatten({"hello.world": 42}) == {"hello": {"world": 42}}
    assert tree_unflatten([("a.b", 1), ("a", 2)]) == {"a": {"b": 1, "": 2}}
    assert tree_unflatten([("a.01", 1), ("a.1", 2)]) == {"a": {"01": 1, "1": 2}}
    assert tree_unflatten([("1_0", "x")]) == [{}] * 10 + ["x"]
    # Negative indices get no padding; they only sort first.
    assert tree_unflatten([("1", "p"), ("-1", "n")]) == ["n", "p"]
    assert tree_unflatten([("2", "p"), ("-1", "n")]) == ["n", {}, "p"]
    assert tree_unflatten([(" 1", 1)]) == [{}, 1]
    # Tuples come back as lists, and all-digit dict keys come back as lists.
    assert tree_unflatten(tree_flatten((1, (2,)))) == [1, [2]]
    assert tree_unflatten(tree_flatten({"0": "a", "1": "b"})) == ["a", "b"]
    # Fillers are distinct dicts.
    filled = tree_unflatten([("2", 0)])
    assert filled[0] is not filled[1]


def test_unflatten_repeated_key() -> None:
    with pytest.raises(RecursionError):
        tree_unflatten([("a", 1), ("a", 2)])
    with pytest.raises(RecursionError):
        tree_unflatten([("x.0", 1), ("y", 2), ("x.0", 3)])
    with pytest.raises(RecursionError):
        tree_unflatten([("", 1), (".", 2)])


def test_map_basics() -> None:
    assert tree_map(lambda x: x * 10, {"a": [1, 2], "b": (3,)}) == {"a": [10, 20], "b": (30,)}
    mapped = tree_map(lambda x: -x, MyDict(a=Point(1, MyList([2])), b=MyTuple((3,))))
    assert shape(mapped) == shape({"a": Point(-1, MyList([-2])), "b": MyTuple((-3,))})
    assert type(mapped) is dict
    assert tree_map(str, None) == "None"
    assert tree_map(lambda x: x, {"a": [], "b": (), "c": {}, "d": Empty()}) == {
        "a": [],
        "b": (),
        "c": {},
        "d": Empty(),
    }
    assert tree_map(len, {"a": (1, 2)}, is_leaf=lambda n: isinstance(n, tuple)) == {"a": 2}


def test_map_rest() -> None:
    # Rest trees may be supersets; a leaf facing a dict passes the dict.
    grads = {"w": 1, "layers": [2, 3]}
    state = {"w": {"m": 0}, "layers": [{"m": 1}, {"m": 2}, {"m": 3}], "extra": 4}
    assert tree_map(lambda g, s: (g, s), grads, state) == {
        "w": (1, {"m": 0}),
        "layers": [(2, {"m": 1}), (3, {"m": 2})],
    }
    assert tree_map(lambda a, b, c: a + b + c, [1, 2], (10, 20), {0: 100, 1: 200}) == [111, 222]
    with pytest.raises(KeyError):
        tree_map(lambda a, b: a, {"a": 1, "b": 2}, {"a": 1})
    with pytest.raises(IndexError):
        tree_map(lambda a, b: a, [1, 2], [1])


def test_map_with_path_basics() -> None:
    tree = {"model": [{"w": 0, "b": 1}, {"w": 0, "b": 1}]}
    assert tree_flatten(tree_map_with_path(lambda p, x: p, tree)) == [
        ("model.0.w", "model.0.w"),
        ("model.0.b", "model.0.b"),
        ("model.1.w", "model.1.w"),
        ("model.1.b", "model.1.b"),
    ]
    assert tree_map_with_path(lambda p, x: p, 5) is None
    assert tree_map_with_path(lambda p, x: p, 5, path="root") == "root"
    assert tree_map_with_path(lambda p, x: p, [1], path="root") == ["root.0"]
    assert tree_map_with_path(lambda p, x: p, [1], path="") == ["0"]
    assert tree_map_with_path(lambda p, x: p, Point(1, 2)) == Point("0", "1")
    assert tree_map_with_path(lambda p, x, s: (p, x, s), {"a": 1}, {"a": {"m": 2}}) == {
        "a": ("a", 1, {"m": 2})
    }


def test_reduce_basics() -> None:
    add = lambda acc, x: acc + x  # noqa: E731
    assert tree_reduce(add, {"a": [1, 2, 3], "b": (4, 5)}) == 15
    assert tree_reduce(add, {"a": [1, 2, 3], "b": (4, 5)}, 100) == 115
    assert tree_reduce(add, [None, 1, 2]) == 3
    assert tree_reduce(add, {}) is None
    assert tree_reduce(add, {"a": []}, 7) == 7
    assert tree_reduce(add, 5) == 5
    assert tree_reduce(add, 5, 1) == 6
    assert tree_reduce(add, {"a": (1, 2)}, is_leaf=lambda n: isinstance(n, tuple)) == (1, 2)
    assert tree_reduce(add, {"a": (1, 2)}, (0,), is_leaf=lambda n: isinstance(n, tuple)) == (
        0,
        1,
        2,
    )
    # The accumulator order follows tree_flatten.
    assert tree_reduce(lambda acc, x: [*acc, x], {"b": [1, [2]], "a": 3}, []) == [1, 2, 3]
    assert tree_reduce(lambda acc, x: (acc, x), [1, [2, 3]]) == ((1, 2), 3)


def test_merge_spec_examples() -> None:
    with pytest.raises(ValueError, match=NO_MERGE):
        tree_merge(None, None)
    assert tree_merge([1, None], [None, 2, 3]) == [1, 2, 3]
    assert tree_merge((1,), [None, 2]) == (1, 2)
    assert tree_merge(Point(1, None), Point(None, 2)) == Point(1, 2)
    with pytest.raises(ValueError, match=r"^Cannot merge dict with list$"):
        tree_merge({}, [])
    for empty in ({}, [], (), Empty()):
        out = tree_merge(empty, type(empty)())
        assert out == empty
        assert type(out) is type(empty)
        assert out is not empty or isinstance(empty, tuple)
    # The present side is returned as is.
    b = {"x": [1]}
    assert tree_merge({}, b) is b
    assert tree_merge(None, b) is b
    assert tree_merge(b, []) is b
    assert tree_merge(b, None) is b
    # Empty containers are absent, also when facing a missing key.
    with pytest.raises(ValueError, match=NO_MERGE):
        tree_merge({"k": {}}, {"j": 1})
    assert tree_merge({"k": {}}, {"j": 1}, lambda x, y: "both") == {"k": "both", "j": 1}
    assert tree_merge({"k": 1}, {"k": 2}, lambda x, y: x + y) == {"k": 3}
    with pytest.raises(ValueError, match=NO_MERGE):
        tree_merge({"k": 1}, {"k": 2})


def test_merge_dict_key_order_is_deterministic() -> None:
    a = {"z": 1, "a": {"q": 1}}
    b = {"m": 2, "a": {"p": 2}, "z": None}
    merged = tree_merge(a, b)
    assert list(merged) == ["z", "a", "m"]
    assert list(merged["a"]) == ["q", "p"]
    assert merged == {"z": 1, "a": {"q": 1, "p": 2}, "m": 2}


# --------------------------------------------------------------------------------------------
# Differential tests against mlx.utils


TREES: list[Any] = [
    None,
    5,
    "leaf",
    {},
    [],
    (),
    Empty(),
    {"a": [1, (2, 3)], "b": {"c": 4, "d": {}}, "e": [], "f": None},
    [[[0]]],
    {"a": {"b": {}}},
    {"a": [None, [None, ()]]},
    {1: "x", 2: ["y"], (3, 4): "z", None: 0, False: 1.5},
    {"": 1},
    {"": {"": 2}, "x": 3},
    {"a.b": 1, "a": {"b": 2}},
    {"0": "a", "1": "b"},
    {"01": "a", "1": "b"},
    {"-1": "a", "1_0": "b", " 2": "c"},
    {"2": "a"},
    Point(1, (2, 3)),
    [Point(x=[], y={}), Point({"k": None}, Point(4, 5))],
    MyList([1, MyTuple((2, MyList()))]),
    MyDict(a=1, b=MyDict(c=[2], d=MyDict())),
    ({"x": None}, [{"y": ({},)}]),
]

PREFIXES = ["", ".", ".x", "xy", "a.b"]

IS_LEAF: list[Any] = [
    None,
    lambda n: isinstance(n, tuple),
    lambda n: isinstance(n, dict) and len(n) == 0,
    lambda n: n is None,
]


def _ids(values: list[Any]) -> list[str]:
    return [repr(v)[:40] for v in values]


@pytest.mark.parametrize("tree", TREES, ids=_ids(TREES))
def test_flatten_matches_mlx(ref: Any, tree: Any) -> None:
    for prefix in PREFIXES:
        for is_leaf in IS_LEAF:
            ours = outcome(tree_flatten, tree, prefix, is_leaf)
            theirs = outcome(ref.tree_flatten, tree, prefix, is_leaf)
            assert ours == theirs, (prefix, is_leaf)
            for make_dest in (list, dict, lambda: [("pre", 0)], lambda: {"pre": 0}, MyList):
                dest_ours, dest_theirs = make_dest(), make_dest()
                out_ours = tree_flatten(tree, prefix, is_leaf, dest_ours)
                out_theirs = ref.tree_flatten(tree, prefix, is_leaf, dest_theirs)
                assert out_ours is dest_ours
                assert out_theirs is dest_theirs
                assert shape(dest_ours) == shape(dest_theirs)


@pytest.mark.parametrize("bad", [(), "x", 0, {1}, MyTuple()])
def test_flatten_bad_destination_matches_mlx(ref: Any, bad: Any) -> None:
    ours = outcome(tree_flatten, {"a": 1}, destination=bad)
    theirs = outcome(ref.tree_flatten, {"a": 1}, destination=bad)
    assert ours == theirs == ("raised", ValueError, BAD_DESTINATION)


@pytest.mark.parametrize("tree", TREES, ids=_ids(TREES))
def test_flatten_unflatten_round_trip_matches_mlx(ref: Any, tree: Any) -> None:
    for prefix in ["", ".p"]:
        flat = tree_flatten(tree, prefix)
        assert outcome(tree_unflatten, flat) == outcome(ref.tree_unflatten, flat)
        flat_dict = tree_flatten(tree, prefix, destination={})
        assert outcome(tree_unflatten, flat_dict) == outcome(ref.tree_unflatten, flat_dict)


FLAT_INPUTS: list[Any] = [
    [],
    {},
    [("", 5)],
    {"": 5},
    [("", None)],
    [("a.2", 3)],
    [("a.01", 1), ("a.1", 2)],
    [("a.1", 1), ("a.01", 2)],
    [("-1", "n"), ("1", "p")],
    [("-2", "n"), ("-1", "m")],
    [("1_0", 1)],
    [(" 1", 1), ("0", 0)],
    [("+1", 1), ("1", 2)],
    [("1e3", 1)],
    [("\u0663", 1)],
    [("a.b", 1), ("a", 2)],
    [("a", 2), ("a.b", 1)],
    [("0", 1), ("2", 2)],
    [("2", 2), ("0", 1)],
    [("", 1), ("x", 2)],
    [("", 1), ("0", 2)],
    {"0": 1, "1": 2},
    {"a": 1, "b.c": 2},
    [("a..b", 1)],
    [("a.", 1)],
    [(".", 1)],
    [(".x", 1), ("y", 2)],
    [("x.0.y", 1), ("x.0.z", 2), ("x.3", 3), ("w", [4])],
    (("t.0", 1), ("t.1", 2)),
    [("a", 1), ("a", 2)],
    [("x.0", 1), ("y", 2), ("x.0", 3)],
    [("", 1), ("", 2)],
    [("", 1), (".", 2)],
    [(1, 2), (3, 4)],
    [("a", 1, 2)],
]


@pytest.mark.parametrize("flat", FLAT_INPUTS, ids=_ids(FLAT_INPUTS))
def test_unflatten_matches_mlx(ref: Any, flat: Any) -> None:
    assert outcome(tree_unflatten, flat) == outcome(ref.tree_unflatten, flat)


@pytest.mark.parametrize("tree", TREES, ids=_ids(TREES))
def test_map_identity_matches_mlx(ref: Any, tree: Any) -> None:
    for is_leaf in IS_LEAF:
        fn = lambda x: ("seen", x)  # noqa: E731
        assert outcome(tree_map, fn, tree, is_leaf=is_leaf) == outcome(
            ref.tree_map, fn, tree, is_leaf=is_leaf
        )
        pfn = lambda p, x: (p, x)  # noqa: E731
        for path in [None, "", "root", 0, 1]:
            assert outcome(tree_map_with_path, pfn, tree, is_leaf=is_leaf, path=path) == outcome(
                ref.tree_map_with_path, pfn, tree, is_leaf=is_leaf, path=path
            )


MAP_REST_CASES: list[tuple[Any, tuple[Any, ...]]] = [
    ({"w": 1, "b": [2, 3]}, ({"w": {"m": 0}, "b": [4, 5, 6], "extra": 9},)),
    ({"w": 1, "b": [2, 3]}, ({"w": 0, "b": (7, 8)}, {"w": [1], "b": {0: "a", 1: "b"}})),
    ({"w": 1, "b": 2}, ({"w": 1},)),
    ([1, 2], ([1],)),
    ([1, 2], (5,)),
    (Point(1, [2]), (Point(3, [4]),)),
    (Point(1, [2]), ([3, [4, 5]],)),
    (MyList([1, MyTuple((2,))]), ([10, [20]],)),
    (MyDict(a=1), ({"a": MyDict(b=2)},)),
    ({"a": {}, "b": []}, ({},)),
    (None, ({"a": 1}, [2])),
    ({"a": None}, ({"a": {"b": 1}},)),
]


@pytest.mark.parametrize("case", MAP_REST_CASES, ids=_ids(MAP_REST_CASES))
def test_map_rest_matches_mlx(ref: Any, case: tuple[Any, tuple[Any, ...]]) -> None:
    tree, rest = case
    fn = lambda *xs: xs  # noqa: E731
    pfn = lambda p, *xs: (p, xs)  # noqa: E731
    for is_leaf in IS_LEAF:
        assert outcome(tree_map, fn, tree, *rest, is_leaf=is_leaf) == outcome(
            ref.tree_map, fn, tree, *rest, is_leaf=is_leaf
        )
        assert outcome(tree_map_with_path, pfn, tree, *rest, is_leaf=is_leaf) == outcome(
            ref.tree_map_with_path, pfn, tree, *rest, is_leaf=is_leaf
        )


@pytest.mark.parametrize("tree", [*TREES, [None, 1, 2], [None, None], {"a": [None], "b": 0}])
def test_reduce_matches_mlx(ref: Any, tree: Any) -> None:
    pair = lambda acc, x: (acc, x)  # noqa: E731
    for initializer in [None, 0, "init", ()]:
        for is_leaf in IS_LEAF:
            assert outcome(tree_reduce, pair, tree, initializer, is_leaf) == outcome(
                ref.tree_reduce, pair, tree, initializer, is_leaf
            )


MERGE_CASES: list[tuple[Any, Any]] = [
    (None, None),
    ({}, {}),
    ([], []),
    ((), ()),
    (Empty(), Empty()),
    ((), Empty()),
    ({}, []),
    ([], ()),
    (MyList(), []),
    ({}, None),
    (None, {}),
    ([], None),
    (None, 1),
    (1, None),
    ({}, 1),
    (1, ()),
    (1, 2),
    ([1, None], [None, 2, 3]),
    ([None, 2, 3], [1, None]),
    ((1,), [None, 2]),
    ([1], (None, 2)),
    (Point(1, None), Point(None, 2)),
    (Point(1, 2), [None, None, 3]),
    (Point(1, None), (None, 2)),
    (MyList([1]), [None, 2]),
    (MyTuple((1, None)), [None, 2]),
    ({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}, "e": 4}),
    ({"a": 1}, {"a": 2}),
    ({"a": {}}, {"b": 1}),
    ({"a": {}}, {}),
    ({"a": []}, {"a": {}}),
    ({"a": []}, {"a": []}),
    ({"a": [1]}, {"a": {"x": 1}}),
    ({"a": [1]}, {"a": 5}),
    ({"a": None}, {"a": 5}),
    ({"a": None}, {"a": None}),
    (MyDict(a=1), {"b": 2}),
    ({"a": [{"x": 1}, {}]}, {"a": [{"y": 2}, {"z": 3}, {}]}),
    ({1: "a", False: "b"}, {1.0: None, 0: "c", 2: "d"}),
    ([{}], [[]]),
]


@pytest.mark.parametrize("case", MERGE_CASES, ids=_ids(MERGE_CASES))
def test_merge_matches_mlx(ref: Any, case: tuple[Any, Any]) -> None:
    a, b = case
    for merge_fn in [None, lambda x, y: ("merged", x, y)]:
        assert outcome(tree_merge, a, b, merge_fn, ordered=False) == outcome(
            ref.tree_merge, a, b, merge_fn, ordered=False
        )


# --------------------------------------------------------------------------------------------
# Property tests

# Keys that never parse as integers and contain no ".", so trees round-trip exactly.
NAME_KEYS = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,5}", fullmatch=True)

ROUND_TRIP_TREES = st.recursive(
    st.integers(),
    lambda children: (
        st.lists(children, min_size=1, max_size=4)
        | st.dictionaries(NAME_KEYS, children, min_size=1, max_size=4)
    ),
    max_leaves=25,
)

LEAVES = st.none() | st.integers(-5, 5) | st.text(max_size=2)
ODD_KEYS = (
    st.sampled_from(["a", "b", "0", "1", "2", "01", "-1", "1_0", " 1", "", "x.y", "."])
    | st.integers(0, 3)
    | NAME_KEYS
)


def _containers(children: Any) -> Any:
    return (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.builds(Point, children, children)
        | st.lists(children, max_size=3).map(MyList)
        | st.dictionaries(NAME_KEYS, children, max_size=3)
    )


RICH_TREES = st.recursive(LEAVES, _containers, max_leaves=20)

ODD_TREES = st.recursive(
    LEAVES,
    lambda children: (
        _containers(children)
        | st.dictionaries(ODD_KEYS, children, max_size=3)
        | st.dictionaries(ODD_KEYS, children, max_size=3).map(MyDict)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(ROUND_TRIP_TREES)
def test_round_trip(tree: Any) -> None:
    assert tree_unflatten(tree_flatten(tree)) == tree
    assert tree_unflatten(tree_flatten(tree, destination={})) == tree


@settings(max_examples=200, deadline=None)
@given(RICH_TREES)
def test_map_identity_preserves_structure(tree: Any) -> None:
    assert shape(tree_map(lambda x: x, tree)) == shape(tree)
    assert shape(tree_map(lambda x, y: x, tree, tree)) == shape(tree)
    assert tree_flatten(tree_map_with_path(lambda p, x: p, tree)) == [
        (k, k if k else None) for k, _ in tree_flatten(tree)
    ]


@settings(max_examples=200, deadline=None)
@given(RICH_TREES)
def test_flatten_commutes_with_map(tree: Any) -> None:
    f = lambda x: f"f{x!r}"  # noqa: E731
    assert tree_flatten(tree_map(f, tree)) == [(k, f(v)) for k, v in tree_flatten(tree)]
    leaves = [v for _, v in tree_flatten(tree)]
    assert tree_reduce(lambda acc, x: [*acc, x], tree, []) == leaves


@settings(max_examples=150, deadline=None)
@given(ODD_TREES, st.sampled_from(["", ".", ".x", "xy"]))
def test_random_trees_match_mlx(ref: Any, tree: Any, prefix: str) -> None:
    ours = outcome(tree_flatten, tree, prefix)
    assert ours == outcome(ref.tree_flatten, tree, prefix)
    flat = tree_flatten(tree, prefix)
    assert outcome(tree_unflatten, flat) == outcome(ref.tree_unflatten, flat)
    fn = lambda x: ("m", x)  # noqa: E731
    assert outcome(tree_map, fn, tree) == outcome(ref.tree_map, fn, tree)
    pfn = lambda p, x, y: (p, x, y)  # noqa: E731
    assert outcome(tree_map_with_path, pfn, tree, tree) == outcome(
        ref.tree_map_with_path, pfn, tree, tree
    )
    pair = lambda acc, x: (acc, x)  # noqa: E731
    assert outcome(tree_reduce, pair, tree) == outcome(ref.tree_reduce, pair, tree)


@settings(max_examples=150, deadline=None)
@given(ODD_TREES, ODD_TREES)
def test_random_merges_match_mlx(ref: Any, a: Any, b: Any) -> None:
    merge_fn = lambda x, y: ("merged", x, y)  # noqa: E731
    for fn in (None, merge_fn):
        assert outcome(tree_merge, a, b, fn, ordered=False) == outcome(
            ref.tree_merge, a, b, fn, ordered=False
        )
    assert outcome(tree_merge, a, a, merge_fn, ordered=False) == outcome(
        ref.tree_merge, a, a, merge_fn, ordered=False
    )
