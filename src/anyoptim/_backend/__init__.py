"""The one place that knows about array libraries.

Optimizers never import an array library. They receive an array namespace ``xp`` from
:func:`namespace` and use only the small set of operations listed in ``OPS`` below, plus the
arithmetic operators and the ``dtype``/``shape``/``ndim`` attributes of the arrays themselves.
Libraries are detected from the type of the arrays and imported only when such an array shows
up, so ``import anyoptim`` never imports NumPy's peers.

Operations the optimizers rely on (all array-API standard names)::

    asarray astype zeros zeros_like sqrt abs maximum minimum sign where mean sum
    square matmul matrix_transpose reshape cos float32 uint64 int32 atan2
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

__all__ = [
    "OPS",
    "as_state_array",
    "finalize",
    "host_scalar",
    "is_array",
    "library_name",
    "model_parameters",
    "module_grads",
    "namespace",
    "no_grad",
    "run_elementwise",
    "run_reference",
    "same_library",
    "to_library",
]

OPS = [
    "asarray", "astype", "zeros", "zeros_like", "sqrt", "abs", "maximum", "minimum", "sign",
    "where", "mean", "sum", "square", "matmul", "matrix_transpose", "reshape", "cos", "float32",
    "uint64", "int32", "atan2",
]


def library_name(x: Any) -> str | None:
    """Return the name of the array library ``x`` belongs to, or None if it is not an array.

    The test is on the type's module, so no library is imported to answer it.
    """
    cls: type = type(x)
    if cls is np.ndarray:
        return "numpy"
    try:
        return _LIBRARY_OF_TYPE[cls]
    except KeyError:
        name = _LIBRARY_OF_TYPE[cls] = _library_of_type(cls)
        return name


def library_name_of_type(cls: type) -> str | None:
    """:func:`library_name` for an array type."""
    try:
        return _LIBRARY_OF_TYPE[cls]
    except KeyError:
        name = _LIBRARY_OF_TYPE[cls] = _library_of_type(cls)
        return name


# Plain dict caches rather than functools.lru_cache: torch.compile traces through dict
# lookups without warnings.
_LIBRARY_OF_TYPE: dict[type, str | None] = {}
_NAMESPACES: dict[str, Any] = {}


def _library_of_type(cls: type) -> str | None:
    if issubclass(cls, (np.ndarray, np.generic)):
        return "numpy"
    module = cls.__module__ or ""
    root = module.split(".", 1)[0]
    if root == "mlx":
        return "mlx" if hasattr(cls, "__array_namespace__") else None
    if root == "torch":
        import torch

        return "torch" if issubclass(cls, torch.Tensor) else None
    if root in ("jax", "jaxlib"):
        # jax.Array and the tracers seen under jit/grad/vmap (virtual subclasses of jax.Array)
        return "jax" if hasattr(cls, "dtype") and hasattr(cls, "shape") else None
    if root == "cupy":
        return "cupy" if cls.__name__ == "ndarray" else None
    if hasattr(cls, "__array_namespace__"):
        return root
    return None


def fused_numpy_available() -> bool:
    """True when numba is installed (and not disabled with ANYOPTIM_DISABLE_FUSED=1)."""
    return _fused_available()


def fused_enabled() -> bool:
    """False when fused fast paths are switched off with ANYOPTIM_DISABLE_FUSED=1."""
    import os

    return os.environ.get("ANYOPTIM_DISABLE_FUSED", "") in ("", "0")


@functools.lru_cache(maxsize=1)
def _fused_available() -> bool:
    if not fused_enabled():
        return False
    from . import _numpy_fused

    return _numpy_fused.available()


def is_array(x: Any) -> bool:
    """True if ``x`` is an array of any supported library."""
    return library_name(x) is not None


class _Overlay:
    """A namespace that replaces a few functions of another one and forwards the rest."""

    def __init__(self, base: Any, **functions: Any) -> None:
        self.__name__ = base.__name__
        self._base = base
        self.__dict__.update(functions)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._base, name)
        setattr(self, name, value)  # cache: later lookups are plain attribute reads
        return value


def _namespace_for(name: str) -> Any:
    try:
        return _NAMESPACES[name]
    except KeyError:
        xp = _NAMESPACES[name] = _load_namespace(name)
        return xp


def _load_namespace(name: str) -> Any:
    if name == "numpy":
        # NumPy 2 implements the array API in its main namespace; using it directly avoids a
        # layer of wrappers on the per-step hot path.
        return np
    if name == "mlx":
        import mlx.core as mx

        return mx
    import importlib

    if name == "torch":
        import torch

        compat = importlib.import_module("array_api_compat.torch")

        def sign(x: Any) -> Any:
            # out of place (the compat version writes NaNs in place, which DTensor refuses)
            return torch.where(torch.isnan(x), x, torch.sign(x))

        return _Overlay(compat, sign=sign)
    if name == "jax":
        import jax.numpy as jnp

        return jnp
    if name == "cupy":
        return importlib.import_module("array_api_compat.cupy")
    raise TypeError(f"unsupported array library {name!r}")


def namespace(x: Any) -> Any:
    """Return the array namespace (``xp``) to use for the array ``x``."""
    name = library_name(x)
    if name is None:
        raise TypeError(
            f"expected an array (NumPy, PyTorch, JAX, CuPy or MLX), got {type(x).__name__}: {x!r:.80}"
        )
    return _namespace_for(name)


def addmm(xp: Any, c: Any, a: Any, b: Any, alpha: float = 1.0) -> Any:
    """``c + alpha * (a @ b)``, with the library's fused kernel where it has one (MLX)."""
    fused = getattr(xp, "addmm", None)
    if fused is not None and xp.__name__ == "mlx.core":
        return fused(c, a, b, alpha=alpha, beta=1.0)
    product = xp.matmul(a, b)
    return c + (alpha * product if alpha != 1.0 else product)


