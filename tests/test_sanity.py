"""Saliency sanity checks (medlab.sanity): cascading randomisation and map similarity."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from medlab import sanity
from medlab.errors import ParameterError
from medlab.explain import grad_cam
from medlab.models import SmallCNN



@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=2, width=4, depth=2).eval()


def test_learnable_layers_and_cascade_layers(model):
    names = sanity.learnable_layers(model)
    assert names == ["features.0", "features.4", "fc"]
    assert sanity.cascade_layers(model, stages=6) == ["fc", "features.4", "features.0"]
    assert sanity.cascade_layers(model, stages=2) == ["fc", "features.0"]


def test_randomise_weights_changes_the_layer_and_those_above_only(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = sanity.randomise_weights(model, "features.4", seed=1)
    after = clone.state_dict()
    assert torch.equal(after["features.0.weight"], before["features.0.weight"])
    assert not torch.equal(after["features.4.weight"], before["features.4.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items()), "the original must not change"
    again = sanity.randomise_weights(model, "features.4", seed=1)
    assert torch.equal(again.state_dict()["fc.weight"], after["fc.weight"])
    with pytest.raises(ParameterError, match="not a convolution"):
        sanity.randomise_weights(model, "pool")


def test_rank_correlation_matches_scipy_and_handles_constant_maps():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 8, 8)), rng.random((3, 8, 8))
    b[1] = a[1] ** 2                     # same ranking
    b[2] = np.round(b[2], 1)             # ties
    ours = sanity.rank_correlation(a, b)
    for i in range(3):
        assert ours[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel()).statistic)
    assert ours[1] == pytest.approx(1.0)
    assert sanity.rank_correlation(a[0], -a[0])[0] == pytest.approx(-1.0)
    assert np.isnan(sanity.rank_correlation(np.zeros((1, 4, 4)), a[:1, :4, :4])[0])
    assert sanity.ssim(a, a) == pytest.approx(np.ones(3))
    assert np.all(sanity.ssim(a, b) < 1)


def test_cascade_tells_a_model_dependent_map_from_one_that_ignores_the_model(model):
    torch.manual_seed(1)
    x = torch.rand(4, 1, 16, 16)
    # an "explanation" that is just the image: it cannot change when the model does
    edge = sanity.randomisation_cascade(model, x, lambda m, imgs: imgs[:, 0].numpy(), progress=False)
    assert edge["stages"] == ["trained", "fc", "features.4", "features.0"]
    assert np.allclose(np.asarray(edge["rank_correlation"]), 1.0)
    cam = sanity.randomisation_cascade(model, x, lambda m, imgs: grad_cam(m, imgs, target=1), progress=False)
    assert np.allclose(cam["rank_correlation"][0], 1.0)
    assert np.nanmean(cam["rank_correlation"][-1]) < 0.9
    assert len(cam["maps"]) == 4 and cam["maps"][1].shape == (4, 16, 16)
    fig = sanity.plot_cascade(x, cam, n_images=2)
    assert len(fig.axes) == 2 * 4 + 1


def test_a_map_that_vanishes_under_randomisation_counts_as_uncorrelated(model):
    x = torch.rand(2, 1, 16, 16)
    trained_map = np.random.default_rng(0).random((2, 16, 16))

    def explain(m, imgs):
        return trained_map if m is model else np.zeros((2, 16, 16))

    cascade = sanity.randomisation_cascade(model, x, explain, progress=False)
    assert np.allclose(cascade["rank_correlation"][-1], 0.0)
    raw = sanity.randomisation_cascade(model, x, explain, progress=False, constant_as=None)
    assert np.all(np.isnan(raw["rank_correlation"][-1]))
