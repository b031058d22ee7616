"""``anyoptim inspect``: what a safetensors state file holds, read from its header only.

Works on anyoptim checkpoints (JSON metadata in ``__metadata__``) and on plain files written
with MLX's recipe (``tree_flatten(opt.state)`` saved with safetensors, no metadata), bfloat16
included: shapes, dtypes and sizes come from the header, and only the few bytes of the
``step`` and ``learning_rate`` scalars are decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
from typing import Any

import numpy as np

from .._backend import _io
from ._checkpoint import CLI_KEY
from ._common import CLIError, UsageError, emit_json, wrap
from ._common import console as make_console

_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "C64": "complex64",
}

EPILOG = """\
examples:
  anyoptim inspect run.safetensors
  anyoptim inspect optimizer.safetensors --json

Reads only the header (and the step and learning-rate scalars), so it is instant on large
files and shows bfloat16 state without converting it. Plain files written with MLX's recipe
    mx.save_safetensors("optimizer.safetensors", dict(tree_flatten(optimizer.state)))
have no metadata; anyoptim checkpoints also record the optimizer and its hyperparameters.
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show what a safetensors optimizer state or checkpoint holds",
        description=wrap(
            "Show the optimizer, hyperparameters, step, learning rate and the tree of "
            "state arrays (shape, dtype, bytes) stored in a safetensors file."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("file", metavar="FILE.safetensors")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- reading
def read_header(path: str) -> tuple[dict[str, Any], dict[str, str], int]:
    """``(tensors, metadata, data_start)`` of a safetensors file, validated."""
    if not os.path.exists(path):
        raise UsageError(f"{path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{path!r} is a folder, expected a .safetensors file")
    try:
        header = _io.read_header(path)
    except ValueError as exc:
        raise CLIError(f"{path!r} is not a safetensors file (or it is damaged): {exc}") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CLIError(f"{path!r}: the __metadata__ entry is not a JSON object")
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
    return header, metadata, 8 + length


def read_scalar(path: str, entry: dict[str, Any], start: int) -> float | int | None:
    """Decode a 0-d (or one-element) array from the file, bfloat16 included."""
    if int(np.prod(entry["shape"], dtype=np.int64)) != 1:
        return None
    begin, end = entry["data_offsets"]
    with open(path, "rb") as fh:
        fh.seek(start + begin)
        raw = fh.read(end - begin)
    dtype = entry["dtype"]
    if dtype == "BF16":
        (bits,) = struct.unpack("<H", raw)
        return float(np.array([bits << 16], dtype="<u4").view("<f4")[0])
    np_dtype = _io.DTYPES.get(dtype, (None, 0))[0]
    if np_dtype is None:
        return None
    value = np.frombuffer(raw, dtype=np_dtype)[0]
    return int(value) if np.issubdtype(value.dtype, np.integer) else float(value)


def _find_scalar(header: dict[str, Any], name: str) -> str | None:
    candidates = [k for k in header if k == name or k.endswith("." + name)]
    candidates = [k for k in candidates if int(np.prod(header[k]["shape"], dtype=np.int64)) == 1]
    return min(candidates, key=lambda k: (k.count("."), k)) if candidates else None


def _loads(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return value


# metadata written by anyoptim.save that describes structure rather than content
_STRUCTURAL = ("tree", "params_tree", "optimizer")


def spec_text(spec: Any) -> str:
    """``{"name": "cosine_decay", "args": [...]}`` -> ``cosine_decay(...)`` (any nesting)."""
    if isinstance(spec, dict) and "name" in spec:
        args = [spec_text(a) for a in spec.get("args", [])]
        args += [f"{k}={spec_text(v)}" for k, v in (spec.get("kwargs") or {}).items()]
        return f"{spec['name']}({', '.join(args)})"
    if isinstance(spec, dict) and "custom" in spec:
        return f"<custom schedule {spec['custom']}>"
    if isinstance(spec, list):
        return "[" + ", ".join(spec_text(v) for v in spec) + "]"
    return repr(spec) if isinstance(spec, str) else str(spec)


def _describe_optimizer(desc: Any) -> dict[str, Any] | None:
    if not isinstance(desc, dict) or "class" not in desc:
        return None
    out: dict[str, Any] = {"class": desc["class"]}
    if isinstance(desc.get("hyperparameters"), dict):
        out["hyperparameters"] = desc["hyperparameters"]
    schedules = desc.get("schedules")
    if isinstance(schedules, dict) and schedules:
        out["schedules"] = {k: spec_text(v) for k, v in schedules.items()}
    if isinstance(desc.get("optimizers"), list):
        out["optimizers"] = [_describe_optimizer(d) for d in desc["optimizers"]]
    return out


def _optimizer_info(metadata: dict[str, str]) -> dict[str, Any] | None:
    """Class, hyperparameters and schedules as recorded by ``anyoptim.save``."""
    if "optimizer" not in metadata:
        return None
    return _describe_optimizer(_loads(metadata["optimizer"]))


def _training_info(metadata: dict[str, str]) -> dict[str, Any] | None:
    raw = metadata.get("user." + CLI_KEY, metadata.get(CLI_KEY))
    if raw is None:
        return None
    value = _loads(raw)
    if not isinstance(value, dict):
        return None
    epochs = (value.get("history") or {}).get("epochs") or []
    return {
        "epoch": value.get("epoch"),
        "epochs": value.get("epochs"),
        "backend": value.get("backend"),
        "config": value.get("config"),
        "last": epochs[-1] if epochs else None,
    }


def describe(path: str) -> dict[str, Any]:
    header, metadata, start = read_header(path)
    arrays = [
        {
            "name": name,
            "dtype": _NAMES.get(entry["dtype"], entry["dtype"]),
            "shape": entry["shape"],
            "bytes": entry["data_offsets"][1] - entry["data_offsets"][0],
        }
        for name, entry in header.items()
    ]
    arrays.sort(key=lambda a: header[a["name"]]["data_offsets"][0])
    scalars: dict[str, Any] = {}
    sources: dict[str, str | None] = {}
    for name in ("step", "learning_rate"):
        key = _find_scalar(header, name)
        sources[name] = key
        scalars[name] = None if key is None else read_scalar(path, header[key], start)
    shown_meta = {
        k: (v if len(v) <= 200 else v[:197] + "...")
        for k, v in metadata.items()
        if k not in _STRUCTURAL and k not in (CLI_KEY, "user." + CLI_KEY)
    }
    training = _training_info(metadata)
    if metadata.get("format") == "anyoptim.checkpoint":
        kind = "anyoptim checkpoint"
    elif metadata:
        kind = "safetensors file with metadata"
    else:
        kind = "safetensors file without metadata (e.g. MLX's tree_flatten recipe)"
    return {
        "command": "inspect",
        "file": path,
        "kind": kind,
        "file_bytes": os.path.getsize(path),
        "optimizer": _optimizer_info(metadata),
        "step": scalars["step"],
        "learning_rate": scalars["learning_rate"],
        "scalar_sources": sources,
        "training": training,
        "metadata": shown_meta,
        "arrays": arrays,
        "total_arrays": len(arrays),
        "total_elements": int(sum(int(np.prod(a["shape"], dtype=np.int64)) for a in arrays)),
        "total_bytes": int(sum(a["bytes"] for a in arrays)),
    }


# ----------------------------------------------------------------------------- display
def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _nest(arrays: list[dict[str, Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for a in arrays:
        node = root
        parts = a["name"].split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict) or "__array__" in child:
                child = node.setdefault(part + ".", {})
            node = child
        node[parts[-1]] = {"__array__": a}
    return root


def _subtotal(node: dict[str, Any]) -> int:
    if "__array__" in node:
        return int(node["__array__"]["bytes"])
    return sum(_subtotal(child) for child in node.values())


def _fill(tree: Any, node: dict[str, Any]) -> None:
    for key, child in node.items():
        if "__array__" in child:
            a = child["__array__"]
            shape = (
                "("
                + ", ".join(str(d) for d in a["shape"])
                + ("," if len(a["shape"]) == 1 else "")
                + ")"
            )
            tree.add(
                f"[bold]{key}[/]  [cyan]{a['dtype']}[/] {shape}  [dim]{human_bytes(a['bytes'])}[/]"
            )
        else:
            branch = tree.add(f"[bold]{key}[/]  [dim]{human_bytes(_subtotal(child))}[/]")
            _fill(branch, child)


def _optimizer_rows(table: Any, opt: dict[str, Any], indent: str) -> None:
    from rich.markup import escape

    table.add_row(f"{indent}optimizer", f"[bold]{escape(str(opt.get('class')))}")
    hp = opt.get("hyperparameters")
    if hp:
        table.add_row(
            f"{indent}hyperparameters", escape(", ".join(f"{k}={v}" for k, v in hp.items()))
        )
    for name, text in (opt.get("schedules") or {}).items():
        table.add_row(f"{indent}schedule ({name})", escape(text))
    for i, sub in enumerate(opt.get("optimizers") or []):
        if sub:
            _optimizer_rows(table, sub, f"{indent}\\[{i}] ")


def run(args: argparse.Namespace) -> int:
    info = describe(args.file)
    if args.json:
        emit_json(info)
        return 0
    from ._common import need

    need("rich", "the inspect display")
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    console = make_console()
    table = Table(show_header=False, title=escape(args.file), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("kind", info["kind"])
    opt = info["optimizer"]
    if opt is None:
        table.add_row("optimizer", "not recorded")
    else:
        _optimizer_rows(table, opt, "")
    sources = info["scalar_sources"]

    def where(name: str) -> str:
        key = sources[name]
        return "" if key in (None, name) else f"  [dim](from {escape(key)})[/]"

    step = info["step"]
    table.add_row("step", ("-" if step is None else str(step)) + where("step"))
    lr = info["learning_rate"]
    table.add_row("learning rate", ("-" if lr is None else f"{lr:.6g}") + where("learning_rate"))
    training = info["training"]
    if training:
        last = training.get("last") or {}
        text = f"epoch {training.get('epoch')} of {training.get('epochs')}, backend {training.get('backend')}"
        if last:
            text += f", test accuracy {100 * last['test_acc']:.2f}%"
        table.add_row("anyoptim train", text)
        cfg = training.get("config") or {}
        table.add_row(
            "train settings", escape(", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None))
        )
    for key, value in info["metadata"].items():
        table.add_row(f"metadata {escape(key)}", escape(value))
    console.print(table)

    tree = Tree(f"[bold]arrays[/] ({info['total_arrays']})")
    _fill(tree, _nest(info["arrays"]))
    console.print(tree)
    console.print(
        f"total: {info['total_arrays']} arrays, {info['total_elements']:,} elements, "
        f"{human_bytes(info['total_bytes'])} ({info['total_bytes']:,} bytes); "
        f"file {human_bytes(info['file_bytes'])}"
    )
    return 0
