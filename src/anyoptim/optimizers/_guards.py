"""Clipping and guards: gradient transformations applied before the wrapped optimizer."""

from __future__ import annotations

from typing import Any

from .._backend import finalize
from ._base import Optimizer
from ._clip import clip_grad_norm
from ._validate import require
from ._wrapper import Wrapper, _Call


class _GradientTransform(Wrapper):
    """A stateless wrapper: change the gradients, then run the wrapped optimizer."""

    counts = False

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _run(self, call: _Call, inplace: bool, fused: bool = True) -> tuple[Any, bool]:
        grads = self._transform(call.xp, call.grads, call.params) if call.grads else []
        return call.inner(grads, inplace, fused)


def _wide(xp: Any, g: Any) -> Any:
    """``g`` in float32 when it is a 16-bit float (for sums of squares)."""
    if getattr(g.dtype, "itemsize", 4) == 2 or str(g.dtype).endswith("float16"):
        return xp.astype(g, xp.float32)
    return g


class ClipByValue(_GradientTransform):
    r"""Clip every gradient element to :math:`[-c, c]` before ``optimizer``:
    :math:`g \leftarrow \min(\max(g, -c), c)` (``optax.clip(c)``,
    ``torch.nn.utils.clip_grad_value_(parameters, c)``). No state.

    Args:
        optimizer: the optimizer to wrap.
        max_value: the bound ``c`` (>= 0).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ClipByValue(optim.SGD(learning_rate=1.0), max_value=0.5)
        >>> opt.apply_gradients({"w": np.array([2.0, -0.1], np.float32)},
        ...                     {"w": np.zeros(2, np.float32)})
        {'w': array([-0.5,  0.1], dtype=float32)}
    """

    options = ("max_value",)

    def __init__(self, optimizer: Optimizer, max_value: float) -> None:
        require(max_value >= 0, type(self).__name__, "max_value", ">= 0", max_value)
        super().__init__(optimizer)
        self.max_value = max_value

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        c = self.max_value
        return [finalize(xp.where(g > c, xp.zeros_like(g) + c,
                                  xp.where(g < -c, xp.zeros_like(g) - c, g))) for g in grads]


class ClipByGlobalNorm(_GradientTransform):
    r"""Rescale the gradients so that their global L2 norm is at most ``max_norm`` before
    ``optimizer`` (:func:`anyoptim.clip_grad_norm`, MLX's ``clip_grad_norm``:
    :math:`g \leftarrow g \min(1, c / (\lVert g \rVert_2 + 10^{-6}))`). No state.

    Args:
        optimizer: the optimizer to wrap.
        max_norm: the largest global norm (>= 0).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ClipByGlobalNorm(optim.SGD(learning_rate=1.0), max_norm=1.0)
        >>> new = opt.apply_gradients({"w": np.array([3.0, 4.0], np.float32)},
        ...                           {"w": np.zeros(2, np.float32)})
        >>> np.round(new["w"], 4)
        array([-0.6, -0.8], dtype=float32)
    """

    options = ("max_norm",)

    def __init__(self, optimizer: Optimizer, max_norm: float) -> None:
        require(max_norm >= 0, type(self).__name__, "max_norm", ">= 0", max_norm)
        super().__init__(optimizer)
        self.max_norm = max_norm

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        return list(clip_grad_norm(grads, self.max_norm)[0])


class ClipByTensorNorm(_GradientTransform):
    r"""Rescale each gradient tensor on its own to an L2 norm of at most ``max_norm`` before
    ``optimizer``: :math:`g \leftarrow g \min(1, c / (\lVert g \rVert_2 + 10^{-6}))` per
    tensor (``torch.nn.utils.clip_grad_norm_`` called on each gradient separately; Keras's
    ``clipnorm``). No state.

    Args:
        optimizer: the optimizer to wrap.
        max_norm: the largest norm of each tensor (>= 0).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ClipByTensorNorm(optim.SGD(learning_rate=1.0), max_norm=1.0)
        >>> new = opt.apply_gradients({"a": np.array([3.0, 4.0], np.float32),
        ...                            "b": np.array([0.3, 0.4], np.float32)},
        ...                           {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)})
        >>> np.round(new["a"], 4), np.round(new["b"], 4)
        (array([-0.6, -0.8], dtype=float32), array([-0.3, -0.4], dtype=float32))
    """

    options = ("max_norm",)

    def __init__(self, optimizer: Optimizer, max_norm: float) -> None:
        require(max_norm >= 0, type(self).__name__, "max_norm", ">= 0", max_norm)
        super().__init__(optimizer)
        self.max_norm = max_norm

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        return [clip_grad_norm([g], self.max_norm)[0][0] for g in grads]


class ClipByBlockRMS(_GradientTransform):
    r"""Clip each gradient tensor to an RMS of at most ``threshold`` before ``optimizer``:
    :math:`g \leftarrow g / \max(1, \mathrm{rms}(g) / c)` with
    :math:`\mathrm{rms}(g) = \sqrt{\mathrm{mean}(g^2)}` over the tensor
    (``optax.clip_by_block_rms(c)``). No state.

    Args:
        optimizer: the optimizer to wrap.
        threshold: the largest RMS ``c`` per tensor (> 0).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ClipByBlockRMS(optim.SGD(learning_rate=1.0), threshold=1.0)
        >>> opt.apply_gradients({"w": np.array([4.0, 2.0], np.float32)},
        ...                     {"w": np.zeros(2, np.float32)})["w"].round(4)
        array([-1.2649, -0.6325], dtype=float32)
    """

    options = ("threshold",)

    def __init__(self, optimizer: Optimizer, threshold: float) -> None:
        require(threshold > 0, type(self).__name__, "threshold", "> 0", threshold)
        super().__init__(optimizer)
        self.threshold = threshold

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        out = []
        for g in grads:
            w = _wide(xp, g)
            rms = xp.sqrt(xp.mean(w * w))
            denom = rms / self.threshold
            denom = xp.where(denom > 1, denom, xp.ones_like(denom))
            out.append(finalize(xp.astype(w / denom, g.dtype)))
        return out


