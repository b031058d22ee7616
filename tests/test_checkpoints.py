"""anyoptim.save / anyoptim.load: complete, atomic, validated checkpoints."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import anyoptim as optim
from anyoptim import CheckpointError
from anyoptim.utils import tree_flatten, tree_map

SCHEDULE = optim.join_schedules(
    [optim.linear_schedule(0.0, 0.05, 3), optim.cosine_decay(0.05, 10, 0.001)], [3]
)

OPTIMIZERS = {
    "SGD": lambda: optim.SGD(SCHEDULE, momentum=0.9, nesterov=True, weight_decay=0.01),
    "RMSprop": lambda: optim.RMSprop(0.01, alpha=0.9),
    "Adagrad": lambda: optim.Adagrad(SCHEDULE),
    "AdaDelta": lambda: optim.AdaDelta(1.0, rho=0.8),
    "Adam": lambda: optim.Adam(SCHEDULE, bias_correction=True),
    "AdamW": lambda: optim.AdamW(optim.exponential_decay(0.01, 0.9), weight_decay=0.1),
    "Adamax": lambda: optim.Adamax(optim.step_decay(0.01, 0.5, 2)),
    "Lion": lambda: optim.Lion(1e-3, weight_decay=0.1),
    "Adafactor": lambda: optim.Adafactor(beta_1=0.9, weight_decay=0.01),
    "Adafactor-lr": lambda: optim.Adafactor(SCHEDULE, relative_step=False),
    "Muon": lambda: optim.Muon(SCHEDULE),
}


def _params(rng: np.random.Generator) -> dict:
    # tuples, empty sub-trees, digit keys and a 0-d leaf: the structures MLX's recipe loses
    return {
        "w": rng.standard_normal((4, 3)).astype(np.float32),
        "experts": {"0": rng.standard_normal(3).astype(np.float32),
                    "1": rng.standard_normal(3).astype(np.float32)},
        "layers": [{"b": rng.standard_normal(2).astype(np.float32)}, {}],
        "t": (rng.standard_normal((2, 2, 2)).astype(np.float32),),
        "s": np.asarray(rng.standard_normal(), dtype=np.float32),
    }


def _grads(rng: np.random.Generator, params: dict) -> dict:
    return tree_map(lambda a: rng.standard_normal(a.shape).astype(np.float32), params)


def _identical(a, b) -> None:
    fa, fb = tree_flatten(a), tree_flatten(b)
    assert [k for k, _ in fa] == [k for k, _ in fb]
    for (k, x), (_, y) in zip(fa, fb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k, strict=True)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_save_load_resumes_bit_identically(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    params = _params(rng)
    grads = [_grads(rng, params) for _ in range(6)]
    path = tmp_path / "ckpt.safetensors"

    straight = OPTIMIZERS[name]()
    p_straight = params
    for g in grads:
        p_straight = straight.apply_gradients(g, p_straight)

    first = OPTIMIZERS[name]()
    p = params
    for g in grads[:3]:
        p = first.apply_gradients(g, p)
    optim.save(path, first, p, metadata={"epoch": "3"})

    restored = optim.load(path)  # built from the file alone: class, hyperparameters, schedule
    p = optim.load_params(path)
    assert type(restored) is type(first)
    assert optim.read_metadata(path)["epoch"] == "3"
    assert isinstance(p["t"], tuple) and p["layers"][1] == {} and set(p["experts"]) == {"0", "1"}
    for g in grads[3:]:
        p = restored.apply_gradients(g, p)
    _identical(p, p_straight)
    _identical(restored.state, straight.state)


def test_multioptimizer_round_trip_needs_filters(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((3, 3)).astype(np.float32),
              "bias": rng.standard_normal(3).astype(np.float32)}
    grads = [_grads(rng, params) for _ in range(4)]
    filt = [lambda path, a: "bias" in path]

    def make():
        return optim.MultiOptimizer([optim.SGD(0.1, momentum=0.9), optim.AdamW(SCHEDULE)], filt)

    straight, first = make(), make()
    p_straight, p = params, params
    for g in grads:
        p_straight = straight.apply_gradients(g, p_straight)
    for g in grads[:2]:
        p = first.apply_gradients(g, p)
    path = tmp_path / "multi.safetensors"
    optim.save(path, first, p)
    with pytest.raises(CheckpointError, match="filters"):
        optim.load(path)
    restored = optim.load(path, filters=filt)
    for g in grads[2:]:
        p = restored.apply_gradients(g, p)
    _identical(p, p_straight)


def test_files_stay_readable_by_the_mlx_recipe(tmp_path: Path) -> None:
    """State tensors keep tree_flatten names, so plain safetensors readers see MLX's layout."""
    from safetensors.numpy import load_file

    opt = optim.Adam(0.1)
    params = {"w": np.ones((2, 2), np.float32)}
    opt.update(params, {"w": np.ones((2, 2), np.float32)})
    path = tmp_path / "a.safetensors"
    optim.save(path, opt)
    loaded = load_file(str(path))
    assert set(loaded) == {"step", "learning_rate", "w.m", "w.v"}
    assert loaded["step"].dtype == np.uint64 and loaded["step"].shape == ()
    # and anyoptim reads plain recipe files too
    plain = tmp_path / "plain.safetensors"
    from safetensors.numpy import save_file

    save_file(dict(tree_flatten(opt.state)), str(plain))
    state = optim.io.load_state(plain)
    _identical(state, opt.state)
    with pytest.raises(CheckpointError, match="no anyoptim metadata"):
        optim.load(plain)


