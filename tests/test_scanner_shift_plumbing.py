"""Plumbing that lesson 07 uses and any lesson may: data with a second scanner, a model that normalises its own
input, and the figures of calibration, intensity shift, attacks and the randomisation cascade."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn as nn

from figure_support import rendered
from medlab import metrics, viz
from medlab.data import load_with_scanner_shift, simulate_scanner
from medlab.errors import DataNotFoundError, ParameterError
from medlab.models import NormalisedModel, build_classifier

SIZES = dict(n_train=8, n_val=4, n_test=6, size=32)
CLASSES = ("normal", "bacterial_pneumonia")


def test_phantoms_change_the_scanner_not_the_patients():
    data = load_with_scanner_shift("phantom", **SIZES, seed=0, shifted_domain="B", classes=CLASSES,
                                   lesion_contrast=2.0)
    assert data.class_names == list(CLASSES)
    assert data.x["train"].shape == (8, 1, 32, 32) and data.x["shifted"].shape == (6, 1, 32, 32)
    assert data.x["train"].dtype == torch.float32 and data.y["train"].dtype == torch.int64
    assert torch.equal(data.y["shifted"], data.y["test"])
    assert not torch.allclose(data.x["shifted"], data.x["test"])
    assert data.lung_masks.shape == (6, 32, 32)
    again = load_with_scanner_shift("phantom", **SIZES, seed=0, shifted_domain="C", classes=CLASSES,
                                    lesion_contrast=2.0)
    assert torch.equal(again.x["test"], data.x["test"]) and not torch.equal(again.x["shifted"], data.x["shifted"])
    with pytest.raises(ParameterError, match="shifted_domain"):
        load_with_scanner_shift("phantom", **SIZES, shifted_domain="A")


def _fake_medmnist(tmp_path, monkeypatch):
    folder = tmp_path / "medmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(folder / "pneumoniamnist.npz", **arrays)
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))


def test_a_real_source_gets_a_simulated_scanner(tmp_path, monkeypatch):
    _fake_medmnist(tmp_path, monkeypatch)
    data = load_with_scanner_shift("medmnist:pneumoniamnist", **SIZES, seed=0, lesion_contrast=2.0)
    assert data.class_names == ["normal", "pneumonia"] and data.lung_masks is None
    assert data.x["train"].shape == (8, 1, 32, 32)  # 28-pixel files resized to 32
    assert float(data.x["shifted"].min()) >= 0 and float(data.x["shifted"].max()) <= 1
    assert torch.equal(data.y["shifted"], data.y["test"])


def test_a_missing_real_data_set_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError):
        load_with_scanner_shift("medmnist:pneumoniamnist", **SIZES)


def test_simulate_scanner_keeps_range_and_shape_and_is_seeded():
    x = torch.rand(3, 2, 16, 16)
    out = simulate_scanner(x, "C", seed=1)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, simulate_scanner(x.numpy(), "C", seed=1))
    assert not torch.equal(out, simulate_scanner(x, "B", seed=1))
    with pytest.raises(ParameterError):
        simulate_scanner(x[0], "B")


def test_normalised_model_normalises_inside_and_moves_its_statistics_with_it():
    x = torch.rand(10, 1, 16, 16) * 0.5 + 0.25
    inner = build_classifier("smallcnn", num_classes=2, in_channels=1, progress=False).eval()
    model = NormalisedModel(inner, mean=x.mean(dim=(0, 2, 3)), std=x.std(dim=(0, 2, 3))).eval()
    expected = inner((x - x.mean()) / x.std())
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert {"mean", "std"} <= set(model.state_dict())
    assert torch.allclose(NormalisedModel(nn.Identity(), [0.5, 1.0], [2.0, 4.0])(torch.ones(1, 2, 1, 1)).flatten(),
                          torch.tensor([0.25, 0.0]))
    with pytest.raises(ParameterError, match="std"):
        NormalisedModel(inner, 0.0, 0.0)


def test_reliability_figure_lists_each_curves_ece():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1)
    fig = rendered(viz.plot_reliability([("model", y, p), ("two columns", y, np.stack([1 - p, p], 1))], n_bins=8))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"model (ECE {metrics.expected_calibration_error(y, p, 8):.3f})" in labels
    with pytest.raises(ParameterError):
        viz.plot_reliability([])


def test_intensity_histograms_attack_examples_robustness_curve_and_cascade_render():
    x = torch.rand(2, 1, 12, 12)
    adv = (x + 0.01 * torch.randn_like(x).sign()).clamp(0, 1)
    fig = rendered(viz.plot_intensity_histograms({"a": x, "b": adv.numpy()}))
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    cams = np.random.default_rng(1).random((2, 12, 12))
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    fig = rendered(viz.plot_attack_examples(x, adv, cams, cams, p, p[:, ::-1], ["normal", "pneumonia"], [0, 1],
                                            limit=0.01))
    assert fig.axes[0].get_title().startswith("clean: normal 0.90")
    curve = {"epsilons": [0.0, 0.01], "fgsm": {"accuracy": [0.9, 0.5], "auroc": [0.95, 0.6]},
             "pgd": {"accuracy": [0.9, 0.3], "auroc": [0.95, 0.4]}}
    rendered(viz.plot_robustness_curve(curve, marker_epsilon=0.01))
    maps = [cams, cams[::-1], np.zeros_like(cams)]
    rendered(viz.plot_randomisation_cascade(x, ["trained", "fc", "conv1"], maps, [np.ones(2), np.zeros(2),
                                                                                  np.zeros(2)], n_images=2))
    with pytest.raises(ParameterError):
        viz.plot_randomisation_cascade(x, ["trained"], maps, [np.ones(2)])
