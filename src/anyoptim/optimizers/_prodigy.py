"""Prodigy (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
ICML 2024): Adam whose step size :math:`d` is estimated from two sums over all parameters.

The maths lives here once and serves :class:`Prodigy`, the drop-in
``anyoptim.torch.Prodigy`` (``prodigyopt.Prodigy``) and ``anyoptim.optax.prodigy``
(``optax.contrib.prodigy``):

* :func:`coefficients`: the scalars of one update from the current :math:`d`;
* :func:`leaf_sums`: one parameter's share of the two global sums;
* :func:`estimate`: the new :math:`d`, :math:`d_{\\max}` and numerator from the sums;
* :data:`RULE`: the elementwise update, run by every executor (fused NumPy and torch too).

The scalars ``d``, ``d_max`` and ``d_numerator`` live at the top level of the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _backend
from .._backend import finalize, library_name
from .._backend._rules import Elementwise, Hyper, is_zero
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require
from ._wrapper import copy_array

SCALARS = ("d", "d_max", "d_numerator")
#: hyperparameters that must be the same for every parameter (they shape the global d)
GLOBAL = ("betas", "beta3", "use_bias_correction", "safeguard_warmup", "d0", "d_coef",
          "growth_rate", "learning_rate")


def _is_half(dtype: Any) -> bool:
    return (getattr(dtype, "itemsize", None) or getattr(dtype, "size", None)) == 2


# ----------------------------------------------------------------------------- scalars
def third_beta(h: Hyper) -> Any:
    """:math:`\\beta_3` (``sqrt(beta2)`` when None, as in prodigyopt and optax)."""
    b3 = h["beta3"]
    return math.sqrt(h["betas"][1]) if b3 is None else b3


def coefficients(xp: Any, d: Any, lr: Any, t: Any, h: Hyper) -> tuple[Any, Any]:
    """``(dlr, cs)`` for step ``t`` (from 1): the step size :math:`d\\,\\eta\\,\\mathrm{bc}` and
    the weight of the gradient in :math:`s` (:math:`(d/d_0) d` with the safeguard, else
    :math:`(d/d_0)\\,d\\eta\\,\\mathrm{bc}`). Works on Python floats (``xp=math``-like NumPy)
    and 0-d arrays of any library."""
    b1, b2 = h["betas"]
    if h["use_bias_correction"]:
        if "float32" in str(getattr(d, "dtype", "")):
            # 1 - b^t loses ~4 digits to cancellation in float32: -expm1(t log b) does not
            bc = _one_minus_power(xp, b2, t) ** 0.5 / _one_minus_power(xp, b1, t)
        else:  # prodigyopt's (and optax's) float64 form
            bc = (1 - b2**t) ** 0.5 / (1 - b1**t)
        dlr = d * lr * bc
    else:
        dlr = d * lr
    cs = (d / h["d0"]) * (d if h["safeguard_warmup"] else dlr)
    return dlr, cs


def _one_minus_power(xp: Any, b: float, t: Any) -> Any:
    return t * 0 + 1 if b == 0 else -xp.expm1(t * math.log(b))


def leaf_sums(xp: Any, g: Any, p: Any, s: Any, p0: Any, h: Hyper, cs: Any) -> tuple[Any, Any]:
    """One parameter's :math:`\\langle g, p_0 - p\\rangle` and :math:`\\|\\beta_3 s + c_s g\\|_1`
    (with the coupled weight decay added to ``g``), in the parameter's dtype."""
    if _is_half(g.dtype):  # sums over many entries: in float32 at least
        g, p, s, p0 = (xp.astype(x, xp.float32) for x in (g, p, s, p0))
        if library_name(cs) is not None:
            cs = xp.astype(cs, xp.float32)
    if not h["decouple"] and not is_zero(h["weight_decay"]):
        g = g + h["weight_decay"] * p
    dot = xp.sum(g * (p0 - p))
    s_new = third_beta(h) * s + cs * g
    return dot, xp.sum(xp.abs(s_new))


