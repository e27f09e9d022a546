"""Exercise 07.1 (rank correlation of two heat maps) and the randomisation cascade lesson 07 writes in view."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import spearmanr

import notebook_cells
from medlab import checks
from medlab.checks.saliency import rank_correlation


def with_scipy(a, b):
    out = []
    for x, y in zip(a, b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = spearmanr(x.ravel(), y.ravel()).statistic
        out.append(0.0 if np.isnan(r) else r)
    return np.array(out)


def pearson_of_values(a, b):
    return np.array([np.nan_to_num(np.corrcoef(x.ravel(), y.ravel())[0, 1]) for x, y in zip(a, b)])


def ordinal_ranks(a, b):  # argsort of argsort: ties get different ranks
    out = []
    for x, y in zip(a, b):
        r = np.corrcoef(x.ravel().argsort().argsort(), y.ravel().argsort().argsort())[0, 1]
        out.append(0.0 if np.isnan(r) else r)
    return np.array(out)


def pooled_over_the_batch(a, b):
    return np.full(len(a), spearmanr(np.ravel(a), np.ravel(b)).statistic)


def one_number_for_the_batch(a, b):
    return spearmanr(np.ravel(a), np.ravel(b)).statistic


def nan_for_a_vanished_map(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)])


def test_the_reference_and_scipy_pass():
    exercise = checks.exercises()["07.1"]
    assert checks.run_cases(exercise, rank_correlation)[1] is None
    assert checks.run_cases(exercise, with_scipy)[1] is None
    a = np.random.default_rng(0).random((3, 6, 6))
    np.testing.assert_allclose(rank_correlation(a, a), 1.0)
    np.testing.assert_allclose(rank_correlation(a, -a), -1.0)


@pytest.mark.parametrize("wrong", [pearson_of_values, ordinal_ranks, pooled_over_the_batch, one_number_for_the_batch,
                                   nan_for_a_vanished_map])
def test_known_wrong_correlations_fail(wrong):
    checks.check("07.1", wrong, quiet=True)
    assert checks.RESULTS["07.1"].startswith("failed"), wrong.__name__


@pytest.fixture(scope="module")
def cells():
    return notebook_cells.run_tagged("07_trust_and_robustness", "technique")


def test_the_notebooks_rank_correlation_is_the_reference(cells):
    assert checks.run_cases(checks.exercises()["07.1"], cells["rank_correlation"])[1] is None


def test_the_notebooks_randomised_copy_resets_the_named_layers_only_and_leaves_the_model_alone(cells):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = cells["randomised_copy"](model, ["5", "3"], seed=1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"the original model changed at {key}"
    after = clone.state_dict()
    assert not torch.equal(after["5.weight"], before["5.weight"]) and not torch.equal(after["3.weight"], before["3.weight"])
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["1.running_mean"], before["1.running_mean"])
    again = cells["randomised_copy"](model, ["5", "3"], seed=1)
    assert torch.equal(again.state_dict()["3.weight"], after["3.weight"])  # the seed fixes the draw
