"""Differential tests: anyoptim against the real ``mlx.optimizers`` (MLX 0.32.4).

Every optimizer configuration is built twice with the same arguments, once from
``mlx.optimizers`` (the reference) and once from ``anyoptim``, and both are driven through the
same random parameter tree and the same fresh random gradients for several steps. After EVERY
step the returned parameters and the whole flattened state (``tree_flatten(opt.state)``: keys
and their order, container structure, dtypes, values) are compared. Expected values always come
from MLX, never from anyoptim.

Axes covered:

* every optimizer, with hyperparameters that flip all of its switches (``CASES``);
* learning rates as a float and as every built-in schedule (``LR_KINDS``), each built with the
  factory of its own library;
* random nested trees (dict / list / tuple, 2-3 levels, empty ``{}`` and ``[]`` sub-trees,
  leaves of 0-d to 4-d, tall and wide matrices) from a seeded NumPy generator;
* anyoptim on NumPy float32 and on ``mx.array`` float32 against MLX float32 (``test_float32``);
  anyoptim on ``mx.array`` float16 / bfloat16 against MLX in the same dtype
  (``test_low_precision``); anyoptim on NumPy float64 against MLX float32 (``test_float64``);
  with numba installed the NumPy runs take anyoptim's fused kernels, so the per-leaf reference
  path is checked separately (``test_float32_numpy_reference_path``).

MultiOptimizer results are compared by path (MLX orders the keys by a set union). For trees on
which MLX's own ``MultiOptimizer.apply_gradients`` raises (a ``tree_merge`` limitation, see
``mlx_multi_merge_fails``) the reference is MLX's split and sub-optimizer updates merged by path.

Error measure. For an anyoptim array ``a`` and the MLX array ``b`` (both read as float64)::

    err = max_i |a_i - b_i| / (|b_i| + (atol / rtol) * scale),  scale = max(max|a|, max|b|)

and a comparison passes when ``err <= rtol``, i.e. ``|a - b| <= rtol*|b| + atol*scale``: a
relative tolerance plus an absolute floor scaled by the magnitude of the array, for elements
that are close to zero because of cancellation. ``pytest tests/test_differential_mlx.py -s -k
report`` runs a compact sweep and prints the largest ``err`` per optimizer and dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
mlx_optim = pytest.importorskip("mlx.optimizers")
from mlx.utils import tree_flatten as mlx_tree_flatten  # noqa: E402
from mlx.utils import tree_merge as mlx_tree_merge  # noqa: E402
from mlx.utils import tree_unflatten as mlx_tree_unflatten  # noqa: E402

import anyoptim as optim  # noqa: E402
from anyoptim import _backend as anyoptim_backend  # noqa: E402
from anyoptim.utils import tree_flatten  # noqa: E402

N_STEPS = 6

# --------------------------------------------------------------------------------------------
# Tolerances (see the module docstring for the error measure). Measured maxima are in the
# comments; every bound leaves headroom over them but stays dtype-appropriate.


@dataclasses.dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float  # absolute floor, as a fraction of the array's largest magnitude


TOLS = {
    # anyoptim float32 (NumPy or MLX arrays) vs MLX float32. Measured: 0 (bit-identical) for
    # most optimizers; largest 4.5e-6 (Adafactor on NumPy: NumPy's pairwise mean and 1/sqrt
    # vs MLX's rsqrt), 2.3e-7 (Adam bias correction on NumPy).
    "f32": Tol(rtol=2e-5, atol=1e-6),
    # anyoptim on MLX float16 / bfloat16 vs MLX in the same dtype: every optimizer but Muon
    # uses MLX's own operations in MLX's order and is bit-identical (measured 0); the bound is
    # about two ulps (2^-10 resp. 2^-7 relative) in case an operation is reordered.
    "f16": Tol(rtol=2e-3, atol=1e-3),
    "bf16": Tol(rtol=2e-2, atol=1e-2),
    # anyoptim float64 vs MLX float32: the difference is MLX's own float32 rounding, accumulated
    # over N_STEPS steps; measured up to 3.6e-5 (Adafactor), 2.1e-5 (Adam/Adamax/SGD state).
    "f64": Tol(rtol=1e-4, atol=1e-5),
}

# Muon's Newton-Schulz iteration amplifies rounding differences: each of the ns_steps
# iterations is a degree-5 matrix polynomial with coefficients up to 4.8 in magnitude. In float32
# and float64 the default bounds hold with a wide margin; in float16 / bfloat16 Muon (and the
# MultiOptimizer case that routes leaves to Muon) gets a looser bound, measured and explained here.
MUON_TOLS = {
    "f32": Tol(rtol=2e-5, atol=1e-6),  # measured 5.0e-6 (NumPy), 2.0e-6 (MLX arrays)
    # MLX computes ``b*A + c*(A@A)`` and ``a*X + B@X`` with the fused ``mx.addmm``; anyoptim
    # rounds the matmul, the scaling and the sum separately, which differs from addmm in the
    # last bit for almost every float16 / bfloat16 input, and Newton-Schulz amplifies that:
    # measured 2.9e-3 (~3 ulp) in float16 and 1.7e-2 (~2 ulp) in bfloat16 over 30 seeds x 3
    # learning rates x 4 configs (float32: 2e-6, well inside the default bound).
    "f16": Tol(rtol=5e-3, atol=2.5e-3),
    "bf16": Tol(rtol=4e-2, atol=2e-2),
    "f64": Tol(rtol=1e-4, atol=1e-5),  # measured 1.2e-5
}

# --------------------------------------------------------------------------------------------
# Learning rates: each kind is a function of the library (anyoptim or mlx.optimizers) so the
# schedule is built with that library's own factory, same arguments. Updates k = 1..N_STEPS use
# schedule(k - 1), so with N_STEPS = 6 every schedule is also evaluated past its end.

LR_KINDS: dict[str, Callable[[Any], Any]] = {
    "lr_float": lambda o: 0.05,
    "cosine_decay": lambda o: o.cosine_decay(0.1, 3, 0.01),
    "exponential_decay": lambda o: o.exponential_decay(0.1, 0.7),
    "join_warmup_cosine": lambda o: o.join_schedules(
        [o.linear_schedule(0.0, 0.1, 2), o.cosine_decay(0.1, 2, 0.02)], [2]
    ),
    "linear_schedule": lambda o: o.linear_schedule(0.1, 0.01, 3),
    "step_decay": lambda o: o.step_decay(0.1, 0.5, 2),
}


# --------------------------------------------------------------------------------------------
# Optimizer configurations. ``build(o, lr)`` gets the library module and a zero-argument callable
# returning a fresh learning rate (float or schedule) of the current kind.


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Any, Callable[[], Any]], Any]
    uses_lr: bool = True
    family: str = ""
    muon: bool = False  # routes (some) leaves through Muon's Newton-Schulz iteration

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.id.split("-", 1)[0])


def _bias(path: str, a: Any) -> bool:
    return "bias" in path


def _vector(path: str, a: Any) -> bool:
    return a.ndim == 1


def _matrix(path: str, a: Any) -> bool:
    return a.ndim >= 2


def _never(path: str, a: Any) -> bool:
    return False


def _at_least_1d(path: str, a: Any) -> bool:
    return a.ndim >= 1


CASES = [
    # SGD
    Case("SGD-plain", lambda o, lr: o.SGD(lr())),
    Case("SGD-mom0.9", lambda o, lr: o.SGD(lr(), momentum=0.9)),
    Case("SGD-mom0.9-damp0.3", lambda o, lr: o.SGD(lr(), momentum=0.9, dampening=0.3)),
    Case(
        "SGD-nesterov-mom0.8-wd0.01",
        lambda o, lr: o.SGD(lr(), momentum=0.8, weight_decay=0.01, nesterov=True),
    ),
    Case("SGD-wd0.1-nomom", lambda o, lr: o.SGD(lr(), weight_decay=0.1)),
    Case(
        "SGD-mom0.5-negdamp-negwd",
        lambda o, lr: o.SGD(lr(), momentum=0.5, dampening=-0.2, weight_decay=-0.05),
    ),
    # RMSprop
    Case("RMSprop-default", lambda o, lr: o.RMSprop(lr())),
    Case("RMSprop-alpha0.9-eps1e-3", lambda o, lr: o.RMSprop(lr(), alpha=0.9, eps=1e-3)),
    Case("RMSprop-alpha0", lambda o, lr: o.RMSprop(lr(), alpha=0.0)),
    # Adagrad
    Case("Adagrad-default", lambda o, lr: o.Adagrad(lr())),
    Case("Adagrad-eps1e-3", lambda o, lr: o.Adagrad(lr(), eps=1e-3)),
    # AdaDelta
    Case("AdaDelta-default", lambda o, lr: o.AdaDelta(lr())),
    Case("AdaDelta-rho0.5-eps1e-4", lambda o, lr: o.AdaDelta(lr(), rho=0.5, eps=1e-4)),
    Case("AdaDelta-rho0", lambda o, lr: o.AdaDelta(lr(), rho=0.0)),
    # Adam
    Case("Adam-default", lambda o, lr: o.Adam(lr())),
    Case("Adam-bc", lambda o, lr: o.Adam(lr(), bias_correction=True)),
    Case(
        "Adam-bc-betas0.8_0.95", lambda o, lr: o.Adam(lr(), betas=[0.8, 0.95], bias_correction=True)
    ),
    Case("Adam-betas0.5_0.9-eps1e-3", lambda o, lr: o.Adam(lr(), betas=(0.5, 0.9), eps=1e-3)),
    Case("Adam-betas0_0", lambda o, lr: o.Adam(lr(), betas=[0.0, 0.0])),
    Case("Adam-eps0", lambda o, lr: o.Adam(lr(), eps=0.0)),
    Case("Adam-eps0-bc", lambda o, lr: o.Adam(lr(), eps=0.0, bias_correction=True)),
    # AdamW
    Case("AdamW-default", lambda o, lr: o.AdamW(lr())),
    Case("AdamW-wd0.1-bc", lambda o, lr: o.AdamW(lr(), weight_decay=0.1, bias_correction=True)),
    Case("AdamW-wd0-betas0.8_0.9", lambda o, lr: o.AdamW(lr(), betas=[0.8, 0.9], weight_decay=0.0)),
    Case("AdamW-negwd", lambda o, lr: o.AdamW(lr(), weight_decay=-0.05)),
    Case(
        "AdamW-eps0-bc-betas0.5_0.99",
        lambda o, lr: o.AdamW(lr(), betas=[0.5, 0.99], eps=0.0, bias_correction=True),
    ),
    # Adamax
    Case("Adamax-default", lambda o, lr: o.Adamax(lr())),
    Case("Adamax-betas0.5_0.9-eps1e-4", lambda o, lr: o.Adamax(lr(), betas=[0.5, 0.9], eps=1e-4)),
    # Lion
    Case("Lion-default", lambda o, lr: o.Lion(lr())),
    Case("Lion-wd0.1", lambda o, lr: o.Lion(lr(), weight_decay=0.1)),
    Case("Lion-negwd-ignored", lambda o, lr: o.Lion(lr(), weight_decay=-0.1)),
    Case(
        "Lion-betas0.5_0.8-wd0.02", lambda o, lr: o.Lion(lr(), betas=[0.5, 0.8], weight_decay=0.02)
    ),
    # Adafactor (factored for ndim >= 2, incl. 3-D and 4-D leaves; non-factored for 0-d / 1-d)
    Case("Adafactor-default", lambda o, lr: o.Adafactor(), uses_lr=False),
    Case("Adafactor-warmup", lambda o, lr: o.Adafactor(warmup_init=True), uses_lr=False),
    Case("Adafactor-beta1_0.0", lambda o, lr: o.Adafactor(beta_1=0.0), uses_lr=False),
    Case(
        "Adafactor-beta1_0.9-wd0.1-clip0.5",
        lambda o, lr: o.Adafactor(beta_1=0.9, weight_decay=0.1, clip_threshold=0.5),
        uses_lr=False,
    ),
    Case(
        "Adafactor-decay-0.5-eps1e-3_1e-2",
        lambda o, lr: o.Adafactor(decay_rate=-0.5, eps=(1e-3, 1e-2)),
        uses_lr=False,
    ),
    Case(
        "Adafactor-warmup-beta1_0.5-clip2-noscale",
        lambda o, lr: o.Adafactor(
            warmup_init=True, beta_1=0.5, clip_threshold=2.0, scale_parameter=False
        ),
        uses_lr=False,
    ),
    # with a learning rate: stored and scheduled, but ignored while relative_step=True
    Case("Adafactor-lr-relative", lambda o, lr: o.Adafactor(lr())),
    Case("Adafactor-lr-absolute", lambda o, lr: o.Adafactor(lr(), relative_step=False)),
    Case(
        "Adafactor-lr-absolute-noscale-wd0.05",
        lambda o, lr: o.Adafactor(
            lr(), relative_step=False, scale_parameter=False, weight_decay=0.05
        ),
    ),
    Case(
        "Adafactor-lr-absolute-beta1_0.9-clip0.1",
        lambda o, lr: o.Adafactor(lr(), relative_step=False, beta_1=0.9, clip_threshold=0.1),
    ),
    # Muon (0-d, 1-d, tall / wide 2-d, 3-d and 4-d leaves are in every tree)
    Case("Muon-default", lambda o, lr: o.Muon(lr()), muon=True),
    Case(
        "Muon-nonesterov-wd0-ns3",
        lambda o, lr: o.Muon(lr(), nesterov=False, weight_decay=0.0, ns_steps=3),
        muon=True,
    ),
    Case(
        "Muon-mom0.8-wd0.1-ns1",
        lambda o, lr: o.Muon(lr(), momentum=0.8, weight_decay=0.1, ns_steps=1),
        muon=True,
    ),
    Case("Muon-mom0-ns0", lambda o, lr: o.Muon(lr(), momentum=0.0, ns_steps=0), muon=True),
    # MultiOptimizer
    Case("Multi-single", lambda o, lr: o.MultiOptimizer([o.Adam(lr())])),
    Case(
        "Multi2-bias",
        lambda o, lr: o.MultiOptimizer(
            [o.Adam(lr(), bias_correction=True), o.SGD(lr(), momentum=0.9)], [_bias]
        ),
    ),
    Case(
        "Multi3-bias-vector-Muon",
        lambda o, lr: o.MultiOptimizer(
            [o.Lion(lr(), weight_decay=0.1), o.AdamW(lr()), o.Muon(lr())], [_bias, _vector]
        ),
        muon=True,
    ),
    Case(
        "Multi3-matrix-Adafactor",
        lambda o, lr: o.MultiOptimizer(
            [o.Adafactor(beta_1=0.9), o.RMSprop(0.01), o.SGD(lr(), momentum=0.5)], [_matrix, _bias]
        ),
    ),
    # overlapping filters: the first match wins, so the middle optimizer never gets a leaf
    Case(
        "Multi3-overlap-firstwins",
        lambda o, lr: o.MultiOptimizer(
            [o.Adam(lr()), o.Lion(lr()), o.SGD(lr(), momentum=0.9)], [_at_least_1d, _matrix]
        ),
    ),
    Case(
        "Multi2-emptypart",
        lambda o, lr: o.MultiOptimizer([o.Adagrad(lr()), o.Adamax(lr())], [_never]),
    ),
]
for _case in CASES:
    if _case.id.startswith("Multi"):
        object.__setattr__(_case, "family", "MultiOptimizer")

# --------------------------------------------------------------------------------------------
# Random trees.

_KEYS = ("weight", "bias", "w", "scale", "emb", "proj", "out_bias", "gamma", "kernel")


def _leaf_shapes(rng: np.random.Generator) -> list[tuple[int, ...]]:
    """One leaf of each kind that matters (0-d, 1-d, tall, wide, 3-d, 4-d) plus a few random."""
    rows = int(rng.integers(3, 6))
    cols = int(rng.integers(3, 6))
    shapes = [
        (),
        (int(rng.integers(1, 6)),),
        (rows, int(rng.integers(1, rows))),  # tall
        (int(rng.integers(1, cols)), cols),  # wide
        tuple(int(d) for d in rng.integers(1, 4, size=3)),
        tuple(int(d) for d in rng.integers(1, 4, size=4)),
    ]
    for _ in range(int(rng.integers(1, 4))):
        ndim = int(rng.integers(0, 5))
        hi = 5 if ndim <= 2 else 3
        shapes.append(tuple(int(d) for d in rng.integers(1, hi + 1, size=ndim)))
    order = rng.permutation(len(shapes))
    return [shapes[i] for i in order]


def _container(rng: np.random.Generator, leaves: list[np.ndarray], depth: int) -> Any:
    kind = int(rng.integers(3))
    items: list[Any] = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        if depth < 3 and r < 0.3 and leaves:
            items.append(_container(rng, leaves, depth + 1))
        elif r < 0.4:
            items.append({} if rng.random() < 0.5 else [])  # empty sub-tree
        elif leaves:
            items.append(leaves.pop())
    if kind == 0:
        return {f"{_KEYS[int(rng.integers(len(_KEYS)))]}{i}": v for i, v in enumerate(items)}
    return items if kind == 1 else tuple(items)


def random_tree(seed: int) -> dict[str, Any]:
    """A random float32 NumPy parameter tree, nested 2-3 levels, with empty sub-trees."""
    rng = np.random.default_rng(seed)
    leaves = [np.asarray(rng.standard_normal(s), dtype=np.float32) for s in _leaf_shapes(rng)]
    tree: dict[str, Any] = {}
    i = 0
    while leaves:
        key = f"{_KEYS[int(rng.integers(len(_KEYS)))]}_{i}"
        tree[key] = leaves.pop() if rng.random() < 0.4 else _container(rng, leaves, 2)
        i += 1
    # empty sub-trees at the top level, at random positions
    items = list(tree.items())
    for key, empty in (("relu", {}), ("dropout", [])):
        items.insert(int(rng.integers(len(items) + 1)), (key, empty))
    return dict(items)


def _map(fn: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map(fn, v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(_map(fn, v) for v in tree)
    return fn(tree)


def random_grads(rng: np.random.Generator, params: Any, away_from_zero: bool) -> Any:
    """Fresh float32 NumPy gradients with the structure of ``params``.

    ``away_from_zero`` draws magnitudes in [0.1, 1] (random sign) so that float16's underflow
    of the default eps (spec §9) cannot turn a tiny gradient into 0/0 or x/0.
    """

    def draw(p: np.ndarray) -> np.ndarray:
        if away_from_zero:
            g = rng.uniform(0.1, 1.0, p.shape) * rng.choice([-1.0, 1.0], p.shape)
        else:
            g = 0.5 * rng.standard_normal(p.shape)
        return np.asarray(g, dtype=np.float32)

    return _map(draw, params)


def structure(tree: Any) -> Any:
    """The container skeleton of a tree: types, keys and order, with leaves as '*'."""
    if isinstance(tree, dict):
        return ("dict", tuple((k, structure(v)) for k, v in tree.items()))
    if isinstance(tree, list):
        return ("list", tuple(structure(v) for v in tree))
    if isinstance(tree, tuple):
        return ("tuple", tuple(structure(v) for v in tree))
    return "*"


# --------------------------------------------------------------------------------------------
# Backends and comparisons.

_MX_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def to_mlx(tree: Any, dtype: str = "f32") -> Any:
    mdt = getattr(mx, _MX_DTYPES[dtype])
    return _map(lambda a: mx.array(a).astype(mdt), tree)


def dtype_name(x: Any) -> str:
    if isinstance(x, mx.array):
        return str(x.dtype).rsplit(".", 1)[-1]
    return np.asarray(x).dtype.name


def to_f64(x: Any) -> np.ndarray:
    if isinstance(x, mx.array):
        if x.dtype in (mx.float16, mx.bfloat16):
            x = x.astype(mx.float32)
        return np.array(x).astype(np.float64)
    return np.asarray(x).astype(np.float64)


@dataclasses.dataclass
class _Stat:
    max_err: float = 0.0
    comparisons: int = 0
    cases: int = 0
    worst: str = ""


# Module-level collector: (optimizer family, label) -> largest error seen, printed by the report
# test. Recording only; nothing is printed elsewhere.
COLLECTOR: dict[tuple[str, str], _Stat] = {}


def _record(key: tuple[str, str], err: float, where: str) -> None:
    stat = COLLECTOR.setdefault(key, _Stat())
    stat.comparisons += 1
    if err > stat.max_err:
        stat.max_err = err
        stat.worst = where


def close(a: Any, b: Any, tol: Tol, where: str, key: tuple[str, str]) -> None:
    """Assert that anyoptim's ``a`` matches MLX's ``b`` (shape, finiteness, values)."""
    assert tuple(a.shape) == tuple(b.shape), f"{where}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    a64, b64 = to_f64(a), to_f64(b)
    assert np.all(np.isfinite(b64)), f"{where}: the MLX reference is not finite (bad test data)"
    assert np.all(np.isfinite(a64)), f"{where}: anyoptim gave non-finite values {a64}"
    if a64.size == 0:
        return
    diff = np.abs(a64 - b64)
    scale = max(float(np.max(np.abs(a64))), float(np.max(np.abs(b64))))
    denom = np.abs(b64) + (tol.atol / tol.rtol) * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / denom)
    err = float(np.max(ratio))
    _record(key, err, where)
    assert err <= tol.rtol, (
        f"{where}: error {err:.3g} > rtol {tol.rtol:g} (atol {tol.atol:g} x max|.| {scale:.3g})\n"
        f"anyoptim: {a64.ravel()[:8]}\nMLX:      {b64.ravel()[:8]}"
    )


def compare_state(
    any_state: dict[str, Any],
    ref_state: dict[str, Any],
    *,
    tol: Tol,
    key: tuple[str, str],
    where: str,
    array_type: type | None,
    leaf_dtype: str | None,
) -> None:
    """The whole flattened state: same keys in MLX's order, same structure, dtypes, values."""
    ref_flat = mlx_tree_flatten(ref_state)
    any_flat = tree_flatten(any_state)
    assert [k for k, _ in any_flat] == [k for k, _ in ref_flat], f"{where}: state keys differ"
    assert structure(any_state) == structure(ref_state), f"{where}: state structure differs"
    for (name, a), (_, b) in zip(any_flat, ref_flat, strict=True):
        here = f"{where} state[{name!r}]"
        if array_type is not None:
            assert isinstance(a, array_type), f"{here}: {type(a).__name__} is not {array_type}"
        is_scalar = name.rsplit(".", 1)[-1] in ("step", "learning_rate")
        expected_dtype = dtype_name(b) if is_scalar or leaf_dtype is None else leaf_dtype
        assert dtype_name(a) == expected_dtype, f"{here}: dtype {dtype_name(a)} != {expected_dtype}"
        if name.rsplit(".", 1)[-1] == "step":
            assert tuple(a.shape) == () and int(a) == int(b), f"{here}: {int(a)} != {int(b)}"
        else:
            close(a, b, tol, here, key)


