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

import numpy as np

from .. import _backend
from .._backend import finalize, library_name
from .._backend._rules import Elementwise, Hyper, is_zero
from . import _tree
from ._base import LearningRate, Optimizer
from ._validate import check_betas, require

#: The top-level scalar state entries of every schedule-free optimizer.
SCALARS = ("b1", "max_lr", "weight_sum")

CONVENTIONS = ("schedulefree", "optax")


# ----------------------------------------------------------------------------- scalars
def averaging(xp: Any, t: Any, lr: Any, max_lr: Any, weight_sum: Any, r: Any,
              power: Any) -> tuple[Any, Any, Any]:
    """``(c, max_lr, weight_sum)`` after step ``t`` (from 1) with learning rate ``lr``:
    :math:`w_t = t^r \\max_{s\\le t}(\\eta_s)^p`, :math:`c_t = w_t / \\sum_{s\\le t} w_s`
    (0 while the sum is 0). Works on 0-d arrays of any library (and under jit)."""
    max_lr = xp.maximum(max_lr, lr)
    weight = max_lr**power if is_zero(r) else (t**r) * (max_lr**power)
    weight_sum = weight_sum + weight
    positive = weight_sum > 0
    zero = weight_sum * 0
    c = xp.where(positive, weight / xp.where(positive, weight_sum, zero + 1), zero)
    return c, max_lr, weight_sum


def factors(xp: Any, t: Any, kind: str, h: Hyper) -> tuple[Any, Any, Any, Any]:
    """``(f_step, f_weight, bc2, adaptive)`` for step ``t`` (a 0-d float array, from 1).

    The z step uses the learning rate times ``f_step``, the averaging weight the learning rate
    times ``f_weight``; ``bc2`` is :math:`1-\\beta_2^t` and ``adaptive`` is 1 where the gradient
    is divided by :math:`\\sqrt{\\hat v}+\\epsilon` (0 in RAdam's first steps).
    """
    one = t * 0 + 1
    bc2 = one
    if kind != "sgd":
        b2 = h["betas"][1]
        b2t = b2**t
        bc2 = 1 - b2t
    adaptive = one
    if kind == "radam":
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2t / bc2
        ok = rho_t > 4.0
        q = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        rect = xp.where(ok, xp.sqrt(xp.maximum(q, 0 * one)),
                        0 * one if h["silent_sgd_phase"] else one)
        return rect, rect, bc2, xp.where(ok, one, 0 * one)
    warmup = h["warmup_steps"]
    if not warmup:
        return one, one, bc2, adaptive
    if h["convention"] == "optax":
        # optax.warmup_constant_schedule: the z step reads it at the count (from 0), the
        # averaging weight at the count + 1
        w = one * warmup
        return (xp.where(t - 1 < w, t - 1, w) / warmup, xp.where(t < w, t, w) / warmup, bc2,
                adaptive)
    # schedulefree: lr * (k + 1) / warmup_steps while k < warmup_steps
    f = xp.where(t <= warmup, t / warmup, one)
    return f, f, bc2, adaptive


def first_beta(h: Hyper) -> Any:
    """:math:`\\beta_1` (``momentum`` for SGD)."""
    return h["momentum"] if "momentum" in h else h["betas"][0]


def _cast(xp: Any, x: Any, dtype: Any) -> Any:
    return x if isinstance(x, (int, float)) else xp.astype(x, dtype)


# ----------------------------------------------------------------------------- the rule
def _flags(h: Hyper) -> tuple[bool, bool]:
    return (not is_zero(h["weight_decay"]), h["convention"] == "optax")


def _scalars(xp: Any, h: Hyper, step: Any, dtype: Any) -> tuple[Any, ...]:
    f, c, bc2, adaptive = (_cast(xp, x, dtype) for x in h["_sf"])
    # (the torch drop-ins pass torch's "lr")
    lr = _cast(xp, h["learning_rate"] if "learning_rate" in h else h["lr"], dtype) * f
    b1 = first_beta(h)
    b2 = h["betas"][1] if "betas" in h else 0.0
    eps = h.get("eps", 0.0)
    # eps where the gradient is normalised, 1 (exactly) where it is not
    e = eps * adaptive + (1 - adaptive)
    return (lr, c, lr * (b1 * (1 - c) - 1), b1, 1 - b1, b2, 1 - b2, bc2, adaptive, e,
            h["weight_decay"])


