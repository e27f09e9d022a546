"""Exercises 02.1 (soft Dice loss), 02.2 (Dice from masks) and 04.2 (threshold-averaged Dice):
the references pass, the natural mistakes fail, a stub stops the notebook."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlab import checks
from medlab.checks import dice as ref


def _verdict(key, fn):
    return checks.run_cases(checks.exercises()[key], fn)[1]


# ------------------------------------------------------------------------------ 02.1 soft Dice loss
def _dice_loss(logits, target, eps=1e-5, dims=(0, 2, 3), softmax=True, background=True, onehot_only=False):
    probs = logits.softmax(1) if softmax else logits
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    if not background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    inter = (probs * onehot).sum(dims)
    volumes = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (volumes + eps)).mean()


def test_soft_dice_reference_and_a_written_version_pass():
    assert _verdict("02.1", ref.soft_dice_loss) is None
    assert _verdict("02.1", _dice_loss) is None
    answer = checks.check("02.1", _dice_loss, quiet=True)
    assert answer is _dice_loss and checks.RESULTS["02.1"] == "passed"


@pytest.mark.parametrize("wrong, why", [
    (lambda lo, t, eps=1e-5: _dice_loss(lo, t, eps, dims=(2, 3)), "per-image Dice instead of batch Dice"),
    (lambda lo, t, eps=1e-5: _dice_loss(lo, t, eps, softmax=False), "missing softmax"),
    (lambda lo, t, eps=1e-5: _dice_loss(lo, t, eps, background=False), "background left out"),
    (lambda lo, t, eps=1e-5: _dice_loss(lo, t, 0.0), "no eps"),
    (lambda lo, t, eps=1e-5: _dice_loss(lo.sigmoid(), t, eps, softmax=False), "sigmoid per channel"),
    (lambda lo, t, eps=1e-5: 1 - (1 - _dice_loss(lo, t, eps)), "ok"),  # same value: must pass
    (lambda lo, t, eps=1e-5: _dice_loss(lo, t, eps).item(), "a float, not a tensor"),
    (lambda lo, t, eps=1e-5: _dice_loss(F.one_hot(lo.argmax(1), lo.shape[1]).permute(0, 3, 1, 2).float(), t, eps,
                                        softmax=False), "hard argmax: no gradient"),
    (lambda lo, t, eps=1e-5: _dice_loss(lo, t, eps, dims=(0, 1, 2, 3)), "one Dice pooled over the classes"),
])
def test_soft_dice_check_fails_known_wrong_versions(wrong, why):
    verdict = _verdict("02.1", wrong)
    if why == "ok":
        assert verdict is None
        return
    assert verdict is not None, why
    answer = checks.check("02.1", wrong, quiet=True)
    assert answer is ref.soft_dice_loss and checks.RESULTS["02.1"].startswith("failed")


def test_soft_dice_reference_is_the_package_loss_with_batch_sums():
    from medlab.losses import DiceLoss

    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(3, 3, 8, 8, generator=g), torch.randint(0, 3, (3, 8, 8), generator=g)
    assert torch.allclose(ref.soft_dice_loss(logits, target), DiceLoss(batch=True)(logits, target))
    assert not torch.allclose(ref.soft_dice_loss(logits, target), DiceLoss(batch=False)(logits, target))


# ------------------------------------------------------------------------------ 02.2 Dice from masks
def _case_dice(pred, true, both_empty=1.0, axes=(1, 2), eps=0.0):
    inter = (pred & true).sum(axes)
    total = pred.sum(axes) + true.sum(axes)
    if eps:
        return (2 * inter + eps) / (total + eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, both_empty, 2 * inter / total)


def test_dice_from_masks_reference_and_a_written_version_pass():
    assert _verdict("02.2", ref.dice_score) is None
    assert _verdict("02.2", _case_dice) is None
    from medlab.metrics import dice, per_case

    rng = np.random.default_rng(0)
    p, t = rng.random((5, 9, 9)) < 0.3, rng.random((5, 9, 9)) < 0.3
    np.testing.assert_allclose(ref.dice_score(p, t), per_case(dice, p, t))


@pytest.mark.parametrize("wrong, why", [
    (lambda p, t: _case_dice(p, t, both_empty=np.nan), "0/0 -> nan for two empty masks"),
    (lambda p, t: _case_dice(p, t, both_empty=0.0), "two empty masks scored 0"),
    (lambda p, t: _case_dice(p, t, eps=1.0), "smoothed: one empty mask no longer scores 0"),
    (lambda p, t: _case_dice(p, t, axes=(0, 1, 2)), "pooled over the stack: one number"),
    (lambda p, t: np.where((p | t).sum((1, 2)) == 0, 1.0, (p & t).sum((1, 2)) / np.maximum((p | t).sum((1, 2)), 1)),
     "IoU instead of Dice"),
    (lambda p, t: np.full(len(p), np.mean(_case_dice(p, t))), "the mean repeated"),
])
def test_dice_from_masks_check_fails_known_wrong_versions(wrong, why):
    assert _verdict("02.2", wrong) is not None, why


# ------------------------------------------------------------------------------ 04.2 threshold-averaged Dice
def _averaged(prob, true, thresholds=256, normalise=True, levels=None, pooled=False, strict=True):
    if normalise:
        lo, hi = prob.min((1, 2), keepdims=True), prob.max((1, 2), keepdims=True)
        prob = (prob - lo) / np.maximum(hi - lo, 1e-8)
    levels = np.linspace(0, 1, thresholds) if levels is None else levels
    scores = []
    for level in levels:
        mask = prob > level if strict else prob >= level
        if pooled:
            scores.append(np.full(len(prob), _case_dice(mask, true, axes=(0, 1, 2))))
        else:
            scores.append(_case_dice(mask, true))
    return np.mean(scores, axis=0)


def test_threshold_averaged_reference_and_a_written_version_pass():
    assert _verdict("04.2", ref.threshold_averaged_dice) is None
    assert _verdict("04.2", _averaged) is None


@pytest.mark.parametrize("wrong, why", [
    (lambda p, t, thresholds=256: _averaged(p, t, levels=[0.5]), "thresholded once at 0.5"),
    (lambda p, t, thresholds=256: _case_dice(p > 0.5, t), "thresholded once at 0.5, unnormalised"),
    (lambda p, t, thresholds=256: _averaged(p, t, thresholds, pooled=True), "pooled over images at each level"),
    (lambda p, t, thresholds=256: np.full(len(p), _averaged(p, t, thresholds).mean()), "averaged over images"),
    (lambda p, t, thresholds=256: _averaged(p, t, thresholds, normalise=False), "no min-max normalisation"),
    (lambda p, t, thresholds=256: _averaged((p - p.min()) / (p.max() - p.min()), t, thresholds, normalise=False),
     "normalised over the whole stack, not per case"),
    (lambda p, t, thresholds=256: _averaged(p, t, 256), "ignores the thresholds argument"),
    (lambda p, t, thresholds=256: _averaged(p, t, thresholds, strict=False), ">= instead of >"),
])
def test_threshold_averaged_check_fails_known_wrong_versions(wrong, why):
    assert _verdict("04.2", wrong) is not None, why
