"""``anyoptim train``: fit a small MLP on the digits data set with one optimizer."""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from . import _checkpoint, _data
from ._common import (
    OPTIMIZERS,
    CLIError,
    UsageError,
    build_optimizer,
    check_writable,
    default_lr_help,
    emit_json,
    lookup_optimizer,
    optimizer_names,
    output_options,
    parse_betas,
    wrap,
)
from ._common import console as make_console
from ._model import ACTIVATIONS, CHOICES, init_params, make_backend

DEFAULT_PLOT = "anyoptim-train.png"


@dataclass
class Config:
    """Everything that decides the trajectory of a run (stored in checkpoints)."""

    optimizer: str = "Adam"
    lr: float | None = None
    schedule: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    betas: list[float] | None = None
    clip_norm: float | None = None
    batch_size: int = 64
    seed: int = 0
    hidden: int = 128
    activation: str = "tanh"
    accumulate: int = 1
    ema: float | None = None
    no_decay_1d: bool = False
    state_dtype: str | None = None

    def learning_rate(self) -> Any:
        """A number, a schedule, or None (Adafactor's relative step)."""
        if self.schedule is not None:
            from ._expr import parse_schedule

            return parse_schedule(self.schedule)
        if self.lr is not None:
            return self.lr
        return OPTIMIZERS[self.optimizer.lower()].default_lr

    def make_optimizer(self, strict: bool = True) -> Any:
        hyper = {"momentum": self.momentum, "weight_decay": self.weight_decay, "betas": self.betas}
        import anyoptim

        opt = build_optimizer(self.optimizer, self.learning_rate(), hyper, strict=strict)
        if self.no_decay_1d:
            opt.groups = [anyoptim.no_decay_1d()]
        if self.state_dtype is not None:
            opt.state_dtype = self.state_dtype
        if self.accumulate > 1:
            opt = anyoptim.GradientAccumulation(opt, self.accumulate)
        if self.ema is not None:
            opt = anyoptim.EMA(opt, self.ema)
        return opt

    def describe(self) -> str:
        parts = []
        if self.schedule is not None:
            parts.append(f"schedule={self.schedule}")
        else:
            lr = self.learning_rate()
            parts.append("relative step" if lr is None else f"lr={lr:g}")
        for key in ("momentum", "weight_decay", "clip_norm"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value:g}")
        if self.betas is not None:
            parts.append(f"betas={self.betas[0]:g},{self.betas[1]:g}")
        if self.no_decay_1d:
            parts.append("no decay for 1-D")
        if self.state_dtype is not None:
            parts.append(f"state {self.state_dtype}")
        text = f"{self.optimizer}({', '.join(parts)})"
        if self.accumulate > 1:
            text += f", accumulate {self.accumulate}"
        if self.ema is not None:
            text += f", EMA {self.ema:g}"
        return text


# Options that, when given together with --resume, must agree with the checkpoint.
_LOCKED = [f.name for f in fields(Config)]


@dataclass
class Result:
    config: Config
    backend: str
    epochs: int
    steps: int
    steps_per_epoch: int
    history: dict[str, Any]
    train_time: float
    params: Any = field(repr=False)
    optimizer: Any = field(repr=False)

    @property
    def last(self) -> dict[str, Any]:
        return self.history["epochs"][-1] if self.history["epochs"] else {}

    def metrics(self) -> dict[str, Any]:
        last = self.last
        lrs = self.history["lr"]
        return {
            "optimizer": self.config.optimizer,
            "hyperparameters": self.config.describe(),
            "backend": self.backend,
            "epochs": self.epochs,
            "steps": self.steps,
            "final_loss": last.get("train_loss"),
            "train_accuracy": last.get("train_acc"),
            "test_loss": last.get("test_loss"),
            "test_accuracy": last.get("test_acc"),
            "learning_rate": lrs[-1] if lrs else None,
            "wall_time_s": round(self.train_time, 4),
            "steps_per_s": round(self.steps / self.train_time, 1) if self.train_time > 0 else None,
        }


