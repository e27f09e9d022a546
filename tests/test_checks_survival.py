"""Lesson 11's concordance-index exercise (medlab.checks.survival) and the lesson's survival cells.

The reference equals lifelines' ``concordance_index`` (ties and censoring included); the check fails the
natural mistakes; the lesson's hand-written Kaplan-Meier estimator equals lifelines' ``KaplanMeierFitter``.
"""
from __future__ import annotations

import numpy as np
import pytest

from medlab import checks
from medlab.checks import survival as ref

import notebook_cells

lifelines = pytest.importorskip("lifelines")


def _verdict(fn):
    return checks.run_cases(checks.exercises()["11.2"], fn)[1]


def test_the_reference_passes():
    assert _verdict(ref.concordance_index) is None


@pytest.mark.parametrize("seed", range(10))
def test_the_reference_equals_lifelines_with_censoring_and_ties(seed):
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(seed)
    n = 60
    time = rng.integers(1, 20, n).astype(float)  # many tied times
    event = (rng.random(n) < 0.5).astype(int)
    risk = np.round(rng.normal(0, 1, n) - 0.1 * time, 1)  # some tied risks
    assert ref.concordance_index(time, event, risk) == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)


def test_no_comparable_pair_raises():
    with pytest.raises(ValueError, match="comparable"):
        ref.concordance_index([1.0, 2.0], [0, 0], [0.3, 0.1])


def _ignores_censoring(time, event, risk):
    return ref.concordance_index(time, np.ones_like(np.asarray(event)), risk)


def _ties_count_zero(time, event, risk):
    t, e, r = np.asarray(time, float), np.asarray(event).astype(bool), np.asarray(risk, float)
    comparable = ((t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :])) & e[:, None]
    return float(((r[:, None] > r[None, :]) * comparable).sum() / comparable.sum())


def _strict_times_only(time, event, risk):
    t, e, r = np.asarray(time, float), np.asarray(event).astype(bool), np.asarray(risk, float)
    comparable = (t[:, None] < t[None, :]) & e[:, None]  # an event and a censoring on one day: left out
    score = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    return float((score * comparable).sum() / comparable.sum())


def _reversed(time, event, risk):
    return ref.concordance_index(time, event, -np.asarray(risk, float))


def _all_pairs_earlier(time, event, risk):
    t, r = np.asarray(time, float), np.asarray(risk, float)
    comparable = t[:, None] < t[None, :]  # censored patients start pairs too
    score = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    return float((score * comparable).sum() / comparable.sum())


@pytest.mark.parametrize("wrong, why", [
    (_ignores_censoring, "values differ"),
    (_ties_count_zero, "values differ"),
    (_strict_times_only, "values differ"),
    (_reversed, "1 - C"),
    (_all_pairs_earlier, "values differ"),
])
def test_known_wrong_versions_fail(wrong, why):
    failure = _verdict(wrong)
    assert failure is not None and why in failure, failure


@pytest.fixture(scope="module")
def lesson():
    return notebook_cells.run_tagged("11_images_and_clinical_data", "technique")


def test_the_lesson_answer_passes(lesson):
    assert _verdict(lesson["concordance_index"]) is None


@pytest.mark.parametrize("seed", range(5))
def test_the_lesson_kaplan_meier_equals_lifelines(lesson, seed):
    from lifelines import KaplanMeierFitter

    rng = np.random.default_rng(seed)
    time = rng.integers(1, 25, 80).astype(float)
    event = (rng.random(80) < 0.6).astype(int)
    times, survival = lesson["kaplan_meier"](time, event)
    fitted = KaplanMeierFitter().fit(time, event)
    expected = fitted.survival_function_at_times(times).to_numpy()
    assert np.allclose(survival, expected)
    assert np.all(np.diff(survival) <= 0) and np.array_equal(times, np.unique(time[event == 1]))
