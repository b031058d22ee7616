"""Weight-decay masks of the anyoptim.optax factories against optax: every factory whose optax
counterpart takes ``mask`` (or ``weight_decay_mask``) takes it with the same meaning, a tree of
bools or a function of the parameters returning one; here it excludes the 0-d and 1-d leaves.

Uses ``test_more_optimizers``' random problem (a scalar, a vector, two matrices; 60 jitted
steps in float32). The tolerance is 1e-5 relative: the float32 rounding of these rules differs
from optax's by a few 1e-6 on the scalar leaf that crosses zero, while a mask applied to the
wrong leaves changes them by more than 1e-3.
"""

from __future__ import annotations

from typing import Any

import pytest

import test_more_optimizers as t

optax = pytest.importorskip("optax")
pytest.importorskip("jax")
import anyoptim.optax as ao  # noqa: E402

#: name -> (optax factory, mask keyword, extra keywords (a non-zero decay))
CASES: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "adamw": (optax.adamw, "mask", {"weight_decay": 0.1}),
    "nadamw": (optax.nadamw, "mask", {"weight_decay": 0.1}),
    "adamaxw": (optax.adamaxw, "mask", {"weight_decay": 0.1}),
    "lion": (optax.lion, "mask", {"weight_decay": 0.1}),
    "lamb": (optax.lamb, "mask", {"weight_decay": 0.1}),
    "adan": (optax.adan, "mask", {"weight_decay": 0.1}),
    "ademamix": (optax.contrib.ademamix, "mask", {"weight_decay": 0.1}),
    "simplified_ademamix": (optax.contrib.simplified_ademamix, "mask", {"weight_decay": 0.1}),
    "lars": (optax.lars, "weight_decay_mask", {"weight_decay": 0.1}),
    "adadelta": (optax.adadelta, "weight_decay_mask", {"weight_decay": 0.1}),
}


def _tree_mask() -> dict[str, bool]:
    return {str(i): len(shape) >= 2 for i, shape in enumerate(t.SHAPES)}


def _fn_mask(params: Any) -> Any:
    import jax

    return jax.tree.map(lambda x: x.ndim >= 2, params)


@pytest.mark.parametrize("kind", ["tree", "callable"])
@pytest.mark.parametrize("name", list(CASES))
def test_mask_excluding_vectors_matches_optax(name: str, kind: str) -> None:
    ref, key, kw = CASES[name]
    mask = _tree_mask() if kind == "tree" else _fn_mask
    lr = 0.5 if name == "lars" else (1.0 if name == "adadelta" else 1e-2)
    ours = getattr(ao, name)(lr, **kw, **{key: mask})
    theirs = ref(lr, **kw, **{key: mask})
    t.optax_pair(ours, theirs, f"{name} optax mask={kind} vs optax.{name}", tol=1e-5)


@pytest.mark.parametrize("name", ["adamw", "lamb", "lion"])
def test_mask_changes_the_result(name: str) -> None:
    """The mask is not ignored: masked and unmasked runs differ on the vectors only."""
    import jax.numpy as jnp
    import numpy as np

    _ref, key, kw = CASES[name]
    p0, grads = t._problem(5, "float32")
    params = {str(i): jnp.asarray(p) for i, p in enumerate(p0)}
    out = []
    for mask in (None, _tree_mask()):
        tx = getattr(ao, name)(1e-2, **kw, **{key: mask})
        state, p = tx.init(params), params
        for gs in grads[:5]:
            g = {str(i): jnp.asarray(x) for i, x in enumerate(gs)}
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        out.append(p)
    for i, shape in enumerate(t.SHAPES):
        if name == "lamb" and not shape:
            continue  # a scalar's LAMB step is lr |p| sign(r): the decay rarely shows
        same = np.array_equal(np.asarray(out[0][str(i)]), np.asarray(out[1][str(i)]))
        assert same == (len(shape) >= 2), (name, shape)