class Reporter:
    """Receives progress events; the default one stays silent."""

    def start(self, label: str, total: int, done: int) -> None: ...

    def step(self, epoch: int, loss: float, lr: float, rate: float) -> None: ...

    def epoch_end(self, metrics: dict[str, Any]) -> None: ...

    def stop(self) -> None: ...


class Diverged(CLIError):
    """The loss became NaN or infinite (exit code 1)."""

    def __init__(self, loss: float, step: int, epoch: int) -> None:
        super().__init__(
            f"training diverged: the loss became {loss} at step {step} (epoch {epoch}); "
            "try a smaller learning rate or --clip-norm"
        )


def current_lr(optimizer: Any) -> float:
    """The learning rate the last update used (Adafactor: its relative step size)."""
    while isinstance(getattr(optimizer, "optimizer", None), anyoptim_optimizer()):
        optimizer = optimizer.optimizer  # a wrapper (accumulation, EMA): its inner optimizer
    state = optimizer.state
    if "learning_rate" in state:
        return float(np.asarray(state["learning_rate"]))
    t = float(np.asarray(state["step"]))
    if getattr(optimizer, "warmup_init", False):
        return min(1e-6 * t, 1 / math.sqrt(t)) if t > 0 else 0.0
    return min(1e-2, 1 / math.sqrt(t)) if t > 0 else 0.0


def anyoptim_optimizer() -> type:
    from anyoptim import Optimizer

    return Optimizer


