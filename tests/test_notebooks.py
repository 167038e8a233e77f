"""Every notebook runs top to bottom on a tiny population; the notebooks over run folders read a real
toy-size demo root made by the pipeline."""

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))

pytestmark = pytest.mark.slow  # subprocesses: each starts Python, torch and Hydra


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch, request):
    monkeypatch.setenv("BIOLAB_NOTEBOOK_PEOPLE", "60")
    if "BIOLAB_ROOT" in path.read_text():  # a notebook over run folders
        monkeypatch.setenv("BIOLAB_ROOT", str(request.getfixturevalue("tiny_root")))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(path)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
