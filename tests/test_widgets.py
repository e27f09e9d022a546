"""medlab.widgets: live widgets update when their sliders move; headless they draw static figures."""
from __future__ import annotations

import types

import IPython
import IPython.display
import numpy as np
import pytest
from matplotlib.figure import Figure

from medlab import metrics as M
from medlab import widgets as W
from medlab.errors import ParameterError


class FakeShell:
    kernel = object()


@pytest.fixture
def live(monkeypatch):
    """Pretend to run in a Jupyter kernel with a front end."""
    monkeypatch.delenv("MEDLAB_HEADLESS", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeShell())
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, *a, **k: shown.append(obj))
    return shown


@pytest.fixture
def headless(monkeypatch):
    monkeypatch.setenv("MEDLAB_HEADLESS", "1")


def phantom(shape=(30, 24, 20)):
    rng = np.random.default_rng(0)
    volume = rng.normal(40, 10, shape)
    masks = np.zeros(shape, int)
    masks[5:20, 6:14, 5:12] = 1
    masks[10:16, 15:20, 12:18] = 2
    volume[masks == 1] = 300
    return volume, masks


def test_is_live_frontend(monkeypatch):
    monkeypatch.delenv("MEDLAB_HEADLESS", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert W.is_live_frontend() is False                                   # plain Python
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace())
    assert W.is_live_frontend() is False                                   # terminal IPython: no kernel
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeShell())
    assert W.is_live_frontend() is True
    for value, live in [("1", False), ("true", False), ("0", True), ("", True)]:
        monkeypatch.setenv("MEDLAB_HEADLESS", value)
        assert W.is_live_frontend() is live, value


def test_headless_slice_viewer_is_a_montage(headless):
    volume, masks = phantom()
    fig = W.slice_viewer(volume, masks=masks, spacing=(2.5, 1.0, 0.5), window=(100, 400), title="phantom")
    assert isinstance(fig, Figure)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == [f"slice {i}" for i in (0, 4, 8, 12, 17, 21, 25, 29)]
    first = titled[0].images[0]
    assert first.get_clim() == (-100.0, 300.0)                             # center 100, width 400
    assert titled[0].get_aspect() == pytest.approx(2.0)                    # rows 1.0 mm, columns 0.5 mm
    with_lesion = titled[3]                                                 # slice 12 holds both labels
    assert len(with_lesion.collections) == 2 and not titled[0].collections
    assert "phantom" in fig._suptitle.get_text() and "width 400" in fig._suptitle.get_text()
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_headless_slice_viewer_small_volume_default_window_other_axis(headless):
    volume = np.arange(3 * 5 * 6, dtype=float).reshape(3, 5, 6)
    fig = W.slice_viewer(volume, axis=2)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 6                                                # fewer slices than 8
    assert titled[0].images[0].get_array().shape == (3, 5)
    assert titled[0].images[0].get_clim() == (0.0, float(volume.max()))
    single = W.slice_viewer(np.ones((4, 4)))                               # 2D and constant: no crash
    assert isinstance(single, Figure)


def test_slice_viewer_input_errors(headless):
    with pytest.raises(ParameterError, match="slices, rows, cols"):
        W.slice_viewer(np.zeros(5))
    with pytest.raises(ParameterError, match="masks shape"):
        W.slice_viewer(np.zeros((2, 3, 3)), masks=np.zeros((2, 3, 4), int))
    with pytest.raises(ParameterError, match="width"):
        W.slice_viewer(np.zeros((2, 3, 3)), window=(0, -5))


def test_live_slice_viewer_updates_when_sliders_move(live):
    import ipywidgets

    volume, masks = phantom()
    box = W.slice_viewer(volume, masks=masks, window=(100, 400))
    assert isinstance(box, ipywidgets.VBox) and live == [box]              # displayed and returned
    slider = box.children[0].children[0]
    center, width = box.children[1].children
    image = box.children[-1]
    assert (slider.value, slider.max, center.value, width.value) == (15, 29, 100, 400)
    first = image.value
    assert first[:4] == b"\x89PNG"
    slider.value = 2
    after_slice = image.value
    assert after_slice != first
    width.value = 50
    assert image.value != after_slice
    center.value = 250
    assert image.value not in (first, after_slice)


def test_display_false_does_not_display(live):
    W.slice_viewer(np.zeros((2, 4, 4)), display=False)
    assert live == []


def test_headless_operating_point_figure(headless):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    s = rng.random(80) + 0.3 * y
    fig = W.operating_point_explorer(y, s, threshold=0.7)
    op = M.operating_point(y, s, 0.7)
    assert f"sensitivity {op['sensitivity']:.3f}" in fig._suptitle.get_text()
    roc_ax, cm_ax = fig.axes
    assert [t.get_text() for t in cm_ax.texts] == [str(op[k]) for k in ("tn", "fp", "fn", "tp")]
    dot = next(line for line in roc_ax.lines if line.get_marker() == "o")
    assert dot.get_xdata()[0] == pytest.approx(1 - op["specificity"])
    with pytest.raises(ParameterError, match="binary"):
        W.operating_point_explorer([0, 1, 2], [0.1, 0.2, 0.3])
    single_class = W.operating_point_explorer(np.ones(5, int), np.linspace(0, 1, 5))   # no ROC, no crash
    assert isinstance(single_class, Figure)


def test_live_operating_point_slider_updates_rates(live):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    s = rng.random(60) + 0.3 * y
    box = W.operating_point_explorer(y, s)
    slider, rates, image = box.children
    first_png = image.value
    for threshold in (0.4, 0.9):
        slider.value = threshold
        op = M.operating_point(y, s, slider.value)
        assert f"<b>sensitivity</b> {op['sensitivity']:.3f}" in rates.value
        assert f"<b>specificity</b> {op['specificity']:.3f}" in rates.value
    assert image.value != first_png


def test_headless_figure_is_displayed_as_png_under_ipython(monkeypatch):
    # terminal IPython (or a kernel with MEDLAB_HEADLESS=1): no widgets, but the figure is displayed
    monkeypatch.setenv("MEDLAB_HEADLESS", "1")
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeShell())
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, *a, **k: shown.append(obj))
    fig = W.slice_viewer(np.zeros((3, 4, 4)))
    assert isinstance(fig, Figure)
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Image) and shown[0].data[:4] == b"\x89PNG"
