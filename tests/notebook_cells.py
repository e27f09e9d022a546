"""Run the cells of a lesson that carry a given tag, to test the code a lesson writes in view.

A lesson tags the cells that define a technique it writes itself (a loss, a hook, an attack step) with
``technique``; a test runs them in a fresh namespace and compares what they define with the package's
reference, so that a lesson and the package cannot drift apart::

    ns = notebook_cells.run_tagged("03_covid_cxr_classification", "technique")
    assert torch.allclose(ns["grad_cam"](model, x), medlab.explain.grad_cam(model, x))
"""
from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PREAMBLE = "import numpy as np\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nimport medlab\n"


def tagged_sources(notebook: str, tag: str = "technique") -> list[str]:
    """The sources of the cells of ``notebook`` (a file stem) tagged ``tag``, in order."""
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def run_tagged(notebook: str, tag: str = "technique", namespace: dict | None = None) -> dict:
    """Execute the tagged cells of ``notebook`` after a standard preamble; return their namespace."""
    sources = tagged_sources(notebook, tag)
    assert sources, f"{notebook} has no cell tagged {tag!r}"
    ns = dict(namespace or {})
    exec(compile(PREAMBLE, "<preamble>", "exec"), ns)
    for i, source in enumerate(sources):
        exec(compile(source, f"<{notebook} {tag} cell {i}>", "exec"), ns)
    return ns
