"""Fused updates with numba: an elementwise rule compiled into one pass over memory.

The reference path evaluates a rule with whole-array operations, each reading and writing
whole arrays (Adam makes about a dozen passes). Here the same element function is compiled by
numba and run element by element: every value is computed by the same expressions, in the same
order and in the array's own dtype, so the results equal the reference path's bit for bit
(the tests check this). No kernel is written by hand: drivers are generated for any number of
state arrays, in place or into new arrays, serial or parallel.

Used for float32/float64 NumPy arrays, and for CPU torch tensors through NumPy views of their
memory, when parameter, gradient and state share one dtype and are C-contiguous; anything
else takes another executor. Without numba installed this module is never used.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np

# Arrays at least this large are processed by a multi-threaded kernel.
PARALLEL_MIN_SIZE = 1 << 17

_FLOAT_SET = frozenset((np.dtype(np.float32), np.dtype(np.float64)))


def available() -> bool:
    return _numba_spec() is not None


@functools.lru_cache(maxsize=1)
def _numba_spec() -> Any:
    return importlib.util.find_spec("numba")


# ----------------------------------------------------------------------------- scalar ops
@functools.lru_cache(maxsize=1)
def scalar_ops() -> types.ModuleType:
    """The ``ops`` an element function sees inside numba: NumPy's semantics on scalars."""
    import numba

    inline = numba.njit(inline="always")

    @inline
    def maximum(a, b):  # pragma: no cover - compiled
        return a if (a >= b or a != a) else b  # NaN wins, as in np.maximum

    @inline
    def minimum(a, b):  # pragma: no cover - compiled
        return a if (a <= b or a != a) else b

    @inline
    def where(c, a, b):  # pragma: no cover - compiled
        return a if c else b

    ops = types.ModuleType("anyoptim_scalar_ops")
    ops.sqrt = np.sqrt  # type: ignore[attr-defined]
    ops.abs = np.abs  # type: ignore[attr-defined]
    ops.sign = np.sign  # type: ignore[attr-defined]
    ops.maximum = maximum  # type: ignore[attr-defined]
    ops.minimum = minimum  # type: ignore[attr-defined]
    ops.where = where  # type: ignore[attr-defined]
    # the C library's atan2: it may differ from NumPy's own in the last bit (the only op here
    # that is not bit-identical to the reference path)
    ops.atan2 = np.arctan2  # type: ignore[attr-defined]
    return ops


# ----------------------------------------------------------------------------- kernels
def _driver(elem: Any, n_states: int, n_scalars: int, inplace: bool, parallel: bool) -> Any:
    """A loop running ``elem`` over whole 1-D arrays (generated for ``n_states`` arrays).

    The scalars arrive as one 1-D array of the parameters' dtype and are unpacked into the
    element function's tuple inside the compiled code: NumPy scalar objects passed from Python
    are kept alive by numba's dispatcher (about 100 bytes per call, a leak over a long run).
    """
    import numba

    states = [f"s{i}" for i in range(n_states)]
    inputs = ["p[i]", "g[i]"] + [f"{s}[i]" for s in states]
    if inplace:
        params = ["p", "g", *states]
        targets = ["p[i]"] + [f"{s}[i]" for s in states]
    else:
        outs = ["op"] + [f"o{s}" for s in states]
        params = ["p", "g", *states, *outs]
        targets = [f"{o}[i]" for o in outs]
    source = (
        f"def run({', '.join(params)}, c):\n"
        f"    sc = ({''.join(f'c[{i}], ' for i in range(n_scalars))})\n"
        f"    for i in prange(p.shape[0]):\n"
        f"        {', '.join(targets)}, = elem({', '.join(inputs)}, sc)\n"
    )
    namespace: dict[str, Any] = {"elem": elem, "prange": numba.prange}
    exec(compile(source, f"<anyoptim driver {n_states} {inplace}>", "exec"), namespace)
    # error_model="numpy": IEEE division (inf/nan, as NumPy) and no zero-division branch in
    # the loop, which lets LLVM vectorise it
    jit = numba.njit(parallel=parallel, nogil=True, cache=False, error_model="numpy")
    return jit(namespace["run"])


@functools.cache
def kernel_for(element: Callable, flags: tuple, n_states: int, n_scalars: int, inplace: bool,
               parallel: bool) -> Any:
    """The compiled driver for a rule's element function under ``flags``."""
    import numba

    elem = numba.njit(inline="always")(element(scalar_ops(), flags))
    return _driver(elem, n_states, n_scalars, inplace, parallel)


# ----------------------------------------------------------------------------- buffer reuse
def _count(holder: dict[str, Any], key: str) -> int:
    return sys.getrefcount(holder[key])


def _calibrate() -> int:
    """What :func:`_count` reports for an array that only one dict refers to (CPython
    versions count the temporaries of a call differently, so measure instead of assuming)."""
    holder = {"m": np.empty(1)}
    count = _count(holder, "m")
    return count if 1 <= count <= 8 else -100  # odd interpreter: never reuse


