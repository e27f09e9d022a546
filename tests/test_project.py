"""medlab/project.py is the one place that names the repository and release; the lessons follow it.

``test_every_lesson_matches_project`` fails when a lesson's Colab or Binder badge or the install
line of its set-up cell differs from ``medlab.project`` (fix: ``medlab sync-notebooks``).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import medlab
from medlab import cli, project

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_constants():
    assert re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+", project.REPOSITORY)
    assert project.RELEASE_TAG == f"v{medlab.__version__}"
    assert project.install_requirement() == f"medlab @ git+https://github.com/{project.REPOSITORY}@{project.RELEASE_TAG}"
    colab, binder = project.badges("01_x.ipynb")
    assert f"/github/{project.REPOSITORY}/blob/{project.RELEASE_TAG}/notebooks/01_x.ipynb" in colab
    assert f"/v2/gh/{project.REPOSITORY}/{project.RELEASE_TAG}?urlpath=lab/tree/notebooks/01_x.ipynb" in binder


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_matches_project(path):
    result = project.sync_notebook(path, check=True)
    assert not result.problems, f"{path.name}: {result.problems}"
    assert not result.changed, (f"{path.name}: {', '.join(result.changed)} differ from medlab/project.py "
                                f"({project.REPOSITORY} @ {project.RELEASE_TAG}); run: medlab sync-notebooks")


def test_readme_names_the_same_requirement_and_release():
    readme = NOTEBOOKS.parent / "README.md"
    assert not project.sync_readme(readme, check=True), "run: medlab sync-notebooks"
    assert project.install_requirement() in readme.read_text()


def _setup_cell(path):
    cells = json.loads(path.read_text())["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "find_spec" in "".join(c["source"]))


def test_sync_rewrites_only_badges_and_install_lines(tmp_path):
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    before = {p.name: json.loads(p.read_text()) for p in folder.glob("*.ipynb")}
    assert cli.main(["sync-notebooks", "--notebooks", str(folder), "--check"]) in (0, 1)
    assert cli.main(["sync-notebooks", "--notebooks", str(folder)]) == 0
    assert cli.main(["sync-notebooks", "--notebooks", str(folder), "--check"]) == 0   # idempotent
    for path in sorted(folder.glob("*.ipynb")):
        after = json.loads(path.read_text())
        cell = _setup_cell(path)
        assert cell.startswith(project.setup_block()) or ("\n" + project.setup_block()) in cell
        assert project.install_requirement() in cell and cell.count("%pip install") == 1
        old_cells, new_cells = before[path.name]["cells"], after["cells"]
        assert len(old_cells) == len(new_cells)
        for old, new in zip(old_cells, new_cells):
            if old == new:
                continue
            old_lines, new_lines = "".join(old["source"]).splitlines(), "".join(new["source"]).splitlines()
            removed = [line for line in old_lines if line not in new_lines]
            assert all("colab" in line.lower() or "binder" in line.lower() or "pip install" in line
                       or line.startswith("# Set-up") or line.startswith("# ") for line in removed), removed
            assert {k: v for k, v in old.items() if k != "source"} == {k: v for k, v in new.items() if k != "source"}
        assert {k: v for k, v in before[path.name].items() if k != "cells"} == {k: v for k, v in after.items()
                                                                              if k != "cells"}


def test_sync_names_a_notebook_without_a_setup_cell(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "99_bare.ipynb").write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {},
                                                                 "source": ["# bare\n"]}],
                                                      "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    [result] = project.sync_notebooks(folder, check=True)
    assert any("set-up cell" in p for p in result.problems) and any("Colab badge" in p for p in result.problems)
    assert cli.main(["sync-notebooks", "--notebooks", str(folder)]) == 1
