"""NAdam and NAdamW: Adam with Nesterov momentum (Dozat, 2016).

Two algorithms go by this name. torch.optim's (the default here) decays the momentum with a
schedule :math:`\\mu_t` and keeps the running product :math:`\\prod_{s\\le t}\\mu_s` as
state; optax's (and timm's NAdamW) keeps :math:`\\beta_1` constant. The product is one scalar
for all parameters, so it lives at the top level of the state (``mu_product``), computed once
per update by :meth:`NAdam._advance`, before the elementwise maths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _backend
from .._backend import finalize
from .._backend._rules import Elementwise, Hyper, is_zero, static
from ._base import LearningRate, Optimizer
from ._radam import check_common, one_minus_pow, weight_decay_mode, widen, work_dtype
from ._validate import require

SCALARS = ("mu_product",)


def momentum(b1: Any, momentum_decay: Any, t: Any) -> Any:
    r"""torch's momentum schedule :math:`\mu_t = \beta_1 (1 - \frac12 0.96^{t\psi})`."""
    return b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def coefficients(b1: Any, momentum_decay: Any, t: Any, product: Any) -> tuple[Any, Any, Any]:
    r"""``(mu_product_t, c_g, c_m)`` of torch's form at step ``t`` from the product after
    step ``t - 1``: :math:`\Pi_t = \Pi_{t-1}\mu_t`, :math:`c_g = (1-\mu_t)/(1-\Pi_t)`,
    :math:`c_m = \mu_{t+1}/(1-\Pi_t\mu_{t+1})` (numbers or 0-d arrays)."""
    mu = momentum(b1, momentum_decay, t)
    mu_next = momentum(b1, momentum_decay, t + 1)
    product = product * mu
    return product, (1.0 - mu) / (1.0 - product), mu_next / (1.0 - product * mu_next)


# ----------------------------------------------------------------------------- the rule
def _flags(h: Hyper) -> tuple[Any, ...]:
    b1 = static(h["betas"][0])
    small = b1 is None or b1 > 0.5  # torch's lerp formula for weights 1 - b1 below 0.5
    return (weight_decay_mode(h), bool(h.get("maximize", False)), h["convention"] == "optax",
            not is_zero(h["eps_root"]), small)


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    # h["_nadam"]: (c_g, c_m) in torch's form, (1 - b1^t, 1 - b1^(t+1)) in optax's
    work = work_dtype(xp, step, dtype)
    a, b = (widen(xp, x, work) for x in h["_nadam"])
    lr = widen(xp, h["learning_rate"], work)
    t = widen(xp, step, work)
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    if h["convention"] != "optax":
        a, b = -lr * a, -lr * b
    return (-lr, wd, 1 - lr * wd, b1, 1 - b1, b2, 1 - b2, a, b, one_minus_pow(xp, b2, t), h["eps"],
            h["eps_root"])


def _element(ops: Any, flags: tuple[Any, ...]) -> Any:
    wd_mode, maximize, optax_form, root, small = flags

    def nadam(p: Any, g: Any, m: Any, v: Any, sc: Any) -> Any:
        neg_lr, wd, decay, b1, w1, b2, w2, a, b, bc2, eps, eps_root = sc
        if maximize:
            g = -g
        if wd_mode == 1:
            g = g + wd * p
        if optax_form:  # optax.scale_by_adam(nesterov=True)'s order of operations
            m = w1 * g + b1 * m
            v = w2 * (g * g) + b2 * v
            vh = v / bc2
            den = ops.sqrt(vh + eps_root if root else vh) + eps
            u = (b1 * (m / b) + w1 * (g / a)) / den
            if wd_mode == 2:
                u = u + wd * p
            return p + neg_lr * u, m, v
        # torch.optim.NAdam's: lerp, addcmul, then two addcdiv steps
        if wd_mode == 2:
            p = p * decay
        m = m + w1 * (g - m) if small else g - (g - m) * b1
        v = v * b2 + w2 * g * g
        vh = v / bc2
        den = ops.sqrt(vh + eps_root if root else vh) + eps
        p = p + a * g / den
        return p + b * m / den, m, v

    return nadam


RULE = Elementwise(state=("m", "v"), element=_element, scalars=_scalars, flags=_flags)


