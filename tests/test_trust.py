"""Lesson 07's helpers (medlab.trust): data with a scanner shift, model, case picking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab import profiles, trust
from medlab.errors import ParameterError


TINY = profiles.PROFILES["smoke"].replace(n_train=8, n_val=4, n_test=6, image_size=32)


def test_phantom_data_shifts_the_scanner_not_the_patients():
    data = trust.load_data("phantom", TINY, seed=0, shifted_domain="B")
    assert data.class_names == list(trust.PHANTOM_CLASSES)
    assert data.x["train"].shape == (8, 1, 32, 32) and data.x["shifted"].shape == (6, 1, 32, 32)
    assert torch.equal(data.y["shifted"], data.y["test"])
    assert not torch.allclose(data.x["shifted"], data.x["test"])
    assert data.lung_masks.shape == (6, 32, 32)
    again = trust.load_data("phantom", TINY, seed=0, shifted_domain="C")
    assert torch.equal(again.x["test"], data.x["test"]) and not torch.equal(again.x["shifted"], data.x["shifted"])
    with pytest.raises(ParameterError, match="shifted_domain"):
        trust.load_data("phantom", TINY, shifted_domain="A")


def test_real_data_path_with_a_fake_medmnist_file(tmp_path, monkeypatch):
    folder = tmp_path / "medmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(folder / "pneumoniamnist.npz", **arrays)
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    data = trust.load_data("medmnist:pneumoniamnist", TINY, seed=0)
    assert data.class_names == ["normal", "pneumonia"] and data.lung_masks is None
    assert data.x["train"].shape == (8, 1, 32, 32)          # 28-pixel files resized to the profile's 32
    assert float(data.x["shifted"].min()) >= 0 and float(data.x["shifted"].max()) <= 1
    assert torch.equal(data.y["shifted"], data.y["test"])


def test_missing_real_data_says_how_to_get_it(tmp_path, monkeypatch):
    from medlab.errors import DataNotFoundError

    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError):
        trust.load_data("medmnist:pneumoniamnist", TINY)


def test_simulated_scanner_keeps_range_and_shape():
    x = torch.rand(3, 2, 16, 16)
    out = trust.simulate_scanner(x, "C", seed=1)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, trust.simulate_scanner(x, "C", seed=1))


def test_model_normalises_with_training_statistics_and_names_its_cam_layer():
    x = torch.rand(10, 1, 32, 32) * 0.5 + 0.25
    model = trust.build_model(TINY, 2, x)
    assert torch.allclose(model.mean.flatten(), x.mean().reshape(1), atol=1e-6)
    assert trust.cam_layer(model) == "model.features"
    assert trust.logits(model, x).shape == (10, 2)


def test_pick_cases_and_fraction_in_mask():
    y = np.array([0, 1, 0, 1, 1])
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    correct, wrong = trust.pick_cases(y, prob, n=3)
    assert correct.tolist() == [0, 4, 1] and wrong.tolist() == [2, 3]
    cams = np.zeros((2, 4, 4))
    cams[0, :2] = 1
    masks = np.zeros((2, 4, 4), int)
    masks[:, :1] = 1
    share = trust.fraction_in_mask(cams, masks)
    assert share[0] == pytest.approx(0.5) and np.isnan(share[1])


def test_knobs_exist_for_every_profile():
    for name in profiles.PROFILES:
        k = trust.knobs(name)
        assert k["epsilons"][0] == 0.0 and k["pgd_steps"] >= 1
