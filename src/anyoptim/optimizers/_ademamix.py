"""AdEMAMix and simplified AdEMAMix: Adam with a mixture of a fast and a slow momentum."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero
from ._adopt import number, step_value
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require

Scalar = float | Callable[[Any], Any]


def _fn(xp: Any, t: Any, name: str) -> Any:
    if isinstance(t, float):
        return getattr(math, name)
    return getattr(xp, name)


def _bias(xp: Any, beta: float, t: Any) -> Any:
    """``1 - beta**t`` as ``-expm1(t log beta)``: accurate in float32 too, where
    ``1 - f32(0.999)**t`` loses five digits (a Python float for a Python ``t``)."""
    if beta == 0:
        return 1.0
    return -_fn(xp, t, "expm1")(t * math.log(beta))


def _warmup(xp: Any, h: Hyper, t: Any, b1: float, b3: float, alpha: Any) -> tuple[Any, Any, Any]:
    """The paper's schedulers (as pytorch_optimizer writes them), over ``warmup`` steps:
    alpha linear, beta3 linear in half-life; returns (alpha, beta3, 1 - beta3)."""
    total = h["warmup"]
    frac = t / total
    lb1, lb3 = math.log(b1), math.log(b3)
    z = lb1 * lb3 / ((1 - frac) * lb3 + frac * lb1)
    if isinstance(t, float):
        alpha = min(frac * alpha, alpha)
        z = min(z, lb3)
    else:
        one = xp.ones_like(frac)
        alpha = xp.minimum(frac * alpha, one * alpha)
        z = xp.minimum(z, one * lb3)
    # exp(z) and 1 - exp(z) = -expm1(z): no cancellation in 1 - beta3 near 1
    return alpha, _fn(xp, t, "exp")(z), -_fn(xp, t, "expm1")(z)


def _flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if is_zero(wd) else (2 if h["decouple"] else 1)
    return (mode, bool(h.get("maximize", False)))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2, b3 = h["betas"]
    t = step_value(xp, step, dtype)
    alpha = h["alpha"]
    count = t - 1  # optax's update count: the argument of alpha/beta3 schedules
    alpha = alpha(count) if callable(alpha) else alpha
    if callable(b3):
        b3 = b3(count)
        w3 = 1 - b3
    elif h["warmup"]:
        alpha, b3, w3 = _warmup(xp, h, t, b1, b3, alpha)
    else:
        w3 = 1 - b3
    c1 = 1 / _bias(xp, b1, t)
    c2 = 1 / _bias(xp, b2, t)
    wd = h["weight_decay"]
    decay = 1 - wd if h.get("fixed_decay") else 1 - lr * wd
    out = (lr, b1, 1 - b1, b2, 1 - b2, b3, w3, alpha, c1, c2, h["eps"], h["eps_root"], wd, decay)
    if isinstance(t, float):
        return out
    return tuple(xp.astype(x, dtype) if hasattr(x, "dtype") else x for x in out)


def _element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize = flags

    def ademamix(p: Any, g: Any, m1: Any, m2: Any, v: Any, sc: Any) -> Any:
        lr, b1, w1, b2, w2, b3, w3, alpha, c1, c2, eps, eps_root, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m1 = b1 * m1 + w1 * g
        m2 = b3 * m2 + w3 * g
        v = b2 * v + w2 * (g * g)
        u = (m1 * c1 + alpha * m2) / (ops.sqrt(v * c2 + eps_root) + eps)
        return p - lr * u, m1, m2, v

    return ademamix


class AdEMAMix(Optimizer):
    r"""AdEMAMix (Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better, Faster,
    Older", 2024): Adam whose numerator mixes a fast and a slow exponential moving average.

    .. math::

        m_1 &\leftarrow \beta_1 m_1 + (1 - \beta_1) g, \quad
        m_2 \leftarrow \beta_3 m_2 + (1 - \beta_3) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        p &\leftarrow p - \eta \left(\frac{m_1 / (1 - \beta_1^t) + \alpha m_2}
             {\sqrt{v / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}\right)

    The slow average :math:`m_2` is never bias-corrected. With ``warmup=T`` (the paper's
    :math:`T_\alpha = T_{\beta_3}`, pytorch_optimizer's ``t_alpha_beta3``) :math:`\alpha` rises
    linearly to its value and :math:`\beta_3` linearly in half-life from :math:`\beta_1`.
    ``alpha`` and ``betas[2]`` may also be functions of the update count :math:`t - 1` (optax's
    schedules). Weight decay is decoupled, :math:`p \leftarrow p(1 - \eta\lambda)`, as in the
    paper's code (optax adds :math:`\lambda p` to the update, the same maths);
    ``decouple=False`` adds :math:`\lambda p` to the gradient (pytorch_optimizer's default).

    State per parameter: ``m1``, ``m2``, ``v`` (12 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2, \beta_3)`. Default ``(0.9, 0.999, 0.9999)``.
        alpha: the weight :math:`\alpha` (>= 0) of the slow average, or a function of the
            update count. Default ``5.0`` (optax's and pytorch_optimizer's; the paper's code
            uses 2).
        eps: :math:`\epsilon` (>= 0). Default ``1e-8``.
        eps_root: :math:`\epsilon_{root}` (>= 0, optax's). Default ``0``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decoupled decay (default) or L2 added to the gradient.
        warmup: steps of the paper's alpha/beta3 schedulers, or None. Default None.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdEMAMix(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.010005, -0.010005], dtype=float32)}
    """

    _name = "AdEMAMix"
    rule = Elementwise(state=("m1", "m2", "v"), element=_element, scalars=_scalars, flags=_flags)
    hyperparameters: tuple[str, ...] = ("betas", "alpha", "eps", "eps_root", "weight_decay",
                                        "decouple", "warmup")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[Scalar] = (0.9, 0.999, 0.9999),
        alpha: Scalar = 5.0,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        decouple: bool = True,
        warmup: int | None = None,
    ) -> None:
        super().__init__()
        require(len(betas) == 3, self._name, "betas", "three decay rates (b1, b2, b3)", betas)
        check_betas(self._name, [b for b in betas if not callable(b)])
        require(callable(alpha) or alpha >= 0, self._name, "alpha", ">= 0", alpha)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        require(eps_root >= 0.0, self._name, "eps_root", ">= 0", eps_root)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(warmup is None or (isinstance(warmup, int) and warmup > 0), self._name,
                "warmup", "None or a positive number of steps", warmup)
        require(not (warmup and (callable(alpha) or callable(betas[2]))), self._name, "warmup",
                "None when alpha or beta3 is a function", warmup,
                "Give either the paper's warmup or your own schedules.")
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.alpha = alpha
        self.eps = eps
        self.eps_root = eps_root
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.warmup = warmup


# ----------------------------------------------------------------------------- simplified
def _beta1_warmup(xp: Any, h: Hyper, t: Any, b1: float) -> Any:
    """pytorch_optimizer's ``linear_hl_warmup_scheduler``: beta1 linear in half-life from
    ``min_beta1`` over ``beta1_warmup`` steps (its ``+1e-8`` in the logarithm included)."""
    total = h["beta1_warmup"]

    def f(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1.0

    start, end = f(h["min_beta1"]), f(b1)
    a = t / float(total)
    halflife = (1.0 - a) * start + a * end
    if isinstance(t, float):
        return math.pow(0.5, 1.0 / (halflife + 1)) if t < total else b1
    warm = xp.exp(math.log(0.5) / (halflife + 1))
    return xp.where(t < total, warm, xp.ones_like(warm) * b1)


def _simple_scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2 = h["betas"]
    t = step_value(xp, step, dtype)
    alpha = h["alpha"]
    alpha = alpha(t - 1) if callable(alpha) else alpha
    if h.get("beta1_warmup"):
        b1 = _beta1_warmup(xp, h, t, b1)
    w1 = 1 - b1 if h.get("average") else 1.0
    c2 = 1 / _bias(xp, b2, t)
    wd = h["weight_decay"]
    decay = 1 - wd if h.get("fixed_decay") else 1 - lr * wd
    step_lr = lr * c2 if h.get("extra_bias_correction") else lr
    out = (step_lr, b1, w1, b2, 1 - b2, alpha, c2, h["eps"], h["eps_root"], wd, decay)
    if isinstance(t, float):
        return out
    return tuple(xp.astype(x, dtype) if hasattr(x, "dtype") else x for x in out)


def _simple_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize = flags

    def simplified_ademamix(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        lr, b1, w1, b2, w2, alpha, c2, eps, eps_root, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m = b1 * m + w1 * g
        v = b2 * v + w2 * (g * g)
        u = (m + alpha * g) / (ops.sqrt(v * c2 + eps_root) + eps)
        return p - lr * u, m, v

    return simplified_ademamix


class SimplifiedAdEMAMix(Optimizer):
    r"""Simplified AdEMAMix (Morwani et al., "Connections between Schedule-Free Optimizers,
    AdEMAMix, and Accelerated SGD Variants", 2025): one momentum, an accumulated (not averaged)
    sum, mixed with the current gradient.

    .. math::

        m &\leftarrow \beta_1 m + g, \quad v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        p &\leftarrow p - \eta\, \frac{m + \alpha g}
             {\sqrt{v / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}

    the form of ``optax.contrib.simplified_ademamix``; :math:`\alpha = 0` is Adam with a
    rescaled learning rate and :math:`\beta_1`. Weight decay is decoupled
    (:math:`p \leftarrow p(1 - \eta\lambda)`, optax's maths; ``fixed_decay=True``:
    :math:`p(1 - \lambda)`) unless ``decouple=False``.

    ``pytorch_optimizer.SimplifiedAdEMAMix``'s maths (``anyoptim.torch.SimplifiedAdEMAMix``) is
    ``average=True`` (:math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`) with
    ``extra_bias_correction=True`` (the step also divided by :math:`1 - \beta_2^t`), and
    optionally its ``beta1_warmup``: :math:`\beta_1` rising linearly in half-life from
    ``min_beta1`` over that many steps.

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.99, 0.95)``.
        alpha: weight :math:`\alpha` (>= 0) of the current gradient, or a function of the
            update count. Default ``0``.
        eps: :math:`\epsilon` (>= 0). Default ``1e-8``.
        eps_root: :math:`\epsilon_{root}` (>= 0). Default ``0``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decoupled decay (default) or L2 added to the gradient.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        average: average the gradients into :math:`m` (weight :math:`1 - \beta_1`) instead
            of summing them. Default ``False``.
        extra_bias_correction: divide the step by :math:`1 - \beta_2^t` once more.
            Default ``False``.
        beta1_warmup: steps of the half-life warmup of :math:`\beta_1`, or None (default).
        min_beta1: the :math:`\beta_1` the warmup starts from. Default ``0.9``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.SimplifiedAdEMAMix(learning_rate=0.01)
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        {'w': array([-0.01, -0.01], dtype=float32)}
    """

    _name = "SimplifiedAdEMAMix"
    rule = Elementwise(state=("m", "v"), element=_simple_element, scalars=_simple_scalars,
                       flags=_flags)
    hyperparameters: tuple[str, ...] = ("betas", "alpha", "eps", "eps_root", "weight_decay",
                                        "decouple", "fixed_decay", "average",
                                        "extra_bias_correction", "beta1_warmup", "min_beta1")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.99, 0.95),
        alpha: Scalar = 0.0,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        decouple: bool = True,
        fixed_decay: bool = False,
        average: bool = False,
        extra_bias_correction: bool = False,
        beta1_warmup: int | None = None,
        min_beta1: float = 0.9,
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(callable(alpha) or alpha >= 0, self._name, "alpha", ">= 0", alpha)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        require(eps_root >= 0.0, self._name, "eps_root", ">= 0", eps_root)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(beta1_warmup is None or (isinstance(beta1_warmup, int) and beta1_warmup >= 0),
                self._name, "beta1_warmup", "None or a number of steps", beta1_warmup)
        require(0.0 <= min_beta1 < 1.0, self._name, "min_beta1", "in [0, 1)", min_beta1)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.alpha = alpha
        self.eps = eps
        self.eps_root = eps_root
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.fixed_decay = fixed_decay
        self.average = average
        self.extra_bias_correction = extra_bias_correction
        self.beta1_warmup = beta1_warmup
        self.min_beta1 = min_beta1
