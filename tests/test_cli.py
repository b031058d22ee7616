"""The ``anyoptim`` command line, through ``main([...])`` and the real ``python -m anyoptim``."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rich")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("autograd")

import anyoptim
from anyoptim.cli import main
from anyoptim.cli._expr import parse_schedule
from anyoptim.cli.schedule import evaluate
from anyoptim.utils import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MLX = bool(__import__("importlib").util.find_spec("mlx"))
HAS_TORCH = bool(__import__("importlib").util.find_spec("torch"))
HAS_JAX = bool(__import__("importlib").util.find_spec("jax"))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so default PNG names never land in the repository."""
    monkeypatch.chdir(tmp_path)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("ANYOPTIM_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "anyoptim", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def json_out(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01  # not a blank canvas


def params_of(path: Path) -> dict[str, np.ndarray]:
    return dict(tree_flatten(anyoptim.load_params(path, library="numpy")))


# ------------------------------------------------------------------------- top level
def test_version_help_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"anyoptim {anyoptim.__version__}"

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("train", "compare", "schedule", "inspect", "bench", "examples:", "Exit codes"):
        assert word in out
    for command in ("train", "compare", "schedule", "inspect", "bench"):
        assert main([command, "--help"]) == 0
        assert "usage: anyoptim " + command in capsys.readouterr().out
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bench_quick_run_measures_limit_and_anyoptim(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("numba")
    variants = "limit (numba flat buffer),anyoptim numpy update"
    code = main(["bench", "--variants", variants, "--cases", "small", "--steps", "3",
                 "--warmup", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["variant"]: r for r in out["results"]}
    assert set(rows) == set(variants.split(","))
    for row in rows.values():
        assert row["tensors"] == 10 and row["params"] == 1000
        assert row["median_ms"] > 0


def test_bench_rejects_unknown_case_and_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cases", "z"]) == 2
    assert "unknown case" in capsys.readouterr().err
    assert main(["bench", "--variants", "nope"]) == 2
    assert "unknown variant" in capsys.readouterr().err


def test_help_documents_default_learning_rates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("SGD", "Adam", "Lion", "Adafactor", "Muon", "relative step"):
        assert name in out


def test_import_stays_light() -> None:
    code = (
        "import sys, anyoptim, anyoptim.cli; anyoptim.cli.build_parser(); "
        "print(sorted(m for m in ('rich', 'matplotlib', 'sklearn', 'autograd', 'mlx', 'torch')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_train_json_and_png(tmp_path: Path) -> None:
    """The real entry point: one JSON object on stdout, a PNG, exit code 0."""
    plot = tmp_path / "curves.png"
    proc = run_cli("train", "--epochs", "2", "--json", "--plot", str(plot), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["command"] == "train"
    assert result["optimizer"] == "Adam"
    assert result["epochs"] == 2 and result["steps"] == 2 * 23
    assert 0.8 < result["test_accuracy"] <= 1.0
    assert result["plot"] == str(plot)
    assert_png(plot)


def test_entry_point_usage_error_exit_code(tmp_path: Path) -> None:
    proc = run_cli("train", "--optimizer", "adamm", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown optimizer 'adamm'" in proc.stderr
    assert "AdamW" in proc.stderr and "Adafactor" in proc.stderr
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------- train
def test_train_defaults_reach_95_percent(capsys: pytest.CaptureFixture[str]) -> None:
    result = json_out(capsys, "train", "--no-plot")
    assert result["optimizer"] == "Adam" and result["epochs"] == 20
    assert result["batch_size"] == 64 and result["learning_rate"] == pytest.approx(1e-3)
    assert result["test_accuracy"] >= 0.95
    assert result["wall_time_s"] < 30


def test_train_rich_output_table_and_default_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--epochs", "2", "--optimizer", "LION", "--lr", "3e-4"]) == 0
    out, err = capsys.readouterr()
    assert "test accuracy" in out and "Lion(lr=0.0003)" in out
    assert "steps/s" in err and "lr" in err  # the progress bar
    assert_png(tmp_path / "anyoptim-train.png")


def test_train_quiet_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--epochs", "1", "--quiet", "--no-plot"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "test accuracy" in out
    assert err == ""
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "1e-4"],
        ["--optimizer", "adamw", "--betas", "0.8,0.99", "--clip-norm", "1.0"],
        ["--optimizer", "adafactor"],
        ["--optimizer", "muon", "--activation", "relu"],
        ["--optimizer", "adadelta", "--batch-size", "256", "--hidden", "32"],
        [
            "--schedule",
            "join_schedules([linear_schedule(0, 1e-3, 5), cosine_decay(1e-3, 20)], [5])",
        ],
    ],
)
def test_train_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    result = json_out(capsys, "train", "--epochs", "1", "--no-plot", *args)
    assert np.isfinite(result["final_loss"]) and result["test_accuracy"] > 0.3


def test_train_schedule_sets_the_learning_rate(capsys: pytest.CaptureFixture[str]) -> None:
    expr = "linear_schedule(0, 1e-2, 23)"
    result = json_out(
        capsys, "train", "--epochs", "2", "--no-plot", "--lr", "5", "--schedule", expr
    )
    assert result["learning_rate"] == pytest.approx(1e-2)  # the schedule overrides --lr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "nope"], "valid names: SGD, RMSprop"),
        (["--optimizer", "MultiOptimizer"], "cannot be chosen"),
        (["--backend", "cupy"], "invalid choice"),
        (["--optimizer", "adam", "--weight-decay", "0.1"], "use AdamW"),
        (["--optimizer", "adagrad", "--momentum", "0.9"], "--momentum works with"),
        (["--betas", "0.9"], "two numbers"),
        (["--betas", "0.9,1.5"], "betas"),
        (["--lr", "-1"], "positive"),
        (["--epochs", "0"], ">= 1"),
        (["--schedule", "cosine_decay(1e-3, 0)"], "decay_steps"),
        (["--schedule", "warmup(1e-3)"], "valid schedules"),
        (["--resume", "missing.safetensors"], "does not exist"),
        (["--plot", "no/such/folder/x.png"], "does not exist"),
    ],
)
def test_train_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--epochs", "1", *args]) == 2
    assert message in capsys.readouterr().err


def test_train_divergence_is_a_runtime_failure(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "--epochs",
            "1",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--activation",
            "relu",
            "--quiet",
            "--no-plot",
        ]
    )
    assert code == 1
    assert "training diverged" in capsys.readouterr().err