def estimate(xp: Any, d: Any, d_max: Any, numerator: Any, dot: Any, denominator: Any,
             dlr: Any, lr: Any, h: Hyper) -> tuple[Any, Any, Any, Any, Any]:
    """``(d, d_max, numerator, live, d_hat)`` after an update whose sums are ``dot`` and
    ``denominator``. ``live`` is 1 when the update happens: prodigyopt leaves everything
    unchanged while the learning rate or the denominator is 0."""
    d0 = h["d0"]
    numerator_new = third_beta(h) * numerator + (d / d0) * dlr * dot
    positive = denominator > 0
    zero = denominator * 0
    d_hat = h["d_coef"] * numerator_new / xp.where(positive, denominator, zero + 1)
    grown = xp.where(d == d0, xp.maximum(d, d_hat), d)
    d_max_new = xp.maximum(d_max, d_hat)
    d_new = xp.minimum(d_max_new, grown * h["growth_rate"])
    live = xp.logical_and(positive, lr > 0)
    return (xp.where(live, d_new, d), xp.where(live, d_max_new, d_max),
            xp.where(live, numerator_new, numerator), live, d_hat)


def element_scalars(xp: Any, d: Any, d_new: Any, dlr: Any, cs: Any, live: Any,
                    h: Hyper) -> tuple[Any, ...]:
    """The scalars of :data:`RULE`. Where ``live`` is 0 they make the update the identity
    (decays 1, weights 0), so that no parameter or state array changes."""
    b1, b2 = h["betas"]
    one = d * 0 + 1
    zero = d * 0
    f = xp.where(live, one, zero)
    keep = 1 - f
    # with beta1 = 0 prodigyopt keeps no m and steps along d_new * g
    dg1 = d_new if b1 == 0 else d * (1 - b1)
    return (b1 * f + keep, dg1 * f, b2 * f + keep, d * d * (1 - b2) * f,
            third_beta(h) * f + keep, cs * f, d_new * h["eps"], dlr * f,
            h["weight_decay"] * dlr * f)


# ----------------------------------------------------------------------------- the rule
def _flags(h: Hyper) -> tuple[bool, bool]:
    decay = not is_zero(h["weight_decay"])
    return (decay and not h["decouple"], decay and bool(h["decouple"]))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    sc = h["_prodigy"]
    name = str(dtype)
    if name.endswith("float16") and not name.endswith("bfloat16"):
        # d * eps and v underflow in float16: floor the denominator's eps term at float16's
        # smallest normal number, 2^-14 (an update m / 0 would be infinite)
        sc = (*sc[:6], xp.maximum(sc[6], sc[6] * 0 + 2.0**-14), *sc[7:])
    return (*sc, h["weight_decay"])


def _element(ops: Any, flags: tuple[bool, bool]) -> Any:
    coupled, decoupled = flags

    def prodigy(p: Any, g: Any, s: Any, p0: Any, m: Any, v: Any,
                sc: Any) -> tuple[Any, Any, Any, Any, Any]:
        b1, dg1, b2, dg2, b3, cs, deps, dlr, wdlr, wd = sc
        if coupled:
            g = g + wd * p
        s = b3 * s + cs * g
        m = b1 * m + dg1 * g
        v = b2 * v + dg2 * (g * g)
        if decoupled:
            p = p - wdlr * p
        return p - dlr * (m / (ops.sqrt(v) + deps)), s, p0, m, v

    return prodigy


RULE = Elementwise(state=("s", "p0", "m", "v"), element=_element, scalars=_scalars,
                   flags=_flags)


