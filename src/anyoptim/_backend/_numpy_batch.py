"""Every leaf of an update in one numba call, checked by reading the arrays' headers.

Calling a compiled kernel once per array costs about a microsecond of dispatch, and checking
an array from Python (type, dtype, shape, flags, data address) costs as much again: on models
made of thousands of small tensors that is most of the step. Here the leaves travel to
compiled code in the Python lists that hold them (the compiled code reads each list's item
pointers), and a compiled inspector reads each array's header: type, dtype, shape, flags,
data address and reference count. One more call then runs the rule over all leaves, split
into chunks so that large tensors are shared among the threads.

The layouts read are CPython's ``PyListObject`` (``ob_size``, ``ob_item``: public through
its C headers, the fields behind ``PyList_GET_ITEM``) and NumPy's ``PyArrayObject_fields``
(stable since NumPy 1.7, public through its C headers), on 64-bit builds. :func:`layout_ok`
checks the offsets against what Python reports for a few arrays before anything relies on
them; where they differ (another interpreter build, a future NumPy) this module is not used
and the per-leaf executors run.
"""

from __future__ import annotations

import functools
import itertools
import operator
import sys
import types
from typing import Any

import numpy as np

from . import _numpy_fused

# byte offsets of the fields read in an array object, and NumPy's flag bits
_REFCNT, _TYPE, _DATA, _NDIM, _DIMS, _BASE, _DESCR, _FLAGS = 0, 8, 16, 24, 32, 48, 56, 64
_LIST_SIZE, _LIST_ITEMS = 16, 24  # in a list object: its length and its item pointers
_C_CONTIGUOUS, _OWNDATA, _ALIGNED, _WRITEABLE = 0x1, 0x4, 0x100, 0x400
_READABLE = _C_CONTIGUOUS | _ALIGNED

# Large arrays are cut into chunks of this many elements, the units shared among threads.
CHUNK = 1 << 16

_TIED = "untied parameters"  # the kernel cache's entry for the last verdict of tied

DTYPES: dict[Any, np.dtype] = {np.dtype(t): np.dtype(t) for t in (np.float32, np.float64)}


@functools.lru_cache(maxsize=1)
def primitives() -> types.SimpleNamespace:
    """Inline numba helpers shared by the compiled code here and in :mod:`._numpy_walk`:
    ``voidptr``, readers of one value at an address (``i64``, ``u64``, ``i32``, ``i16``,
    ``i8``, ``u8``) and ``array_ok`` (an array object of this type and dtype whose flags
    include ``need``)."""
    import numba

    voidptr = _numpy_fused._voidptr()
    inline = numba.njit(inline="always")

    def reader(dtype: Any) -> Any:
        @inline
        def read(address):  # pragma: no cover - compiled
            return numba.carray(voidptr(address), 1, dtype)[0]

        return read

    i64, i32 = reader(np.int64), reader(np.int32)

    @inline
    def array_ok(o, array_type, descr, need):  # pragma: no cover - compiled
        return (i64(o + _TYPE) == array_type and i64(o + _DESCR) == descr
                and (i32(o + _FLAGS) & need) == need)

    return types.SimpleNamespace(
        voidptr=voidptr, i64=i64, i32=i32, u64=reader(np.uint64), i16=reader(np.int16),
        i8=reader(np.int8), u8=reader(np.uint8), array_ok=array_ok)