def _adaptive_element(ops: Any, flags: tuple[bool, bool]) -> Any:
    decay, optax_form = flags

    def adaptive(p: Any, g: Any, z: Any, v: Any, sc: Any) -> tuple[Any, Any, Any]:
        lr, c, y_scale, b1, one_minus_b1, b2, one_minus_b2, bc2, a, e, wd = sc
        v = b2 * v + one_minus_b2 * (g * g)
        u = g / (ops.sqrt(v / bc2) * a + e)
        if decay:
            u = u + wd * p
        if optax_form:
            # optax.contrib.schedule_free: y rebuilt from the evaluation point x
            z_new = z - lr * u
            x = (1 - c) * ((p - one_minus_b1 * z) / b1) + c * z_new
            return b1 * x + one_minus_b1 * z_new, z_new, v
        y = p + c * (z - p)
        return y + y_scale * u, z - lr * u, v

    return adaptive


def _plain_element(ops: Any, flags: tuple[bool, bool]) -> Any:
    decay, optax_form = flags

    def plain(p: Any, g: Any, z: Any, sc: Any) -> tuple[Any, Any]:
        lr, c, y_scale, b1, one_minus_b1 = sc[0], sc[1], sc[2], sc[3], sc[4]
        u = g
        if decay:
            u = u + sc[10] * p
        if optax_form:
            z_new = z - lr * u
            x = (1 - c) * ((p - one_minus_b1 * z) / b1) + c * z_new
            return b1 * x + one_minus_b1 * z_new, z_new
        y = p + c * (z - p)
        return y + y_scale * u, z - lr * u

    return plain


ADAPTIVE_RULE = Elementwise(state=("z", "v"), element=_adaptive_element, scalars=_scalars,
                            flags=_flags)
PLAIN_RULE = Elementwise(state=("z",), element=_plain_element, scalars=_scalars, flags=_flags)


# ----------------------------------------------------------------------------- base class
class _ScheduleFree(Optimizer):
    """What the three schedule-free optimizers share: the top-level scalars, the averaging
    weight computed once per update, the evaluation and training points."""

    _kind = "adamw"

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        xp = self.xp
        state["z"] = _copy(xp, parameter)
        if "v" in self.rule.state:  # type: ignore[union-attr]
            state["v"] = xp.zeros_like(parameter)

    def _apply(self, gradients: Any, parameters: Any, hyper: Any,
               inplace: bool) -> tuple[Any, bool]:
        # z starts at the parameters (MLX's lazy init would see only the gradients)
        rollback = None
        if not self._initialized:
            try:
                like: list[Any] = []
                structure = _tree.gather(gradients, parameters, parameters, [], like, [])
                matching = _tree.unflatten(structure, iter(like))
            except Exception:  # the step itself reports the mismatch
                matching = None
            if matching is not None:
                rollback = _tree.snapshot_dicts(self._state)
                try:
                    self.init(matching)
                except BaseException:
                    self._rollback_init(rollback)
                    raise
        try:
            return super()._apply(gradients, parameters, hyper, inplace)
        except BaseException:
            self._rollback_init(rollback)
            raise

    def hyper(self) -> dict[str, Any]:
        h = super().hyper()
        now = self.__dict__.get("_sf_now")
        if now is not None:
            h["_sf"] = now
        return h

    def _scalar_keys(self) -> tuple[str, ...]:
        return (*super()._scalar_keys(), *SCALARS)

    def _check_reserved(self, tree: Any, what: str) -> None:
        super()._check_reserved(tree, what)
        if isinstance(tree, Mapping):
            for key in SCALARS:
                if key in tree:
                    raise ValueError(
                        f"{type(self).__name__}: the {what} tree has a top-level entry named "
                        f"{key!r}, which collides with the optimizer's own {key!r} state entry. "
                        "Rename the parameter or nest the parameters one level deeper "
                        "(e.g. {'model': params})."
                    )

    def _adopt_scalars(self, like: Any) -> None:
        super()._adopt_scalars(like)
        state = self._state
        lib = library_name(like)
        initial = {"b1": float(first_beta(self.hyper())), "max_lr": 0.0, "weight_sum": 0.0}
        for key in SCALARS:
            value = state.get(key)
            if value is None:
                value = np.asarray(initial[key], np.float64)
            if library_name(value) != lib:
                if lib == "mlx":  # no float64 on MLX's GPU
                    host = value if library_name(value) == "numpy" else _backend._to_numpy(value)
                    value = np.asarray(host, np.float32)
                value = _backend.to_library(value, like)
            state[key] = value

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


def _copy(xp: Any, x: Any) -> Any:
    if getattr(xp, "__name__", "") == "mlx.core":
        return xp.array(x)
    return xp.asarray(x, copy=True)


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