_ALONE = _calibrate()


def _private(state: dict[str, Any], key: str, held: int) -> bool:
    """True if nobody but ``state`` (and the ``held`` references this module keeps) refers to
    ``state[key]``, and it owns its writeable memory.

    ``apply_gradients`` may then write the new state values into that array instead of a fresh
    one: nobody can observe the difference, and the step saves an allocation (and the page
    faults of fresh memory) per state array.
    """
    a = state[key]
    return (
        type(a) is np.ndarray
        and _count(state, key) <= _ALONE + held + 1  # + 1: the local ``a``
        and a.base is None
        and a.flags.writeable
        and a.flags.owndata
    )


# ----------------------------------------------------------------------------- leaves
def _numpy_view(x: Any, writeable: bool) -> np.ndarray | None:
    """``x`` itself (a NumPy array) or a NumPy view of a CPU torch tensor, when it qualifies."""
    if type(x) is np.ndarray:
        if x.dtype not in _FLOAT_SET or not x.flags.c_contiguous:
            return None
        if writeable and not x.flags.writeable:
            return None
        return x
    return _torch_view(x)


def _torch_view(x: Any) -> np.ndarray | None:
    torch = sys.modules.get("torch")
    if torch is None or type(x) not in (torch.Tensor, torch.nn.Parameter):
        return None
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    if not x.is_contiguous() or x.is_conj() or x.is_neg():
        return None
    return x.detach().numpy()


def _empty_like(x: Any) -> Any:
    if type(x) is np.ndarray:
        return np.empty_like(x)
    import torch

    return torch.empty_like(x, memory_format=torch.contiguous_format)