@functools.lru_cache(maxsize=1)
def _readers() -> types.SimpleNamespace:
    """The compiled helpers: ``inspect`` (check the leaves, collect their data addresses),
    ``addresses`` (the data addresses of fresh arrays) and ``fields`` (the raw header
    fields, for :func:`layout_ok`)."""
    import numba

    shared = primitives()
    voidptr, i64, i32, array_ok = shared.voidptr, shared.i64, shared.i32, shared.array_ok

    @numba.njit(nogil=True)
    def overlap(starts, nbytes):  # pragma: no cover - compiled
        # the index of a non-empty memory range starting inside an earlier one (in order of
        # start), else -1
        end = np.int64(0)
        seen = False
        for j in np.argsort(starts):
            if nbytes[j] <= 0:
                continue
            if seen and starts[j] < end:
                return j
            end = max(end, starts[j] + nbytes[j]) if seen else starts[j] + nbytes[j]
            seen = True
        return -1

    @numba.njit(nogil=True)
    def inspect(lists, n, k, inplace, list_type, array_type, dict_type, descr, alone,
                ptrs, sizes, cum, private):  # pragma: no cover - compiled
        # lists: the addresses of k + 3 lists of n objects (state dicts, gradients,
        # parameters, then one list per state entry); returns (index of the first leaf that
        # does not qualify or -1, total number of elements)
        objs = np.empty((k + 3, n), np.int64)
        for row in range(k + 3):
            o = lists[row]
            if i64(o + _TYPE) != list_type or i64(o + _LIST_SIZE) != n:
                return 0, 0
            objs[row] = numba.carray(voidptr(i64(o + _LIST_ITEMS)), n, np.int64)
        writeable = _READABLE | _WRITEABLE if inplace else _READABLE
        total = 0
        cum[0] = 0
        for j in range(n):
            if i64(objs[0, j] + _TYPE) != dict_type:
                return j, 0
            p = objs[2, j]
            if not array_ok(p, array_type, descr, writeable):
                return j, 0
            ndim = i32(p + _NDIM)
            dims = i64(p + _DIMS)
            size = 1
            for a in range(ndim):
                size *= i64(dims + 8 * a)
            ptrs[1, j] = i64(p + _DATA)
            for row in range(k + 1):
                o = objs[1 if row == 0 else row + 2, j]
                if not array_ok(o, array_type, descr, _READABLE if row == 0 else writeable):
                    return j, 0
                if i32(o + _NDIM) != ndim:
                    return j, 0
                odims = i64(o + _DIMS)
                for a in range(ndim):
                    if i64(odims + 8 * a) != i64(dims + 8 * a):
                        return j, 0
                if row == 0:
                    ptrs[0, j] = i64(o + _DATA)
                else:
                    ptrs[row + 1, j] = i64(o + _DATA)
                    private[row - 1, j] = (
                        i64(o + _REFCNT) == alone and i64(o + _BASE) == 0
                        and (i32(o + _FLAGS) & (_OWNDATA | _WRITEABLE)) == _OWNDATA | _WRITEABLE)
            sizes[j] = size
            cum[j + 1] = cum[j] + (size + CHUNK - 1) // CHUNK
            total += size
        return -1, total

    @numba.njit(nogil=True)
    def addresses(arrays, n, out):  # pragma: no cover - compiled
        # the data addresses of the n arrays of the list at address ``arrays``
        objs = numba.carray(voidptr(i64(arrays + _LIST_ITEMS)), n, np.int64)
        for j in range(n):
            out[j] = i64(objs[j] + _DATA)

    @numba.njit(nogil=True)
    def fields(arrays, n, out):  # pragma: no cover - compiled
        objs = numba.carray(voidptr(i64(arrays + _LIST_ITEMS)), n, np.int64)
        for j in range(n):
            o = objs[j]
            out[j, 0] = i64(o + _REFCNT)
            out[j, 1] = i64(o + _TYPE)
            out[j, 2] = i64(o + _DATA)
            out[j, 3] = i32(o + _NDIM)
            out[j, 4] = i64(i64(o + _DIMS)) if i32(o + _NDIM) > 0 else -1
            out[j, 5] = i64(o + _BASE)
            out[j, 6] = i64(o + _DESCR)
            out[j, 7] = i32(o + _FLAGS)

    return types.SimpleNamespace(inspect=inspect, overlap=overlap, addresses=addresses,
                                 fields=fields)


def _table(lists: tuple[list[Any], ...]) -> np.ndarray:
    """The addresses of the list objects ``lists`` (see ``inspect``); the caller keeps the
    lists alive while compiled code reads them."""
    return np.array(list(map(id, lists)), np.int64)


def _entries(dicts: list[Any], keys: tuple[str, ...]) -> list[list[Any]]:
    """One list of state arrays per entry of ``keys``."""
    return [list(map(operator.itemgetter(key), dicts)) for key in keys]


@functools.lru_cache(maxsize=1)
def _alone() -> int:
    """The reference count ``inspect`` sees for a state array held only by its dict (and the
    list of its entry)."""
    holder = {"m": np.zeros(2)}
    column = _entries([holder], ("m",))[0]
    out = np.zeros((1, 8), np.int64)
    _readers().fields(id(column), 1, out)
    return int(out[0, 0])


@functools.lru_cache(maxsize=1)
def layout_ok() -> bool:
    """True if the header fields read here are where NumPy keeps them in this process."""
    if sys.maxsize != 2**63 - 1 or not hasattr(sys, "getrefcount"):
        return False
    try:
        base = np.arange(12, dtype=np.float32).reshape(3, 4)
        samples: list[np.ndarray] = [base, base[:, ::2], np.zeros((), np.float64),
                                     np.ones(5)[1:]]
        samples[3].flags.writeable = False
        out = np.zeros((len(samples), 8), np.int64)
        read = _readers().fields
        read(id(samples), len(samples), out)
        for a, row in zip(samples, out):
            flags = a.flags
            expected = (
                id(np.ndarray), a.ctypes.data, a.ndim, a.shape[0] if a.ndim else -1,
                0 if a.base is None else id(a.base), id(a.dtype),
            )
            if tuple(int(x) for x in row[1:7]) != expected:
                return False
            bits = int(row[7])
            if (bool(bits & _C_CONTIGUOUS) != flags.c_contiguous or bool(bits & _OWNDATA)
                    != flags.owndata or bool(bits & _WRITEABLE) != flags.writeable
                    or bool(bits & _ALIGNED) != flags.aligned):
                return False
        # the reference count: one more reference reads one more
        again = np.zeros_like(out)
        extra = [samples[2]]
        read(id(samples), len(samples), again)
        if int(again[2, 0]) != int(out[2, 0]) + len(extra):
            return False
        return _alone() >= 1
    except Exception:
        return False


