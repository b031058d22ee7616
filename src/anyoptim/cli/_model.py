"""The small MLP that ``train`` and ``compare`` fit, once per array library.

Parameters are a tree ``{"layers": [{"weight", "bias"}, ...]}`` laid out as in ``mlx.nn.Linear``
(``weight`` has shape ``(out, in)``), created in float32 from the seed with NumPy and then moved
to the chosen library, so every backend starts from the same numbers.

To add a library (torch, JAX, ...): write a :class:`Backend` subclass with the five methods
below and list it in ``BACKENDS``; nothing else in the command line needs to change.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from ._common import UsageError, need
from ._data import Digits

ACTIVATIONS = ("tanh", "relu")


def init_params(rng: np.random.Generator, sizes: list[int]) -> dict[str, Any]:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases, as ``mlx.nn.Linear`` does."""
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / np.sqrt(fan_in)
        weight = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
        bias = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
        layers.append({"weight": weight, "bias": bias})
    return {"layers": layers}


def mlp_forward(params: Any, x: Any, activation: Any) -> Any:
    """``x @ W.T + b`` per layer, ``activation`` between layers (any array library)."""
    layers = params["layers"]
    h = x
    for i, layer in enumerate(layers):
        h = h @ layer["weight"].T + layer["bias"]
        if i < len(layers) - 1:
            h = activation(h)
    return h


def _map(fn: Any, tree: Any) -> Any:
    from anyoptim.utils import tree_map

    return tree_map(fn, tree)


class Backend:
    """One array library: data placement, loss and gradients, evaluation and the update."""

    name: ClassVar[str] = "?"

    def __init__(self, data: Digits, activation: str) -> None:
        self.data = data
        self.activation = activation

    def from_numpy(self, tree: Any) -> Any:
        """Move a tree of NumPy arrays into this library (exactly, bit for bit)."""
        raise NotImplementedError

    def to_numpy(self, tree: Any) -> Any:
        """Bring a tree of this library's arrays back as NumPy arrays (exactly)."""
        raise NotImplementedError

    def loss_and_grad(self, params: Any, batch: np.ndarray) -> tuple[float, Any]:
        """Mean cross-entropy on the training rows ``batch`` and its gradient tree."""
        raise NotImplementedError

    def evaluate(self, params: Any, split: str) -> tuple[float, float]:
        """``(mean cross-entropy, accuracy)`` on the ``"train"`` or ``"test"`` split."""
        raise NotImplementedError

    def update(self, optimizer: Any, params: Any, grads: Any) -> Any:
        """Apply one optimizer step and return the new parameters."""
        return optimizer.apply_gradients(grads, params)


def _stable_tanh() -> Any:
    """tanh for autograd with the derivative written as 1 - tanh(x)**2.

    autograd's own rule divides by cosh(x)**2, which overflows (with a RuntimeWarning) once a
    pre-activation passes about 45 in float32; the result is the same, without the overflow.
    """
    from autograd.extend import defvjp, primitive

    @primitive
    def tanh(x: Any) -> Any:
        return np.tanh(x)

    defvjp(tanh, lambda ans, x: lambda g: g * (1 - ans * ans))
    return tanh


class NumpyBackend(Backend):
    """NumPy arrays; gradients from ``autograd`` (no hand-written backpropagation)."""

    name = "numpy"

    def __init__(self, data: Digits, activation: str) -> None:
        super().__init__(data, activation)
        autograd = need("autograd", "training on NumPy")
        self.anp = need("autograd.numpy", "training on NumPy")
        self._tanh = _stable_tanh()
        self._value_and_grad = autograd.value_and_grad(self._loss)

    def _forward(self, np_mod: Any, params: Any, x: Any) -> Any:
        layers = params["layers"]
        h = x
        for i, layer in enumerate(layers):
            h = np_mod.dot(h, layer["weight"].T) + layer["bias"]
            if i < len(layers) - 1:
                if self.activation == "relu":
                    h = np_mod.maximum(h, 0.0)
                else:
                    h = self._tanh(h) if np_mod is self.anp else np.tanh(h)
        return h

    @staticmethod
    def _cross_entropy(np_mod: Any, logits: Any, labels: np.ndarray) -> Any:
        shifted = logits - np_mod.max(logits, axis=1, keepdims=True)
        log_norm = np_mod.log(np_mod.sum(np_mod.exp(shifted), axis=1))
        picked = shifted[np.arange(len(labels)), labels]
        return np_mod.mean(log_norm - picked)

    def _loss(self, params: Any, x: np.ndarray, y: np.ndarray) -> Any:
        return self._cross_entropy(self.anp, self._forward(self.anp, params, x), y)

    def from_numpy(self, tree: Any) -> Any:
        return _map(lambda a: np.array(a, copy=True), tree)

    def to_numpy(self, tree: Any) -> Any:
        return _map(np.asarray, tree)

    def loss_and_grad(self, params: Any, batch: np.ndarray) -> tuple[float, Any]:
        loss, grads = self._value_and_grad(
            params, self.data.x_train[batch], self.data.y_train[batch]
        )
        return float(loss), grads

    def evaluate(self, params: Any, split: str) -> tuple[float, float]:
        x, y = (
            (self.data.x_train, self.data.y_train)
            if split == "train"
            else (self.data.x_test, self.data.y_test)
        )
        logits = self._forward(np, params, x)
        loss = self._cross_entropy(np, logits, y)
        return float(loss), float(np.mean(np.argmax(logits, axis=1) == y))


