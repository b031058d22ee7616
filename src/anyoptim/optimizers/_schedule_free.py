"""Schedule-free AdamW, SGD and RAdam (Defazio et al., "The Road Less Scheduled", 2024).

One elementwise rule holds the maths of all three (and of the drop-ins
``anyoptim.torch.AdamWScheduleFree`` / ``SGDScheduleFree`` / ``RAdamScheduleFree`` and the
factories ``anyoptim.optax.schedule_free_adamw`` / ``schedule_free_sgd``). The averaging
weight :math:`c_t` depends on every step's learning rate, so two scalars are kept at the top
level of the state (``max_lr``, ``weight_sum``, plus ``b1`` for the evaluation point, as in
optax's ``ScheduleFreeState``); they are computed once per update, before the elementwise
maths, by :func:`averaging`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import _backend
from .._backend import finalize, library_name
from . import _tree
from ._base import LearningRate, Optimizer
from ._schedule_free_rule import (
    ADAPTIVE_RULE,
    CONVENTIONS,
    PLAIN_RULE,
    SCALARS,
    averaging,
    factors,
    first_beta,
)
from ._validate import check_betas, require
from ._wrapper import copy_array


# ----------------------------------------------------------------------------- base class
class _ScheduleFree(Optimizer):
    """What the three schedule-free optimizers share: the top-level scalars, the averaging
    weight computed once per update, the evaluation and training points."""

    _kind = "adamw"
    _extra_scalars = SCALARS
    _init_from_parameters = True  # z starts at the parameters

    def _adopt_scalars(self, like: Any) -> None:
        super()._adopt_scalars(like)
        self._adopt_extra(like, {"b1": float(first_beta(self.hyper())), "max_lr": 0.0,
                                 "weight_sum": 0.0})

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        xp = self.xp
        state["z"] = copy_array(parameter)  # (torch: detached, so no requires_grad copy)
        if "v" in self.rule.state:  # type: ignore[union-attr]
            state["v"] = xp.zeros_like(parameter)

    def hyper(self) -> dict[str, Any]:
        h = super().hyper()
        now = self.__dict__.get("_sf_now")
        if now is not None:
            h["_sf"] = now
        return h

    def _advance(self) -> dict[str, Any]:
        state = self._state
        if "weight_sum" not in state:
            self._adopt_scalars(state["step"])
        old = {k: state[k] for k in SCALARS}
        saved = super()._advance()
        try:
            h = self.hyper()
            ws = state["weight_sum"]
            xp = _backend.namespace(ws)
            dt = ws.dtype
            t = xp.astype(state["step"], dt)
            lr = xp.astype(state["learning_rate"], dt)
            f_step, f_weight, bc2, adaptive = factors(xp, t, self._kind, h)
            lr_weight = lr * f_weight
            schedule = self._schedulers.get("learning_rate")
            if schedule is not None and h.get("convention") == "optax":
                # optax evaluates the schedule at the count + 1 for the averaging weight
                lr_weight = xp.astype(self._schedule_value(schedule(state["step"])), dt)
            c, max_lr, weight_sum = averaging(xp, t, lr_weight, state["max_lr"], ws,
                                              h["r"], h["weight_lr_power"])
            state["max_lr"] = finalize(max_lr)
            state["weight_sum"] = finalize(weight_sum)
            state["b1"] = finalize(state["b1"] * 0 + first_beta(h))
            self._sf_now = tuple(finalize(x) for x in (f_step, c, bc2, adaptive))
        except BaseException:
            state.update(saved)
            state.update(old)
            raise
        saved.update(old)
        return saved

    # ------------------------------------------------------------------ x and y
    def eval_params(self, parameters: Any) -> Any:
        """The evaluation point :math:`x = y + (1 - 1/\\beta_1)(z - y)` for the training
        point ``parameters`` (the arrays this optimizer updates); a new tree, inputs kept.
        Parameters without state (never updated) are returned as they are."""
        return self._towards_z(parameters, 1 - 1 / first_beta(self.hyper()))

    def train_params(self, parameters: Any) -> Any:
        """The training point :math:`y = x + (1 - \\beta_1)(z - x)` for the evaluation point
        ``parameters`` (the inverse of :meth:`eval_params`); a new tree, inputs kept."""
        return self._towards_z(parameters, 1 - first_beta(self.hyper()))

    def _towards_z(self, parameters: Any, weight: float) -> Any:
        structure, leaves = _tree.flatten(parameters)
        paths = _tree.paths(structure)
        out = []
        for path, p in zip(paths, leaves):
            node: Any = self._state
            for key in path.split(".") if path else []:
                if isinstance(node, Mapping):
                    node = node.get(key)
                elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
                    node = node[int(key)]
                else:
                    node = None
                if node is None:
                    break
            z = node.get("z") if isinstance(node, Mapping) else None
            if z is None or library_name(p) is None:
                out.append(p)
                continue
            out.append(finalize(p + weight * (z - p)))
        return _tree.unflatten(structure, iter(out))


def _check_common(name: str, weight_decay: float, r: float, weight_lr_power: float) -> None:
    require(weight_decay >= 0.0, name, "weight_decay", ">=0", weight_decay)
    require(r >= 0.0, name, "r", ">=0", r)
    require(weight_lr_power >= 0.0, name, "weight_lr_power", ">=0", weight_lr_power)


def _check_warmup(name: str, warmup_steps: int, convention: str) -> None:
    require(isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool)
            and warmup_steps >= 0, name, "warmup_steps", "an int >= 0", warmup_steps)
    require(convention in CONVENTIONS, name, "convention", "'schedulefree' or 'optax'",
            convention)


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al., "The Road Less Scheduled", NeurIPS 2024).

    The parameters hold the training point :math:`y`; the state holds :math:`z` and
    :math:`v`. With :math:`t` the step from 1 and :math:`\eta_t` the learning rate after
    warmup:

    .. math::

        v &\leftarrow \beta_2 v + (1-\beta_2) g^2, \qquad
        u = \frac{g}{\sqrt{v/(1-\beta_2^t)} + \epsilon} + \lambda y \\
        c_t &= \frac{w_t}{\sum_{s \le t} w_s}, \qquad
        w_t = t^r \, (\max_{s\le t} \eta_s)^{p} \\
        y &\leftarrow (1 - c_t)\, y + c_t z + \eta_t(\beta_1(1-c_t) - 1)\, u, \qquad
        z \leftarrow z - \eta_t u

    Evaluate (and save for inference) at :math:`x = (y - (1-\beta_1) z)/\beta_1`:
    :meth:`eval_params` returns it, :meth:`train_params` goes back. The defaults and the
    maths are ``schedulefree.AdamWScheduleFree``'s (warmup :math:`\eta (k+1)/W` at update
    :math:`k` from 0, :math:`y` updated directly). ``convention="optax"`` gives
    ``optax.contrib.schedule_free_adamw``'s: the z step takes :math:`\eta\min(k, W)/W` and
    the weight :math:`\eta\min(k+1, W)/W` (``warmup_constant_schedule`` read at two counts,
    one step apart), and :math:`y` is rebuilt from :math:`x` (the same maths, other
    rounding); optax has no :math:`r`.

    The averaging scalars ``max_lr``, ``weight_sum`` (and ``b1``) live at the top level of the
    state, computed in float64 where the library has it (NumPy, PyTorch), else float32. With
    per-group learning rates, the weight follows the optimizer's own learning rate.

    Args:
        learning_rate: :math:`\eta`, or a schedule. Default ``0.0025``.
        betas: :math:`(\beta_1, \beta_2)`; :math:`\beta_1 \in (0, 1)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: :math:`\lambda`, applied at :math:`y`. Default ``0``.
        warmup_steps: linear warmup length :math:`W` (0: none). Default ``0``.
        r: polynomial weight power. Default ``0``.
        weight_lr_power: :math:`p`. Default ``2``.
        convention: ``"schedulefree"`` (default) or ``"optax"``.

    State per parameter: ``z`` and ``v`` (8 bytes per float32 parameter).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ScheduleFreeAdamW(learning_rate=0.1)
        >>> y = opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        >>> y["w"], opt.eval_params(y)["w"]
        (array([-0.1, -0.1], dtype=float32), array([-0.1, -0.1], dtype=float32))
    """

    _name = "ScheduleFreeAdamW"
    rule = ADAPTIVE_RULE
    hyperparameters: tuple[str, ...] = ("betas", "eps", "weight_decay", "warmup_steps", "r",
                                        "weight_lr_power", "convention")

    def __init__(
        self,
        learning_rate: LearningRate = 0.0025,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        convention: str = "schedulefree",
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(betas[0] > 0.0, self._name, "betas[0]", ">0 (x = (y - (1-b1) z)/b1)",
                betas[0])
        require(eps >= 0.0, self._name, "eps", ">=0", eps)
        _check_common(self._name, weight_decay, r, weight_lr_power)
        _check_warmup(self._name, warmup_steps, convention)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.r = r
        self.weight_lr_power = weight_lr_power
        self.convention = convention


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD (Defazio et al., "The Road Less Scheduled", NeurIPS 2024).

    :class:`ScheduleFreeAdamW` with :math:`u = g + \lambda y` (no second moment) and
    :math:`\beta_1` called ``momentum``; ``schedulefree.SGDScheduleFree``'s defaults and maths,
    ``convention="optax"`` for ``optax.contrib.schedule_free_sgd``'s.

    Args:
        learning_rate: :math:`\eta`, or a schedule. Default ``1.0``.
        momentum: :math:`\beta_1 \in (0, 1)`. Default ``0.9``.
        weight_decay: :math:`\lambda`, applied at :math:`y`. Default ``0``.
        warmup_steps: linear warmup length (0: none). Default ``0``.
        r: polynomial weight power. Default ``0``.
        weight_lr_power: :math:`p`. Default ``2``.
        convention: ``"schedulefree"`` (default) or ``"optax"``.

    State per parameter: ``z`` (4 bytes per float32 parameter).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ScheduleFreeSGD(learning_rate=0.5)
        >>> y = opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)})
        >>> y["w"], opt.eval_params(y)["w"]
        (array([-0.5, -0.5], dtype=float32), array([-0.5, -0.5], dtype=float32))
    """

    _name = "ScheduleFreeSGD"
    _kind = "sgd"
    rule = PLAIN_RULE
    hyperparameters = ("momentum", "weight_decay", "warmup_steps", "r", "weight_lr_power",
                       "convention")

    def __init__(
        self,
        learning_rate: LearningRate = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        convention: str = "schedulefree",
    ) -> None:
        super().__init__()
        require(0.0 < momentum < 1.0, self._name, "momentum", "in (0, 1)", momentum)
        _check_common(self._name, weight_decay, r, weight_lr_power)
        _check_warmup(self._name, warmup_steps, convention)
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.r = r
        self.weight_lr_power = weight_lr_power
        self.convention = convention


class ScheduleFreeRAdam(_ScheduleFree):
    r"""Schedule-free RAdam (``schedulefree.RAdamScheduleFree``).

    :class:`ScheduleFreeAdamW` whose learning rate is multiplied by RAdam's rectifier
    :math:`\rho`-term (Liu et al., ICLR 2020) instead of a warmup: while
    :math:`\rho_t \le 4` the step is 0 (``silent_sgd_phase=True``, the default) or plain SGD
    on :math:`g + \lambda y`, after which :math:`u = g/(\sqrt{v/(1-\beta_2^t)}+\epsilon) +
    \lambda y` with the rectified learning rate.

    Args:
        learning_rate: :math:`\eta`, or a schedule. Default ``0.0025``.
        betas: :math:`(\beta_1, \beta_2)`. Default ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default ``1e-8``.
        weight_decay: :math:`\lambda`. Default ``0``.
        r: polynomial weight power. Default ``0``.
        weight_lr_power: :math:`p`. Default ``2``.
        silent_sgd_phase: no step while the rectifier is undefined. Default ``True``.

    State per parameter: ``z`` and ``v`` (8 bytes per float32 parameter).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.ScheduleFreeRAdam(learning_rate=0.1)
        >>> params = {"w": np.zeros(2, np.float32)}
        >>> for _ in range(6):
        ...     params = opt.apply_gradients({"w": np.ones(2, np.float32)}, params)
        >>> np.round(params["w"], 4)
        array([-0.0036, -0.0036], dtype=float32)
    """

    _name = "ScheduleFreeRAdam"
    _kind = "radam"
    rule = ADAPTIVE_RULE
    hyperparameters = ("betas", "eps", "weight_decay", "r", "weight_lr_power",
                       "silent_sgd_phase", "convention")

    def __init__(
        self,
        learning_rate: LearningRate = 0.0025,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        silent_sgd_phase: bool = True,
    ) -> None:
        super().__init__()
        check_betas(self._name, betas)
        require(betas[0] > 0.0, self._name, "betas[0]", ">0", betas[0])
        require(eps >= 0.0, self._name, "eps", ">=0", eps)
        _check_common(self._name, weight_decay, r, weight_lr_power)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.r = r
        self.weight_lr_power = weight_lr_power
        self.silent_sgd_phase = bool(silent_sgd_phase)
        self.convention = "schedulefree"