def test_missing_optional_dependency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["train", "--quiet", "--no-plot"]) == 2
    assert 'pip install "anyoptim[cli]"' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["schedule", "cosine_decay(1, 10)"]) == 2
    assert 'pip install "anyoptim[cli]"' in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "sklearn")
    monkeypatch.delitem(sys.modules, "sklearn.datasets")
    assert main(["compare", "--epochs", "1", "--quiet"]) == 2  # refused before any training
    err = capsys.readouterr().err
    assert "--plot" in err and 'pip install "anyoptim[cli]"' in err


# ------------------------------------------------------------------------- checkpoints
def test_checkpoint_loads_with_anyoptim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "run.safetensors"
    json_out(
        capsys,
        "train",
        "--epochs",
        "2",
        "--optimizer",
        "adamw",
        "--no-plot",
        "--checkpoint",
        str(ckpt),
    )
    optimizer = anyoptim.load(ckpt)
    assert type(optimizer).__name__ == "AdamW"
    assert int(optimizer.step) == 2 * 23
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    params = params_of(ckpt)
    assert params["layers.0.weight"].shape == (128, 64)
    assert params["layers.1.bias"].dtype == np.float32
    info = json.loads(anyoptim.read_metadata(ckpt)["anyoptim.cli"])
    assert info["epoch"] == 2 and len(info["history"]["loss"]) == 46


