"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "anyoptim.optimizers._adafactor",
    "anyoptim.optimizers._adam",
    "anyoptim.optimizers._adaptive",
    "anyoptim.optimizers._base",
    "anyoptim.optimizers._clip",
    "anyoptim.optimizers._lion",
    "anyoptim.optimizers._multi",
    "anyoptim.optimizers._muon",
    "anyoptim.optimizers._sgd",
    "anyoptim.schedulers",
    "anyoptim.io",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
