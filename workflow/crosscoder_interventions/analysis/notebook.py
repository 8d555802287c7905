"""Executing a jupytext notebook with parameters into an .ipynb and a self-contained HTML copy.

Like papermill: the values given are assigned in a new cell right after the cell tagged
`parameters`, so the notebook also runs on its own with its defaults. The kernel is the `python3`
kernel of the running interpreter, so the notebook sees the same packages as the rule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jupytext
import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter


def with_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """The notebook with a cell assigning `parameters` (repr'd literals) after its parameters cell."""
    position = next((index + 1 for index, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])), 0)
    source = "# Injected parameters\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(position, cell)
    return notebook


def execute_notebook(
    source: str | Path, parameters: dict[str, Any], notebook_path: str | Path, html_path: str | Path, *, timeout: int = 1200
) -> None:
    """Run the percent-format notebook `source` in the current directory and write both copies.
    The HTML copy leaves the code out: it is for reading; the .ipynb keeps it."""
    notebook = with_parameters(jupytext.read(source), parameters)
    # The same results give the same bytes: cells numbered, not given random ids, and no execution times.
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index}"
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": os.getcwd()}}
    ).execute()
    nbformat.write(notebook, notebook_path)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(notebook)
    Path(html_path).write_text(body)
