"""The ``anyoptim`` command line: train, compare, schedule, inspect and bench.

Entry point: :func:`main`, declared in ``pyproject.toml`` as the ``anyoptim`` script and also
reachable as ``python -m anyoptim``. Optional packages (rich, matplotlib, scikit-learn,
autograd) are imported only inside the subcommands that use them.

Exit codes: 0 success, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from ._common import EXIT_FAILURE, EXIT_USAGE, CLIError, wrap

__all__ = ["build_parser", "main"]

EPILOG = """\
examples:
  anyoptim train                                   train an MLP on digits with Adam (NumPy)
  anyoptim train --optimizer lion --lr 3e-4 --epochs 10 --checkpoint run.safetensors
  anyoptim train --resume run.safetensors --epochs 20
  anyoptim compare --optimizers sgd,adam,adamw,lion,adafactor,muon
  anyoptim schedule "cosine_decay(1e-3, 1000, 1e-5)" --steps 1200 --at 0,500,1000
  anyoptim inspect run.safetensors
  anyoptim bench                                   AdamW step timings next to the peers

Each command has its own help: anyoptim train --help.
Exit codes: 0 success, 1 runtime failure, 2 usage error.
Set ANYOPTIM_DEBUG=1 to see the full traceback of an unexpected error.
The commands need the optional packages: pip install "anyoptim[cli]"
"""


def _version() -> str:
    from anyoptim import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    from . import bench, compare, inspect, schedule, train

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="anyoptim",
        description=wrap(
            "anyoptim: MLX's optimizers for every array library, from the command line."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"anyoptim {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parser(sub, formatter)
    compare.add_parser(sub, formatter)
    schedule.add_parser(sub, formatter)
    inspect.add_parser(sub, formatter)
    bench.add_parser(sub, formatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = f"anyoptim {args.command}"
    try:
        return int(func(args))
    except CLIError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    except Exception as exc:
        if os.environ.get("ANYOPTIM_DEBUG"):
            traceback.print_exc()
        else:
            print(
                f"{command}: failed: {type(exc).__name__}: {exc}\n"
                "(set ANYOPTIM_DEBUG=1 for the traceback)",
                file=sys.stderr,
            )
        return EXIT_FAILURE
