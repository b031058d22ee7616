"""Reading and writing safetensors files for every array library.

Each library has its own well-kept writer and reader (``safetensors.numpy``, ``mx.save_safetensors``
/ ``mx.load``, ``safetensors.torch``); this module picks the one that keeps every dtype,
bfloat16 included, without a detour through NumPy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import struct
import sys
from types import ModuleType
from typing import Any

import numpy as np

from . import library_name

LIBRARIES = ("numpy", "mlx", "torch", "jax", "cupy")

MAX_HEADER = 100 * 1024 * 1024

# safetensors dtype -> (NumPy dtype string or None, bytes per element)
DTYPES: dict[str, tuple[str | None, int]] = {
    "BOOL": ("|b1", 1),
    "U8": ("|u1", 1),
    "I8": ("|i1", 1),
    "F8_E5M2": (None, 1),
    "F8_E4M3": (None, 1),
    "I16": ("<i2", 2),
    "U16": ("<u2", 2),
    "F16": ("<f2", 2),
    "BF16": (None, 2),
    "I32": ("<i4", 4),
    "U32": ("<u4", 4),
    "F32": ("<f4", 4),
    "F64": ("<f8", 8),
    "I64": ("<i8", 8),
    "U64": ("<u8", 8),
    "C64": ("<c8", 8),
}


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse the JSON header of a safetensors file without reading any tensor data.

    Raises ValueError with the reason when the file is not a well-formed safetensors file.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ValueError(f"file is {size} bytes long, too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER):
            raise ValueError(
                f"header claims {length} bytes but the file has only {size - 8} after the "
                "length prefix (truncated file?)"
            )
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    data_size = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name!r} has a malformed header entry") from None
        if not 0 <= start <= end <= data_size:
            raise ValueError(
                f"tensor {name!r} lies at bytes {start}..{end} but the data section has "
                f"only {data_size} bytes (truncated file?)"
            )
        itemsize = DTYPES.get(dtype, (None, 0))[1]
        count = 1
        for d in shape:
            count *= d
        if itemsize and end - start != itemsize * count:
            raise ValueError(
                f"tensor {name!r} has {end - start} bytes, which does not match its shape "
                f"{tuple(shape)} and dtype {dtype}"
            )
        info["shape"], info["data_offsets"] = shape, [start, end]
    return header


# ----------------------------------------------------------------------- temporary files
# Each save works in a private directory beside its target, ``.anyoptim-<pid>-<16 hex>.partial``:
# the file is written there (together with whatever temporary files the array library's own
# writer makes; safetensors, for one, writes a ``.tmpXXXXXX`` file and renames it), checksummed,
# and then renamed over the target. Where ``fcntl`` exists, the writer holds an exclusive
# ``flock`` on the directory's ``lock`` file from just after creating the directory until the
# directory is gone, so a working directory whose lock nobody holds belongs to a writer that
# died: the kernel drops a process's locks when it ends, however it ends. Where there is no
# ``fcntl`` (Windows), or the file system refuses locks, or there is no lock file yet, the pid
# in the name decides instead: the directory is removed only when no process has that pid.
# Age plays no part in either rule.
TEMP_PREFIX = ".anyoptim-"
TEMP_SUFFIX = ".partial"
LOCK_NAME = "lock"
DATA_NAME = "data.safetensors"
_TEMP_NAME = re.compile(r"\.anyoptim-([0-9]{1,10})-[0-9a-f]{16}\.partial")


def _fcntl() -> ModuleType | None:
    """The ``fcntl`` module, or None on platforms without it (imported only when needed)."""
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists; True whenever that cannot be told for sure."""
    if pid <= 0:
        return True
    if sys.platform == "win32":
        # os.kill(pid, 0) is no probe on Windows (signal 0 is CTRL_C_EVENT there): ask the kernel
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it exists but is someone else's
        return True
    return True