class Plan:
    """The checked leaves of one update: data addresses and sizes, ready for the kernel."""

    __slots__ = ("arrays", "cache", "cum", "dicts", "dtype", "held", "inplace", "keys",
                 "library_dtype", "params", "private", "ptrs", "sizes", "table", "total",
                 "views", "wrap")

    def __init__(self, dtype: np.dtype, keys: tuple[str, ...], params: list[Any],
                 dicts: list[Any], inplace: bool, table: tuple[list[Any], ...], n: int,
                 library_dtype: Any = None) -> None:
        self.dtype, self.keys, self.params, self.dicts = dtype, keys, params, dicts
        # the parameters' dtype in their own library (torch's), for the rule's scalars
        self.library_dtype = params[0].dtype if library_dtype is None else library_dtype
        self.held: Any = None  # references taken by the compiled walk (_numpy_walk.Held)
        self.inplace = inplace
        self.table = table  # keeps the lists (and so the objects) read below alive
        self.arrays = params  # the parameters as NumPy arrays (views of torch tensors)
        self.wrap: Any = None  # NumPy array -> the library's array, for new arrays
        self.cache: Any = None  # torch: the optimizer's kernel cache, where views are kept
        self.views: list[Any] = []  # torch: the state tensors' views, per entry
        k = len(keys)
        self.ptrs = np.empty((k + 2, n), np.int64)
        self.sizes = np.empty(n, np.int64)
        self.cum = np.empty(n + 1, np.int64)
        self.private = np.empty((k, n), np.bool_)
        self.total = 0

    def run(self, element: Any, flags: tuple, scalars: tuple[Any, ...]
            ) -> tuple[list[Any], list[Any] | None]:
        """Run the rule; in place: ``(parameters, None)``, else ``(new parameters, new state
        arrays per leaf)`` (state arrays nobody else holds are reused)."""
        dtype = self.dtype
        if self.wrap is None:  # NumPy arrays and Python numbers round as _scalar does
            sc = np.array(scalars, dtype=dtype)
        else:
            sc = np.array([_numpy_fused._scalar(x, dtype) for x in scalars], dtype=dtype)
        k = len(self.keys)
        parallel = self.total >= _numpy_fused.PARALLEL_MIN_SIZE
        fn = _numpy_fused.batched_kernel_for(element, flags, k, len(sc), dtype, parallel,
                                             self.inplace)
        if self.inplace:
            try:
                fn(self.ptrs, self.sizes, self.cum, sc)
            finally:
                if self.held is not None:
                    self.held.release()
            return self.params, None
        n = len(self.params)
        new_params = [np.empty(p.shape, dtype) for p in self.arrays]
        # outputs: new arrays, except the state arrays nobody else holds (updated in place)
        outs = self.ptrs[1:].copy()
        columns, made = [], []
        for row, key in enumerate(self.keys):
            column = list(map(operator.itemgetter(key), self.dicts))
            index = np.flatnonzero(~self.private[row])
            arrays = [np.empty(self.arrays[j].shape, dtype) for j in index.tolist()]
            columns.append(column)
            made.append((index, arrays))
        fresh = list(itertools.chain(new_params, *(arrays for _, arrays in made)))
        addresses = np.empty(len(fresh), np.int64)
        _readers().addresses(id(fresh), len(fresh), addresses)
        outs[0] = addresses[:n]
        at = n
        for row, (index, arrays) in enumerate(made):
            outs[row + 1, index] = addresses[at: at + len(arrays)]
            at += len(arrays)
        fn(self.ptrs, self.sizes, self.cum, sc, outs)
        wrap = self.wrap
        if wrap is None:
            for column, (index, arrays) in zip(columns, made):
                for j, a in zip(index.tolist(), arrays):
                    column[j] = a
        else:  # torch: wrap the new arrays; keep every output's view for the next call
            from . import _torch_views

            arrays_p = new_params
            new_params = list(map(wrap, arrays_p))
            _torch_views.remember(self.cache, "", new_params, arrays_p, outs[0].tolist())
            for row, (column, (index, arrays)) in enumerate(zip(columns, made)):
                views = list(self.views[row])
                for j, a in zip(index.tolist(), arrays):
                    column[j] = wrap(a)
                    views[j] = a
                _torch_views.remember(self.cache, self.keys[row], column, views,
                                      outs[row + 1].tolist())
        return new_params, list(zip(*columns)) if columns else [[] for _ in new_params]


