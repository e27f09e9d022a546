"""Lesson 03's module: class lookup, the report, the marker geometry and the shortcut experiment."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medlab import shortcut
from medlab.data.phantoms import chest_xray
from medlab.errors import ParameterError
from medlab.metrics import auroc
from medlab.profiles import PROFILES


TINY = PROFILES["smoke"].replace(n_train=30, n_val=12, n_test=30, image_size=32)


def test_covid_index_finds_every_spelling_but_not_non_covid():
    assert shortcut.covid_index(["normal", "bacterial_pneumonia", "covid19"]) == 2
    assert shortcut.covid_index(["Normal", "Viral Pneumonia", "COVID"]) == 2
    assert shortcut.covid_index(["COVID-19", "Non-COVID", "Normal"]) == 0
    with pytest.raises(ParameterError, match="no COVID-19 class"):
        shortcut.covid_index(["Non-COVID", "Normal"])


def test_knobs_scale_epochs_with_the_profile():
    assert shortcut.lesson_knobs("cpu")["epochs"] == shortcut.LESSON_KNOBS["cpu"]["epochs"]
    assert shortcut.lesson_knobs(PROFILES["gpu"].replace(epochs=1))["epochs"] == 1


def test_classification_report_agrees_with_the_metrics():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    logits = rng.normal(size=(120, 3)) + 1.5 * np.eye(3)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    report = shortcut.classification_report(y, prob, ["normal", "pneumonia", "covid19"], 0.9, n_bootstrap=30)
    for k in range(3):
        assert report["auroc"][k] == pytest.approx(auroc(y == k, prob[:, k]))
        assert report["auroc_low"][k] <= report["auroc"][k] <= report["auroc_high"][k]
    assert report["covid"] == 2
    assert report["accuracy"] == pytest.approx((prob.argmax(1) == y).mean())
    called = prob[:, 2] >= report["covid_threshold"]
    assert called[y != 2].mean() <= 0.1 + 1e-9
    assert report["covid_sensitivity"] == pytest.approx(called[y == 2].mean())
    assert "macro average" in shortcut.report_table(report)


def test_marker_box_covers_the_drawn_marker():
    batch = chest_xray(12, size=64, seed=1, marker=True, marker_correlation=0.5, noise=0.0, exposure=0.0)
    for image, side in zip(batch.images[:, 0], batch.attrs["marker_side"]):
        marker = np.isclose(image, 0.95)
        rows, cols = shortcut.marker_box(64, int(side))
        inside = np.zeros_like(marker)
        inside[rows, cols] = True
        assert marker.sum() >= 5 and not (marker & ~inside).any()


def test_cam_in_box_measures_the_share_on_the_marker():
    cams = np.zeros((3, 32, 32))
    rows, cols = shortcut.marker_box(32, 1)
    cams[0][rows, cols] = 1.0  # all on the marker
    cams[1] = 1.0  # uniform
    share = shortcut.cam_in_box(cams, [1, 1, -1])
    assert share[0] == pytest.approx(1.0)
    area = (rows.stop - rows.start) * (cols.stop - cols.start) / 32 ** 2
    assert share[1] == pytest.approx(area)
    assert np.isnan(share[2])


def test_shortcut_data_marker_follows_label_in_training_only():
    data = shortcut.shortcut_data(TINY, seed=0, marker_correlation=1.0)
    train, test = data["train"], data["test"]
    assert np.array_equal(train.batch.attrs["marker_side"], (train.labels != 0).astype(int))
    assert np.array_equal(data["test_correlated"].batch.attrs["marker_side"], (data["test_correlated"].labels != 0))
    sides = test.batch.attrs["marker_side"]
    assert set(np.unique(sides)) == {0, 1} and not np.array_equal(sides, (test.labels != 0).astype(int))
    masked = shortcut.shortcut_data(TINY, seed=0, marker_correlation=1.0, mask_lungs=True)["train"]
    outside = masked.batch.masks["lung"] == 0
    assert np.all(masked.images.numpy()[:, 0][outside] == 0)


def test_shortcut_experiment_runs_and_reports_in_range():
    knobs = dict(shortcut.lesson_knobs("smoke"), cam_images=4)
    result = shortcut.shortcut_experiment(TINY, knobs, "small_cnn", seed=0, progress=False)
    assert result.name == "shortcut"
    for value in (result.auroc_correlated, result.auroc_random, result.accuracy_random):
        assert 0.0 <= value <= 1.0
    assert result.drop == pytest.approx(result.auroc_correlated - result.auroc_random)
    assert result.cams.shape == (len(result.cam_index), 32, 32)
    assert 0.0 <= result.cam_marker <= 1.0
    assert len(shortcut.plot_shortcut([result]).axes) == 1


def test_train_and_report_on_phantoms_is_reproducible():
    knobs = shortcut.lesson_knobs("smoke")
    data = shortcut.load_data("phantom", TINY, seed=0)
    assert data["train"].class_names == ["normal", "bacterial_pneumonia", "covid19"]
    probs = []
    for _ in range(2):
        model, history = shortcut.train_classifier(data["train"], data["val"], "small_cnn", knobs, 8, 0,
                                                   progress=False)
        probs.append(shortcut.predict_proba(model, data["test"])[0])
    assert np.allclose(probs[0], probs[1])
    assert len(shortcut.plot_class_examples(data["train"], per_class=2).axes) >= 6


def test_load_data_real_sources(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    base = tmp_path / "covid-radiography" / "COVID-19_Radiography_Dataset"
    for cls in ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]:
        for i in range(30):
            path = base / cls / "images" / f"{cls}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    data = shortcut.load_data("covid-radiography", TINY.replace(n_train=12, n_val=3, n_test=6))
    assert data["train"].class_names == ["Normal", "Viral Pneumonia", "COVID"]
    assert shortcut.covid_index(data["train"].class_names) == 2
    assert len(data["train"]) <= 12 and tuple(data["train"][0][0].shape) == (1, 32, 32)
    with pytest.raises(ParameterError, match="lesson 03 needs"):
        shortcut.load_data("medmnist:pneumoniamnist", TINY)