def compare_params(
    any_params: Any,
    ref_params: Any,
    *,
    tol: Tol,
    key: tuple[str, str],
    where: str,
    by_path: bool,
    array_type: type,
    leaf_dtype: str | None,
) -> None:
    ref_flat = mlx_tree_flatten(ref_params)
    any_flat = tree_flatten(any_params)
    if by_path:
        # MultiOptimizer: MLX's result key order comes from a set union (arbitrary)
        ref_map, any_map = dict(ref_flat), dict(any_flat)
        assert sorted(any_map) == sorted(ref_map), f"{where}: parameter paths differ"
        pairs = [(k, any_map[k], ref_map[k]) for k in sorted(ref_map)]
    else:
        assert structure(any_params) == structure(ref_params), f"{where}: result structure differs"
        pairs = [(k, a, b) for (k, a), (_, b) in zip(any_flat, ref_flat, strict=True)]
    for name, a, b in pairs:
        here = f"{where} param[{name!r}]"
        assert isinstance(a, array_type), f"{here}: {type(a).__name__} is not {array_type}"
        expected = leaf_dtype or dtype_name(b)
        assert dtype_name(a) == expected, f"{here}: dtype {dtype_name(a)} != {expected}"
        close(a, b, tol, here, key)


def mlx_multi_merge_fails(ref_opt: Any, tree: Any) -> bool:
    """True when MLX's own ``MultiOptimizer.apply_gradients`` cannot merge its parts.

    MLX merges the sub-optimizers' results with ``tree_merge``, and the parts come from
    ``tree_unflatten``, which pads list positions owned by another part with ``{}``. When one
    part's list is padded beyond the end of another part's list, ``tree_merge`` meets
    ``({}, missing)`` = ``(None, None)`` and raises ``ValueError("Trees contain elements at the
    same locations ...")`` (MLX 0.32.4 limitation; e.g. ``{"l": [matrix, {}, vector]}`` with
    the vector routed to the first optimizer). The results have the structure of the parts, so
    folding ``tree_merge`` over the parts predicts the failure without touching any state.
    """
    try:
        functools.reduce(mlx_tree_merge, ref_opt._split_dictionary(tree), {})
    except ValueError:
        return True
    return False


