"""Temperature scaling (medlab.calibration)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medlab import calibration, metrics
from medlab.errors import ParameterError



def _overconfident(n=4000, k=3, scale=4.0, seed=0):
    """Labels drawn from softmax(a); logits scale * a: the right temperature is ``scale``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1.0, (n, k))
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return a * scale, y


def test_fit_temperature_recovers_the_scale_and_reduces_nll():
    logits, y = _overconfident(scale=4.0)
    t = calibration.fit_temperature(logits, y)
    assert t == pytest.approx(4.0, rel=0.1)
    assert calibration.nll(logits, y, t) < calibration.nll(logits, y, 1.0)


def test_under_confident_logits_get_a_temperature_below_one():
    logits, y = _overconfident(scale=0.3, seed=1)
    t = calibration.fit_temperature(logits, y)
    assert t < 1.0 and t == pytest.approx(0.3, rel=0.15)
    assert calibration.nll(logits, y, t) < calibration.nll(logits, y, 1.0)


def test_temperature_keeps_the_argmax_and_lowers_ece_on_the_fitted_data():
    logits, y = _overconfident(scale=5.0, k=2, seed=2)
    t = calibration.fit_temperature(logits, y)
    before, after = calibration.apply_temperature(logits, 1.0), calibration.apply_temperature(logits, t)
    assert np.array_equal(before.argmax(1), after.argmax(1))
    assert metrics.auroc(y, after) == pytest.approx(metrics.auroc(y, before))
    assert metrics.expected_calibration_error(y, after) < metrics.expected_calibration_error(y, before)


def test_nll_is_cross_entropy_of_the_scaled_logits():
    logits, y = _overconfident(n=50, seed=3)
    expected = F.cross_entropy(torch.tensor(logits / 2.0), torch.tensor(y)).item()
    assert calibration.nll(logits, y, 2.0) == pytest.approx(expected, rel=1e-9)


def test_one_logit_binary_models_use_the_sigmoid():
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1.5, 3000)
    y = (rng.uniform(size=a.size) < 1 / (1 + np.exp(-a))).astype(int)
    t = calibration.fit_temperature(3 * a[:, None], y)
    assert t == pytest.approx(3.0, rel=0.15)
    prob = calibration.apply_temperature(3 * a, t)
    assert prob.shape == (a.size,) and np.all((prob > 0) & (prob < 1))
    assert calibration.nll(3 * a, y, t) < calibration.nll(3 * a, y)


def test_report_and_wrapper_agree_with_metrics():
    logits, y = _overconfident(n=400, k=2, seed=5)
    report = calibration.calibration_report(logits, y, temperature=2.0)
    prob = calibration.apply_temperature(logits, 2.0)
    assert report["ece"] == pytest.approx(metrics.expected_calibration_error(y, prob[:, 1]))
    assert report["accuracy"] == pytest.approx(np.mean(prob.argmax(1) == y))
    assert report["brier"] == pytest.approx(np.mean((prob[:, 1] - y) ** 2))
    inner = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    assert torch.allclose(calibration.TemperatureScaled(inner, 2.0)(x), inner(x) / 2.0)


def test_bad_inputs_are_named():
    with pytest.raises(ParameterError, match="temperature"):
        calibration.apply_temperature(np.zeros((2, 2)), 0.0)
    with pytest.raises(ParameterError, match="labels"):
        calibration.fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ParameterError, match="labels must lie"):
        calibration.fit_temperature(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ParameterError, match="inf or nan"):
        calibration.fit_temperature(np.array([[0.0, np.inf]]), [0])


def test_reliability_comparison_figure_has_one_curve_per_input():
    logits, y = _overconfident(n=300, k=2, seed=6)
    fig = calibration.plot_reliability_comparison(
        [("before", y, calibration.apply_temperature(logits, 1.0)), ("after", y, calibration.apply_temperature(logits, 5))])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(lbl.startswith("before (ECE") for lbl in labels) and any(lbl.startswith("after") for lbl in labels)
