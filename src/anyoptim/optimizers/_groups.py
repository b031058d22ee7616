"""Parameter groups: per-parameter hyperparameters on one optimizer and one state.

A :class:`Group` selects parameters by their dotted path (a glob, or a compiled regular
expression searched in the path), by ``ndim`` or by a predicate ``(path, array) -> bool``
(all given criteria must hold) and carries its own hyperparameter values. ``lr_scale`` and
``wd_scale`` multiply the optimizer's (possibly scheduled) learning rate and weight decay for
the group, like modded-nanogpt's ``lr_mul`` / ``wd_mul``.

Example:
    >>> import numpy as np, anyoptim as optim
    >>> opt = optim.AdamW(1e-2, weight_decay=0.1, groups=[optim.no_decay_1d()])
    >>> params = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
    >>> grads = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> new = opt.apply_gradients(grads, params)
    >>> float(new["w"][0, 0]), float(new["b"][0])  # the bias is not decayed
    (0.9990000128746033, 1.0)
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Optimizer

__all__ = ["Group", "group", "no_decay_1d", "register_predicate"]

Predicate = Callable[[str, Any], bool]
SCALES = ("lr_scale", "wd_scale")

_PREDICATES: dict[str, Predicate] = {}


def register_predicate(name: str, predicate: Predicate) -> Predicate:
    """Register ``predicate`` under ``name`` so that groups using it can be saved by
    :func:`anyoptim.save` (the file stores the name) and rebuilt by :func:`anyoptim.load`.
    ``group(where="name")`` refers to a registered predicate. Returns ``predicate``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_predicate: name must be a non-empty string, got {name!r}")
    if not callable(predicate):
        raise TypeError(f"register_predicate({name!r}): the predicate must be callable")
    _PREDICATES[name] = predicate
    return predicate


class Group:
    """One group of parameters and its hyperparameter values (build it with :func:`group`)."""

    __slots__ = ("name", "ndim", "pattern", "values", "where")

    def __init__(self, pattern: str | re.Pattern[str] | tuple[str, ...] | None,
                 ndim: tuple[int, ...] | None, where: Predicate | str | None,
                 values: dict[str, Any], name: str | None) -> None:
        self.pattern, self.ndim, self.where, self.values, self.name = (
            pattern, ndim, where, values, name)

    def _predicate(self) -> Predicate | None:
        if isinstance(self.where, str):
            try:
                return _PREDICATES[self.where]
            except KeyError:
                raise ValueError(
                    f"group {self}: no predicate registered as {self.where!r}; register it "
                    "with anyoptim.register_predicate(name, fn) before building the optimizer"
                ) from None
        return self.where

    def matches(self, path: str, array: Any) -> bool:
        """True if the parameter ``array`` at ``path`` belongs to this group."""
        pattern = self.pattern
        if pattern is not None:
            if isinstance(pattern, re.Pattern):
                if pattern.search(path) is None:
                    return False
            elif isinstance(pattern, tuple):
                if not any(fnmatch.fnmatchcase(path, p) for p in pattern):
                    return False
            elif not fnmatch.fnmatchcase(path, pattern):
                return False
        if self.ndim is not None and len(array.shape) not in self.ndim:
            return False
        predicate = self._predicate()
        return predicate is None or bool(predicate(path, array))

    def __repr__(self) -> str:
        parts = []
        if self.name:
            parts.append(f"name={self.name!r}")
        if self.pattern is not None:
            p = self.pattern
            parts.append(f"re.compile({p.pattern!r})" if isinstance(p, re.Pattern) else repr(p))
        if self.ndim is not None:
            parts.append(f"ndim={self.ndim if len(self.ndim) > 1 else self.ndim[0]}")
        if self.where is not None:
            w = self.where
            parts.append(f"where={w if isinstance(w, str) else getattr(w, '__qualname__', w)}")
        parts += [f"{k}={v!r}" for k, v in self.values.items()]
        return f"group({', '.join(parts)})"

    # ------------------------------------------------------------------ checkpoints
    def describe(self) -> dict[str, Any]:
        """A JSON-able description (for :func:`anyoptim.save`)."""
        out: dict[str, Any] = {"values": dict(self.values)}
        p = self.pattern
        if isinstance(p, re.Pattern):
            out["regex"] = [p.pattern, p.flags]
        elif isinstance(p, tuple):
            out["pattern"] = list(p)
        elif p is not None:
            out["pattern"] = p
        if self.ndim is not None:
            out["ndim"] = list(self.ndim)
        if self.where is not None:
            name = self.where if isinstance(self.where, str) else next(
                (k for k, v in _PREDICATES.items() if v is self.where), None)
            if name is None:
                raise TypeError(
                    f"cannot save {self}: its predicate "
                    f"{getattr(self.where, '__qualname__', self.where)!r} is a Python function, "
                    "which a checkpoint cannot store. Register it with "
                    "anyoptim.register_predicate('a_name', fn) (before saving and before "
                    "loading), or select the parameters with a pattern or ndim."
                )
            out["where"] = name
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_description(cls, desc: Mapping[str, Any]) -> Group:
        pattern: Any = desc.get("pattern")
        if isinstance(pattern, list):
            pattern = tuple(pattern)
        if "regex" in desc:
            pattern = re.compile(desc["regex"][0], desc["regex"][1])
        return group(pattern, ndim=desc.get("ndim"), where=desc.get("where"),
                     name=desc.get("name"), **desc.get("values", {}))