def mlx_multi_apply_by_parts(ref_opt: Any, grads: Any, params: Any) -> Any:
    """MLX's ``MultiOptimizer.apply_gradients`` with the final merge done by path.

    Same split (MLX's own ``_split_dictionary``) and the same sub-optimizer calls, in order; only
    the ``tree_merge`` bookkeeping that MLX 0.32.4 gets wrong is replaced by a merge of the
    flattened results. The maths is entirely MLX's.
    """
    flat: dict[str, Any] = {}
    for sub, part in zip(ref_opt.optimizers, ref_opt._split_dictionary(grads), strict=True):
        flat.update(mlx_tree_flatten(sub.apply_gradients(part, params)))
    return mlx_tree_unflatten(list(flat.items()))


# Labels: which anyoptim inputs are compared with which MLX run.
#   label       anyoptim inputs          MLX reference   tolerance
#   "f32-numpy" takes anyoptim's default NumPy path: with numba installed, the fused kernels
#   (from the second update on, for SGD, RMSprop, Adagrad, AdaDelta, Adam(W), Adamax, Lion);
#   "f32-numpy-ref" switches them off and checks the reference (per-leaf) path.
LABELS = {
    "f32-numpy": ("numpy", "f32", "f32"),
    "f32-numpy-ref": ("numpy", "f32", "f32"),
    "f32-mlx": ("mlx", "f32", "f32"),
    "f16-mlx": ("mlx", "f16", "f16"),
    "bf16-mlx": ("mlx", "bf16", "bf16"),
    "f64-numpy": ("numpy", "f64", "f32"),
}


