"""Safe parsing of schedule expressions such as ``cosine_decay(1e-3, 1000, 1e-5)``.

The text is parsed with :mod:`ast` and only a tiny language is accepted: calls of the
schedule factories (optionally written ``optim.name`` or ``anyoptim.name``), int and float
literals (with a sign, scientific notation allowed), lists or tuples of those, and keyword
arguments; ``True``/``False`` and option strings (``decay_type="cosine"``) only for the
arguments that take them. Nothing is ever evaluated by Python itself.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from typing import Any

from ._common import UsageError

# MLX's five first, then the further schedules of anyoptim
SCHEDULE_NAMES = (
    "cosine_decay",
    "exponential_decay",
    "join_schedules",
    "linear_schedule",
    "step_decay",
    "constant_warmup",
    "cosine_restarts",
    "inverse_sqrt",
    "one_cycle",
    "piecewise_constant",
    "piecewise_linear",
    "polynomial_decay",
    "warmup_cosine_decay",
    "warmup_stable_decay",
)
_MAX_STRING = 20
_PREFIXES = ("optim", "anyoptim", "optimizers", "anyoptim.schedulers")

_MAX_LENGTH = 2000
_MAX_DEPTH = 20


class ExpressionError(UsageError):
    """A schedule expression that cannot be used; the message points at the column."""

    def __init__(self, text: str, column: int | None, problem: str) -> None:
        lines = [f"invalid schedule expression: {problem}"]
        if column is not None and "\n" not in text:
            column = max(0, min(column, len(text)))
            lines.append(f"  {text}")
            lines.append(f"  {' ' * column}^ (column {column + 1})")
        lines.append(f"valid schedules: {', '.join(SCHEDULE_NAMES)}")
        lines.append(
            'example: "join_schedules([linear_schedule(0, 1e-3, 100), cosine_decay(1e-3, 900)], [100])"'
        )
        super().__init__("\n".join(lines))
        self.column = column


def parse_schedule(text: str) -> Any:
    """Build the schedule described by ``text``; raise :class:`ExpressionError` if it is not valid."""
    import anyoptim

    if len(text) > _MAX_LENGTH:
        raise ExpressionError(text, None, f"the expression is longer than {_MAX_LENGTH} characters")
    stripped = text.strip()
    offset = len(text) - len(text.lstrip())
    if not stripped:
        raise ExpressionError(text, 0, "the expression is empty")
    try:
        tree = ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        col = (exc.offset or 1) - 1 + offset
        raise ExpressionError(text, col, f"Python syntax error ({exc.msg})") from None
    body = tree.body
    if not isinstance(body, ast.Call):
        raise ExpressionError(
            text, body.col_offset + offset, "the expression must be a call of a schedule factory"
        )
    builder = _Builder(text, offset, anyoptim)
    return builder.value(body, 0)


class _Builder:
    def __init__(self, text: str, offset: int, module: Any) -> None:
        self.text = text
        self.offset = offset
        self.module = module

    def fail(self, node: ast.AST, problem: str) -> ExpressionError:
        return ExpressionError(self.text, getattr(node, "col_offset", 0) + self.offset, problem)

    def value(self, node: ast.AST, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail(node, "the expression is nested too deeply")
        if isinstance(node, ast.Constant):
            value = node.value
            # booleans and strings are checked against the parameter they are given to
            if isinstance(value, str) and len(value) <= _MAX_STRING:
                return _Text(value, node)
            if isinstance(value, bool):
                return _Flag(value, node)
            if not isinstance(value, (int, float)):
                raise self.fail(node, f"only numbers are allowed as arguments, not {value!r:.40}")
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = node.operand
            if (
                isinstance(operand, ast.Constant)
                and not isinstance(operand.value, bool)
                and isinstance(operand.value, (int, float))
            ):
                return -operand.value if isinstance(node.op, ast.USub) else operand.value
            raise self.fail(node, "a sign may only precede a number")
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(elt, depth + 1) for elt in node.elts]
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Name):
            raise self.fail(
                node,
                f"{node.id!r} is not a number; names can only be used as schedule calls, "
                f"e.g. {node.id}(...)"
                if node.id in SCHEDULE_NAMES
                else f"unknown name {node.id!r}",
            )
        kind = type(node).__name__
        raise self.fail(
            node, f"{kind} is not allowed; use numbers, lists and calls of schedule factories"
        )

    def call(self, node: ast.Call, depth: int) -> Any:
        name = self.func_name(node.func)
        factory = getattr(self.module, name)
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(arg, "*arguments are not allowed")
            args.append(self.value(arg, depth + 1))
        kwargs: dict[str, Any] = {}
        signature = inspect.signature(factory)
        for kw in node.keywords:
            if kw.arg is None:
                raise self.fail(kw.value, "**arguments are not allowed")
            if kw.arg not in signature.parameters:
                valid = ", ".join(signature.parameters)
                raise ExpressionError(
                    self.text,
                    kw.value.col_offset + self.offset - len(kw.arg) - 1,
                    f"{name}() has no argument {kw.arg!r}; its arguments are: {valid}",
                )
            kwargs[kw.arg] = self.value(kw.value, depth + 1)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            shown = ", ".join(
                f"{p.name}={p.default!r}" if p.default is not p.empty else p.name
                for p in signature.parameters.values()
            )
            raise self.fail(node, f"{exc} (usage: {name}({shown}))") from None
        if name == "join_schedules":
            schedules = args[0] if args else kwargs.get("schedules")
            if not isinstance(schedules, list) or not all(callable(s) for s in schedules):
                raise self.fail(
                    node, "join_schedules expects a list of schedules as first argument"
                )
            bounds = args[1] if len(args) > 1 else kwargs.get("boundaries")
            if not isinstance(bounds, list) or not all(isinstance(b, int) for b in bounds):
                raise self.fail(
                    node, "join_schedules expects a list of whole step numbers as boundaries"
                )
        else:
            bound = signature.bind(*args, **kwargs)
            # the same binding of the argument nodes, to point at the one that is wrong
            where = signature.bind(*node.args, **{str(kw.arg): kw.value for kw in node.keywords})
            for param, value in bound.arguments.items():
                kind = _kind(signature.parameters[param].annotation)
                if (kind == "bool" and isinstance(value, _Flag)) or (
                    kind == "str" and isinstance(value, _Text)
                ):
                    bound.arguments[param] = value.value
                elif not (
                    (kind == "list" and isinstance(value, list) and all(map(_is_number, value)))
                    or (kind == "number" and _is_number(value))
                ):
                    raise self.fail(
                        where.arguments[param],
                        f"{name}() argument {param!r} takes {_KIND_TEXT[kind]}, "
                        f"not {_shown(value)}",
                    )
            args, kwargs = list(bound.args), dict(bound.kwargs)
        try:
            return factory(*args, **kwargs)
        except (ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
            raise self.fail(node, f"{name}(...) rejected its arguments: {exc}") from None

    def func_name(self, func: ast.AST) -> str:
        if isinstance(func, ast.Name):
            name = func.id
        elif isinstance(func, ast.Attribute) and _dotted(func.value) in _PREFIXES:
            name = func.attr
        else:
            raise self.fail(func, "only schedule factories can be called")
        if name not in SCHEDULE_NAMES:
            close = difflib.get_close_matches(name, SCHEDULE_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.fail(func, f"unknown schedule {name!r}{hint}")
        return name


class _Text:
    """A string literal, allowed only for an option argument (e.g. ``decay_type``)."""

    def __init__(self, value: str, node: ast.AST) -> None:
        self.value, self.node = value, node


class _Flag:
    """``True`` or ``False``, allowed only for a boolean argument (e.g. ``three_phase``)."""

    def __init__(self, value: bool, node: ast.AST) -> None:
        self.value, self.node = value, node


_KIND_TEXT = {
    "bool": "True or False",
    "str": "an option string",
    "list": "a list of numbers",
    "number": "a number",
}


def _kind(annotation: Any) -> str:
    """What a factory parameter accepts, read from its annotation (a string here)."""
    text = str(annotation)
    if text == "bool":
        return "bool"
    if text == "str":
        return "str"
    if text.startswith(("Sequence", "list")):
        return "list"
    return "number"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    if isinstance(value, (_Text, _Flag)):
        return repr(value.value)
    if isinstance(value, list):
        return "a list" if not all(map(_is_number, value)) else repr(value)
    return repr(value)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None
