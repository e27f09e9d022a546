"""Student copies (medlab student): solutions out, stubs in, and the runner's view of exercises."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from medlab import checks, cli, runner
from medlab.errors import NotebookError
from medlab.student import make_student_copy, strip_solutions, write_student_copies

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("*.ipynb"))
#: Lessons that teach a technique in view have exercises; 00 (file formats) and 08 (benchmarks) do not.
WITH_EXERCISES = [p for p in LESSONS if p.stem[:2] in {"01", "02", "03", "04", "05", "06", "07"}]
CHECK_CALL = re.compile(r"""medlab\.checks\.check\(\s*["'](\d+\.\d+)["']""")

SOLVED = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION 99.1
    y = x + x
    return y
    ### END SOLUTION
'''


def test_strip_solutions_replaces_the_answer_by_a_stub_that_names_the_exercise():
    source, keys = strip_solutions(SOLVED)
    assert keys == ["99.1"]
    assert "y = x + x" not in source and "return y" not in source and "SOLUTION" not in source
    assert '    raise NotImplementedError("exercise 99.1: write your answer here' in source
    namespace = {}
    exec(source, namespace)  # the stub is valid Python, indented like the answer
    with pytest.raises(NotImplementedError, match="exercise 99.1"):
        namespace["double"](2)


@pytest.mark.parametrize("source, fragment", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "write the exercise's key"),
    ("### BEGIN SOLUTION 1.1\nx = 1\n", "has no ### END SOLUTION"),
    ("x = 1\n### END SOLUTION\n", "without a ### BEGIN SOLUTION"),
    ("### BEGIN SOLUTION 1.1\n### BEGIN SOLUTION 1.2\n### END SOLUTION\n", "inside the solution"),
])
def test_malformed_markers_are_refused(source, fragment):
    with pytest.raises(NotebookError, match=re.escape(fragment)):
        strip_solutions(source)


def test_copies_never_overwrite_the_solutions(tmp_path):
    with pytest.raises(NotebookError, match="overwrite the solutions"):
        write_student_copies(NOTEBOOKS, NOTEBOOKS)


def _solution_lines(cell_source: str) -> list[str]:
    lines, inside = [], False
    for line in cell_source.splitlines():
        if line.strip().startswith("### BEGIN SOLUTION"):
            inside = True
        elif line.strip().startswith("### END SOLUTION"):
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


@pytest.fixture(scope="module")
def student_copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("students")
    assert cli.main(["student", "--notebooks", str(NOTEBOOKS), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_student_copy_has_no_solution_text(student_copies, path):
    solution = nbformat.read(path, as_version=4)
    student = nbformat.read(student_copies / path.name, as_version=4)
    assert len(student.cells) == len(solution.cells)
    for ours, theirs in zip(solution.cells, student.cells):
        if ours.cell_type != "code":
            assert theirs.source == ours.source
            continue
        assert "### BEGIN SOLUTION" not in theirs.source and "### END SOLUTION" not in theirs.source
        other_code = "\n".join(_strip_lines(c.source) for c in solution.cells if c is not ours and c.cell_type == "code")
        for line in _solution_lines(ours.source):
            if line not in other_code:  # a line that also appears elsewhere in the lesson gives nothing away
                assert line not in theirs.source, f"{path.stem}: the student copy still holds {line!r}"
        assert theirs.outputs == []


def _strip_lines(source: str) -> str:
    return "\n".join(line.strip() for line in source.splitlines())


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_lesson_has_at_least_two_checked_exercises(path):
    notebook = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    marked = re.findall(r"### BEGIN SOLUTION (\d+\.\d+)", code)
    checked = CHECK_CALL.findall(code)
    number = path.stem[:2].lstrip("0") or "0"
    assert len(set(marked)) >= 2, f"{path.stem}: at least two exercises, found {marked}"
    assert set(marked) == set(checked), f"{path.stem}: every exercise is checked: marked {marked}, checked {checked}"
    known = checks.exercises()
    for key in marked:
        assert key.split(".")[0].lstrip("0") == number, f"{path.stem}: exercise {key} is numbered for another lesson"
        assert key in known, f"{path.stem}: exercise {key} is not registered in medlab.checks"


def test_a_solution_whose_check_fails_fails_the_run_and_a_student_copy_stops_at_its_stub(notebook_factory, tmp_path):
    params = 'PROFILE = "auto"\nOUTPUT_DIR = "."\n'
    setup = ('import medlab\nfrom medlab import checks\n'
             'ctx = medlab.setup("{name}", profile=PROFILE, device="cpu", output_dir=OUTPUT_DIR, quiet=True)\n'
             'checks.register(checks.Exercise("99.1", "double", lambda x: 2 * x, '
             'lambda seed: [checks.Case("x = 3", (3,)), checks.Case("x = -1", (-1,))], "add x to itself"))\n')
    notebook_factory("01_right", params, setup.format(name="01_right"), SOLVED,
                     'double = medlab.checks.check("99.1", double)\nmedlab.record(answer=double(4))')
    notebook_factory("02_wrong", params, setup.format(name="02_wrong"), SOLVED.replace("x + x", "x * x"),
                     'double = medlab.checks.check("99.1", double)\nmedlab.record(answer=double(4))')
    results = {r.notebook: r for r in runner.run_notebooks(profile="smoke", out=tmp_path / "solutions",
                                                           folder=notebook_factory.folder, timeout=120, jobs=2)}
    assert results["01_right"].status == "passed" and results["01_right"].exercises == {"99.1": "passed"}
    wrong = results["02_wrong"]
    assert wrong.status == "failed" and "exercise check(s) failed: 99.1: failed: on x = 3" in wrong.error
    # the reference took over, so the lesson still ran to the end
    assert json.loads((tmp_path / "solutions" / "02_wrong" / "metrics.json").read_text())["metrics"] == {"answer": 8}

    copies = tmp_path / "students"
    assert make_student_copy(notebook_factory.folder / "01_right.ipynb", copies / "01_right.ipynb") == ["99.1"]
    [student] = runner.run_notebooks(profile="smoke", out=tmp_path / "student-run", folder=copies, timeout=120)
    assert student.status == "failed"
    assert "exercise 99.1" in student.error and "not done yet" in student.error


#: The student copy run in full by the runner: a lesson whose first exercise comes early.
STUDENT_RUN_LESSON = "02_segmentation"


@pytest.mark.notebooks
def test_a_real_student_copy_stops_at_its_first_stub_with_the_exercise_name(student_copies, tmp_path):
    notebook = nbformat.read(NOTEBOOKS / f"{STUDENT_RUN_LESSON}.ipynb", as_version=4)
    first = re.findall(r"### BEGIN SOLUTION (\d+\.\d+)",
                       "\n".join(c.source for c in notebook.cells if c.cell_type == "code"))[0]
    [result] = runner.run_notebooks([STUDENT_RUN_LESSON], profile="smoke", out=tmp_path / "run",
                                    folder=student_copies, timeout=600)
    assert result.status == "failed"
    assert f"exercise {first}" in result.error and "not done yet" in result.error
    executed = nbformat.read(tmp_path / "run" / result.executed, as_version=4)
    shown = json.dumps([c.get("outputs") for c in executed.cells])
    assert "ExerciseNotDone" in shown
