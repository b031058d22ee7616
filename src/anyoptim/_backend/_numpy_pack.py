"""Fresh NumPy state arrays of many small parameters, laid out one block per state entry.

``init`` makes each parameter's state arrays one after the other (``m``, ``v`` of the first
parameter, then of the second, ...), so with small parameters the allocator puts the ``m`` and
``v`` of one parameter next to each other. When that distance is a little under a multiple
of 4 KiB (1,000 float32 elements: 4,000 bytes apart), the fused kernel slows down: on 2,000
tensors of 1,000 elements it nearly doubles the kernel's time, and the same distance inside
one buffer reproduces it. That is the pattern of "4K aliasing": loads of ``v`` are held
behind recent stores to ``m`` when their addresses agree in the low 12 bits. Laid out per entry (all ``m`` in one block, all ``v`` in
another), the arrays of one parameter sit whole blocks apart, the kernel streams through
memory in order, and blocks of 4 MiB or more get NumPy's huge-page hint.

:func:`pack` copies the arrays into the blocks (exact values) and hands back views, so it is
invisible to the maths; the update paths treat views like any array (in place they write into
them; a functional update makes its own arrays, as it would for any shared array).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Pack only when at least this many parameters got new state (fewer: nothing to gain).
MIN_LEAVES = 32
#: Arrays at least this large keep their own allocation (already page-aligned and streamed).
MAX_BYTES = 1 << 18
#: Each array in a block starts on a multiple of this many bytes (a cache line).
ALIGN = 64


def pack(states: list[dict[str, Any]]) -> None:
    """Re-lay the small C-contiguous floating NumPy arrays of the fresh per-parameter dicts
    ``states``: one block per (entry name, dtype), each array replaced by a view of it."""
    if len(states) < MIN_LEAVES:
        return
    columns: dict[tuple[str, np.dtype], list[tuple[dict[str, Any], np.ndarray]]] = {}
    for s in states:
        for key, a in s.items():
            if (type(a) is np.ndarray and a.dtype.kind == "f" and a.ndim > 0
                    and 0 < a.nbytes < MAX_BYTES and a.flags.c_contiguous):
                columns.setdefault((key, a.dtype), []).append((s, a))
    for (key, dtype), members in columns.items():
        if len(members) < MIN_LEAVES:
            continue
        step = ALIGN // dtype.itemsize
        sizes = [a.size for _, a in members]
        starts = np.zeros(len(members) + 1, np.int64)
        np.cumsum([-(-n // step) * step for n in sizes], out=starts[1:])
        # one spare line so that the first view can start on a line boundary
        raw = np.empty(int(starts[-1]) + step, dtype)
        skip = (-raw.ctypes.data % ALIGN) // dtype.itemsize
        block = raw[skip: skip + int(starts[-1])]
        for (s, a), start, n in zip(members, starts.tolist(), sizes):
            view = block[start: start + n].reshape(a.shape)
            view[...] = a
            s[key] = view


def pack_tree(tree: Any) -> None:
    """:func:`pack` the per-parameter dicts of a state tree just read from a file (the dicts
    below the root whose values are all arrays), whose arrays nobody holds yet. Files keep
    each parameter's entries side by side (``t0.m``, ``t0.v``, ``t1.m``, ...), so the loaded
    arrays have the layout :func:`pack` exists to avoid."""
    found: list[dict[str, Any]] = []

    def walk(node: Any, root: bool) -> None:
        if isinstance(node, dict):
            children = list(node.values())
            if not root and node and not any(isinstance(c, (dict, list, tuple))
                                             for c in children):
                found.append(node)
                return
        elif isinstance(node, (list, tuple)):
            children = list(node)
        else:
            return
        for child in children:
            walk(child, False)

    walk(tree, True)
    pack(found)
