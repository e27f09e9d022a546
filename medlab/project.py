"""Where medlab is published, and the parts of every lesson that name it: badges and the set-up cell.

The repository address is written in one place, :data:`REPOSITORY` below; the release the
lessons install is :data:`RELEASE_TAG` (``v`` + the package version). To publish your own copy:

1. change the ``REPOSITORY = ...`` line below to your GitHub ``account/name``;
2. run ``medlab sync-notebooks`` (it rewrites every lesson's Colab and Binder badges and the
   install line of its set-up cell from these constants; ``--check`` only reports);
3. tag the commit ``v<version>`` and push the tag, so that the set-up cell's pinned install resolves.

``tests/test_project.py`` fails when a lesson's badges or set-up cell differ from what these
constants give, so the notebooks cannot drift from the one place.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import NotebookError

__all__ = [
    "REPOSITORY", "RELEASE_TAG", "repository_url", "install_requirement", "setup_block", "colab_url",
    "binder_url", "badges", "sync_notebook", "sync_notebooks", "sync_readme", "SyncResult",
]

#: The GitHub ``account/name`` that publishes the lessons: the one line to change for your copy.
REPOSITORY = "OWNER/medlab"

#: The release the lessons' set-up cell installs and their badges open (a git tag of REPOSITORY).
RELEASE_TAG = f"v{__version__}"

_SETUP_MARKER = 'importlib.util.find_spec("medlab")'
_BADGE_COLAB = re.compile(r"^\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)\s*$")
_BADGE_BINDER = re.compile(r"^\[!\[Binder\]\([^)]*\)\]\([^)]*\)\s*$")


def repository_url(repository: str = REPOSITORY) -> str:
    """``https://github.com/<account>/<name>``."""
    return f"https://github.com/{repository}"


