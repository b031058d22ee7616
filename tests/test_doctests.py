"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest


def _optimizer_modules() -> list[str]:
    """Every module of ``anyoptim.optimizers`` that defines a public optimizer or function."""
    import pkgutil

    import anyoptim.optimizers as package

    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        public = [
            obj for key, obj in vars(module).items()
            if not key.startswith("_") and getattr(obj, "__module__", None) == module.__name__
            and key in package.__all__
        ]
        if public:
            names.append(module.__name__)
    return sorted(names)


SCHEDULE_MODULES = ["anyoptim.schedulers._decay", "anyoptim.schedulers._mlx", "anyoptim.schedulers._warmup"]
MODULES = [*_optimizer_modules(), *SCHEDULE_MODULES, "anyoptim.io"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


@pytest.mark.parametrize(("package", "needs"), [("anyoptim.torch", "torch"), ("anyoptim.optax", "optax")])
def test_front_end_docstring_examples(package: str, needs: str) -> None:
    """The front-ends are packages: their examples live in the package and its modules."""
    import pkgutil

    pytest.importorskip(needs)
    root = importlib.import_module(package)
    modules = [root] + [
        importlib.import_module(f"{package}.{info.name}") for info in pkgutil.iter_modules(root.__path__)
    ]
    attempted = 0
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 0
