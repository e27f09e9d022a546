"""Lesson 10's exercises (medlab.checks.operating_points): the references pass, the natural mistakes fail, stubs stop.

Also: the cells of lesson 10 tagged ``technique`` (referable target and score, the specificity threshold, the
bootstrap of an operating point) compute what they say, and agree with medlab.metrics.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import medlab
from medlab import checks
from medlab.checks import operating_points as ref

import notebook_cells


def _verdict(key, fn):
    return checks.run_cases(checks.exercises()[key], fn)[1]


# ------------------------------------------------------------------------------ 10.1 threshold for a sensitivity
def test_threshold_reference_passes_and_is_the_highest_that_reaches_the_target():
    assert _verdict("10.1", ref.threshold_for_sensitivity) is None
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=300) < 0.5).astype(int)
    s = rng.normal(size=300) + y
    for target in (0.5, 0.8, 0.9, 0.95, 1.0):
        t = ref.threshold_for_sensitivity(y, s, target)
        sens, _ = ref.sensitivity_specificity(y, s, t)
        assert sens >= target
        above = np.nextafter(t, np.inf)   # any higher threshold falls short
        assert ref.sensitivity_specificity(y, s, above)[0] < target


def _k(target, n):
    return math.ceil(target * n - 1e-9)


@pytest.mark.parametrize("wrong", [
    # strictly above the threshold: one positive too few is kept at the threshold -> next score up
    lambda y, s, t: float(np.sort(np.asarray(s)[np.asarray(y) == 1])[::-1][_k(t, (np.asarray(y) == 1).sum())]),
    # int() instead of ceil: 8.5 positives rounded down
    lambda y, s, t: float(np.sort(np.asarray(s)[np.asarray(y) == 1])[::-1][max(int(t * (np.asarray(y) == 1).sum()) - 1, 0)]),
    # a quantile of all the scores, negatives included
    lambda y, s, t: float(np.quantile(s, 1 - t)),
    # an interpolated quantile of the positives (a value between two scores)
    lambda y, s, t: float(np.quantile(np.asarray(s)[np.asarray(y) == 1], 1 - t)),
    # the sensitivity instead of the threshold
    lambda y, s, t: float(t),
    # sorted the wrong way: the k-th lowest positive
    lambda y, s, t: float(np.sort(np.asarray(s)[np.asarray(y) == 1])[_k(t, (np.asarray(y) == 1).sum()) - 1]),
])
def test_threshold_check_fails_known_wrong_versions(wrong):
    assert _verdict("10.1", wrong) is not None


def test_threshold_chosen_on_test_data_is_optimistic_on_new_cases():
    """The reason the lesson picks its thresholds on validation: on the cases it was tuned on, a threshold always
    reaches its target; on new cases it falls short about half of the time."""
    rng = np.random.default_rng(0)
    short = 0
    for _ in range(200):
        y = (rng.uniform(size=120) < 0.5).astype(int)
        s = rng.normal(size=120) + 1.5 * y
        t = ref.threshold_for_sensitivity(y, s, 0.9)
        assert ref.sensitivity_specificity(y, s, t)[0] >= 0.9
        y_new = (rng.uniform(size=120) < 0.5).astype(int)
        short += ref.sensitivity_specificity(y_new, rng.normal(size=120) + 1.5 * y_new, t)[0] < 0.9
    assert 40 < short < 160


# ------------------------------------------------------------------------------ 10.2 sensitivity and specificity
def test_operating_point_reference_passes_and_matches_medlab_metrics():
    assert _verdict("10.2", ref.sensitivity_specificity) is None
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=100) < 0.3).astype(int)
    s = np.round(rng.uniform(size=100), 2)
    for t in (0.1, 0.5, 0.73):
        op = medlab.metrics.operating_point(y, s, t)
        assert ref.sensitivity_specificity(y, s, t) == pytest.approx((op["sensitivity"], op["specificity"]))


@pytest.mark.parametrize("wrong", [
    lambda y, s, t: ref.sensitivity_specificity(y, np.asarray(s) - 1e-12, t),   # > instead of >=
    lambda y, s, t: ref.sensitivity_specificity(y, s, t)[::-1],   # swapped
    lambda y, s, t: (ref.sensitivity_specificity(y, s, t)[0], 1 - ref.sensitivity_specificity(y, s, t)[1]),  # FPR
    lambda y, s, t: (float(np.mean((np.asarray(s) >= t) == (np.asarray(y) == 1))),) * 2,   # accuracy twice
    lambda y, s, t: (float(((np.asarray(s) >= t) & (np.asarray(y) == 1)).sum() / len(y)),
                     ref.sensitivity_specificity(y, s, t)[1]),   # TP over all cases
])
def test_operating_point_check_fails_known_wrong_versions(wrong):
    assert _verdict("10.2", wrong) is not None


# ------------------------------------------------------------------------------ the lesson's own cells
@pytest.fixture(scope="module")
def lesson():
    return notebook_cells.run_tagged("10_retinal_screening", "technique")


def test_the_lesson_answers_pass_their_checks(lesson):
    for key, name in (("10.1", "threshold_for_sensitivity"), ("10.2", "sensitivity_specificity")):
        assert _verdict(key, lesson[name]) is None, key


def test_the_lesson_referable_target_and_score(lesson):
    grades = np.array([0, 1, 2, 3, 4, 1])
    assert lesson["referable"](grades).tolist() == [0, 0, 1, 1, 1, 0]
    probs = torch.softmax(torch.randn(6, 5), dim=1).numpy()
    assert np.allclose(lesson["referable_score"](probs), probs[:, 2:].sum(1))


def test_the_lesson_specificity_threshold_is_the_lowest_that_reaches_the_target(lesson):
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=400) < 0.5).astype(int)
    s = np.round(rng.normal(size=400) + 1.5 * y, 2)   # ties
    for target in (0.8, 0.9, 0.95, 0.99):
        t = lesson["threshold_for_specificity"](y, s, target)
        assert ref.sensitivity_specificity(y, s, t)[1] >= target
        below = np.max(s[s < t])   # the next lower threshold that changes anything
        assert ref.sensitivity_specificity(y, s, below)[1] < target
        sens_best, _ = medlab.metrics.sensitivity_at_specificity(y, s, target)
        assert ref.sensitivity_specificity(y, s, t)[0] == pytest.approx(sens_best)


def test_the_lesson_bootstrap_of_an_operating_point(lesson):
    rng = np.random.default_rng(4)
    y = (rng.uniform(size=300) < 0.5).astype(int)
    s = rng.normal(size=300) + 1.5 * y
    out = lesson["operating_point_ci"](y, s, 0.5, n=200, seed=0)
    sens, spec = ref.sensitivity_specificity(y, s, 0.5)
    assert out["sensitivity"][0] == pytest.approx(sens) and out["specificity"][0] == pytest.approx(spec)
    for name in ("sensitivity", "specificity"):
        estimate, low, high = out[name]
        assert low <= estimate <= high and high - low < 0.25
    same = medlab.metrics.bootstrap_ci(lambda t, p: ref.sensitivity_specificity(t, p, 0.5)[0], y, s, n=200, seed=0)
    assert (same.low, same.high) == pytest.approx(out["sensitivity"][1:])
