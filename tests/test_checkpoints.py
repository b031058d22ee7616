"""anyoptim.save / anyoptim.load: complete, atomic, validated checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import anyoptim as optim
from anyoptim import CheckpointError
from anyoptim._backend import _io
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
    "ScheduleFreeAdamW": lambda: optim.ScheduleFreeAdamW(SCHEDULE, warmup_steps=2, weight_decay=0.01),
    "ScheduleFreeSGD": lambda: optim.ScheduleFreeSGD(0.05, momentum=0.8),
    "ScheduleFreeRAdam": lambda: optim.ScheduleFreeRAdam(SCHEDULE),
    "ADOPT": lambda: optim.ADOPT(SCHEDULE, weight_decay=0.01, decouple=True),
    "AdEMAMix": lambda: optim.AdEMAMix(SCHEDULE, weight_decay=0.01, warmup=4),
    "SimplifiedAdEMAMix": lambda: optim.SimplifiedAdEMAMix(SCHEDULE, alpha=2.0),
    "Adan": lambda: optim.Adan(SCHEDULE, weight_decay=0.01),
    "SignSGD": lambda: optim.SignSGD(SCHEDULE, weight_decay=0.01),
    "Signum": lambda: optim.Signum(SCHEDULE, momentum=0.8),
    "LAMB": lambda: optim.LAMB(SCHEDULE, weight_decay=0.01),
    "LARS": lambda: optim.LARS(SCHEDULE, weight_decay=0.01, nesterov=True),
    "NAdam": lambda: optim.NAdam(SCHEDULE, weight_decay=0.01, momentum_decay=0.01),
    "NAdamW": lambda: optim.NAdamW(SCHEDULE, convention="optax"),
    "RAdam": lambda: optim.RAdam(SCHEDULE, betas=(0.9, 0.9), decoupled_weight_decay=True, weight_decay=0.01),
    "Prodigy": lambda: optim.Prodigy(SCHEDULE, weight_decay=0.01, use_bias_correction=True),
    "Muon-variants": lambda: optim.Muon(SCHEDULE, ns_coefficients="polar_express", normuon=True,
                                        adjust_lr="match_rms_adamw", decoupled_weight_decay=True),
    "AdaBelief": lambda: optim.AdaBelief(SCHEDULE, weight_decay=0.01, ams_bound=True),
    "LaProp": lambda: optim.LaProp(SCHEDULE, weight_decay=0.01, centered=True, ams_bound=True),
    "AdamAtan2": lambda: optim.AdamAtan2(SCHEDULE, weight_decay=0.01, cautious_wd=True),
    "StableAdamW": lambda: optim.StableAdamW(SCHEDULE, weight_decay=0.01),
    "CautiousAdamW": lambda: optim.CautiousAdamW(SCHEDULE, bias_correction=True, cautious_scale="count"),
    "AdamW-amsgrad-cautious": lambda: optim.AdamW(SCHEDULE, bias_correction=True, amsgrad=True, cautious=True),
    "Lion-cautious": lambda: optim.Lion(SCHEDULE, weight_decay=0.01, cautious=True),
    "LaProp-cautious": lambda: optim.LaProp(SCHEDULE, weight_decay=0.01, cautious=True),
    "AdamAtan2-cautious": lambda: optim.AdamAtan2(SCHEDULE, weight_decay=0.01, cautious_factor=0.5),
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
    # NumPy reads bfloat16 as ml_dtypes.bfloat16 (what JAX and state_dtype="bfloat16" use)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    on_numpy = optim.load(path, library="numpy")
    assert on_numpy.state["w"]["m"].dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(
        on_numpy.state["w"]["v"].astype(np.float32),
        np.asarray(opt.state["w"]["v"].astype(mx.float32)),
    )


def test_bfloat16_without_ml_dtypes_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    path = tmp_path / "bf16.safetensors"
    save_file({"w": torch.ones(3, dtype=torch.bfloat16)}, str(path))
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # as if not installed
    from anyoptim._backend import _io

    with pytest.raises(TypeError, match="install it"):
        _io.read(path, "numpy")


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
    # whatever the last kill left behind (a working directory, the array library's own
    # temporary file in it), the next save clears it
    _save_small(tmp_path / "after.safetensors")
    assert {p.name for p in tmp_path.iterdir()} <= {"writer.py", "live.safetensors",
                                                   "after.safetensors"}
    return survived


def test_killed_writer_never_leaves_a_partial_checkpoint(tmp_path: Path) -> None:
    assert _kill_cycles(tmp_path, kills=8) >= 4


@pytest.mark.slow
def test_killed_writer_many_times(tmp_path: Path) -> None:
    assert _kill_cycles(tmp_path, kills=120) >= 100


def _save_small(path: Path) -> None:
    opt = optim.SGD(0.1)
    opt.update({"w": np.ones(2, np.float32)}, {"w": np.ones(2, np.float32)})
    optim.save(path, opt)


def _dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp_name(pid: int, tag: str = "0") -> str:
    """The name of a save's working directory, as the library names them."""
    return f".anyoptim-{pid}-{tag * 16}.partial"


