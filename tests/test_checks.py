"""The exercise-check machinery (medlab.checks): verdicts, messages, stubs, and the registry."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from medlab import checks
from medlab.errors import ParameterError


def _sum_of_squares(x):
    return (x ** 2).sum()


def _cases(seed):
    g = torch.Generator().manual_seed(seed)
    return [checks.Case("a random vector of 5", (torch.randn(5, generator=g),)),
            checks.Case("an empty vector", (torch.zeros(0),))]


@pytest.fixture
def exercise():
    ex = checks.Exercise(key="99.1", title="sum of squares", reference=_sum_of_squares, cases=_cases,
                         hint="square each value first, then add them up")
    checks.register(ex)
    yield ex
    checks.EXERCISES.pop("99.1", None)
    checks.RESULTS.pop("99.1", None)


def test_a_right_answer_passes_and_is_returned(exercise, capsys):
    def mine(x):
        return torch.sum(x * x)

    assert checks.check("99.1", mine) is mine
    assert checks.RESULTS["99.1"] == "passed"
    assert "correct on all 2 test cases" in capsys.readouterr().out


def test_a_wrong_answer_says_where_and_hints_and_the_reference_takes_over(exercise, capsys):
    def square_of_sum(x):
        return x.sum() ** 2

    returned = checks.check("99.1", square_of_sum)
    assert returned is _sum_of_squares
    out = capsys.readouterr().out
    assert "a random vector of 5" in out and "Hint: square each value first" in out
    assert checks.RESULTS["99.1"].startswith("failed: on a random vector of 5")


def test_an_answer_that_raises_is_a_failure_naming_the_error(exercise):
    def broken(x):
        return x.reshape(2, -1).sum()

    checks.check("99.1", broken, quiet=True)
    assert "RuntimeError" in checks.RESULTS["99.1"] or "it raised" in checks.RESULTS["99.1"]


def test_a_stub_stops_with_the_exercise_name(exercise):
    def stub(x):
        raise NotImplementedError("exercise 99.1: write your answer here, then run this cell")

    with pytest.raises(checks.ExerciseNotDone, match="exercise 99.1 .sum of squares. is not done yet"):
        checks.check("99.1", stub)
    assert "99.1" not in checks.RESULTS


def test_unknown_exercise_and_non_function_are_refused(exercise):
    with pytest.raises(ParameterError, match="no exercise '98.7'"):
        checks.check("98.7", _sum_of_squares)
    with pytest.raises(ParameterError, match="pass the function"):
        checks.check("99.1", 3.0)


def test_registering_a_key_twice_is_refused(exercise):
    with pytest.raises(ParameterError, match="registered twice"):
        checks.register(checks.Exercise("99.1", "again", _sum_of_squares, _cases, "none"))


@pytest.mark.parametrize("got, expected, fragment", [
    (np.zeros(3), np.zeros(4), "shape (3,), expected (4,)"),
    (np.array([1.0, 2.0]), np.array([1.0, 2.5]), "1 of 2 values differ"),
    (np.array([np.nan]), np.array([np.nan]), None),
    (np.array([np.inf]), np.array([1.0]), "values differ"),
    ((1.0, 2.0), (1.0, 2.0), None),
    ((1.0,), (1.0, 2.0), "sequence of 2 items"),
    ({"a": 1.0}, {"a": 1.0, "b": 2.0}, "keys"),
    ({"a": 1.0}, {"a": 1.5}, "['a']"),
    (None, 1.0, "should be"),
    (torch.tensor([True, False]), np.array([True, True]), "1 of 2 values differ"),
    ("relu", "relu", None),
])
def test_compare_names_the_difference(got, expected, fragment):
    message = checks.compare(got, expected)
    if fragment is None:
        assert message is None
    else:
        assert message is not None and fragment in message


def test_every_registered_exercise_passes_its_own_reference():
    """The reference of every exercise in the package passes its own cases (and the registry loads)."""
    known = checks.exercises()
    for key, ex in known.items():
        if key.startswith("99."):
            continue
        passed, failure = checks.run_cases(ex, ex.reference, seed=1)
        assert failure is None, f"exercise {key}: the reference fails its own check: {failure}"
        assert passed >= 3, f"exercise {key}: check it on at least three cases (random and edge), got {passed}"


@pytest.mark.parametrize("key", sorted(key for key in checks.exercises() if not key.startswith("99.")))
def test_a_stub_of_every_exercise_stops_the_lesson_naming_it(key):
    """What a student copy runs before the learner writes an answer: the lesson stops at that exercise, by name."""
    def stub(*args, **kwargs):
        raise NotImplementedError(f"exercise {key}: write your answer here, then run this cell")

    with pytest.raises(checks.ExerciseNotDone, match=re.escape(key)):
        checks.check(key, stub, quiet=True)