class NAdam(Optimizer):
    r"""NAdam (Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop).

    Adam whose step looks one momentum step ahead. In ``torch.optim.NAdam``'s form (the
    default, ``convention="torch"``) the momentum follows a schedule and its running product
    :math:`\Pi_t` is kept:

    .. math::

        \mu_t &= \beta_1 \big(1 - \tfrac12\, 0.96^{t\psi}\big), \quad
        \Pi_t = \prod_{s \le t} \mu_s \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        d_t = \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        p_t &= p_{t-1} - \eta\, \frac{1 - \mu_t}{1 - \Pi_t} \frac{g_t}{d_t}
              - \eta\, \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}} \frac{m_t}{d_t}

    with :math:`t` counted from 1 and :math:`\psi` = ``momentum_decay``. ``convention="optax"``
    is ``optax.nadam`` (and the MLCommons/timm NAdamW): :math:`\mu_t = \beta_1` constant, i.e.
    the limit :math:`\psi \to \infty` of the above, :math:`\Pi_t = \beta_1^t`, so the direction
    is :math:`(\beta_1 \frac{m_t}{1 - \beta_1^{t+1}} + (1 - \beta_1)\frac{g_t}{1 - \beta_1^t})
    / (\sqrt{v_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon)` (``momentum_decay`` is then
    unused). Neither form has Dozat's extra :math:`\beta_2` factor (optax omits it on purpose).

    Weight decay is added to the gradient (L2, torch's default) unless
    ``decoupled_weight_decay=True`` (NAdamW, see :class:`NAdamW`): :math:`p \leftarrow p(1 -
    \eta\lambda)` before the step in torch's form, :math:`\lambda p` added to the direction
    (``optax.nadamw``, the same maths) in optax's.

    State per parameter: ``m`` and ``v`` (8 bytes per float32 parameter); at the top level,
    ``mu_product`` (:math:`\Pi_t`, in float64 where the library has it, else float32). With
    per-call ``betas`` or ``momentum_decay`` overrides the product follows the optimizer's own.

    Args:
        learning_rate: :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon` (>= 0). Default ``1e-8``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0``.
        momentum_decay: :math:`\psi` (>= 0). Default ``4e-3`` (torch's).
        decoupled_weight_decay: decay the weights as AdamW does. Default ``False``.
        eps_root: :math:`\epsilon_{root}` (>= 0) inside the root (optax's). Default ``0``.
        convention: ``"torch"`` (default) or ``"optax"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.NAdam(learning_rate=0.1)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> for _ in range(2):
        ...     params = opt.apply_gradients({"w": np.array([1.0, -2.0], np.float32)}, params)
        >>> np.round(params["w"], 4), float(opt.state["mu_product"]) < 1
        (array([-0.184,  0.184], dtype=float32), True)
    """

    _extra_scalars = SCALARS

    _name = "NAdam"
    rule = RULE
    hyperparameters: tuple[str, ...] = ("betas", "eps", "weight_decay", "momentum_decay",
                                        "decoupled_weight_decay", "eps_root", "convention")

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        eps_root: float = 0.0,
        convention: str = "torch",
    ) -> None:
        super().__init__()
        self._setup(learning_rate, betas, eps, weight_decay, momentum_decay,
                    decoupled_weight_decay, eps_root, convention)

    def _setup(self, learning_rate: LearningRate, betas: Sequence[float], eps: float,
               weight_decay: float, momentum_decay: float, decoupled_weight_decay: bool,
               eps_root: float, convention: str) -> None:
        check_common(self._name, betas, eps, eps_root, weight_decay, convention)
        require(isinstance(momentum_decay, (int, float)) and momentum_decay >= 0.0, self._name,
                "momentum_decay", "a number >= 0", momentum_decay)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum_decay = momentum_decay
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.eps_root = eps_root
        self.convention = convention

    # ------------------------------------------------------------------ the running product
    def hyper(self) -> dict[str, Any]:
        h = super().hyper()
        now = self.__dict__.get("_nadam_now")
        if now is not None:
            h["_nadam"] = now
        return h

    def _adopt_scalars(self, like: Any) -> None:
        super()._adopt_scalars(like)
        self._adopt_extra(like, {"mu_product": 1.0})

    def _advance(self) -> dict[str, Any]:
        state = self._state
        if "mu_product" not in state:
            self._adopt_scalars(state["step"])
        old = state["mu_product"]
        saved = super()._advance()
        try:
            h = self.hyper()
            xp = _backend.namespace(old)
            t = xp.astype(state["step"], old.dtype)
            b1 = h["betas"][0]
            if h["convention"] == "optax":
                product = b1**t
                now: tuple[Any, Any] = (one_minus_pow(xp, b1, t), one_minus_pow(xp, b1, t + 1))
            else:
                product, c_g, c_m = coefficients(b1, h["momentum_decay"], t, old)
                now = (c_g, c_m)
            state["mu_product"] = finalize(old * 0 + product)
            self._nadam_now = tuple(finalize(x) for x in now)
        except BaseException:
            state.update(saved)
            state["mu_product"] = old
            raise
        saved["mu_product"] = old
        return saved


class NAdamW(NAdam):
    r"""NAdamW: :class:`NAdam` with decoupled weight decay (``torch.optim.NAdam(...,
    decoupled_weight_decay=True)`` in torch's form, ``optax.nadamw`` with
    ``convention="optax"``).

    :math:`p \leftarrow p(1 - \eta\lambda)` before the NAdam step (torch's form), or
    :math:`\lambda p` added to the NAdam direction before scaling by :math:`-\eta` (optax's);
    see :class:`NAdam` for the rest.

    State per parameter: ``m`` and ``v`` (8 bytes per float32 parameter); ``mu_product`` at
    the top level.

    Args:
        learning_rate: :math:`\eta`, or a schedule.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: :math:`\lambda` (>= 0). Default ``0.01`` (as :class:`AdamW`; torch's
            NAdam defaults to 0, optax's nadamw to 1e-4).
        momentum_decay: :math:`\psi`. Default ``4e-3``.
        eps_root: :math:`\epsilon_{root}` inside the root. Default ``0``.
        convention: ``"torch"`` (default) or ``"optax"``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.NAdamW(learning_rate=0.1, weight_decay=0.5)
        >>> opt.apply_gradients({"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)})
        {'w': array([0.95, 0.95], dtype=float32)}
    """

    _name = "NAdamW"

    def __init__(
        self,
        learning_rate: LearningRate,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        momentum_decay: float = 4e-3,
        eps_root: float = 0.0,
        convention: str = "torch",
    ) -> None:
        Optimizer.__init__(self)
        self._setup(learning_rate, betas, eps, weight_decay, momentum_decay, True, eps_root,
                    convention)