# ----------------------------------------------------------------------------- many arrays
@functools.lru_cache(maxsize=1)
def _voidptr() -> Any:
    """A numba intrinsic turning an integer address into a void pointer (for ``carray``)."""
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def voidptr(typingctx: Any, address: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return types.voidptr(types.intp), codegen

    return voidptr


def _batched_driver(elem: Any, n_states: int, n_scalars: int, dtype: np.dtype,
                    parallel: bool, inplace: bool) -> Any:
    """A loop running ``elem`` over many arrays given by their data addresses.

    ``ptrs`` has a row of addresses for the gradients, the parameters and each state entry;
    functional drivers write into the arrays of ``outs`` (new parameters, new state arrays;
    an address equal to the input's updates that array in place). Array ``j`` holds
    ``sizes[j]`` elements, cut into chunks of ``CHUNK`` elements numbered ``cum[j]`` to
    ``cum[j + 1] - 1``: the parallel loop runs over the chunks, so one large array is shared
    among threads as well as many small ones.

    A functional driver first copies each input chunk to its output and then updates the
    output in place: the update loop then has the in-place loop's few distinct addresses,
    which the compiler vectorises (with separate inputs and outputs its overlap checks fail
    whenever an output is its input, and it falls back to a scalar loop), and the copied
    chunk is still in the cache when it is updated.
    """
    import numba

    from ._numpy_batch import CHUNK

    rows = ["p"] + [f"s{i}" for i in range(n_states)]
    if inplace:
        copies = ""
        table, params = "ptrs", "ptrs, sizes, cum, c"
        first_row = 1
    else:
        copies = (
            f"        for r in range({len(rows)}):\n"
            "            src = ptrs[r + 1, j] + start\n"
            "            dst = outs[r, j] + start\n"
            "            if src != dst:\n"
            "                a = carray(voidptr(src), m, DT)\n"
            "                b = carray(voidptr(dst), m, DT)\n"
            "                for i in range(m):\n"
            "                    b[i] = a[i]\n"
        )
        table, params = "outs", "ptrs, sizes, cum, c, outs"
        first_row = 0
    views = "        g = carray(voidptr(ptrs[0, j] + start), m, DT)\n" + "".join(
        f"        {name} = carray(voidptr({table}[{r + first_row}, j] + start), m, DT)\n"
        for r, name in enumerate(rows)
    )
    inputs = ", ".join(["p[i]", "g[i]"] + [f"s{i}[i]" for i in range(n_states)])
    source = (
        f"def run({params}):\n"
        f"    sc = ({''.join(f'c[{i}], ' for i in range(n_scalars))})\n"
        "    n = sizes.shape[0]\n"
        # one chunk per array (all arrays non-empty and small): chunk q is array q
        "    direct = cum[n] == n and (n == 0 or sizes.min() > 0)\n"
        "    for q in prange(cum[n]):\n"
        "        j = np.int64(q)\n"
        "        if not direct:\n"  # the array holding chunk q: cum[j] <= q < cum[j + 1]
        "            lo, hi = np.int64(0), np.int64(n)\n"
        "            while hi - lo > 1:\n"
        "                mid = (lo + hi) // 2\n"
        "                if cum[mid] <= q:\n"
        "                    lo = mid\n"
        "                else:\n"
        "                    hi = mid\n"
        "            j = lo\n"
        "        first = (q - cum[j]) * CHUNK\n"
        "        m = min(CHUNK, sizes[j] - first)\n"
        "        start = first * ITEM\n"
        f"{copies}"
        f"{views}"
        "        for i in range(m):\n"
        f"            {', '.join(f'{t}[i]' for t in rows)}, = elem({inputs}, sc)\n"
    )
    namespace: dict[str, Any] = {
        "elem": elem, "prange": numba.prange, "carray": numba.carray, "voidptr": _voidptr(),
        "DT": dtype.type, "ITEM": dtype.itemsize, "CHUNK": CHUNK, "np": np,
    }
    exec(compile(source, f"<anyoptim batched driver {n_states} {inplace}>", "exec"), namespace)
    jit = numba.njit(parallel=parallel, nogil=True, cache=False, error_model="numpy")
    return jit(namespace["run"])


@functools.cache
def batched_kernel_for(element: Callable, flags: tuple, n_states: int, n_scalars: int,
                       dtype: np.dtype, parallel: bool, inplace: bool) -> Any:
    """The compiled driver running a rule's element function over many arrays at once."""
    import numba

    elem = numba.njit(inline="always")(element(scalar_ops(), flags))
    return _batched_driver(elem, n_states, n_scalars, dtype, parallel, inplace)


def step(
    rule: Any,
    flags: tuple,
    grads: list[Any],
    params: list[Any],
    states: list[dict[str, Any]],
    scalars: Callable[[Any], tuple[Any, ...]],
    inplace: bool,
    cache: dict[Any, Any] | None = None,
) -> Any:
    """Run ``rule`` over the leaves (gradient, parameter, state dict), or return
    NotImplemented (nothing changed) when some leaf does not qualify.

    In place: parameters and state arrays are overwritten; returns ``(parameters, None)``.
    Functional: returns ``(new parameters, new state arrays per leaf)`` and touches no input.
    ``scalars(dtype)`` gives the rule's scalar inputs for parameters of the library's dtype.
    """
    from . import _numpy_batch

    checked = _numpy_batch.plan(rule.state, grads, params, states, inplace, cache)
    if checked is not None:
        return checked.run(rule.element, flags, scalars(checked.library_dtype))
    keys = rule.state
    plan = []
    for g, p, s in zip(grads, params, states):
        pv = _numpy_view(p, inplace)
        gv = _numpy_view(g, False)
        if pv is None or gv is None:
            return NotImplemented
        dtype = pv.dtype
        if (gv.dtype is not dtype and gv.dtype != dtype) or gv.shape != pv.shape:
            return NotImplemented
        views = []
        for key in keys:
            a = s.get(key)
            av = None if a is None else _numpy_view(a, inplace)
            if av is None or av.shape != pv.shape or (av.dtype is not dtype and av.dtype != dtype):
                return NotImplemented
            views.append(av)
        plan.append((p, s, pv, gv, views))
    if inplace and len(plan) > 1 and _numpy_batch.overlapping(
            [e[2].ctypes.data for e in plan], [e[2].nbytes for e in plan]):
        return NotImplemented  # tied parameters: the reference path writes them as it does
    kernels: dict[tuple[Any, bool], tuple[Any, Any]] = {}
    new_params = []
    new_states = []
    for p, s, pv, gv, views in plan:
        if inplace:
            outs = views
            new_params.append(p)
        else:
            # reuse a state array nobody else holds (``views`` holds one reference)
            fresh = [s[k] if _private(s, k, 1) else _empty_like(s[k]) for k in keys]
            out_p = _empty_like(p)
            new_params.append(out_p)
            new_states.append(fresh)
            outs = [_numpy_view(a, True) for a in (out_p, *fresh)]  # type: ignore[misc]
        size = pv.size
        if size == 0:
            continue
        key = (p.dtype, size >= PARALLEL_MIN_SIZE)
        entry = kernels.get(key)
        if entry is None:
            sc = np.array([_scalar(x, pv.dtype) for x in scalars(p.dtype)], dtype=pv.dtype)
            entry = kernels[key] = (
                kernel_for(rule.element, flags, len(keys), len(sc), inplace, key[1]), sc)
        fn, sc = entry
        if pv.ndim != 1:  # the common 1-D case needs no flattened views
            pv, gv = pv.reshape(-1), gv.reshape(-1)
            views = [a.reshape(-1) for a in views]
            outs = [a.reshape(-1) for a in outs]
        if inplace:
            fn(pv, gv, *views, sc)
        else:
            fn(pv, gv, *views, *outs, sc)
    return new_params, (None if inplace else new_states)


def _scalar(x: Any, dtype: np.dtype) -> Any:
    """A rule's scalar input as a NumPy scalar of ``dtype`` (rounded as NumPy rounds a Python
    number or a 0-d array of that dtype in the reference path)."""
    item = getattr(x, "item", None)
    if item is not None and type(x) is not np.ndarray and not isinstance(x, np.generic):
        x = item()  # a 0-d torch tensor of the parameters' dtype: exact
    return np.asarray(x).astype(dtype)[()] if not isinstance(x, bool) else x