def run_case(case: Case, lr_kind: str, seed: int, label: str, steps: int = N_STEPS) -> None:
    # MLX on its CPU stream everywhere (on macOS the default device is the GPU), so that the
    # measured tolerances apply on every platform.
    with contextlib.ExitStack() as stack:
        stack.enter_context(mx.stream(mx.cpu))
        if label.endswith("-ref"):
            stack.enter_context(
                mock.patch.object(anyoptim_backend, "fused_numpy_available", lambda: False)
            )
        _run_case(case, lr_kind, seed, label, steps)


def _run_case(case: Case, lr_kind: str, seed: int, label: str, steps: int) -> None:
    backend, any_dtype, ref_dtype = LABELS[label]
    tol = (MUON_TOLS if case.muon else TOLS)[any_dtype]
    key = (case.family, label)
    COLLECTOR.setdefault(key, _Stat()).cases += 1
    low_precision = any_dtype in ("f16", "bf16")

    def lr_for(lib: Any) -> Callable[[], Any]:
        return (lambda: LR_KINDS[lr_kind](lib)) if case.uses_lr else (lambda: None)

    ref_opt = case.build(mlx_optim, lr_for(mlx_optim))
    any_opt = case.build(optim, lr_for(optim))

    def to_any(tree: Any) -> Any:
        if backend == "mlx":
            return to_mlx(tree, any_dtype)
        if any_dtype == "f64":
            return _map(lambda a: a.astype(np.float64), tree)
        return _map(np.array, tree)  # fresh copies

    params_np = random_tree(seed)
    ref_params = to_mlx(params_np, ref_dtype)
    any_params = to_any(params_np)
    array_type = mx.array if backend == "mlx" else np.ndarray
    leaf_dtype = "float64" if any_dtype == "f64" else None
    grad_rng = np.random.default_rng(10_000 + seed)

    ref_apply = ref_opt.apply_gradients
    tag = ""
    if case.family == "MultiOptimizer" and mlx_multi_merge_fails(ref_opt, ref_params):
        ref_apply = functools.partial(mlx_multi_apply_by_parts, ref_opt)
        tag = " (MLX tree_merge limitation: reference merged by path)"
    where = f"[{case.id} {lr_kind} seed={seed} {label}{tag}] before any update"
    compare_state(
        any_opt.state,
        ref_opt.state,
        tol=tol,
        key=key,
        where=where,
        array_type=None,
        leaf_dtype=leaf_dtype,
    )
    for step in range(1, steps + 1):
        grads_np = random_grads(grad_rng, params_np, away_from_zero=low_precision)
        ref_params = ref_apply(to_mlx(grads_np, ref_dtype), ref_params)
        any_params = any_opt.apply_gradients(to_any(grads_np), any_params)
        mx.eval(ref_params, ref_opt.state)
        where = f"[{case.id} {lr_kind} seed={seed} {label}{tag}] step {step}"
        compare_params(
            any_params,
            ref_params,
            tol=tol,
            key=key,
            where=where,
            by_path=case.family == "MultiOptimizer",
            array_type=array_type,
            leaf_dtype=leaf_dtype,
        )
        compare_state(
            any_opt.state,
            ref_opt.state,
            tol=tol,
            key=key,
            where=where,
            array_type=array_type,
            leaf_dtype=leaf_dtype,
        )


