"""Extract the fenced ``python`` blocks of README.md, by section, so tests can execute them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def sections() -> dict[str, list[str]]:
    """``{heading text: [python code blocks in order]}`` for every ``#``-heading of the README."""
    out: dict[str, list[str]] = {}
    current = ""
    in_block, lang, buf = False, "", []
    for line in README.read_text(encoding="utf-8").splitlines():
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and not in_block:
            in_block, lang, buf = True, fence.group(1), []
            continue
        if fence and in_block:
            in_block = False
            if lang == "python":
                out.setdefault(current, []).append("\n".join(buf))
            continue
        if in_block:
            buf.append(line)
            continue
        heading = re.match(r"^#+\s+(.*)$", line)
        if heading:
            current = heading.group(1).strip()
    return out


def bash_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def run_section(heading_prefix: str) -> dict:
    """Execute every python block of the sections whose heading starts with ``heading_prefix``."""
    namespace: dict = {"__name__": "__readme__"}
    found = False
    for heading, blocks in sections().items():
        if heading.startswith(heading_prefix):
            for code in blocks:
                exec(compile(code, f"README.md[{heading}]", "exec"), namespace)
                found = True
    assert found, f"README has no python block under a heading starting with {heading_prefix!r}"
    return namespace