# ----------------------------------------------------------------------------- the class
class Prodigy(Optimizer):
    r"""Prodigy (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner", ICML 2024, arXiv:2306.06101): Adam whose step size :math:`d` is learned.

    With :math:`x_0` the parameters at the first update, :math:`t` the step from 1,
    :math:`\mathrm{bc} = \sqrt{1-\beta_2^t}/(1-\beta_1^t)` (or 1), :math:`\delta = d\,\eta\,
    \mathrm{bc}` and sums over **all** parameters:

    .. math::

        r &\leftarrow \beta_3 r + \tfrac{d}{d_0}\,\delta\,\langle g, x_0 - x\rangle, \qquad
        s \leftarrow \beta_3 s + \tfrac{d}{d_0}\,(d \text{ if safeguard else } \delta)\, g \\
        \hat d &= c\, r / \|s\|_1, \qquad d_{\max} \leftarrow \max(d_{\max}, \hat d), \qquad
        d \leftarrow \min(d_{\max},\ \gamma d'), \quad
        d' = \begin{cases} \max(d, \hat d) & d = d_0 \\ d & \text{else} \end{cases} \\
        m &\leftarrow \beta_1 m + (1-\beta_1)\, d_{\mathrm{old}}\, g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\, d_{\mathrm{old}}^2 g^2 \\
        x &\leftarrow x - \delta\lambda x - \delta\, m / (\sqrt v + d\,\epsilon)

    (:math:`\gamma` = ``growth_rate``; with the default :math:`\gamma=\infty`,
    :math:`d = d_{\max}`). The weight decay is decoupled as above by default; with
    ``decouple=False`` :math:`\lambda x` is added to :math:`g` instead. While the learning
    rate or :math:`\|s\|_1` is 0 nothing changes but the step count (prodigyopt skips such
    updates; its bias correction then counts live steps only).

    The defaults and maths are ``prodigyopt.Prodigy``'s (bias correction off);
    ``optax.contrib.prodigy`` is ``use_bias_correction=True`` (``anyoptim.optax.prodigy``).
    The sums are reduced on the device (no host synchronisation); ``d``, ``d_max`` and
    ``d_numerator`` are top-level state entries in float64 where the library has it (NumPy,
    PyTorch, JAX with x64, MLX with float64 parameters), else float32. In float16 the second
    moment :math:`d^2(1-eta_2)g^2` underflows while :math:`d` is small (prodigyopt does not
    support float16 either): use bfloat16 or float32 parameters, or a large ``d0``.

    Args:
        learning_rate: :math:`\eta`, a multiplier of :math:`d` (keep 1), or a schedule.
            Default ``1.0``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        beta3: :math:`\beta_3`, or None for :math:`\sqrt{\beta_2}`. Default None.
        eps: :math:`\epsilon` (scaled by :math:`d`). Default ``1e-8``.
        weight_decay: :math:`\lambda`. Default ``0``.
        decouple: decoupled (AdamW-style) weight decay. Default ``True``.
        use_bias_correction: Adam's bias correction in :math:`\delta`. Default ``False``.
        safeguard_warmup: :math:`s` weighted by :math:`d` instead of :math:`\delta`.
            Default ``False``.
        d0: the initial estimate :math:`d_0 > 0`. Default ``1e-6``.
        d_coef: :math:`c > 0`. Default ``1.0``.
        growth_rate: :math:`\gamma \ge 1`, the largest growth of :math:`d` per step.
            Default ``inf``.

    State per parameter: ``s``, ``p0``, ``m``, ``v`` (16 bytes per float32 parameter); top
    level: ``d``, ``d_max``, ``d_numerator``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Prodigy()
        >>> params = {"w": np.array([1.0, -1.0])}
        >>> for _ in range(3):
        ...     params = opt.apply_gradients({"w": params["w"].copy()}, params)
        >>> params["w"].round(6), float(opt.state["d"]) > 1e-6
        (array([ 0.999985, -0.999985]), True)
    """

    _extra_scalars = SCALARS
    _init_from_parameters = True  # p0 is the parameters

    rule = RULE
    hyperparameters: tuple[str, ...] = (
        "betas", "beta3", "eps", "weight_decay", "decouple", "use_bias_correction",
        "safeguard_warmup", "d0", "d_coef", "growth_rate")

    def __init__(
        self,
        learning_rate: LearningRate = 1.0,
        betas: Sequence[float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
    ) -> None:
        super().__init__()
        name = "Prodigy"
        check_betas(name, betas)
        require(len(tuple(betas)) == 2, name, "betas", "a pair (beta1, beta2)", betas)
        require(beta3 is None or 0.0 <= beta3 < 1.0, name, "beta3", "None or in [0, 1)", beta3)
        require(eps >= 0.0, name, "eps", ">=0", eps)
        require(weight_decay >= 0.0, name, "weight_decay", ">=0", weight_decay)
        require(d0 > 0.0, name, "d0", ">0", d0, "It is the initial step-size estimate, e.g. 1e-6.")
        require(d_coef > 0.0, name, "d_coef", ">0", d_coef)
        require(growth_rate >= 1.0, name, "growth_rate", ">=1 (inf: unbounded)", growth_rate)
        for key, value in (("decouple", decouple), ("use_bias_correction", use_bias_correction),
                           ("safeguard_warmup", safeguard_warmup)):
            require(isinstance(value, bool), name, key, "True or False", value)
        if not callable(learning_rate):
            require(learning_rate >= 0.0, name, "learning_rate", ">=0", learning_rate)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.beta3 = beta3
        self.eps = eps
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.use_bias_correction = use_bias_correction
        self.safeguard_warmup = safeguard_warmup
        self.d0 = d0
        self.d_coef = d_coef
        self.growth_rate = growth_rate

    # ------------------------------------------------------------------ state
    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        xp = self.xp
        state["s"] = xp.zeros_like(parameter)
        state["p0"] = copy_array(parameter)  # (torch: detached, so no requires_grad copy)
        state["m"] = xp.zeros_like(parameter)
        state["v"] = xp.zeros_like(parameter)

    def _adopt_scalars(self, like: Any) -> None:
        super()._adopt_scalars(like)
        # float64 on MLX too when the parameters are float64
        self._adopt_extra(like, {"d": self.d0, "d_max": self.d0, "d_numerator": 0.0},
                          wide_on_mlx=True)

    def _advance(self) -> dict[str, Any]:
        state = self._state
        if "d" not in state:
            self._adopt_scalars(state["step"])
        saved = super()._advance()
        saved.update({k: state[k] for k in SCALARS})
        return saved

    # ------------------------------------------------------------------ the global sums
    def prepare_groups(self, parts: list[tuple[list[Any], list[Any], list[dict[str, Any]],
                                              Mapping[str, Any]]]) -> list[Mapping[str, Any] | None]:
        """The two sums over every parameter of every group, the new ``d`` (stored in the
        state), and the scalars of the elementwise update for each group."""
        state = self._state
        base = parts[0][3] if parts else self.hyper()
        for _, _, _, h in parts[1:]:
            for key in GLOBAL:
                if key in h and h[key] is not base[key] and h[key] != base[key]:
                    raise ValueError(
                        f"Prodigy: the hyperparameter {key!r} differs between parameter groups "
                        f"({base[key]!r} and {h[key]!r}); d is estimated once for all "
                        "parameters, so only weight_decay, decouple and eps may differ."
                    )
        d, d_max, numerator = state["d"], state["d_max"], state["d_numerator"]
        xp = _backend.namespace(d)
        dt = d.dtype
        t = xp.astype(state["step"], dt)
        lr = xp.astype(base["learning_rate"], dt)
        dlr, cs = coefficients(xp, d, lr, t, base)
        dot = d * 0
        denominator = d * 0
        cast: dict[Any, Any] = {}
        for grads, params, states, h in parts:
            for g, p, s in zip(grads, params, states):
                c = cast.get(g.dtype)
                if c is None:
                    c = cast[g.dtype] = xp.astype(cs, g.dtype)
                a, b = leaf_sums(xp, g, p, s["s"], s["p0"], h, c)
                dot = dot + xp.astype(a, dt)
                denominator = denominator + xp.astype(b, dt)
        d_new, d_max_new, numerator_new, live, _ = estimate(
            xp, d, d_max, numerator, dot, denominator, dlr, lr, base)
        state["d"] = finalize(d_new)
        state["d_max"] = finalize(d_max_new)
        state["d_numerator"] = finalize(numerator_new)
        out: list[Mapping[str, Any] | None] = []
        for _, _, _, h in parts:
            out.append({"_prodigy": tuple(finalize(x) for x in element_scalars(
                xp, d, d_new, dlr, cs, live, h))})
        return out