def same_library(a: Any, b: Any) -> bool:
    return library_name(a) == library_name(b)


def finalize(x: Any) -> Any:
    """Turn NumPy scalars produced by arithmetic on 0-d arrays back into 0-d arrays."""
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


def host_scalar(value: Any, dtype: Any = None) -> np.ndarray:
    """A 0-d NumPy array: the library-free form of ``step`` and ``learning_rate``."""
    return np.asarray(value, dtype=dtype)


def as_state_array(value: Any) -> Any:
    """Convert a hyperparameter value to a 0-d state array the way ``mx.array(value)`` does.

    A Python float becomes float32, a Python int int32, a bool bool; an array keeps its library
    and dtype (NumPy float64 becomes float32, as in MLX).
    """
    name = library_name(value)
    if name is None:
        if isinstance(value, bool):
            return np.asarray(value)
        if isinstance(value, int):
            return np.asarray(value, dtype=np.int32)
        if isinstance(value, float):
            return np.asarray(value, dtype=np.float32)
        if isinstance(value, np.generic):
            value = np.asarray(value)
            name = "numpy"
        else:
            raise TypeError(
                f"expected a number or an array, got {type(value).__name__}: {value!r:.80}"
            )
    if name == "numpy":
        arr = np.array(value, copy=True)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return arr
    xp = _namespace_for(name)
    return xp.asarray(value, copy=True) if name != "mlx" else xp.array(value)


def to_library(x: Any, like: Any) -> Any:
    """Move a (small) array ``x`` into the library and onto the device of ``like``.

    Used only for the scalar entries ``step`` and ``learning_rate``, which are created before
    the optimizer has seen any array and adopt the library of the first gradients.
    """
    src = library_name(x)
    dst = library_name(like)
    if src == dst:
        return x
    host = np.asarray(x) if src in ("numpy", None) else _to_numpy(x)
    if dst in ("numpy", None):
        return np.asarray(host)
    if dst == "mlx":
        import mlx.core as mx

        return mx.array(host)
    xp = _namespace_for(dst)
    device = getattr(like, "device", None)
    if dst == "jax":
        import jax

        if host.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
            # JAX's default 32-bit mode: narrow explicitly instead of triggering a warning.
            narrow = {"u": np.uint32, "i": np.int32, "f": np.float32}.get(host.dtype.kind)
            host = host.astype(narrow) if narrow is not None else host
        sharding: Any = getattr(like, "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and getattr(mesh, "size", 1) > 1:
            # replicate scalars over the parameters' mesh, as jit outputs them: the first and
            # later calls of a jitted step then see the same input shardings (no retrace)
            import jax

            spec = type(sharding.spec)()
            return jax.device_put(host, type(sharding)(mesh, spec))
        return xp.asarray(host)
    if dst == "torch" and host.dtype == np.uint64:
        # PyTorch has no arithmetic for uint64 tensors: the step counter is int64 there.
        host = host.astype(np.int64)
    if not host.flags.writeable:
        host = host.copy()  # torch warns about read-only NumPy memory (e.g. a JAX array's)
    if device is not None:
        return xp.asarray(host, device=device)
    return xp.asarray(host)


def _to_numpy(x: Any) -> np.ndarray:
    name = library_name(x)
    if name == "mlx":
        import mlx.core as mx

        if x.dtype == mx.bfloat16:
            raise TypeError("bfloat16 MLX arrays cannot be moved through NumPy")
        return np.asarray(x)
    if name == "torch":
        return x.detach().cpu().numpy()
    if name == "cupy":
        return x.get()
    return np.asarray(x)


def write_back(model: Any, new: Any) -> None:
    """Store the updated parameters ``new`` into ``model``.

    Objects with their own ``update`` method (MLX's ``nn.Module``) are updated through it.
    Plain dicts and lists are merged recursively, touching only the locations present in
    ``new`` (MLX's shallow ``dict.update`` would drop sibling entries). Writeable NumPy arrays
    with unchanged shape and dtype are overwritten in place, so other references see the update.
    """
    if _is_torch_module(model):
        import torch

        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in new.items():
                params[name].copy_(value)
        return
    own_update = getattr(type(model), "update", None)
    if own_update is not None and own_update is not dict.update and not isinstance(model, list):
        model.update(new)
        return
    if not isinstance(model, (dict, list)):
        raise TypeError(
            f"update(model, gradients) needs a dict, a list or an object with an update() "
            f"method as the model, got {type(model).__name__}; use apply_gradients() for "
            "immutable trees"
        )
    _merge_into(model, new)


def _merge_into(target: Any, new: Any) -> Any:
    if isinstance(new, dict) and isinstance(target, dict):
        for k, v in new.items():
            target[k] = _merge_into(target[k], v) if k in target else v
        return target
    if isinstance(new, (list, tuple)) and isinstance(target, (list, tuple)):
        if isinstance(target, list):
            for i, v in enumerate(new):
                target[i] = _merge_into(target[i], v)
            return target
        items = [_merge_into(t, v) for t, v in zip(target, new)] + list(target[len(new) :])
        return type(target)(*items) if hasattr(target, "_fields") else type(target)(items)
    return _store_leaf(target, new)


def is_inexact(x: Any) -> bool:
    """True if the array ``x`` has a floating or complex dtype."""
    dtype = x.dtype
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str):  # NumPy, CuPy and JAX dtypes
        return kind in "fc" or (kind == "V" and "float" in str(dtype))
    name = library_name(x)
    if name == "torch":
        return bool(dtype.is_floating_point or dtype.is_complex)
    if name == "mlx":
        import mlx.core as mx

        return bool(mx.issubdtype(dtype, mx.inexact))
    return bool(_namespace_for(name or "").isdtype(dtype, ("real floating", "complex floating")))


