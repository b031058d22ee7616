"""LAMB: Adam with a per-tensor trust ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._backend._rules import Hyper, is_zero
from ._adopt import number, step_value
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require


def _bias(xp: Any, beta: float, t: Any) -> Any:
    """``1 - beta**t`` as ``-expm1(t log beta)`` (no float32 cancellation)."""
    if beta == 0:
        return 1.0
    expm1 = math.expm1 if isinstance(t, float) else xp.expm1
    return -expm1(t * math.log(beta))


def trust_ratio(xp: Any, p: Any, u: Any, max_norm: float | None = None,
                eps: float = 0.0) -> Any:
    """``||p|| / (||u|| + eps)``, or 1 where either norm is 0 (optax's
    ``scale_by_trust_ratio``); ``||p||`` clipped at ``max_norm`` (pytorch_optimizer's 10)."""
    pn = xp.sqrt(xp.sum(p * p))
    un = xp.sqrt(xp.sum(u * u))
    one = xp.ones_like(pn)
    zero = xp.logical_or(pn == 0, un == 0)
    if max_norm is not None:
        pn = xp.minimum(pn, one * max_norm)
    if eps:
        un = un + eps
    return xp.where(zero, one, pn / xp.where(zero, one, un))


class LAMB(Optimizer):
    r"""LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020).

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        r &= \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}
             + \lambda p, \quad
        p \leftarrow p - \eta\, \frac{\lVert p \rVert}{\lVert r \rVert}\, r

    per tensor, with the ratio 1 where either norm is 0: the maths of ``optax.lamb``. With
    ``exclude_1d=True`` scalars and vectors (biases, norm scales) get neither weight decay nor
    the trust ratio (the BERT recipe); optax's ``mask`` (per-leaf decay) is a per-path
    ``weight_decay`` override here.

    The further options give ``pytorch_optimizer.Lamb``'s maths (``anyoptim.torch.Lamb``):
    ``bias_correction="first"`` (moments not corrected, the step divided by
    :math:`1 - \beta_1^t`) or ``"none"``, ``grad_averaging=False`` (:math:`m \leftarrow
    \beta_1 m + g`), ``decouple=True`` (:math:`p \leftarrow p(1 - \eta\lambda)` before the
    ratio is measured; ``fixed_decay=True``: :math:`p(1 - \lambda)`), ``max_norm`` (the ratio's
    :math:`\lVert p \rVert` clipped), ``trust_eps`` (added to :math:`\lVert r \rVert`) and
    ``trust_ratio=False`` (Adam). The global gradient-norm pre-clipping of timm's and
    pytorch_optimizer's ``Lamb`` is not part of this class (``anyoptim.torch.Lamb`` does it).

    State per parameter: ``m``, ``v`` (8 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon` (>= 0). Default ``1e-6``.
        eps_root: :math:`\epsilon_{root}` (>= 0). Default ``0``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        exclude_1d: no decay and no trust ratio for tensors with fewer than 2 dimensions.
        bias_correction: ``"both"`` (Adam's, default), ``"first"`` (only the step, by
            :math:`1 - \beta_1^t`) or ``"none"``.
        grad_averaging: weight the new gradient by :math:`1 - \beta_1` (default) or by 1.
        decouple: decoupled decay of the parameter instead of :math:`\lambda p` in
            :math:`r`. Default ``False``.
        fixed_decay: decoupled decay not scaled by the lr. Default ``False``.
        max_norm: clip :math:`\lVert p \rVert` in the ratio at this value, or None (default).
        trust_eps: added to :math:`\lVert r \rVert` in the ratio (>= 0). Default ``0``.
        trust_ratio: apply the trust ratio (default); ``False`` is Adam.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.LAMB(learning_rate=0.1)
        >>> opt.apply_gradients({"w": np.array([1.0, 1.0])}, {"w": np.array([3.0, 4.0])})
        {'w': array([2.6464466, 3.6464466])}
    """

    _name = "LAMB"
    hyperparameters: tuple[str, ...] = ("betas", "eps", "eps_root", "weight_decay", "exclude_1d",
                                        "bias_correction", "grad_averaging", "decouple",
                                        "fixed_decay", "max_norm", "trust_eps", "trust_ratio")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-6,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        exclude_1d: bool = False,
        bias_correction: str = "both",
        grad_averaging: bool = True,
        decouple: bool = False,
        fixed_decay: bool = False,
        max_norm: float | None = None,
        trust_eps: float = 0.0,
        trust_ratio: bool = True,
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        require(eps_root >= 0.0, self._name, "eps_root", ">= 0", eps_root)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(bias_correction in ("both", "first", "none"), self._name, "bias_correction",
                "'both', 'first' or 'none'", bias_correction)
        require(max_norm is None or max_norm > 0, self._name, "max_norm", "None or > 0",
                max_norm)
        require(trust_eps >= 0.0, self._name, "trust_eps", ">= 0", trust_eps)
        self._maybe_schedule("learning_rate", learning_rate)
        self.bias_correction = bias_correction
        self.grad_averaging = grad_averaging
        self.decouple = decouple
        self.fixed_decay = fixed_decay
        self.max_norm = max_norm
        self.trust_eps = trust_eps
        self.trust_ratio = trust_ratio
        self.betas = tuple(betas)
        self.eps = eps
        self.eps_root = eps_root
        self.weight_decay = weight_decay
        self.exclude_1d = exclude_1d

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["m"] = self.xp.zeros_like(parameter)
        state["v"] = self.xp.zeros_like(parameter)

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Hyper) -> Any:
        xp = self.xp
        g, p = gradient, parameter
        b1, b2 = h["betas"]
        t = step_value(xp, self._state["step"], p.dtype)
        m = b1 * state["m"] + ((1 - b1) * g if h["grad_averaging"] else g)
        v = b2 * state["v"] + (1 - b2) * (g * g)
        c1, c2 = _bias(xp, b1, t), _bias(xp, b2, t)
        if not isinstance(t, float):
            c1, c2 = xp.astype(c1, p.dtype), xp.astype(c2, p.dtype)
        lr = number(xp, h["learning_rate"], p.dtype)
        mode = h["bias_correction"]
        if mode == "both":
            r = (m / c1) / (xp.sqrt(v / c2 + h["eps_root"]) + h["eps"])
        else:
            r = m / (xp.sqrt(v + h["eps_root"]) + h["eps"])
        small = bool(h["exclude_1d"]) and len(p.shape) < 2
        wd = h["weight_decay"]
        if not small and not is_zero(wd):
            wd = number(xp, wd, p.dtype)
            if h["decouple"]:
                p = p * (1 - (wd if h["fixed_decay"] else lr * wd))
            else:
                r = r + wd * p
        if not small and h["trust_ratio"]:
            r = r * trust_ratio(xp, p, r, h["max_norm"], h["trust_eps"])
        state["m"], state["v"] = m, v
        if mode == "first":
            return p - (lr / c1) * r
        return p - lr * r
