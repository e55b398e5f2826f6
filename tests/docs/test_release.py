"""Release hygiene a newcomer sees before any code runs: the files, the links, the version, the docs commands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import awloss

from .test_docs import site  # noqa: F401  (the built site, shared with test_docs.py)

ROOT = Path(__file__).resolve().parents[2]
TEXT_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)|`(\.\.?/[^`\s]+)`")


def test_release_files_exist() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    for name in ("NOTICE", "CHANGELOG.md", "CITATION.cff"):
        assert (ROOT / name).is_file(), name
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{awloss.__version__}]" in changelog
    assert f"version: {awloss.__version__}" in (ROOT / "CITATION.cff").read_text()


def test_pyproject_declares_licence_status_and_python_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    classifiers = project["classifiers"]
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    low = project["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {low}" in classifiers
    assert project["dependencies"] == ["torch>=2.1"], "torch is the only hard dependency"


def test_no_link_or_path_leaves_the_repository() -> None:
    bad = []
    for page in TEXT_PAGES:
        for m in LINK.finditer(page.read_text()):
            target = (m.group(1) or m.group(2)).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):  # http:, https:, mailto: …
                continue
            resolved = (page.parent / target).resolve()
            if ROOT.resolve() not in (resolved, *resolved.parents):
                bad.append(f"{page.relative_to(ROOT)}: {target}")
    assert not bad, f"links or paths outside the repository: {bad}"


def test_no_install_command_names_pypi_awloss() -> None:
    # awloss is not on PyPI: `pip install awloss` (bare, or with extras only) would fail for a newcomer.
    for page in TEXT_PAGES:
        for line in page.read_text().splitlines():
            assert not re.search(r"pip install\s+['\"]?awloss(\[[^\]]*\])?['\"]?(\s|$)", line), f"{page.name}: {line}"


def test_documented_mkdocs_commands_silence_the_material_banner() -> None:
    for page in TEXT_PAGES:
        for line in page.read_text().splitlines():
            for m in re.finditer(r"(\S+\s+)?mkdocs (build|serve)", line):
                assert m.group(1) and "NO_MKDOCS_2_WARNING=1" in m.group(1), f"{page.name}: {line}"


def test_every_page_shows_the_version(site: Path) -> None:  # noqa: F811
    pages = [p for p in site.rglob("*.html") if p.name != "404.html"]
    assert len(pages) > 20
    missing = [str(p.relative_to(site)) for p in pages if f"awloss {awloss.__version__}" not in p.read_text()]
    assert not missing, f"pages without the version: {missing[:5]}"
