"""Every reference to docs/ENGRAM.md or docs/ANALYSES.md in code, --help texts, the app and docs points
to a file in the repository and, when it names a section, to a heading of that section (issue 9, item 8)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"(?<![\w/])(?:docs/)?(ENGRAM|ANALYSES)\.md(?:,? (?:section|s\.) ?(\d+))?")


def _sources() -> list[Path]:
    out = []
    for pattern in ("engram_interp/**/*.py", "app/**/*.py", "docs/*.md", "checkpoints/**/*.md", "README.md", "benchmarks/*.md"):
        out += [p for p in ROOT.glob(pattern) if p.is_file()]
    return out


def test_every_reference_resolves():
    headings = {}
    for name in ("ENGRAM", "ANALYSES"):
        doc = ROOT / "docs" / f"{name}.md"
        assert doc.is_file(), f"docs/{name}.md is missing"
        headings[name] = {int(m) for m in re.findall(r"^## (\d+)\.", doc.read_text(), re.M)}
    bad, seen = [], 0
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for m in REF.finditer(text):
            seen += 1
            line = text[: m.start()].count("\n") + 1
            if not m.group(0).startswith("docs/") and path.parent != ROOT / "docs":
                bad.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)!r} should say docs/{m.group(1)}.md")
            if m.group(2) and int(m.group(2)) not in headings[m.group(1)]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)!r}: no such section")
    assert seen > 10 and not bad, "\n".join(bad)