def _workspace(folder: Path, pid: int, tag: str, lock: bool = True) -> Path:
    """What a save killed at the last moment leaves: its working directory, its lock file (not
    locked by anybody now), the data file and safetensors' own temporary file."""
    work = folder / _temp_name(pid, tag)
    work.mkdir()
    if lock:
        (work / "lock").write_bytes(b"")
    (work / "data.safetensors").write_bytes(b"partial")
    (work / ".tmpAbC123").write_bytes(b"partial")
    return work


TWO_HOURS_AGO = time.time() - 2 * 3600


def test_saving_removes_stale_temporaries_of_killed_writers(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    stale = _workspace(tmp_path, _dead_pid(), "a")  # nobody holds its lock: its writer died
    fresh = _workspace(tmp_path, os.getpid(), "b")  # a save in progress (it holds the lock)
    other = tmp_path / "notes-anyoptim.safetensors"
    other.write_bytes(b"partial")
    for f in (stale, fresh, other):
        os.utime(f, (TWO_HOURS_AGO, TWO_HOURS_AGO))  # age decides nothing, either way
    os.utime(stale, None)
    with open(fresh / "lock", "r+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        _save_small(tmp_path / "ckpt.safetensors")
        assert not stale.exists()
        assert fresh.exists() and other.exists()
    assert sorted(p.name for p in fresh.iterdir()) == [".tmpAbC123", "data.safetensors", "lock"]
    assert (fresh / "data.safetensors").read_bytes() == b"partial"


# A child that saves through the library's own writer and stops inside the save, once the
# data file is written but before the checksum and the rename: it prints the data file's
# path, then waits for a line on stdin (or for SIGKILL).
HOLDER = r"""
import sys, numpy as np, anyoptim as optim
from anyoptim._backend import _io
path, n = sys.argv[1], int(sys.argv[2])
write = _io._write_with
def write_then_wait(lib, tmp, arrays, metadata):
    write(lib, tmp, arrays, metadata)
    print(tmp, flush=True)
    sys.stdin.readline()
_io._write_with = write_then_wait
opt = optim.Adam(0.01)
opt.update({"w": np.zeros(n, np.float32)}, {"w": np.ones(n, np.float32)})
params = {"w": np.arange(n, dtype=np.float32)}
print("saving", flush=True)
optim.save(path, opt, params, metadata={"writer": "child"})
print("saved", flush=True)
"""


def _start_holder(folder: Path, target: Path, n: int) -> subprocess.Popen:
    script = folder.parent / f"{folder.name}-holder.py"  # outside the folder under test
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target), str(n)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "saving":
        _end(proc)
        pytest.fail("the child writer ended before its save began")
    return proc


def _data_file(proc: subprocess.Popen, folder: Path) -> Path:
    """Wait until the child has written its data file; return its path."""
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.name == "data.safetensors" and tmp.parent.parent == folder, tmp
    return tmp


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _workspaces(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".anyoptim-")]