def is_counter(x: Any, lib: str | None) -> bool:
    """True if ``x`` is a step counter of library ``lib`` in that library's counter dtype
    (uint64; int64 on torch, which has no uint64 arithmetic; uint32 or uint64 on JAX)."""
    name = library_name(x)
    if name != lib:
        return False
    dtype = x.dtype
    if name in ("numpy", "cupy"):
        return bool(dtype == np.uint64)
    if name == "torch":
        import torch

        return bool(dtype == torch.int64)
    if name == "jax":
        return bool(dtype == np.uint32 or dtype == np.uint64)
    if name == "mlx":
        import mlx.core as mx

        return bool(dtype == mx.uint64)
    return True


def difference(new: Any, old: Any) -> Any:
    """``new - old``: in float32 for 16-bit floating arrays, else in their dtype."""
    xp = namespace(new)
    if getattr(new.dtype, "itemsize", None) == 2 or str(new.dtype).endswith(("float16", "bfloat16")):
        return finalize(xp.astype(new, xp.float32) - xp.astype(old, xp.float32))
    return finalize(new - old)


def no_grad(like: Any) -> Any:
    """``torch.no_grad()`` when ``like`` (a leaf of the trees at hand) is a torch tensor, else
    a null context."""
    if library_name(like) == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def module_grads(model: Any) -> dict[str, Any]:
    """The gradients of a ``torch.nn.Module``, keyed like ``model.named_parameters()``.

    Parameters without a gradient (frozen, or unused in the loss) are left out, so they get no
    optimizer state, as with MLX's ``nn.value_and_grad``.
    """
    if not _is_torch_module(model):
        raise TypeError(
            f"module_grads expects a torch.nn.Module, got {type(model).__name__}; for other "
            "models compute the gradient tree with your framework (jax.grad, nn.value_and_grad)"
        )
    return {
        name: p.grad
        for name, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def _is_torch_module(model: Any) -> bool:
    for cls in type(model).__mro__:
        if cls.__name__ == "Module" and cls.__module__ == "torch.nn.modules.module":
            return True
    return False


def model_parameters(model: Any) -> Any:
    """The parameter tree of ``model`` as the optimizer sees it.

    A ``torch.nn.Module`` gives ``dict(model.named_parameters())`` (flat, dotted keys); any
    other model is its own tree (dicts, lists, MLX modules).
    """
    if _is_torch_module(model):
        return dict(model.named_parameters())
    return model


def _store_leaf(old: Any, new: Any) -> Any:
    lib = library_name(old)
    if lib == "torch" and library_name(new) == "torch":
        if old.shape == new.shape and old.dtype == new.dtype and old.device == new.device:
            import torch

            with torch.no_grad():
                old.copy_(new)
            return old
        return new
    if (
        type(old) is np.ndarray
        and type(new) is np.ndarray
        and old.flags.writeable
        and old.shape == new.shape
        and old.dtype == new.dtype
    ):
        np.copyto(old, new)
        return old
    return new


from ._execute import run_elementwise, run_reference  # noqa: E402  (uses the helpers above)