class AdaptiveGradClip(_GradientTransform):
    r"""Adaptive gradient clipping (AGC, Brock et al., *High-Performance Large-Scale Image
    Recognition Without Normalization*, ICML 2021) before ``optimizer``.

    Per unit (a slice of the tensor reduced over ``axis``):

    .. math::

        m = \lambda \max(\lVert\theta\rVert, \epsilon), \qquad
        g \leftarrow \begin{cases} g & \lVert g\rVert < m \\
        g \, m / \max(\lVert g\rVert, 10^{-6}) & \text{otherwise} \end{cases}

    Scalars and vectors are one unit. The default layout is timm's
    (``timm.utils.adaptive_clip_grad``, torch/MLX ``(out, in)`` weights): norms over every axis
    but the first. optax's ``adaptive_grad_clip`` assumes JAX's ``(in, out)`` kernels: pass
    ``axis=0`` for its 2-D/3-D layout and ``axis=(0, 1, 2)`` for HWIO convolutions. No state.

    Args:
        optimizer: the optimizer to wrap.
        clipping: :math:`\lambda` (> 0; timm's and optax's examples use 0.01).
        eps: :math:`\epsilon` (>= 0, default 1e-3 as in both).
        axis: the axes reduced for tensors of 2 or more dimensions (an int or a tuple), or
            None for every axis but the first.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdaptiveGradClip(optim.SGD(learning_rate=1.0), clipping=0.1)
        >>> opt.apply_gradients({"w": np.array([[3.0, 4.0]], np.float32)},
        ...                     {"w": np.array([[10.0, 0.0]], np.float32)})["w"].round(4)
        array([[ 9.4, -0.8]], dtype=float32)
    """

    options = ("clipping", "eps", "axis")

    def __init__(self, optimizer: Optimizer, clipping: float = 0.01, eps: float = 1e-3,
                 axis: int | tuple[int, ...] | None = None) -> None:
        name = type(self).__name__
        require(clipping > 0, name, "clipping", "> 0", clipping)
        require(eps >= 0, name, "eps", ">= 0", eps)
        if isinstance(axis, list):
            axis = tuple(axis)
        require(axis is None or isinstance(axis, int) or (
            isinstance(axis, tuple) and all(isinstance(a, int) for a in axis)),
            name, "axis", "None, an int or a tuple of ints", axis)
        super().__init__(optimizer)
        self.clipping = clipping
        self.eps = eps
        self.axis = axis

    def _axes(self, ndim: int) -> tuple[int, ...] | None:
        if ndim <= 1:
            return None
        if self.axis is None:
            return tuple(range(1, ndim))
        axes = (self.axis,) if isinstance(self.axis, int) else self.axis
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"{type(self).__name__}: axis {a} is out of range for a {ndim}-D tensor; "
                    "pass axis=None (every axis but the first) or axes that every tensor of "
                    "2 or more dimensions has"
                )
        return tuple(a % ndim for a in axes)

    def _norm(self, xp: Any, x: Any, axes: tuple[int, ...] | None) -> Any:
        x = _wide(xp, x)
        if axes is None:
            return xp.sqrt(xp.sum(x * x))
        return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=True))

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        out = []
        for g, p in zip(grads, params):
            axes = self._axes(g.ndim)
            p_norm = self._norm(xp, p, axes)
            g_norm = self._norm(xp, g, axes)
            max_norm = xp.where(p_norm > self.eps, p_norm, xp.zeros_like(p_norm) + self.eps)
            max_norm = max_norm * self.clipping
            safe = xp.where(g_norm > 1e-6, g_norm, xp.zeros_like(g_norm) + 1e-6)
            w = _wide(xp, g)
            clipped = w * (max_norm / safe)
            out.append(finalize(xp.astype(xp.where(g_norm < max_norm, w, clipped), g.dtype)))
        return out


class ZeroNaNs(_GradientTransform):
    r"""Replace NaN gradient elements by zero before ``optimizer`` (``optax.zero_nans()``;
    infinities are kept). No state.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ZeroNaNs(optim.SGD(learning_rate=1.0))
        >>> opt.apply_gradients({"w": np.array([np.nan, 1.0], np.float32)},
        ...                     {"w": np.zeros(2, np.float32)})
        {'w': array([ 0., -1.], dtype=float32)}
    """

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        return [finalize(xp.where(xp.isnan(g), xp.zeros_like(g), g)) for g in grads]


class ApplyIfFinite(_GradientTransform):
    r"""Skip the whole update of ``optimizer`` when a gradient holds a NaN or an infinity:
    parameters and every state entry (the wrapped optimizer's step, moments, schedules, the
    accumulators or averages of wrappers inside) stay as they were, and
    ``state["skipped_steps"]`` counts the skipped calls (``optax.apply_if_finite`` without a
    limit on consecutive skips; the ``skip_nonfinite`` option of every optimizer, as a step
    that nests anywhere). Works under ``jax.jit``/``mx.compile`` (``where`` on a 0-d flag).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ApplyIfFinite(optim.Adam(learning_rate=0.1))
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> params = opt.apply_gradients({"w": np.array([np.inf, 1.0], np.float32)}, params)
        >>> params["w"], int(opt.step), int(opt.state["skipped_steps"])
        (array([0., 0.], dtype=float32), 0, 1)
    """

    skip_nonfinite = True

    def _transform(self, xp: Any, grads: list[Any], params: list[Any]) -> list[Any]:
        return grads
