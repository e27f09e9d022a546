"""Exercise: one step of projected gradient descent (PGD), the adversarial attack of Madry et al.

A step moves every pixel by ``alpha`` in the direction that raises the loss
(the sign of the loss's gradient with respect to the input: gradient *ascent*),
then projects the result back into the L-infinity ball of radius ``epsilon``
around the original image and clips it to the valid image range [0, 1]. FGSM
(Goodfellow et al.) is the special case of one step from the image itself with
``alpha = epsilon``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import Case, Exercise, register

__all__ = ["pgd_step"]


def pgd_step(model, x_adv, x, y, epsilon, alpha):
    """One PGD step from ``x_adv``, kept within ``epsilon`` of ``x`` (L-inf) and inside [0, 1].

    Args:
        model: a classifier returning logits ``(N, classes)``.
        x_adv: ``(N, C, H, W)`` the current adversarial images (``x`` itself for the first step).
        x: ``(N, C, H, W)`` the original images in [0, 1].
        y: ``(N,)`` true classes.
        epsilon: the L-inf budget; alpha: the step size (image units).

    Returns:
        ``(N, C, H, W)`` the next adversarial images (detached).
    """
    x_adv = x_adv.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    x_next = x_adv.detach() + alpha * grad.sign()
    x_next = torch.min(torch.max(x_next, x - epsilon), x + epsilon)
    return x_next.clamp(0.0, 1.0)


def _model(channels, classes, size, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * size * size, classes))
    return model.eval()


def _cases(seed):
    g = torch.Generator().manual_seed(seed)
    cases = []
    x = torch.rand(4, 1, 12, 12, generator=g)
    y = torch.tensor([0, 1, 1, 0])
    cases.append(Case("the first step (FGSM: from the image itself, alpha = epsilon) on 4 grey 12x12 images",
                      (_model(1, 2, 12, seed), x, x.clone(), y, 0.06, 0.06)))
    x = torch.rand(4, 1, 12, 12, generator=g)
    start = (x + 0.05 * torch.randn(x.shape, generator=g).sign()).clamp(0, 1)  # on the edge of the ball
    cases.append(Case("a later step that starts on the edge of the epsilon-ball (4 grey 12x12 images)",
                      (_model(1, 2, 12, seed + 1), start, x, torch.tensor([1, 0, 1, 0]), 0.05, 0.03)))
    x = torch.rand(1, 3, 8, 8, generator=g)
    cases.append(Case("a batch of 1 colour 8x8 image and a 3-class model",
                      (_model(3, 3, 8, seed + 2), x, x.clone(), torch.tensor([2]), 0.03, 0.01)))
    x = (torch.rand(3, 1, 10, 10, generator=g) * 3 - 1).clamp(0, 1)  # many pixels exactly 0 or 1
    cases.append(Case("images with black (0) and saturated (1) pixels",
                      (_model(1, 2, 10, seed + 3), x, x.clone(), torch.tensor([0, 1, 0]), 0.1, 0.1)))
    x = torch.rand(2, 1, 8, 8, generator=g)
    cases.append(Case("a budget epsilon = 0 (nothing may change)",
                      (_model(1, 2, 8, seed + 4), x, x.clone(), torch.tensor([1, 0]), 0.0, 0.02)))
    return cases


def _compare(got, expected, case):
    _, x_adv, x, _, epsilon, alpha = case.args
    if not isinstance(got, torch.Tensor):
        return f"the result should be a tensor of shape {tuple(expected.shape)}, got {type(got).__name__}"
    got = got.detach().float().cpu()
    if got.shape != expected.shape:
        return f"the result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if not torch.isfinite(got).all():
        return "the result contains nan or inf"
    if got.min() < -1e-6 or got.max() > 1 + 1e-6:
        return (f"values from {float(got.min()):.3f} to {float(got.max()):.3f} leave the valid image range [0, 1]: "
                f"clip the attacked image with .clamp(0, 1)")
    if (got - x).abs().max() > epsilon + 1e-6:
        return (f"a pixel moved {float((got - x).abs().max()):.4f} from the original image, more than epsilon = "
                f"{epsilon}: project back into the epsilon-ball (keep x_adv between x - epsilon and x + epsilon)")
    wrong = ~torch.isclose(got, expected, atol=1e-5, rtol=0)
    if wrong.float().mean() <= 0.01:  # a gradient within rounding of zero may flip a pixel's sign
        return None
    step_got, step_expected = got - x_adv, expected - x_adv
    opposite = (step_got * step_expected < 0) & wrong
    if opposite.sum() > 0.5 * wrong.sum():
        return (f"{int(opposite.sum())} of {got.numel()} pixels moved the wrong way: an attack climbs the loss "
                f"(x + alpha * sign(gradient)); a minus sign is gradient descent, which helps the model")
    free = (step_expected.abs() - alpha).abs() < 1e-6  # pixels neither projected nor clipped
    if free.any() and ((step_got[free].abs() - alpha).abs() > 1e-5).float().mean() > 0.5:
        return (f"pixels that nothing clips should move by exactly alpha = {alpha}; yours moved by "
                f"{float(step_got[free].abs().mean()):.3g} on average: take the sign of the gradient")
    return (f"{int(wrong.sum())} of {got.numel()} pixels differ from the expected step "
            f"(largest difference {float((got - expected).abs().max()):.3g})")


register(Exercise(
    key="07.3", title="one PGD step", reference=pgd_step, cases=_cases, compare=_compare,
    hint="gradient of the cross-entropy with respect to x_adv (x_adv.requires_grad_()), then "
         "x_adv + alpha * grad.sign() (ascent: the attack raises the loss), then clamp to x - epsilon .. x + epsilon, "
         "then clamp to 0 .. 1",
))
