"""Exercises on Dice, as a training loss and as an evaluation metric (lessons 02 and 04).

* 02.1 the soft Dice loss: softmax over the class axis, one-hot target, and
  ``1 - (2 sum(p g) + eps) / (sum(p) + sum(g) + eps)`` per class with the sums
  taken over the whole batch and all pixels ("batch Dice", as nnU-Net does),
  averaged over all classes, background included. The reference is
  :func:`medlab.losses.soft_dice_loss` with ``batch=True``.
* 02.2 Dice from masks, per case: ``2 |P & T| / (|P| + |T|)`` for each case of
  a stack, with the conventions of :mod:`medlab.metrics` (both empty -> 1,
  exactly one empty -> 0). The reference is :func:`medlab.metrics.case_dice`.
* 04.2 Inf-Net's threshold-averaged Dice: per case, min-max normalise the
  probability map, threshold it (strictly greater) at evenly spaced levels
  from 0 to 1 and average the Dice of the masks. The reference is
  :func:`medlab.metrics.threshold_averaged_dice`.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import losses, metrics
from . import Case, Exercise, compare, register

__all__ = ["soft_dice_loss", "dice_score", "threshold_averaged_dice"]


# ---------------------------------------------------------------------------------------
# the references, with the learner's signatures
# ---------------------------------------------------------------------------------------
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch soft Dice loss of logits ``(N, C, H, W)`` against labels ``(N, H, W)``: a scalar tensor."""
    return losses.soft_dice_loss(logits, target, include_background=True, smooth_nr=eps, smooth_dr=eps, batch=True)


