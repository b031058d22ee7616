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
    """One array library as the tests see it: how to make arrays and read them back."""

    name: str
    module: str

    @property
    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def asarray(self, x: np.ndarray, dtype: str | None = None) -> Any:
        dtype = dtype or str(x.dtype)
        if self.name == "numpy":
            return np.asarray(x, dtype=dtype)
        if self.name == "mlx":
            import mlx.core as mx

            return mx.array(np.asarray(x, dtype=np.float32)).astype(getattr(mx, dtype))
        raise NotImplementedError(self.name)

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.name == "mlx":
            import mlx.core as mx

            if x.dtype in (mx.bfloat16, mx.float16):
                x = x.astype(mx.float32)
            return np.asarray(x)
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).rsplit(".", 1)[-1]


BACKENDS = [Backend("numpy", "numpy"), Backend("mlx", "mlx")]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    if not b.available:
        pytest.skip(f"{b.name} is not installed")
    return b
