"""RAdam: Adam whose adaptive step is rectified while the variance estimate is unreliable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._backend import library_name
from .._backend._rules import Elementwise, Hyper, is_zero, static
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require

#: The two forms of the maths: torch.optim's (the default) and optax's.
CONVENTIONS = ("torch", "optax")


# ----------------------------------------------------------------------------- shared helpers
def work_dtype(xp: Any, like: Any, dtype: Any) -> Any:
    """The dtype in which step-dependent scalars are computed: float64 where the library
    always has it (NumPy, PyTorch except on MPS, CuPy) or the parameters are float64, else
    float32 (JAX in its 32-bit mode, MLX). Bias terms such as :math:`1 - \\beta_2^t` lose four digits to
    cancellation in float32, which is why the references compute them in double."""
    wide = getattr(xp, "float64", None)
    if wide is None:
        return xp.float32
    if dtype == wide:
        return wide
    lib = library_name(like)
    if lib == "torch" and like.device.type == "mps":  # no float64 on Apple GPUs
        return xp.float32
    return wide if lib in ("numpy", "torch", "cupy") else xp.float32


def widen(xp: Any, x: Any, work: Any) -> Any:
    """``x`` as a Python float (a number) or as a 0-d array of dtype ``work``."""
    if isinstance(x, (bool, int, float)):
        return float(x)
    return xp.astype(x, work)


def one_minus_pow(xp: Any, b: float, t: Any) -> Any:
    r""":math:`1 - b^t`: as written for Python numbers and float64 (what torch and optax
    compute), as :math:`-\mathrm{expm1}(t \log b)` in float32, where the subtraction would
    lose about four digits for :math:`b` near 1."""
    if isinstance(t, float) or b == 0 or t.dtype == getattr(xp, "float64", None):
        return 1 - b**t
    return -xp.expm1(t * math.log(b))


def weight_decay_mode(h: Hyper) -> int:
    """0: none, 1: added to the gradient (L2), 2: decoupled (AdamW-style)."""
    if is_zero(h["weight_decay"]):
        return 0
    return 2 if h["decoupled_weight_decay"] else 1


def rectifier(xp: Any, t: Any, b2: float, threshold: float, strict: bool) -> tuple[Any, Any]:
    r"""``(adaptive, r_t)`` at step ``t`` (from 1; a Python float or a 0-d array).

    :math:`\rho_\infty = 2/(1-\beta_2) - 1`, :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1 -
    \beta_2^t)`; ``adaptive`` is 1 where :math:`\rho_t` passes the threshold (``>`` with
    ``strict``, ``>=`` without) and 0 elsewhere, and :math:`r_t = \sqrt{(\rho_t-4)(\rho_t-2)
    \rho_\infty / ((\rho_\infty-4)(\rho_\infty-2)\rho_t)}` there, 1 elsewhere.
    """
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2**t / one_minus_pow(xp, b2, t)
    c = (rho_inf - 4) * (rho_inf - 2)
    if isinstance(t, float):
        ok = c > 0 and (rho > threshold if strict else rho >= threshold)
        if not ok:
            return 0.0, 1.0
        return 1.0, ((rho - 4) * (rho - 2) * rho_inf / (c * rho)) ** 0.5
    one = t * 0 + 1
    if c <= 0:  # rho_t < rho_inf <= 4: never rectified
        return one * 0, one
    ok = rho > threshold if strict else rho >= threshold
    q = (rho - 4) * (rho - 2) * rho_inf / (c * rho)
    r = xp.sqrt(xp.maximum(q, one * 0))
    return xp.where(ok, one, one * 0), xp.where(ok, r, one)


# ----------------------------------------------------------------------------- the rule
def _flags(h: Hyper) -> tuple[Any, ...]:
    b1 = static(h["betas"][0])
    small = b1 is None or b1 > 0.5  # torch's lerp formula for weights 1 - b1 below 0.5
    return (weight_decay_mode(h), bool(h.get("maximize", False)), h["convention"] == "optax",
            not is_zero(h["eps_root"]), bool(h["nesterov"]), small)


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    work = work_dtype(xp, step, dtype)
    lr = widen(xp, h["learning_rate"], work)
    t = widen(xp, step, work)
    b1, b2 = h["betas"]
    optax_form = h["convention"] == "optax"
    adaptive, rect = rectifier(xp, t, b2, h["threshold"], strict=not optax_form)
    bc1 = one_minus_pow(xp, b1, t)
    bc1_next = one_minus_pow(xp, b1, t + 1)
    bc2 = one_minus_pow(xp, b2, t)
    eps = h["eps"]
    # where the step is not adaptive, the denominator is exactly 1 (sqrt(v) * 0 + 1)
    e = eps * adaptive + (1 - adaptive)
    sqrt_bc2 = bc2**0.5 * adaptive + (1 - adaptive)
    wd = h["weight_decay"]
    return (lr, -lr, wd, 1 - lr * wd, b1, 1 - b1, b2, 1 - b2, bc1, bc1_next, bc2, sqrt_bc2,
            adaptive, e, rect, h["eps_root"], 1.0)


def _element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize, optax_form, root, nesterov, small = flags

    def radam(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        (lr, neg_lr, wd, decay, b1, w1, b2, w2, bc1, bc1_next, bc2, sqrt_bc2, a, e, rect,
         eps_root, one) = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        if optax_form:  # optax.scale_by_radam's order of operations
            m = w1 * g + b1 * m
            v = w2 * (g * g) + b2 * v
            mh = b1 * (m / bc1_next) + w1 * (g / bc1) if nesterov else m / bc1
            vh = v / bc2
            den = ops.sqrt(vh + eps_root if root else vh) * a + e
            u = rect * mh / den
            if wd_mode == 2:
                u = u + wd * p
            return p + neg_lr * u, m, v
        # torch.optim.RAdam's order of operations (its lerp, addcmul, and 1/x as reciprocal)
        if wd_mode == 2:
            p = p * decay
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        v = v * b2 + w2 * g * g
        mh = b1 * (m / bc1_next) + w1 * (g / bc1) if nesterov else m / bc1
        den = ops.sqrt(v + eps_root if root else v) * a + e
        return p - mh * lr * ((one / den) * sqrt_bc2) * rect, m, v

    return radam


RULE = Elementwise(state=("m", "v"), element=_element, scalars=_scalars, flags=_flags)


class RAdam(Optimizer):
    r"""RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020).

    Adam with bias-corrected moments whose adaptive step is switched on only once the
    variance of :math:`\hat v` is tractable, and then rectified:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        \hat m_t = \frac{m_t}{1 - \beta_1^t} \\
        \rho_\infty &= \frac{2}{1 - \beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                        {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        p_t &= p_{t-1} - \eta \begin{cases}
            r_t\, \hat m_t \sqrt{1 - \beta_2^t} / (\sqrt{v_t} + \epsilon)
                & \rho_t > \tau \\
            \hat m_t & \text{otherwise}\end{cases}

    with :math:`t` counted from 1 and :math:`\tau` = ``threshold`` (5). This is
    ``torch.optim.RAdam`` (``convention="torch"``, the default): :math:`\epsilon` is added to
    :math:`\sqrt{v_t}` *before* the bias correction, the test is :math:`\rho_t > 5`, and the
    weight decay is added to the gradient (``decoupled_weight_decay=True``: :math:`p
    \leftarrow p(1 - \eta\lambda)` first, as the paper's code does). ``convention="optax"``
    is ``optax.radam``: the adaptive step is :math:`r_t \hat m_t / (\sqrt{\hat v_t +
    \epsilon_{root}} + \epsilon)` with :math:`\hat v_t = v_t / (1 - \beta_2^t)`, the test is
    :math:`\rho_t \ge \tau`, and decoupled decay adds :math:`\lambda p` to the direction
    (``optax.add_decayed_weights``). ``nesterov=True`` (optax's option) uses
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)` for :math:`\hat m_t`.

    State per parameter: ``m`` and ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon` (>= 0). Default ``1e-8``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decoupled_weight_decay: decay the weights as AdamW does. Default ``False``.
        threshold: :math:`\tau` (>= 4, where the rectifier is defined). Default ``5``.
        eps_root: :math:`\epsilon_{root}` (>= 0) inside the root. Default ``0``.
        nesterov: Nesterov momentum, as in ``optax.radam``. Default ``False``.
        convention: ``"torch"`` (default) or ``"optax"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.RAdam(learning_rate=0.1)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> for _ in range(6):  # rho_t > 5 from the sixth step on (torch.optim.RAdam agrees)
        ...     params = opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)}, params)
        >>> np.round(params["w"], 4)
        array([-0.5026,  1.0026], dtype=float32)
    """

    _name = "RAdam"
    rule = RULE
    hyperparameters: tuple[str, ...] = ("betas", "eps", "weight_decay", "decoupled_weight_decay",
                                        "threshold", "eps_root", "nesterov", "convention")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        threshold: float = 5.0,
        eps_root: float = 0.0,
        nesterov: bool = False,
        convention: str = "torch",
    ) -> None:
        super().__init__()
        check_common(self._name, betas, eps, eps_root, weight_decay, convention)
        require(isinstance(threshold, (int, float)) and threshold >= 4, self._name, "threshold",
                "a number >= 4", threshold, "The rectifier is defined for rho_t >= 4; torch "
                "and optax use 5.")
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.threshold = threshold
        self.eps_root = eps_root
        self.nesterov = bool(nesterov)
        self.convention = convention


def check_common(name: str, betas: Any, eps: Any, eps_root: Any, weight_decay: Any,
                 convention: Any) -> None:
    """The checks NAdam and RAdam share (each message names the parameter and the rule)."""
    require(isinstance(betas, (tuple, list)) and len(betas) == 2, name, "betas",
            "a pair (beta1, beta2)", betas)
    check_betas(name, betas)
    require(eps >= 0.0, name, "eps", ">= 0", eps)
    require(eps_root >= 0.0, name, "eps_root", ">= 0", eps_root)
    require(weight_decay >= 0.0, name, "weight_decay", ">= 0", weight_decay)
    require(convention in CONVENTIONS, name, "convention", "'torch' or 'optax'", convention)
