"""Exercises on operating points of a screening test (lesson 10): a threshold for a target sensitivity, and the
sensitivity and specificity a threshold gives.

Convention (the same as :func:`medlab.metrics.operating_point` and scikit-learn's ROC): a case is called
positive when its score is **at or above** the threshold, ``score >= threshold``.

* 10.1 ``threshold_for_sensitivity(y_true, y_score, target)``: the **highest** threshold whose sensitivity on
  these cases is at least ``target``. With ``P`` positives it must keep ``k = ceil(target * P)`` of them, so it
  is the ``k``-th highest score among the positives (ties above it only add positives).
* 10.2 ``sensitivity_specificity(y_true, y_score, threshold)``: ``(TP / (TP + FN), TN / (TN + FP))`` of the
  calls ``score >= threshold``.

The references below are the answers; the notebook holds the same lines between solution markers.
"""
from __future__ import annotations

import math

import numpy as np

from . import Case, Exercise, compare, register

__all__ = ["threshold_for_sensitivity", "sensitivity_specificity"]


# ---------------------------------------------------------------------------------------
# the references
# ---------------------------------------------------------------------------------------
def threshold_for_sensitivity(y_true, y_score, target: float) -> float:
    """The highest threshold t whose sensitivity (cases with ``y_score >= t`` called positive) is >= ``target``.

    Args:
        y_true: labels (N,), 1 positive, 0 negative; at least one positive.
        y_score: scores (N,), higher means more likely positive.
        target: the sensitivity to reach, in (0, 1].
    """
    positives = np.sort(np.asarray(y_score, dtype=float)[np.asarray(y_true) == 1])[::-1]   # highest first
    keep = math.ceil(target * len(positives) - 1e-9)   # positives that must score at or above t
    return float(positives[keep - 1])


def sensitivity_specificity(y_true, y_score, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of calling ``y_score >= threshold`` positive, as a tuple of two floats."""
    t = np.asarray(y_true) == 1
    called = np.asarray(y_score, dtype=float) >= threshold
    return float((called & t).sum() / t.sum()), float((~called & ~t).sum() / (~t).sum())


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def _scores(rng, n, separation=1.5):
    y = (rng.uniform(size=n) < 0.4).astype(np.int64)
    y[:2] = [1, 0]   # both classes present
    return y, np.round(rng.normal(size=n) + separation * y, 3)   # rounded: some ties


def _threshold_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    y, s = _scores(rng, 200)
    y2, s2 = _scores(rng, 37, separation=0.5)
    ten_pos = np.array([1] * 10 + [0] * 5)
    ten_scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.3, 0.5, 0.7, 0.9])
    return [
        Case("200 random cases, target sensitivity 0.95", (y, s, 0.95)),
        Case("200 random cases, target sensitivity 0.8", (y, s, 0.8)),
        Case("37 overlapping cases, target 0.9", (y2, s2, 0.9)),
        Case("10 positives, target 0.9: exactly 9 must stay (0.9 * 10 is a whole number)", (ten_pos, ten_scores, 0.9)),
        Case("10 positives, target 0.85: 8.5 rounds up to 9 positives", (ten_pos, ten_scores, 0.85)),
        Case("target 1.0: every positive", (ten_pos, ten_scores, 1.0)),
        Case("tied positive scores at the threshold", (np.array([1, 1, 1, 1, 0, 0]), np.array([0.9, 0.6, 0.6, 0.2, 0.6, 0.1]), 0.5)),
        Case("positives listed after the negatives, scores unsorted",
             (np.array([0, 0, 0, 1, 1, 1, 1]), np.array([0.3, 0.8, 0.1, 0.4, 0.9, 0.2, 0.7]), 0.75)),
    ]


def _operating_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    y, s = _scores(rng, 150)
    return [
        Case("150 random cases at threshold 0.7", (y, s, 0.7)),
        Case("150 random cases at a threshold equal to some scores (>= counts them)", (y, s, float(s[5]))),
        Case("scores exactly at the threshold", (np.array([1, 1, 0, 0, 1, 0]), np.array([0.5, 0.4, 0.5, 0.1, 0.9, 0.6]), 0.5)),
        Case("threshold above every score: nobody called positive", (y, s, 99.0)),
        Case("threshold below every score: everybody called positive", (y, s, -99.0)),
        Case("labels as booleans", (np.array([True, False, True, False]), np.array([0.8, 0.3, 0.2, 0.9]), 0.5)),
    ]


# ---------------------------------------------------------------------------------------
# comparisons beyond the values
# ---------------------------------------------------------------------------------------
def _compare_threshold(got, expected, case) -> str | None:
    if isinstance(got, (tuple, list)) or np.ndim(got) != 0:
        return f"return one number, the threshold, not {type(got).__name__} {np.shape(got)}"
    y, s, target = case.args
    got_sens = float(np.mean(np.asarray(s)[np.asarray(y) == 1] >= float(got)))
    if got_sens < target - 1e-12:
        return (f"at your threshold {float(got):.4g} the sensitivity is {got_sens:.3f}, below the target {target}; "
                f"the right threshold is {expected:.4g}")
    return compare(float(got), expected, where="the threshold")


def _compare_pair(got, expected, case) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"return a pair (sensitivity, specificity), got {type(got).__name__}"
    names = ("sensitivity", "specificity")
    for g, e, name in zip(got, expected, names):
        message = compare(float(g), e, where=f"the {name}")
        if message:
            return message
    return None


register(Exercise(
    key="10.1", title="threshold for a target sensitivity", reference=threshold_for_sensitivity,
    cases=_threshold_cases,
    hint="take the scores of the positive cases only, sort them from highest to lowest, and keep the first "
         "k = ceil(target * number of positives) of them: the threshold is the k-th of them (index k - 1), so that "
         "every one of those k scores is >= it. math.ceil, not int or round: 8.5 positives means 9",
    compare=_compare_threshold))

register(Exercise(
    key="10.2", title="sensitivity and specificity at a threshold", reference=sensitivity_specificity,
    cases=_operating_cases,
    hint="called = y_score >= threshold (at or above, not strictly above); sensitivity = called positives among "
         "the true positives / true positives; specificity = NOT called among the true negatives / true negatives",
    compare=_compare_pair))
