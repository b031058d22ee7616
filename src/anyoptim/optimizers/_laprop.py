"""LaProp: momentum over RMSprop-normalised gradients (the normalisation comes first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero
from ._ademamix import _bias, _fn
from ._adopt import number, step_value
from ._base import LearningRate, Optimizer
from ._cautious_mask import CautiousMixin, check
from ._validate import check_betas, require


def _flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    # mode 3: pytorch_optimizer's coupled decay, added to the gradient after the step has used
    # it, so that it does not move the parameters (the torch drop-in reproduces it)
    mode = 0 if is_zero(wd) else (2 if h["decouple"] else (3 if h.get("_late_l2") else 1))
    return (mode, bool(h.get("maximize", False)))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    b1, b2 = h["betas"]
    t = step_value(xp, step, dtype)
    s2 = _fn(xp, t, "sqrt")(_bias(xp, b2, t))
    average = h.get("_lr_average")  # the drop-in's running average of the learning rate
    if average is None:
        size = 1 / _bias(xp, b1, t)
    else:  # pytorch_optimizer: 1 / (average / lr), 1 while lr = 0
        size = 1.0 if isinstance(lr, float) and lr == 0 else 1 / (average / lr)
    centered = 0.0
    if h["centered"]:
        after = t > h["steps_before_using_centered"]
        centered = (1.0 if after else 0.0) if isinstance(t, float) else xp.astype(after, t.dtype)
    wd = h["weight_decay"]
    decay = 1 - wd if h.get("fixed_decay") else 1 - lr * wd
    out = (b1, b2, 1 - b2, (1 - b1) * lr, h["eps"], h["eps_root"], s2, size, centered, wd,
           decay)
    if isinstance(t, float):
        return out
    return tuple(xp.astype(x, dtype) if hasattr(x, "dtype") else x for x in out)


def _element(ops: Any, flags: tuple[Any, ...], kind: str = "plain") -> Any:
    wd_mode, maximize = flags

    # numba compiles each function whole (no calls to Python helpers), hence one body per
    # state layout
    def laprop(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        b1, b2, w2, k, eps, eps_root, s2, size, _centered, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        v = b2 * v + w2 * (g * g)
        m = b1 * m + k * (g / ((ops.sqrt(v + eps_root) + eps) / s2))
        p = p - size * m
        if wd_mode == 2:
            p = p * decay
        return p, m, v

    def laprop_centered(p: Any, g: Any, m: Any, v: Any, mean: Any, sc: Any) -> Any:
        b1, b2, w2, k, eps, eps_root, s2, size, centered, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        v = b2 * v + w2 * (g * g)
        mean = b2 * mean + w2 * g
        second = v - centered * (mean * mean)
        m = b1 * m + k * (g / ((ops.sqrt(second + eps_root) + eps) / s2))
        p = p - size * m
        if wd_mode == 2:
            p = p * decay
        return p, m, v, mean

    def laprop_ams(p: Any, g: Any, m: Any, v: Any, v_max: Any, sc: Any) -> Any:
        b1, b2, w2, k, eps, eps_root, s2, size, _centered, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        v = b2 * v + w2 * (g * g)
        v_max = ops.maximum(v_max, v)
        m = b1 * m + k * (g / ((ops.sqrt(v_max + eps_root) + eps) / s2))
        p = p - size * m
        if wd_mode == 2:
            p = p * decay
        return p, m, v, v_max

    def laprop_centered_ams(p: Any, g: Any, m: Any, v: Any, mean: Any, v_max: Any,
                            sc: Any) -> Any:
        b1, b2, w2, k, eps, eps_root, s2, size, centered, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        v = b2 * v + w2 * (g * g)
        mean = b2 * mean + w2 * g
        v_max = ops.maximum(v_max, v - centered * (mean * mean))
        m = b1 * m + k * (g / ((ops.sqrt(v_max + eps_root) + eps) / s2))
        p = p - size * m
        if wd_mode == 2:
            p = p * decay
        return p, m, v, mean, v_max

    return {"plain": laprop, "centered": laprop_centered, "ams": laprop_ams,
            "centered_ams": laprop_centered_ams}[kind]


def _centered_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    return _element(ops, flags, "centered")


def _ams_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    return _element(ops, flags, "ams")


def _centered_ams_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    return _element(ops, flags, "centered_ams")


#: The rules by (centered, ams_bound).
RULES = {
    (False, False): Elementwise(state=("m", "v"), element=_element, scalars=_scalars,
                                flags=_flags),
    (True, False): Elementwise(state=("m", "v", "mean"), element=_centered_element,
                               scalars=_scalars, flags=_flags),
    (False, True): Elementwise(state=("m", "v", "v_max"), element=_ams_element,
                               scalars=_scalars, flags=_flags),
    (True, True): Elementwise(state=("m", "v", "mean", "v_max"), element=_centered_ams_element,
                              scalars=_scalars, flags=_flags),
}


class LaProp(CautiousMixin, Optimizer):
    r"""LaProp (Ziyin, Wang and Ueda, "LaProp: Separating Momentum and Adaptivity in Adam",
    2020).

    The gradient is normalised first and the momentum averages the normalised, learning-rate
    scaled steps:

    .. math::

        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, \eta_t\,
               \frac{g_t}{(\sqrt{v_t + \epsilon_{root}} + \epsilon) / \sqrt{1 - \beta_2^t}} \\
        p_t &= p_{t-1} - \frac{m_t}{1 - \beta_1^t}

    then decoupled weight decay :math:`p_t \leftarrow p_t (1 - \eta_t \lambda)` (after the
    step, as ``pytorch_optimizer.LaProp``), or with ``decouple=False`` :math:`\lambda p` added
    to the gradient first. ``centered`` subtracts the square of a running mean of
    :math:`g` (same :math:`\beta_2`) from :math:`v` once more than
    ``steps_before_using_centered`` steps were taken; ``ams_bound`` uses the running maximum
    of that second moment. The maths and defaults are ``pytorch_optimizer.LaProp``'s, except
    that under a changing learning rate pytorch_optimizer divides by a running average of
    :math:`\eta` instead of :math:`\eta_t (1 - \beta_1^t)` (equal for a constant
    :math:`\eta`); ``anyoptim.torch.LaProp`` reproduces that average exactly.

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter), plus ``mean`` with
    ``centered`` and ``v_max`` with ``ams_bound`` (4 bytes each).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon` (>= 0) added to the root. Default ``1e-15``.
        eps_root: :math:`\epsilon_{root}` (>= 0) added under the root. Default ``1e-15``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decoupled (AdamW-style) decay. Default ``True``.
        fixed_decay: decoupled decay not scaled by :math:`\eta`. Default ``False``.
        centered: subtract the squared mean gradient from :math:`v`. Default ``False``.
        steps_before_using_centered: steps before centering starts. Default ``10``.
        ams_bound: the running maximum of the second moment. Default ``False``.
        cautious: pytorch_optimizer's ``cautious``: the step is kept where it agrees with the
            gradient in sign, scaled per tensor (:class:`CautiousAdam`; needs decoupled or no
            weight decay). Default ``False``.
        cautious_scale: ``"count"`` (pytorch_optimizer's, the default here) or ``"mean"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.LaProp(learning_rate=0.1)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> for _ in range(2):
        ...     params = opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)}, params)
        >>> params["w"]
        array([-0.2,  0.2], dtype=float32)
    """

    _name = "LaProp"
    rule = RULES[False, False]
    hyperparameters: tuple[str, ...] = (
        "betas", "eps", "eps_root", "weight_decay", "decouple", "fixed_decay", "centered",
        "steps_before_using_centered")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-15,
        eps_root: float = 1e-15,
        weight_decay: float = 0.0,
        decouple: bool = True,
        fixed_decay: bool = False,
        centered: bool = False,
        steps_before_using_centered: int = 10,
        ams_bound: bool = False,
        cautious: bool = False,
        cautious_scale: str = "count",
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
                           ("centered", centered), ("ams_bound", ams_bound)):
            require(isinstance(value, bool), name, key, "True or False", value)
        require(isinstance(steps_before_using_centered, int) and steps_before_using_centered >= 0,
                name, "steps_before_using_centered", "an int >= 0", steps_before_using_centered)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.eps_root = eps_root
        self.weight_decay = weight_decay
        self.decouple = decouple
        self.fixed_decay = fixed_decay
        self.centered = centered
        self.steps_before_using_centered = steps_before_using_centered
        self.ams_bound = ams_bound
        self.rule = RULES[centered, ams_bound]
        self._set_cautious(cautious, cautious_scale)
