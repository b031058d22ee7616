"""Exception types raised by anyoptim.

They subclass the built-in exceptions MLX raises in the same situations (``KeyError`` for a
missing state entry), so code written against ``mlx.optimizers`` keeps catching them, and add
a message that says what went wrong and how to fix it.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "MissingStateError", "TreeMismatchError"]


class _MessageKeyError(KeyError):
    # KeyError's str() shows the repr of its argument; show the message as written instead.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingStateError(_MessageKeyError):
    """A gradient has no optimizer state, or the state lacks ``step``/``learning_rate``."""


class TreeMismatchError(_MessageKeyError, ValueError):
    """The gradient, parameter and state trees do not have matching structures."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted or does not match the optimizer."""
