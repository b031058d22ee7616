"""PyTorch fast path: one multi-tensor fused kernel per (device, dtype) group, in place.

Used by ``update()`` for Adam, AdamW and SGD on float32/float64 CPU tensors (on CUDA the
kernels' float arguments would need the learning rate and step on the host, a synchronisation
per step, so CUDA tensors take the reference path, which stays on the device). PyTorch's fused
kernels (the ones behind ``torch.optim.AdamW(fused=True)``) compute the same update rules as
MLX when given the right arguments:

* SGD: ``is_first_step=False`` makes the momentum buffer follow MLX's rule from step one
  (``v = μ v + (1 - τ) g``, no ``buf = g`` special case);
* Adam without bias correction: the step tensors hold a huge count, so ``1 - β^t`` is exactly 1.

Results agree with the reference path to a few float32 ulps (the kernels order some operations
differently). Anything else returns NotImplemented and takes the reference path.
"""

from __future__ import annotations

from typing import Any

from . import match_leaves

_NO_BIAS_CORRECTION_STEP = 1.0e9  # β^t underflows to 0 for any β < 1: no bias correction


def _bias_terms(lr: float, b1: float, b2: float, step: int, dtype: Any) -> tuple[float, float]:
    """``c1 = lr / (1 - b1^t)`` and ``c2 = 1 / sqrt(1 - b2^t)`` rounded as the reference does:
    powers in float32, the results in the parameters' dtype."""
    import numpy as np
    import torch

    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    t = np.float32(step)
    lr_d = np_dtype(np.float32(lr))
    c1 = np_dtype(lr_d / (1 - np.float32(b1) ** t))
    c2 = np_dtype(1 / np.sqrt(1 - np.float32(b2) ** t))
    return float(c1), float(c2)


def supported(opt: Any) -> bool:
    from ..optimizers import SGD, Adam, AdamW

    return type(opt) in (SGD, Adam, AdamW)


def _leaf(g: Any, p: Any, s: Any, keys: tuple[str, ...], out: list,
          allow_subclasses: bool) -> Any:
    """Record ``(grad, param, [state arrays])`` if this leaf fits the fused kernel.

    The checks avoid per-call imports and device objects: with the tree walk, they are the
    Python cost per tensor of the fast path.
    """
    if not (_is_tensor(g) and _is_tensor(p)) or type(s) is not dict or not s:
        return NotImplemented
    if not allow_subclasses and (type(g) not in _PLAIN or type(p) not in _PLAIN):
        return NotImplemented
    dtype = g.dtype
    if dtype not in _FLOATS or p.dtype != dtype or g.shape != p.shape:
        return NotImplemented
    if g.is_cuda or p.is_cuda:
        # on a GPU, reading the learning rate and step for the kernel's float arguments
        # would wait for the device; the reference path keeps everything on the device
        return NotImplemented
    states = []
    for key in keys:
        a: Any = s.get(key)
        if not _is_tensor(a) or a.dtype != dtype or a.shape != g.shape or a.is_cuda:
            return NotImplemented
        states.append(a)
    out.append((g, p, states))
    return True


_PLAIN: tuple[type, ...] = ()
_FLOATS: tuple[Any, ...] = ()


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _init_types() -> None:
    global _PLAIN, _FLOATS
    if not _PLAIN:
        import torch

        _PLAIN = (torch.Tensor, torch.nn.Parameter)
        _FLOATS = (torch.float32, torch.float64)


def step(opt: Any, gradients: Any, parameters: Any, inplace: bool) -> Any:
    import torch

    from ..optimizers import SGD, AdamW

    if not inplace:
        return NotImplemented
    sgd = type(opt) is SGD
    keys: tuple[str, ...] = ("v",) if sgd and opt.momentum > 0 else () if sgd else ("m", "v")
    leaves: list = []
    # tensor subclasses (DTensor under FSDP2) have sharding rules for the Adam kernels only
    _init_types()
    found = match_leaves(
        gradients, parameters, opt._state,
        lambda g, p, s: _leaf(g, p, s, keys, leaves, allow_subclasses=not sgd),
    )
    if found is NotImplemented:
        return NotImplemented
    groups: dict[tuple[Any, Any], list] = {}
    for leaf in leaves:
        groups.setdefault((leaf[0].device, leaf[0].dtype), []).append(leaf)
    saved = opt._advance()
    try:
        lr = float(opt.learning_rate)
        step_count = int(opt._state["step"])
        with torch.no_grad():
            for (device, _dtype), items in groups.items():
                grads = [g for g, _, _ in items]
                params = [p for _, p, _ in items]
                if sgd:
                    torch._fused_sgd_(
                        params, grads, [s[0] for _, _, s in items] if keys else [],
                        weight_decay=float(opt.weight_decay), momentum=max(float(opt.momentum), 0.0),
                        lr=lr, dampening=max(float(opt.dampening), 0.0),
                        nesterov=bool(opt.nesterov), maximize=False, is_first_step=False,
                    )
                    continue
                b1, b2 = opt.betas
                wd = float(getattr(opt, "weight_decay", 0.0))
                lr_eff, eps_eff, wd_eff = lr, float(opt.eps), wd
                if opt.bias_correction:
                    # MLX's form p - c1 m / (sqrt(v) c2 + eps), with c1, c2 rounded as the
                    # reference path rounds them, folded into the kernel's lr and eps; the
                    # kernel's own bias correction (in double precision) stays disabled.
                    c1, c2 = _bias_terms(lr, b1, b2, step_count, _dtype)
                    lr_eff, eps_eff = c1 / c2, float(opt.eps) / c2
                    # the kernel decays by lr_eff * wd_eff, MLX by lr * wd (nothing at lr = 0)
                    wd_eff = lr * wd / lr_eff if lr_eff != 0 else 0.0
                steps = torch.full((len(items),), _NO_BIAS_CORRECTION_STEP, device=device)
                fused = torch._fused_adamw_ if type(opt) is AdamW else torch._fused_adam_
                fused(
                    params, grads, [s[0] for _, _, s in items], [s[1] for _, _, s in items], [],
                    list(steps.unbind()), lr=lr_eff, beta1=float(b1), beta2=float(b2),
                    weight_decay=wd_eff, eps=eps_eff, amsgrad=False, maximize=False,
                )
    except BaseException:
        opt._state.update(saved)
        raise
    return None
