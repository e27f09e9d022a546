"""Exercise checks: run a learner's function on many inputs and compare it with the reference.

A lesson's exercise is a function the learner completes. The solution notebook
holds the answer between ``### BEGIN SOLUTION <key>`` and ``### END SOLUTION``
markers (``medlab student`` replaces it with a stub in the student copies);
the next line hands the function to :func:`check`::

    def soft_dice_loss(logits, target):
        ### BEGIN SOLUTION 02.1
        ...
        ### END SOLUTION

    soft_dice_loss = medlab.checks.check("02.1", soft_dice_loss)

:func:`check` calls the function and the reference on every case of the
exercise (random inputs of several shapes, and edge cases such as an absent
class), compares the results and prints either a confirmation or what went
wrong on which case with a hint. It returns the learner's function when it is
right and the reference when it is not, so the rest of the lesson still runs.
A stub that is not filled in yet (it raises ``NotImplementedError``) stops the
notebook there, naming the exercise.

Exercises are registered by the modules of this package, one per technique
(:mod:`medlab.checks.heads`, ...), each with :func:`register`. The verdicts of a
kernel are kept in :data:`RESULTS` and written by ``medlab.record`` into the
lesson's ``metrics.json``, where the runner fails a solution notebook whose own
answer does not pass.
"""
from __future__ import annotations

import copy
import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MedlabError, ParameterError

__all__ = ["Case", "Exercise", "ExerciseNotDone", "EXERCISES", "RESULTS", "register", "check", "compare",
           "exercises", "run_cases"]


@dataclass
class Case:
    """One input of an exercise: a description for messages, and the arguments."""

    description: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Exercise:
    """An exercise: what the learner writes, the reference, the inputs it is checked on.

    Attributes:
        key: ``"<lesson number>.<exercise number>"``, e.g. ``"02.1"``.
        title: a few words, e.g. ``"soft Dice loss"``.
        reference: the correct function, with the learner's signature.
        cases: ``cases(seed) -> list[Case]``: the inputs, random ones drawn from
            ``seed`` and fixed edge cases.
        hint: what to look at when the answer is wrong.
        compare: ``compare(got, expected, case) -> str | None``: a message
            saying what is wrong, or None. Default: :func:`compare` (values
            equal within ``atol``/``rtol``, same shapes and types).
        atol, rtol: tolerances of the default comparison.
    """

    key: str
    title: str
    reference: Callable
    cases: Callable[[int], Sequence[Case]]
    hint: str
    compare: Callable | None = None
    atol: float = 1e-5
    rtol: float = 1e-4


class ExerciseNotDone(MedlabError, NotImplementedError):
    """The learner's function is still the stub of a student copy."""


#: Every registered exercise by key.
EXERCISES: dict[str, Exercise] = {}
#: Verdicts of this kernel: exercise key -> ``"passed"`` or ``"failed: <why>"``.
RESULTS: dict[str, str] = {}
_LOADED = False


def register(exercise: Exercise) -> Exercise:
    """Add ``exercise`` to :data:`EXERCISES` (a key may be registered once)."""
    if exercise.key in EXERCISES and EXERCISES[exercise.key] is not exercise:
        raise ParameterError(f"exercise {exercise.key!r} is registered twice")
    EXERCISES[exercise.key] = exercise
    return exercise


def _load_all() -> None:
    """Import every module of this package, which registers its exercises."""
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def exercises() -> dict[str, Exercise]:
    """All exercises, by key, in key order."""
    _load_all()
    return dict(sorted(EXERCISES.items()))


