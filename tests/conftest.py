"""Shared test fixtures."""
from __future__ import annotations

import os

import nbformat
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def write_notebook(path, parameters: str, *cells: str):
    """Write a notebook with a ``parameters``-tagged cell and plain code cells after it."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def notebook_factory(tmp_path):
    """Make small notebooks in a temporary lessons folder: ``factory(name, parameters, *cells)``."""
    folder = tmp_path / "notebooks"
    folder.mkdir()

    def factory(name, parameters, *cells):
        return write_notebook(folder / f"{name}.ipynb", parameters, *cells)

    factory.folder = folder
    return factory


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: one torch thread is fastest and leaves the other core to the notebook kernels."""
    import torch

    torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter):
    """Say loudly, at the very end, which checks did not run here and how to make them run."""
    import sys

    loud = []
    browser = sys.modules.get("browser_support")
    if browser is not None and browser.SKIPPED_BROWSER_TESTS:
        loud.append(f"{len(browser.SKIPPED_BROWSER_TESTS)} browser test(s): "
                    f"{browser.SKIPPED_BROWSER_TESTS[0]}")
    registry = sys.modules.get("registry_support")
    if registry is not None and registry.SKIPPED:
        loud.append(f"{len(registry.SKIPPED)} install test(s): {registry.SKIPPED[0]}")
    if loud:
        terminalreporter.write_sep("!", "NOT TESTED HERE", yellow=True, bold=True)
    for line in loud:
        terminalreporter.write_line(line, yellow=True, bold=True)
