"""AdaBelief: Adam whose second moment tracks the deviation of the gradient from its mean."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero, static
from ._ademamix import _bias, _fn
from ._adopt import number, step_value
from ._base import LearningRate, Optimizer
from ._cautious_mask import CautiousMixin, check
from ._validate import check_betas, require


def _flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if is_zero(wd) else (2 if h["decouple"] else 1)
    return (mode, bool(h["nesterov"]), bool(h["rectify"]), bool(h.get("maximize", False)))


def _rectifier(xp: Any, h: Hyper, t: Any, b2: float) -> tuple[Any, Any]:
    """RAdam's factor as pytorch_optimizer computes it: ``(step multiplier, use_denominator)``.

    Below ``n_sma_threshold`` the step is plain momentum (``degenerated_to_sgd``) or nothing;
    at and above it, the rectifier :math:`r_t` times the adaptive step."""
    rho_max = 2.0 / (1.0 - b2) - 1.0
    b2t = b2**t
    rho = rho_max - 2 * t * b2t / (1.0 - b2t)
    inner = (1.0 - b2t) * (rho - 4) / (rho_max - 4) * (rho - 2) / rho * rho_max / (rho_max - 2)
    low = 1.0 if h["degenerated_to_sgd"] else 0.0  # pytorch_optimizer: rt = -1, no step
    threshold = h["n_sma_threshold"]
    if isinstance(t, float):
        if rho >= threshold:
            return math.sqrt(inner), 1.0
        return low, 0.0
    above = rho >= threshold
    one = xp.ones_like(rho)
    rt = xp.sqrt(xp.where(above, inner, one))  # no square root of a negative number
    return xp.where(above, rt, one * low), xp.where(above, one, one * 0.0)


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2 = h["betas"]
    t = step_value(xp, step, dtype)
    bc1 = _bias(xp, b1, t)
    bc2 = _bias(xp, b2, t)
    if h["rectify"]:
        # rho_t is a small difference of numbers near 2 / (1 - b2): on the host (a concrete
        # step, e.g. NumPy's) in float64, as pytorch_optimizer; a device or traced step in the
        # parameters' dtype (float32 then keeps about 4 digits of the rectifier early on)
        host = static(step)
        rt, use = _rectifier(xp, h, float(host) if host is not None else t, b2)
        if isinstance(rt, float) and not isinstance(t, float):
            rt, use = xp.astype(t * 0 + rt, t.dtype), xp.astype(t * 0 + use, t.dtype)
        step_size = lr * rt / bc1
        c2: Any = 1.0
    else:
        use = 1.0
        step_size = lr / bc1
        c2 = 1 / _fn(xp, t, "sqrt")(bc2)
    # Nesterov (optax): b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t), times lr
    n1 = lr * b1 / _bias(xp, b1, t + 1)
    n2 = lr * (1 - b1) / bc1
    wd = h["weight_decay"]
    decay = 1 - wd if h.get("fixed_decay") else 1 - lr * wd
    out = (b1, 1 - b1, b2, 1 - b2, h["eps"], h["eps_root"], wd, decay, step_size, c2, use,
           1 - use, n1, n2)
    if isinstance(t, float):
        return out
    return tuple(xp.astype(x, dtype) if hasattr(x, "dtype") else x for x in out)


def _element(ops: Any, flags: tuple[Any, ...], ams: bool = False) -> Any:
    wd_mode, nesterov, rectify, maximize = flags

    # numba compiles each function whole (no calls to Python helpers), hence two bodies
    def adabelief(p: Any, g: Any, m: Any, s: Any, sc: Any) -> Any:
        b1, w1, b2, w2, eps, eps_root, wd, decay, size, c2, use, skip, n1, n2 = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m = b1 * m + w1 * g
        r = g - m
        s = b2 * s + w2 * (r * r) + eps_root
        if rectify:  # the denominator is 1 below the threshold
            return p - (size * m) / (use * (ops.sqrt(s) + eps) + skip), m, s
        if nesterov:
            return p - (n1 * m + n2 * g) / (ops.sqrt(s) * c2 + eps), m, s
        return p - (size * m) / (ops.sqrt(s) * c2 + eps), m, s

    def adabelief_ams(p: Any, g: Any, m: Any, s: Any, s_max: Any, sc: Any) -> Any:
        b1, w1, b2, w2, eps, eps_root, wd, decay, size, c2, use, skip, n1, n2 = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m = b1 * m + w1 * g
        r = g - m
        s = b2 * s + w2 * (r * r) + eps_root
        s_max = ops.maximum(s_max, s)
        if rectify:
            return p - (size * m) / (use * (ops.sqrt(s_max) + eps) + skip), m, s, s_max
        if nesterov:
            return p - (n1 * m + n2 * g) / (ops.sqrt(s_max) * c2 + eps), m, s, s_max
        return p - (size * m) / (ops.sqrt(s_max) * c2 + eps), m, s, s_max

    return adabelief_ams if ams else adabelief


def _ams_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    return _element(ops, flags, ams=True)


RULE = Elementwise(state=("m", "s"), element=_element, scalars=_scalars, flags=_flags)
AMS_RULE = Elementwise(state=("m", "s", "s_max"), element=_ams_element, scalars=_scalars,
                       flags=_flags)


class AdaBelief(CautiousMixin, Optimizer):
    r"""AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients", NeurIPS 2020).

    Adam whose second moment is the variance of the gradient around its running mean:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_t)^2 + \epsilon_{root} \\
        p_t &= p_{t-1} - \eta\, \frac{m_t / (1 - \beta_1^t)}
               {\sqrt{s_t / (1 - \beta_2^t)} + \epsilon}

    The defaults are ``optax.adabelief``'s (:math:`\epsilon = \epsilon_{root} = 10^{-16}`, no
    weight decay). ``pytorch_optimizer.AdaBelief`` has the same update with
    :math:`\epsilon_{root} = \epsilon` and adds, as options here: weight decay (decoupled,
    :math:`p \leftarrow p(1 - \eta\lambda)` before the step, by default; ``decouple=False``
    adds :math:`\lambda p` to the gradient; ``fixed_decay`` drops the :math:`\eta`), RAdam's
    rectification (``rectify``: with :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`,
    the step is :math:`\eta r_t \frac{m_t/(1-\beta_1^t)}{\sqrt{s_t} + \epsilon}` for
    :math:`\rho_t \ge` ``n_sma_threshold``, below it :math:`\eta\, m_t / (1 - \beta_1^t)` with
    ``degenerated_to_sgd`` or no step) and ``ams_bound`` (the running maximum of :math:`s`
    in the denominator). ``nesterov`` is optax's form:
    :math:`\frac{\beta_1 m_t}{1 - \beta_1^{t+1}} + \frac{(1 - \beta_1) g_t}{1 - \beta_1^t}`
    in the numerator.

    State per parameter: ``m``, ``s`` (8 bytes per float32 parameter; 12 with ``ams_bound``,
    which adds ``s_max``).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon` (>= 0) added to the denominator. Default ``1e-16``.
        eps_root: :math:`\epsilon_{root}` (>= 0) added to :math:`s` at every step.
            Default ``1e-16``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decoupled (AdamW-style) decay, else L2 added to the gradient. Default True.
        fixed_decay: decoupled decay not scaled by :math:`\eta`. Default ``False``.
        nesterov: optax's Nesterov momentum. Default ``False``.
        rectify: RAdam's rectification (pytorch_optimizer). Default ``False``.
        n_sma_threshold: the rectification threshold of :math:`\rho_t`. Default ``5``.
        degenerated_to_sgd: below the threshold, step with momentum only. Default ``True``.
        ams_bound: use the running maximum of :math:`s`. Default ``False``.
        cautious: keep the step only where it agrees with the gradient in sign, scaled per
            tensor (:class:`CautiousAdam`; needs decoupled or no weight decay).
            Default ``False``.
        cautious_scale: ``"mean"`` (the paper's) or ``"count"`` (pytorch_optimizer's).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.AdaBelief(learning_rate=0.1)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> for _ in range(2):
        ...     params = opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)}, params)
        >>> params["w"]
        array([-0.22791159,  0.22791159], dtype=float32)
    """

    _name = "AdaBelief"
    rule = RULE
    hyperparameters: tuple[str, ...] = (
        "betas", "eps", "eps_root", "weight_decay", "decouple", "fixed_decay", "nesterov",
        "rectify", "n_sma_threshold", "degenerated_to_sgd", "ams_bound")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-16,
        eps_root: float = 1e-16,
        weight_decay: float = 0.0,
        decouple: bool = True,
        fixed_decay: bool = False,
        nesterov: bool = False,
        rectify: bool = False,
        n_sma_threshold: float = 5,
        degenerated_to_sgd: bool = True,
        ams_bound: bool = False,
        cautious: bool = False,
        cautious_scale: str = "mean",
    ) -> None:
        super().__init__()
        name = self._name
        check(name, cautious, cautious_scale)
        require(not (cautious and not decouple and weight_decay != 0), name, "cautious",
                "False with coupled weight decay", cautious,
                "The cautious mask applies to the step; use decouple=True with it.")
        check_betas(name, betas)
        require(eps >= 0.0, name, "eps", ">= 0", eps)
        require(eps_root >= 0.0, name, "eps_root", ">= 0", eps_root)
        require(weight_decay >= 0.0, name, "weight_decay", ">= 0", weight_decay)
        for key, value in (("decouple", decouple), ("fixed_decay", fixed_decay),
                           ("nesterov", nesterov), ("rectify", rectify),
                           ("degenerated_to_sgd", degenerated_to_sgd), ("ams_bound", ams_bound)):
            require(isinstance(value, bool), name, key, "True or False", value)
        require(not (nesterov and rectify), name, "nesterov", "False when rectify=True",
                nesterov, "The references offer Nesterov momentum and rectification apart.")
        require(isinstance(n_sma_threshold, (int, float)) and n_sma_threshold >= 0, name,
                "n_sma_threshold", "a number >= 0", n_sma_threshold)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.eps_root = eps_root
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.fixed_decay = fixed_decay
        self.nesterov = nesterov
        self.rectify = rectify
        self.n_sma_threshold = n_sma_threshold
        self.degenerated_to_sgd = degenerated_to_sgd
        self.ams_bound = ams_bound
        if ams_bound:
            self.rule = AMS_RULE
        self._set_cautious(cautious, cautious_scale)
