"""Find the docs pages and their fenced code blocks (shared by the docs tests)."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXECUTED = "python"  # ```python blocks run; ```py-ref (foreign-library reference) and others do not

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<lang>[\w-]*)(?P<rest>.*)$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of a page (indented ones too, e.g. inside tabs), dedented."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.group("indent"), m.group("ticks"), m.group("lang")
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{ticks}\s*$", lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        out.append(Block(lang, "\n".join(body), i + 1))
        i = j + 1
    return out


def gen():
    """The docs generator module (docs/_tools/gen.py), imported from its path."""
    if "awloss_docs_gen" not in sys.modules:
        spec = importlib.util.spec_from_file_location("awloss_docs_gen", DOCS / "_tools" / "gen.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["awloss_docs_gen"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["awloss_docs_gen"]


def pages() -> dict[str, str]:
    """``{page path: markdown}`` for every hand-written page and every generated method page."""
    out = {
        str(p.relative_to(DOCS)): p.read_text(encoding="utf-8")
        for p in sorted(DOCS.rglob("*.md"))
        if not any(part.startswith("_") or part in ("scripts", "assets") for part in p.relative_to(DOCS).parts)
    }
    g = gen()
    for m in g.methods():
        out[m.page] = g.method_page(m)
    return out
