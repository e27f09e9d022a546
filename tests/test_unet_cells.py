"""The technique cells of lessons 02 and 04 (tagged ``technique``) against the package's references.

Lesson 02 writes the U-Net (conv block, down and up steps, assembly) and the soft Dice loss in view;
``medlab.models.UNet`` and ``medlab.losses.soft_dice_loss`` stay the package's references. Lesson 04 writes
the lesion burden with its CT grade and Inf-Net's threshold-averaged Dice.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import medlab
import notebook_cells


@pytest.fixture(scope="module")
def lesson02():
    return notebook_cells.run_tagged("02_segmentation", "technique")


@pytest.fixture(scope="module")
def lesson04():
    return notebook_cells.run_tagged("04_covid_ct_lesion_segmentation", "technique")


def _load_reference_weights(nb_unet, ref):
    """Copy a medlab.models.UNet's weights into the notebook's U-Net, block by block."""
    nb_unet.first.load_state_dict(ref.encoder[0].state_dict())
    for down, block in zip(nb_unet.downs, ref.encoder[1:]):
        down.block.load_state_dict(block.state_dict())
    for up, upsample, block in zip(nb_unet.ups, ref.upsample, ref.decoder):
        up.up.load_state_dict(upsample.state_dict())
        up.block.load_state_dict(block.state_dict())
    nb_unet.head.load_state_dict(ref.head.state_dict())


@pytest.mark.parametrize("in_channels, num_classes, base, depth, size", [
    (1, 3, 8, 3, 64), (1, 4, 4, 2, 32), (3, 2, 16, 4, 32), (1, 3, 4, 1, 8),
])
def test_notebook_unet_is_medlab_unet(lesson02, in_channels, num_classes, base, depth, size):
    torch.manual_seed(0)
    mine = lesson02["UNet"](in_channels, num_classes, base, depth)
    torch.manual_seed(0)
    ref = medlab.models.UNet(in_channels, num_classes, base, depth)
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in ref.parameters())
    # the same batch norm: running statistics that follow the batches at the same rate
    momenta = [[m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)] for net in (mine, ref)]
    assert momenta[0] == momenta[1] == [medlab.models.unet.BATCH_NORM_MOMENTUM] * len(momenta[1])
    # built in the same order from the same seed: the same initial weights, hence the same training runs
    np.testing.assert_array_equal(
        np.sort(np.concatenate([p.detach().flatten().numpy() for p in mine.parameters()])),
        np.sort(np.concatenate([p.detach().flatten().numpy() for p in ref.parameters()])))
    with torch.no_grad():
        for p in ref.parameters():   # make every weight matter, then copy them across
            p.add_(0.05 * torch.randn_like(p))
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    _load_reference_weights(mine, ref)
    x = torch.randn(2, in_channels, size, size)
    mine.eval(), ref.eval()
    with torch.no_grad():
        out, expected = mine(x), ref(x)
    assert out.shape == expected.shape == (2, num_classes, size, size)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_notebook_up_step_concatenates_the_skip(lesson02):
    up = lesson02["Up"](16, 8)
    x, skip = torch.randn(1, 16, 4, 4), torch.randn(1, 8, 8, 8)
    assert up(x, skip).shape == (1, 8, 8, 8)
    assert up.block[0].in_channels == 16  # 8 from the skip + 8 up-sampled


def test_notebook_soft_dice_and_dice_are_the_references(lesson02):
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 3, (4, 16, 16), generator=g)
    torch.testing.assert_close(lesson02["soft_dice_loss"](logits, target),
                               medlab.losses.soft_dice_loss(logits, target, batch=True))
    rng = np.random.default_rng(0)
    p, t = rng.random((5, 8, 8)) < 0.3, rng.random((5, 8, 8)) < 0.3
    p[0], t[0] = False, False
    np.testing.assert_allclose(lesson02["dice_score"](p, t), medlab.metrics.case_dice(p, t))
    assert medlab.checks.RESULTS["02.1"] == "passed" and medlab.checks.RESULTS["02.2"] == "passed"


def test_notebook_burden_and_averaged_dice_are_the_references(lesson04):
    from medlab.data.phantoms import ct_slice, mosmed_band

    batch = ct_slice(10, size=32, seed=1, lesion_size=1.5)
    lesion, lung = batch.masks["lesion"] > 0, batch.masks["lung"] > 0
    burden, grade = lesson04["burden_and_grade"](lesion, lung)
    np.testing.assert_allclose(burden, medlab.metrics.lesion_burden(lesion, lung))
    np.testing.assert_array_equal(grade, mosmed_band(burden))
    prob = np.random.default_rng(0).random((4, 16, 16))
    true = prob > 0.6
    np.testing.assert_allclose(lesson04["threshold_averaged_dice"](prob, true),
                               medlab.metrics.threshold_averaged_dice(prob, true))
    assert medlab.checks.RESULTS["04.1"] == "passed" and medlab.checks.RESULTS["04.2"] == "passed"
