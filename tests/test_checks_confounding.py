"""Lesson 03's shortcut: exercise 03.1 (medlab.checks.confounding) and the lesson's marker and lung-mask cells.

The check passes the reference and fails the natural mistakes; a stub stops. The cells tagged ``technique`` draw
the marker inside its box only, and lung masking removes it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab import checks
from medlab.checks.confounding import biased_marker_sides
from medlab.data.phantoms import chest_xray

import notebook_cells


def _verdict(key, fn):
    return checks.run_cases(checks.exercises()[key], fn)[1]


def test_marker_sides_reference_passes_and_follows_the_label_at_correlation_one():
    assert _verdict("03.1", biased_marker_sides) is None
    labels = np.array([0, 1, 2, 0, 2])
    assert biased_marker_sides(labels, 1.0, np.random.default_rng(0)).tolist() == [0, 1, 1, 0, 1]


def test_marker_sides_a_learner_may_draw_in_another_order():
    def coin_first(labels, correlation, rng):
        coin = rng.integers(0, 2, len(labels))
        follows = rng.uniform(size=len(labels)) < correlation
        return np.where(follows, np.asarray(labels) > 0, coin)

    assert _verdict("03.1", coin_first) is None


@pytest.mark.parametrize("wrong, why", [
    # the label itself instead of its side: COVID-19 (label 2) gets a side 2
    (lambda y, p, rng: np.where(rng.random(len(y)) < p, y, rng.integers(0, 2, len(y))), "0 (image left) or 1"),
    # the sides the wrong way round (normal right)
    (lambda y, p, rng: np.where(rng.random(len(y)) < p, (np.asarray(y) == 0).astype(int), rng.integers(0, 2, len(y))),
     "correlation 1"),
    # the correlation ignored: the marker always follows the label
    (lambda y, p, rng: (np.asarray(y) != 0).astype(int), "correlation 0"),
    # no coin: when the marker does not follow the label it goes to the opposite side
    (lambda y, p, rng: np.where(rng.random(len(y)) < p, np.asarray(y) != 0, np.asarray(y) == 0).astype(int),
     "should be about"),
    # the comparison inverted: follows with probability 1 - correlation
    (lambda y, p, rng: np.where(rng.random(len(y)) > p, np.asarray(y) != 0, rng.integers(0, 2, len(y))),
     "correlation 1"),
    # the diseased images always follow; only the normal ones obey the correlation
    (lambda y, p, rng: np.where((rng.random(len(y)) < p) | (np.asarray(y) != 0), np.asarray(y) != 0,
                                rng.integers(0, 2, len(y))), "diseased images"),
    # one side for the whole batch
    (lambda y, p, rng: np.asarray(int(rng.random() < p)), "shape"),
])
def test_marker_sides_check_fails_known_wrong_versions(wrong, why):
    message = _verdict("03.1", wrong)
    assert message is not None and why in message


# ------------------------------------------------------------------------------ the lesson's cells
@pytest.fixture(scope="module")
def lesson():
    return notebook_cells.run_tagged("03_covid_cxr_classification", "technique")


@pytest.mark.parametrize("size", [32, 64, 128])
def test_the_marker_is_drawn_inside_its_box_on_the_chosen_side(lesson, size):
    images = torch.zeros(2, 1, size, size)
    marked = lesson["draw_marker"](images, [0, 1])
    assert torch.equal(images, torch.zeros_like(images))  # a copy: the input is left alone
    for i, side in enumerate((0, 1)):
        rows, cols = lesson["marker_box"](size, side)
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[rows, cols] = True
        drawn = marked[i, 0] > 0
        assert drawn.sum() >= 4 and torch.equal(drawn, inside)
        assert (cols.start < size // 2) == (side == 0)


def test_lung_masking_removes_the_marker_and_keeps_the_lungs(lesson):
    batch = chest_xray(6, size=64, seed=3)
    images, lungs = torch.as_tensor(batch.images), torch.as_tensor(batch.masks["lung"])
    sides = lesson["marker_sides"](batch.labels, 1.0, np.random.default_rng(0))
    marked = lesson["draw_marker"](images, sides)
    masked = lesson["mask_lungs"](marked, lungs)
    assert masked.shape == images.shape
    assert torch.all(masked[:, 0][lungs == 0] == 0)
    assert torch.equal(masked[:, 0][lungs == 1], images[:, 0][lungs == 1])  # the marker never lies on a lung
