"""Muon: momentum orthogonalised by Newton-Schulz iterations, with the variants in use.

MLX's Muon is the default, unchanged. The options reproduce the other references:
``torch.optim.Muon`` (learning-rate adjustments ``"original"`` and ``"match_rms_adamw"``,
decoupled weight decay, the clamped normalisation), the Polar Express coefficients (Amsel et
al., 2025) and NorMuon's row-wise second moment (arXiv:2510.05491, as in
``pytorch_optimizer.NorMuon``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._backend import addmm
from .._backend._rules import is_zero
from ._base import LearningRate, Optimizer
from ._validate import require

# Coefficients of the quintic Newton-Schulz iteration (Jordan et al., 2024).
_NS_COEFFS = (3.4445, -4.7750, 2.0315)

#: Named coefficient sets: one (a, b, c) per iteration, the last one repeated.
NS_COEFFICIENTS: dict[str, tuple[tuple[float, float, float], ...]] = {
    # Jordan et al. (2024), every iteration
    "classic": (_NS_COEFFS,),
    # Amsel, Persson, Musco & Gower, "The Polar Express" (2025): the per-iteration
    # minimax-optimal quintics for singular values in [1e-3, 1], with the paper's 1e-2 safety
    # margin folded in (as in pytorch_optimizer's "polar_express" preset)
    "polar_express": (
        (8.237312490495555, -23.157747414558198, 16.680568411445915),
        (4.082441999064835, -2.893047735332586, 0.5252849256975648),
        (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
        (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
        (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
        (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
        (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
        (1.8749994008682747, -1.2499988017229169, 0.3749994008546422),
    ),
}

ADJUST_LR = ("mlx", "original", "match_rms_adamw", "none")
NORMALIZE = ("add", "clamp")
NORMUON_SCALE = ("preserve_norm", "match_rms")


def resolve_coefficients(value: Any, owner: str = "Muon") -> tuple[tuple[float, float, float], ...]:
    """A name of :data:`NS_COEFFICIENTS`, one ``(a, b, c)`` or a sequence of them, as a tuple
    of triples (a clear ValueError otherwise)."""
    if isinstance(value, str):
        found = NS_COEFFICIENTS.get(value)
        require(found is not None, owner, "ns_coefficients",
                f"one of {sorted(NS_COEFFICIENTS)} or (a, b, c) triples", value)
        assert found is not None
        return found
    try:
        items = list(value)
    except TypeError:
        items = []
    if len(items) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                               for x in items):
        return ((float(items[0]), float(items[1]), float(items[2])),)
    ok = bool(items) and all(
        isinstance(t, (tuple, list)) and len(t) == 3
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in t)
        for t in items)
    require(ok, owner, "ns_coefficients",
            "a name, one (a, b, c) or a non-empty sequence of (a, b, c) triples", value)
    return tuple((float(a), float(b), float(c)) for a, b, c in items)


def lr_factor(shape: Sequence[int], mode: str) -> float:
    """The learning-rate multiplier of a parameter of ``shape`` (two or more dimensions).

    ``"mlx"``: :math:`\\sqrt{\\max(1, S_{-2}/S_{-1})}` on the last two dimensions of the
    parameter (MLX); ``"original"``: :math:`\\sqrt{\\max(1, A/B)}` on the orthogonalised
    matrix :math:`A \\times B = S_0 \\times \\prod S_{1:}` (Keller Jordan's, torch's default);
    ``"match_rms_adamw"``: :math:`0.2\\sqrt{\\max(A, B)}` (Moonlight, Liu et al. 2025; torch's
    ``adjust_lr_fn="match_rms_adamw"``); ``"none"``: 1.
    """
    if mode == "mlx":
        return float(max(1, shape[-2] / shape[-1]) ** 0.5)
    a, b = shape[0], math.prod(shape[1:])
    if mode == "original":
        return math.sqrt(max(1, a / b))
    if mode == "match_rms_adamw":
        return 0.2 * math.sqrt(max(a, b))
    return 1.0


def newton_schulz(xp: Any, x: Any, coefficients: Sequence[tuple[float, float, float]],
                  steps: int, eps: float, clamp: bool = False, scale_first: bool = False) -> Any:
    """``steps`` Newton-Schulz iterations on the matrix ``x`` (the one copy of the maths, shared
    by :class:`Muon` and ``anyoptim.optax.muon``).

    :math:`X \\leftarrow X/(\\|X\\|_F + \\epsilon)` (``clamp``: :math:`/\\max(\\|X\\|_F,
    \\epsilon)`), then :math:`X \\leftarrow a_i X + (b_i XX^\\top + c_i (XX^\\top)^2) X` on the
    wide orientation, with the ``i``-th triple of ``coefficients`` (the last one repeated).
    ``scale_first`` computes :math:`(c_i XX^\\top) XX^\\top` in that order (optax's rounding)
    instead of :math:`c_i (XX^\\top XX^\\top)` (MLX's fused ``addmm``).
    """
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = xp.matrix_transpose(x)
    norm = xp.sqrt(xp.sum(xp.square(x)))
    x = x / (xp.maximum(norm, norm * 0 + eps) if clamp else norm + eps)
    last = len(coefficients) - 1
    for i in range(steps):
        a, b, c = coefficients[min(i, last)]
        gram = xp.matmul(x, xp.matrix_transpose(x))
        if scale_first:
            poly = b * gram + xp.matmul(c * gram, gram)
        else:
            poly = addmm(xp, b * gram, gram, gram, alpha=c)
        x = addmm(xp, a * x, poly, x)
    return xp.matrix_transpose(x) if tall else x


class Muon(Optimizer):
    r"""Muon (Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024).

    .. math::

        g_t &\leftarrow g_t + \lambda p_t \quad \text{(coupled; the default)} \\
        v_{t+1} &= \mu v_t + (1 - \mu) g_t \\
        u_t &= (1-\mu) g_t + \mu v_{t+1} \text{ (Nesterov) or } v_{t+1} \\
        p_{t+1} &= p_t - \eta\, f(S)\; \mathrm{NS}_k(u_t), \qquad
        f(S) = \sqrt{\max(1, S_{-2}/S_{-1})}

    Tensors with two or more dimensions are orthogonalised with ``ns_steps`` Newton-Schulz
    iterations (reshaped to ``(S[0], -1)`` first): :math:`X \leftarrow X/(\|X\|_F + \epsilon)`,
    then :math:`X \leftarrow a_i X + (b_i XX^\top + c_i (XX^\top)^2) X` (on the wide
    orientation). Scalars and vectors get plain momentum SGD. The defaults are MLX's Muon.

    Options (keyword-only; each default is MLX's):

    * ``adjust_lr``: :math:`f(S)`, see :func:`lr_factor`. ``"mlx"`` (default); ``"original"``
      (torch.optim.Muon's default, Keller Jordan's reference; equal to ``"mlx"`` for 2-D
      parameters); ``"match_rms_adamw"`` (Moonlight's :math:`0.2\sqrt{\max(A,B)}`, which gives
      the update AdamW's RMS); ``"none"``.
    * ``ns_coefficients``: ``"classic"`` (3.4445, -4.7750, 2.0315) every iteration (default),
      ``"polar_express"`` (Amsel et al., "The Polar Express", 2025: eight per-iteration
      quintics; the last is repeated beyond eight), one ``(a, b, c)`` or a sequence of them.
    * ``eps`` and ``normalize``: ``"add"`` divides by :math:`\|X\|_F + \epsilon` (MLX),
      ``"clamp"`` by :math:`\max(\|X\|_F, \epsilon)` (torch, pytorch_optimizer).
    * ``decoupled_weight_decay``: :math:`p \leftarrow p(1 - \eta\lambda)` (with the
      unadjusted :math:`\eta`) instead of adding :math:`\lambda p` to the gradient (torch,
      pytorch_optimizer).
    * ``ns_dtype``: run the iteration in this dtype (e.g. ``"bfloat16"``, as torch and the
      reference do); None: the gradient's dtype (MLX).
    * ``normuon`` (NorMuon, Li et al., arXiv:2510.05491, as ``pytorch_optimizer.NorMuon``):
      after orthogonalisation :math:`O` (:math:`A \times B`), a row-wise second moment
      :math:`r \leftarrow \beta_2 r + (1-\beta_2)\,\mathrm{mean}_j O_{ij}^2`, then
      :math:`O \leftarrow O/(\sqrt r + \epsilon_n)` rescaled to
      :math:`\|O_{\text{before}}\|_F` (``normuon_scale="preserve_norm"``, the official code's)
      or to :math:`0.2\sqrt{AB}` (``"match_rms"``, the paper's Algorithm 1; pair it with
      ``adjust_lr="none"`` as pytorch_optimizer does).

    To reproduce ``torch.optim.Muon(adjust_lr_fn=m)``: ``adjust_lr=m or "original",
    normalize="clamp", decoupled_weight_decay=True`` (``ns_dtype="bfloat16"`` for its
    precision too).

    Args:
        learning_rate: the learning rate :math:`\eta`, or a schedule.
        momentum: :math:`\mu`. Default ``0.95``.
        weight_decay: :math:`\lambda`. Default ``0.01``.
        nesterov: use Nesterov momentum. Default ``True``.
        ns_steps: number of Newton-Schulz iterations :math:`k`. Default ``5``.
        adjust_lr: the learning-rate scale (see above). Default ``"mlx"``.
        ns_coefficients: the Newton-Schulz coefficients. Default ``"classic"``.
        eps: :math:`\epsilon` of the normalisation. Default ``1e-7``.
        normalize: ``"add"`` or ``"clamp"``. Default ``"add"``.
        decoupled_weight_decay: decoupled instead of coupled decay. Default ``False``.
        ns_dtype: dtype of the iteration, or None. Default None.
        normuon: NorMuon's row-wise normalisation. Default ``False``.
        beta2: NorMuon's :math:`\beta_2`. Default ``0.95``.
        normuon_eps: NorMuon's :math:`\epsilon_n`. Default ``1e-10``.
        normuon_scale: ``"preserve_norm"`` or ``"match_rms"``. Default ``"preserve_norm"``.

    State per parameter: ``v`` (4 bytes per float32 parameter); with ``normuon``, ``v_row``
    of shape ``(S[0], 1)`` for tensors with two or more dimensions.

    Example:
        >>> import numpy as np, anyoptim as optim
        >>> opt = optim.Muon(learning_rate=0.02, weight_decay=0.0)
        >>> new = opt.apply_gradients({"w": np.eye(3, dtype=np.float32)},
        ...                           {"w": np.zeros((3, 3), np.float32)})
        >>> np.round(new["w"].diagonal(), 3)
        array([-0.014, -0.014, -0.014], dtype=float32)
    """

    hyperparameters = ("momentum", "weight_decay", "nesterov", "ns_steps", "adjust_lr",
                       "ns_coefficients", "eps", "normalize", "decoupled_weight_decay",
                       "ns_dtype", "normuon", "beta2", "normuon_eps", "normuon_scale")

    def __init__(
        self,
        learning_rate: LearningRate,
        momentum: float = 0.95,
        weight_decay: float = 0.01,
        nesterov: bool = True,
        ns_steps: int = 5,
        *,
        adjust_lr: str = "mlx",
        ns_coefficients: Any = "classic",
        eps: float = 1e-7,
        normalize: str = "add",
        decoupled_weight_decay: bool = False,
        ns_dtype: str | None = None,
        normuon: bool = False,
        beta2: float = 0.95,
        normuon_eps: float = 1e-10,
        normuon_scale: str = "preserve_norm",
    ) -> None:
        super().__init__()
        name = "Muon"
        require(adjust_lr in ADJUST_LR, name, "adjust_lr", f"one of {ADJUST_LR}", adjust_lr)
        coefficients = resolve_coefficients(ns_coefficients)
        require(isinstance(eps, (int, float)) and eps >= 0, name, "eps", ">=0", eps)
        require(normalize in NORMALIZE, name, "normalize", f"one of {NORMALIZE}", normalize)
        require(isinstance(decoupled_weight_decay, bool), name, "decoupled_weight_decay",
                "True or False", decoupled_weight_decay)
        require(ns_dtype is None or ns_dtype in ("bfloat16", "float16", "float32", "float64"),
                name, "ns_dtype", "None or a float dtype name such as 'bfloat16'", ns_dtype)
        require(isinstance(normuon, bool), name, "normuon", "True or False", normuon)
        require(isinstance(beta2, (int, float)) and 0 <= beta2 < 1, name, "beta2", "in [0, 1)",
                beta2)
        require(isinstance(normuon_eps, (int, float)) and normuon_eps >= 0, name, "normuon_eps",
                ">=0", normuon_eps)
        require(normuon_scale in NORMUON_SCALE, name, "normuon_scale", f"one of {NORMUON_SCALE}",
                normuon_scale)
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.ns_steps = ns_steps
        self.adjust_lr = adjust_lr
        self.ns_coefficients = (ns_coefficients if isinstance(ns_coefficients, str)
                                else [list(t) for t in coefficients])
        self._coefficients = coefficients
        self.eps = eps
        self.normalize = normalize
        self.decoupled_weight_decay = decoupled_weight_decay
        self.ns_dtype = ns_dtype
        self.normuon = normuon
        self.beta2 = beta2
        self.normuon_eps = normuon_eps
        self.normuon_scale = normuon_scale

    def init_single(self, parameter: Any, state: dict[str, Any]) -> None:
        state["v"] = self.xp.zeros_like(parameter)
        if self.normuon and parameter.ndim >= 2:
            state["v_row"] = _row_zeros(self.xp, parameter)

    def _newton_schulz(self, x: Any, steps: int, h: Mapping[str, Any] | None = None) -> Any:
        if h is None:  # MLX's iteration
            return newton_schulz(self.xp, x, (_NS_COEFFS,), steps, 1e-7)
        coefficients = (self._coefficients if h["ns_coefficients"] is self.ns_coefficients
                        else resolve_coefficients(h["ns_coefficients"]))
        return newton_schulz(self.xp, x, coefficients, steps, h["eps"],
                             clamp=h["normalize"] == "clamp")

    def _normuon(self, o: Any, v_row: Any, h: Mapping[str, Any]) -> tuple[Any, Any]:
        xp = self.xp
        eps = h["normuon_eps"]
        before = xp.sqrt(xp.sum(xp.square(o)))
        if v_row is None:
            v_row = _row_zeros(xp, o)
        b2 = h["beta2"]
        v_row = b2 * v_row + (1 - b2) * xp.mean(xp.square(o), axis=-1, keepdims=True)
        o = o / (xp.sqrt(v_row) + eps)
        after = xp.sqrt(xp.sum(xp.square(o))) + eps
        if h["normuon_scale"] == "preserve_norm":
            return o * (before / after), v_row
        return o * (0.2 * math.sqrt(o.shape[0] * o.shape[1]) / after), v_row

    def update_tensor(self, gradient: Any, parameter: Any, state: dict[str, Any],
                      h: Mapping[str, Any]) -> Any:
        xp = self.xp
        mu = h["momentum"]
        decoupled = h.get("decoupled_weight_decay", False)
        if not is_zero(h["weight_decay"]) and not decoupled:
            gradient = gradient + h["weight_decay"] * parameter
        v = mu * state["v"] + (1 - mu) * gradient
        state["v"] = v
        update = gradient * (1 - mu) + v * mu if h["nesterov"] else v
        lr = xp.astype(h["learning_rate"], gradient.dtype)
        base_lr = lr
        if update.ndim >= 2:
            shape = tuple(update.shape)
            matrix = xp.reshape(update, (shape[0], -1)) if len(shape) > 2 else update
            if _is_mlx_default(h):
                update = xp.reshape(self._newton_schulz(matrix, h["ns_steps"]), shape)
                lr = lr * max(1, shape[-2] / shape[-1]) ** 0.5
                return parameter - lr * update
            dtype = h.get("ns_dtype")
            if dtype is not None:
                matrix = xp.astype(matrix, _dtype(xp, dtype, matrix))
            o = self._newton_schulz(matrix, h["ns_steps"], h)
            if dtype is not None:
                o = xp.astype(o, gradient.dtype)
            if h.get("normuon"):
                o, state["v_row"] = self._normuon(o, state.get("v_row"), h)
            update = xp.reshape(o, shape)
            lr = lr * lr_factor(shape, h.get("adjust_lr", "mlx"))
        if decoupled and not is_zero(h["weight_decay"]):
            parameter = parameter * (1 - base_lr * h["weight_decay"])
        return parameter - lr * update


_MLX = {"adjust_lr": "mlx", "ns_coefficients": "classic", "eps": 1e-7, "normalize": "add",
        "decoupled_weight_decay": False, "ns_dtype": None, "normuon": False}


def _is_mlx_default(h: Mapping[str, Any]) -> bool:
    """MLX's Muon exactly (the default): its iteration and scale, evaluated as MLX does."""
    return all(h.get(key, value) == value for key, value in _MLX.items())


def _dtype(xp: Any, name: str, like: Any) -> Any:
    """The dtype called ``name`` in the library of ``like``."""
    found = getattr(xp, name, None)
    if found is not None:
        return found
    module = type(like).__module__.split(".")[0]
    if module == "torch":
        import torch

        return getattr(torch, name)
    if module == "numpy":
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - ml_dtypes comes with JAX
            raise ValueError(f"Muon: ns_dtype={name!r} on NumPy arrays needs ml_dtypes") from None
        return getattr(ml_dtypes, name)
    raise ValueError(f"Muon: this array library has no {name} (ns_dtype)")


def _row_zeros(xp: Any, x: Any) -> Any:
    """Zeros of shape ``(S[0], 1)`` with ``x``'s dtype and device."""
    return xp.zeros_like(xp.reshape(x, (x.shape[0], -1))[:, :1])