@pytest.mark.parametrize("moment", ["while writing", "after writing"])
def test_next_save_removes_what_a_killed_writer_left(tmp_path: Path, moment: str) -> None:
    n = 3_000_000  # 12 MB of parameters and 24 MB of Adam state
    proc = _start_holder(tmp_path, tmp_path / "child.safetensors", n)
    try:
        if moment == "after writing":
            tmp = _data_file(proc, tmp_path)
            assert tmp.stat().st_size > 3 * 4 * n
        else:  # as soon as anything but the lock file is in the working directory
            deadline = time.monotonic() + 60
            while not any(
                e.name != "lock" for w in _workspaces(tmp_path) for e in w.iterdir()
            ):
                assert time.monotonic() < deadline and proc.poll() is None
    finally:
        _end(proc)
    assert proc.returncode == -signal.SIGKILL
    [work] = _workspaces(tmp_path)  # the killed save left its working directory behind
    assert sorted(e.name for e in work.iterdir()) != ["lock"]
    for f in [work, *work.iterdir()]:
        os.utime(f)  # brand new: the age of what is left must not matter
    _save_small(tmp_path / "ckpt.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    assert int(optim.load(tmp_path / "ckpt.safetensors").step) == 1


def test_a_save_leaves_a_live_concurrent_writers_temporary_file_alone(tmp_path: Path) -> None:
    n = 300_000
    target = tmp_path / "child.safetensors"
    proc = _start_holder(tmp_path, target, n)
    try:
        tmp = _data_file(proc, tmp_path)
        before = tmp.stat()
        for f in (tmp.parent, tmp):
            os.utime(f, (TWO_HOURS_AGO, TWO_HOURS_AGO))  # however old it looks
        for i in range(2):
            _save_small(tmp_path / f"ckpt{i}.safetensors")
        after = tmp.stat()
        assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
        out, _ = proc.communicate("go on\n", timeout=60)
    finally:
        _end(proc)
    assert proc.returncode == 0 and out.strip() == "saved"
    assert not _workspaces(tmp_path)  # the child renamed its file and removed its directory
    restored = optim.load(target)  # complete and valid: the checksum is verified here
    assert int(restored.step) == 1
    np.testing.assert_array_equal(
        np.asarray(optim.load_params(target)["w"]), np.arange(n, dtype=np.float32)
    )
    assert optim.read_metadata(target)["writer"] == "child"


def test_a_save_in_another_thread_keeps_its_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = _io._write_with
    written, go_on = threading.Event(), threading.Event()
    temporaries: list[str] = []

    def write_then_wait(lib, tmp, arrays, metadata):
        write(lib, tmp, arrays, metadata)
        if threading.current_thread().name == "slow-writer":
            temporaries.append(tmp)
            written.set()
            assert go_on.wait(60)

    monkeypatch.setattr(_io, "_write_with", write_then_wait)
    opt = optim.Adam(0.01)
    params = {"w": np.arange(1000, dtype=np.float32)}
    opt.update(params, {"w": np.ones(1000, np.float32)})
    target = tmp_path / "slow.safetensors"
    thread = threading.Thread(target=optim.save, args=(target, opt, params), name="slow-writer")
    thread.start()
    try:
        assert written.wait(60)
        _save_small(tmp_path / "quick.safetensors")
        assert Path(temporaries[0]).exists()
    finally:
        go_on.set()
        thread.join(60)
    assert not _workspaces(tmp_path)
    np.testing.assert_array_equal(np.asarray(optim.load_params(target)["w"]), params["w"])


def test_cleanup_touches_only_the_librarys_own_temporary_files(tmp_path: Path) -> None:
    dead = _dead_pid()
    lookalikes = [
        "notes.tmp",
        "notes-anyoptim.safetensors",
        ".tmpXyZ789",  # safetensors' temporary file of some other program's save
        ".anyoptim-abc123.safetensors",
        f".anyoptim-{dead}-{'0' * 16}.safetensors",
        f".anyoptim-{dead}-{'0' * 16}.partial.bak",
        f"anyoptim-{dead}-{'0' * 16}.partial",  # no leading dot
        f".anyoptim-{dead}-{'0' * 15}.partial",  # too short a tag
        f".anyoptim-{dead}-{'G' * 16}.partial",  # not hexadecimal
        f".Anyoptim-{dead}-{'0' * 16}.partial",
        _temp_name(dead, "1"),  # the right name, but a file, not a directory
    ]
    for name in lookalikes:
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "sub").mkdir()
    elsewhere = _workspace(tmp_path / "sub", dead, "2")  # in another folder than the target's
    outside = _workspace(tmp_path / "sub", os.getpid(), "3")
    link = tmp_path / _temp_name(dead, "4")  # the right name, but a symbolic link
    link.symlink_to(outside, target_is_directory=True)
    near_miss = _workspace(tmp_path, dead, "5")
    near_miss.rename(tmp_path / f".anyoptim-{dead}-{'5' * 16}.partialx")
    abandoned = _workspace(tmp_path, dead, "6")  # the one thing the cleanup should remove
    for f in tmp_path.rglob("*"):
        os.utime(f, (TWO_HOURS_AGO, TWO_HOURS_AGO), follow_symlinks=False)
    untouched = {
        p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in tmp_path.rglob("*")
        if abandoned not in (p, *p.parents)
    }

    _save_small(tmp_path / "ckpt.safetensors")

    assert not abandoned.exists()
    now = {p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
           for p in tmp_path.rglob("*") if p.name != "ckpt.safetensors"}
    assert now == untouched
    assert link.is_symlink() and elsewhere.is_dir() and (outside / "lock").exists()


