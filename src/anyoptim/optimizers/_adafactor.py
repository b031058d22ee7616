"""Adafactor: sub-linear memory second moments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._backend._rules import is_zero
from ._base import Optimizer, Schedule


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer and Stern, "Adafactor: adaptive learning rates with sublinear memory
    cost", ICML 2018).

    For tensors with two or more dimensions the second moment is stored factored, as a row and a
    column statistic per leading index; smaller tensors keep a full second moment.

    .. math::

        \hat\beta_{2,t} &= 1 - t^{c} \\
        R_t &= \hat\beta_{2,t} R_{t-1} + (1-\hat\beta_{2,t}) \,\mathrm{mean}_{-1}(g^2 + \epsilon_1) \\
        C_t &= \hat\beta_{2,t} C_{t-1} + (1-\hat\beta_{2,t}) \,\mathrm{mean}_{-2}(g^2 + \epsilon_1) \\
        U_t &= \frac{g_t}{\sqrt{R_t C_t / \mathrm{mean}(R_t)}}, \quad
        U_t \leftarrow \frac{U_t}{\max(1, \mathrm{RMS}(U_t)/d)} \\
        p_{t+1} &= p_t - \alpha_t U_t, \quad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(p_t)) \, \min(10^{-2}, 1/\sqrt{t})

    Args:
        learning_rate: used only when ``relative_step=False``. Default ``None``.
        eps: :math:`(\epsilon_1, \epsilon_2)`. Default ``(1e-30, 1e-3)``.
        clip_threshold: :math:`d`, the RMS clipping threshold. Default ``1.0``.
        decay_rate: :math:`c` in :math:`\hat\beta_2`. Default ``-0.8``.
        beta_1: if not None, keep a first moment with this decay. Default ``None``.
        weight_decay: decoupled weight decay scaled by :math:`\alpha_t`. Default ``0``.
        scale_parameter: scale the step by the parameter's RMS. Default ``True``.
        relative_step: use the relative step size instead of ``learning_rate``. Default ``True``.
        warmup_init: warm the relative step size up linearly. Default ``False``.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Adafactor()
        >>> opt.apply_gradients({"w": np.ones(2, np.float32)}, {"w": np.ones(2, np.float32)})
        {'w': array([0.99, 0.99], dtype=float32)}
    """

    hyperparameters = ("eps", "clip_threshold", "decay_rate", "beta_1", "weight_decay",
                       "scale_parameter", "relative_step", "warmup_init")

    def __init__(
        self,
        learning_rate: float | Schedule | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta_1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
    ) -> None:
        super().__init__()
        if learning_rate is not None:
            self._maybe_schedule("learning_rate", learning_rate)
        self.eps = eps
        self.clip_threshold = clip_threshold
        self.decay_rate = decay_rate
        self.beta_1 = beta_1
        self.weight_decay = weight_decay
        self.scale_parameter = scale_parameter
        self.relative_step = relative_step
        self.warmup_init = warmup_init

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        xp = self.xp
        if parameter.ndim >= 2:
            # zeros_like of a slice keeps the parameter's dtype and device.
            state["exp_avg_sq_row"] = xp.zeros_like(parameter[..., 0])
            state["exp_avg_sq_col"] = xp.zeros_like(parameter[..., 0, :])
        else:
            state["exp_avg_sq"] = xp.zeros_like(parameter)
        if self.beta_1 is not None:
            state["exp_avg"] = xp.zeros_like(parameter)

    def _rms(self, x: Any) -> Any:
        xp = self.xp
        return xp.sqrt(xp.mean(xp.square(x)))

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Mapping[str, Any]) -> Any:
        xp = self.xp
        t = self._step_float()
        param_rms = self._rms(parameter)
        if h["relative_step"]:
            start = 1e-6 * t if h["warmup_init"] else 1e-2
            step_size = xp.minimum(start, 1 / xp.sqrt(t))
        else:
            step_size = h["learning_rate"]
        step_size = xp.astype(step_size, param_rms.dtype)
        alpha = (xp.maximum(h["eps"][1], param_rms) if h["scale_parameter"] else 1.0) * step_size
        beta_2 = 1.0 - xp.astype(t**h["decay_rate"], param_rms.dtype)

        update = xp.square(gradient) + h["eps"][0]
        if gradient.ndim >= 2:
            row = beta_2 * state["exp_avg_sq_row"] + (1 - beta_2) * xp.mean(update, axis=-1)
            col = beta_2 * state["exp_avg_sq_col"] + (1 - beta_2) * xp.mean(update, axis=-2)
            state["exp_avg_sq_row"] = row
            state["exp_avg_sq_col"] = col
            r = 1 / xp.sqrt(row / xp.mean(row, axis=-1, keepdims=True))
            c = 1 / xp.sqrt(col)
            update = r[..., :, None] * c[..., None, :] * gradient
        else:
            second = beta_2 * state["exp_avg_sq"] + (1 - beta_2) * update
            state["exp_avg_sq"] = second
            update = 1 / xp.sqrt(second) * gradient
        update = update / xp.maximum(1.0, self._rms(update) / h["clip_threshold"])
        update = alpha * update
        if h["beta_1"] is not None:
            update = h["beta_1"] * state["exp_avg"] + (1 - h["beta_1"]) * update
            state["exp_avg"] = update
        if not is_zero(h["weight_decay"]):
            parameter = parameter + parameter * (-h["weight_decay"] * alpha)
        return parameter - update
