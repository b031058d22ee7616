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
from typing import Any

import numpy as np

# Arrays at least this large are processed by a multi-threaded kernel.
PARALLEL_MIN_SIZE = 1 << 17

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def available() -> bool:
    return _numba_spec() is not None


@functools.lru_cache(maxsize=1)
def _numba_spec() -> Any:
    return importlib.util.find_spec("numba")


# ----------------------------------------------------------------------------- kernels
# Each kernel reads p, g and the state arrays and writes out_p and the out_ state arrays, which
# may be the inputs themselves (in-place update) or fresh arrays (functional update).
# Scalars arrive already rounded to the arrays' dtype, exactly as NumPy would round them.


def _sgd(p, g, v, out_p, out_v, lr, momentum, wd, damp, nesterov, use_wd):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        if use_wd:
            gi = gi + wd * p[i]
        vi = momentum * v[i]
        vi = vi + damp * gi
        out_v[i] = vi
        if nesterov:
            out_p[i] = p[i] - lr * (gi + momentum * vi)
        else:
            out_p[i] = p[i] - lr * vi


def _sgd_plain(p, g, out_p, lr, wd, use_wd):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        if use_wd:
            gi = gi + wd * p[i]
        out_p[i] = p[i] - lr * gi


def _rmsprop(p, g, v, out_p, out_v, lr, alpha, one_minus_alpha, eps):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        vi = alpha * v[i] + one_minus_alpha * (gi * gi)
        out_v[i] = vi
        out_p[i] = p[i] - lr * gi / (np.sqrt(vi) + eps)


def _adagrad(p, g, v, out_p, out_v, lr, eps):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        vi = v[i] + gi * gi
        out_v[i] = vi
        out_p[i] = p[i] - lr * gi / (np.sqrt(vi) + eps)


def _adadelta(p, g, v, u, out_p, out_v, out_u, lr, rho, one_minus_rho, eps):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        ui = u[i]
        vi = rho * v[i] + one_minus_rho * (gi * gi)
        d = np.sqrt(ui + eps) / np.sqrt(vi + eps) * gi
        out_v[i] = vi
        out_u[i] = rho * ui + one_minus_rho * (d * d)
        out_p[i] = p[i] - lr * d


def _adam(p, g, m, v, out_p, out_m, out_v, lr, b1, omb1, b2, omb2, eps, decay, use_decay,
          bias_correction, c1, c2):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        pi = p[i]
        if use_decay:
            pi = pi * decay
        mi = b1 * m[i] + omb1 * gi
        vi = b2 * v[i] + omb2 * (gi * gi)
        out_m[i] = mi
        out_v[i] = vi
        if bias_correction:
            out_p[i] = pi - (c1 * mi) / (np.sqrt(vi) * c2 + eps)
        else:
            out_p[i] = pi - lr * mi / (np.sqrt(vi) + eps)


def _adamax(p, g, m, v, out_p, out_m, out_v, lr, b1, omb1, b2, eps):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        mi = b1 * m[i] + omb1 * gi
        a = b2 * v[i]
        b = abs(gi)
        # NumPy's maximum: NaN if either side is NaN
        vi = a if (a >= b or a != a) else b
        out_m[i] = mi
        out_v[i] = vi
        out_p[i] = p[i] - lr * mi / (vi + eps)


def _lion(p, g, m, out_p, out_m, lr, b1, omb1, b2, omb2, decay, use_decay):  # pragma: no cover
    for i in prange(p.shape[0]):  # noqa: F821
        gi = g[i]
        mi = m[i]
        c = b1 * mi + omb1 * gi
        out_m[i] = b2 * mi + omb2 * gi
        pi = p[i]
        if use_decay:
            pi = decay * pi
        out_p[i] = pi - lr * np.sign(c)


_KERNELS = {
    "sgd": _sgd,
    "sgd_plain": _sgd_plain,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "adadelta": _adadelta,
    "adam": _adam,
    "adamax": _adamax,
    "lion": _lion,
}


@functools.lru_cache(maxsize=None)
def _compiled(name: str, parallel: bool) -> Any:
    import numba

    fn = _KERNELS[name]
    # prange is looked up in the function's globals at compile time
    fn.__globals__["prange"] = numba.prange
    return numba.njit(parallel=parallel, cache=True, nogil=True)(fn)


def kernel(name: str, size: int) -> Any:
    return _compiled(name, size >= PARALLEL_MIN_SIZE)


