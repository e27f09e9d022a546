"""Lesson 11's late-fusion exercise (medlab.checks.fusion): the reference passes, natural mistakes fail, stubs stop.

Also: the lesson's own answer (its cell tagged ``technique``) passes the check.
"""
from __future__ import annotations

import numpy as np
import pytest

from medlab import checks
from medlab.checks import fusion as ref

import notebook_cells


def _verdict(fn):
    return checks.run_cases(checks.exercises()["11.1"], fn)[1]


def _logit(p):
    return np.log(p / (1 - p))


def test_the_reference_passes_and_weights_the_logits():
    assert _verdict(ref.late_fusion) is None
    p, q = np.array([0.9, 0.2]), np.array([0.6, 0.7])
    assert np.allclose(ref.late_fusion(p, q, 1.0), p) and np.allclose(ref.late_fusion(p, q, 0.0), q)
    assert np.allclose(_logit(ref.late_fusion(p, q, 0.5)), (_logit(p) + _logit(q)) / 2)
    assert np.all(np.isfinite(ref.late_fusion(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5)))


@pytest.mark.parametrize("wrong, why", [
    (lambda p, q, w: w * np.asarray(p) + (1 - w) * np.asarray(q), "values differ"),  # averages probabilities
    (lambda p, q, w: ref.late_fusion(q, p, w), "values differ"),  # weights swapped
    (lambda p, q, w: 1 / (1 + np.exp(-(w * _logit(np.asarray(p)) + (1 - w) * _logit(np.asarray(q))))),
     "nan or infinite"),  # no clipping: 0 * inf
    (lambda p, q, w: w * _logit(np.clip(p, 1e-6, 1 - 1e-6)) + (1 - w) * _logit(np.clip(q, 1e-6, 1 - 1e-6)),
     "probabilities"),  # returns the logit
    (lambda p, q, w: ref.late_fusion(p, q, 0.5), "values differ"),  # ignores the weight
    (lambda p, q, w: float(ref.late_fusion(p, q, w).mean()), "shape"),  # one number for everyone
])
def test_known_wrong_versions_fail(wrong, why):
    with np.errstate(all="ignore"):
        failure = _verdict(wrong)
    assert failure is not None and why in failure, failure


def test_the_lesson_answer_passes():
    lesson = notebook_cells.run_tagged("11_images_and_clinical_data", "technique")
    assert _verdict(lesson["late_fusion"]) is None
