"""State precision: moments stored in another dtype than the parameters, stochastic rounding.

``state_dtype="bfloat16"`` (or ``"float16"``, ``"float32"``) stores every floating state array
in that dtype. Each update computes in the wider of the parameter's and the state's dtype (the
state, gradient and parameter are cast up, the rule runs, the new state is cast down on store
and the new parameter back to its dtype), which is fp32 maths with a cast each step.

``stochastic_rounding=True`` rounds bfloat16 parameters' float32 results to one of the two
neighbouring bfloat16 values with probability proportional to the distance (unbiased on
average), from random 16-bit integers: NumPy's generator, ``torch.randint``, ``jax.random``
keyed by the step (so it is traceable under ``jax.jit``) or ``mlx.core.random``. A callable
``(shape, like) -> integer array in [0, 65536)`` supplies the bits instead (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend
from .._backend import finalize, library_name

if TYPE_CHECKING:
    from ._base import Optimizer

NAMES = ("float32", "bfloat16", "float16")


def normalize(value: Any) -> str | None:
    """``state_dtype`` as one of :data:`NAMES` (a name or any library's dtype), or None."""
    if value is None:
        return None
    name = value if isinstance(value, str) else str(getattr(value, "__name__", value))
    name = name.rsplit(".", 1)[-1].replace("<class '", "").replace("'>", "")
    if name not in NAMES:
        raise ValueError(f"state_dtype must be one of {', '.join(map(repr, NAMES))} (or that "
                         f"dtype of any library), got {value!r}")
    return name


def dtype_for(name: str, like: Any) -> Any:
    lib = library_name(like)
    if lib == "numpy":
        if name == "bfloat16":
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(name)
    if lib == "torch":
        import torch

        return getattr(torch, name)
    if lib == "jax":
        import jax.numpy as jnp

        return getattr(jnp, name)
    if lib == "mlx":
        import mlx.core as mx

        return getattr(mx, name)
    if name == "bfloat16":
        raise TypeError(f"state_dtype='bfloat16' is not available for {lib} arrays")
    return getattr(_backend.namespace(like), name)


def itemsize(dtype: Any) -> int:
    size = getattr(dtype, "itemsize", None)
    return int(size if size is not None else dtype.size)


def astype(x: Any, dtype: Any) -> Any:
    if x.dtype == dtype:
        return x
    if library_name(x) == "torch":
        return x.to(dtype)
    return finalize(x.astype(dtype))


def cast_state(opt: Optimizer, parameter: Any, state: dict[str, Any]) -> None:
    """Cast the floating entries of a freshly made ``state`` to ``opt.state_dtype``."""
    if opt.state_dtype is None:
        return
    dtype = dtype_for(opt.state_dtype, parameter)
    for k, v in state.items():
        if library_name(v) is not None and _backend.is_inexact(v):
            state[k] = astype(v, dtype)


def _is_bf16(dtype: Any) -> bool:
    return str(dtype).endswith("bfloat16")


class Cast:
    """One group's casts: inputs up to the compute dtype, results down on store."""

    def __init__(self, opt: Optimizer, grads: list[Any], params: list[Any],
                 states: list[dict[str, Any]]) -> None:
        self.opt = opt
        self.params, self.states = params, states
        name = opt.state_dtype
        self.compute: list[Any] = []
        self.store: list[Any] = []
        for p in params:
            pd = p.dtype
            sd = dtype_for(name, p) if name is not None else pd
            if pd == sd:
                cd = pd
            elif itemsize(pd) != itemsize(sd):
                cd = pd if itemsize(pd) > itemsize(sd) else sd
            else:
                cd = dtype_for("float32", p)
            if opt.stochastic_rounding and _is_bf16(pd) and itemsize(cd) < 4:
                cd = dtype_for("float32", p)
            self.compute.append(cd)
            self.store.append(sd if name is not None else None)
        self.grads = grads

    def inputs(self) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
        self.copies = [
            {k: astype(v, cd) if library_name(v) is not None and _backend.is_inexact(v) else v
             for k, v in s.items()} for s, cd in zip(self.states, self.compute)]
        return ([astype(g, cd) for g, cd in zip(self.grads, self.compute)],
                [astype(p, cd) for p, cd in zip(self.params, self.compute)], self.copies)

    def finish(self, commits: list[tuple[dict[str, Any], dict[str, Any]]], start: int,
               out: list[Any]) -> list[Any]:
        """Retarget this group's commits to the real state dicts, cast down; return the new
        parameters in their own dtype (stochastically rounded where asked)."""
        where = {id(c): i for i, c in enumerate(self.copies)}
        for n in range(start, len(commits)):
            target, values = commits[n]
            i = where[id(target)]
            orig = self.states[i]
            for k, v in values.items():
                old = orig.get(k)
                if old is not None and library_name(v) is not None and _backend.is_inexact(v):
                    values[k] = astype(v, self.store[i] or old.dtype)
            commits[n] = (orig, values)
        result = []
        step = self.opt._state["step"]
        for i, (new, p) in enumerate(zip(out, self.params)):
            if self.opt.stochastic_rounding and _is_bf16(p.dtype) and not _is_bf16(new.dtype):
                result.append(stochastic_round(self.opt, new, p.dtype, step, i))
            else:
                result.append(astype(new, p.dtype))
        return result


def random_bits(opt: Optimizer, like: Any, step: Any, index: int) -> Any:
    """Random integers in [0, 65536) shaped like ``like``, in its library (uint32/int32)."""
    source = opt.stochastic_rounding
    shape = tuple(like.shape)
    lib = library_name(like)
    if callable(source) and not isinstance(source, bool):
        bits = source(shape, like)
        return bits if library_name(bits) == lib else _backend.to_library(np.asarray(bits), like)
    if lib == "torch":
        import torch

        return torch.randint(0, 1 << 16, shape, dtype=torch.int32, device=like.device)
    if lib == "jax":
        import jax

        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), step), index)
        return jax.random.bits(key, shape, np.uint32) >> 16
    if lib == "mlx":
        import mlx.core as mx

        return mx.random.randint(0, 1 << 16, shape).astype(mx.uint32)
    rng = opt.__dict__.get("_rounding_rng")
    if rng is None:
        rng = opt.__dict__["_rounding_rng"] = np.random.default_rng()
    return rng.integers(0, 1 << 16, shape, dtype=np.uint32)


