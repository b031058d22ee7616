"""signSGD and Signum: steps along the sign of the gradient or of its moving average."""

from __future__ import annotations

from typing import Any

from .._backend._rules import Elementwise, Hyper, is_zero
from ._adopt import number
from ._base import LearningRate, Optimizer
from ._validate import require


def _flags(h: Hyper) -> tuple[Any, ...]:
    wd = h["weight_decay"]
    mode = 0 if is_zero(wd) else (2 if h["decouple"] else 1)
    return (mode, bool(h.get("maximize", False)))


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    lr = number(xp, h["learning_rate"], dtype)
    beta = h.get("momentum", 0.0)
    wd = h["weight_decay"]
    return (lr, beta, 1 - beta, wd, 1 - lr * wd)


def _sign_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize = flags

    def sign_sgd(p: Any, g: Any, sc: Any) -> Any:
        lr, _, _, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        return (p - lr * ops.sign(g),)

    return sign_sgd


def _signum_element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize = flags

    def signum(p: Any, g: Any, m: Any, sc: Any) -> Any:
        lr, beta, one_minus_beta, wd, decay = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        elif wd_mode == 2:
            p = p * decay
        m = beta * m + one_minus_beta * g
        return p - lr * ops.sign(m), m

    return signum


class _SignBase(Optimizer):
    _name = "SignSGD"
    hyperparameters: tuple[str, ...] = ("weight_decay", "decouple")

    def _common(self, learning_rate: LearningRate, weight_decay: float, decouple: bool) -> None:
        require(weight_decay >= 0.0, self._name, "weight_decay", ">= 0", weight_decay)
        self._maybe_schedule("learning_rate", learning_rate)
        self.weight_decay = weight_decay
        self.decouple = decouple


class SignSGD(_SignBase):
    r"""signSGD (Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
    ICML 2018): :math:`p \leftarrow p - \eta\, \mathrm{sign}(g)`.

    Weight decay is decoupled, :math:`p \leftarrow p(1 - \eta\lambda)` (pytorch_optimizer's
    default), or added to the gradient with ``decouple=False``. ``optax.sign_sgd`` has none.
    :class:`Signum` adds momentum. :math:`\mathrm{sign}(0) = 0`.

    State per parameter: ``m``, the last gradient (4 bytes per float32 parameter; the torch
    drop-in keeps none).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decoupled decay (default) or L2 added to the gradient.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.SignSGD(learning_rate=0.125)
        >>> opt.apply_gradients({"w": np.array([3.0, -0.5, 0.0])}, {"w": np.zeros(3)})
        {'w': array([-0.125,  0.125,  0.   ])}
    """

    _name = "SignSGD"
    # Signum's rule with beta = 0 (m = g exactly): the MLX-style core treats a parameter with
    # an empty state dict as missing, so this class keeps the last gradient (the torch drop-in
    # runs the stateless rule below)
    rule = Elementwise(state=("m",), element=_signum_element, scalars=_scalars, flags=_flags)
    stateless_rule = Elementwise(state=(), element=_sign_element, scalars=_scalars,
                                 flags=_flags)

    def __init__(self, learning_rate: LearningRate, weight_decay: float = 0.0,
                 decouple: bool = True) -> None:
        super().__init__()
        self._common(learning_rate, weight_decay, decouple)


class Signum(_SignBase):
    r"""Signum (Bernstein et al., ICML 2018): signSGD along a moving average of the gradient.

    .. math::

        m \leftarrow \beta m + (1 - \beta) g, \quad p \leftarrow p - \eta\, \mathrm{sign}(m)

    the maths of ``optax.signum`` and of ``pytorch_optimizer.SignSGD`` with ``momentum > 0``.
    Weight decay as in :class:`SignSGD`.

    State per parameter: ``m`` (4 bytes per float32 parameter).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        momentum: :math:`\beta`, in [0, 1). Default ``0.9``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        decouple: decoupled decay (default) or L2 added to the gradient.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Signum(learning_rate=0.125)
        >>> opt.apply_gradients({"w": np.array([3.0, -0.5, 0.0])}, {"w": np.zeros(3)})
        {'w': array([-0.125,  0.125,  0.   ])}
    """

    _name = "Signum"
    rule = Elementwise(state=("m",), element=_signum_element, scalars=_scalars, flags=_flags)
    hyperparameters = ("momentum", "weight_decay", "decouple")

    def __init__(self, learning_rate: LearningRate, momentum: float = 0.9,
                 weight_decay: float = 0.0, decouple: bool = True) -> None:
        super().__init__()
        require(0.0 <= momentum < 1.0, self._name, "momentum", "in [0, 1)", momentum)
        self._common(learning_rate, weight_decay, decouple)
        self.momentum = momentum