# --------------------------------------------------------------------------------------------
# Parametrization.


def _lr_kinds(case: Case, kinds: list[str]) -> list[str]:
    return kinds if case.uses_lr else ["no_lr"]


def _params(kinds: list[str], seeds: list[int], labels: list[str]) -> list[Any]:
    out = []
    for case in CASES:
        for k, lr_kind in enumerate(_lr_kinds(case, kinds)):
            for s in seeds:
                seed = 2 * k + s  # a different tree for every learning-rate kind
                for label in labels:
                    out.append(
                        pytest.param(
                            case, lr_kind, seed, label, id=f"{label}-{case.id}-{lr_kind}-seed{seed}"
                        )
                    )
    return out


ALL_KINDS = list(LR_KINDS)


@pytest.mark.parametrize(
    ("case", "lr_kind", "seed", "label"), _params(ALL_KINDS, [0, 1], ["f32-numpy", "f32-mlx"])
)
def test_float32(case: Case, lr_kind: str, seed: int, label: str) -> None:
    run_case(case, lr_kind, seed, label)


@pytest.mark.parametrize(
    ("case", "lr_kind", "seed", "label"),
    _params(["lr_float", "step_decay"], [0], ["f32-numpy-ref"]),
)
def test_float32_numpy_reference_path(case: Case, lr_kind: str, seed: int, label: str) -> None:
    """As test_float32 on NumPy, with the fused NumPy kernels switched off."""
    run_case(case, lr_kind, seed, label)


