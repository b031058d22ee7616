"""Averages of the parameters along training: EMA (fixed or with timm's warmup) and SWA."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from .. import _backend
from .._backend import finalize
from . import _tree
from ._base import Optimizer
from ._validate import require
from ._wrapper import Wrapper, _Call, copy_array


class _Averaging(Wrapper):
    """Shared parts of :class:`EMA` and :class:`SWA`: the ``average`` tree and evaluation."""

    trees = ("average",)

    def _new_leaf(self, name: str, parameter: Any) -> Any:
        return copy_array(parameter)

    @property
    def average(self) -> Any:
        """The averaged parameters (a tree like the parameters; read it to evaluate)."""
        if "average" not in self._state:
            raise ValueError(
                f"{type(self).__name__}: no average yet; call init(parameters) or update first")
        return self._state["average"]

    def averaged_parameters(self) -> Any:
        """The averaged parameters (the same as :attr:`average`)."""
        return self.average

    @contextlib.contextmanager
    def swapped(self, model: Any) -> Iterator[Any]:
        """Evaluate with the averaged parameters: inside the ``with`` block ``model`` (a torch
        module, an MLX module, or a dict/list of NumPy or torch arrays) holds the averages;
        on exit its own parameters are put back.

        For immutable trees (JAX), use :attr:`average` directly instead.
        """
        params = _backend.model_parameters(model)
        average = self.average
        avg: list[Any] = []
        current: list[Any] = []
        structure = _tree.gather(average, params, params, avg, current, [])
        saved = [copy_array(p) for p in current]
        first = avg[0] if avg else None
        with _backend.no_grad(first):
            _backend.write_back(model, _tree.unflatten(structure, iter(avg)))
        try:
            yield model
        finally:
            with _backend.no_grad(first):
                _backend.write_back(model, _tree.unflatten(structure, iter(saved)))

    def _run(self, call: _Call, inplace: bool, fused: bool = True) -> tuple[Any, bool]:
        if not call.grads:
            return call.inner([], inplace, fused)
        count, n = self._count(call.grads[0])
        avg = call.own("average")
        new, in_place = call.inner(call.grads, inplace, fused)
        new_leaves = call.params if in_place else _tree.flatten(new)[1]
        call.store("average", self._average(call.xp, avg, new_leaves, count, n))
        self._bump(count, n)
        return new, in_place

    def _average(self, xp: Any, avg: list[Any], params: list[Any], count: Any,
                 n: int | None) -> list[Any]:
        raise NotImplementedError


def _float_of(xp: Any, leaves: list[Any], count: Any) -> Any:
    """The counter as a float array (float64 when the parameters are, else float32)."""
    wide = any(getattr(p, "dtype", None) == getattr(xp, "float64", None) for p in leaves)
    return xp.astype(count, xp.float64 if wide else xp.float32)


class EMA(_Averaging):
    r"""Keep an exponential moving average of the parameters of ``optimizer``.

    After the ``s``-th update (``s = 1, 2, ...``) with :math:`t = s - u - 1` (``u`` is
    ``update_after_step``):

    .. math::

        d_s = \begin{cases} 0 & t \le 0 \text{ (the average copies the parameters)} \\
        \mathrm{clip}\bigl(1 - (1 + t/\gamma)^{-p},\ d_{\min},\ d\bigr)
            & \text{with warmup (timm's ModelEmaV3)} \\
        d & \text{otherwise} \end{cases}
        \qquad \bar\theta \leftarrow \mathrm{lerp}(\bar\theta, \theta, 1 - d_s)

    With the defaults the first update copies the parameters and the later ones average with
    the fixed ``decay``: torch's ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``
    and timm's ``ModelEmaV3``. ``update_after_step=-1`` averages from the initial parameters on
    (Polyak; optax's ``incremental_update(new, old, 1 - decay)`` at every step). The
    interpolation is torch's ``lerp`` (``a + w (b - a)`` for ``w < 0.5``, else
    ``b - (b - a)(1 - w)``).

    State: the average (one copy of the parameters: +4 bytes per float32 parameter) and the
    update counter ``count``. Evaluate with :attr:`average` or ``with ema.swapped(model):``.

    Args:
        optimizer: the optimizer to wrap.
        decay: the decay ``d`` in [0, 1] (timm's and torch's 0.9999 is the default).
        warmup: use timm's warmup decay :math:`1 - (1 + t/\gamma)^{-p}`.
        warmup_gamma: :math:`\gamma` (> 0, timm's default 1.0).
        warmup_power: :math:`p` (> 0, timm's default 2/3).
        min_decay: :math:`d_{\min}` in [0, decay] (timm's default 0).
        update_after_step: ``u``: the first ``u + 1`` updates copy the parameters (>= -1).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.EMA(optim.SGD(learning_rate=1.0), decay=0.5, update_after_step=-1)
        >>> params = opt.apply_gradients({"w": np.ones(1, np.float32)}, {"w": np.zeros(1, np.float32)})
        >>> params["w"], opt.average["w"]
        (array([-1.], dtype=float32), array([-0.5], dtype=float32))
    """

    options = ("decay", "warmup", "warmup_gamma", "warmup_power", "min_decay",
               "update_after_step")

    def __init__(self, optimizer: Optimizer, decay: float = 0.9999, *, warmup: bool = False,
                 warmup_gamma: float = 1.0, warmup_power: float = 2 / 3, min_decay: float = 0.0,
                 update_after_step: int = 0) -> None:
        name = type(self).__name__
        require(0.0 <= decay <= 1.0, name, "decay", "in [0, 1]", decay)
        require(warmup_gamma > 0, name, "warmup_gamma", "> 0", warmup_gamma)
        require(warmup_power > 0, name, "warmup_power", "> 0", warmup_power)
        require(0.0 <= min_decay <= decay, name, "min_decay", f"in [0, decay={decay}]", min_decay)
        require(isinstance(update_after_step, int) and update_after_step >= -1, name,
                "update_after_step", "an integer >= -1", update_after_step)
        super().__init__(optimizer)
        self.decay = decay
        self.warmup = bool(warmup)
        self.warmup_gamma = warmup_gamma
        self.warmup_power = warmup_power
        self.min_decay = min_decay
        self.update_after_step = update_after_step

    def decay_at(self, s: int) -> float:
        """The decay used by the ``s``-th update (``s >= 1``), in float64."""
        t = s - self.update_after_step - 1
        if t <= 0:
            return 0.0
        if not self.warmup:
            return float(self.decay)
        d = 1.0 - math.pow(1.0 + t / self.warmup_gamma, -self.warmup_power)
        return max(min(d, self.decay), self.min_decay)

    def _average(self, xp: Any, avg: list[Any], params: list[Any], count: Any,
                 n: int | None) -> list[Any]:
        if n is not None:
            w = 1.0 - self.decay_at(n + 1)
            if w < 0.5:
                return [finalize(a + w * (p - a)) for a, p in zip(avg, params)]
            return [finalize(p - (p - a) * (1.0 - w)) for a, p in zip(avg, params)]
        # traced: the decay from the counter, with where instead of branches
        t = _float_of(xp, params, count) + 1.0 - (self.update_after_step + 1)
        zero = xp.zeros_like(t)
        top = zero + self.decay
        if self.warmup:
            d = 1.0 - (1.0 + xp.where(t > 0, t, zero) / self.warmup_gamma) ** (-self.warmup_power)
            d = xp.where(d > top, top, d)
            d = xp.where(d < self.min_decay, zero + self.min_decay, d)
        else:
            d = top
        w = xp.where(t <= 0, xp.ones_like(t), 1.0 - d)
        out = []
        for a, p in zip(avg, params):
            wp = xp.astype(w, p.dtype)
            low = a + wp * (p - a)
            high = p - (p - a) * (1 - wp)
            out.append(finalize(xp.where(w < 0.5, low, high)))
        return out


class SWA(_Averaging):
    r"""Stochastic weight averaging: the equal average of the parameters of ``optimizer``
    after the updates ``start + every, start + 2 every, ...``.

    .. math::

        \bar\theta \leftarrow \bar\theta + \frac{\theta - \bar\theta}{n + 1}, \qquad
        n = \text{the number of parameters averaged so far}

    The first averaged update copies the parameters; this is torch's
    ``torch.optim.swa_utils.AveragedModel`` default averaging when ``update_parameters`` is
    called after those updates (Izmailov et al., *Averaging Weights Leads to Wider Optima
    and Better Generalization*, UAI 2018). Combine it with a constant or cyclic schedule
    (torch's ``SWALR``) on the wrapped optimizer.

    State: the average (+4 bytes per float32 parameter), the update counter ``count`` and the
    number of averaged parameters ``averaged``.

    Args:
        optimizer: the optimizer to wrap.
        start: updates before averaging begins (>= 0).
        every: average after every ``every``-th update from then on (>= 1).

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.SWA(optim.SGD(learning_rate=1.0))
        >>> params = {"w": np.zeros(1, np.float32)}
        >>> for _ in range(3):
        ...     params = opt.apply_gradients({"w": np.ones(1, np.float32)}, params)
        >>> params["w"], opt.average["w"]
        (array([-3.], dtype=float32), array([-2.], dtype=float32))
    """

    options = ("start", "every")

    def __init__(self, optimizer: Optimizer, start: int = 0, every: int = 1) -> None:
        name = type(self).__name__
        require(isinstance(start, int) and start >= 0, name, "start", "an integer >= 0", start)
        require(isinstance(every, int) and every >= 1, name, "every", "an integer >= 1", every)
        super().__init__(optimizer)
        self.start = start
        self.every = every

    def init(self, parameters: Any) -> None:
        super().init(parameters)
        first = next(iter(_tree.leaves(parameters)), None)
        if first is not None and _backend.library_name(first) is not None:
            self._count(first, "averaged")

    def _average(self, xp: Any, avg: list[Any], params: list[Any], count: Any,
                 n: int | None) -> list[Any]:
        averaged, m = self._count(params[0], "averaged")
        if n is not None and m is not None:
            s = n + 1
            if s <= self.start or (s - self.start) % self.every:
                return avg
            self._state["averaged"] = finalize(averaged + 1)
            if m == 0:
                return [copy_array(p) for p in params]
            return [finalize(a + (p - a) / (m + 1)) for a, p in zip(avg, params)]
        s = count + 1
        take = xp.logical_and(s > self.start, (s - self.start) % self.every == 0)
        self._state["averaged"] = finalize(xp.where(take, averaged + 1, averaged))
        m_f = _float_of(xp, params, averaged)
        first = averaged == 0
        out = []
        for a, p in zip(avg, params):
            mixed = a + (p - a) / xp.astype(m_f + 1, p.dtype)
            out.append(finalize(xp.where(take, xp.where(first, p, mixed), a)))
        return out