def test_a_writer_whose_directory_a_cleanup_took_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcntl = pytest.importorskip("fcntl")
    taken: list[str] = []

    def flock(fd: int, op: int) -> None:
        if not taken and op == fcntl.LOCK_EX:
            # the writer's first lock: another save's cleanup got there first (between the lock
            # file's creation and this call) and removed the whole working directory
            [work] = _workspaces(tmp_path)
            taken.append(work.name)
            shutil.rmtree(work)
        fcntl.flock(fd, op)

    fake = SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, flock=flock)
    monkeypatch.setattr(_io, "_fcntl", lambda: fake)
    _save_small(tmp_path / "ckpt.safetensors")
    assert len(taken) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    assert int(optim.load(tmp_path / "ckpt.safetensors").step) == 1


def _refusing_fcntl() -> SimpleNamespace:
    """An fcntl whose locks fail as they do on a file system without lock support."""
    import errno
    import fcntl

    def flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    return SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, flock=flock)


@pytest.mark.parametrize("locks", ["no fcntl", "locks refused", "no lock file"])
def test_without_a_lock_the_pid_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locks: str
) -> None:
    if locks == "no fcntl":
        monkeypatch.setattr(_io, "_fcntl", lambda: None)  # as on Windows
    elif locks == "locks refused":
        pytest.importorskip("fcntl")
        refusing = _refusing_fcntl()
        monkeypatch.setattr(_io, "_fcntl", lambda: refusing)
    # "no lock file": a writer that has just created its directory (or was killed right then)
    lock = locks != "no lock file"
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        dead = _workspace(tmp_path, _dead_pid(), "a", lock)
        mine = _workspace(tmp_path, os.getpid(), "b", lock)
        theirs = _workspace(tmp_path, alive.pid, "c", lock)
        for f in (dead, mine, theirs):
            os.utime(f, (TWO_HOURS_AGO, TWO_HOURS_AGO))
        _save_small(tmp_path / "ckpt.safetensors")
        assert not dead.exists()
        for kept in (mine, theirs):
            assert (kept / "data.safetensors").read_bytes() == b"partial"
        assert int(optim.load(tmp_path / "ckpt.safetensors").step) == 1
    finally:
        assert alive.stdin is not None
        alive.stdin.close()
        alive.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt.safetensors", mine.name, theirs.name]
    )
