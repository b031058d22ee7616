"""Hyperparameter checks shared by the optimizer constructors.

Every message names the optimizer, the parameter, the rule and the value received.
"""

from __future__ import annotations

from typing import Any


def require(ok: bool, optimizer: str, name: str, rule: str, value: Any, hint: str = "") -> None:
    if not ok:
        message = f"{optimizer}: {name} should be {rule}, {value!r} was provided instead."
        raise ValueError(message + (" " + hint if hint else ""))


def check_betas(optimizer: str, betas: Any) -> None:
    for i, beta in enumerate(betas):
        require(
            0.0 <= beta < 1.0,
            optimizer,
            f"beta{i + 1} (betas[{i}])",
            "in [0, 1)",
            beta,
            "Betas are decay rates of moving averages; typical values are 0.9 and 0.999.",
        )
