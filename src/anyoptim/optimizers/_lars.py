"""LARS: momentum SGD with a per-tensor trust ratio."""

from __future__ import annotations

from typing import Any

from .._backend._rules import Hyper, is_zero
from ._adopt import number
from ._base import LearningRate, Optimizer
from ._validate import require


class LARS(Optimizer):
    r"""LARS (You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks",
    2017), in ``optax.lars``'s form.

    .. math::

        u &= g + \lambda p, \quad
        \phi = \frac{\kappa \lVert p \rVert}{\lVert u \rVert + \epsilon}
        \ (1 \text{ where either norm is } 0) \\
        b &\leftarrow \mu b + \eta \phi u, \quad p \leftarrow p - b
        \quad (\text{Nesterov: } p \leftarrow p - (\mu b + \eta \phi u))

    per tensor: the momentum accumulates learning-rate-scaled steps (optax's order, which
    matters under schedules). ``exclude_1d=True`` gives scalars and vectors (biases, norm
    scales) neither weight decay nor the trust ratio; optax's ``weight_decay_mask`` and
    ``trust_ratio_mask`` are per-path ``weight_decay`` / ``trust_ratio`` overrides here.

    ``pytorch_optimizer.LARS``'s maths (``anyoptim.torch.LARS``) is ``momentum_lr=False`` (the
    momentum accumulates :math:`(1 - d)\,\phi u` and the lr scales the result:
    :math:`p \leftarrow p - \eta b`, or :math:`p - \eta(\phi u + \mu b)` with Nesterov),
    ``trust_denominator="sum"`` (:math:`\phi = \kappa \lVert p \rVert / (\lVert g \rVert
    + \lambda \lVert p \rVert + \epsilon)`, 1 where :math:`\lVert p \rVert` or the
    denominator is 0) and ``exclude_1d=True``.

    State per parameter: ``b`` (4 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        momentum: :math:`\mu`, in [0, 1). Default ``0.9``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        trust_coefficient: :math:`\kappa` (> 0). Default ``0.001``.
        eps: :math:`\epsilon` (>= 0). Default ``0``.
        nesterov: Nesterov momentum. Default ``False``.
        trust_ratio: apply the trust ratio. Default ``True``.
        exclude_1d: no decay and no trust ratio for tensors with fewer than 2 dimensions.
        dampening: :math:`d` in [0, 1): the momentum adds :math:`(1 - d)` times the step (not
            with ``momentum=0``). Default ``0``.
        momentum_lr: the momentum accumulates lr-scaled steps (optax's order, default), or
            unscaled ones with the lr applied after it (torch's SGD order).
        trust_denominator: ``"update"`` (:math:`\lVert g + \lambda p \rVert`, optax's,
            default) or ``"sum"`` (:math:`\lVert g \rVert + \lambda \lVert p \rVert`).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.LARS(learning_rate=0.5, trust_coefficient=0.5)
        >>> opt.apply_gradients({"w": np.array([1.0, 1.0])}, {"w": np.array([3.0, 4.0])})
        {'w': array([2.11611652, 3.11611652])}
    """

    _name = "LARS"
    hyperparameters: tuple[str, ...] = ("momentum", "weight_decay", "trust_coefficient", "eps",
                                        "nesterov", "trust_ratio", "exclude_1d", "dampening",
                                        "momentum_lr", "trust_denominator")

    def __init__(
        self,
        learning_rate: LearningRate,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 0.0,
        nesterov: bool = False,
        trust_ratio: bool = True,
        exclude_1d: bool = False,
        dampening: float = 0.0,
        momentum_lr: bool = True,
        trust_denominator: str = "update",
    ) -> None:
        super().__init__()
        require(0.0 <= momentum < 1.0, self._name, "momentum", "in [0, 1)", momentum)
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        require(trust_coefficient > 0.0, self._name, "trust_coefficient", "> 0",
                trust_coefficient)
        require(eps >= 0.0, self._name, "eps", ">= 0", eps)
        require(0.0 <= dampening < 1.0, self._name, "dampening", "in [0, 1)", dampening)
        require(trust_denominator in ("update", "sum"), self._name, "trust_denominator",
                "'update' or 'sum'", trust_denominator)
        self._maybe_schedule("learning_rate", learning_rate)
        self.dampening = dampening
        self.momentum_lr = momentum_lr
        self.trust_denominator = trust_denominator
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.trust_coefficient = trust_coefficient
        self.eps = eps
        self.nesterov = nesterov
        self.trust_ratio = trust_ratio
        self.exclude_1d = exclude_1d

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["b"] = self.xp.zeros_like(parameter)

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Hyper) -> Any:
        xp = self.xp
        g, p = gradient, parameter
        small = bool(h["exclude_1d"]) and len(p.shape) < 2
        wd = h["weight_decay"]
        decays = not small and not is_zero(wd)
        u = g + number(xp, wd, p.dtype) * p if decays else g
        if not small and h["trust_ratio"]:
            pn = xp.sqrt(xp.sum(p * p))
            if h["trust_denominator"] == "sum":
                den = xp.sqrt(xp.sum(g * g))
                if decays:
                    den = den + number(xp, wd, p.dtype) * pn
            else:
                den = xp.sqrt(xp.sum(u * u))
            one = xp.ones_like(pn)
            zero = xp.logical_or(pn == 0, den == 0)
            ratio = h["trust_coefficient"] * pn / xp.where(zero, one, den + h["eps"])
            u = u * xp.where(zero, one, ratio)
        lr = number(xp, h["learning_rate"], p.dtype)
        mu = h["momentum"]
        step = lr * u if h["momentum_lr"] else u
        if is_zero(mu):
            b = step
        else:
            damp = h["dampening"]
            b = mu * state["b"] + (step if is_zero(damp) else (1 - damp) * step)
        state["b"] = b
        out = mu * b + step if h["nesterov"] else b
        return p - out if h["momentum_lr"] else p - lr * out
