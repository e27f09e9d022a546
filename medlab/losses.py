"""Losses for segmentation and classification, written out to be read in a lesson.

Shapes: ``logits`` are raw network outputs of shape (N, C, *spatial) (or
(N, C) for classification); ``target`` holds integer class labels of shape
(N, *spatial) or (N, 1, *spatial). With ``C == 1`` the single channel is the
foreground logit of a binary problem (sigmoid); with ``C >= 2`` classes are
mutually exclusive (softmax).

Conventions (tested against MONAI's ``DiceLoss``/``DiceCELoss``/``FocalLoss``
and torchvision's ``sigmoid_focal_loss``):

* Soft Dice per case and class = (2 * sum(p * g) + smooth_nr) / (sum(p) + sum(g) + smooth_dr);
  the loss is 1 - Dice, averaged over classes and cases (``batch=False``) or
  with sums taken over the whole batch first (``batch=True``).
* The smoothing terms make a class absent from both prediction and target
  score Dice 1 (loss 0), the same convention as :func:`medlab.metrics.dice`.
* ``include_background=False`` leaves channel 0 out of the Dice average
  (with ``C == 1`` there is no background channel to leave out).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ParameterError

__all__ = ["soft_dice_loss", "DiceLoss", "DiceCELoss", "FocalLoss", "focal_loss", "get_loss"]


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Target as a long tensor of shape (N, *spatial)."""
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ParameterError(
            f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: "
            "expected (N, *spatial) or (N, 1, *spatial) integer labels")
    return target.long()


def _probabilities_and_onehot(logits, target):
    """Class probabilities and one-hot target, both (N, K, *spatial)."""
    labels = _labels(target, logits)
    if logits.shape[1] == 1:  # binary, one foreground logit
        probs = torch.sigmoid(logits.float())
        onehot = labels.unsqueeze(1).to(probs.dtype)
    else:
        probs = torch.softmax(logits.float(), dim=1)
        onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    return probs, onehot


def soft_dice_loss(logits, target, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False):
    """Soft Dice loss, 1 - mean soft Dice over classes (and cases).

    Args:
        logits: (N, C, *spatial) raw outputs.
        target: (N, *spatial) or (N, 1, *spatial) integer labels.
        include_background: count channel 0 (C >= 2 only).
        smooth_nr, smooth_dr: added to numerator and denominator; a class
            absent from both prediction and target scores Dice 1.
        batch: sum intersections and volumes over the batch before dividing
            (one Dice per class) instead of one Dice per case and class.
    """
    probs, onehot = _probabilities_and_onehot(logits, target)
    if not include_background and probs.shape[1] > 1:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = tuple(range(2, probs.dim()))          # sum over space
    if batch:
        dims = (0, *dims)                        # ... and over cases
    intersection = (probs * onehot).sum(dims)
    volumes = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + smooth_nr) / (volumes + smooth_dr)
    return 1.0 - dice.mean()


class DiceLoss(nn.Module):
    """Soft Dice loss as a module; see :func:`soft_dice_loss` for the arguments."""

    def __init__(self, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False):
        super().__init__()
        self.include_background = include_background
        self.smooth_nr, self.smooth_dr, self.batch = smooth_nr, smooth_dr, batch

    def forward(self, logits, target):
        return soft_dice_loss(logits, target, self.include_background, self.smooth_nr, self.smooth_dr, self.batch)


class DiceCELoss(nn.Module):
    """``dice_weight * soft Dice + ce_weight * cross-entropy``.

    Dice handles class imbalance (a small lesion weighs as much as the
    background); cross-entropy gives smooth, well-scaled gradients early in
    training. With one output channel the cross-entropy is the binary one.
    """

    def __init__(self, include_background=True, dice_weight=1.0, ce_weight=1.0, smooth_nr=1e-5, smooth_dr=1e-5,
                 batch=False, class_weights=None):
        super().__init__()
        self.dice = DiceLoss(include_background, smooth_nr, smooth_dr, batch)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights,
                                                                                                  dtype=torch.float))

    def forward(self, logits, target):
        labels = _labels(target, logits)
        if logits.shape[1] == 1:
            ce = F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float())
        else:
            ce = F.cross_entropy(logits.float(), labels, weight=self.class_weights)
        return self.dice_weight * self.dice(logits, labels) + self.ce_weight * ce