def _one_blas_thread() -> Any:
    """Limit BLAS to one thread while training: the matrices are tiny, and on a busy machine
    idle BLAS threads spinning for work cost more than they bring (threadpoolctl comes with
    scikit-learn; without it nothing changes)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fit(
    config: Config,
    epochs: int,
    *,
    backend: str = "numpy",
    data: _data.Digits | None = None,
    reporter: Reporter | None = None,
    checkpoint: str | None = None,
    resume: _checkpoint.Checkpoint | None = None,
    label: str = "train",
    strict: bool = True,
) -> Result:
    """Train for ``epochs`` epochs in total (counting those already in ``resume``)."""
    import anyoptim

    reporter = reporter or Reporter()
    data = data or _data.load(config.seed)
    model = make_backend(backend, data, config.activation)
    n_train = len(data.y_train)
    spe = _data.steps_per_epoch(n_train, config.batch_size)

    if resume is None:
        optimizer = config.make_optimizer(strict=strict)
        sizes = [data.n_features, config.hidden, data.n_classes]
        params = model.from_numpy(init_params(_data.init_rng(config.seed), sizes))
        history: dict[str, Any] = {"loss": [], "lr": [], "epochs": []}
        start, elapsed = 0, 0.0
    else:
        optimizer = resume.optimizer
        # The state arrays move into the chosen library (bit for bit).
        optimizer.state = model.from_numpy(resume.state)
        params = model.from_numpy(resume.params)
        history = resume.info["history"]
        start = int(resume.info["epoch"])
        elapsed = float(resume.info.get("train_time", 0.0))

    clip = config.clip_norm
    if "learning_rate" not in optimizer.state:
        history["lr_label"] = "relative step size (Adafactor)"
    steps = start * spe
    reporter.start(label, epochs * spe, steps)
    t0 = time.perf_counter()
    # Overflow is reported once, clearly, by the finiteness checks below instead of as NumPy
    # RuntimeWarnings from deep inside the maths.
    with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            for epoch in range(start, epochs):
                for batch in _data.batches(n_train, config.batch_size, config.seed, epoch):
                    loss, grads = model.loss_and_grad(params, batch)
                    if not math.isfinite(loss):
                        raise Diverged(loss, steps + 1, epoch + 1)
                    if clip is not None:
                        grads, _ = anyoptim.clip_grad_norm(grads, clip)
                    params = model.update(optimizer, params, grads)
                    steps += 1
                    lr = current_lr(optimizer)
                    history["loss"].append(loss)
                    history["lr"].append(lr)
                    now = time.perf_counter() - t0
                    reporter.step(
                        epoch + 1, loss, lr, (steps - start * spe) / now if now > 0 else 0.0
                    )
                # with --ema the model is evaluated with the averaged parameters, with a
                # schedule-free optimizer at its evaluation point x
                evaluated = optimizer.average if config.ema is not None else params
                if config.ema is None and hasattr(optimizer, "eval_params"):
                    evaluated = optimizer.eval_params(params)
                train_loss, train_acc = model.evaluate(evaluated, "train")
                test_loss, test_acc = model.evaluate(evaluated, "test")
                if not math.isfinite(train_loss):
                    raise Diverged(train_loss, steps, epoch + 1)
                metrics = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                }
                history["epochs"].append(metrics)
                reporter.epoch_end(metrics)
                if checkpoint is not None:
                    info = {
                        "config": asdict(config),
                        "epoch": epoch + 1,
                        "epochs": epochs,
                        "backend": backend,
                        "history": history,
                        "train_time": elapsed + time.perf_counter() - t0,
                        "version": anyoptim.__version__,
                    }
                    _checkpoint.save(checkpoint, optimizer, params, info)
        finally:
            reporter.stop()
    result = Result(
        config=config,
        backend=backend,
        epochs=epochs,
        steps=steps,
        steps_per_epoch=spe,
        history=history,
        train_time=elapsed + time.perf_counter() - t0,
        params=model.to_numpy(params),
        optimizer=optimizer,
    )
    return result


# ---------------------------------------------------------------------------- rich output
class RichReporter(Reporter):
    """A rich progress bar on stderr: loss, test accuracy, learning rate and steps/s."""

    def __init__(self, transient: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = make_console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss [cyan]{task.fields[loss]}"),
            TextColumn("acc [green]{task.fields[acc]}"),
            TextColumn("lr [magenta]{task.fields[lr]}"),
            TextColumn("{task.fields[rate]} steps/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=transient,
        )
        self.task: Any = None
        self._sum = 0.0
        self._count = 0
        self._epoch = 0
        self._pending = 0
        self._shown = 0.0
        self._last: tuple[int, float, float] | None = None

    def start(self, label: str, total: int, done: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            label, total=total, completed=done, epoch="-", loss="-", acc="-", lr="-", rate="-"
        )

    def step(self, epoch: int, loss: float, lr: float, rate: float) -> None:
        if epoch != self._epoch:
            self._epoch, self._sum, self._count = epoch, 0.0, 0
        self._sum += loss
        self._count += 1
        self._pending += 1
        self._last = (epoch, lr, rate)
        now = time.perf_counter()
        if now - self._shown >= 0.05:  # updating the display costs more than a step
            self._flush(now)

    def _flush(self, now: float, **extra: Any) -> None:
        if self._last is None:
            return
        epoch, lr, rate = self._last
        self.progress.update(
            self.task,
            advance=self._pending,
            epoch=str(epoch),
            loss=f"{self._sum / max(self._count, 1):.4f}",
            lr=f"{lr:.3g}",
            rate=f"{rate:,.0f}",
            **extra,
        )
        self._pending = 0
        self._shown = now

    def epoch_end(self, metrics: dict[str, Any]) -> None:
        self._flush(time.perf_counter(), acc=f"{100 * metrics['test_acc']:.1f}%")

    def stop(self) -> None:
        self._flush(time.perf_counter())
        self.progress.stop()


def print_summary(result: Result, extra: dict[str, str]) -> None:
    from rich.table import Table

    m = result.metrics()
    table = Table(title=f"anyoptim train: {result.config.describe()}", title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_row("backend", result.backend)
    table.add_row("epochs / steps", f"{result.epochs} / {result.steps}")
    table.add_row("final train loss", _num(m["final_loss"], ".4f"))
    table.add_row("train accuracy", _pct(m["train_accuracy"]))
    table.add_row("test loss", _num(m["test_loss"], ".4f"))
    table.add_row("test accuracy", f"[bold green]{_pct(m['test_accuracy'])}")
    table.add_row("final learning rate", _num(m["learning_rate"], ".4g"))
    table.add_row("training time", f"{result.train_time:.2f} s")
    table.add_row("steps/s", _num(m["steps_per_s"], ",.0f"))
    for key, value in extra.items():
        table.add_row(key, value)
    make_console().print(table)


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


# ---------------------------------------------------------------------------- arguments
def add_common_training_options(p: argparse.ArgumentParser, *, compare: bool = False) -> None:
    """Options shared by ``train`` and ``compare`` (defaults None: 'not given')."""
    p.add_argument("--momentum", type=float, metavar="M", help="momentum (SGD, Muon)")
    p.add_argument(
        "--weight-decay",
        type=float,
        metavar="WD",
        help="weight decay (SGD, AdamW, Lion, Muon, Adafactor)",
    )
    p.add_argument(
        "--betas",
        type=parse_betas_arg,
        metavar="B1,B2",
        help="beta coefficients, e.g. 0.9,0.999 (Adam, AdamW, Adamax, Lion)",
    )
    p.add_argument(
        "--clip-norm",
        type=positive_float,
        metavar="N",
        help="clip the global gradient norm to N before each update",
    )
    p.add_argument(
        "--accumulate",
        type=positive_int,
        metavar="K",
        help="accumulate gradients over K batches per update (mean; default 1)",
    )
    p.add_argument(
        "--ema",
        type=unit_interval,
        metavar="DECAY",
        help="keep an exponential moving average of the parameters and evaluate with it",
    )
    p.add_argument(
        "--no-decay-1d",
        action="store_true",
        default=None,
        help="no weight decay for 1-D parameters (biases)",
    )
    p.add_argument(
        "--state-dtype",
        choices=("float32", "bfloat16", "float16"),
        help="dtype of the optimizer state (default: the parameters' dtype)",
    )
    p.add_argument("--epochs", type=positive_int, metavar="N", help="number of epochs (default 20)")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="batch size (default 64)")
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the split, the initial parameters and the batch order (default 0)",
    )
    p.add_argument("--hidden", type=positive_int, metavar="N", help="hidden units (default 128)")
    p.add_argument("--activation", choices=ACTIVATIONS, help="hidden activation (default tanh)")
    p.add_argument(
        "--backend",
        choices=CHOICES,
        default=None,
        help="array library (default numpy)",
    )
    p.add_argument(
        "--plot",
        metavar="PATH",
        help=f"where to write the PNG (default {'anyoptim-compare.png' if compare else DEFAULT_PLOT})",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write a PNG")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar and no table, only a one-line summary"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the final metrics on stdout and nothing else",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_betas_arg(text: str) -> list[float]:
    try:
        return parse_betas(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def optimizer_arg(text: str) -> str:
    try:
        return lookup_optimizer(text).name
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


EPILOG = """\
examples:
  anyoptim train                                  # Adam, lr 1e-3, 20 epochs, NumPy
  anyoptim train --optimizer sgd --lr 0.1 --momentum 0.9 --epochs 10
  anyoptim train --optimizer adamw --schedule \\
      "join_schedules([linear_schedule(0, 1e-3, 100), cosine_decay(1e-3, 360)], [100])"
  anyoptim train --epochs 5 --checkpoint run.safetensors
  anyoptim train --epochs 20 --resume run.safetensors   # continues bit-identically
  anyoptim train --backend mlx --json