def _same_file(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it has not been removed)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _remove_tree(path: str) -> bool:
    """Remove a working directory and everything in it; return whether it is gone."""
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _remove_if_abandoned(work: str, pid: int, fcntl: ModuleType | None) -> bool:
    """Remove one working directory if its writer is dead; return whether it was removed."""
    try:
        if not stat.S_ISDIR(os.lstat(work).st_mode):
            return False  # the name of a working directory, but a file or a link: not ours
    except OSError:
        return False
    if fcntl is not None:
        lock_path = os.path.join(work, LOCK_NAME)
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(lock_path, flags)  # read-write: NFS grants exclusive locks to writers only
        except FileNotFoundError:
            pass  # created a moment ago, or being removed: the pid decides below
        except OSError:
            return False
        else:
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return False
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # a live writer holds it
                except OSError:  # no locks on this file system: fall back to the pid
                    if _pid_alive(pid):
                        return False
                # remove it while holding the lock, so that a writer that created the lock
                # file just now, and waits for the lock, sees it gone and starts again
                return _same_file(lock_path, fd) and _remove_tree(work)
            finally:
                os.close(fd)
    return not _pid_alive(pid) and _remove_tree(work)


def remove_stale_temporaries(directory: str) -> int:
    """Delete what killed writers left in ``directory``; return how many saves' worth.

    Only entries named like this module's working directories (``.anyoptim-<pid>-<16 hex
    digits>.partial``) are considered, and of those only the ones whose writer is dead: nobody
    holds the writer's lock or, without locks, no process has the pid in the name. A save in
    progress, in this process or any other, keeps its directory, whatever its age. Errors (a
    directory removed meanwhile, no permission) are ignored.
    """
    fcntl = _fcntl()
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    removed = 0
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        if match and _remove_if_abandoned(os.path.join(directory, name), int(match[1]), fcntl):
            removed += 1
    return removed


def _create_workspace(directory: str) -> tuple[str, int | None]:
    """Create a new working directory in ``directory`` and take its lock where locks exist.

    Returns its path and the descriptor that holds the lock (closing it releases the lock), or
    None for the descriptor where no lock is held (the pid in the name protects it then).
    """
    fcntl = _fcntl()
    while True:
        name = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{TEMP_SUFFIX}"
        work = os.path.join(directory, name)
        try:
            os.mkdir(work, 0o700)
        except FileExistsError:
            continue
        if fcntl is None:
            return work, None
        lock_path = os.path.join(work, LOCK_NAME)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            continue  # the new directory is gone already (removed by hand?): start again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks on this file system
            os.close(fd)
            return work, None
        except BaseException:
            os.close(fd)
            _remove_tree(work)
            raise
        if _same_file(lock_path, fd):
            return work, fd
        # Another save's cleanup found the lock file in the instant between its creation and
        # the lock, and removed the directory (this lock waited for that): start again.
        os.close(fd)


def write(path: str | os.PathLike[str], arrays: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write ``arrays`` (all from one library) atomically: a temporary file, then a rename."""
    libs = sorted({str(library_name(a)) for a in arrays.values()})
    if len(libs) > 1:
        raise TypeError(f"cannot save arrays from several libraries in one file: {libs}")
    lib = libs[0] if libs else "numpy"
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    remove_stale_temporaries(directory)
    work, lock = _create_workspace(directory)
    try:
        tmp = os.path.join(work, DATA_NAME)
        _write_with(lib, tmp, arrays, metadata)
        _add_checksum(tmp)
        os.replace(tmp, target)
    finally:
        # after a failure too; still under the lock, so that no cleanup sees it unlocked first
        _remove_tree(work)
        if lock is not None:
            os.close(lock)


CHECKSUM_KEY = "data_sha256"


def _digest(header: dict[str, Any], chunks: Any) -> str:
    """SHA-256 over the header (canonical JSON, without the checksum entry) and the data."""
    canonical = json.loads(json.dumps(header))
    (canonical.get("__metadata__") or {}).pop(CHECKSUM_KEY, None)
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode("utf-8") + b"\0")
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def data_digest(
    path: str | os.PathLike[str], header: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The parsed header and the SHA-256 of the file's content, read in chunks.

    The digest covers the header (in a canonical JSON form, without the checksum entry itself)
    and the data section, so a change anywhere in the file is detected. ``header``: the file's
    header if the caller has already parsed it.
    """
    if header is None:
        header = read_header(path)
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + length)
        return header, _digest(header, iter(lambda: fh.read(1 << 22), b""))


