"""MkDocs hooks: the registry-driven parts of the site, generated at build time.

- ``on_config``: puts ``src/`` on ``sys.path`` (the build documents this checkout) and appends one nav
  section per level listing every registered method;
- ``on_files``: adds a generated page ``methods/<name>.md`` per registered method;
- ``on_page_markdown``: fills the ``<!-- awloss:... -->`` placeholders (``methods-table KIND``,
  ``cost-note``, ``readme-section HEADING``, ``api DOTTED.PATH``; see ``gen.expand_placeholders``) and
  turns ```` ```py-ref ```` fences (foreign-library code, not executed by the tests) into titled
  Python blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for p in (_HERE, _HERE.parents[1] / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# MkDocs restores sys.path after loading a hook, so import this checkout's awloss now (not an installed one).
_SRC = str(_HERE.parents[1] / "src")
for _name in [n for n in sys.modules if n == "awloss" or n.startswith("awloss.")]:
    if not str(getattr(sys.modules[_name], "__file__", "") or "").startswith(_SRC):
        del sys.modules[_name]
import awloss  # noqa: E402, F401
import gen  # noqa: E402
from mkdocs.structure.files import File  # noqa: E402


def on_config(config, **kwargs):
    # The version on every page: in the header (site name) and in the footer.
    config["site_name"] = f"awloss {awloss.__version__}"
    config["copyright"] = f"awloss {awloss.__version__} · Apache-2.0"
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Methods" in entry:
            entry["Methods"] = [e for e in entry["Methods"] if not (isinstance(e, dict) and set(e) & set(gen.KIND_TITLES.values()))]
            entry["Methods"] += gen.nav_sections()
    return config


def on_files(files, config, **kwargs):
    for m in gen.methods():
        files.append(File.generated(config, m.page, content=gen.method_page(m)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    return gen.expand_placeholders(markdown, page.file.src_uri)
