"""Self-describing checkpoints: the whole optimizer in one safetensors file.

``save(path, optimizer)`` writes the state arrays under the same names as MLX's recipe
(``tree_flatten(optimizer.state)``), so MLX and plain safetensors readers can still load them,
and adds JSON metadata: the anyoptim version, the optimizer class and hyperparameters, the
schedules, and the exact tree structure (tuples, empty sub-trees, digit keys survive).
``load(path)`` rebuilds the complete optimizer. Files are written atomically (temporary file,
then rename) and loading validates everything before it changes anything; no code is ever
executed from a file (no pickle, schedules are described by name and arguments).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import _backend
from . import optimizers as _optimizers
from ._backend import _io, _numpy_pack
from .errors import CheckpointError
from .optimizers import (
    SGD,
    AdaDelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    MultiOptimizer,
    Muon,
    Optimizer,
    RMSprop,
)
from .optimizers import _guards as _guard_classes
from .optimizers._accumulate import GradientAccumulation
from .optimizers._average import EMA, SWA
from .optimizers._lookahead import Lookahead
from .optimizers._wrapper import INNER, Wrapper
from .schedulers import from_spec
from .utils import tree_flatten, tree_unflatten

__all__ = ["load", "load_params", "load_state", "read_metadata", "save"]

FORMAT = "anyoptim.checkpoint"
FORMAT_VERSION = "1"
PARAMS_PREFIX = "__params__"

_CLASSES: dict[str, type[Optimizer]] = {
    cls.__name__: cls
    for cls in (SGD, RMSprop, Adagrad, AdaDelta, Adam, AdamW, Adamax, Lion, Adafactor, Muon)
}
# ... and every other optimizer class that anyoptim.optimizers exports (newer optimizers are
# saved and loaded without a change here)
_CLASSES.update({
    cls.__name__: cls
    for cls in (getattr(_optimizers, name) for name in _optimizers.__all__)
    if isinstance(cls, type) and issubclass(cls, Optimizer) and cls not in (Optimizer, MultiOptimizer)
})

#: the wrappers (optimizers around an optimizer) anyoptim.save can describe
_WRAPPERS: dict[str, type[Wrapper]] = {
    cls.__name__: cls
    for cls in (GradientAccumulation, EMA, SWA, Lookahead, _guard_classes.ClipByValue,
                _guard_classes.ClipByGlobalNorm, _guard_classes.ClipByTensorNorm,
                _guard_classes.ClipByBlockRMS,
                _guard_classes.AdaptiveGradClip, _guard_classes.ZeroNaNs,
                _guard_classes.ApplyIfFinite)
}

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- tree encoding
def _encode(tree: Any, name: str, arrays: dict[str, Any], where: str) -> Any:
    """A JSON description of ``tree``; array leaves are stored in ``arrays`` under ``name``."""
    if isinstance(tree, Mapping):
        items = []
        for key, value in tree.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where}: cannot save dict key {key!r} (use str or int keys)")
            child = f"{name}.{key}" if name else str(key)
            items.append([key, _encode(value, child, arrays, where)])
        return {"dict": items}
    if isinstance(tree, (list, tuple)):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return {kind: [_encode(v, f"{name}.{i}" if name else str(i), arrays, where)
                       for i, v in enumerate(tree)]}
    if _backend.library_name(tree) is not None:
        if name in arrays:
            raise ValueError(
                f"{where}: two entries flatten to the same name {name!r} (a key containing "
                "'.'?); rename one of them"
            )
        arrays[name] = tree
        return {"array": name}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return {"value": tree}
    raise TypeError(
        f"{where}: cannot save {type(tree).__name__} at {name!r}: only arrays, numbers, strings "
        "and None can be stored"
    )


def _decode(node: Any, arrays: dict[str, Any], used: set[str], path: str) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError(f"malformed tree description at {path or '<root>'!r}")
    ((kind, body),) = node.items()
    if kind == "dict":
        out = {}
        for key, child in body:
            out[key] = _decode(child, arrays, used, f"{path}.{key}" if path else str(key))
        return out
    if kind in ("list", "tuple"):
        items = [_decode(c, arrays, used, f"{path}.{i}" if path else str(i))
                 for i, c in enumerate(body)]
        return items if kind == "list" else tuple(items)
    if kind == "array":
        if body not in arrays:
            raise CheckpointError(f"the tensor for {path!r} ({body!r}) is missing from the file")
        used.add(body)
        return arrays[body]
    if kind == "value":
        return body
    raise CheckpointError(f"unknown node kind {kind!r} at {path!r}")


# --------------------------------------------------------------------------- optimizer description
def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"hyperparameter value {value!r:.60} is not a number, string or list")


def describe(optimizer: Optimizer) -> dict[str, Any]:
    """A JSON-able description of an optimizer: class, hyperparameters, schedules."""
    if isinstance(optimizer, MultiOptimizer):
        return {
            "class": "MultiOptimizer",
            "optimizers": [describe(o) for o in optimizer.optimizers],
        }
    if isinstance(optimizer, Wrapper) and _WRAPPERS.get(type(optimizer).__name__) is type(optimizer):
        desc = optimizer.describe(describe)
        desc["hyperparameters"] = {k: _json_value(v) for k, v in desc["hyperparameters"].items()}
        return desc
    cls = type(optimizer)
    if _CLASSES.get(cls.__name__) is not cls:
        raise TypeError(
            f"cannot describe {cls.__module__}.{cls.__qualname__}: only anyoptim's built-in "
            "optimizers can be saved with anyoptim.save; save the state with the MLX recipe "
            "(tree_flatten(optimizer.state)) instead"
        )
    hyper = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name in ("self", "learning_rate"):
            continue
        hyper[name] = _json_value(getattr(optimizer, name))
    schedules = {}
    for name, fn in optimizer._schedulers.items():
        schedules[name] = getattr(fn, "spec", None) or {"custom": getattr(fn, "__qualname__", "?")}
    desc = {"class": cls.__name__, "hyperparameters": hyper, "schedules": schedules}
    if optimizer.groups:
        desc["groups"] = [g.describe() for g in optimizer.groups]
    if optimizer.state_dtype is not None:
        desc["state_dtype"] = optimizer.state_dtype
    if optimizer.stochastic_rounding:
        desc["stochastic_rounding"] = True  # a test's source of bits is not stored
    return desc


def _build(desc: Any, schedules: Mapping[str, Callable] | None, filters: Any) -> Optimizer:
    if not isinstance(desc, dict) or "class" not in desc:
        raise CheckpointError("malformed optimizer description")
    if desc["class"] == "MultiOptimizer":
        subs = [_build(d, None, None) for d in desc.get("optimizers", [])]
        if filters is None:
            raise CheckpointError(
                f"this checkpoint holds a MultiOptimizer of {len(subs)} optimizers; its filters "
                f"are Python functions and are not saved: pass filters=[...] ({len(subs) - 1} "
                "of them) to load()"
            )
        return MultiOptimizer(subs, list(filters))
    wrapper = _WRAPPERS.get(desc["class"])
    if wrapper is not None:
        inner = _build(desc.get("optimizer"), schedules, filters)
        hyper = dict(desc.get("hyperparameters", {}))
        if isinstance(hyper.get("axis"), list):
            hyper["axis"] = tuple(hyper["axis"])
        try:
            built = wrapper(inner, **hyper)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot rebuild {desc['class']}: {exc}") from None
        if desc.get("skip_nonfinite"):
            built.skip_nonfinite = True
        return built
    cls = _CLASSES.get(desc["class"])
    if cls is None:
        raise CheckpointError(
            f"unknown optimizer class {desc['class']!r}; known: {', '.join(sorted(_CLASSES))}"
        )
    kwargs = dict(desc.get("hyperparameters", {}))
    for name, spec in desc.get("schedules", {}).items():
        given = (schedules or {}).get(name)
        if given is not None:
            kwargs[name] = given
        elif "custom" in spec:
            raise CheckpointError(
                f"the {name!r} schedule is a custom function ({spec['custom']}) and cannot be "
                f"restored from the file; pass schedules={{{name!r}: fn}} to load()"
            )
        else:
            try:
                kwargs[name] = from_spec(spec)
            except ValueError as exc:
                raise CheckpointError(f"cannot rebuild the {name!r} schedule: {exc}") from None
    if "learning_rate" in inspect.signature(cls.__init__).parameters:
        # a placeholder: the saved state's learning_rate is restored afterwards
        kwargs.setdefault("learning_rate", None if cls is Adafactor else 0.0)
    try:
        made = cls(**kwargs)
        if desc.get("groups"):
            made.groups = [_optimizers.Group.from_description(g) for g in desc["groups"]]
        made.state_dtype = desc.get("state_dtype")
        made.stochastic_rounding = bool(desc.get("stochastic_rounding", False))
        return made
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot rebuild {cls.__name__}: {exc}") from None


# --------------------------------------------------------------------------- public API
def save(
    path: PathLike,
    optimizer: Optimizer,
    params: Any = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save the complete optimizer (and optionally the parameters) to one safetensors file.

    Args:
        path: the file to write. It is replaced atomically: a crash never leaves a partial file.
        optimizer: a built-in anyoptim optimizer (including MultiOptimizer).
        params: an optional parameter tree stored beside the state (read it with
            :func:`load_params`).
        metadata: optional extra string metadata (read it with :func:`read_metadata`).

    Example:
        >>> import numpy as np, anyoptim as optim, tempfile, os
        >>> opt = optim.Adam(learning_rate=optim.cosine_decay(1e-2, 100))
        >>> params = opt.apply_gradients({"w": np.ones(3, np.float32)}, {"w": np.zeros(3, np.float32)})
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
        >>> optim.save(path, opt, params)
        >>> restored = optim.load(path)
        >>> type(restored).__name__, int(restored.step)
        ('Adam', 1)
    """
    where = f"anyoptim.save({os.fspath(path)!r})"
    arrays: dict[str, Any] = {}
    tree = _encode(optimizer.state, "", arrays, where)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anyoptim_version": _version(),
        "optimizer": json.dumps(describe(optimizer)),
        "tree": json.dumps(tree),
    }
    if params is not None:
        meta["params_tree"] = json.dumps(_encode(params, PARAMS_PREFIX, arrays, where))
    libs = sorted({str(_backend.library_name(a)) for a in arrays.values()})
    if len(libs) > 1:
        raise TypeError(f"{where}: the arrays come from several libraries ({', '.join(libs)})")
    meta["library"] = libs[0] if libs else "numpy"
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{where}: metadata must map str to str, got {key!r}: {value!r:.60}")
        meta[f"user.{key}"] = value
    _io.write(path, arrays, meta)