def _add_checksum(path: str) -> None:
    """Record the content's SHA-256 in the header metadata, then flush to disk.

    The data offsets in a safetensors header are relative to the end of the header, so the
    header can be rewritten with one more metadata entry without touching the data. The file
    is read once.
    """
    header = read_header(path)
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + length)
        data = fh.read()
    header.setdefault("__metadata__", {})[CHECKSUM_KEY] = _digest(header, [data])
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data section 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def verify_checksum(
    path: str | os.PathLike[str], required: bool = False, header: dict[str, Any] | None = None
) -> None:
    """Raise ValueError if the file's recorded checksum does not match its content (or, with
    ``required``, if it records none). ``header``: the already parsed header, if any."""
    header, digest = data_digest(path, header)
    expected = (header.get("__metadata__") or {}).get(CHECKSUM_KEY)
    if expected is None and required:
        raise ValueError("the checksum entry is missing from the header (the file is corrupted)")
    if expected is not None and expected != digest:
        raise ValueError(
            "the content does not match the checksum recorded when the file was written "
            "(the file is corrupted)"
        )


def _write_with(lib: str, path: str, arrays: dict[str, Any], metadata: dict[str, str]) -> None:
    if lib == "mlx":
        import mlx.core as mx

        mx.save_safetensors(path, arrays, metadata=metadata)
    elif lib == "torch":
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in arrays.items()}, path, metadata=metadata)
    else:
        from safetensors.numpy import save_file

        host = {k: np.asarray(_to_host(v), order="C") for k, v in arrays.items()}
        save_file(host, path, metadata=metadata)


def _to_host(x: Any) -> np.ndarray:
    lib = library_name(x)
    if lib == "cupy":
        return x.get()
    return np.asarray(x)


def _read_with_bfloat16(path: str, header: dict[str, Any]) -> dict[str, Any]:
    """NumPy arrays of a file that holds bfloat16 tensors: NumPy has no bfloat16 of its own,
    so those are decoded from their bytes as ``ml_dtypes.bfloat16`` (the type JAX uses, and
    the one anyoptim's NumPy ``state_dtype="bfloat16"`` writes); the rest are read by
    safetensors."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(
            "the file holds bfloat16 arrays, which NumPy represents only with the ml_dtypes "
            "package; install it (pip install ml-dtypes) or load with library='mlx' or "
            "library='torch'"
        ) from None
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        start = 8 + length
        for name, info in header.items():
            if name == "__metadata__" or info.get("dtype") != "BF16":
                continue
            begin, end = info["data_offsets"]
            fh.seek(start + begin)
            raw = fh.read(end - begin)
            out[name] = np.frombuffer(raw, np.dtype(ml_dtypes.bfloat16)).reshape(info["shape"])
    with safe_open(path, framework="numpy") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if name not in out:
                out[name] = f.get_tensor(name)
    return {name: out[name] for name in header if name != "__metadata__"}


def read(path: str | os.PathLike[str], library: str) -> dict[str, Any]:
    """Read every tensor of a safetensors file as arrays of ``library``."""
    if library not in LIBRARIES:
        raise ValueError(f"library should be one of {', '.join(LIBRARIES)}, got {library!r}")
    path = os.fspath(path)
    if library == "mlx":
        import mlx.core as mx

        loaded: Any = mx.load(path, format="safetensors")  # a dict for safetensors files
        return dict(loaded)
    if library == "torch":
        from safetensors.torch import load_file

        return load_file(path)
    from safetensors.numpy import load_file

    header = read_header(path)
    if any(isinstance(info, dict) and info.get("dtype") == "BF16" for info in header.values()):
        host = _read_with_bfloat16(path, header)
    else:
        host = load_file(path)
    if library == "numpy":
        return host
    if library == "jax":
        import jax.numpy as jnp

        return {k: jnp.asarray(v) for k, v in host.items()}
    import cupy

    return {k: cupy.asarray(v) for k, v in host.items()}
