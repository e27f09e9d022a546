"""Exercise 07.2 (fit the temperature) and the lesson's own fit.

Fitting T on the test split is a mistake of the data, not of the function, and no check can see it. The
check must fail: dividing the probabilities instead of the logits, optimising T itself (it can step below
zero), minimising another loss (the Brier score), and stopping far from the optimum.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import notebook_cells
from medlab import checks
from medlab.checks.calibration import _cases, fit_temperature, nll_at


def _adam(loss_of, steps=500, lr=0.05, parameter="log_t"):
    p = torch.zeros(1, requires_grad=True) if parameter == "log_t" else torch.ones(1, requires_grad=True)
    optimiser = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        loss_of(p.exp() if parameter == "log_t" else p).backward()
        optimiser.step()
    return float((p.exp() if parameter == "log_t" else p).detach())


def adam_on_log_t(logits, labels):
    return _adam(lambda t: F.cross_entropy(logits / t, labels))


def divides_probabilities(logits, labels):
    return _adam(lambda t: F.nll_loss(torch.log(logits.softmax(1) / t), labels))


def softmax_of_divided_probabilities(logits, labels):
    return _adam(lambda t: F.cross_entropy(logits.softmax(1) / t, labels))


def t_not_kept_positive(logits, labels):
    return _adam(lambda t: F.cross_entropy(logits / t, labels), lr=0.3, parameter="t")


def brier_instead_of_nll(logits, labels):
    onehot = F.one_hot(labels, logits.shape[1]).float()
    return _adam(lambda t: ((torch.softmax(logits / t, 1) - onehot) ** 2).sum(1).mean())


def stops_too_early(logits, labels):
    return _adam(lambda t: F.cross_entropy(logits / t, labels), steps=10)


def test_the_reference_fits_and_a_gradient_descent_answer_passes():
    exercise = checks.exercises()["07.2"]
    assert checks.run_cases(exercise, fit_temperature)[1] is None
    assert checks.run_cases(exercise, adam_on_log_t)[1] is None
    for case in _cases(0):  # the fit is a minimum of the NLL
        t = fit_temperature(*case.args)
        assert nll_at(*case.args, t) <= min(nll_at(*case.args, t * 1.05), nll_at(*case.args, t / 1.05))


@pytest.mark.parametrize("wrong", [divides_probabilities, softmax_of_divided_probabilities, t_not_kept_positive,
                                   brier_instead_of_nll, stops_too_early])
def test_known_wrong_fits_fail(wrong):
    checks.check("07.2", wrong, quiet=True)
    assert checks.RESULTS["07.2"].startswith("failed"), wrong.__name__


def test_a_negative_temperature_is_named():
    checks.check("07.2", t_not_kept_positive, quiet=True)
    assert "not positive" in checks.RESULTS["07.2"]


def test_the_notebooks_fit_is_the_reference():
    cells = notebook_cells.run_tagged("07_trust_and_robustness", "technique")
    assert checks.run_cases(checks.exercises()["07.2"], cells["fit_temperature"])[1] is None
    z = torch.randn(50, 2) * 4
    y = (torch.rand(50) < torch.sigmoid(z[:, 1] - z[:, 0])).long()
    assert cells["fit_temperature"](z, y) == pytest.approx(fit_temperature(z, y), rel=1e-3)
