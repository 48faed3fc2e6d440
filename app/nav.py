"""The app's pages as the sidebar lists them (read from ``app/pages``: ``11_Routing.py`` -> ``Routing``,
in their number order), for the Overview's list of pages. Imports nothing heavy, so the Overview can
draw its text before torch and the models load."""

from __future__ import annotations

from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent / "pages"


def page_names(folder: Path = PAGES_DIR) -> list[str]:
    """Every page's title in sidebar order: the file name without its number prefix and ``.py``
    (underscores read as spaces)."""
    files = [p for p in folder.glob("*.py") if p.stem.split("_", 1)[0].isdigit() and "_" in p.stem]
    files.sort(key=lambda p: int(p.stem.split("_", 1)[0]))
    return [p.stem.split("_", 1)[1].replace("_", " ") for p in files]