class MLXBackend(Backend):
    """MLX arrays; gradients from ``mlx.core.value_and_grad``."""

    name = "mlx"

    def __init__(self, data: Digits, activation: str) -> None:
        super().__init__(data, activation)
        try:
            import mlx.core as mx
            import mlx.nn as nn
        except ImportError as exc:
            raise UsageError(
                f"--backend mlx needs MLX, which is not installed ({exc}). Install it with: "
                'pip install "anyoptim[mlx]" (on Linux: pip install "mlx[cpu]")'
            ) from None
        self.mx = mx
        self.nn = nn
        self.x = {"train": mx.array(data.x_train), "test": mx.array(data.x_test)}
        self.y = {
            "train": mx.array(data.y_train.astype(np.int32)),
            "test": mx.array(data.y_test.astype(np.int32)),
        }
        self._value_and_grad = mx.value_and_grad(self._loss)

    def _forward(self, params: Any, x: Any) -> Any:
        act = self.mx.tanh if self.activation == "tanh" else self.nn.relu
        return mlp_forward(params, x, act)

    def _loss(self, params: Any, x: Any, y: Any) -> Any:
        return self.nn.losses.cross_entropy(self._forward(params, x), y, reduction="mean")

    def from_numpy(self, tree: Any) -> Any:
        return _map(self.mx.array, tree)

    def to_numpy(self, tree: Any) -> Any:
        return _map(lambda a: np.array(a, copy=True), tree)

    def loss_and_grad(self, params: Any, batch: np.ndarray) -> tuple[float, Any]:
        idx = self.mx.array(batch.astype(np.int32))
        loss, grads = self._value_and_grad(params, self.x["train"][idx], self.y["train"][idx])
        return float(loss), grads

    def evaluate(self, params: Any, split: str) -> tuple[float, float]:
        mx = self.mx
        logits = self._forward(params, self.x[split])
        loss = self.nn.losses.cross_entropy(logits, self.y[split], reduction="mean")
        acc = mx.mean(mx.argmax(logits, axis=1) == self.y[split])
        return float(loss), float(acc)

    def update(self, optimizer: Any, params: Any, grads: Any) -> Any:
        new = optimizer.apply_gradients(grads, params)
        self.mx.eval(new, optimizer.state)
        return new


def _import(module: str, flag: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"--backend {flag} needs {flag}, which is not installed ({exc}). Install it with: "
            f'pip install "anyoptim[{extra}]"'
        ) from None


