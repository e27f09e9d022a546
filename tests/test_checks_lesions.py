"""Exercise 09.2 (matching lesions) and lesion-wise scores: the reference passes, the natural mistakes fail.

Mistakes: 6-connectivity (scipy's default structure) instead of 26; labelling the whole stack at once, which
joins lesions of different cases at the same place; false positives counted as predicted minus detected
lesions; a lesion counted as detected only when more than half of it is covered.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage
from scipy import ndimage

import notebook_cells
from medlab import checks, metrics
from medlab.checks.lesions import match_lesions

FULL = ndimage.generate_binary_structure(3, 3)

#: What lesson 09's set-up cell imports and its technique cells use.
NOTEBOOK_NAMESPACE = {"scipy": scipy, "pd": pd}


def _verdict(fn):
    return checks.run_cases(checks.exercises()["09.2"], fn)[1]


def _written(pred, true, structure=FULL, whole_stack=False, fp_by_difference=False, majority=False):
    detected, size, false_positives, predicted = [], [], 0, 0
    pairs = [(pred, true)] if whole_stack else zip(pred, true)
    for p, t in pairs:
        s = np.ones((3,) * p.ndim, bool) if whole_stack and structure is FULL else structure
        t_lab, n_t = ndimage.label(t, s) if s is not None else ndimage.label(t)
        p_lab, n_p = ndimage.label(p, s) if s is not None else ndimage.label(p)
        for k in range(1, n_t + 1):
            lesion = t_lab == k
            covered = p[lesion].mean() if majority else p[lesion].any()
            detected.append(bool(covered > 0.5) if majority else bool(covered))
            size.append(int(lesion.sum()))
        if fp_by_difference:
            false_positives += max(n_p - sum(detected[-n_t:]) if n_t else n_p, 0)
        else:
            false_positives += sum(not t[p_lab == j].any() for j in range(1, n_p + 1))
        predicted += n_p
    return {"detected": np.array(detected, bool), "size": np.array(size, int), "false_positives": false_positives,
            "predicted": predicted}


def test_reference_and_a_written_version_pass():
    assert _verdict(match_lesions) is None
    assert _verdict(_written) is None


@pytest.mark.parametrize("wrong, why", [
    (lambda p, t: _written(p, t, structure=None), "6-connectivity: lesions touching at a corner split"),
    (lambda p, t: _written(p, t, whole_stack=True), "the stack labelled at once: cases joined"),
    (lambda p, t: _written(p, t, fp_by_difference=True), "false positives = predicted - detected"),
    (lambda p, t: _written(p, t, majority=True), "detected only when more than half is covered"),
])
def test_check_fails_known_wrong_versions(wrong, why):
    assert _verdict(wrong) is not None, why


def test_scores_follow_the_conventions():
    empty = np.zeros((1, 5, 5, 5), bool)
    one = empty.copy()
    one[0, 2, 2, 2] = True
    both_empty = metrics.lesion_scores(metrics.match_lesions(empty, empty))
    assert both_empty["f1"] == 1.0 and np.isnan(both_empty["sensitivity"]) and np.isnan(both_empty["precision"])
    missed = metrics.lesion_scores(metrics.match_lesions(empty, one))
    assert missed["f1"] == 0.0 and missed["sensitivity"] == 0.0 and np.isnan(missed["precision"])
    hallucinated = metrics.lesion_scores(metrics.match_lesions(one, empty))
    assert hallucinated["f1"] == 0.0 and hallucinated["precision"] == 0.0
    assert metrics.lesion_scores(metrics.match_lesions(one, one))["f1"] == 1.0


def test_one_large_lesion_hides_missed_small_ones_from_dice_not_from_lesion_f1():
    true = np.zeros((1, 20, 20, 20), bool)
    true[0, 2:12, 2:12, 2:12] = True                      # one large lesion, 1000 voxels ...
    for z in (15, 17):
        for y in (15, 17):
            true[0, z, y, 15] = True                      # ... and four single-voxel lesions
    pred = np.zeros_like(true)
    pred[0, 2:12, 2:12, 2:12] = True                      # only the large one is found
    scores = metrics.lesion_scores(metrics.match_lesions(pred, true))
    assert metrics.dice(pred[0], true[0]) > 0.99
    assert scores["sensitivity"] == pytest.approx(0.2) and scores["precision"] == 1.0


def test_the_notebooks_lesion_matching_passes_the_check():
    cells = notebook_cells.run_tagged("09_volumes_3d", "technique", namespace=NOTEBOOK_NAMESPACE)
    assert _verdict(cells["match_lesions"]) is None


def test_the_notebooks_lesion_scores_equal_the_package():
    cells = notebook_cells.run_tagged("09_volumes_3d", "technique", namespace=NOTEBOOK_NAMESPACE)
    rng = np.random.default_rng(0)
    empty = np.zeros((2, 8, 8, 8), bool)
    blobs = rng.random((3, 8, 8, 8)) < 0.05
    for pred, true in [(blobs, rng.random((3, 8, 8, 8)) < 0.05), (empty, empty), (empty, blobs[:2]), (blobs[:2], empty)]:
        match = metrics.match_lesions(pred, true)
        ours, theirs = cells["lesion_scores"](match), metrics.lesion_scores(match)
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert np.isclose(ours[key], theirs[key], equal_nan=True), key