@pytest.mark.parametrize(
    ("case", "lr_kind", "seed", "label"),
    _params(["lr_float", "join_warmup_cosine"], [0], ["f16-mlx", "bf16-mlx"]),
)
def test_low_precision(case: Case, lr_kind: str, seed: int, label: str) -> None:
    run_case(case, lr_kind, seed, label)


@pytest.mark.parametrize(
    ("case", "lr_kind", "seed", "label"),
    _params(["lr_float", "cosine_decay"], [0], ["f64-numpy"]),
)
def test_float64(case: Case, lr_kind: str, seed: int, label: str) -> None:
    run_case(case, lr_kind, seed, label)


def test_trees_cover_the_required_shapes() -> None:
    """The generator really produces what the differential tests rely on."""
    for seed in range(12):
        tree = random_tree(seed)
        shapes = [tuple(a.shape) for _, a in tree_flatten(tree)]
        assert {len(s) for s in shapes} >= {0, 1, 2, 3, 4}
        assert any(len(s) == 2 and s[0] > s[1] for s in shapes)  # tall
        assert any(len(s) == 2 and s[0] < s[1] for s in shapes)  # wide
        assert tree["relu"] == {} and tree["dropout"] == []
        assert all(max(s, default=1) <= 5 for s in shapes)
    kinds = set()

    def walk(t: Any, depth: int) -> None:
        kinds.add(
            (type(t).__name__, depth, len(t) == 0 if isinstance(t, (dict, list, tuple)) else None)
        )
        if isinstance(t, dict):
            for v in t.values():
                walk(v, depth + 1)
        elif isinstance(t, (list, tuple)):
            for v in t:
                walk(v, depth + 1)

    for seed in range(12):
        walk(random_tree(seed), 0)
    types = {k[0] for k in kinds}
    assert {"dict", "list", "tuple", "ndarray"} <= types
    assert max(k[1] for k in kinds if k[0] == "ndarray") >= 3  # leaves nested 3 levels deep
    assert ("tuple", 2, False) in kinds or ("tuple", 3, False) in kinds