def _as_array(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def compare(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4, where: str = "the result") -> str | None:
    """What differs between ``got`` and ``expected``, or None when they agree.

    Tensors and arrays must have the same shape and close values (NaN equals
    NaN, infinities must match); numbers must be close; tuples, lists and
    dictionaries are compared item by item; anything else with ``==``.
    """
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{where} should be a dict, got {type(got).__name__}"
        if set(got) != set(expected):
            return f"{where} should have the keys {sorted(map(str, expected))}, got {sorted(map(str, got))}"
        for k in expected:
            message = compare(got[k], expected[k], atol, rtol, f"{where}[{k!r}]")
            if message:
                return message
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{where} should be a sequence of {len(expected)} items, got {_describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            message = compare(g, e, atol, rtol, f"{where}[{i}]")
            if message:
                return message
        return None
    if hasattr(expected, "shape") or isinstance(expected, (int, float, np.number, bool)):
        if got is None or isinstance(got, (str, dict, tuple, list)):
            return f"{where} should be {_describe(expected)}, got {_describe(got)}"
        try:
            g, e = _as_array(got), _as_array(expected)
        except Exception:  # noqa: BLE001 - anything that is not array-like is simply wrong here
            return f"{where} should be {_describe(expected)}, got {_describe(got)}"
        if g.shape != e.shape:
            return f"{where} has shape {tuple(g.shape)}, expected {tuple(e.shape)}"
        if e.dtype == bool or g.dtype == bool:
            wrong = int(np.sum(g.astype(bool) != e.astype(bool)))
            return None if wrong == 0 else f"{where}: {wrong} of {e.size} values differ"
        g, e = g.astype(np.float64), e.astype(np.float64)
        close = np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
        if not close.all():
            i = np.unravel_index(int(np.argmin(close)), close.shape) if close.ndim else ()
            at = f" at index {tuple(int(j) for j in i)}" if i else ""
            return (f"{where}: {int((~close).sum())} of {close.size} values differ; "
                    f"got {g[i] if i else g.item():.6g}{at}, expected {e[i] if i else e.item():.6g}")
        return None
    return None if got == expected else f"{where} is {got!r}, expected {expected!r}"


def _describe(value) -> str:
    if hasattr(value, "shape"):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{type(value).__name__} {value!r}"[:80]


def run_cases(exercise: Exercise, answer: Callable, seed: int = 0) -> tuple[int, str | None]:
    """Call ``answer`` and the reference on every case; ``(cases passed, first failure or None)``.

    Raises:
        ExerciseNotDone: ``answer`` raises NotImplementedError (a stub).
    """
    cases = list(exercise.cases(seed))
    for n, case in enumerate(cases):
        expected = exercise.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        try:
            got = answer(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        except NotImplementedError as exc:
            raise ExerciseNotDone(
                f"exercise {exercise.key} ({exercise.title}) is not done yet: complete the function in the cell "
                f"above and run it again ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - the learner's error is the message
            return n, f"on {case.description}: it raised {type(exc).__name__}: {exc}"
        if exercise.compare is not None:
            message = exercise.compare(got, expected, case)
        else:
            message = compare(got, expected, exercise.atol, exercise.rtol)
        if message:
            return n, f"on {case.description}: {message}"
    return len(cases), None


def check(key: str, answer: Callable, seed: int = 0, quiet: bool = False) -> Callable:
    """Check the learner's ``answer`` to exercise ``key``; return it if right, else the reference.

    Prints one line when the answer is right, and otherwise the case it failed
    on, what differed and a hint. The verdict is kept in :data:`RESULTS`.

    Raises:
        ParameterError: no exercise is called ``key``.
        ExerciseNotDone: ``answer`` is still a stub.
    """
    known = exercises()
    if key not in known:
        raise ParameterError(f"no exercise {key!r}; known exercises: {', '.join(known)}")
    exercise = known[key]
    if not callable(answer):
        raise ParameterError(f"exercise {key}: pass the function you wrote, got {type(answer).__name__}")
    passed, failure = run_cases(exercise, answer, seed)
    if failure is None:
        RESULTS[key] = "passed"
        if not quiet:
            print(f"\u2713 exercise {key} ({exercise.title}): correct on all {passed} test cases.")
        return answer
    RESULTS[key] = f"failed: {failure}"
    if not quiet:
        print(f"\u2717 exercise {key} ({exercise.title}): not yet right ({passed} test cases passed first).\n"
              f"  {failure}\n  Hint: {exercise.hint}\n"
              f"  The rest of this notebook uses the reference solution, so it still runs; fix your function and "
              f"run its cell again.")
    return exercise.reference