def test_custom_schedule_must_be_passed_again(tmp_path: Path) -> None:
    opt = optim.SGD(lambda step: 0.1)
    opt.update({"w": np.ones(2, np.float32)}, {"w": np.ones(2, np.float32)})
    path = tmp_path / "c.safetensors"
    optim.save(path, opt)
    with pytest.raises(CheckpointError, match="custom function"):
        optim.load(path)
    restored = optim.load(path, schedules={"learning_rate": lambda step: 0.1})
    assert int(restored.step) == 1


# --------------------------------------------------------------------------- damaged files
def _saved(tmp_path: Path) -> tuple[Path, optim.Optimizer, dict]:
    rng = np.random.default_rng(2)
    params = _params(rng)
    opt = optim.Adam(0.01)
    params = opt.apply_gradients(_grads(rng, params), params)
    path = tmp_path / "good.safetensors"
    optim.save(path, opt, params)
    return path, opt, params


def _header_length(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_truncated_files_are_rejected_with_the_file_name(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    for cut in (0, 4, 8, 20, _header_length(path) + 4, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.safetensors"):
            optim.load(bad)


def test_flipped_bytes_anywhere_are_detected(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    rng = np.random.default_rng(3)
    positions = [*rng.integers(8, len(data), size=40), len(data) - 1, 8 + _header_length(path)]
    for pos in positions:
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x5A
        bad = tmp_path / "flipped.safetensors"
        bad.write_bytes(bytes(corrupted))
        with pytest.raises(CheckpointError, match=r"flipped\.safetensors"):
            optim.load(bad)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.safetensors"
    bad.write_text("this is a text file, not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match=r"notes\.safetensors"):
        optim.load(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        optim.load(tmp_path / "missing.safetensors")


def _rewrite_metadata(path: Path, out: Path, **changes: str) -> None:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update(changes)
    header["__metadata__"].pop("data_sha256", None)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    out.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    # a well-formed file of another version: give it a valid checksum
    from anyoptim._backend import _io

    _io._add_checksum(str(out))


def test_wrong_format_version_and_unknown_class(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    future = tmp_path / "future.safetensors"
    _rewrite_metadata(path, future, format_version="99")
    with pytest.raises(CheckpointError, match="format version '99'"):
        optim.load(future)
    alien = tmp_path / "alien.safetensors"
    desc = json.loads(optim.read_metadata(path)["optimizer"])
    desc["class"] = "os.system"
    _rewrite_metadata(path, alien, optimizer=json.dumps(desc))
    with pytest.raises(CheckpointError, match=r"unknown optimizer class 'os\.system'"):
        optim.load(alien)


def test_state_for_another_class_or_shape_leaves_the_optimizer_untouched(tmp_path: Path) -> None:
    path, _, params = _saved(tmp_path)
    target = optim.SGD(0.1, momentum=0.9)
    target.update({"w": np.ones((4, 3), np.float32)}, {"w": np.ones((4, 3), np.float32)})
    before = {k: v.copy() for k, v in tree_flatten(target.state)}
    with pytest.raises(CheckpointError, match="holds optimizer state for Adam,"):
        optim.load(path, into=target)
    after = dict(tree_flatten(target.state))
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], strict=True)

    wrong = dict(params)
    wrong["w"] = np.ones((3, 4), np.float32)
    with pytest.raises(CheckpointError, match=r"w\.m has shape \(4, 3\)"):
        optim.load(path, like=wrong)


def test_bfloat16_state_round_trips_exactly_on_mlx(tmp_path: Path) -> None:
    mx = pytest.importorskip("mlx.core")
    params = {"w": mx.array(np.linspace(-1, 1, 6, dtype=np.float32)).astype(mx.bfloat16)}
    opt = optim.Adam(0.01)
    for _ in range(2):
        params = opt.apply_gradients(tree_map(lambda a: a * 0.5, params), params)
    path = tmp_path / "bf16.safetensors"
    optim.save(path, opt, params)
    restored = optim.load(path)
    assert restored.state["w"]["m"].dtype == mx.bfloat16
    assert restored.state["step"].dtype == mx.uint64
    assert mx.array_equal(restored.state["w"]["v"], opt.state["w"]["v"]).item()
    with pytest.raises(CheckpointError, match="bfloat16"):
        optim.load(path, library="numpy")


# --------------------------------------------------------------------------- atomic writes
WRITER = r"""
import sys, numpy as np, anyoptim as optim
path = sys.argv[1]
opt = optim.Adam(0.01)
params = {"w": np.zeros(200_000, np.float32)}
i = 0
# warm up (kernel compilation) before the timed kills, so that they land during saves
opt.update(params, {"w": np.zeros(200_000, np.float32)})
opt.update(params, {"w": np.zeros(200_000, np.float32)})
print("ready", flush=True)
while True:
    i += 1
    opt.update(params, {"w": np.full(200_000, float(i), np.float32)})
    optim.save(path, opt, params, metadata={"i": str(i)})
"""


def _kill_cycles(tmp_path: Path, kills: int) -> int:
    path = tmp_path / "live.safetensors"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(4)
    survived = 0
    last = 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # imports done; saving starts now
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if not path.exists():
            continue
        restored = optim.load(path)  # never a partial file: old or new, always complete
        i = int(optim.read_metadata(path)["i"])
        assert int(restored.step) == i + 2  # the two warm-up steps
        assert np.asarray(optim.load_params(path)["w"]).shape == (200_000,)
        assert i >= 1
        last = i
        survived += 1
    assert last > 0
    return survived


def test_killed_writer_never_leaves_a_partial_checkpoint(tmp_path: Path) -> None:
    assert _kill_cycles(tmp_path, kills=8) >= 4


@pytest.mark.slow
def test_killed_writer_many_times(tmp_path: Path) -> None:
    assert _kill_cycles(tmp_path, kills=120) >= 100


def test_saving_removes_stale_temporaries_of_killed_writers(tmp_path: Path) -> None:
    stale = tmp_path / ".anyoptim-abc123.safetensors"
    fresh = tmp_path / ".anyoptim-def456.safetensors"  # a save in progress elsewhere
    other = tmp_path / "notes-anyoptim.safetensors"
    for f in (stale, fresh, other):
        f.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    opt = optim.SGD(0.1)
    opt.update({"w": np.ones(2, np.float32)}, {"w": np.ones(2, np.float32)})
    optim.save(tmp_path / "ckpt.safetensors", opt)
    assert not stale.exists()
    assert fresh.exists() and other.exists()
