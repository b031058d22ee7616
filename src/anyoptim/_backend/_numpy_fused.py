"""Fused NumPy updates: one numba kernel per parameter, one pass over memory.

The reference path evaluates an optimizer's update as a sequence of NumPy expressions, each of
which reads and writes whole arrays (Adam makes about a dozen passes). The kernels here do the
same arithmetic element by element in one pass, in the same order and in the array's own
dtype, so their results equal the reference path's (the tests check this).

Used for float32/float64 NumPy arrays that are C-contiguous, with parameter, gradient and state
of one dtype; anything else takes the reference path. Without numba installed the reference
path is always used.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any

import numpy as np

from . import match_leaves

# Arrays at least this large are processed by a multi-threaded kernel.
PARALLEL_MIN_SIZE = 1 << 17

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT_SET = frozenset(_FLOATS)


def available() -> bool:
    return _numba_spec() is not None


@functools.lru_cache(maxsize=1)
def _numba_spec() -> Any:
    return importlib.util.find_spec("numba")


# ----------------------------------------------------------------------------- kernels
# An optimizer's update is written once, as an element function: scalar inputs (parameter,
# gradient, state values, then the tuple of scalar arguments) to a tuple of scalar outputs (new
# parameter, new state values). Switches such as bias correction are closure constants, so
# numba compiles one branch-free loop per configuration. Drivers run an element function over
# whole arrays, in place or into fresh output arrays, serially or with ``prange``.


def _elements(name: str, flags: tuple[bool, ...]) -> Any:
    import numba

    inline = numba.njit(inline="always")
    if name == "sgd":
        nesterov, use_wd = flags

        @inline
        def sgd(p, g, v, sc):  # pragma: no cover - compiled
            lr, momentum, wd, damp = sc
            if use_wd:
                g = g + wd * p
            v = momentum * v
            v = v + damp * g
            if nesterov:
                return p - lr * (g + momentum * v), v
            return p - lr * v, v

        return sgd
    if name == "sgd_plain":
        (use_wd,) = flags

        @inline
        def sgd_plain(p, g, sc):  # pragma: no cover - compiled
            lr, wd = sc
            if use_wd:
                g = g + wd * p
            return (p - lr * g,)

        return sgd_plain
    if name == "rmsprop":

        @inline
        def rmsprop(p, g, v, sc):  # pragma: no cover - compiled
            lr, alpha, one_minus_alpha, eps = sc
            v = alpha * v + one_minus_alpha * (g * g)
            return p - lr * g / (np.sqrt(v) + eps), v

        return rmsprop
    if name == "adagrad":

        @inline
        def adagrad(p, g, v, sc):  # pragma: no cover - compiled
            lr, eps = sc
            v = v + g * g
            return p - lr * g / (np.sqrt(v) + eps), v

        return adagrad
    if name == "adadelta":

        @inline
        def adadelta(p, g, v, u, sc):  # pragma: no cover - compiled
            lr, rho, one_minus_rho, eps = sc
            v = rho * v + one_minus_rho * (g * g)
            d = np.sqrt(u + eps) / np.sqrt(v + eps) * g
            u = rho * u + one_minus_rho * (d * d)
            return p - lr * d, v, u

        return adadelta
    if name == "adam":
        use_decay, bias_correction = flags

        @inline
        def adam(p, g, m, v, sc):  # pragma: no cover - compiled
            lr, b1, omb1, b2, omb2, eps, decay, c1, c2 = sc
            if use_decay:
                p = p * decay
            m = b1 * m + omb1 * g
            v = b2 * v + omb2 * (g * g)
            if bias_correction:
                return p - (c1 * m) / (np.sqrt(v) * c2 + eps), m, v
            return p - lr * m / (np.sqrt(v) + eps), m, v

        return adam
    if name == "adamax":

        @inline
        def adamax(p, g, m, v, sc):  # pragma: no cover - compiled
            lr, b1, omb1, b2, eps = sc
            m = b1 * m + omb1 * g
            a = b2 * v
            b = abs(g)
            v = a if (a >= b or a != a) else b  # NumPy's maximum: NaN wins
            return p - lr * m / (v + eps), m, v

        return adamax
    if name == "lion":
        (use_decay,) = flags

        @inline
        def lion(p, g, m, sc):  # pragma: no cover - compiled
            lr, b1, omb1, b2, omb2, decay = sc
            c = b1 * m + omb1 * g
            m = b2 * m + omb2 * g
            if use_decay:
                p = decay * p
            return p - lr * np.sign(c), m

        return lion
    raise KeyError(name)


def _driver(elem: Any, n_states: int, inplace: bool, parallel: bool) -> Any:
    import numba

    # error_model="numpy": IEEE division (inf/nan, as NumPy) and no zero-division branch in
    # the loop, which lets LLVM vectorise it
    jit = numba.njit(parallel=parallel, nogil=True, cache=False, error_model="numpy")
    prange = numba.prange
    if n_states == 0:
        if inplace:
            def run0(p, g, sc):  # pragma: no cover - compiled
                for i in prange(p.shape[0]):
                    (p[i],) = elem(p[i], g[i], sc)
            return jit(run0)

        def run0f(p, g, op, sc):  # pragma: no cover - compiled
            for i in prange(p.shape[0]):
                (op[i],) = elem(p[i], g[i], sc)
        return jit(run0f)
    if n_states == 1:
        if inplace:
            def run1(p, g, a, sc):  # pragma: no cover - compiled
                for i in prange(p.shape[0]):
                    p[i], a[i] = elem(p[i], g[i], a[i], sc)
            return jit(run1)

        def run1f(p, g, a, op, oa, sc):  # pragma: no cover - compiled
            for i in prange(p.shape[0]):
                op[i], oa[i] = elem(p[i], g[i], a[i], sc)
        return jit(run1f)
    if inplace:
        def run2(p, g, a, b, sc):  # pragma: no cover - compiled
            for i in prange(p.shape[0]):
                p[i], a[i], b[i] = elem(p[i], g[i], a[i], b[i], sc)
        return jit(run2)

    def run2f(p, g, a, b, op, oa, ob, sc):  # pragma: no cover - compiled
        for i in prange(p.shape[0]):
            op[i], oa[i], ob[i] = elem(p[i], g[i], a[i], b[i], sc)
    return jit(run2f)


@functools.cache
def kernel_for(name: str, flags: tuple[bool, ...], n_states: int, inplace: bool,
               parallel: bool) -> Any:
    return _driver(_elements(name, flags), n_states, inplace, parallel)


# ----------------------------------------------------------------------------- per-optimizer plans
def plan(opt: Any, dtype: np.dtype) -> tuple[str, tuple[bool, ...], tuple[Any, ...]]:
    """The element function, its switches and its scalar arguments for ``opt``.

    Scalars are computed with the same NumPy expressions the reference path uses, so they are
    rounded identically.
    """
    from ..optimizers import SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, RMSprop

    cls = type(opt)
    f = dtype.type
    lr = np.astype(np.asarray(opt.learning_rate), dtype)[()]
    if cls is SGD:
        use_wd = opt.weight_decay != 0
        if opt.momentum <= 0:
            return "sgd_plain", (use_wd,), (lr, f(opt.weight_decay))
        damp = f(1 - opt.dampening) if opt.dampening > 0 else f(1)
        return "sgd", (bool(opt.nesterov), use_wd), (
            lr, f(opt.momentum), f(opt.weight_decay), damp)
    if cls is RMSprop:
        return "rmsprop", (), (lr, f(opt.alpha), f(1 - opt.alpha), f(opt.eps))
    if cls is Adagrad:
        return "adagrad", (), (lr, f(opt.eps))
    if cls is AdaDelta:
        return "adadelta", (), (lr, f(opt.rho), f(1 - opt.rho), f(opt.eps))
    if cls in (Adam, AdamW):
        b1, b2 = opt.betas
        decay = np.asarray(1 - lr * opt.weight_decay if cls is AdamW else 1, dtype=dtype)
        c1 = c2 = lr
        if opt.bias_correction:
            t = np.astype(opt.state["step"], np.float32)
            c1 = np.astype(np.asarray(lr / (1 - b1**t)), dtype)[()]
            c2 = np.astype(np.asarray(1 / np.sqrt(1 - b2**t)), dtype)[()]
        return "adam", (cls is AdamW, bool(opt.bias_correction)), (
            lr, f(b1), f(1 - b1), f(b2), f(1 - b2), f(opt.eps), decay[()], c1, c2)
    if cls is Adamax:
        b1, b2 = opt.betas
        return "adamax", (), (lr, f(b1), f(1 - b1), f(b2), f(opt.eps))
    if cls is Lion:
        b1, b2 = opt.betas
        decay = np.astype(np.asarray(1 - lr * opt.weight_decay), dtype)
        return "lion", (opt.weight_decay > 0,), (
            lr, f(b1), f(1 - b1), f(b2), f(1 - b2), decay[()])
    raise TypeError(f"no fused kernel for {cls.__name__}")


def supported(opt: Any) -> bool:
    from ..optimizers import SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, RMSprop

    return type(opt) in (SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, RMSprop)


def _refcount(a: np.ndarray) -> int:
    return sys.getrefcount(a)


def _calibrate_private_refcount() -> int:
    """The reference count ``_private`` sees for an array nobody else holds.

    Measured with the same shape of code as in ``step`` (a dict entry, a list of the leaf's
    state arrays, a comprehension variable, one call), so that interpreters that count stack
    references differently give the right threshold; 0 (never reuse) if the result is odd.
    """
    holder = {"m": np.empty(1)}
    states = [holder["m"]]
    counts = [_probe(a) for a in states]  # _probe -> _refcount, as _private -> _refcount
    return counts[0] if 2 <= counts[0] <= 8 else 0


def _probe(a: np.ndarray) -> int:
    return _refcount(a)


# References to a state array inside ``step`` when nobody else holds it (CPython 3.10-3.13:
# the state dict, the list of the leaf's state arrays, the comprehension's variable, the
# arguments of ``_private`` and ``_refcount`` and getrefcount's own argument: 6).
_PRIVATE_REFCOUNT = _calibrate_private_refcount()


def _private(a: np.ndarray) -> bool:
    """True if only the optimizer's state refers to ``a`` (and it owns its memory).

    ``apply_gradients`` may then write the new state values into ``a`` instead of a fresh
    array: no one can observe the difference, and the step saves an allocation (and the page
    faults of fresh memory) per state array.
    """
    return (
        _refcount(a) <= _PRIVATE_REFCOUNT
        and a.base is None
        and a.flags.writeable
        and a.flags.owndata
    )


def _leaf_states(g: Any, p: Any, s: Any, keys: tuple[str, ...], inplace: bool) -> list | None:
    """The state arrays of a leaf that can take the fused kernel, else None."""
    if type(g) is not np.ndarray or type(p) is not np.ndarray or type(s) is not dict or not s:
        return None
    dtype = g.dtype
    if dtype not in _FLOAT_SET or (p.dtype is not dtype and p.dtype != dtype):
        return None
    shape = g.shape
    if shape != p.shape:
        return None
    pflags = p.flags
    if not (g.flags.c_contiguous and pflags.c_contiguous) or (inplace and not pflags.writeable):
        return None
    states = []
    for key in keys:
        a = s.get(key)
        if type(a) is not np.ndarray or a.shape != shape or (a.dtype is not dtype and a.dtype != dtype):
            return None
        aflags = a.flags
        if not (aflags.c_contiguous and aflags.writeable):
            return None
        states.append(a)
    return states


# ----------------------------------------------------------------------------- the step
_KEYS = {
    "SGD": ("v",), "RMSprop": ("v",), "Adagrad": ("v",), "AdaDelta": ("v", "u"),
    "Adam": ("m", "v"), "AdamW": ("m", "v"), "Adamax": ("m", "v"), "Lion": ("m",),
}


def step(opt: Any, gradients: Any, parameters: Any, inplace: bool) -> Any:
    """One fused update, or NotImplemented (nothing changed) if some leaf does not qualify.

    In place: parameters and state arrays are overwritten. Functional: new arrays are
    returned and stored in the state; the inputs are not touched.
    """
    keys = _KEYS[type(opt).__name__]
    if type(opt).__name__ == "SGD" and opt.momentum <= 0:
        keys = ()
    leaves: list[tuple[Any, Any, dict[str, Any], list, Any]] = []
    def leaf(g: Any, p: Any, s: Any) -> Any:
        states = _leaf_states(g, p, s, keys, inplace)
        if states is None:
            return NotImplemented
        out_p = p if inplace else np.empty_like(p)
        leaves.append((g, p, s, states, out_p))
        return out_p

    result = match_leaves(gradients, parameters, opt._state, leaf)
    if result is NotImplemented:
        return NotImplemented
    saved = opt._advance()
    n_states = len(keys)
    try:
        kernels: dict[tuple[Any, bool], tuple[Any, tuple[Any, ...]]] = {}
        staged = []
        for g, p, s, states, out_p in leaves:
            size = p.size
            outs = states if inplace else [a if _private(a) else np.empty_like(a) for a in states]
            if not inplace:
                staged.append((s, outs))
            if size == 0:
                continue
            key = (g.dtype, size >= PARALLEL_MIN_SIZE)
            entry = kernels.get(key)
            if entry is None:
                name, flags, scalars = plan(opt, g.dtype)
                entry = kernels[key] = (
                    kernel_for(name, flags, n_states, inplace, key[1]), scalars)
            fn, scalars = entry
            if p.ndim == 1:  # the common case needs no flattened views
                if inplace:
                    fn(p, g, *states, scalars)
                else:
                    fn(p, g, *states, out_p, *outs, scalars)
                continue
            flat = [p.reshape(-1), g.reshape(-1)]
            flat += [a.reshape(-1) for a in states]
            if not inplace:
                flat.append(out_p.reshape(-1))
                flat += [a.reshape(-1) for a in outs]
            fn(*flat, scalars)
    except BaseException:
        opt._state.update(saved)
        raise
    for s, outs in staged:
        for k, a in zip(keys, outs):
            s[k] = a
    return result
