"""Copy an ``awloss bench`` output folder into the docs (table + plots), for the Benchmarks page.

    PYTHONPATH=src python -m awloss bench --dataset synthetic --out /tmp/bench/synthetic
    python docs/scripts/bench_to_docs.py /tmp/bench/synthetic "awloss bench --dataset synthetic" [--title ...]

Writes docs/assets/bench/<folder name>/{summary.md, delta_m.png, weights.png, curves.png}; the page lists
every such folder (docs/_tools/gen.py: bench_results).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / "assets" / "bench"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("src", type=Path)
    p.add_argument("command")
    p.add_argument("--title", default=None)
    p.add_argument("--name", default=None, help="folder name under docs/assets/bench (default: src's name)")
    args = p.parse_args()
    out = DEST / (args.name or args.src.name)
    out.mkdir(parents=True, exist_ok=True)
    for png in ("delta_m.png", "weights.png", "curves.png"):
        if (args.src / png).exists():
            shutil.copy(args.src / png, out / png)
    table = (args.src / "table.txt").read_text(encoding="utf-8").rstrip()
    meta = {}
    if (args.src / "results.json").exists():
        meta = json.loads((args.src / "results.json").read_text(encoding="utf-8"))
    cfg, versions = meta.get("config", {}), meta.get("versions", {})
    facts = []
    if cfg:
        facts.append(f"{len(cfg.get('seeds', []))} seeds, {cfg.get('train', {}).get('epochs', '?')} epochs")
        facts.append(f"{cfg.get('threads', '?')} CPU thread(s), load average {cfg.get('load_average', ['?'])[0]:.1f}"
                     if cfg.get("load_average") else "")
    if versions:
        facts.append(f"awloss {versions.get('awloss', '?')}, torch {versions.get('torch', '?').split('+')[0]}")
    title = args.title or args.src.name
    lines = [f"### {title}", "", f"`{args.command}`", ""]
    if any(facts):
        lines += [f"<small>{'; '.join(f for f in facts if f)}.</small>", ""]
    lines += ["```text", table, "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