def test_multioptimizer_tree_mlx_cannot_merge() -> None:
    """A tree that MLX's own MultiOptimizer rejects; anyoptim handles it and matches MLX's maths.

    ``{"l": [matrix, {}, vector]}`` (think ``Sequential(Linear, ReLU, ...)``) with vectors routed
    to the first optimizer gives the parts ``{"l": [{}, {}, v]}`` and ``{"l": [M]}``; merging the
    results pairs the padding ``{}`` at index 1 with nothing, i.e. ``tree_merge(None, None)``,
    which raises in MLX 0.32.4. The reference is MLX's split and sub-optimizer updates.
    """
    rng = np.random.default_rng(7)
    params_np = {
        "l": [
            rng.standard_normal((3, 2)).astype(np.float32),
            {},
            rng.standard_normal(4).astype(np.float32),
        ]
    }
    grads_np = random_grads(rng, params_np, away_from_zero=False)

    def build(o: Any) -> Any:
        return o.MultiOptimizer([o.Adam(0.1), o.Muon(0.1)], [_vector])

    with pytest.raises(ValueError, match="same locations"):
        build(mlx_optim).apply_gradients(to_mlx(grads_np), to_mlx(params_np))

    ref_opt = build(mlx_optim)
    assert mlx_multi_merge_fails(ref_opt, to_mlx(params_np))
    ref = mlx_multi_apply_by_parts(ref_opt, to_mlx(grads_np), to_mlx(params_np))
    for backend in ("numpy", "mlx"):
        any_opt = build(optim)
        conv = to_mlx if backend == "mlx" else (lambda t: _map(np.array, t))
        out = any_opt.apply_gradients(conv(grads_np), conv(params_np))
        assert structure(out) == structure(params_np)
        key = ("MultiOptimizer", f"f32-{backend}")
        compare_params(
            out,
            ref,
            tol=MUON_TOLS["f32"],
            key=key,
            where=f"tree_merge case {backend}",
            by_path=True,
            array_type=mx.array if backend == "mlx" else np.ndarray,
            leaf_dtype=None,
        )
        compare_state(
            any_opt.state,
            ref_opt.state,
            tol=MUON_TOLS["f32"],
            key=key,
            where=f"tree_merge case {backend}",
            array_type=mx.array if backend == "mlx" else np.ndarray,
            leaf_dtype=None,
        )


