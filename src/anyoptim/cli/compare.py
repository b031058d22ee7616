"""``anyoptim compare``: the same MLP, data, seed and epochs for several optimizers."""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import _data
from ._common import (
    OPTIMIZERS,
    UsageError,
    default_lr_help,
    emit_json,
    lookup_optimizer,
    output_options,
    wrap,
)
from .train import (
    Config,
    Diverged,
    Reporter,
    RichReporter,
    add_common_training_options,
    fit,
)

DEFAULT_OPTIMIZERS = "sgd,adam,adamw,lion,adafactor,muon"
DEFAULT_PLOT = "anyoptim-compare.png"

EPILOG = """\
examples:
  anyoptim compare                                   # {default}
  anyoptim compare --optimizers adam,rmsprop,adagrad --epochs 10
  anyoptim compare --optimizers sgd,adam --lr sgd=0.05,adam=3e-3 --plot cmp.png
  anyoptim compare --optimizers adam,adamw,adamax --lr 2e-3 --json

Every optimizer trains the same MLP from the same initial parameters on the same batches.
The table ranks them by test accuracy (ties: lower final training loss first).
An optimizer whose loss becomes NaN or infinite is listed as diverged; the others go on.

default learning rates (override with --lr LR for all, or --lr name=LR,name=LR):
{lrs}

--momentum, --weight-decay and --betas apply to the optimizers that take them and are
ignored by the others.
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train the same model with several optimizers and rank them",
        description=wrap(
            "Train the digits MLP once per optimizer (same data, seed and epochs), "
            "draw all loss and accuracy curves in one PNG and print a ranked table."
        ),
        epilog=EPILOG.format(default=DEFAULT_OPTIMIZERS, lrs=default_lr_help()),
        formatter_class=formatter,
    )
    p.add_argument(
        "--optimizers",
        default=DEFAULT_OPTIMIZERS,
        metavar="A,B,...",
        help=f"comma-separated optimizer names, or 'all' (default {DEFAULT_OPTIMIZERS})",
    )
    p.add_argument(
        "--lr",
        metavar="LR|NAME=LR,...",
        help="one learning rate for all, or per optimizer, e.g. sgd=0.05,adam=3e-3",
    )
    add_common_training_options(p, compare=True)
    p.set_defaults(func=run)


def parse_optimizers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if [n.lower() for n in names] == ["all"]:
        return [info.name for info in OPTIMIZERS.values()]
    if not names:
        raise UsageError("--optimizers is empty; give names such as " + DEFAULT_OPTIMIZERS)
    out: list[str] = []
    for name in names:
        cls = lookup_optimizer(name).name
        if cls in out:
            raise UsageError(f"--optimizers lists {cls} twice")
        out.append(cls)
    return out


def parse_lrs(text: str | None, names: list[str]) -> dict[str, float | None]:
    lrs: dict[str, float | None] = {n: OPTIMIZERS[n.lower()].default_lr for n in names}
    if text is None:
        return lrs
    if "=" not in text:
        value = _positive(text, "--lr")
        return dict.fromkeys(names, value)
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"--lr: expected NAME=LR in {part!r} (e.g. adam=1e-3)")
        key, rate = part.split("=", 1)
        cls = lookup_optimizer(key).name
        if cls not in lrs:
            raise UsageError(f"--lr sets a learning rate for {cls}, which is not in --optimizers")
        lrs[cls] = _positive(rate, f"--lr {key.strip()}")
    return lrs


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what}: expected a number, got {text!r}") from None
    if not value > 0:
        raise UsageError(f"{what}: expected a positive number, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    names = parse_optimizers(args.optimizers)
    lrs = parse_lrs(args.lr, names)
    common = {
        key: getattr(args, key)
        for key in (
            "momentum",
            "weight_decay",
            "betas",
            "clip_norm",
            "batch_size",
            "seed",
            "hidden",
            "activation",
            "accumulate",
            "ema",
            "no_decay_1d",
            "state_dtype",
        )
        if getattr(args, key) is not None
    }
    configs = [Config(optimizer=name, lr=lrs[name], **common) for name in names]
    for config in configs:
        config.make_optimizer(strict=False)  # reject invalid values before training
    epochs = args.epochs if args.epochs is not None else 20
    backend = args.backend or "numpy"
    plot, fancy = output_options(args, DEFAULT_PLOT)

    data = _data.load(configs[0].seed)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for config in configs:
        reporter: Reporter = RichReporter() if fancy else Reporter()
        try:
            result = fit(
                config,
                epochs,
                backend=backend,
                data=data,
                reporter=reporter,
                label=f"{config.optimizer:<9}",
                strict=False,
            )
        except Diverged as exc:
            rows.append(
                {
                    "optimizer": config.optimizer,
                    "hyperparameters": config.describe(),
                    "status": "diverged",
                    "error": str(exc),
                    "final_loss": None,
                    "test_accuracy": None,
                    "wall_time_s": None,
                }
            )
            continue
        row = result.metrics()
        row["status"] = "ok"
        rows.append(row)
        curves.append(
            {
                "label": config.describe(),
                "history": result.history,
                "steps_per_epoch": result.steps_per_epoch,
            }
        )

    ranked = sorted(rows, key=_rank_key)
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    if plot is not None and curves:
        from . import _plot

        _plot.comparison(
            plot,
            curves,
            f"optimizers on digits ({backend}), {epochs} epochs, seed {configs[0].seed}",
        )

    if args.json:
        emit_json(
            {
                "command": "compare",
                "backend": backend,
                "epochs": epochs,
                "seed": configs[0].seed,
                "batch_size": configs[0].batch_size,
                "plot": os.path.abspath(plot) if plot and curves else None,
                "results": ranked,
            }
        )
    elif args.quiet:
        for row in ranked:
            acc = row["test_accuracy"]
            print(
                f"{row['rank']}. {row['optimizer']}: "
                + (f"test accuracy {100 * acc:.2f}%" if acc is not None else row["status"])
            )
    else:
        _print_table(ranked, epochs, backend, plot if curves else None)
    return 0 if any(row["status"] == "ok" for row in rows) else 1


def _rank_key(row: dict[str, Any]) -> tuple[float, float]:
    if row["status"] != "ok":
        return (1.0, float("inf"))
    return (-row["test_accuracy"], row["final_loss"])


def _print_table(rows: list[dict[str, Any]], epochs: int, backend: str, plot: str | None) -> None:
    from rich.table import Table

    from ._common import console as make_console

    table = Table(
        title=f"anyoptim compare: digits, {epochs} epochs, {backend}", title_justify="left"
    )
    table.add_column("#", justify="right")
    table.add_column("optimizer", style="bold")
    table.add_column("final loss", justify="right")
    table.add_column("test accuracy", justify="right")
    table.add_column("wall time", justify="right")
    table.add_column("steps/s", justify="right")
    for row in rows:
        if row["status"] != "ok":
            table.add_row(
                str(row["rank"]), row["hyperparameters"], "-", f"[red]{row['status']}", "-", "-"
            )
            continue
        table.add_row(
            str(row["rank"]),
            row["hyperparameters"],
            f"{row['final_loss']:.4f}",
            f"{100 * row['test_accuracy']:.2f}%",
            f"{row['wall_time_s']:.2f} s",
            f"{row['steps_per_s']:,.0f}",
        )
    console = make_console()
    console.print(table)
    if plot:
        console.print(f"plot: {plot}")
