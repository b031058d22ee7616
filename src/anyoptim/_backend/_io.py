"""Reading and writing safetensors files for every array library.

Each library has its own well-kept writer and reader (``safetensors.numpy``, ``mx.save_safetensors``
/ ``mx.load``, ``safetensors.torch``); this module picks the one that keeps every dtype,
bfloat16 included, without a detour through NumPy.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
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


TEMP_PREFIX = ".anyoptim-"
STALE_AFTER_S = 3600.0


def remove_stale_temporaries(directory: str, older_than_s: float = STALE_AFTER_S) -> int:
    """Delete temporary files left by writers that were killed mid-save; return how many.

    Only this module's own temporary files (``.anyoptim-*.safetensors``) that nobody has
    written to for ``older_than_s`` seconds are removed; a save in progress keeps its file
    fresh. Errors (a file removed meanwhile, no permission) are ignored.
    """
    import time

    removed = 0
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(TEMP_PREFIX) and name.endswith(".safetensors")):
            continue
        full = os.path.join(directory, name)
        try:
            if now - os.path.getmtime(full) > older_than_s:
                os.unlink(full)
                removed += 1
        except OSError:
            pass
    return removed


def write(path: str | os.PathLike[str], arrays: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write ``arrays`` (all from one library) atomically: a temporary file, then a rename."""
    libs = sorted({str(library_name(a)) for a in arrays.values()})
    if len(libs) > 1:
        raise TypeError(f"cannot save arrays from several libraries in one file: {libs}")
    lib = libs[0] if libs else "numpy"
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".safetensors", dir=directory)
    os.close(fd)
    try:
        _write_with(lib, tmp, arrays, metadata)
        _add_checksum(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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

    if library == "numpy" and any(
        isinstance(info, dict) and info.get("dtype") == "BF16" for info in read_header(path).values()
    ):
        # refused even when ml_dtypes (imported by JAX) has taught NumPy a bfloat16 type, so
        # the answer does not depend on what else the process happened to import
        raise TypeError(
            "the file holds bfloat16 arrays, which NumPy cannot represent; load it with "
            "library='mlx' or library='torch'"
        )
    try:
        host = load_file(path)
    except TypeError as exc:
        if "bfloat16" in str(exc):
            raise TypeError(
                "the file holds bfloat16 arrays, which NumPy cannot represent; load it with "
                "library='mlx' or library='torch'"
            ) from None
        raise
    if library == "numpy":
        return host
    if library == "jax":
        import jax.numpy as jnp

        return {k: jnp.asarray(v) for k, v in host.items()}
    import cupy

    return {k: cupy.asarray(v) for k, v in host.items()}
