"""The documentation site: it builds with --strict, its code runs, and every method is documented.

- ``mkdocs build --strict`` (a broken link, a missing page or a docstring that does not render fails);
- every ```python block of every page (hand-written and generated) is executed, page by page in one
  namespace, in order; foreign-library snippets use ```py-ref and are not;
- every registered method has a generated page that renders its docstring, and a docstring that follows
  the template: summary, formula, Args, Example, References.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import awloss

from ._pages import DOCS, EXECUTED, ROOT, blocks, gen, pages

PAGES = pages()


def _mkdocs_missing() -> str | None:
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install -e '.[test]' installs it)"
    return None


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    reason = _mkdocs_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", NO_MKDOCS_2_WARNING="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"mkdocs build --strict: {elapsed:.1f} s")
    return out


def test_mkdocs_build_strict(site: Path) -> None:
    for page in ("index.html", "getting-started/index.html", "choosing/index.html", "uncertainty/index.html"):
        assert (site / page).is_file(), page


# ------------------------------------------------------------------ code blocks
def test_pages_have_executed_blocks() -> None:
    executed = sum(b.lang == EXECUTED for text in PAGES.values() for b in blocks(text))
    assert executed > 10, f"only {executed} executed python blocks found in the docs"
    for name in ("getting-started.md", "uncertainty.md", "migrating.md"):
        assert any(b.lang == EXECUTED for b in blocks(PAGES[name])), f"{name} has no executed python block"


def test_no_bare_unexecuted_python() -> None:
    """A Python snippet is either executed (```python) or explicitly a reference (```py-ref)."""
    for page, text in PAGES.items():
        for b in blocks(text):
            assert b.lang not in ("py", "python3", "pycon"), f"{page}:{b.line}: use ```python or ```py-ref"


@pytest.mark.parametrize("page", sorted(p for p, t in PAGES.items() if any(b.lang == EXECUTED for b in blocks(t))))
def test_page_code_runs(page: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": f"__docs__.{page}"}
    ran = 0
    for b in blocks(PAGES[page]):
        if b.lang == EXECUTED:
            exec(compile(b.code, f"docs/{page}:{b.line}", "exec"), namespace)
            ran += 1
    assert ran > 0


def test_included_readme_sections_are_executed_elsewhere() -> None:
    """Pages that include a README section rely on the README tests to execute its examples."""
    tests_text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    for page, text in PAGES.items():
        for heading in re.findall(r"<!--\s*awloss:readme-section\s+(.+?)\s*-->", text):
            body = gen().readme_section(heading)
            if body is None or not any(b.lang == EXECUTED for b in blocks(body)):
                continue
            assert f"## {heading}" in tests_text or f'"{heading}"' in tests_text, (
                f"{page} includes README section {heading!r}, whose examples no test runs"
            )


def test_reference_fences_render_as_titled_python() -> None:
    md = '```py-ref title="LibMTL"\nx = 1\n```\n'
    assert gen().rewrite_reference_fences(md).startswith('```python title="LibMTL (reference, not executed)"')
    assert [b.lang for b in blocks(md)] == ["py-ref"]


# ------------------------------------------------------------------ per-method docs
METHODS = awloss.available()


def test_registry_not_empty() -> None:
    assert {"uw", "awl"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_docstring_follows_template(name: str) -> None:
    cls = awloss.get_class(name)
    doc = cls.__dict__.get("__doc__")
    assert doc and doc.strip(), f"{cls.__name__} has no docstring of its own (is it the first statement?)"
    doc = inspect.cleandoc(doc)
    summary = doc.splitlines()[0]
    assert summary.strip() and len(summary) <= 120, f"{cls.__name__}: first line must be a one-line summary"
    assert ".. math::" in doc or "$$" in doc, f"{cls.__name__}: no formula (.. math:: block)"
    sections = {m.group(1) for m in re.finditer(r"^(\w[\w ]*):\s*$", doc, flags=re.M)}
    for section in ("Args", "References"):
        assert section in sections, f"{cls.__name__}: no {section}: section"
    assert sections & {"Example", "Examples"}, f"{cls.__name__}: no Example: section"
    example = re.split(r"^Examples?:\s*$", doc, flags=re.M)[1]
    assert ">>>" in example, f"{cls.__name__}: the Example has no >>> lines"
    refs = re.split(r"^References:\s*$", doc, flags=re.M)[1].strip()
    assert refs and not re.match(r"^\w[\w ]*:\s*$", refs.splitlines()[0]), f"{cls.__name__}: References is empty"


@pytest.mark.parametrize("name", METHODS)
def test_method_has_page(name: str, site: Path) -> None:
    cls = awloss.get_class(name)
    html = (site / "methods" / name / "index.html").read_text(encoding="utf-8")
    assert f"<h1" in html and cls.__name__ in html
    # the docstring really rendered: its constructor arguments are listed, and the example is there
    params = [p for p in inspect.signature(cls).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for p in params:
        assert p.name in html, f"{name}: argument {p.name!r} missing from its page"
    assert "&gt;&gt;&gt;" in html or "gp\">&gt;&gt;&gt;" in html, f"{name}: example missing from its page"
    assert ".. math::" not in html and ":math:`" not in html, f"{name}: reST left unconverted on its page"
    choosing = (site / "choosing" / "index.html").read_text(encoding="utf-8")
    assert f'href="../methods/{name}/"' in choosing, f"{name}: no row in the method table"


def test_griffe_rst_conversion() -> None:
    spec = importlib.util.spec_from_file_location("awloss_docs_griffe_rst", DOCS / "_tools" / "griffe_rst.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = "Sum.\n\n.. math::\n\n    a = b\n    + c\n\nwhere :math:`a` is :class:`Weighting`, see :meth:`step`."
    out = mod.rst_to_markdown(doc, {"Weighting"})
    assert "$$\na = b\n+ c\n$$" in out
    assert "$a$" in out and "[`Weighting`][awloss.Weighting]" in out and "`step()`" in out
    out = mod.rst_to_markdown("S.\n\nwhere:\n    - x;\n    - y.\n\nArgs:\n    none: no knobs.\n\nExample:\n    >>> 1\n    1")
    assert "where:\n\n- x;\n- y." in out and "**Args:** none (no knobs)." in out and "Examples:" in out
