"""medlab.losses against MONAI and torchvision."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medlab import losses as L
from medlab.errors import ParameterError

monai_losses = pytest.importorskip("monai.losses")




def random_case(shape=(3, 4, 12, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return logits, target


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("shape", [(3, 4, 12, 10), (2, 3, 5, 6, 7)])
def test_soft_dice_matches_monai(include_background, batch, shape):
    logits, target = random_case(shape)
    ours = L.soft_dice_loss(logits, target, include_background=include_background, batch=batch)
    monai = monai_losses.DiceLoss(to_onehot_y=True, softmax=True, include_background=include_background,
                                  batch=batch)(logits, target[:, None])
    assert ours.item() == pytest.approx(monai.item(), abs=1e-6)
    # the (N, 1, ...) target layout gives the same
    assert L.DiceLoss(include_background, batch=batch)(logits, target[:, None]).item() == pytest.approx(ours.item())


def test_soft_dice_binary_sigmoid_matches_monai():
    logits, _ = random_case((2, 1, 9, 9), seed=1)
    target = (torch.rand(2, 9, 9, generator=torch.Generator().manual_seed(2)) > 0.6).long()
    ours = L.soft_dice_loss(logits, target)
    monai = monai_losses.DiceLoss(sigmoid=True)(logits, target[:, None].float())
    assert ours.item() == pytest.approx(monai.item(), abs=1e-6)


def test_dice_loss_perfect_and_empty_classes():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5] = 1
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40 - 20   # confident, correct logits
    # class 2 is absent from both target and prediction: it scores Dice 1, loss 0 (smoothing convention)
    assert L.soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    assert L.soft_dice_loss(-perfect, target).item() > 0.6


def test_dice_ce_matches_monai_and_is_the_sum():
    logits, target = random_case()
    ours = L.DiceCELoss()(logits, target)
    monai = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True)(logits, target[:, None])
    assert ours.item() == pytest.approx(monai.item(), abs=1e-5)
    parts = L.soft_dice_loss(logits, target) + F.cross_entropy(logits, target)
    assert ours.item() == pytest.approx(parts.item(), abs=1e-6)
    weighted = L.DiceCELoss(include_background=False, dice_weight=0.3, ce_weight=2.0)(logits, target)
    expected = 0.3 * L.soft_dice_loss(logits, target, include_background=False) + 2 * F.cross_entropy(logits, target)
    assert weighted.item() == pytest.approx(expected.item(), abs=1e-6)


def test_focal_gamma_zero_is_cross_entropy():
    logits, target = random_case()
    assert L.focal_loss(logits, target, gamma=0.0).item() == pytest.approx(F.cross_entropy(logits, target).item(),
                                                                           abs=1e-6)
    weights = [0.2, 0.3, 0.1, 0.4]
    manual = (torch.tensor(weights)[target] * F.cross_entropy(logits, target, reduction="none")).mean()
    assert L.focal_loss(logits, target, gamma=0.0, alpha=weights).item() == pytest.approx(manual.item(), abs=1e-6)


def test_focal_binary_matches_torchvision():
    from torchvision.ops import sigmoid_focal_loss

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 1, generator=g) * 3
    target = torch.randint(0, 2, (16,), generator=g)
    for alpha in (None, 0.25):
        ours = L.FocalLoss(gamma=2.0, alpha=alpha)(logits, target)
        tv = sigmoid_focal_loss(logits[:, 0], target.float(), alpha=-1 if alpha is None else alpha, gamma=2.0,
                                reduction="mean")
        assert ours.item() == pytest.approx(tv.item(), abs=1e-6)


def test_focal_softmax_monai_averages_over_classes_differs():
    # MONAI's softmax focal loss averages over the class axis as well, so it is medlab's divided by C.
    logits, target = random_case()
    ours = L.focal_loss(logits, target, gamma=2.0)
    monai = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0)(logits, target[:, None])
    assert ours.item() == pytest.approx(logits.shape[1] * monai.item(), rel=1e-5)


def test_focal_downweights_easy_cases():
    target = torch.tensor([1, 1])
    logits = torch.tensor([[-4.0, 4.0], [0.2, 0.0]])     # one easy, one hard case
    per_case = L.focal_loss(logits, target, gamma=2.0, reduction="none")
    ce = F.cross_entropy(logits, target, reduction="none")
    assert per_case[0] / ce[0] < 1e-3 and per_case[1] / ce[1] > 0.2


def test_losses_have_gradients_and_handle_bf16_logits():
    logits, target = random_case()
    logits = logits.to(torch.bfloat16).requires_grad_()
    for loss in (L.DiceLoss(), L.DiceCELoss(), L.FocalLoss()):
        value = loss(logits, target)
        assert value.dtype == torch.float32
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(grad.float()).all() and grad.abs().sum() > 0


def test_get_loss_and_shape_errors():
    assert isinstance(L.get_loss("dice_ce"), L.DiceCELoss)
    assert isinstance(L.get_loss(None), torch.nn.CrossEntropyLoss)
    fn = lambda a, b: 0  # noqa: E731
    assert L.get_loss(fn) is fn
    with pytest.raises(ParameterError, match="unknown loss"):
        L.get_loss("dice_plus")
    with pytest.raises(ParameterError, match="does not fit"):
        L.soft_dice_loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 5, dtype=torch.long))
