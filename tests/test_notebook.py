"""probes/notebooks/probe_gates.ipynb runs top to bottom (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[1] / "probes" / "notebooks" / "probe_gates.ipynb"


def test_probe_gates_notebook_executes():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NB, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NB.parent)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "highest gates at" in outputs and "as expected" in outputs
