"""Gradient clipping by global norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backend
from ..utils import tree_flatten, tree_map
from ._validate import require


def clip_grad_norm(grads: Any, max_norm: float) -> tuple[Any, Any]:
    r"""Rescale a gradient tree so that its global L2 norm is at most ``max_norm``.

    .. math::

        g \leftarrow g \cdot \min\left(\frac{\text{max\_norm}}{\lVert g \rVert_2 + 10^{-6}}, 1\right)

    float16 leaves are squared in float32; every floating leaf keeps its dtype; integer leaves
    come out as float32. The factor is always applied (at ``norm == max_norm`` it is slightly
    below 1), as in MLX.

    Args:
        grads: a tree of gradient arrays.
        max_norm: the largest allowed global norm (>= 0).

    Returns:
        ``(clipped_grads, total_norm)`` where ``total_norm`` is the norm before clipping.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> clipped, norm = optim.clip_grad_norm({"a": np.array([3.0, 4.0], np.float32)}, 1.0)
        >>> np.round(clipped["a"], 6), float(norm)
        (array([0.6, 0.8], dtype=float32), 5.0)
    """
    require(max_norm >= 0, "clip_grad_norm", "max_norm", ">=0", max_norm)
    leaves = [g for _, g in tree_flatten(grads)]
    if not leaves:
        return tree_map(lambda g: g, grads), np.asarray(0.0, dtype=np.float32)
    xp = _backend.namespace(leaves[0])
    squared: Any = 0.0
    for g in leaves:
        if g.dtype == xp.float16 or not xp.isdtype(g.dtype, "real floating"):
            g = xp.astype(g, xp.float32)  # integer gradients give a float32 norm, as in MLX
        squared = squared + xp.sum(xp.square(g))
    total_norm = _backend.finalize(xp.sqrt(squared))
    normalizer = xp.minimum(max_norm / (total_norm + 1e-6), 1.0)

    def scale(g: Any) -> Any:
        if xp.isdtype(g.dtype, "real floating"):
            return _backend.finalize(xp.astype(g * normalizer, g.dtype))
        return _backend.finalize(xp.astype(g, normalizer.dtype) * normalizer)

    return tree_map(scale, grads), total_norm
