"""Notebooks run top to bottom as opened (no environment set up beyond the small-setting switches) and show
every figure they draw."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# A code cell that draws (pyplot or a figure file shown with IPython's Image) must leave an image in the notebook.
DRAWS = ("plt.subplots", "plt.figure", "Image(filename")


def _images(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def figure_cells_without_images(notebook) -> list[int]:
    """Indices of code cells that draw but produced no PNG output."""
    return [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and any(d in cell.source for d in DRAWS) and not _images(cell)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_and_shows_its_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("VISATTN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("VISATTN_NOTEBOOK_MOCK", "1")
    monkeypatch.setenv("VISATTN_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the notebook finds the repository itself
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert figure_cells_without_images(notebook) == []
    assert sum(_images(cell) for cell in notebook.cells) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_shows_its_figures(path):
    """The notebooks are committed executed (on the real data), so their pictures render on a repository page."""
    notebook = nbformat.read(path, as_version=4)
    assert figure_cells_without_images(notebook) == []
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                assert len(output["data"]["image/png"]) < 400_000, "keep committed figures small"


# An absolute path in a saved output names the machine it ran on (and means nothing to a reader).
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*")


def absolute_paths(notebook) -> list[str]:
    """Absolute file paths printed in the saved outputs (text streams, results, errors)."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts = [output.get("text", ""), output.get("data", {}).get("text/plain", ""), *output.get("traceback", [])]
            found += [m for text in texts for m in ABSOLUTE_PATH.findall("".join(text))]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_prints_no_absolute_path(path):
    """The notebooks work from the repository root, so their outputs name runs/... as a reader's checkout has it."""
    assert absolute_paths(nbformat.read(path, as_version=4)) == []


def test_the_path_check_catches_an_absolute_path():
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(workdir)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="results in /home/me/runs/notebook_se.\n")]
    notebook.cells = [cell, nbformat.v4.new_code_cell("1 / 2")]
    notebook.cells[1].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "0.5 and a/b/c"})]
    assert absolute_paths(notebook) == ["/home/me/runs/notebook_se."]


def test_the_check_catches_a_figure_cell_without_an_image():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("fig, ax = plt.subplots()")]
    assert figure_cells_without_images(notebook) == [0]