def stochastic_round(opt: Optimizer, x: Any, dtype: Any, step: Any, index: int) -> Any:
    """Round the float32 array ``x`` to bfloat16 ``dtype`` stochastically."""
    bits = random_bits(opt, x, step, index)
    return round_with_bits(x, bits, dtype)


def round_with_bits(x: Any, bits: Any, dtype: Any) -> Any:
    """bfloat16 of float32 ``x``: add ``bits`` (in [0, 65536)) to the low half of its bit
    pattern and truncate, so it rounds away from zero with probability (low half)/65536.
    NaN stays NaN."""
    lib = library_name(x)
    if lib == "torch":
        import torch

        u = x.contiguous().view(torch.int32)
        y = ((u + bits.to(torch.int32)) & -65536).view(torch.float32)
        return torch.where(torch.isnan(x), x, y).to(dtype)
    if lib == "jax":
        import jax
        import jax.numpy as jnp

        u = jax.lax.bitcast_convert_type(x, jnp.uint32)
        y = jax.lax.bitcast_convert_type((u + bits.astype(jnp.uint32)) & np.uint32(0xFFFF0000),
                                         jnp.float32)
        return jnp.where(jnp.isnan(x), x, y).astype(dtype)
    if lib == "mlx":
        import mlx.core as mx

        u = x.view(mx.uint32)
        y = ((u + bits.astype(mx.uint32)) & 0xFFFF0000).view(mx.float32)
        return mx.where(mx.isnan(x), x, y).astype(dtype)
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32)
    y = ((u + np.asarray(bits).astype(np.uint32)) & np.uint32(0xFFFF0000)).view(np.float32)
    return finalize(np.where(np.isnan(x), x, y).astype(dtype))


SourceOfBits = Callable[[tuple[int, ...], Any], Any]
