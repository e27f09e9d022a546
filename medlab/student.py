"""Student copies of the lessons: every exercise's solution replaced by a stub.

The notebooks in ``notebooks/`` are the solutions; each exercise's answer
sits between two marker lines, nbgrader's syntax with the exercise's key::

    def soft_dice_loss(logits, target):
        ### BEGIN SOLUTION 02.1
        ...
        ### END SOLUTION

:func:`write_student_copies` (``medlab student --out DIR``) writes copies in
which those lines become::

    def soft_dice_loss(logits, target):
        # YOUR CODE HERE (exercise 02.1)
        raise NotImplementedError("exercise 02.1: write your answer here, then run this cell")

with outputs cleared. Plain markers need no grading server, so the copies
work in Colab, Binder and any JupyterLab; the check that follows each exercise
(:mod:`medlab.checks`) stops the notebook at the first stub, naming it.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import NotebookError

__all__ = ["BEGIN", "END", "strip_solutions", "make_student_copy", "write_student_copies"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION[ \t]+(?P<key>\d+\.\d+)[ \t]*$")


def strip_solutions(source: str, where: str = "cell") -> tuple[str, list[str]]:
    """``source`` with every marked solution replaced by a stub; also the exercise keys found.

    Raises:
        NotebookError: a marker without its partner, a nested marker, or a
            begin marker without an exercise key (``### BEGIN SOLUTION 02.1``).
    """
    out, keys, inside = [], [], None
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            match = _BEGIN.match(line.rstrip("\n"))
            if inside is not None:
                raise NotebookError(f"{where}, line {number}: {BEGIN} inside the solution of exercise {inside}")
            if match is None:
                raise NotebookError(f"{where}, line {number}: write the exercise's key after the marker, "
                                    f"e.g. '{BEGIN} 02.1'")
            inside, indent = match["key"], match["indent"]
            keys.append(inside)
            out.append(f"{indent}# YOUR CODE HERE (exercise {inside})\n")
            out.append(f'{indent}raise NotImplementedError("exercise {inside}: write your answer here, '
                       f'then run this cell")\n')
        elif stripped.startswith(END):
            if inside is None:
                raise NotebookError(f"{where}, line {number}: {END} without a {BEGIN} before it")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise NotebookError(f"{where}: the solution of exercise {inside} has no {END}")
    return "".join(out), keys


def make_student_copy(source, destination) -> list[str]:
    """Write the student copy of the notebook ``source`` to ``destination``; return its exercise keys."""
    import nbformat

    source, destination = Path(source), Path(destination)
    notebook = nbformat.read(source, as_version=4)
    keys = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        cell.source, found = strip_solutions(cell.source, where=f"{source.name}, cell {index}")
        keys += found
        cell.outputs, cell.execution_count = [], None
    notebook.metadata["medlab"] = {"student_copy": True, "exercises": keys}
    destination.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, destination)
    return keys


def write_student_copies(folder="notebooks", out="students", names=None) -> dict[str, list[str]]:
    """Student copies of the lessons in ``folder`` (all, or those ``names`` start with), written to ``out``.

    The lessons' ``expectations.json`` is copied too, so that ``medlab run
    --notebooks DIR`` runs a student copy. Returns ``{notebook file: exercise keys}``.

    Raises:
        NotebookError: ``folder`` has no notebooks, a name matches none, or a
            marker is malformed; ``out`` is ``folder`` itself.
    """
    folder, out = Path(folder), Path(out)
    if out.resolve() == folder.resolve():
        raise NotebookError(f"the student copies would overwrite the solutions in {folder}; choose another --out")
    lessons = sorted(folder.glob("*.ipynb"))
    if not lessons:
        raise NotebookError(f"no notebooks in {folder}")
    if names:
        chosen = [p for p in lessons if any(p.stem.startswith(str(n)) for n in names)]
        missing = [n for n in names if not any(p.stem.startswith(str(n)) for p in lessons)]
        if missing:
            raise NotebookError(f"no notebook matches {missing}; the notebooks are {[p.stem for p in lessons]}")
        lessons = chosen
    written = {p.name: make_student_copy(p, out / p.name) for p in lessons}
    expectations = folder / "expectations.json"
    if expectations.exists():
        (out / expectations.name).write_text(expectations.read_text())
    return written