def dice_score(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice of each case of two boolean stacks ``(N, H, W)``: ``(N,)``; both empty -> 1, one empty -> 0."""
    return metrics.case_dice(pred, true)


def threshold_averaged_dice(prob: np.ndarray, true: np.ndarray, thresholds: int = 256) -> np.ndarray:
    """Per case ``(N,)``: Dice of ``min-max normalised prob > level`` averaged over ``thresholds`` levels in [0, 1]."""
    return metrics.threshold_averaged_dice(prob, true, thresholds)


# ---------------------------------------------------------------------------------------
# 02.1 soft Dice loss
# ---------------------------------------------------------------------------------------
def _logits(g, *shape):
    return (2.0 * torch.randn(*shape, generator=g)).requires_grad_(True)


def _soft_dice_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    absent_here = torch.randint(0, 3, (4, 16, 16), generator=g)
    absent_here[0] = 0                      # the first image is all background
    absent_here[1][absent_here[1] == 2] = 1  # the second has no class 2
    return [
        Case("a batch of 4 random 3-class 16x16 images", (_logits(g, 4, 3, 16, 16),
                                                          torch.randint(0, 3, (4, 16, 16), generator=g))),
        Case("a batch where some images lack some classes (the first is all background)",
             (_logits(g, 4, 3, 16, 16), absent_here)),
        Case("class 2 absent from the whole batch", (_logits(g, 3, 3, 12, 12),
                                                     torch.randint(0, 2, (3, 12, 12), generator=g))),
        Case("a batch of 1", (_logits(g, 1, 3, 8, 8), torch.randint(0, 3, (1, 8, 8), generator=g))),
        Case("2 classes on a non-square 8x12 image", (_logits(g, 5, 2, 8, 12),
                                                      torch.randint(0, 2, (5, 8, 12), generator=g))),
        Case("4 classes and eps=1.0", (_logits(g, 2, 4, 10, 10), torch.randint(0, 4, (2, 10, 10), generator=g)),
             {"eps": 1.0}),
    ]


def _compare_loss(got, expected, case) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"the loss should be a torch tensor (to backpropagate through), got {type(got).__name__}"
    if got.dim() != 0:
        return f"the loss should be one number (a 0-d tensor), got shape {tuple(got.shape)}"
    if not got.requires_grad:
        return ("the loss carries no gradient: use the softmax probabilities, not argmax or .item(), "
                "so that training can follow it")
    return compare(got, expected, atol=1e-5, rtol=1e-4, where="the loss")


register(Exercise(
    key="02.1", title="soft Dice loss", reference=soft_dice_loss, cases=_soft_dice_cases, compare=_compare_loss,
    hint="softmax over the class axis (dim=1) first; one-hot the target to (N, C, H, W); sum p*g, p and g over "
         "the batch AND the pixels (dims 0, 2, 3) for one Dice per class; add eps above and below; return 1 minus "
         "the mean over all classes, background included.",
))


# ---------------------------------------------------------------------------------------
# 02.2 Dice from masks
# ---------------------------------------------------------------------------------------
def _blobs(rng, n, size=16, p=0.3):
    return rng.random((n, size, size)) < p


def _dice_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    true = _blobs(rng, 6)
    pred = true ^ (rng.random(true.shape) < 0.2)      # the reference with 20 % of the pixels flipped
    empty = np.zeros((3, 12, 12), bool)
    some = _blobs(rng, 3, 12)
    return [
        Case("6 random 16x16 masks, a fifth of the pixels wrong", (pred, true)),
        Case("prediction and reference both empty in every case", (empty, empty.copy())),
        Case("a missed structure: the prediction is empty, the reference is not", (empty, some)),
        Case("a false alarm: the reference is empty, the prediction is not", (some, empty.copy())),
        Case("a mixed stack: identical, both empty, missed, false alarm",
             (np.stack([true[0], np.zeros((16, 16), bool), np.zeros((16, 16), bool), true[2]]),
              np.stack([true[0], np.zeros((16, 16), bool), true[1], np.zeros((16, 16), bool)]))),
        Case("a stack of 1", (_blobs(rng, 1, 8), _blobs(rng, 1, 8))),
    ]


register(Exercise(
    key="02.2", title="Dice from masks, per case", reference=dice_score, cases=_dice_cases,
    hint="one Dice per case: sum over the pixel axes only (axis=(1, 2)), not over the whole stack; "
         "2 * |P & T| / (|P| + |T|); where |P| + |T| is 0 (both empty) the Dice is 1.0, with no eps: "
         "np.where(total == 0, 1.0, 2 * intersection / np.maximum(total, 1)).",
))


# ---------------------------------------------------------------------------------------
# 04.2 threshold-averaged Dice
# ---------------------------------------------------------------------------------------
def _prob_maps(rng, n, size=16):
    """Smooth probability maps in [0.1, 0.7] (not 0..1, so normalising matters) and a reference from them."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.random((n, size, size)), sigma=(0, 2, 2))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    prob = 0.1 + 0.6 * noise
    true = gaussian_filter(rng.random((n, size, size)), sigma=(0, 2, 2)) * 0.4 + noise * 0.6 > 0.5
    return prob, true


def _averaged_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    prob, true = _prob_maps(rng, 5)
    flat = np.full((2, 12, 12), 0.3)
    flat_true = np.zeros((2, 12, 12), bool)
    flat_true[1, 3:6, 3:6] = True
    empty_true = true.copy()
    empty_true[1] = False
    return [
        Case("5 smooth probability maps in [0.1, 0.7] with their references", (prob, true)),
        Case("the same maps, 16 thresholds", (prob, true), {"thresholds": 16}),
        Case("a stack where one case has an empty reference", (prob, empty_true)),
        Case("constant maps (nothing to normalise): one with an empty reference, one without", (flat, flat_true)),
        Case("a stack of 1 map, 32 thresholds", (prob[:1], true[:1]), {"thresholds": 32}),
    ]


register(Exercise(
    key="04.2", title="threshold-averaged Dice (Inf-Net)", reference=threshold_averaged_dice,
    cases=_averaged_cases,
    hint="per case: min-max normalise the map on its own (axis=(1, 2), keepdims=True; guard hi - lo with "
         "np.maximum(hi - lo, 1e-8)); for each of np.linspace(0, 1, thresholds) take the mask norm > level "
         "(strictly) and its Dice per case (both empty -> 1); average over the levels, keeping one value per case.",
))