def group(pattern: str | re.Pattern[str] | Iterable[str] | None = None, *,
          ndim: int | Iterable[int] | None = None, where: Predicate | str | None = None,
          name: str | None = None, **values: Any) -> Group:
    """A parameter group for the ``groups=`` option of every optimizer.

    Args:
        pattern: a glob on the dotted parameter path (``"embed.*"``, ``"*.bias"``), several
            globs (any may match), or a compiled ``re.Pattern`` searched in the path.
        ndim: the number of dimensions (an int or several ints) the parameter must have.
        where: a predicate ``(path, array) -> bool``, or the name of one registered with
            :func:`register_predicate` (only registered predicates can be saved).
        name: an optional label shown in messages and kept in checkpoints.
        **values: hyperparameters of the optimizer for this group (``weight_decay=0.0``,
            ``learning_rate=1e-4``, ``betas=...``), plus ``lr_scale`` / ``wd_scale``
            multipliers of the optimizer's learning rate and weight decay.

    Every given criterion must hold. A parameter may belong to at most one group; parameters
    in no group use the optimizer's own values.
    """
    if pattern is None and ndim is None and where is None:
        raise ValueError("group(): give a pattern, ndim or where to select parameters")
    pat: Any = pattern
    if pattern is not None and not isinstance(pattern, (str, re.Pattern)):
        pat = tuple(pattern)
        if not pat or not all(isinstance(p, str) for p in pat):
            raise TypeError(f"group(): pattern must be a glob string, several globs or a "
                            f"compiled regular expression, got {pattern!r}")
    nd: tuple[int, ...] | None = None
    if ndim is not None:
        nd = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if not nd or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                             for n in nd):
            raise ValueError(f"group(): ndim must be non-negative ints, got {ndim!r}")
    if where is not None and not (callable(where) or isinstance(where, str)):
        raise TypeError(f"group(): where must be a predicate (path, array) -> bool or a "
                        f"registered name, got {type(where).__name__}")
    for key in SCALES:
        if key in values:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"group(): {key} must be a non-negative number, got {v!r}")
    if callable(values.get("learning_rate")):
        raise TypeError("group(): learning_rate must be a number (a group cannot have its own "
                        "schedule); use lr_scale to scale the optimizer's scheduled rate")
    return Group(pat, nd, where, dict(values), name)


def no_decay_1d(**values: Any) -> Group:
    """The usual "no weight decay for biases and norms" group: every parameter with at most
    one dimension gets ``weight_decay=0.0`` (and the extra ``values``)."""
    return group(ndim=(0, 1), name="no_decay_1d", **{"weight_decay": 0.0, **values})


def validate(opt: Optimizer, groups: Any) -> tuple[Group, ...]:
    """Check ``groups`` for ``opt`` (hyperparameter names); return them as a tuple."""
    cls = type(opt).__name__
    if groups is None:
        return ()
    if isinstance(groups, Group):
        groups = [groups]
    out = tuple(groups)
    known = (*opt.hyperparameters, "learning_rate")
    for i, g in enumerate(out):
        if not isinstance(g, Group):
            raise TypeError(f"{cls}: groups[{i}] is a {type(g).__name__}; build groups with "
                            "anyoptim.group(...) or anyoptim.no_decay_1d()")
        for key in g.values:
            if key == "wd_scale" and "weight_decay" not in known:
                raise ValueError(f"{cls}: groups[{i}] {g}: wd_scale needs a weight_decay "
                                 f"hyperparameter, which {cls} does not have")
            if key not in known and key not in SCALES:
                raise ValueError(
                    f"{cls}: groups[{i}] {g}: unknown hyperparameter {key!r}; {cls} takes "
                    f"{', '.join(repr(k) for k in (*known, *SCALES))}"
                )
    return out


def assign(opt: Optimizer, groups: tuple[Group, ...], paths: list[str],
           params: list[Any]) -> list[int]:
    """The group index of every parameter (-1: none); overlapping groups are an error naming
    the parameter."""
    out = []
    for path, p in zip(paths, params):
        found = -1
        for i, g in enumerate(groups):
            if g.matches(path, p):
                if found >= 0:
                    raise ValueError(
                        f"{type(opt).__name__}: parameter {path or '<root>'!r} belongs to "
                        f"groups[{found}] {groups[found]} and groups[{i}] {g}; groups must not "
                        "overlap: narrow a pattern or add a condition (ndim=..., where=...)"
                    )
                found = i
        out.append(found)
    return out


def overrides(g: Group, base: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameter overrides of group ``g`` given the optimizer's values ``base``."""
    values = {k: v for k, v in g.values.items() if k not in SCALES}
    scale = g.values.get("lr_scale")
    if scale is not None:
        lr = values.get("learning_rate", base.get("learning_rate"))
        if lr is not None:
            values["learning_rate"] = lr * scale
    scale = g.values.get("wd_scale")
    if scale is not None:
        values["weight_decay"] = values.get("weight_decay", base.get("weight_decay", 0.0)) * scale
    return values