def plan(keys: tuple[str, ...], grads: list[Any], params: list[Any], dicts: list[Any],
         inplace: bool, cache: dict[Any, Any] | None = None) -> Plan | None:
    """The checked leaves (gradients, parameters, state dicts holding ``keys``), or None when
    some leaf does not qualify: arrays of other types, dtypes or shapes, non-contiguous or
    (in place) read-only arrays, state entries that are not dicts of such arrays. Nothing is
    changed either way.

    CPU torch tensors qualify too, through NumPy views of their memory (in place, those of
    the parameters and state are kept in ``cache``, the optimizer's kernel cache); new
    arrays are then made by NumPy and shared with torch (``torch.from_numpy``)."""
    n = len(grads)
    if not n or not layout_ok():
        return None
    columns: list[list[Any]]
    if type(params[0]) is np.ndarray:
        g_, p_ = grads, params
        try:
            columns = _entries(dicts, keys)
        except (KeyError, TypeError, IndexError):
            return None
    else:
        views = _torch(keys, grads, params, dicts, inplace, cache)
        if views is None:
            return None
        g_, p_, columns, tensors = views
    dtype = DTYPES.get(p_[0].dtype)
    if dtype is None:
        return None
    lists = (dicts, g_, p_, *columns)
    out = Plan(dtype, keys, params, dicts, inplace, lists, n)
    bad, out.total = _readers().inspect(
        _table(lists), n, len(keys), inplace, id(list), id(np.ndarray), id(dict), id(dtype),
        _alone(), out.ptrs, out.sizes, out.cum, out.private)
    if bad >= 0 or (inplace and tied(out, cache)):
        return None
    if p_ is not params:
        out.arrays = p_
        out.wrap = sys.modules["torch"].from_numpy
        out.cache, out.views = cache, columns
        if not inplace and cache is not None:  # (torch views exist only with a cache)
            # the NumPy views never own their memory; the tensors tell who else holds it
            from . import _torch_views

            for row, (key, column) in enumerate(zip(keys, tensors)):
                out.private[row] = _torch_views.private(column, cache, key)
    return out


def overlapping(starts: Any, nbytes: Any) -> bool:
    """True if two of the memory ranges ``[start, start + nbytes)`` overlap (empty ones never
    do): tied parameters, the same array twice in a tree or views of one buffer, which an
    in-place kernel must not update as if they were distinct."""
    return bool(_readers().overlap(np.asarray(starts, np.int64),
                                   np.asarray(nbytes, np.int64)) >= 0)


def tied(plan: Plan, cache: dict[Any, Any] | None) -> bool:
    """True if the memory of two parameters overlaps (tied parameters: the same array twice in
    a tree, or views of one buffer). The parallel in-place kernel would update them at once
    from two threads; the reference path writes them one after the other. The answer for the
    parameters of the last call (the same addresses and sizes) is kept in ``cache``."""
    starts, sizes = plan.ptrs[1], plan.sizes
    if len(sizes) < 2:
        return False
    known = cache.get(_TIED) if cache is not None else None
    if (known is not None and known[0].shape == starts.shape and (known[0] == starts).all()
            and (known[1] == sizes).all()):
        return False
    if overlapping(starts, sizes * plan.dtype.itemsize):
        return True
    if cache is not None:
        cache[_TIED] = (starts.copy(), sizes.copy())
    return False


def _torch(keys: tuple[str, ...], grads: list[Any], params: list[Any], dicts: list[Any],
           inplace: bool, cache: dict[Any, Any] | None) -> Any:
    """``(gradient views, parameter views, state views per entry)`` for CPU torch leaves, or
    None."""
    torch = sys.modules.get("torch")
    if (cache is None or torch is None or not isinstance(params[0], torch.Tensor)
            or torch.compiler.is_compiling()):  # traced tensors have no memory to view
        return None
    from . import _torch_views

    # parameters and state tensors usually come back at the next call: those of an update in
    # place, and the new ones a functional update made (see Plan.run)
    p_ = _torch_views.kept(params, cache, "")
    if p_ is None:
        return None
    columns, state = [], []
    for key in keys:
        try:
            tensors = list(map(operator.itemgetter(key), dicts))
        except (KeyError, TypeError, IndexError):
            return None
        column = _torch_views.kept(tensors, cache, key)
        if column is None:
            return None
        columns.append(column)
        state.append(tensors)
    g_ = _torch_views.fresh(grads)
    return None if g_ is None else (g_, p_, columns, state)
