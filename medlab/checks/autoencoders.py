"""Exercises on autoencoders trained without labels (lesson 01).

* 01.3 ``sparse_autoencoder_loss(reconstruction, images, code, sparsity)``: the
  loss of a sparse autoencoder, the mean squared reconstruction error over every
  pixel of the batch plus ``sparsity`` times the mean absolute value of the code
  (an L1 penalty that pushes most code entries to zero), as one scalar tensor
  that carries gradients. ``code`` may be a flat vector per image ``(N, D)`` or a
  feature map ``(N, C, h, w)``; both means run over every element.

The classic sparse autoencoder (Ng's lecture notes) penalises the KL divergence
between a target mean activation and each unit's mean activation over the batch;
the L1 penalty is the simpler form most deep learning code uses, and the one the
lesson writes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Case, Exercise, compare, register

__all__ = ["sparse_autoencoder_loss"]


def sparse_autoencoder_loss(reconstruction: torch.Tensor, images: torch.Tensor, code: torch.Tensor,
                            sparsity: float) -> torch.Tensor:
    """The reference of 01.3: ``mean((reconstruction - images)**2) + sparsity * mean(|code|)``, a 0-d tensor."""
    return F.mse_loss(reconstruction, images) + sparsity * code.abs().mean()


def _grad(t: torch.Tensor) -> torch.Tensor:
    return t.requires_grad_(True)


def _cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 1, 16, 16, generator=g)
    near = images + 0.1 * torch.randn(images.shape, generator=g)
    signed = torch.randn(4, 8, 4, 4, generator=g)  # negative entries: |code| is not code
    return [
        Case("a batch of 4 grey 16x16 images, a feature-map code (4, 8, 4, 4) with negative entries, sparsity 0.1",
             (_grad(near.clone()), images, _grad(signed.clone()), 0.1)),
        Case("a flat code (N, D) of ReLU outputs (all >= 0), sparsity 1e-3",
             (_grad(torch.rand(6, 1, 8, 8, generator=g)), torch.rand(6, 1, 8, 8, generator=g),
              _grad(torch.relu(torch.randn(6, 32, generator=g))), 1e-3)),
        Case("sparsity 0: the loss is the reconstruction error alone",
             (_grad(torch.rand(3, 1, 8, 8, generator=g)), torch.rand(3, 1, 8, 8, generator=g),
              _grad(torch.randn(3, 16, generator=g)), 0.0)),
        Case("a large sparsity (10) and a perfect reconstruction: the loss is the penalty alone",
             (_grad(images.clone()), images, _grad(torch.randn(4, 5, generator=g)), 10.0)),
        Case("3-channel 12x10 images, a batch of 1",
             (_grad(torch.rand(1, 3, 12, 10, generator=g)), torch.rand(1, 3, 12, 10, generator=g),
              _grad(torch.randn(1, 4, 3, 3, generator=g)), 0.5)),
    ]


def _compare(got, expected, case: Case) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"the loss should be a torch tensor (to backpropagate through), got {type(got).__name__}"
    if got.dim() != 0:
        return f"the loss should be one number (a 0-d tensor), got shape {tuple(got.shape)}"
    if not got.requires_grad:
        return "the loss carries no gradient: compute it from the tensors, without .item(), .detach() or numpy"
    reconstruction, images, code, sparsity = case.args
    failure = compare(got, expected, atol=1e-6, rtol=1e-4, where="the loss")
    if failure is None:
        return None
    error = F.mse_loss(reconstruction, images)
    if torch.allclose(got, error + sparsity * code.mean(), rtol=1e-4, atol=1e-6):
        return "the penalty uses the code's mean, not the mean of its absolute value: negative entries cancel"
    if torch.allclose(got, error + sparsity * code.abs().sum(), rtol=1e-4, atol=1e-6) or \
            torch.allclose(got, error + sparsity * code.abs().flatten(1).sum(1).mean(), rtol=1e-4, atol=1e-6):
        return "the penalty sums |code|; this lesson takes its mean over every element (code.abs().mean())"
    if torch.allclose(got, error + sparsity * code.pow(2).mean(), rtol=1e-4, atol=1e-6):
        return "the penalty squares the code (L2); a sparsity penalty takes its absolute value (L1)"
    if torch.allclose(got, error, rtol=1e-4, atol=1e-6):
        return "the sparsity penalty is missing: add sparsity * code.abs().mean()"
    return failure


register(Exercise(
    key="01.3", title="the sparse autoencoder loss", reference=sparse_autoencoder_loss, cases=_cases,
    compare=_compare,
    hint="F.mse_loss(reconstruction, images) (the mean over every pixel of the batch) plus sparsity times "
         "code.abs().mean() (the mean absolute value over every element of the code); return the tensor, "
         "not .item()."))
