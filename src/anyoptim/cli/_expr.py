"""Safe parsing of schedule expressions such as ``cosine_decay(1e-3, 1000, 1e-5)``.

The text is parsed with :mod:`ast` and only a tiny language is accepted: calls of the five
schedule factories (optionally written ``optim.name`` or ``anyoptim.name``), int and float
literals (with a sign, scientific notation allowed), lists or tuples of those, and keyword
arguments. Nothing is ever evaluated by Python itself.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from typing import Any

from ._common import UsageError

SCHEDULE_NAMES = (
    "cosine_decay",
    "exponential_decay",
    "join_schedules",
    "linear_schedule",
    "step_decay",
)
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
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(node, f"only numbers are allowed as arguments, not {value!r}")
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
            for value in [*args, *kwargs.values()]:
                if not isinstance(value, (int, float)):
                    raise self.fail(node, f"{name}() takes numbers only")
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


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None