The data is scikit-learn's digits (8x8 images, 1797 samples, bundled, no download),
standardised and split 80/20 with --seed. The MLP is 64 -> hidden -> 10 in float32.
Gradients come from autograd (NumPy) or mlx.core.value_and_grad (MLX).

default learning rate per optimizer (when neither --lr nor --schedule is given):
{lrs}

--resume takes the settings (optimizer, learning rate, seed, batch size, ...) from the
checkpoint; --epochs is the total number of epochs, counting those already done. Checkpoints
are written at the end of every epoch (to --checkpoint, or to the resumed file).
--backend may differ from the checkpoint's: a run saved on NumPy continues on MLX.
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a small MLP on the digits data set",
        description=wrap(
            "Train a 64-128-10 MLP on scikit-learn's digits with one anyoptim optimizer, "
            "with a progress bar, a final table and a PNG of the curves."
        ),
        epilog=EPILOG.format(lrs=default_lr_help()),
        formatter_class=formatter,
    )
    p.add_argument(
        "--optimizer",
        type=optimizer_arg,
        metavar="NAME",
        help=f"optimizer, case-insensitive: {optimizer_names()} (default Adam)",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        metavar="LR",
        help="learning rate (default: per optimizer, see below)",
    )
    p.add_argument(
        "--schedule",
        metavar="EXPR",
        help="learning-rate schedule expression, overrides --lr (see `anyoptim schedule --help`)",
    )
    add_common_training_options(p)
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="save optimizer state and parameters here at the end of every epoch",
    )
    p.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint")
    p.set_defaults(func=run)


