"""Grad-CAM, checked against Captum's LayerGradCam and against models whose evidence lies where we put it."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from medlab import explain, viz
from medlab.errors import ParameterError
from medlab.models import build_classifier

captum_attr = pytest.importorskip("captum.attr", reason="captum (the reference implementation) is in the dev extra")



def _small_cnn(seed=0, num_classes=3):
    torch.manual_seed(seed)
    return build_classifier("small_cnn", num_classes=num_classes, in_channels=1).eval()


def _images(n=4, size=32, seed=0):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _captum(model, layer, images, target, upsample):
    reference = captum_attr.LayerGradCam(model, layer)
    maps = reference.attribute(images, target=target, relu_attributions=True)
    if upsample:
        maps = captum_attr.LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return maps[:, 0].detach().numpy()


@pytest.mark.parametrize("upsample", [False, True])
def test_matches_captum_on_the_small_cnn(upsample):
    model, x = _small_cnn(), _images()
    target = [0, 1, 2, 1]
    ours = explain.grad_cam(model, x, target=target, normalize=False, upsample=upsample)
    reference = _captum(model, model.features, x, torch.tensor(target), upsample)
    assert ours.shape == reference.shape == ((4, 32, 32) if upsample else (4, 4, 4))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    assert ours.max() > 0


def test_matches_captum_on_a_resnet_layer4():
    torch.manual_seed(1)
    model = build_classifier("resnet18", num_classes=2, in_channels=1).eval()
    x = _images(n=2, size=64)
    ours = explain.grad_cam(model, x, target=1, normalize=False, upsample=False)
    reference = _captum(model, model.layer4, x, 1, upsample=False)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)


def test_default_layer_is_the_last_feature_stage():
    assert explain.default_layer(_small_cnn())[0] == "features"
    assert explain.default_layer(build_classifier("resnet18", num_classes=2))[0] == "layer4"
    wrapped = nn.Sequential(nn.Identity(), _small_cnn())
    assert explain.default_layer(wrapped)[0] == "1.features"
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert explain.default_layer(plain)[0] == "2"
    with pytest.raises(ParameterError, match="no Conv2d"):
        explain.default_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def _blob_model():
    """Class 1's logit is the mean of ReLU(image); class 0's is its negative."""
    model = nn.Sequential(nn.Conv2d(1, 1, kernel_size=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[4].weight.copy_(torch.tensor([[-1.0], [1.0]]))
    return model


def test_the_map_lies_where_the_evidence_is():
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 2:6, 3:7] = 1.0  # a bright square, top left
    x[1, 0, 10:14, 9:15] = 2.0  # another, bottom right
    cams = explain.grad_cam(_blob_model(), x, target=1, layer="0", upsample=False)
    np.testing.assert_array_equal(cams > 0, x[:, 0].numpy() > 0)
    np.testing.assert_allclose(cams[x[:, 0].numpy() > 0], 1.0)
    # the class the evidence argues against gets an empty map: ReLU keeps only positive evidence
    assert explain.grad_cam(_blob_model(), x, target=0, layer="0").max() == 0.0


def test_predicted_class_is_the_default_target():
    model, x = _small_cnn(seed=2), _images(n=5, seed=3)
    predicted = model(x).argmax(1).tolist()
    np.testing.assert_array_equal(explain.grad_cam(model, x), explain.grad_cam(model, x, target=predicted))


def test_normalised_maps_span_zero_to_one_and_match_the_input_size():
    cams = explain.grad_cam(_small_cnn(), _images(n=3, size=40))
    assert cams.shape == (3, 40, 40) and cams.dtype == np.float32
    for cam in cams:
        assert cam.min() == 0.0 and (cam.max() == pytest.approx(1.0) or cam.max() == 0.0)


def test_a_layer_followed_by_an_inplace_relu_gives_the_same_map_as_without_inplace():
    model, x = _small_cnn(seed=4), _images(n=3, seed=5)
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    not_inplace = copy.deepcopy(model)
    for m in not_inplace.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    ours = explain.grad_cam(model, x, target=1, layer="features.4", normalize=False)
    reference = explain.grad_cam(not_inplace, x, target=1, layer="features.4", normalize=False)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)
    assert ours.max() > 0


def test_one_logit_models_explain_class_one_and_class_zero_as_opposites():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1))
    x = _images(n=2, size=12)
    pos = explain.grad_cam(model, x, target=1, layer="0", normalize=False, upsample=False)
    neg = explain.grad_cam(model, x, target=0, layer="0", normalize=False, upsample=False)
    assert np.all(np.minimum(pos, neg) == 0) and (pos + neg).max() > 0


def test_model_state_is_left_as_it_was():
    model = _small_cnn()
    model.train()
    for p in model.fc.parameters():
        p.requires_grad_(False)
    explain.grad_cam(model, _images(n=2), batch_size=1)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for p in model.fc.parameters())


def test_batches_give_the_same_maps_as_one_pass():
    model, x = _small_cnn(seed=6), _images(n=5, seed=7)
    np.testing.assert_allclose(explain.grad_cam(model, x, batch_size=2), explain.grad_cam(model, x), atol=1e-6)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(layer="no.such.layer"), "no layer named"),
    (dict(layer=nn.Conv2d(1, 1, 1)), "not part of the model"),
    (dict(target=7), "between 0 and 2"),
    (dict(target=[0, 1]), "2 targets for 4 images"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_are_named(kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        explain.grad_cam(_small_cnn(), _images(), **kwargs)


def test_images_must_be_four_dimensional():
    with pytest.raises(ParameterError, match=r"\(N, C, H, W\)"):
        explain.grad_cam(_small_cnn(), torch.zeros(32, 32))


def test_cam_overlay_draws_each_map_over_its_image():
    images = np.random.default_rng(0).random((3, 1, 16, 16))
    cams = np.random.default_rng(1).random((3, 16, 16))
    fig = viz.cam_overlay(images, cams, titles=["a", "b", "c"], ncols=2)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 3 and all(len(ax.images) == 2 for ax in drawn)
    np.testing.assert_allclose(drawn[1].images[1].get_array(), cams[1])
    assert [ax.get_title() for ax in drawn] == ["a", "b", "c"]
    with pytest.raises(ParameterError, match="cannot lie over"):
        viz.cam_overlay(images, cams[:, :8, :8])
    with pytest.raises(ParameterError, match="2 maps for 3 images"):
        viz.cam_overlay(images, cams[:2])
