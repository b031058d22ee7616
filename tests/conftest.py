"""Shared fixtures: the table of array libraries, and the --runslow switch."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class Backend:
    """One array library (on one device) as the tests see it: how to make arrays and read them back.

    ``name`` is the library (``numpy``, ``mlx``, ``torch``, ``jax``, ``cupy``), ``module`` the
    module whose presence makes it available, ``device`` the device arrays are created on
    (``None`` for the library's default: NumPy and MLX have no device choice here).
    """

    name: str
    module: str
    device: str | None = None

    @property
    def id(self) -> str:
        """A test id: the library name, plus the device for torch (``torch-cpu``, ``torch-cuda``)."""
        return f"{self.name}-{self.device}" if self.device else self.name

    @property
    def available(self) -> bool:
        return self.skip_reason is None

    @property
    def skip_reason(self) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        return _skip_reason(self.name, self.module, self.device)

    # ------------------------------------------------------------------ making arrays
    def asarray(self, x: np.ndarray, dtype: str | None = None) -> Any:
        """``x`` (a NumPy array or number) as an array of this library, with ``dtype`` (a name)."""
        x = np.asarray(x)
        dtype = dtype or str(x.dtype)
        if self.name == "numpy":
            return np.array(x, dtype=dtype, copy=True)  # never an alias of the caller's array
        if self.name == "mlx":
            import mlx.core as mx

            if dtype == "float64":
                return mx.array(np.asarray(x, dtype=np.float64), dtype=mx.float64)
            return mx.array(np.asarray(x, dtype=np.float32)).astype(getattr(mx, dtype))
        host = np.asarray(x, dtype=np.float32) if dtype == "bfloat16" else np.asarray(x, dtype)
        if self.name == "torch":
            import torch

            t = torch.from_numpy(np.array(host, copy=True))
            return t.to(device=self.device or "cpu", dtype=getattr(torch, dtype))
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(host).astype(getattr(jnp, dtype))
        if self.name == "cupy":
            import cupy

            with cupy.cuda.Device(_cuda_index(self.device)):
                return cupy.asarray(host)
        raise NotImplementedError(self.name)

    # ------------------------------------------------------------------ reading arrays back
    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy copy of ``x``; float16 and bfloat16 come back as float32."""
        if self.name == "mlx":
            import mlx.core as mx

            if x.dtype in (mx.bfloat16, mx.float16):
                x = x.astype(mx.float32)
            return np.asarray(x)
        if self.name == "torch":
            import torch

            x = x.detach()
            if x.dtype in (torch.bfloat16, torch.float16):
                x = x.float()
            return x.cpu().numpy()
        if self.name == "jax":
            import jax.numpy as jnp

            if x.dtype in (jnp.bfloat16, jnp.float16):
                x = x.astype(jnp.float32)
            return np.asarray(x)
        if self.name == "cupy":
            x = x.get()
            return x.astype(np.float32) if x.dtype == np.float16 else x
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).rsplit(".", 1)[-1]

    # ------------------------------------------------------------------ what a result must look like
    def is_native(self, x: Any) -> bool:
        """True if ``x`` is an array of this library (checked here, not with anyoptim's helpers)."""
        if self.name == "numpy":
            return type(x) is np.ndarray
        if self.name == "mlx":
            import mlx.core as mx

            return isinstance(x, mx.array)
        if self.name == "torch":
            import torch

            return isinstance(x, torch.Tensor)
        if self.name == "jax":
            import jax

            return isinstance(x, jax.Array)
        if self.name == "cupy":
            import cupy

            return isinstance(x, cupy.ndarray)
        raise NotImplementedError(self.name)

    def device_of(self, x: Any) -> str:
        """A comparable description of where ``x`` lives."""
        if self.name == "torch":
            return str(x.device)
        if self.name == "jax":
            return ",".join(sorted(str(d) for d in x.devices()))
        if self.name == "cupy":
            return f"cuda:{x.device.id}"
        if self.name == "mlx":
            import mlx.core as mx

            return str(mx.default_device())  # unified memory: MLX arrays carry no device
        return "cpu"

    @property
    def float_dtypes(self) -> tuple[str, ...]:
        """The floating dtypes this library supports here, by name."""
        return _float_dtypes(self.name, self.device)

    @property
    def step_dtype(self) -> str:
        """The dtype of the step counter once it lives in this library."""
        if self.name == "torch":
            return "int64"  # PyTorch has no uint64 arithmetic
        if self.name == "jax":
            import jax

            return "uint64" if jax.config.jax_enable_x64 else "uint32"
        return "uint64"

    def sync(self, tree: Any) -> Any:
        """Force lazy libraries (MLX) to compute ``tree``; returns it."""
        if self.name == "mlx":
            import mlx.core as mx

            mx.eval(tree)
        return tree


def _cuda_index(device: str | None) -> int:
    return int(device.split(":", 1)[1]) if device and ":" in device else 0


def _skip_reason(name: str, module: str, device: str | None) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{name} is not installed"
    if name == "torch" and device and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return "torch: no CUDA device"
    if name == "cupy":
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "cupy: no GPU"
        except Exception as exc:  # no driver, no runtime, ...
            return f"cupy: no usable GPU ({type(exc).__name__})"
    return None


def _float_dtypes(name: str, device: str | None) -> tuple[str, ...]:
    if name in ("numpy", "cupy"):
        return ("float16", "float32", "float64")
    if name == "torch":
        return ("float16", "bfloat16", "float32", "float64")
    if name == "jax":
        import jax

        return ("float16", "bfloat16", "float32") + (
            ("float64",) if jax.config.jax_enable_x64 else ()
        )
    if name == "mlx":
        import mlx.core as mx

        # float64 exists only on MLX's CPU device (not on Metal GPUs).
        cpu = mx.default_device() == mx.cpu
        return ("float16", "bfloat16", "float32") + (("float64",) if cpu else ())
    raise NotImplementedError(name)


BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("mlx", "mlx"),
    Backend("torch", "torch", "cpu"),
    Backend("torch", "torch", "cuda"),
    Backend("jax", "jax"),
    Backend("cupy", "cupy", "cuda:0"),
]


def backend_by_id(ident: str) -> Backend:
    """The entry of ``BACKENDS`` with this id (``"numpy"``, ``"torch-cpu"``, ...)."""
    for b in BACKENDS:
        if b.id == ident:
            return b
    raise KeyError(ident)


@pytest.fixture(params=BACKENDS, ids=lambda b: b.id)
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    reason = b.skip_reason
    if reason is not None:
        pytest.skip(reason)
    return b


@pytest.fixture
def device(backend: Backend) -> str | None:
    """The device the ``backend`` fixture creates arrays on (None: the library default)."""
    return backend.device
