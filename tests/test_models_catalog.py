"""docs/MODELS.md's architecture x hooks table is what the code provides (engram_interp.backends.catalog)."""

from __future__ import annotations

import re
from pathlib import Path

from engram_interp.backends.catalog import FAMILIES, ROWS, table

ROOT = Path(__file__).resolve().parents[1]


def test_the_models_page_holds_the_generated_table():
    page = (ROOT / "docs" / "MODELS.md").read_text()
    m = re.search(r"<!-- catalog:start -->\n(.*?)\n<!-- catalog:end -->", page, re.S)
    assert m, "docs/MODELS.md lacks the catalog markers"
    generated = table()
    assert m.group(1).strip() == generated.strip(), "regenerate with: python -m engram_interp.backends.catalog"
    assert len(generated.splitlines()) == len(ROWS) + 2 and all(label in generated for label, _ in FAMILIES)


def test_every_supported_architecture_is_in_the_catalog():
    from engram_interp.backends.files import SUPPORTED

    assert set(SUPPORTED) <= {arch for arch, _, _ in ROWS}