def read_metadata(path: PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for plain files).

    Keys given as ``metadata=`` to :func:`save` come back without their ``user.`` prefix.
    """
    meta = _header(path).get("__metadata__") or {}
    return {k[5:] if k.startswith("user.") else k: v for k, v in meta.items()}


def _header(path: PathLike) -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint file: {os.fspath(path)!r}")
    try:
        return _io.read_header(path)
    except ValueError as exc:
        raise CheckpointError(f"{os.fspath(path)!r} is not a valid safetensors file: {exc}") from None


def _read_all(path: PathLike, library: str | None) -> tuple[dict[str, str], dict[str, Any]]:
    header = _header(path)
    meta = header.get("__metadata__") or {}
    try:
        _io.verify_checksum(path, required=meta.get("format") == FORMAT, header=header)
    except ValueError as exc:
        raise CheckpointError(f"{os.fspath(path)!r}: {exc}") from None
    lib = library or meta.get("library") or "numpy"
    try:
        arrays = _io.read(path, lib)
    except (TypeError, ValueError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {os.fspath(path)!r}: {exc}") from None
    except Exception as exc:  # e.g. safetensors' own SafetensorError
        raise CheckpointError(f"cannot read {os.fspath(path)!r}: {exc}") from None
    return meta, arrays


def _checked_meta(path: PathLike, meta: dict[str, str]) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{os.fspath(path)!r} has no anyoptim metadata (a plain state file, e.g. written "
            "with MLX's tree_flatten recipe): build the optimizer yourself and assign "
            "optimizer.state = anyoptim.io.load_state(path)"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{os.fspath(path)!r} uses checkpoint format version {meta.get('format_version')!r}; "
            f"this anyoptim ({_version()}) reads version {FORMAT_VERSION}"
        )


def load_state(path: PathLike, library: str | None = None) -> Any:
    """Read the optimizer state tree from a checkpoint or from a plain MLX-recipe state file.

    Args:
        path: the safetensors file.
        library: the array library to load into (``"numpy"``, ``"mlx"``, ``"torch"``, ``"jax"``,
            ``"cupy"``); default: the library recorded in the file, else NumPy.
    """
    meta, arrays = _read_all(path, library)
    if "tree" not in meta:
        return _as_read(tree_unflatten(list(arrays.items())))
    return _as_read(_decode_json(path, meta, "tree", arrays))


def _as_read(state: Any) -> Any:
    """A state tree just read from a file, made ready for use: canonical steps, and small
    NumPy entries laid out one block per entry (:mod:`._backend._numpy_pack`)."""
    state = _canonical_steps(state)
    _numpy_pack.pack_tree(state)
    return state


def _canonical_steps(state: Any) -> Any:
    """Give every ``step`` counter the dtype its (new) library counts in.

    A file written from torch holds an int64 step, from 32-bit JAX a uint32 one, from NumPy/MLX
    a uint64 one; PyTorch cannot add to unsigned tensors, and NumPy/MLX count in uint64. The
    value is kept, the dtype becomes the loading library's (as ``step`` gets on adoption).
    """
    if isinstance(state, dict):
        step: Any = state.get("step")
        if _backend.library_name(step) is not None and getattr(step, "ndim", None) == 0:
            host = _backend.host_scalar(int(step), np.uint64)
            state["step"] = _backend.to_library(host, step)
        for sub in state.get("states", ()) if isinstance(state.get("states"), list) else ():
            _canonical_steps(sub)
        if isinstance(state.get(INNER), dict):
            _canonical_steps(state[INNER])
    return state


def _decode_json(path: PathLike, meta: dict[str, str], key: str, arrays: dict[str, Any]) -> Any:
    try:
        node = json.loads(meta[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{os.fspath(path)!r}: metadata entry {key!r} is damaged ({exc})") from None
    try:
        return _decode(node, arrays, set(), "")
    except CheckpointError as exc:
        raise CheckpointError(f"{os.fspath(path)!r}: {exc}") from None


def load(
    path: PathLike,
    *,
    library: str | None = None,
    schedules: Mapping[str, Callable] | None = None,
    filters: Any = None,
    into: Optimizer | None = None,
    like: Any = None,
) -> Optimizer:
    """Rebuild the optimizer saved by :func:`save`; it resumes bit-identically.

    Args:
        path: the checkpoint file.
        library: array library for the state (default: the one recorded in the file).
        schedules: custom (non built-in) schedules by state name, e.g. ``{"learning_rate": fn}``.
        filters: the filters of a saved MultiOptimizer (functions are not saved).
        into: restore into this existing optimizer instead of building a new one (its class
            must match the file's).
        like: an optional parameter tree; every state array is checked against the matching
            parameter's shape before anything is restored.

    Raises:
        CheckpointError: the file is damaged, not an anyoptim checkpoint, or does not match.
    """
    meta, arrays = _read_all(path, library)
    _checked_meta(path, meta)
    try:
        desc = json.loads(meta["optimizer"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{os.fspath(path)!r}: optimizer description damaged ({exc})") from None
    state = _as_read(_decode_json(path, meta, "tree", arrays))
    if into is not None:
        if describe(into)["class"] != desc.get("class"):
            raise CheckpointError(
                f"{os.fspath(path)!r} holds optimizer state for {desc.get('class')}, cannot load it into "
                f"{type(into).__name__}"
            )
        optimizer = into
    else:
        optimizer = _build(desc, schedules, filters)
    if like is not None:
        _check_like(path, state, like, desc)
    _restore(optimizer, state, path)
    return optimizer


def _restore(optimizer: Optimizer, state: Any, path: PathLike) -> None:
    if isinstance(optimizer, Wrapper):
        if not isinstance(state, dict) or not isinstance(state.get(INNER), dict):
            raise CheckpointError(
                f"{os.fspath(path)!r}: {type(optimizer).__name__} state has no 'inner' entry")
        _restore(optimizer.optimizer, state[INNER], path)
        inner = optimizer.optimizer.state
        optimizer.state = {**state, INNER: inner}
        return
    if isinstance(optimizer, MultiOptimizer):
        states = state.get("states") if isinstance(state, dict) else None
        if not isinstance(states, list) or len(states) != len(optimizer.optimizers):
            raise CheckpointError(f"{os.fspath(path)!r}: MultiOptimizer state does not match")
        for sub, sub_state in zip(optimizer.optimizers, states):
            sub.state = sub_state
        return
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{os.fspath(path)!r}: the state has no 'step' entry")
    optimizer.state = state


def _check_like(path: PathLike, state: Any, like: Any, desc: Any) -> None:
    cls = desc.get("class") if isinstance(desc, dict) else None
    if cls == "MultiOptimizer":
        return
    if cls in _WRAPPERS and isinstance(state, dict):
        shapes = {name: tuple(param.shape) for name, param in tree_flatten(like)}
        for key, value in state.items():
            if key == INNER or not isinstance(value, (dict, list, tuple)):
                continue
            for name, leaf in tree_flatten(value):
                shape = tuple(getattr(leaf, "shape", ()))
                if name in shapes and shape != shapes[name]:
                    raise CheckpointError(
                        f"{os.fspath(path)!r}: state {key}.{name} has shape {shape} but the "
                        f"parameter {name} has shape {shapes[name]}"
                    )
        _check_like(path, state.get(INNER), like, desc.get("optimizer"))
        return
    flat_state = dict(tree_flatten(state))
    for name, param in tree_flatten(like):
        prefix = f"{name}."
        entries = {k[len(prefix):]: v for k, v in flat_state.items() if k.startswith(prefix)}
        for key, value in entries.items():
            shape = tuple(getattr(value, "shape", ()))
            pshape = tuple(param.shape)
            if len(shape) == len(pshape) and shape != pshape:
                raise CheckpointError(
                    f"{os.fspath(path)!r}: state {name}.{key} has shape {shape} but the "
                    f"parameter {name} has shape {pshape}"
                )


def load_params(path: PathLike, library: str | None = None) -> Any:
    """Read the parameter tree stored by ``save(path, optimizer, params)``."""
    meta, arrays = _read_all(path, library)
    _checked_meta(path, meta)
    if "params_tree" not in meta:
        raise CheckpointError(f"{os.fspath(path)!r} holds no parameters (saved without params=)")
    return _decode_json(path, meta, "params_tree", arrays)


def _version() -> str:
    from . import __version__

    return __version__
