"""PNG figures drawn with matplotlib's Agg canvas (no GUI backend, no pyplot global state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._common import CLIError, need


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    need("matplotlib", "plotting")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: str) -> str:
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CLIError(f"cannot write the plot {path!r}: {exc}") from None
    return path


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (same length as ``values``)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or window <= 1:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def training(path: str, history: dict[str, Any], title: str, steps_per_epoch: int) -> str:
    """Loss (per step and per epoch), accuracy (per epoch) and learning rate (per step)."""
    fig, axes = _figure(1, 3, (15, 4.4))
    ax_loss, ax_acc, ax_lr = axes[0]
    loss = history["loss"]
    steps = np.arange(1, len(loss) + 1)
    epochs = history["epochs"]
    ends = [e["epoch"] * steps_per_epoch for e in epochs]

    ax_loss.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8, label="batch loss")
    ax_loss.plot(
        steps,
        smooth(loss, max(1, steps_per_epoch // 2)),
        color="tab:blue",
        lw=1.5,
        label="batch loss (smoothed)",
    )
    if epochs:
        ax_loss.plot(
            ends,
            [e["train_loss"] for e in epochs],
            "o-",
            color="tab:green",
            ms=3,
            label="train loss (epoch end)",
        )
        ax_loss.plot(
            ends,
            [e["test_loss"] for e in epochs],
            "s-",
            color="tab:red",
            ms=3,
            label="test loss (epoch end)",
        )
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_title("loss")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize=8)

    if epochs:
        numbers = [e["epoch"] for e in epochs]
        ax_acc.plot(
            numbers,
            [100 * e["train_acc"] for e in epochs],
            "o-",
            color="tab:green",
            ms=3,
            label="train",
        )
        ax_acc.plot(
            numbers,
            [100 * e["test_acc"] for e in epochs],
            "s-",
            color="tab:red",
            ms=3,
            label="test",
        )
        best = max(100 * e["test_acc"] for e in epochs)
        ax_acc.axhline(best, color="gray", ls=":", lw=1)
        ax_acc.annotate(
            f"best test {best:.1f}%",
            (numbers[0], best),
            fontsize=8,
            xytext=(0, 4),
            textcoords="offset points",
        )
    _integer_ticks(ax_acc)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title("accuracy")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(fontsize=8, loc="lower right")

    lrs = np.asarray(history["lr"], dtype=np.float64)
    ax_lr.plot(np.arange(1, len(lrs) + 1), lrs, color="tab:purple", lw=1.5)
    if len(lrs) and np.all(np.isfinite(lrs)) and lrs.max() > 0:
        ax_lr.set_ylim(0, 1.1 * lrs.max())
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title(history.get("lr_label", "learning rate"))
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.grid(True, alpha=0.3)

    fig.suptitle(title)
    return _save(fig, path)


def comparison(path: str, results: list[dict[str, Any]], title: str) -> str:
    """One line per optimizer: smoothed batch loss per step and test accuracy per epoch."""
    fig, axes = _figure(1, 2, (13, 4.6))
    ax_loss, ax_acc = axes[0]
    many = len(results) > 10
    if many:
        from matplotlib import colormaps

        palette = colormaps["tab20"]
    for i, res in enumerate(results):
        # (with more than 10 runs, 20 colours; each colour and line style pair is unique)
        color = palette(i % 20) if many else f"C{i % 10}"
        style = ("-", "--", "-.", ":")[(i + i // 20) % 4]  # curves that coincide stay visible
        loss = res["history"]["loss"]
        spe = res["steps_per_epoch"]
        label = res["label"]
        ax_loss.plot(
            np.arange(1, len(loss) + 1),
            smooth(loss, max(1, spe // 2)),
            color=color,
            ls=style,
            lw=1.4,
            label=label,
        )
        epochs = res["history"]["epochs"]
        ax_acc.plot(
            [e["epoch"] for e in epochs],
            [100 * e["test_acc"] for e in epochs],
            marker="o",
            ls=style,
            color=color,
            ms=3,
            lw=1.4,
            label=label,
        )
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (smoothed)")
    ax_loss.set_title("loss")
    ax_loss.grid(True, which="both", alpha=0.3)
    _integer_ticks(ax_acc)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("test accuracy")
    ax_acc.grid(True, alpha=0.3)
    if len(results) <= 8:
        ax_loss.legend(fontsize=8)
        ax_acc.legend(fontsize=8, loc="lower right")
    else:
        # many runs (compare --optimizers all): one legend beside the plots, and the accuracy
        # axis zoomed on the last half of training, where the runs differ
        fig.set_size_inches(15, 5.2)
        fig.legend(*ax_loss.get_legend_handles_labels(), loc="outside right upper", fontsize=7,
                   ncols=1 if len(results) <= 24 else 2)
        finals = [100 * r["history"]["epochs"][-1]["test_acc"] for r in results
                  if r["history"]["epochs"]]
        if finals:
            ax_acc.set_ylim(max(0.0, min(finals) - 5.0), 100.0)
    fig.suptitle(title)
    return _save(fig, path)


def schedule(
    path: str, steps: np.ndarray, values: np.ndarray, expression: str, marks: Sequence[int]
) -> str:
    fig, axes = _figure(1, 1, (8, 4.2))
    ax = axes[0][0]
    stride = max(1, len(steps) // 20_000)  # a line of more points than pixels draws the same
    ax.plot(steps[::stride], values[::stride], color="tab:purple", lw=1.6)
    for step in marks:
        if 0 <= step < len(values):
            ax.plot([step], [values[step]], "o", color="tab:orange", ms=4)
            ax.annotate(
                f"{values[step]:.3g}",
                (step, values[step]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.set_xlabel("step (the value used by update step + 1)")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(True, alpha=0.3)
    ax.set_title(expression if len(expression) <= 90 else expression[:87] + "...", fontsize=9)
    return _save(fig, path)
