"""ADOPT: Adam with the second moment of the previous step and a clipped normalised gradient."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require


def number(xp: Any, x: Any, dtype: Any) -> Any:
    """``x`` as a Python float if it is a Python number, else cast to ``dtype``."""
    if isinstance(x, (bool, int, float)):
        return float(x)
    return xp.astype(x, dtype)


def step_value(xp: Any, step: Any, dtype: Any) -> Any:
    """The step as a Python float, or as a 0-d array in float64 (for float64 parameters) or
    float32 (otherwise: a 16-bit step would overflow after 65504 updates)."""
    if isinstance(step, (bool, int, float)):
        return float(step)
    wide = getattr(xp, "float64", None)
    work = wide if wide is not None and dtype == wide else xp.float32
    return xp.astype(step, work)


def started(xp: Any, t: Any) -> Any:
    """1 after the first step, 0 at it (``t`` counts from 1)."""
    if isinstance(t, float):
        return 1.0 if t > 1 else 0.0
    return xp.astype(t > 1, t.dtype)


def _flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if is_zero(wd) else (2 if h["decouple"] else 1)
    return (mode, bool(h["nesterov"]), bool(h.get("maximize", False)))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2 = h["betas"]
    t = step_value(xp, step, dtype)
    s = started(xp, t)  # the first step only records v = g^2
    clip = h["clip"]
    if clip is None:
        bound: Any = math.inf
    else:
        shifted = t - h["clip_step_offset"]
        bound = clip(shifted) if callable(clip) else shifted**clip
    if not isinstance(s, float):
        s = xp.astype(s, dtype)
        bound = xp.astype(t * 0 + bound if isinstance(bound, float) else bound, dtype)
    wd = h["weight_decay"]
    decay = 1 - wd if h.get("fixed_decay") else 1 - lr * wd  # fixed: pytorch_optimizer's option
    # at s = 1 these are exactly lr, b1, 1 - b1, b2, 1 - b2 (no 1 - b computed in 16/32 bits)
    return (lr * s, b1 * s + (1 - s), (1 - b1) * s, b2 * s, (1 - b2) * s + (1 - s), s, h["eps"],
            bound,
            wd, decay, b1, 1 - b1)


def _element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, nesterov, maximize = flags

    def adopt(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        lr, b1, w1, b2, w2, s, eps, bound, wd, decay, nb1, nw1 = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        n = (g * s) / ops.maximum(ops.sqrt(v), eps)
        n = ops.minimum(ops.maximum(n, -bound), bound)
        m = b1 * m + w1 * n
        v = b2 * v + w2 * (g * g)
        if nesterov:
            return p - lr * (nb1 * m + nw1 * n), m, v
        return p - lr * m, m, v

    return adopt


class ADOPT(Optimizer):
    r"""ADOPT (Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the
    Optimal Rate", NeurIPS 2024).

    The gradient is normalised by the second moment of the *previous* steps, clipped, and
    then averaged:

    .. math::

        n_t &= \mathrm{clip}\Big(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},\, c_t\Big),
        \quad c_t = (t - o)^{1/4} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) n_t \\
        p_t &= p_{t-1} - \eta\, m_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2

    with :math:`t` counted from 1. The first step only sets :math:`v_1 = g_1^2` (the
    parameters do not move; decoupled weight decay, as in ``pytorch_optimizer.ADOPT``, is
    applied). The references differ in the clip's step: the paper's code and
    ``pytorch_optimizer`` use :math:`c_t = t^{1/4}` (``clip_step_offset=0``, the default),
    ``optax.contrib.adopt`` uses its update count :math:`t - 1` (``clip_step_offset=1``).
    ``nesterov=True`` steps along :math:`\beta_1 m_t + (1 - \beta_1) n_t` (optax's option).

    State per parameter: ``m`` and ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``[0.9, 0.9999]``.
        eps: lower bound :math:`\epsilon` (>= 0) of :math:`\sqrt{v}`. Default ``1e-6``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decay the weights as AdamW does, :math:`p \leftarrow p(1 - \eta\lambda)`;
            otherwise (the default) :math:`\lambda p` is added to the gradient.
        clip: the exponent of :math:`c_t = (t - o)^{\text{clip}}` (default ``0.25``), a
            function of :math:`t - o` returning the bound, or ``None`` for no clipping.
        clip_step_offset: :math:`o` (0 or 1, see above). Default ``0``.
        nesterov: use the Nesterov form. Default ``False``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ADOPT(learning_rate=0.1)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> for _ in range(2):
        ...     params = opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)}, params)
        >>> params["w"]
        array([-0.01,  0.01], dtype=float32)
    """

    _name = "ADOPT"
    rule = Elementwise(state=("m", "v"), element=_element, scalars=_scalars, flags=_flags)
    hyperparameters: tuple[str, ...] = ("betas", "eps", "weight_decay", "decouple", "clip",
                                        "clip_step_offset", "nesterov")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.9999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        decouple: bool = False,
        clip: float | Callable[[Any], Any] | None = 0.25,
        clip_step_offset: int = 0,
        nesterov: bool = False,
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(clip is None or callable(clip) or (isinstance(clip, (int, float)) and clip >= 0),
                self._name, "clip", "a non-negative exponent, a function of the step or None",
                clip)
        require(clip_step_offset in (0, 1), self._name, "clip_step_offset", "0 or 1",
                clip_step_offset, "0: the paper's t**0.25; 1: optax's count**0.25.")
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.clip = clip
        self.clip_step_offset = clip_step_offset
        self.nesterov = nesterov
