"""Calibration: does a predicted probability of 0.8 come true 8 times in 10?

A classifier is *calibrated* when, among the cases it gives probability ``p``,
a fraction ``p`` are positive. Modern networks are often over-confident
(Guo et al., ICML 2017). The measures (expected calibration error and the
reliability curve) are in :mod:`medlab.metrics`; this module adds the fix Guo
et al. found hard to beat:

**Temperature scaling.** Divide the logits by one number ``T > 0`` before the
softmax. ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens
timid ones; the predicted class never changes (dividing by a positive number
keeps the order of the logits), so accuracy and AUROC stay exactly the same.
``T`` is fitted on held-out data (the validation split, never the test split)
by minimising the negative log-likelihood, here with L-BFGS on ``log T`` so
that ``T`` stays positive.

Logits are ``(N, C)`` (softmax over C >= 2 classes) or ``(N,)`` / ``(N, 1)``
(one logit, sigmoid; the label is 1 for the positive class).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ParameterError

__all__ = ["fit_temperature", "apply_temperature", "nll", "TemperatureScaled", "calibration_report",
           "plot_reliability_comparison"]


def _as_tensors(logits, labels):
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).detach()
    z = z.to(torch.float64).cpu()
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu().long()
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim not in (1, 2):
        raise ParameterError(f"logits must have shape (N, classes) or (N,), got {tuple(z.shape)}")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ParameterError(f"labels must be 1D with one class per case ({z.shape[0]}), got {tuple(y.shape)}")
    if z.shape[0] == 0:
        raise ParameterError("temperature scaling needs at least one case")
    high = z.shape[1] if z.ndim == 2 else 2
    if y.min() < 0 or y.max() >= high:
        raise ParameterError(f"labels must lie in 0..{high - 1}, got {sorted(set(y.tolist()))[:10]}")
    if not torch.isfinite(z).all():
        raise ParameterError("logits contain inf or nan; check the model's outputs")
    return z, y


def _nll(z, y, temperature):
    if z.ndim == 1:
        return F.binary_cross_entropy_with_logits(z / temperature, y.to(z.dtype))
    return F.cross_entropy(z / temperature, y)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (cross-entropy, nats per case) of ``softmax(logits / T)``."""
    if not temperature > 0:
        raise ParameterError(f"temperature must be > 0, got {temperature}")
    z, y = _as_tensors(logits, labels)
    return float(_nll(z, y, float(temperature)))


def fit_temperature(logits, labels, max_iter: int = 100, initial: float = 1.0) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on these cases.

    Args:
        logits: ``(N, C)`` or ``(N,)`` raw model outputs of a **held-out**
            split (the validation split).
        labels: ``(N,)`` true classes.
        max_iter: L-BFGS iterations (it converges in a few for one parameter).
        initial: the starting temperature.

    Returns:
        ``T > 0`` as a float. The NLL at ``T`` is never above the NLL at
        ``initial`` (if the optimiser fails to improve, ``initial`` is returned).
    """
    if not initial > 0:
        raise ParameterError(f"initial temperature must be > 0, got {initial}")
    z, y = _as_tensors(logits, labels)
    log_t = torch.tensor([float(np.log(initial))], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=int(max_iter), line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = _nll(z, y, log_t.exp())
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature) or temperature <= 0:
        return float(initial)
    with torch.no_grad():
        if float(_nll(z, y, temperature)) > float(_nll(z, y, float(initial))):
            return float(initial)
    return temperature


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Probabilities ``softmax(logits / T)`` (``(N, C)``), or ``sigmoid(logit / T)`` (``(N,)``) for one logit."""
    if not temperature > 0:
        raise ParameterError(f"temperature must be > 0, got {temperature}")
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).detach().cpu().double()
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim == 1:
        return torch.sigmoid(z / temperature).numpy()
    return torch.softmax(z / temperature, dim=1).numpy()


class TemperatureScaled(nn.Module):
    """``model`` whose logits are divided by a fixed temperature (a drop-in calibrated model)."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ParameterError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x):
        return self.model(x) / self.temperature


def calibration_report(logits, labels, temperature: float = 1.0, n_bins: int = 10) -> dict:
    """ECE, NLL, Brier score and accuracy of ``softmax(logits / T)`` as plain floats.

    ECE follows :func:`medlab.metrics.expected_calibration_error` (binary:
    probability of class 1 against the fraction of positives).
    """
    from . import metrics

    z, y = _as_tensors(logits, labels)
    prob = apply_temperature(z, temperature)
    p1 = prob if prob.ndim == 1 else (prob[:, 1] if prob.shape[1] == 2 else prob)
    labels_np = y.numpy()
    if prob.ndim == 1 or prob.shape[1] == 2:
        brier = float(np.mean((p1 - labels_np) ** 2))
        pred = (p1 >= 0.5).astype(int)
    else:
        onehot = np.eye(prob.shape[1])[labels_np]
        brier = float(np.mean(np.sum((prob - onehot) ** 2, axis=1)))
        pred = prob.argmax(1)
    return {"ece": metrics.expected_calibration_error(labels_np, p1, n_bins),
            "nll": float(_nll(z, y, float(temperature))), "brier": brier,
            "accuracy": float(np.mean(pred == labels_np)), "temperature": float(temperature)}


def plot_reliability_comparison(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], n_bins: int = 10,
                                title: str | None = None):
    """Several reliability curves on one diagram, with each one's ECE in the legend.

    Args:
        curves: ``(label, y_true, y_prob)`` triples; ``y_prob`` as
            :func:`medlab.metrics.reliability_curve` takes it (class-1
            probability, ``(N, 2)`` probabilities, or ``(N, C)`` for the
            top-label reading).
        n_bins: equal-width bins on [0, 1].

    Returns:
        A Figure: the diagram above a histogram of each curve's predicted probabilities.
    """
    from matplotlib.figure import Figure

    from . import metrics

    if not curves:
        raise ParameterError("plot_reliability_comparison needs at least one (label, y_true, y_prob)")
    fig = Figure(figsize=(5.2, 6.0), layout="constrained")
    ax, ax_hist = fig.subplots(2, 1, height_ratios=[3, 1.2], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="perfect calibration")
    edges = np.linspace(0, 1, n_bins + 1)
    for i, (label, y_true, y_prob) in enumerate(curves):
        curve = metrics.reliability_curve(y_true, y_prob, n_bins)
        ece = metrics.expected_calibration_error(y_true, y_prob, n_bins)
        ax.plot(curve.confidence, curve.observed, "o-", color=f"C{i}", label=f"{label} (ECE {ece:.3f})")
        p = np.asarray(y_prob, dtype=float)
        p = p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else (p.max(1) if p.ndim == 2 else p)
        ax_hist.hist(p, bins=edges, histtype="step", color=f"C{i}", lw=1.5)
    ax.set(ylabel="observed frequency of class 1" if all(np.ndim(c[2]) == 1 or np.shape(c[2])[1] == 2
                                                          for c in curves) else "accuracy",
           xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title or f"reliability diagram ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.set(xlabel="predicted probability", ylabel="cases")
    return fig
