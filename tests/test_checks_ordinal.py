"""Lesson 05's exercises (medlab.checks.ordinal): the references pass, the natural mistakes fail, stubs stop.

Also: the cells of lesson 05 tagged ``technique`` (the CORAL head, the loss, the decoding, the clip rules)
define what the references compute.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlab import checks
from medlab.checks import ordinal as ref

import notebook_cells


def _verdict(key, fn):
    return checks.run_cases(checks.exercises()[key], fn)[1]


# ------------------------------------------------------------------------------ 05.1 cumulative targets
def test_cumulative_targets_reference_passes_and_encodes_grades_as_thresholds():
    assert _verdict("05.1", ref.cumulative_targets) is None
    t = ref.cumulative_targets(torch.tensor([0, 1, 2, 3]), 4)
    assert t.dtype == torch.float32
    assert t.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("wrong, why", [
    (lambda y, k: F.one_hot(y, k).float(), "shape"),  # one-hot instead of cumulative
    (lambda y, k: (y[:, None] > torch.arange(k)).float(), "shape"),  # off by one: K outputs
    (lambda y, k: (y[:, None] >= torch.arange(k - 1)).float(), "values differ"),  # >= instead of >
    (lambda y, k: (y[:, None] > torch.arange(k - 1)), "float"),  # bool: wrong dtype for BCE
    (lambda y, k: (y[:, None] > torch.arange(k - 1)).long(), "float"),  # long: wrong dtype for BCE
    (lambda y, k: (y[None, :] > torch.arange(k - 1)[:, None]).float(), "shape"),  # transposed (K-1, N)
    (lambda y, k: (y[:, None] > torch.arange(k - 1)).float().numpy(), "torch tensor"),
])
def test_cumulative_targets_check_fails_known_wrong_versions(wrong, why):
    failure = _verdict("05.1", wrong)
    assert failure is not None and why in failure


# ------------------------------------------------------------------------------ 05.2 CORAL head forward
def test_coral_logits_reference_passes_and_shares_one_weight_vector():
    assert _verdict("05.2", ref.coral_logits) is None
    features, weight, biases = torch.randn(5, 8), torch.randn(8), torch.tensor([1.0, 0.0, -1.0])
    logits = ref.coral_logits(features, weight, biases)
    assert logits.shape == (5, 3)
    # the thresholds differ by their biases only: every column is the same score shifted
    assert torch.allclose(logits - biases, (features @ weight)[:, None].expand(5, 3))


@pytest.mark.parametrize("wrong", [
    lambda f, w, b: f @ w + b,  # forgot the column axis: (N,) + (K-1,) broadcasts wrongly or fails
    lambda f, w, b: (f @ w)[:, None].expand(-1, len(b)),  # no biases
    lambda f, w, b: (f @ w)[:, None] - b[None, :],  # biases subtracted
    lambda f, w, b: ((f @ w)[:, None] + b[None, :]).detach(),  # no gradient
    lambda f, w, b: (f @ w)[:, None] + b.sum(),  # one shared bias
    lambda f, w, b: f @ w[:, None] + b[:1],  # one output instead of K-1
])
def test_coral_logits_check_fails_known_wrong_versions(wrong):
    assert _verdict("05.2", wrong) is not None


# ------------------------------------------------------------------------------ 05.3 decoding
def test_grades_from_logits_reference_passes_and_counts_thresholds():
    assert _verdict("05.3", ref.grades_from_logits) is None
    grades = ref.grades_from_logits(torch.tensor([[-5.0, -5, -5], [5, -5, -5], [5, 5, 5], [0, 0, 0]]))
    assert grades.tolist() == [0, 1, 3, 0] and grades.dtype == torch.int64


@pytest.mark.parametrize("wrong", [
    lambda z: z.argmax(dim=1),  # the most confident threshold is not a grade
    lambda z: (z > 0.5).sum(dim=1),  # no sigmoid: compares logits with 0.5
    lambda z: (torch.sigmoid(z) >= 0.5).sum(dim=1),  # a probability of exactly one half counted
    lambda z: torch.sigmoid(z).sum(dim=1).round().long(),  # rounded sum of probabilities: another decoder
    lambda z: (torch.sigmoid(z) > 0.5).float().sum(dim=1),  # float grades
    lambda z: (torch.sigmoid(z) > 0.5).sum(dim=0),  # counted over the batch
    lambda z: (torch.sigmoid(z) > 0.5).long().cumprod(dim=1).sum(dim=1),  # stops at the first "no"
])
def test_grades_from_logits_check_fails_known_wrong_versions(wrong):
    assert _verdict("05.3", wrong) is not None


# ------------------------------------------------------------------------------ the lesson's own cells
@pytest.fixture(scope="module")
def lesson():
    return notebook_cells.run_tagged("05_lung_ultrasound_severity", "technique")


def test_the_lesson_answers_pass_their_checks(lesson):
    for key, name in (("05.1", "cumulative_targets"), ("05.2", "coral_logits"), ("05.3", "grades_from_logits")):
        assert _verdict(key, lesson[name]) is None, key


def test_the_lesson_coral_head_has_one_weight_vector_and_k_minus_1_biases(lesson):
    head = lesson["CoralHead"](in_features=12, num_grades=4)
    shapes = sorted(tuple(p.shape) for p in head.parameters())
    assert shapes == [(3,), (12,)]
    h = torch.randn(7, 12)
    logits = head(h)
    assert logits.shape == (7, 3)
    assert torch.allclose(logits, ref.coral_logits(h, head.weight, head.biases))
    assert (head.biases[:-1] > head.biases[1:]).all()  # starts rank-consistent


def test_the_lesson_coral_loss_is_bce_on_cumulative_targets_and_punishes_distance(lesson):
    loss = lesson["coral_loss"]
    logits, grades = torch.randn(9, 3), torch.randint(0, 4, (9,))
    expected = F.binary_cross_entropy_with_logits(logits, ref.cumulative_targets(grades, 4))
    assert torch.allclose(loss(logits, grades), expected)
    grade0 = torch.full((1, 3), -6.0)
    assert loss(grade0, torch.tensor([0])) < loss(grade0, torch.tensor([2])) < loss(grade0, torch.tensor([3]))


def test_the_lesson_coral_probabilities_are_a_distribution_whose_mean_is_the_summed_thresholds(lesson):
    logits = torch.tensor([[5.0, -5.0, 5.0], [-5.0, -5.0, -5.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    p = lesson["coral_probabilities"](logits)
    assert p.shape == (4, 4) and (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(4))
    monotone = torch.sigmoid(logits).cummin(dim=1).values
    assert torch.allclose(p @ torch.arange(4.0), monotone.sum(1), atol=1e-6)


def test_the_lesson_clip_rules(lesson):
    def one_hot(grades, k=4, sharp=0.9):
        p = np.full((len(grades), k), (1 - sharp) / (k - 1))
        p[np.arange(len(grades)), grades] = sharp
        return p

    clip = one_hot([0, 0, 0, 3])  # one frame shows white lung
    assert lesson["clip_by_max"](np.array([0, 0, 0, 3])) == 3
    assert lesson["clip_by_mean"](clip) == 1  # mean expected grade 0.9 -> 1
    features = lesson["clip_features"](clip, np.array([0, 0, 0, 3]))
    assert features.shape == (11,) and np.all(np.isfinite(features))
    assert np.allclose(features[8:], [0.25, 0.25, 0.25])  # one frame of four passes every threshold
    longer = lesson["clip_features"](np.concatenate([clip, clip, clip]), np.array([0, 0, 0, 3] * 3))
    assert np.allclose(longer, features)  # the same clip repeated: the same features, whatever its length