def focal_loss(logits, target, gamma=2.0, alpha=None, reduction="mean"):
    """Focal loss, -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017).

    ``p_t`` is the predicted probability of the true class: easy, confident
    cases (p_t near 1) are down-weighted so that training focuses on hard
    ones. ``gamma=0`` and ``alpha=None`` give cross-entropy.

    The mean is over cases (and pixels), one term per element: the binary
    form equals torchvision's ``sigmoid_focal_loss(reduction="mean")``.
    MONAI's ``FocalLoss(use_softmax=True)`` also averages over the class axis
    (its non-target classes contribute zeros), so it is this value divided
    by C; medlab keeps the scale of cross-entropy so that ``gamma=0``
    reproduces it exactly.

    Args:
        logits: (N, C, ...) with C >= 2 (softmax), or (N, 1, ...) / (N,)
            binary logits (sigmoid).
        target: integer labels of shape (N, ...) (or (N, 1, ...)).
        gamma: focusing parameter.
        alpha: binary: weight of the positive class (negatives get
            1 - alpha, as in torchvision's ``sigmoid_focal_loss``); multi-class:
            a sequence of per-class weights.
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` (per element).
    """
    if logits.dim() == 1:
        logits = logits[:, None]
    logits = logits.float()
    labels = _labels(target, logits)
    if logits.shape[1] == 1:
        z, y = logits[:, 0], labels.float()
        log_p = F.logsigmoid(z)
        log_not_p = F.logsigmoid(-z)
        log_pt = y * log_p + (1 - y) * log_not_p
        alpha_t = None if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    else:
        log_probs = F.log_softmax(logits, dim=1)
        log_pt = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
        alpha_t = None
        if alpha is not None:
            weights = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if weights.dim() != 1 or weights.numel() != logits.shape[1]:
                raise ParameterError(f"multi-class alpha needs one weight per class ({logits.shape[1]})")
            alpha_t = weights[labels]
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    if alpha_t is not None:
        loss = alpha_t * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ParameterError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class FocalLoss(nn.Module):
    """Focal loss as a module; see :func:`focal_loss`."""

    def __init__(self, gamma=2.0, alpha=None, reduction="mean"):
        super().__init__()
        self.gamma, self.alpha, self.reduction = gamma, alpha, reduction

    def forward(self, logits, target):
        return focal_loss(logits, target, self.gamma, self.alpha, self.reduction)


class _BCEWithLogits(nn.Module):
    """Binary cross-entropy for (N,) or (N, 1) logits against 0/1 labels."""

    def forward(self, logits, target):
        logits = logits.reshape(target.shape) if logits.numel() == target.numel() else logits
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def get_loss(loss) -> nn.Module:
    """A loss from its name, or ``loss`` itself when it is already callable.

    Names: ``'cross_entropy'``, ``'bce'``, ``'dice'``, ``'dice_ce'``, ``'focal'``.
    """
    if callable(loss):
        return loss
    factories = {
        "cross_entropy": nn.CrossEntropyLoss, "ce": nn.CrossEntropyLoss, "bce": _BCEWithLogits,
        "dice": DiceLoss, "dice_ce": DiceCELoss, "focal": FocalLoss,
    }
    if loss is None:
        return nn.CrossEntropyLoss()
    try:
        return factories[str(loss).lower()]()
    except KeyError:
        raise ParameterError(f"unknown loss {loss!r}; use one of {sorted(factories)} or pass a callable") from None
