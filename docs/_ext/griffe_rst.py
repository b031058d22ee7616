"""Griffe extension: read anyoptim's Google-style docstrings with their few reST habits.

The docstrings follow optax's conventions (``.. math::`` blocks, ``:math:`` and ``:func:``
roles) and say ``Example:``. MkDocs renders Markdown, so before mkdocstrings parses a
docstring this extension rewrites:

* ``.. math::`` blocks into ``$$ ... $$`` blocks for ``pymdownx.arithmatex`` (multi-line
  blocks with ``&`` or ``\\`` are wrapped in an ``aligned`` environment, as Sphinx does);
* ``:math:`x``` into ``\\(x\\)``;
* ``:func:`x```, ``:class:`x``` and the other Python roles into inline code;
* an ``Example:`` section title into ``Examples:``, so the doctest lines are shown as code;
* ``#:`` comments above an attribute (Sphinx's attribute-doc convention) into its docstring.

The source files are not changed; only the text mkdocstrings renders.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        pad = " " * base
        i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            body.append(lines[i])
            i += 1
        content = [b.strip() for b in body if b.strip()]
        aligned = len(content) > 1 or any("&" in c or "\\\\" in c for c in content)
        out.append("")
        out.append(pad + "$$")
        if aligned:
            out.append(pad + r"\begin{aligned}")
        out.extend(pad + c for c in content)
        if aligned:
            out.append(pad + r"\end{aligned}")
        out.append(pad + "$$")
        out.append("")
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST constructs turned into Markdown."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: r"\(" + m.group(1) + r"\)", text)
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _EXAMPLE.sub(r"\1Examples:", text)


def _comment_doc(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above an attribute, if any."""
    if obj.lineno is None or obj.filepath is None or isinstance(obj.filepath, list):
        return None
    try:
        lines = obj.filepath.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    found: list[str] = []
    i = obj.lineno - 2
    while i >= 0 and lines[i].strip().startswith("#:"):
        found.append(lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(reversed(found)) or None


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring once, when its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute:
            text = _comment_doc(obj)
            if text is not None:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