class TorchBackend(Backend):
    """PyTorch tensors (CPU); gradients from ``torch.autograd``; updates in place."""

    name = "torch"

    def __init__(self, data: Digits, activation: str) -> None:
        super().__init__(data, activation)
        self.torch = torch = _import("torch", "torch", "torch")
        self.x = {"train": torch.from_numpy(data.x_train.copy()),
                  "test": torch.from_numpy(data.x_test.copy())}
        self.y = {"train": torch.from_numpy(data.y_train.astype(np.int64)),
                  "test": torch.from_numpy(data.y_test.astype(np.int64))}

    def _forward(self, params: Any, x: Any) -> Any:
        act = self.torch.tanh if self.activation == "tanh" else self.torch.relu
        return mlp_forward(params, x, act)

    def from_numpy(self, tree: Any) -> Any:
        def convert(a: Any) -> Any:
            a = np.array(a, copy=True)
            # PyTorch has no arithmetic on uint64: the step counter is int64 there
            return self.torch.from_numpy(a.astype(np.int64) if a.dtype == np.uint64 else a)

        return _map(convert, tree)

    def to_numpy(self, tree: Any) -> Any:
        return _map(lambda a: a.detach().numpy().copy(), tree)

    def loss_and_grad(self, params: Any, batch: np.ndarray) -> tuple[float, Any]:
        from anyoptim.utils import tree_flatten, tree_unflatten

        torch = self.torch
        idx = torch.from_numpy(batch.astype(np.int64))
        # differentiate with respect to leaf views of the parameters, which themselves never
        # require gradients (the optimizer then updates them in place)
        flat = [(k, p.detach().requires_grad_()) for k, p in tree_flatten(params)]
        logits = self._forward(tree_unflatten(flat), self.x["train"][idx])
        loss = torch.nn.functional.cross_entropy(logits, self.y["train"][idx])
        grads = torch.autograd.grad(loss, [p for _, p in flat])
        return float(loss.detach()), tree_unflatten([(k, g) for (k, _), g in zip(flat, grads)])

    def evaluate(self, params: Any, split: str) -> tuple[float, float]:
        torch = self.torch
        with torch.no_grad():
            logits = self._forward(params, self.x[split])
            loss = torch.nn.functional.cross_entropy(logits, self.y[split])
            acc = (logits.argmax(dim=1) == self.y[split]).float().mean()
        return float(loss), float(acc)

    def update(self, optimizer: Any, params: Any, grads: Any) -> Any:
        optimizer.update(params, grads)  # in place, without autograd history
        return params


class JaxBackend(Backend):
    """JAX arrays (CPU); gradients from ``jax.value_and_grad``; the step under ``jax.jit``."""

    name = "jax"

    def __init__(self, data: Digits, activation: str) -> None:
        super().__init__(data, activation)
        self.jax = jax = _import("jax", "jax", "jax")
        self.jnp = jnp = jax.numpy
        self.x = {"train": jnp.asarray(data.x_train), "test": jnp.asarray(data.x_test)}
        self.y = {"train": jnp.asarray(data.y_train.astype(np.int32)),
                  "test": jnp.asarray(data.y_test.astype(np.int32))}
        self._value_and_grad = jax.jit(jax.value_and_grad(self._loss))
        self._steps: dict[int, Any] = {}

    def _forward(self, params: Any, x: Any) -> Any:
        act = self.jnp.tanh if self.activation == "tanh" else self.jax.nn.relu
        return mlp_forward(params, x, act)

    def _cross_entropy(self, logits: Any, y: Any) -> Any:
        log_probs = self.jax.nn.log_softmax(logits, axis=1)
        return -self.jnp.mean(self.jnp.take_along_axis(log_probs, y[:, None], axis=1))

    def _loss(self, params: Any, x: Any, y: Any) -> Any:
        return self._cross_entropy(self._forward(params, x), y)

    def from_numpy(self, tree: Any) -> Any:
        return _map(self.jnp.asarray, tree)

    def to_numpy(self, tree: Any) -> Any:
        return _map(lambda a: np.array(a, copy=True), tree)

    def loss_and_grad(self, params: Any, batch: np.ndarray) -> tuple[float, Any]:
        idx = self.jnp.asarray(batch.astype(np.int32))
        loss, grads = self._value_and_grad(params, self.x["train"][idx], self.y["train"][idx])
        return float(loss), grads

    def evaluate(self, params: Any, split: str) -> tuple[float, float]:
        jnp = self.jnp
        logits = self._forward(params, self.x[split])
        loss = self._cross_entropy(logits, self.y[split])
        acc = jnp.mean(jnp.argmax(logits, axis=1) == self.y[split])
        return float(loss), float(acc)

    def update(self, optimizer: Any, params: Any, grads: Any) -> Any:
        step = self._steps.get(id(optimizer))
        if step is None:
            step = self._steps[id(optimizer)] = self.jax.jit(optimizer.pure_step)
        new, state = step(params, grads, optimizer.state)
        optimizer.state = state  # keep the optimizer current (checkpoints save it)
        return new


BACKENDS: dict[str, type[Backend]] = {
    "numpy": NumpyBackend,
    "torch": TorchBackend,
    "jax": JaxBackend,
    "mlx": MLXBackend,
}
CHOICES = tuple(BACKENDS)


def make_backend(name: str, data: Digits, activation: str) -> Backend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown backend {name!r}; choose one of: {', '.join(CHOICES)}") from None
    return cls(data, activation)