@pytest.mark.parametrize(
    "backend",
    [
        "numpy",
        pytest.param("mlx", marks=pytest.mark.skipif(not HAS_MLX, reason="mlx not installed")),
        pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="no torch")),
        pytest.param("jax", marks=pytest.mark.skipif(not HAS_JAX, reason="jax not installed")),
    ],
)
def test_resume_is_bit_identical(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "--no-plot",
        "--quiet",
        "--backend",
        backend,
        "--optimizer",
        "adamw",
        "--clip-norm",
        "2",
        "--schedule",
        "join_schedules([linear_schedule(0, 2e-3, 10), cosine_decay(2e-3, 40)], [10])",
    ]
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    resumed = tmp_path / "resumed.safetensors"
    assert main(["train", "--epochs", "2", "--checkpoint", str(full), *common]) == 0
    assert main(["train", "--epochs", "1", "--checkpoint", str(part), *common]) == 0
    assert int(anyoptim.load(part).step) == 23
    plot = tmp_path / "resumed.png"
    assert (
        main(
            [
                "train",
                "--resume",
                str(part),
                "--epochs",
                "2",
                "--checkpoint",
                str(resumed),
                "--quiet",
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    capsys.readouterr()

    a, b = params_of(full), params_of(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    state_a = dict(tree_flatten(anyoptim.load(full, library="numpy").state))
    state_b = dict(tree_flatten(anyoptim.load(resumed, library="numpy").state))
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert np.array_equal(state_a[key], state_b[key]), key
    hist_a = json.loads(anyoptim.read_metadata(full)["anyoptim.cli"])["history"]
    hist_b = json.loads(anyoptim.read_metadata(resumed)["anyoptim.cli"])["history"]
    assert hist_a["loss"] == hist_b["loss"] and hist_a["epochs"] == hist_b["epochs"]
    assert_png(plot)


def test_resume_continues_in_place_and_checks_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "run.safetensors"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--lr",
                "2e-3",
                "--no-plot",
                "--quiet",
                "--checkpoint",
                str(ckpt),
            ]
        )
        == 0
    )
    capsys.readouterr()
    # settings that differ from the checkpoint are refused
    assert main(["train", "--resume", str(ckpt), "--lr", "1e-2", "--epochs", "2"]) == 2
    assert "differs from the checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(ckpt), "--optimizer", "sgd", "--epochs", "2"]) == 2
    capsys.readouterr()
    # fewer epochs than already done
    assert main(["train", "--resume", str(ckpt), "--epochs", "1", "--no-plot", "--quiet"]) == 0
    capsys.readouterr()
    # the same settings are fine; without --checkpoint the resumed file is updated
    result = json_out(
        capsys, "train", "--resume", str(ckpt), "--lr", "2e-3", "--epochs", "2", "--no-plot"
    )
    assert result["epochs"] == 2 and result["resumed_from"] == str(ckpt)
    assert int(anyoptim.load(ckpt).step) == 46


def test_resume_refuses_fewer_epochs_and_foreign_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "run.safetensors"
    assert main(["train", "--epochs", "2", "--no-plot", "--quiet", "--checkpoint", str(ckpt)]) == 0
    assert main(["train", "--resume", str(ckpt), "--epochs", "1"]) == 2
    assert "already holds 2 epochs" in capsys.readouterr().err

    plain = tmp_path / "plain.safetensors"
    opt = anyoptim.Adam(learning_rate=1e-3)
    opt.init({"w": np.zeros(3, np.float32)})
    anyoptim.save(plain, opt)
    assert main(["train", "--resume", str(plain)]) == 2
    assert "cannot be resumed" in capsys.readouterr().err

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert main(["train", "--resume", str(garbage)]) == 1
    assert "garbage.safetensors" in capsys.readouterr().err


# ------------------------------------------------------------------------- compare
def test_compare_all_default_optimizers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "cmp.png"
    result = json_out(capsys, "compare", "--epochs", "2", "--plot", str(plot))
    names = [row["optimizer"] for row in result["results"]]
    assert sorted(names) == sorted(["SGD", "Adam", "AdamW", "Lion", "Adafactor", "Muon"])
    assert [row["rank"] for row in result["results"]] == [1, 2, 3, 4, 5, 6]
    accuracies = [row["test_accuracy"] for row in result["results"]]
    assert accuracies == sorted(accuracies, reverse=True)
    for row in result["results"]:
        assert row["status"] == "ok" and row["wall_time_s"] > 0 and np.isfinite(row["final_loss"])
    assert_png(plot)


def test_compare_optimizers_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--optimizers all`` trains every optimizer the CLI knows (one epoch) and plots them."""
    from anyoptim.cli._common import OPTIMIZERS

    plot = tmp_path / "all.png"
    result = json_out(capsys, "compare", "--optimizers", "all", "--epochs", "1", "--plot",
                      str(plot))
    names = sorted(row["optimizer"] for row in result["results"])
    assert names == sorted(info.name for info in OPTIMIZERS.values())
    assert len(names) >= 20
    for row in result["results"]:
        assert row["status"] == "ok" and np.isfinite(row["final_loss"]), row
        assert row["test_accuracy"] > 0.15, row  # above chance (10 classes) after one epoch
    assert_png(plot)


def test_compare_table_and_lr_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "compare",
                "--optimizers",
                "SGD,adam",
                "--lr",
                "sgd=0.05,adam=3e-3",
                "--momentum",
                "0.9",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "SGD(lr=0.05, momentum=0.9)" in out
    assert "Adam(lr=0.003" in out  # --momentum is ignored by Adam in compare
    assert "test accuracy" in out and "wall time" in out
    assert_png(tmp_path / "anyoptim-compare.png")


def test_compare_marks_diverged_optimizers(capsys: pytest.CaptureFixture[str]) -> None:
    result = json_out(
        capsys,
        "compare",
        "--optimizers",
        "sgd,adam",
        "--lr",
        "sgd=1e30",
        "--activation",
        "relu",
        "--epochs",
        "1",
        "--no-plot",
    )
    rows = {row["optimizer"]: row for row in result["results"]}
    assert rows["SGD"]["status"] == "diverged" and rows["SGD"]["rank"] == 2
    assert rows["Adam"]["status"] == "ok" and rows["Adam"]["rank"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizers", "adam,foo"], "unknown optimizer 'foo'"),
        (["--optimizers", ""], "empty"),
        (["--optimizers", "adam,ADAM"], "twice"),
        (["--lr", "rmsprop=1e-3"], "not in --optimizers"),
        (["--lr", "adam=x"], "expected a number"),
        (["--backend", "cupy"], "invalid choice"),
    ],
)
def test_compare_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "--epochs", "1", "--no-plot", *args]) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------- schedule
def test_schedule_values_table_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "lr.png"
    expr = "cosine_decay(1e-3, 1000, 1e-5)"
    assert (
        main(["schedule", expr, "--steps", "1200", "--at", "0,500,1000", "--plot", str(plot)]) == 0
    )
    out = capsys.readouterr().out
    assert "cosine_decay(0.001, 1000, 1e-05)" in out
    assert "0.000505" in out and "1e-05" in out
    assert_png(plot)

    result = json_out(
        capsys, "schedule", expr, "--steps", "1200", "--at", "0,500,1000", "--no-plot"
    )
    reference = anyoptim.cosine_decay(1e-3, 1000, 1e-5)
    for step in (0, 500, 1000):
        assert result["values"][str(step)] == float(reference(np.asarray(step, np.uint64)))
    assert result["steps"] == 1200 and result["min"] == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "expr",
    [
        "cosine_decay(1e-3, 100, 1e-5)",
        "exponential_decay(0.1, 0.97)",
        "step_decay(0.1, 0.5, step_size=30)",
        "linear_schedule(0, 1e-2, 50)",
        "join_schedules([linear_schedule(0, 1e-3, 20), cosine_decay(1e-3, 80)], [20])",
        "join_schedules([linear_schedule(0, 1, 10), step_decay(1, 0.5, 10), cosine_decay(0.1, 30)], [10, 50])",
    ],
)
def test_schedule_evaluation_matches_optimizer_calls(expr: str) -> None:
    """The vectorised evaluation equals calling the schedule step by step, as an optimizer does."""
    schedule = parse_schedule(expr)
    steps = np.arange(120)
    values = evaluate(schedule, steps)
    expected = [float(np.asarray(schedule(np.asarray(s, dtype=np.uint64)))) for s in steps]
    assert values.tolist() == expected


def test_schedule_expression_literals() -> None:
    a = parse_schedule("anyoptim.cosine_decay(+1E-3, 1_000, end=-1e-5)")
    b = anyoptim.cosine_decay(1e-3, 1000, -1e-5)
    assert float(a(np.asarray(700, np.uint64))) == float(b(np.asarray(700, np.uint64)))
    c = parse_schedule(" join_schedules(schedules=(linear_schedule(0, 1, 5),), boundaries=[]) ")
    assert float(c(np.asarray(2, np.uint64))) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "__import__('os').system('touch pwned')",
        "open('pwned', 'w')",
        "cosine_decay(1e-3, open('pwned', 'w'))",
        "os.system('touch pwned')",
        "cosine_decay(1e-3, 10).__class__",
        "cosine_decay.__globals__",
        "(lambda: 0)()",
        "[c for c in ()]",
        "cosine_decay(*[1e-3, 10])",
        "cosine_decay(**{'init': 1})",
        "cosine_decay(1e-3, 10) + 1",
        "cosine_decay(1e-3, 2 ** 10)",
        "cosine_decay('1e-3', 10)",
        "cosine_decay(True, 10)",
        "cosine_decay(1e-3, 10, end=x)",
        "1e-3",
        "",
        "cosine_decay(1e-3,",
        "join_schedules([1, 2], [3])",
        "cosine_decay(1e-3, 10, foo=1)",
        "cosine_decay(1e-3)",
        "linear_schedule(0, 1, 0)",
    ],
)
def test_schedule_expressions_are_parsed_safely(
    expr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", expr, "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "invalid schedule expression" in err
    assert "valid schedules: cosine_decay, exponential_decay, join_schedules" in err
    if expr:
        assert "column" in err
    assert not (tmp_path / "pwned").exists()


def test_schedule_error_points_at_the_column(capsys: pytest.CaptureFixture[str]) -> None:
    expr = "join_schedules([linear_schedule(0, 1e-3, 10), cosin_decay(1e-3, 90)], [10])"
    assert main(["schedule", expr]) == 2
    err = capsys.readouterr().err
    assert "unknown schedule 'cosin_decay' (did you mean cosine_decay?)" in err
    column = expr.index("cosin_decay")
    assert f"column {column + 1}" in err
    caret_line = next(line for line in err.splitlines() if line.strip().startswith("^"))
    assert caret_line.index("^") - 2 == column


def test_schedule_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "cosine_decay(1, 10)", "--at", "1,x"]) == 2
    assert "--at" in capsys.readouterr().err
    assert main(["schedule", "cosine_decay(1, 10)", "--steps", "0"]) == 2
    capsys.readouterr()


# ------------------------------------------------------------------------- inspect
def _write_safetensors(
    path: Path,
    tensors: dict[str, tuple[str, list[int], bytes]],
    metadata: dict[str, str] | None = None,
) -> None:
    """A safetensors file written by hand (dtype names as in the format, raw bytes)."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset, blobs = 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _bf16(values: list[float]) -> bytes:
    bits = np.asarray(values, np.float32).view(np.uint32) >> 16
    return bits.astype("<u2").tobytes()


def test_inspect_mlx_recipe_file_with_bfloat16(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.safetensors"
    _write_safetensors(
        path,
        {
            "step": ("U64", [], np.asarray(7, "<u8").tobytes()),
            "learning_rate": ("BF16", [], _bf16([0.0078125])),
            "model.layers.0.weight.m": ("BF16", [4, 3], _bf16([0.5] * 12)),
            "model.layers.0.weight.v": ("BF16", [4, 3], _bf16([0.25] * 12)),
            "model.layers.0.bias.m": ("F32", [3], np.zeros(3, "<f4").tobytes()),
        },
    )
    info = json_out(capsys, "inspect", str(path))
    assert info["optimizer"] is None and info["metadata"] == {}
    assert info["step"] == 7 and info["learning_rate"] == 0.0078125
    arrays = {a["name"]: a for a in info["arrays"]}
    assert arrays["model.layers.0.weight.m"] == {
        "name": "model.layers.0.weight.m",
        "dtype": "bfloat16",
        "shape": [4, 3],
        "bytes": 24,
    }
    assert info["total_arrays"] == 5 and info["total_bytes"] == 8 + 2 + 24 + 24 + 12

    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("not recorded", "bfloat16", "(4, 3)", "24 B", "0.0078125", "total: 5 arrays"):
        assert text in out


@pytest.mark.skipif(not HAS_MLX, reason="mlx not installed")
def test_inspect_file_written_by_mlx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlx.core as mx
    import mlx.optimizers
    from mlx.utils import tree_flatten as mlx_flatten

    opt = mlx.optimizers.Adam(learning_rate=1e-2)
    params = {"w": mx.zeros((3, 2), dtype=mx.bfloat16)}
    opt.update(params, {"w": mx.ones((3, 2), dtype=mx.bfloat16)})
    path = tmp_path / "mlx.safetensors"
    mx.save_safetensors(str(path), dict(mlx_flatten(opt.state)))
    info = json_out(capsys, "inspect", str(path))
    arrays = {a["name"]: a for a in info["arrays"]}
    assert arrays["w.m"]["dtype"] == "bfloat16" and arrays["w.v"]["shape"] == [3, 2]
    assert info["step"] == 1 and info["learning_rate"] == pytest.approx(1e-2)


def test_inspect_cli_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "run.safetensors"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--optimizer",
                "lion",
                "--weight-decay",
                "0.1",
                "--schedule",
                "cosine_decay(3e-4, 100)",
                "--no-plot",
                "--quiet",
                "--checkpoint",
                str(ckpt),
            ]
        )
        == 0
    )
    capsys.readouterr()
    info = json_out(capsys, "inspect", str(ckpt))
    assert info["kind"] == "anyoptim checkpoint"
    assert info["optimizer"]["class"] == "Lion"
    assert info["optimizer"]["hyperparameters"]["weight_decay"] == 0.1
    assert info["optimizer"]["schedules"]["learning_rate"].startswith("cosine_decay(0.0003, 100")
    assert info["step"] == 23
    assert info["learning_rate"] == pytest.approx(float(anyoptim.cosine_decay(3e-4, 100)(22)))
    assert info["training"]["epoch"] == 1 and info["training"]["config"]["optimizer"] == "Lion"
    names = {a["name"] for a in info["arrays"]}
    assert "layers.0.weight.m" in names and "step" in names

    assert main(["inspect", str(ckpt)]) == 0
    out = capsys.readouterr().out
    for text in (
        "Lion",
        "weight_decay=0.1",
        "cosine_decay(0.0003, 100",
        "23",
        "float32",
        "(128, 64)",
    ):
        assert text in out


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 2, "does not exist"),
        (b"abc", 1, "not a safetensors file"),
        (struct.pack("<Q", 1000) + b"{}", 1, "truncated"),
        (struct.pack("<Q", 4) + b"[1] ", 1, "not a JSON object"),
        (struct.pack("<Q", 8) + b"not json", 1, "not JSON"),
    ],
)
def test_inspect_errors(
    content: bytes | None,
    code: int,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    assert main(["inspect", str(path)]) == code
    err = capsys.readouterr().err
    assert message in err and "bad.safetensors" in err


def test_inspect_detects_truncated_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cut.safetensors"
    _write_safetensors(path, {"m": ("F32", [100], np.zeros(100, "<f4").tobytes())})
    path.write_bytes(path.read_bytes()[:-8])
    assert main(["inspect", str(path)]) == 1
    assert "truncated" in capsys.readouterr().err


# ------------------------------------------------------------------------- example
def test_numpy_digits_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "numpy_digits.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    accuracy = float(proc.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 95.0


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="no torch")),
        pytest.param("jax", marks=pytest.mark.skipif(not HAS_JAX, reason="jax not installed")),
    ],
)
def test_train_defaults_on_torch_and_jax(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = json_out(capsys, "train", "--backend", backend, "--no-plot")
    assert result["backend"] == backend
    assert result["test_accuracy"] >= 0.95


# ------------------------------------------------------------------ training-loop options
def test_train_loop_options_build_the_wrapped_optimizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "run.safetensors"
    args = ["--optimizer", "adamw", "--weight-decay", "0.1", "--accumulate", "3", "--ema", "0.9",
            "--no-decay-1d", "--state-dtype", "float16"]
    result = json_out(capsys, "train", "--epochs", "1", "--no-plot", "--checkpoint", str(ckpt),
                      *args)
    assert "accumulate 3" in result["hyperparameters"] and "EMA 0.9" in result["hyperparameters"]
    assert result["steps"] == 23 and result["test_accuracy"] > 0.3
    opt = anyoptim.load(ckpt)
    assert isinstance(opt, anyoptim.EMA) and opt.decay == 0.9
    acc = opt.optimizer
    assert isinstance(acc, anyoptim.GradientAccumulation) and acc.k == 3
    inner = acc.optimizer
    assert isinstance(inner, anyoptim.AdamW) and inner.state_dtype == "float16"
    assert [g.describe() for g in inner.groups] == [anyoptim.no_decay_1d().describe()]
    # 23 micro-batches are 7 real updates (and 2 gradients waiting)
    assert int(inner.step) == 7
    assert inner.state["layers"][0]["weight"]["m"].dtype == np.float16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--accumulate", "0"], ">= 1"),
        (["--ema", "1.5"], "between 0 and 1"),
        (["--state-dtype", "int8"], "invalid choice"),
    ],
)
def test_train_loop_option_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--epochs", "1", *args]) == 2
    assert message in capsys.readouterr().err
