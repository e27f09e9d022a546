"""Exercise 07.3 (one PGD step) and the FGSM / PGD cells lesson 07 writes in view.

The check must pass the reference and fail the natural mistakes: no clipping to the image range, no
projection onto the epsilon-ball, gradient descent instead of ascent, the raw gradient instead of its sign.
The notebook's own cells are run (tests/notebook_cells.py) and held to properties derived by hand: FGSM on a
linear model is epsilon times the sign of the analytic gradient; PGD stays in the ball and the range and is at
least as strong as FGSM. (A one-off comparison of the earlier package version with torchattacks 3.5.1 agreed to
1e-9; torchattacks pins requests~=2.25, so it is not a test dependency.)
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import notebook_cells
from medlab import checks
from medlab.checks.attacks import pgd_step

NOTEBOOK = "07_trust_and_robustness"


def _grad(model, x, y):
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]


def unclipped(model, x_adv, x, y, epsilon, alpha):
    step = x_adv + alpha * _grad(model, x_adv, y).sign()
    return torch.min(torch.max(step, x - epsilon), x + epsilon)


def unprojected(model, x_adv, x, y, epsilon, alpha):
    return (x_adv + alpha * _grad(model, x_adv, y).sign()).clamp(0, 1)


def descent(model, x_adv, x, y, epsilon, alpha):
    step = x_adv - alpha * _grad(model, x_adv, y).sign()
    return torch.min(torch.max(step, x - epsilon), x + epsilon).clamp(0, 1)


def no_sign(model, x_adv, x, y, epsilon, alpha):
    step = x_adv + alpha * _grad(model, x_adv, y)
    return torch.min(torch.max(step, x - epsilon), x + epsilon).clamp(0, 1)


def mean_loss_and_sum_loss_agree(model, x_adv, x, y, epsilon, alpha):
    x_adv = x_adv.detach().clone().requires_grad_(True)
    F.cross_entropy(model(x_adv), y, reduction="sum").backward()  # a summed loss: the same signs
    step = x_adv.detach() + alpha * x_adv.grad.sign()
    return step.clamp(x - epsilon, x + epsilon).clamp(0, 1)


def test_the_reference_and_an_equivalent_answer_pass():
    exercise = checks.exercises()["07.3"]
    assert checks.run_cases(exercise, pgd_step)[1] is None
    assert checks.run_cases(exercise, mean_loss_and_sum_loss_agree)[1] is None


@pytest.mark.parametrize("wrong, says", [
    (unclipped, "valid image range"),
    (unprojected, "epsilon-ball"),
    (descent, "wrong way"),
    (no_sign, "sign"),
])
def test_known_wrong_steps_fail_with_a_message_that_names_the_mistake(wrong, says):
    checks.check("07.3", wrong, quiet=True)
    assert checks.RESULTS["07.3"].startswith("failed"), wrong.__name__
    assert says in checks.RESULTS["07.3"], checks.RESULTS["07.3"]


def test_a_wrong_answer_hands_back_the_reference():
    assert checks.check("07.3", descent, quiet=True) is pgd_step


# ----------------------------------------------------------------------------------------------
# the notebook's cells
@pytest.fixture(scope="module")
def cells():
    return notebook_cells.run_tagged(NOTEBOOK, "technique")


def test_the_notebooks_pgd_step_is_the_reference(cells):
    exercise = checks.exercises()["07.3"]
    assert checks.run_cases(exercise, cells["pgd_step"])[1] is None


def test_the_notebooks_fgsm_on_a_linear_model_is_epsilon_times_the_sign_of_the_analytic_gradient(cells):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    x = torch.rand(5, 1, 6, 6) * 0.8 + 0.1  # away from 0 and 1, so that nothing is clipped
    y = torch.tensor([0, 1, 2, 0, 1])
    weight = model[1].weight.detach()
    p = torch.softmax(model(x), dim=1).detach()
    grad = ((p - F.one_hot(y, 3).float()) @ weight).reshape(x.shape)
    adv = cells["fgsm"](model, x, y, 0.05)
    assert torch.allclose(adv, x + 0.05 * grad.sign(), atol=1e-6)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def _toy_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.6 + 0.2
    y = torch.arange(n) % 2
    x[y == 1, :, :, :4] += 0.1
    x[y == 0, :, :, 4:] += 0.1
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
    x, y = _toy_data(128, 0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    x_test, y_test = _toy_data(128, 1)
    assert (model(x_test).argmax(1) == y_test).float().mean() > 0.9, "the toy model should learn its task"
    return model.eval(), x_test, y_test


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_the_notebooks_pgd_stays_in_the_ball_and_range_and_beats_fgsm(cells, trained):
    model, x, y = trained
    eps = 0.05
    adv = cells["pgd"](model, x, y, eps, steps=10, seed=3)
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert torch.equal(adv, cells["pgd"](model, x, y, eps, steps=10, seed=3))  # the seed fixes the random start
    clean, fgsm, pgd = _accuracy(model, x, y), _accuracy(model, cells["fgsm"](model, x, y, eps), y), _accuracy(model, adv, y)
    assert pgd <= fgsm + 1e-9 and fgsm < clean
    assert torch.equal(cells["pgd"](model, x, y, 0.0, steps=3), x)  # no budget, no change
    start_free = cells["pgd"](model, x, y, eps, steps=1, alpha=eps, random_start=False)
    assert torch.allclose(start_free, cells["fgsm"](model, x, y, eps))  # one step from x of size eps is FGSM
