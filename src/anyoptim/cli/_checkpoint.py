"""Checkpoints of the command line: optimizer, parameters and the run's own metadata.

Files are written with :func:`anyoptim.save` (safetensors with JSON metadata, atomically) and
read back with :func:`anyoptim.load`, :func:`anyoptim.load_params` and
:func:`anyoptim.read_metadata`. What the command line needs to resume (configuration, epoch,
history) is one JSON string under the metadata key ``CLI_KEY``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ._common import CLIError, UsageError

CLI_KEY = "anyoptim.cli"
FORMAT = 1


@dataclass
class Checkpoint:
    optimizer: Any  # the restored optimizer (state as NumPy arrays)
    state: Any  # its state tree (NumPy arrays)
    params: Any  # the parameter tree (NumPy arrays)
    info: dict[str, Any]  # what the command line stored: config, epoch, history


def save(path: str, optimizer: Any, params: Any, info: dict[str, Any]) -> None:
    """Write ``optimizer`` (complete), ``params`` and ``info`` to ``path`` atomically.

    ``params`` must come from the same array library as the optimizer state.
    """
    import anyoptim

    metadata = {CLI_KEY: json.dumps({"format": FORMAT, **info}, separators=(",", ":"))}
    try:
        anyoptim.save(path, optimizer, params=params, metadata=metadata)
    except OSError as exc:
        raise CLIError(f"cannot write the checkpoint {path!r}: {exc}") from None


def load(path: str) -> Checkpoint:
    """Read a checkpoint written by :func:`save`, as NumPy arrays."""
    import anyoptim

    if not os.path.exists(path):
        raise UsageError(f"checkpoint {path!r} does not exist")
    try:
        info = _info(path, anyoptim.read_metadata(path))
        optimizer = anyoptim.load(path, library="numpy")
        params = anyoptim.load_params(path, library="numpy")
    except CLIError:
        raise
    except Exception as exc:  # damaged file, foreign file, mismatched tree
        raise CLIError(f"cannot resume from {path!r}: {exc}") from None
    return Checkpoint(optimizer, optimizer.state, params, info)


def _info(path: str, metadata: dict[str, str]) -> dict[str, Any]:
    raw = metadata.get(CLI_KEY)
    if raw is None:
        raise UsageError(
            f"{path!r} was not written by `anyoptim train --checkpoint` (its metadata has no "
            f"{CLI_KEY!r} entry), so it cannot be resumed by the command line"
        )
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CLIError(
            f"checkpoint {path!r}: the {CLI_KEY!r} metadata is not valid JSON ({exc})"
        ) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CLIError(
            f"checkpoint {path!r} was written by another version of the command line "
            f"(format {info.get('format') if isinstance(info, dict) else None!r}, expected {FORMAT})"
        )
    missing = [k for k in ("config", "epoch", "history") if k not in info]
    if missing:
        raise CLIError(f"checkpoint {path!r}: the {CLI_KEY!r} metadata lacks {', '.join(missing)}")
    return info
