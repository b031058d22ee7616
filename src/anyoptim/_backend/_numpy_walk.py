"""The leaves of an in-place update on flat dicts, found by compiled code.

On a flat tree of many small arrays (``{"t0": array, ...}``, the shape of a torch
``state_dict`` or of ``named_parameters``) the batched kernel of :mod:`._numpy_batch` runs at
the memory-bandwidth limit, and what is left of an update is Python: building the lists of
gradients, parameters, state dicts and state arrays costs a few dict lookups and list appends
per leaf, about 0.3 us per tensor once the kernel has pushed those objects out of the cache.
Here one compiled call walks the gradient dict, finds each key in the parameter and state
dicts, checks every array's header and collects the data addresses, creating no Python object
per leaf.

What is read, on 64-bit CPython: the dict object (``ma_used``, ``ma_keys``, ``ma_values``,
in ``Include/cpython/dictobject.h``), its keys table (size, index width, kind, entries: the
layout of ``pycore_dict.h``, the same in 3.11 to 3.13), the str object's length, hash and
ASCII data, and the arrays' headers as in :mod:`._numpy_batch`. Only combined dicts with str
keys are read; a key is found by CPython's own probe sequence and compared by identity, or by
its ASCII bytes for an equal str that is another object. Anything else (split dicts, other
key types, a non-ASCII key whose hash matches) makes the walk give up, and the update takes
the Python walk, which handles every tree. :func:`walk_ok` checks all of this against what
Python reports before the walk is used; where anything differs the walk is never used.

The walk holds the GIL (nothing can change the dicts while it reads them) and takes a
reference to every array it returns, which :meth:`Held.release` gives back after the kernel
ran; so the arrays stay alive even if another thread changes the dicts in between.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import types
from typing import Any

import numpy as np

from . import _numpy_batch
from ._numpy_batch import _DATA, _DIMS, _NDIM, _READABLE, _TYPE, _WRITEABLE, CHUNK

# dict object, keys table, str object: byte offsets of the fields read
_MA_USED, _MA_KEYS, _MA_VALUES = 16, 32, 40
_DK_LOG2_SIZE, _DK_LOG2_INDEX_BYTES, _DK_KIND, _DK_NENTRIES, _DK_INDICES = 8, 9, 10, 24, 32
_DK_UNICODE = 1  # the kind of a keys table whose keys are all str (entries: key, value)
_STR_LENGTH, _STR_HASH, _STR_STATE = 16, 24, 32
_STR_COMPACT, _STR_ASCII = 1 << 5, 1 << 6

# Below this many leaves the Python walk costs little; the compiled one is for wide trees.
MIN_LEAVES = 64

_PROTO = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)


@functools.lru_cache(maxsize=1)
def _compiled() -> types.SimpleNamespace:
    """The compiled readers: ``lookup`` (a str key in a dict), ``walk`` (the leaves of an
    update), ``release`` (give back the references ``walk`` took) and ``entries`` (a dict's
    live keys and values in order, for :func:`walk_ok`)."""
    import numba

    shared = _numpy_batch.primitives()
    voidptr, array_ok = shared.voidptr, shared.array_ok
    i64, u64, i32, i16, i8, u8 = (shared.i64, shared.u64, shared.i32, shared.i16, shared.i8,
                                  shared.u8)
    inline = numba.njit(inline="always")
    incref = _PROTO(("Py_IncRef", ctypes.pythonapi))
    decref = _PROTO(("Py_DecRef", ctypes.pythonapi))

    @inline
    def index(table, log2, slot):  # pragma: no cover - compiled
        # entry number at ``slot`` of the index (-1: empty, -2: deleted)
        at = table + _DK_INDICES
        if log2 < 8:
            return np.int64(i8(at + slot))
        if log2 < 16:
            return np.int64(i16(at + 2 * slot))
        if log2 >= 32:
            return i64(at + 8 * slot)
        return np.int64(i32(at + 4 * slot))

    @inline
    def same_str(a, b, data):  # pragma: no cover - compiled
        # 1: equal, 0: different, -1: cannot tell here (not both compact ASCII)
        if i64(a + _STR_LENGTH) != i64(b + _STR_LENGTH) or u64(a + _STR_HASH) != u64(b + _STR_HASH):
            return 0
        need = _STR_COMPACT | _STR_ASCII
        if (i32(a + _STR_STATE) & need) != need or (i32(b + _STR_STATE) & need) != need:
            return -1
        for c in range(i64(a + _STR_LENGTH)):
            if u8(a + data + c) != u8(b + data + c):
                return 0
        return 1

    @inline
    def table_of(d, dict_type):  # pragma: no cover - compiled
        # the keys table of a combined dict with str keys, else 0
        if i64(d + _TYPE) != dict_type or i64(d + _MA_VALUES) != 0:
            return np.int64(0)
        table = i64(d + _MA_KEYS)
        return table if u8(table + _DK_KIND) == _DK_UNICODE else np.int64(0)

    @inline
    def first_entry(table):  # pragma: no cover - compiled
        return table + _DK_INDICES + (np.int64(1) << np.int64(u8(table + _DK_LOG2_INDEX_BYTES)))

    @inline
    def entry_of(table, key, data):  # pragma: no cover - compiled
        # the entry number of str ``key`` (its hash known) in a keys table: >= 0, -1 if
        # absent, -2 if this reader cannot tell
        log2 = np.int64(u8(table + _DK_LOG2_SIZE))
        mask = (np.uint64(1) << np.uint64(log2)) - np.uint64(1)
        entries = first_entry(table)
        perturb = u64(key + _STR_HASH)
        slot = perturb & mask
        # the perturbation is gone after 13 steps; then the probe visits every slot
        for _ in range((np.int64(1) << log2) + 16):
            ix = index(table, log2, np.int64(slot))
            if ix == -1:
                return np.int64(-1)
            if ix >= 0:
                k = i64(entries + 16 * ix)
                if k == 0:  # (a live index entry never points to a deleted one)
                    return np.int64(-2)
                if k == key:
                    return ix
                same = same_str(k, key, data)
                if same == 1:
                    return ix
                if same < 0:
                    return np.int64(-2)
            perturb >>= np.uint64(5)
            slot = (slot * np.uint64(5) + perturb + np.uint64(1)) & mask
        return np.int64(-2)

    @inline
    def find(d, key, dict_type, data):  # pragma: no cover - compiled
        # the value of str ``key`` in dict ``d``: its address, 0 if absent, -1 if this
        # reader cannot tell
        table = table_of(d, dict_type)
        if table == 0:
            return np.int64(-1)
        ix = entry_of(table, key, data)
        if ix < 0:
            return np.int64(0) if ix == -1 else np.int64(-1)
        return i64(first_entry(table) + 16 * ix + 8)

    @inline
    def column(d, names, out, dict_type, data):  # pragma: no cover - compiled
        # the values of the str keys ``names`` in dict ``d`` (as ``find``); True if all are
        # there. Keys usually come in the dict's own order: the entry after the last one
        # found is tried first, which needs neither the key's hash nor the index.
        table = table_of(d, dict_type)
        if table == 0:
            return False
        entries = first_entry(table)
        count = i64(table + _DK_NENTRIES)
        cursor = np.int64(0)
        for j in range(names.shape[0]):
            key = names[j]
            if cursor < count and i64(entries + 16 * cursor) == key:
                ix = cursor
            else:
                ix = entry_of(table, key, data)
                if ix < 0:
                    return False
            out[j] = i64(entries + 16 * ix + 8)
            cursor = ix + 1
        return True

    @numba.njit
    def walk(g, p, s, keys, array_type, dict_type, descr, data, ptrs, sizes, cum, held
             ):  # pragma: no cover - compiled
        # the leaves of gradient dict g (every value an array) with parameter dict p and
        # state dict s (per-key dicts holding the state entries of ``keys``, str objects):
        # fills ptrs (gradients, parameters, state entries), sizes and cum as in
        # _numpy_batch.inspect and returns the total number of elements, or -1 (nothing
        # held) if a leaf does not qualify or a dict cannot be read here.
        #
        # After the kernel has streamed the arrays through the cache, most objects read here
        # come from memory. Each pass below reads one level of indirection for every leaf,
        # so that the reads of different leaves are independent and overlap in the CPU (one
        # leaf at a time would wait for each read in turn: about 3x slower).
        table = table_of(g, dict_type)
        n = sizes.shape[0]
        k = keys.shape[0]
        if table == 0 or i64(g + _MA_USED) != n:
            return np.int64(-1)
        names = np.empty(n, np.int64)
        entries = first_entry(table)
        j = 0
        for e in range(i64(table + _DK_NENTRIES)):
            grad = i64(entries + 16 * e + 8)
            if grad != 0:  # (0: a deleted entry)
                if j >= n:
                    return np.int64(-1)
                names[j] = i64(entries + 16 * e)
                held[0, j] = grad
                j += 1
        if j != n:
            return np.int64(-1)
        leaves = np.empty(n, np.int64)
        if not (column(p, names, held[1], dict_type, data)
                and column(s, names, leaves, dict_type, data)):
            return np.int64(-1)
        for r in range(k):
            for j in range(n):
                o = find(leaves[j], keys[r], dict_type, data)
                if o <= 0:
                    return np.int64(-1)
                held[r + 2, j] = o
        for r in range(k + 2):
            need = _READABLE if r == 0 else _READABLE | _WRITEABLE
            for j in range(n):
                o = held[r, j]
                if not array_ok(o, array_type, descr, need):
                    return np.int64(-1)
                ptrs[r, j] = i64(o + _DATA)
        for j in range(n):
            param = held[1, j]
            ndim = i32(param + _NDIM)
            dims = i64(param + _DIMS)
            size = np.int64(1)
            for a in range(ndim):
                size *= i64(dims + 8 * a)
            sizes[j] = size
        for r in range(k + 2):
            if r == 1:
                continue
            for j in range(n):
                param, o = held[1, j], held[r, j]
                ndim = i32(param + _NDIM)
                if i32(o + _NDIM) != ndim:
                    return np.int64(-1)
                dims, odims = i64(param + _DIMS), i64(o + _DIMS)
                for a in range(ndim):
                    if i64(odims + 8 * a) != i64(dims + 8 * a):
                        return np.int64(-1)
        total = np.int64(0)
        cum[0] = 0
        for j in range(n):
            cum[j + 1] = cum[j] + (sizes[j] + CHUNK - 1) // CHUNK
            total += sizes[j]
        for r in range(k + 2):
            for q in range(n):
                incref(voidptr(held[r, q]))
        return total

    @numba.njit
    def lookup(d, key, dict_type, data):  # pragma: no cover - compiled
        return find(d, key, dict_type, data)

    @numba.njit
    def release(held):  # pragma: no cover - compiled
        for r in range(held.shape[0]):
            for q in range(held.shape[1]):
                decref(voidptr(held[r, q]))

    @numba.njit
    def entries(d, dict_type, out):  # pragma: no cover - compiled
        # the live (key, value) addresses of d in order; their number, or -1
        table = table_of(d, dict_type)
        if table == 0:
            return np.int64(-1)
        first = first_entry(table)
        j = 0
        for e in range(i64(table + _DK_NENTRIES)):
            if i64(first + 16 * e + 8) != 0:
                if j >= out.shape[0]:
                    return np.int64(-1)
                out[j, 0] = i64(first + 16 * e)
                out[j, 1] = i64(first + 16 * e + 8)
                j += 1
        return np.int64(j)

    return types.SimpleNamespace(lookup=lookup, walk=walk, release=release, entries=entries)


# where a compact ASCII str keeps its characters: after its header (size - length - 1)
_DATA_OFFSET = sys.getsizeof("ab") - 3


@functools.lru_cache(maxsize=1)
def walk_ok() -> bool:
    """True if the dict and str fields read here are where CPython keeps them in this
    process (checked on dicts of several sizes, with deleted entries, and on str keys equal
    to, but not the same object as, those in the dict)."""
    if (sys.implementation.name != "cpython" or sys.version_info < (3, 11)
            or sys.version_info >= (3, 14) or not _numpy_batch.layout_ok()):
        return False
    try:
        c = _compiled()
        data = _DATA_OFFSET
        for size in (1, 5, 200, 40000):
            d = {f"k{i}": np.zeros(1) for i in range(size)}
            if size > 1:
                del d["k0"]
            out = np.zeros((len(d) + 1, 2), np.int64)
            if c.entries(id(d), id(dict), out) != len(d):
                return False
            if [tuple(r) for r in out[: len(d)].tolist()] != [(id(k), id(v)) for k, v in
                                                               d.items()]:
                return False
            probes = [*list(d)[:50], "".join(["k", str(size - 1)]), "absent", "k0", "é"]
            for key in probes:
                hash(key)
                want = id(d[key]) if key in d else 0
                if c.lookup(id(d), id(key), id(dict), data) != want:
                    return False
        # a non-ASCII key whose hash matches cannot be compared here
        d = {"éé": 1}
        other = "".join(["é", "é"])
        hash(other)
        if other is next(iter(d)) or c.lookup(id(d), id(other), id(dict), data) != -1:
            return False
        general = {1: 2, "x": 3}
        return c.lookup(id(general), id("x"), id(dict), data) == -1
    except Exception:
        return False


class Held:
    """References to the arrays of one walk, given back once (at the latest when this object
    is collected)."""

    __slots__ = ("objects",)

    def __init__(self, objects: np.ndarray | None) -> None:
        self.objects = objects

    def release(self) -> None:
        objects, self.objects = self.objects, None
        if objects is not None:
            _compiled().release(objects)

    def __del__(self) -> None:
        # (at interpreter exit the compiled helpers may be gone; a leak is then harmless)
        with contextlib.suppress(Exception):
            self.release()


@functools.lru_cache(maxsize=16)
def _keys(keys: tuple[str, ...]) -> np.ndarray:
    for key in keys:
        hash(key)  # computed once and kept in the str object, where ``lookup`` reads it
    return np.array([id(key) for key in keys], np.int64)


def plan(keys: tuple[str, ...], gradients: dict, parameters: dict, state: dict,
         dtype: np.dtype, cache: dict[Any, Any] | None) -> _numpy_batch.Plan | None:
    """The checked leaves of an in-place update of flat dicts for the batched kernel, or None
    (nothing taken, nothing changed): then the Python walk decides what to do."""
    if not walk_ok():
        return None
    n, k = len(gradients), len(keys)
    out = _numpy_batch.Plan(dtype, keys, [], [], True, (), n, dtype)
    held = np.empty((k + 2, n), np.int64)
    names = _keys(keys)  # kept alive by the cache; the str objects by ``keys``
    total = _compiled().walk(id(gradients), id(parameters), id(state), names, id(np.ndarray),
                             id(dict), id(dtype), _DATA_OFFSET, out.ptrs, out.sizes,
                             out.cum, held)
    if total < 0:
        return None
    out.total = int(total)
    out.held = Held(held)
    if _numpy_batch.tied(out, cache):
        out.held.release()
        return None
    return out
