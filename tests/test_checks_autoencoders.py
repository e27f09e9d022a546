"""Lesson 01's autoencoder exercise (medlab.checks.autoencoders): the reference passes, natural mistakes fail.

Also: the cells of lesson 01 tagged ``technique`` that build the autoencoder (encoder, decoder, loss, pretraining
loop, the two autoencoder arms) do what the lesson says: the decoder rebuilds an image of the input's size, the
encoder's weights fit the lesson's classifier with only the head missing, the loop lowers the loss, and the probe
trains its new head only.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medlab import checks
from medlab.checks import autoencoders as ref
from medlab.checks import heads
from medlab.data import make_loader

import notebook_cells


def _verdict(fn):
    return checks.run_cases(checks.exercises()["01.3"], fn)[1]


def test_reference_passes_and_is_mse_plus_mean_abs_code():
    assert _verdict(ref.sparse_autoencoder_loss) is None
    x, r, code = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2), torch.tensor([[-2.0, 2.0], [0.0, 4.0]])
    assert ref.sparse_autoencoder_loss(r, x, code, 0.5).item() == pytest.approx(1.0 + 0.5 * 2.0)


@pytest.mark.parametrize("wrong, why", [
    (lambda r, x, c, s: F.mse_loss(r, x) + s * c.mean(), "absolute value"),  # no abs: negative entries cancel
    (lambda r, x, c, s: F.mse_loss(r, x) + s * c.abs().sum(), "sums"),  # L1 summed, not averaged
    (lambda r, x, c, s: F.mse_loss(r, x) + s * c.abs().flatten(1).sum(1).mean(), "sums"),  # per image sum
    (lambda r, x, c, s: F.mse_loss(r, x) + s * c.pow(2).mean(), "L2"),  # an L2 penalty
    (lambda r, x, c, s: F.mse_loss(r, x), "missing"),  # no penalty at all
    (lambda r, x, c, s: F.mse_loss(r, x, reduction="sum") + s * c.abs().mean(), "values differ"),  # summed error
    (lambda r, x, c, s: (r - x).abs().mean() + s * c.abs().mean(), "values differ"),  # L1 reconstruction error
    (lambda r, x, c, s: (F.mse_loss(r, x) + s * c.abs().mean()).item(), "torch tensor"),  # a float
    (lambda r, x, c, s: (F.mse_loss(r, x) + s * c.abs().mean()).detach(), "no gradient"),
    (lambda r, x, c, s: ((r - x) ** 2).mean((1, 2, 3)) + s * c.abs().mean(), "0-d"),  # one loss per image
])
def test_check_fails_known_wrong_versions(wrong, why):
    failure = _verdict(wrong)
    assert failure is not None and why in failure, failure


# ------------------------------------------------------------------------------ the lesson's cells
def _lesson(arch, width=4):
    """The technique cells of lesson 01 with small stand-ins for what earlier cells define."""
    pretrained_net = heads._small_cnn(1, 2, width, 3, seed=7)

    class Pretrained:
        def network(self, in_channels=1):
            import copy
            return copy.deepcopy(pretrained_net)

    knobs = {"width": width, "lr": 1e-2, "lr_probe": 1e-2, "lr_backbone": 1e-3, "lr_head": 1e-2}
    from tqdm.auto import tqdm
    return notebook_cells.run_tagged("01_transfer_learning", "technique", namespace={
        "arch": arch, "num_classes": 2, "in_channels": 1, "K": knobs, "pretrained": Pretrained(), "tqdm": tqdm})


@pytest.fixture(scope="module")
def lesson():
    return _lesson("small_cnn")


def test_notebook_loss_passes_its_check(lesson):
    assert _verdict(lesson["sparse_autoencoder_loss"]) is None


@pytest.mark.parametrize("arch, size", [("small_cnn", 32), ("small_cnn", 64), ("small_cnn", 28),
                                        ("resnet18", 64)])
def test_autoencoder_rebuilds_an_image_of_the_input_size(arch, size):
    ns = _lesson(arch)
    encoder, decoder = ns["make_autoencoder"](size)
    x = torch.rand(2, 1, size, size)
    code = encoder.eval()(x)
    assert code.dim() == 2 and code.shape[1] < size * size  # a flat code, smaller than the image
    assert decoder.eval()(code).shape == x.shape


def test_autoencoder_loop_lowers_the_loss_and_never_reads_labels(lesson):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(64, 2, generator=g) * 20 + 6
    images = torch.exp(-((xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2) / 30)
    images = images[:, None]
    labels = torch.full((64,), -1)  # an impossible label: a loop that read it would fail
    torch.manual_seed(0)
    encoder, decoder = lesson["make_autoencoder"](32)
    loader = make_loader((images, labels), 16, shuffle=True, seed=0, samples_per_epoch=16 * 60)
    losses = lesson["pretrain_autoencoder"](encoder, decoder, loader, 3e-3, 1e-2)
    assert len(losses) == 60
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])


def test_autoencoder_arms_start_from_the_encoder(lesson):
    torch.manual_seed(0)
    encoder, _ = lesson["make_autoencoder"](32)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(1.0)  # recognisable values
    lesson["ae_weights"] = encoder.state_dict()
    images = torch.rand(40, 1, 32, 32)
    mean, std = lesson["feature_statistics"](lesson["autoencoder_network"](), (images, torch.zeros(40)))
    lesson["ae_mean"], lesson["ae_std"] = mean, std
    probe, opt = lesson["autoencoder_probe"]()
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["fc.1.weight", "fc.1.bias"]
    head, probe.fc = probe.fc, torch.nn.Identity()
    with torch.no_grad():  # the standardisation in front of the head makes the features' mean 0, sd 1
        standardised = head[0](probe.eval()(images))
    probe.fc = head
    assert torch.allclose(standardised.mean(0), torch.zeros(len(mean)), atol=1e-4)
    assert torch.allclose(standardised.std(0), torch.ones(len(mean)), atol=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
    for name, value in encoder.state_dict().items():
        assert torch.equal(probe.state_dict()[name], value), name
    tuned, opt = lesson["autoencoder_fine_tuned"]()
    assert all(p.requires_grad for p in tuned.parameters())
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert torch.equal(tuned.features[0].weight, encoder.features[0].weight)
    assert probe(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    assert {"autoencoder probe", "autoencoder fine-tuned"} <= set(lesson["ARMS"])
