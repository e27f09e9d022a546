"""FGSM and PGD (medlab.robustness), checked against properties derived by hand.

``torchattacks`` (the usual reference implementation) pins ``requests~=2.25``,
which conflicts with nilearn and jupyterlab-server here, so it is not a test
dependency; the properties below pin the same behaviour down. (A one-off comparison
with torchattacks 3.5.1, installed outside the environment, agreed to 1e-9 for FGSM and
for PGD without random start.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medlab import robustness
from medlab.errors import ParameterError



def _linear_model(seed=0, c=1, h=6, w=6, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes))


def _toy_data(n=256, seed=0, size=8):
    """Class 1 when the left half is brighter than the right half; images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.6 + 0.2
    y = torch.arange(n) % 2
    x[y == 1, :, :, : size // 2] += 0.1
    x[y == 0, :, :, size // 2:] += 0.1
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
    x, y = _toy_data(128)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    x_test, y_test = _toy_data(128, seed=1)
    assert (model(x_test).argmax(1) == y_test).float().mean() > 0.9, "the toy model should learn its task"
    return model, x_test, y_test


def test_fgsm_on_a_linear_model_is_epsilon_times_the_sign_of_the_analytic_gradient():
    model = _linear_model()
    x = torch.rand(5, 1, 6, 6, dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 0, 1])
    eps = 0.03
    adv = robustness.fgsm(model, x, y, eps, bounds=None)
    weight = model[1].weight.detach()                      # (classes, pixels)
    p = torch.softmax(model(x), dim=1).detach()
    grad = (p - F.one_hot(y, 3).float()) @ weight          # d CE / d x for logits W x + b
    expected = x + eps * grad.sign().reshape(x.shape)
    assert torch.equal(adv, expected)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_perturbation_is_bounded_by_epsilon_and_stays_in_range(trained, attack):
    model, x, y = trained
    x = x.clone()
    x[:, :, 0, :] = 0.0   # pixels at the edges of the valid range must stay inside it
    x[:, :, -1, :] = 1.0
    eps = 0.05
    adv = robustness.ATTACKS[attack](model, x, y, eps)
    assert adv.shape == x.shape
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((adv - x).abs().max()) > eps * 0.9, "the attack should use its budget"


def test_fgsm_without_clipping_moves_every_pixel_by_exactly_epsilon(trained):
    model, x, y = trained
    adv = robustness.fgsm(model, x, y, 0.02, bounds=None)
    delta = (adv - x).abs()
    assert torch.allclose(delta[delta > 0], torch.full_like(delta[delta > 0], 0.02), atol=1e-6)
    assert (delta > 0).float().mean() > 0.9


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model(trained):
    model, x, y = trained
    clean = (model(x).argmax(1) == y).float().mean()
    for eps in (0.03, 0.06):
        acc_fgsm = (model(robustness.fgsm(model, x, y, eps)).argmax(1) == y).float().mean()
        acc_pgd = (model(robustness.pgd(model, x, y, eps, steps=10)).argmax(1) == y).float().mean()
        loss_fgsm = F.cross_entropy(model(robustness.fgsm(model, x, y, eps)), y)
        loss_pgd = F.cross_entropy(model(robustness.pgd(model, x, y, eps, steps=10)), y)
        assert acc_pgd <= acc_fgsm <= clean
        assert loss_pgd >= loss_fgsm - 1e-6
    assert acc_pgd < clean - 0.3, "an epsilon of 0.06 should break the toy model"


def test_pgd_is_reproducible_and_seed_dependent(trained):
    model, x, y = trained
    a = robustness.pgd(model, x[:8], y[:8], 0.05, steps=2, seed=3)
    b = robustness.pgd(model, x[:8], y[:8], 0.05, steps=2, seed=3)
    c = robustness.pgd(model, x[:8], y[:8], 0.05, steps=2, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_attacks_leave_the_model_as_they_found_it(trained):
    model, x, y = trained
    model.train()
    for p in model.parameters():
        p.grad = None
    robustness.pgd(model, x[:4], y[:4], 0.01, steps=2)
    robustness.fgsm(model, x[:4], y[:4], 0.01)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_zero_epsilon_returns_the_images(trained):
    model, x, y = trained
    assert torch.equal(robustness.fgsm(model, x, y, 0.0), x)
    assert torch.equal(robustness.pgd(model, x, y, 0.0), x)


def test_one_logit_models_are_attacked_with_binary_cross_entropy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    x = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    adv = robustness.fgsm(model, x, y, 0.1, bounds=None)
    w = model[1].weight.detach()[0]
    # BCE gradient w.r.t. x is (sigmoid(z) - y) * w; its sign pushes class 1 down and class 0 up
    expected = x + 0.1 * ((torch.sigmoid(model(x)[:, 0].detach()) - y.float())[:, None] * w).sign().reshape(x.shape)
    assert torch.equal(adv, expected)


def test_bad_arguments_are_named():
    model = _linear_model()
    x, y = torch.rand(2, 1, 6, 6), torch.tensor([0, 1])
    with pytest.raises(ParameterError, match="epsilon"):
        robustness.fgsm(model, x, y, -0.1)
    with pytest.raises(ParameterError, match="labels"):
        robustness.fgsm(model, x, torch.tensor([0]), 0.1)
    with pytest.raises(ParameterError, match="steps"):
        robustness.pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(ParameterError, match="unknown attack"):
        robustness.attack(model, x, y, 0.1, method="cw")
    with pytest.raises(ParameterError, match="std"):
        robustness.NormalisedModel(model, 0.5, 0.0)


def test_normalised_model_normalises_inside():
    inner = _linear_model(c=1)
    wrapped = robustness.NormalisedModel(inner, mean=0.4, std=0.2)
    x = torch.rand(3, 1, 6, 6)
    assert torch.allclose(wrapped(x), inner((x - 0.4) / 0.2))
    assert "mean" in dict(wrapped.named_buffers()) and len(list(wrapped.parameters())) == 2


def test_robustness_curve_starts_at_the_clean_accuracy_and_falls(trained):
    model, x, y = trained
    curve = robustness.robustness_curve(model, x, y.numpy(), [0.0, 0.02, 0.08], steps=3, batch_size=50,
                                        progress=False)
    clean = float((model(x).argmax(1) == y).float().mean())
    assert curve["epsilons"] == [0.0, 0.02, 0.08]
    for method in ("fgsm", "pgd"):
        acc = curve[method]["accuracy"]
        assert acc[0] == pytest.approx(clean)
        assert acc[2] < acc[0]
        assert len(curve[method]["auroc"]) == 3
    adv, prob = robustness.attack(model, x, y, 0.02, method="pgd", batch_size=50, steps=3)
    assert adv.shape == x.shape and prob.shape == (len(x), 2) and np.allclose(prob.sum(1), 1, atol=1e-5)
    assert robustness.plot_robustness_curve(curve, marker_epsilon=0.02).axes
