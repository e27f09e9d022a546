"""Lesson 03's Grad-CAM: exercise 03.2 (medlab.checks.cam) and the notebook's own Grad-CAM.

The check passes the reference and fails the natural mistakes; a stub stops. The cells of lesson 03 tagged
``technique`` (the hook, the map, grad_cam) give the same maps as ``medlab.explain.grad_cam``, which the later
lessons call.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlab import checks, explain
from medlab.models import build_classifier

import notebook_cells


def _verdict(key, fn):
    return checks.run_cases(checks.exercises()[key], fn)[1]


def test_grad_cam_map_reference_passes():
    assert _verdict("03.2", explain.grad_cam_map) is None


@pytest.mark.parametrize("wrong, why", [
    # no ReLU: negative evidence is kept
    (lambda a, g: (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1), "values differ"),
    # the gradient is not averaged over the positions (a gradient-times-activation map)
    (lambda a, g: F.relu((g * a).sum(dim=1)), "values differ"),
    # weights from the activations instead of the gradients (a plain CAM-like average)
    (lambda a, g: F.relu((a.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)), "values differ"),
    # averaged over the channels instead of the positions
    (lambda a, g: F.relu((g.mean(dim=1, keepdim=True) * a).sum(dim=1)), "values differ"),
    # summed over the positions instead of averaged (h * w times too large)
    (lambda a, g: F.relu((g.sum(dim=(2, 3), keepdim=True) * a).sum(dim=1)), "values differ"),
    # the channel axis kept: (N, 1, h, w) instead of (N, h, w)
    (lambda a, g: F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)), "shape"),
    # averaged over the channels at the end instead of summed (K times too small)
    (lambda a, g: F.relu((g.mean(dim=(2, 3), keepdim=True) * a).mean(dim=1)), "values differ"),
    # the absolute value instead of the ReLU
    (lambda a, g: (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1).abs(), "values differ"),
])
def test_grad_cam_map_check_fails_known_wrong_versions(wrong, why):
    message = _verdict("03.2", wrong)
    assert message is not None and why in message


def test_grad_cam_map_check_hints_and_falls_back_to_the_reference(capsys):
    returned = checks.check("03.2", lambda a, g: (g * a).sum(dim=1), quiet=False)
    assert returned is explain.grad_cam_map
    out = capsys.readouterr().out
    assert "exercise 03.2" in out and "averaged over the positions" in out
    assert checks.RESULTS["03.2"].startswith("failed")
    checks.check("03.2", explain.grad_cam_map, quiet=True)
    assert checks.RESULTS["03.2"] == "passed"


def test_grad_cam_map_refuses_mismatched_shapes():
    from medlab.errors import ParameterError

    with pytest.raises(ParameterError, match="both be"):
        explain.grad_cam_map(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))


# ------------------------------------------------------------------------------ the notebook's Grad-CAM
@pytest.fixture(scope="module")
def lesson():
    return notebook_cells.run_tagged("03_covid_cxr_classification", "technique")


@pytest.mark.parametrize("arch, size", [("small_cnn", 32), ("small_cnn", 48), ("resnet18", 64)])
@pytest.mark.parametrize("target", [None, 1])
def test_the_notebook_grad_cam_equals_medlab_explain_grad_cam(lesson, arch, size, target):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=3, in_channels=1, width=8)
    model.eval()
    x = torch.rand(5, 1, size, size)
    expected = explain.grad_cam(model, x, target=target)
    got = lesson["grad_cam"](model, x, target=target)
    assert tuple(got.shape) == expected.shape == (5, size, size)
    assert np.allclose(got.numpy(), expected, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # the lesson's version leaves no gradients behind
    assert not x.requires_grad  # nor marks the caller's images


def test_the_notebook_grad_cam_on_a_named_layer_and_a_batch_of_one(lesson):
    torch.manual_seed(1)
    model = build_classifier("small_cnn", num_classes=3, in_channels=1, width=4)
    x = torch.rand(1, 1, 32, 32)
    layer = model.features[4]  # the second convolution: a finer map
    expected = explain.grad_cam(model, x, layer=layer)
    assert np.allclose(lesson["grad_cam"](model, x, layer=layer).numpy(), expected, atol=1e-5)


def test_the_notebook_hook_keeps_activation_and_gradient_and_removes_itself(lesson):
    layer = torch.nn.Conv2d(1, 2, 3, padding=1)
    hook = lesson["Hook"](layer)
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    out = layer(x)
    (out * 3.0).sum().backward()
    assert torch.equal(hook.activation, out.detach())
    assert torch.allclose(hook.gradient, torch.full_like(out, 3.0))
    hook.remove()
    assert not layer._forward_hooks and not layer._backward_hooks