# ----------------------------------------------------------------------------- per-optimizer plans
def plan(opt: Any, dtype: np.dtype) -> tuple[str, tuple[str, ...], tuple[Any, ...]] | None:
    """The kernel name, the state keys it updates and its scalar arguments for ``opt``.

    Scalars are computed with the same NumPy expressions the reference path uses, so they are
    rounded identically. Returns None for optimizers without a fused kernel.
    """
    from ..optimizers import SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, RMSprop

    cls = type(opt)
    f = dtype.type
    lr = np.astype(np.asarray(opt.learning_rate), dtype)[()]
    if cls is SGD:
        if opt.momentum <= 0:
            return "sgd_plain", (), (lr, f(opt.weight_decay), opt.weight_decay != 0)
        damp = f(1 - opt.dampening) if opt.dampening > 0 else f(1)
        return "sgd", ("v",), (
            lr, f(opt.momentum), f(opt.weight_decay), damp, bool(opt.nesterov),
            opt.weight_decay != 0,
        )
    if cls is RMSprop:
        return "rmsprop", ("v",), (lr, f(opt.alpha), f(1 - opt.alpha), f(opt.eps))
    if cls is Adagrad:
        return "adagrad", ("v",), (lr, f(opt.eps))
    if cls is AdaDelta:
        return "adadelta", ("v", "u"), (lr, f(opt.rho), f(1 - opt.rho), f(opt.eps))
    if cls in (Adam, AdamW):
        b1, b2 = opt.betas
        decay = np.asarray(1 - lr * opt.weight_decay if cls is AdamW else 1, dtype=dtype)
        c1 = c2 = lr
        if opt.bias_correction:
            t = np.astype(opt.state["step"], np.float32)
            c1 = np.astype(np.asarray(lr / (1 - b1**t)), dtype)[()]
            c2 = np.astype(np.asarray(1 / np.sqrt(1 - b2**t)), dtype)[()]
        return "adam", ("m", "v"), (
            lr, f(b1), f(1 - b1), f(b2), f(1 - b2), f(opt.eps), decay[()],
            cls is AdamW, bool(opt.bias_correction), c1, c2,
        )
    if cls is Adamax:
        b1, b2 = opt.betas
        return "adamax", ("m", "v"), (lr, f(b1), f(1 - b1), f(b2), f(opt.eps))
    if cls is Lion:
        b1, b2 = opt.betas
        decay = np.astype(np.asarray(1 - lr * opt.weight_decay), dtype)
        return "lion", ("m",), (
            lr, f(b1), f(1 - b1), f(b2), f(1 - b2), decay[()], opt.weight_decay > 0,
        )
    return None


def supported(opt: Any) -> bool:
    from ..optimizers import SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, RMSprop

    return type(opt) in (SGD, AdaDelta, Adagrad, Adam, Adamax, AdamW, Lion, RMSprop)


def leaf_ok(g: Any, p: Any, s: Any, keys: tuple[str, ...], inplace: bool) -> bool:
    """True if this leaf can take the fused kernel."""
    if type(g) is not np.ndarray or type(p) is not np.ndarray:
        return False
    dtype = g.dtype
    if dtype not in _FLOATS or p.dtype != dtype or g.shape != p.shape:
        return False
    if not (g.flags.c_contiguous and p.flags.c_contiguous):
        return False
    if inplace and not p.flags.writeable:
        return False
    if not isinstance(s, dict):
        return False
    for key in keys:
        a = s.get(key)
        if type(a) is not np.ndarray or a.dtype != dtype or a.shape != p.shape:
            return False
        if not a.flags.c_contiguous or not a.flags.writeable:
            return False
    return True


def run(name: str, p: Any, g: Any, states: list[Any], outs: list[Any], out_p: Any,
        scalars: tuple[Any, ...]) -> None:
    size = p.size
    if size == 0:
        return
    fn = kernel(name, size)
    fn(p.reshape(-1), g.reshape(-1), *[a.reshape(-1) for a in states], out_p.reshape(-1),
       *[a.reshape(-1) for a in outs], *scalars)


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
    leaves: list[tuple[Any, Any, dict[str, Any], Any]] = []
    result = _collect(gradients, parameters, opt._state, keys, inplace, leaves)
    if result is NotImplemented:
        return NotImplemented
    saved = opt._advance()
    try:
        plans: dict[np.dtype, Any] = {}
        staged = []
        for g, p, s, out_p in leaves:
            dtype = g.dtype
            if dtype not in plans:
                plans[dtype] = plan(opt, dtype)
            name, _, scalars = plans[dtype]
            states = [s[k] for k in keys]
            outs = states if inplace else [np.empty_like(a) for a in states]
            run(name, p, g, states, outs, out_p, scalars)
            if not inplace:
                staged.append((s, outs))
    except BaseException:
        opt._state.update(saved)
        raise
    for s, outs in staged:
        for k, a in zip(keys, outs):
            s[k] = a
    return result


def _collect(g: Any, p: Any, s: Any, keys: tuple[str, ...], inplace: bool, leaves: list) -> Any:
    if isinstance(g, dict):
        if not isinstance(p, dict) or not isinstance(s, dict):
            return NotImplemented
        out = {}
        for k, gv in g.items():
            if k not in p or k not in s:
                return NotImplemented
            r = _collect(gv, p[k], s[k], keys, inplace, leaves)
            if r is NotImplemented:
                return NotImplemented
            out[k] = r
        return out
    if isinstance(g, (list, tuple)):
        if not isinstance(p, (list, tuple)) or not isinstance(s, (list, tuple)):
            return NotImplemented
        if len(p) < len(g) or len(s) < len(g):
            return NotImplemented
        items = []
        for i, gv in enumerate(g):
            r = _collect(gv, p[i], s[i], keys, inplace, leaves)
            if r is NotImplemented:
                return NotImplemented
            items.append(r)
        if type(g) is list:
            return items
        return type(g)(*items) if hasattr(g, "_fields") else type(g)(items)
    if not leaf_ok(g, p, s, keys, inplace) or not s:
        return NotImplemented
    out_p = p if inplace else np.empty_like(p)
    leaves.append((g, p, s, out_p))
    return out_p
