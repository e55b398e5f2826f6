"""Griffe extension: turn the reST bits of awloss's Google-style docstrings into Markdown for mkdocstrings.

The docstrings are written for ``help()`` and Sphinx-style readers (``.. math::`` blocks, ``:math:`` and
``:class:`` roles). mkdocstrings renders docstrings as Markdown, so before parsing we rewrite:

- ``.. math::`` + indented block  ->  ``$$ ... $$`` (rendered by arithmatex + KaTeX);
- ``:math:`x```                    ->  ``$x$``;
- ``:class:`X```, ``:func:`X```    ->  a cross-reference when ``X`` is public in awloss, else code;
- ``:attr:`x```, ``:meth:`x```     ->  code (``x`` / ``x()``);
- ``Example:``                     ->  ``Examples:`` (griffe renders only the plural as highlighted code);
- ``References:`` lines            ->  a bulleted list, one item per reference (a new item starts after a
  line that ends with a period);
- ``where:`` + an indented list     ->  the list, dedented, after a blank line (else Markdown glues it
  to the paragraph);
- ``Args:`` whose only entry is ``none: ...`` (a method without hyper-parameters) -> a sentence, so griffe
  does not warn about a parameter ``none`` that is not in the signature.

Only the docstring text changes; the source files are untouched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(math|class|func|meth|attr|obj|mod|data|exc):`([^`]+)`")


def rst_to_markdown(text: str, public: set[str] | frozenset[str] = frozenset(), package: str = "awloss") -> str:
    """Rewrite reST math blocks and roles of one docstring into Markdown (pure function, tested)."""
    lines = _no_args(_where_lists(_references(text.splitlines())))
    lines = [re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", line) for line in lines]
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if not m:
            out.append(_roles(line, public, package))
            i += 1
            continue
        indent = len(m.group(1))
        body = [m.group(2)] if m.group(2).strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        while body and not body[0]:
            body.pop(0)
        pad = " " * indent
        out += [pad + "$$", *(pad + b for b in body if b), pad + "$$", ""]
    return "\n".join(out)


def _references(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        m = re.match(r"^(\s*)References:\s*$", lines[i])
        i += 1
        if not m:
            continue
        base = len(m.group(1))
        items: list[list[str]] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base):
            text = lines[i].strip()
            if text:
                if not items or (items[-1] and items[-1][-1].endswith(".")):
                    items.append([])
                items[-1].append(text)
            i += 1
        pad = " " * (base + 4)
        out += [pad + "- " + " ".join(item) for item in items] + [""]
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _where_lists(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        base = _indent(lines[i])
        i += 1
        if not re.match(r"^\s*where:\s*$", out[-1], flags=re.I):
            continue
        block = []
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > base:
            block.append(lines[i])
            i += 1
        if block:
            cut = min(_indent(b) for b in block) - base
            out += [""] + [b[cut:] for b in block]
    return out


def _no_args(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)Args:\s*$", line)
        if not m or i + 1 >= len(lines):
            continue
        entry = re.match(r"^\s*none:\s*(.*)$", lines[i + 1], flags=re.I)
        following = lines[i + 2] if i + 2 < len(lines) else ""
        if entry and (not following.strip() or _indent(following) <= len(m.group(1))):
            text = entry.group(1).rstrip(".") or "none"
            return [*lines[:i], f"{m.group(1)}**Args:** none ({text}).", *lines[i + 2:]]
    return lines


def _roles(line: str, public: set[str] | frozenset[str], package: str) -> str:
    def repl(m: re.Match[str]) -> str:
        role, target = m.group(1), m.group(2)
        if role == "math":
            return f"${target}$"
        shown = target.lstrip("~").split(".")[-1] if target.startswith("~") else target
        name = target.lstrip("~")
        short = name.removeprefix(package + ".")
        if role in ("class", "func", "exc", "obj") and short in public:
            return f"[`{shown}`][{package}.{short}]"
        if role == "meth":
            return f"`{shown}()`"
        return f"`{shown}`"

    return _ROLE.sub(repl, line)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded package once it is fully loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        public = {name for name in pkg.members if not name.startswith("_")}
        seen: set[int] = set()

        def visit(obj: Any) -> None:
            if id(obj) in seen or obj.is_alias:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, public, pkg.name)
            for member in obj.members.values():
                visit(member)

        visit(pkg)
