"""Shared pieces of the command line: errors with exit codes, lazy imports, the optimizer table."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

INSTALL_HINT = 'pip install "anyoptim[cli]"'


class CLIError(Exception):
    """An error the command line reports as one line, with an exit code."""

    code = EXIT_FAILURE

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CLIError):
    """The user asked for something that cannot work (exit code 2)."""

    code = EXIT_USAGE


def need(module: str, purpose: str) -> Any:
    """Import ``module`` or raise a usage error telling how to install the CLI extras."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", 1)[0]
        raise UsageError(
            f"{purpose} needs the package {top!r}, which is not installed ({exc}). "
            f"Install the command-line extras with: {INSTALL_HINT}"
        ) from None


def wrap(text: str, width: int = 78) -> str:
    """Wrap a help description (the help formatter keeps text as written)."""
    import textwrap

    return textwrap.fill(" ".join(text.split()), width)


def emit_json(obj: Any) -> None:
    """Write one JSON object on stdout (the only thing printed in --json mode)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def check_writable(path: str, what: str) -> str:
    """Fail early (before training) when the folder of ``path`` does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{what}: the folder {folder!r} does not exist (for {path!r})")
    return path


def console(stderr: bool = False) -> Any:
    """A rich console; when the output is not a terminal it is 120 columns wide (not 80), so
    tables and the progress line are not squeezed in logs and pipes. COLUMNS still wins."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS"):
        width = 120
    return Console(stderr=stderr, width=width)


# --------------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class OptimizerInfo:
    """How the command line builds one optimizer."""

    name: str  # class name in anyoptim
    default_lr: float | None  # None: the optimizer's own step size (Adafactor's relative step)
    note: str = ""


OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name.lower(): info
    for info in (
        OptimizerInfo("SGD", 0.1),
        OptimizerInfo("RMSprop", 1e-3),
        OptimizerInfo("Adagrad", 0.05),
        OptimizerInfo("AdaDelta", 1.0),
        OptimizerInfo("Adam", 1e-3),
        OptimizerInfo("AdamW", 1e-3),
        OptimizerInfo("Adamax", 2e-3),
        OptimizerInfo("Lion", 3e-4),
        OptimizerInfo("Adafactor", None, "relative step size unless --lr is given"),
        OptimizerInfo("Muon", 0.02),
        OptimizerInfo("ScheduleFreeAdamW", 2.5e-3),
        OptimizerInfo("ScheduleFreeSGD", 0.5),
        OptimizerInfo("ScheduleFreeRAdam", 2.5e-3),
        OptimizerInfo("ADOPT", 1e-3),
        OptimizerInfo("AdEMAMix", 1e-3),
        OptimizerInfo("SimplifiedAdEMAMix", 1e-4),
        OptimizerInfo("Adan", 1e-3),
        OptimizerInfo("SignSGD", 1e-3),
        OptimizerInfo("Signum", 1e-3),
        OptimizerInfo("LAMB", 1e-2),
        OptimizerInfo("LARS", 1.0),
        OptimizerInfo("NAdam", 2e-3),
        OptimizerInfo("NAdamW", 2e-3),
        OptimizerInfo("RAdam", 1e-3),
        OptimizerInfo("Prodigy", 1.0, "learning-rate free: --lr multiplies the estimate"),
        OptimizerInfo("AdaBelief", 1e-3),
        OptimizerInfo("LaProp", 1e-3),
        OptimizerInfo("AdamAtan2", 1e-3),
        OptimizerInfo("StableAdamW", 1e-3),
        OptimizerInfo("CautiousAdamW", 1e-3),
        OptimizerInfo("CautiousLion", 3e-4),
    )
}

# command-line flag -> keyword argument of the optimizer constructors
HYPER_FLAGS = {"momentum": "momentum", "weight_decay": "weight_decay", "betas": "betas"}


def optimizer_names() -> str:
    return ", ".join(info.name for info in OPTIMIZERS.values())


def lookup_optimizer(name: str) -> OptimizerInfo:
    info = OPTIMIZERS.get(name.strip().lower())
    if info is None:
        hint = ""
        if name.strip().lower() == "multioptimizer":
            hint = " (MultiOptimizer combines other optimizers and cannot be chosen here)"
        raise UsageError(f"unknown optimizer {name!r}{hint}; valid names: {optimizer_names()}")
    return info


def default_lr_help() -> str:
    lines = []
    for info in OPTIMIZERS.values():
        lr = "relative step" if info.default_lr is None else f"{info.default_lr:g}"
        lines.append(f"  {info.name:<10} {lr}")
    return "\n".join(lines)


def accepted_kwargs(class_name: str) -> set[str]:
    import anyoptim

    cls = getattr(anyoptim, class_name)
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def build_optimizer(
    class_name: str,
    learning_rate: Any,
    hyper: dict[str, Any],
    *,
    strict: bool = True,
) -> Any:
    """Create ``anyoptim.<class_name>`` from the learning rate (a number, a schedule or None).

    ``hyper`` holds the values of --momentum/--weight-decay/--betas that were given. With
    ``strict`` an option the optimizer does not take is a usage error; otherwise it is skipped
    (``compare`` applies shared options only where they make sense).
    """
    import anyoptim

    cls = getattr(anyoptim, class_name)
    accepted = accepted_kwargs(class_name)
    kwargs: dict[str, Any] = {}
    for key, value in hyper.items():
        if value is None:
            continue
        if key not in accepted:
            if strict:
                takers = sorted(
                    info.name for info in OPTIMIZERS.values() if key in accepted_kwargs(info.name)
                )
                flag = "--" + key.replace("_", "-")
                extra = (
                    " (use AdamW for decoupled weight decay)"
                    if class_name == "Adam" and key == "weight_decay"
                    else ""
                )
                raise UsageError(
                    f"{class_name} has no {key} hyperparameter, so {flag} cannot be used with "
                    f"it{extra}; {flag} works with: {', '.join(takers)}"
                )
            continue
        kwargs[key] = value
    if learning_rate is None:
        if class_name != "Adafactor":
            raise UsageError(f"{class_name} needs a learning rate (--lr or --schedule)")
    else:
        kwargs["learning_rate"] = learning_rate
        if class_name == "Adafactor":
            kwargs["relative_step"] = False
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid hyperparameters for {class_name}: {exc}") from None


def parse_betas(text: str) -> list[float]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2:
        raise UsageError(
            f"--betas expects two numbers separated by a comma, e.g. 0.9,0.999; got {text!r}"
        )
    return values


def output_options(args: Any, default_plot: str) -> tuple[str | None, bool]:
    """``(plot path or None, fancy)`` from --plot/--no-plot/--quiet/--json, checked up front."""
    plot = None if args.no_plot else (args.plot or default_plot)
    if plot is not None:
        check_writable(plot, "--plot")
        need("matplotlib", "--plot (use --no-plot to skip the figure)")
    fancy = not (args.quiet or args.json)
    if fancy:
        need("rich", "the progress display")
    return plot, fancy