def test_report_max_errors() -> None:
    """Compact sweep over every case and dtype; prints the largest error per optimizer.

    Run with ``pytest tests/test_differential_mlx.py -s -k report``. In a full run of this file
    it comes last and the table covers every comparison made in the session.
    """
    kinds = ALL_KINDS
    for i, case in enumerate(CASES):
        lr_kind = kinds[i % len(kinds)] if case.uses_lr else "no_lr"
        for label in LABELS:
            run_case(case, lr_kind, 100 + i, label)

    families = sorted({fam for fam, _ in COLLECTOR})
    lines = ["", "largest error per optimizer (err <= rtol passes; cases / comparisons)"]
    lines.append(f"{'optimizer':<15}" + "".join(f"{label:>24}" for label in LABELS))
    for fam in families:
        row = f"{fam:<15}"
        for label in LABELS:
            stat = COLLECTOR.get((fam, label))
            row += (
                f"{'-':>24}"
                if stat is None
                else (f"{stat.max_err:>10.2e} ({stat.cases:>3}/{stat.comparisons:>5})").rjust(24)
            )
        lines.append(row)
    for name, tols in (("tolerances", TOLS), ("Muon tolerances", MUON_TOLS)):
        lines.append(
            f"{name}: " + ", ".join(f"{k} rtol={t.rtol:g} atol={t.atol:g}" for k, t in tols.items())
        )
    print("\n".join(lines))
    for (fam, label), stat in COLLECTOR.items():
        any_dtype = LABELS[label][1]
        muon = fam in ("Muon", "MultiOptimizer")
        bound = (MUON_TOLS if muon else TOLS)[any_dtype].rtol
        assert stat.max_err <= bound, (
            f"{fam} {label}: {stat.max_err:.3g} > {bound:g} at {stat.worst}"
        )
