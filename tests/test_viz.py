"""medlab.viz: every figure is returned, drawn from the data it was given, and nothing is shown."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from figure_support import rendered
from medlab import metrics as M
from medlab.errors import ParameterError


@pytest.fixture
def viz(monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    before = plt.get_fignums()
    import medlab.viz as module

    module = importlib.reload(module)
    yield module
    assert shown == [], "a figure function called plt.show()"
    assert plt.get_fignums() == before, "a figure function left a pyplot figure open"


def scores(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def test_image_grid_titles_and_window(viz):
    images = np.random.default_rng(0).normal(size=(5, 1, 16, 16))
    fig = rendered(viz.image_grid(images, titles=list("abcde"), ncols=3, window=(0, 2)))
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:5]] == list("abcde")
    assert axes[0].images[0].get_clim() == (-1.0, 1.0)
    assert axes[0].images[0].get_array().shape == (16, 16)
    assert not axes[5].images
    with pytest.raises(ParameterError):
        viz.image_grid(images, titles=["only one"])


def test_mask_overlay_filled_contour_and_legend(viz):
    image = np.random.default_rng(1).random((40, 40))
    mask = np.zeros((40, 40), int)
    mask[5:15, 5:15] = 1
    mask[20:30, 22:35] = 3
    fig = rendered(viz.mask_overlay(image, mask, class_names={1: "lung", 3: "lesion"}, reference=np.roll(mask, 2, 0)))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["lung", "lesion", "reference"]
    assert len(ax.images) == 3                           # the image and one filled layer per class
    filled = ax.images[1].get_array()
    assert filled[10, 10, 3] > 0 and filled[25, 25, 3] == 0
    contour_only = viz.mask_overlay(image, mask, mode="contour")
    assert len(contour_only.axes[0].images) == 1
    assert [t.get_text() for t in contour_only.axes[0].get_legend().get_texts()] == ["class 1", "class 3"]
    with pytest.raises(ParameterError):
        viz.mask_overlay(image, mask[:10])


def test_roc_band_and_operating_point(viz):
    y, s = scores()
    fig = rendered(viz.plot_roc(y, s, n_bootstrap=50, operating_point={"specificity": 0.9}))
    ax = fig.axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections)      # the band
    dot = next(line for line in ax.lines if line.get_marker() == "o")
    sens, threshold = M.sensitivity_at_specificity(y, s, 0.9)
    op = M.operating_point(y, s, threshold)
    assert dot.get_ydata()[0] == pytest.approx(sens)
    assert dot.get_xdata()[0] == pytest.approx(1 - op["specificity"])
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"AUROC {M.auroc(y, s):.3f}" in legend and "95% CI" in legend
    youden = viz.plot_roc(y, s, n_bootstrap=0, operating_point="youden")
    assert not any(isinstance(c, PolyCollection) for c in youden.axes[0].collections)
    with pytest.raises(ParameterError):
        viz.plot_roc(np.ones(5, int), np.linspace(0, 1, 5))


def test_confusion_matrix_counts_and_normalisation(viz):
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    fig = rendered(viz.plot_confusion_matrix(y_true, y_pred, class_names=["a", "b", "c"]))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["1", "1", "0", "1", "2", "0", "0", "0", "1"]
    normalised = viz.plot_confusion_matrix(y_true, y_pred, normalize="true")
    assert normalised.axes[0].texts[4].get_text() == "0.67\n(2)"
    assert [t.get_text() for t in normalised.axes[0].get_xticklabels()] == ["0", "1", "2"]


def test_learning_curves_from_history(viz):
    from medlab.train import History

    history = History(monitor="val_loss")
    for epoch, (tl, vl, auc) in enumerate([(1.0, 0.9, 0.6), (0.7, 0.8, 0.7), (0.5, 0.85, 0.72)], start=1):
        history.append({"epoch": epoch, "train_loss": tl, "val_loss": vl, "val_auroc": auc, "lr": 0.01})
    history.best_epoch = 2
    fig = rendered(viz.plot_learning_curves(history))
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train_loss", "val_loss", "best epoch 2"]
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [0.9, 0.8, 0.85])
    assert [line.get_label() for line in metric_ax.lines][0] == "val_auroc"
    plain = viz.plot_learning_curves({"train_loss": [3, 2, 1]})
    assert len(plain.axes) == 1
    with pytest.raises(ParameterError):
        viz.plot_learning_curves(history, metrics=["val_dice"])


def test_calibration_diagram(viz):
    y, s = scores(seed=3)
    fig = rendered(viz.plot_calibration(y, s, n_bins=8))
    top, bottom = fig.axes
    assert f"ECE {M.expected_calibration_error(y, s, n_bins=8):.3f}" in top.get_title()
    curve = M.reliability_curve(y, s, n_bins=8)
    model_line = next(line for line in top.lines if line.get_label() == "model")
    np.testing.assert_allclose(model_line.get_ydata(), curve.observed)
    assert sum(p.get_height() for p in bottom.patches) == len(y)


def test_ax_argument_draws_into_existing_axes(viz):
    fig = Figure()
    ax = fig.subplots()
    y, s = scores()
    assert viz.plot_roc(y, s, n_bootstrap=0, ax=ax) is fig
    assert viz.plot_confusion_matrix(y, (s > 0.5).astype(int), ax=fig.add_subplot(2, 2, 4)) is fig
