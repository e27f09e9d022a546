"""Exercise: temperature scaling (Guo et al., ICML 2017), the fit of one number T.

The calibrated probabilities are ``softmax(logits / T)``. ``T`` is fitted on
held-out cases (the validation split) by minimising the negative
log-likelihood (cross-entropy) of those probabilities; ``T`` must stay positive,
which optimising ``log T`` guarantees.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Case, Exercise, register

__all__ = ["fit_temperature", "nll_at"]


def fit_temperature(logits, labels):
    """The temperature ``T > 0`` minimising the mean NLL of ``softmax(logits / T)`` (L-BFGS on ``log T``).

    Args:
        logits: ``(N, C)`` raw model outputs of held-out cases; labels: ``(N,)`` true classes.

    Returns:
        ``T`` as a Python float.
    """
    z, y = torch.as_tensor(logits).detach().double(), torch.as_tensor(labels).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp())


def nll_at(logits, labels, temperature) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` (nats per case)."""
    z, y = torch.as_tensor(logits).detach().double(), torch.as_tensor(labels).long()
    return float(F.cross_entropy(z / float(temperature), y))


def _logits(g, n, classes, scale, flip=0.0, tail=0.0):
    """Labels drawn from a true model, logits that are ``scale`` times its log-odds.

    ``flip`` of the cases get the wrong-signed logits; ``tail`` of them are made very confident.
    """
    truth = torch.randn(n, classes, generator=g, dtype=torch.float64) * 1.5
    labels = torch.multinomial(truth.softmax(1), 1, generator=g)[:, 0]
    z = truth * scale
    if flip:
        wrong = torch.rand(n, generator=g) < flip
        z[wrong] = -z[wrong]
    if tail:
        loud = torch.rand(n, generator=g) < tail
        z[loud] = z[loud] * 4
    return z.float(), labels


def _cases(seed):
    g = torch.Generator().manual_seed(seed)
    return [
        Case("300 over-confident two-class logits (the best T is above 1)", _logits(g, 300, 2, 3.0)),
        Case("200 timid three-class logits (the best T is below 1)", _logits(g, 200, 3, 0.4)),
        Case("400 two-class logits with a few confidently wrong cases", _logits(g, 400, 2, 1.0, flip=0.1, tail=0.1)),
        Case("150 very timid two-class logits (the best T is close to 0: it must not step below it)",
             _logits(g, 150, 2, 0.05)),
        Case("only 6 cases, four classes", _logits(g, 6, 4, 2.0)),
    ]


def _compare(got, expected, case):
    try:
        value = float(got.detach()) if hasattr(got, "detach") else float(got)
    except (TypeError, ValueError):
        return f"the result should be one number T, got {type(got).__name__}"
    if not math.isfinite(value):
        return f"T = {value} is not a finite number"
    if value <= 0:
        return (f"T = {value:.4g} is not positive: dividing by a negative T turns the predictions around. "
                f"Optimise log T and use T = log_t.exp()")
    if abs(value - expected) <= 0.01 * expected:
        return None
    mine, best = nll_at(*case.args, value), nll_at(*case.args, expected)
    if mine <= best + 1e-4:  # a flat optimum: any T this good is right
        return None
    return (f"T = {value:.4g}, expected {expected:.4g}: the mean NLL of softmax(logits / T) is {mine:.4f} at your T, "
            f"{best:.4f} at the best T")


register(Exercise(
    key="07.2", title="fit the temperature", reference=fit_temperature, cases=_cases, compare=_compare,
    hint="minimise F.cross_entropy(logits / T, labels) over T: divide the logits (not the probabilities), "
         "keep T positive by optimising log_t and using T = log_t.exp(), and run the optimiser to convergence "
         "(torch.optim.LBFGS on [log_t], or a few hundred steps of gradient descent)",
))