def _given_config(args: argparse.Namespace) -> dict[str, Any]:
    given = {}
    for name in _LOCKED:
        value = getattr(args, name, None)
        if value is not None:
            given[name] = value
    return given


def _config_for_resume(path: str, saved: dict[str, Any], given: dict[str, Any]) -> Config:
    try:
        config = Config(**saved)
    except TypeError as exc:
        raise CLIError(f"checkpoint {path!r} has an unexpected configuration: {exc}") from None
    for name, value in given.items():
        saved_value = getattr(config, name)
        if name == "lr" and saved_value is None and config.schedule is None:
            saved_value = OPTIMIZERS[config.optimizer.lower()].default_lr
        if saved_value != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} {value!r} differs from the checkpoint's {saved_value!r}; "
                f"--resume continues the saved run with its own settings. Drop {flag}, "
                "or start a new run without --resume."
            )
    return config


def run(args: argparse.Namespace) -> int:
    given = _given_config(args)
    resume = None
    if args.resume is not None:
        resume = _checkpoint.load(args.resume)
        config = _config_for_resume(args.resume, resume.info["config"], given)
        epochs = args.epochs if args.epochs is not None else int(resume.info.get("epochs", 20))
        done = int(resume.info["epoch"])
        if epochs < done:
            raise UsageError(
                f"the checkpoint {args.resume!r} already holds {done} epochs; --epochs is the "
                f"total number of epochs and must be at least {done}"
            )
        backend = args.backend or resume.info.get("backend", "numpy")
        checkpoint = args.checkpoint or args.resume
    else:
        config = Config(**given)
        epochs = args.epochs if args.epochs is not None else 20
        backend = args.backend or "numpy"
        checkpoint = args.checkpoint
        config.make_optimizer()  # reject bad options before loading anything
    if checkpoint is not None:
        check_writable(checkpoint, "--checkpoint")
    plot, fancy = output_options(args, DEFAULT_PLOT)
    reporter: Reporter = RichReporter() if fancy else Reporter()
    data = _data.load(config.seed)
    result = fit(
        config,
        epochs,
        backend=backend,
        data=data,
        reporter=reporter,
        checkpoint=checkpoint,
        resume=resume,
    )
    if plot is not None:
        from . import _plot

        title = (
            f"{result.config.describe()} on digits ({backend}), "
            f"test accuracy {_pct(result.last.get('test_acc'))}"
        )
        _plot.training(plot, result.history, title, result.steps_per_epoch)

    metrics = result.metrics()
    metrics.update(
        {
            "command": "train",
            "seed": config.seed,
            "batch_size": config.batch_size,
            "checkpoint": checkpoint,
            "resumed_from": args.resume,
            "plot": os.path.abspath(plot) if plot else None,
        }
    )
    if args.json:
        emit_json(metrics)
    elif args.quiet:
        print(
            f"{config.optimizer}: test accuracy {_pct(metrics['test_accuracy'])}, "
            f"train loss {_num(metrics['final_loss'], '.4f')} after {epochs} epochs "
            f"({result.steps} steps) in {result.train_time:.2f} s"
        )
    else:
        extra = {}
        if checkpoint:
            extra["checkpoint"] = checkpoint
        if plot:
            extra["plot"] = plot
        print_summary(result, extra)
    return 0