def install_requirement(repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> str:
    """The pip requirement the set-up cell installs: medlab at the release tag, core dependencies only.

    No extras: the core layer leaves a host's kernel, torch and numpy alone (see pyproject.toml).
    """
    return f"medlab @ git+{repository_url(repository)}@{tag}"


def setup_block(repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> str:
    """The first lines of every lesson's set-up cell, up to and including ``import medlab``."""
    return (
        f"# Set-up. In Colab (or any kernel without medlab) this installs medlab {tag} with pip: the package\n"
        "# and its light dependencies (pydicom, nibabel, ...); Colab's torch, numpy and Jupyter stay as they are.\n"
        "import importlib.util\n"
        f"if {_SETUP_MARKER} is None:\n"
        f'    %pip install -q "{install_requirement(repository, tag)}"\n'
        "import medlab\n")


def colab_url(notebook: str, repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> str:
    """Open ``notebooks/<notebook>`` of the release in Colab."""
    return f"https://colab.research.google.com/github/{repository}/blob/{tag}/notebooks/{notebook}"


def binder_url(notebook: str, repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> str:
    """Build the release on mybinder.org and open ``notebooks/<notebook>`` in JupyterLab."""
    return f"https://mybinder.org/v2/gh/{repository}/{tag}?urlpath=lab/tree/notebooks/{notebook}"


def badges(notebook: str, repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> tuple[str, str]:
    """The Colab and Binder badge lines (Markdown) of a lesson."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook, repository, tag)})",
            f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url(notebook, repository, tag)})")


@dataclass
class SyncResult:
    """What :func:`sync_notebook` found in (or changed in) one notebook."""

    notebook: str
    changed: list = field(default_factory=list)  # what differed: "set-up cell", "Colab badge", ...
    problems: list = field(default_factory=list)  # what could not be fixed automatically


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _set_source(cell, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def _sync_setup_cell(cells, block: str) -> tuple[bool, str | None]:
    """Replace the install lines of the set-up cell; returns (changed, problem)."""
    setup = [c for c in cells if c.get("cell_type") == "code" and _SETUP_MARKER in _source(c)]
    if not setup:
        return False, f"no set-up cell (a code cell with {_SETUP_MARKER})"
    cell = setup[0]
    lines = _source(cell).splitlines(keepends=True)
    marker = next(i for i, line in enumerate(lines) if _SETUP_MARKER in line)
    try:
        end = next(i for i in range(marker, len(lines)) if lines[i].strip() == "import medlab")
    except StopIteration:
        return False, "the set-up cell has no 'import medlab' line after the install"
    start = marker
    while start > 0 and (lines[start - 1].lstrip().startswith("#") or
                         lines[start - 1].strip() == "import importlib.util"):
        start -= 1
    if not lines[end].endswith("\n") and end + 1 < len(lines):
        lines[end] += "\n"
    tail = lines[end + 1:]
    new = "".join(lines[:start]) + block + "".join(tail)
    if not tail:
        new = new.rstrip("\n")
    if new == _source(cell):
        return False, None
    _set_source(cell, new)
    return True, None


def _sync_badges(cells, name: str, repository: str, tag: str) -> tuple[list, list]:
    colab, binder = badges(name, repository, tag)
    changed, problems = [], []
    for label, pattern, wanted in (("Colab badge", _BADGE_COLAB, colab), ("Binder badge", _BADGE_BINDER, binder)):
        found = False
        for cell in cells:
            if cell.get("cell_type") != "markdown":
                continue
            lines = _source(cell).splitlines(keepends=True)
            hit = False
            for i, line in enumerate(lines):
                if pattern.match(line.rstrip("\n")):
                    found = hit = True
                    ending = "\n" if line.endswith("\n") else ""
                    if line.rstrip("\n") != wanted:
                        lines[i] = wanted + ending
                        changed.append(label)
            if hit:
                _set_source(cell, "".join(lines))
        if not found:
            problems.append(f"no {label} line (add {wanted!r} under the title)")
    return changed, problems


def sync_notebook(path, check: bool = False, repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> SyncResult:
    """Make one notebook's badges and set-up cell match :data:`REPOSITORY` and :data:`RELEASE_TAG`.

    With ``check=True`` nothing is written; the result says what differs. Only the badge
    lines and the install lines of the set-up cell change; the file is otherwise written back
    as it was read (JSON with one-space indent, as Jupyter saves it).
    """
    path = Path(path)
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise NotebookError(f"cannot read notebook {path}: {err}") from err
    cells = notebook.get("cells", [])
    result = SyncResult(path.name)
    changed, problem = _sync_setup_cell(cells, setup_block(repository, tag))
    if changed:
        result.changed.append("set-up cell")
    if problem:
        result.problems.append(problem)
    badge_changes, badge_problems = _sync_badges(cells, path.name, repository, tag)
    result.changed += badge_changes
    result.problems += badge_problems
    if result.changed and not check:
        path.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


_README_REQUIREMENT = re.compile(r"medlab @ git\+https://github\.com/[^\s\"'`@]+@[^\s\"'`]+")
_README_TAG = re.compile(r"release `v\d+\.\d+\.\d+[^`]*`")


def sync_readme(path, check: bool = False, repository: str = REPOSITORY, tag: str = RELEASE_TAG) -> bool:
    """Make the README's set-up requirement and release name match; returns whether it differed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = _README_REQUIREMENT.sub(install_requirement(repository, tag), text)
    new = _README_TAG.sub(f"release `{tag}`", new)
    if new != text and not check:
        path.write_text(new, encoding="utf-8")
    return new != text


def sync_notebooks(folder=None, check: bool = False, repository: str = REPOSITORY,
                   tag: str = RELEASE_TAG) -> list[SyncResult]:
    """:func:`sync_notebook` for every lesson in ``folder`` (see :func:`medlab.runner.notebook_dir`)."""
    from .runner import discover

    return [sync_notebook(p, check, repository, tag) for p in discover(folder)]
