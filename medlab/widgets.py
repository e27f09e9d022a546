"""Interactive explorers for the lessons, with a static fallback.

Two explorers:

* :func:`slice_viewer` scrolls through a volume (slice slider) with window and
  level sliders and optional label contours;
* :func:`operating_point_explorer` moves a decision threshold and shows
  sensitivity, specificity, PPV, NPV and the confusion matrix.

With a live front end (JupyterLab, Colab, VS Code) each returns an
``ipywidgets`` widget. Without one (papermill sets ``MEDLAB_HEADLESS=1``;
plain Python has no kernel) each returns a static matplotlib figure showing
what the widget would have shown, and never raises because no front end is
there. Both display their result when running under IPython (``display=True``),
so end the line with ``;`` or assign the result to avoid showing it twice when
it is the last line of a cell.

Both work with ipywidgets 7.7 (Colab's) and 8 (JupyterLab 4's); in Colab they first
call ``google.colab.output.enable_custom_widget_manager()``, without which Colab does
not show third-party widgets (:func:`enable_colab_widgets`).

Images are rendered with the Agg canvas into PNG bytes for the live widgets,
so they work whatever matplotlib backend the notebook uses, and figures are
built with ``matplotlib.figure.Figure`` (not ``pyplot``) so that nothing is
shown on import and no pyplot figures pile up.
"""
from __future__ import annotations

import io
import os

import numpy as np

from . import metrics as _metrics
from .errors import ParameterError

__all__ = ["is_live_frontend", "enable_colab_widgets", "slice_viewer", "operating_point_explorer"]

_LABEL_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf")


# --------------------------------------------------------------------------------------
# front-end detection and display helpers
# --------------------------------------------------------------------------------------
def is_live_frontend() -> bool:
    """Whether an interactive front end can show ipywidgets.

    False when the environment variable ``MEDLAB_HEADLESS`` is set to a
    non-empty value other than ``"0"`` (the papermill runner sets it), or when
    the code is not running inside an IPython kernel (``IPython.get_ipython()``
    is None, as in plain Python, or has no ``kernel``, as in the terminal
    IPython shell). True otherwise.
    """
    flag = os.environ.get("MEDLAB_HEADLESS", "")
    if flag.strip() not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


_COLAB_WIDGETS_ENABLED = False


def enable_colab_widgets() -> bool:
    """In Colab, turn on its custom widget manager (once); elsewhere do nothing.

    Colab renders only its own built-in widgets until
    ``google.colab.output.enable_custom_widget_manager()`` has run in the session; the
    explorers call this before they build a live widget. Returns whether it is on.
    """
    global _COLAB_WIDGETS_ENABLED
    if _COLAB_WIDGETS_ENABLED:
        return True
    try:
        from google.colab import output
    except ImportError:
        return False
    enable = getattr(output, "enable_custom_widget_manager", None)
    if enable is None:
        return False
    enable()
    _COLAB_WIDGETS_ENABLED = True
    return True


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _show(obj) -> None:
    """Display ``obj`` when running under IPython; do nothing elsewhere."""
    if not _in_ipython():
        return
    from IPython.display import Image, display

    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        # PNG bytes display under any backend (inline, ipympl, none).
        display(Image(data=_figure_png(obj)))
    else:
        display(obj)


def _new_figure(figsize):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig


def _figure_png(fig, dpi: int = 90) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# slice viewer
# --------------------------------------------------------------------------------------
def _check_volume(volume, masks, spacing, axis):
    vol = np.asarray(volume)
    if vol.ndim == 2:
        vol = vol[None]
        if masks is not None and np.asarray(masks).ndim == 2:
            masks = np.asarray(masks)[None]
        axis = 0
    if vol.ndim != 3:
        raise ParameterError(f"slice_viewer expects a (slices, rows, cols) volume, got an array of shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number) and vol.dtype != bool:
        raise ParameterError(f"slice_viewer expects a numeric volume, got dtype {vol.dtype}")
    vol = vol.astype(np.float32, copy=False)
    if axis not in (0, 1, 2, -1, -2, -3):
        raise ParameterError(f"axis must be 0, 1 or 2, got {axis!r}")
    axis = axis % 3
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != vol.shape:
            raise ParameterError(f"masks shape {masks.shape} differs from volume shape {vol.shape}")
        masks = masks.astype(np.int64, copy=False)
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) == 2:
            spacing = (1.0, *spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ParameterError(f"spacing must be three positive numbers (one per axis), got {spacing!r}")
    return vol, masks, spacing, axis


def _window_limits(vol, window):
    if window is None:
        finite = vol[np.isfinite(vol)]
        if finite.size == 0:
            return 0.0, 1.0
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            hi = lo + 1.0
        return lo, hi
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ParameterError(f"window must be a (center, width) pair, got {window!r}") from None
    if width <= 0:
        raise ParameterError(f"window width must be positive, got {width}")
    return center - width / 2.0, center + width / 2.0


def _draw_slice(ax, vol, masks, spacing, axis, index, vmin, vmax, label=True):
    image = np.take(vol, index, axis=axis)
    others = [a for a in range(3) if a != axis]
    aspect = 1.0 if spacing is None else spacing[others[0]] / spacing[others[1]]
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
    if masks is not None:
        labels = np.take(masks, index, axis=axis)
        for value in np.unique(labels):
            if value == 0:
                continue
            colour = _LABEL_COLOURS[(int(value) - 1) % len(_LABEL_COLOURS)]
            region = (labels == value).astype(float)
            ax.contour(region, levels=[0.5], colors=[colour], linewidths=1.2)
    if label:
        ax.set_title(f"slice {index}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _montage_indices(n_slices: int, n_panels: int = 8) -> list[int]:
    count = min(n_panels, n_slices)
    return sorted(set(np.linspace(0, n_slices - 1, count).round().astype(int).tolist()))


def _slice_montage(vol, masks, spacing, axis, vmin, vmax, title):
    indices = _montage_indices(vol.shape[axis])
    ncols = min(4, len(indices))
    nrows = int(np.ceil(len(indices) / ncols))
    fig = _new_figure((2.6 * ncols, 2.6 * nrows + (0.3 if title else 0)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, index in zip(axes, indices):
        _draw_slice(ax, vol, masks, spacing, axis, index, vmin, vmax)
    for ax in axes[len(indices):]:
        ax.axis("off")
    center, width = (vmin + vmax) / 2.0, vmax - vmin
    heading = f"window center {center:.4g}, width {width:.4g}"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10)
    return fig


def slice_viewer(volume, masks=None, spacing=None, window=None, title=None, axis=0, display=True):
    """Scroll through a 3D volume with window and level sliders.

    Args:
        volume: NumPy array of shape (slices, rows, cols) (a 2D image is taken
            as one slice).
        masks: optional integer label volume of the same shape; each non-zero
            label is drawn as a coloured contour (label 1 red, 2 green, 3 blue, ...).
        spacing: optional voxel size per axis, e.g. ``(z, y, x)`` in mm; the
            displayed aspect ratio follows it so anisotropic voxels look right.
        window: ``(center, width)`` in image units (e.g. ``(-600, 1500)`` for a
            CT lung window); None uses the volume's min-max.
        title: optional figure title.
        axis: which axis the slider moves along (0 for axial slices of a
            (z, y, x) volume).
        display: display the result when running under IPython.

    Returns:
        With a live front end, an ``ipywidgets.VBox`` with a slice slider,
        window-center and window-width sliders and the image (redrawn when any
        slider moves). Without one (see :func:`is_live_frontend`), a matplotlib
        ``Figure`` with a montage of about 8 evenly spaced slices, their
        indices, the window applied.

    Raises:
        ParameterError: the volume is not 2D/3D numeric, or masks, spacing or
            window do not fit it.
    """
    vol, masks, spacing, axis = _check_volume(volume, masks, spacing, axis)
    vmin, vmax = _window_limits(vol, window)
    if not is_live_frontend():
        fig = _slice_montage(vol, masks, spacing, axis, vmin, vmax, title)
        if display:
            _show(fig)
        return fig
    widget = _live_slice_viewer(vol, masks, spacing, axis, vmin, vmax, title)
    if display:
        _show(widget)
    return widget


def _live_slice_viewer(vol, masks, spacing, axis, vmin, vmax, title):
    import ipywidgets as w

    enable_colab_widgets()
    finite = vol[np.isfinite(vol)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = max(hi - lo, 1e-6)
    n_slices = vol.shape[axis]
    slider = w.IntSlider(value=n_slices // 2, min=0, max=n_slices - 1, description="slice", continuous_update=True)
    center = w.FloatSlider(value=(vmin + vmax) / 2.0, min=min(lo, vmin) - span / 2, max=max(hi, vmax) + span / 2,
                           step=span / 200, description="center", continuous_update=True)
    width = w.FloatSlider(value=vmax - vmin, min=span / 200, max=max(2 * span, vmax - vmin),
                          step=span / 200, description="width", continuous_update=True)
    image = w.Image(format="png")

    def redraw(_change=None):
        half = width.value / 2.0
        fig = _new_figure((5, 5))
        ax = fig.subplots()
        _draw_slice(ax, vol, masks, spacing, axis, slider.value, center.value - half, center.value + half, label=False)
        ax.set_title(f"{title + ' - ' if title else ''}slice {slider.value}/{n_slices - 1}", fontsize=10)
        image.value = _figure_png(fig)

    for control in (slider, center, width):
        control.observe(redraw, names="value")
    redraw()
    box = w.VBox([w.HBox([slider]), w.HBox([center, width]), image])
    box.redraw = redraw  # for tests and for users who change the data in place
    return box


# --------------------------------------------------------------------------------------
# operating-point explorer
# --------------------------------------------------------------------------------------
def _binary_inputs(y_true, y_score):
    y_true = np.asarray(y_true).ravel()
    y_score = np.asarray(y_score, dtype=float).ravel()
    if y_true.shape != y_score.shape:
        raise ParameterError(f"y_true and y_score must have the same length, got {y_true.size} and {y_score.size}")
    classes = np.unique(y_true)
    if not set(classes.tolist()) <= {0, 1, False, True}:
        raise ParameterError(f"operating_point_explorer needs binary labels 0/1, got {classes.tolist()}")
    return y_true.astype(int), y_score


def _operating_point_figure(y_true, y_score, threshold):
    op = _metrics.operating_point(y_true, y_score, threshold)
    fig = _new_figure((9, 4))
    ax_roc, ax_cm = fig.subplots(1, 2)
    if 0 < y_true.sum() < y_true.size:
        fpr, tpr, _ = _metrics.roc_curve(y_true, y_score)
        ax_roc.plot(fpr, tpr, color="C0", label="ROC")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
    ax_roc.plot([1 - op["specificity"]], [op["sensitivity"]], "o", color="C3", ms=8,
                label=f"threshold {threshold:.3g}")
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
               aspect="equal", title="ROC curve")
    ax_roc.legend(loc="lower right", fontsize=8)
    matrix = np.array([[op["tn"], op["fp"]], [op["fn"], op["tp"]]])
    ax_cm.imshow(matrix, cmap="Blues", vmin=0)
    for (i, j), count in np.ndenumerate(matrix):
        ax_cm.text(j, i, str(count), ha="center", va="center",
                   color="white" if count > matrix.max() / 2 else "black", fontsize=12)
    ax_cm.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"],
              title="confusion matrix")
    fig.suptitle(
        f"threshold {threshold:.3g}: sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f}, "
        f"PPV {op['ppv']:.3f}, NPV {op['npv']:.3f}", fontsize=10)
    return fig


def operating_point_explorer(y_true, y_score, threshold=0.5, display=True):
    """Move a decision threshold and watch sensitivity, specificity and the confusion matrix.

    A case is called positive when ``y_score >= threshold``. Rates with an
    empty denominator (e.g. PPV when nothing is called positive) are nan
    (:func:`medlab.metrics.operating_point`).

    Args:
        y_true: binary labels (0/1), one per case.
        y_score: scores or probabilities for the positive class.
        threshold: the starting threshold (the one drawn when headless).
        display: display the result when running under IPython.

    Returns:
        With a live front end, an ``ipywidgets.VBox`` with a threshold slider,
        a line of rates and a figure (ROC curve with the current operating
        point, confusion matrix) redrawn when the slider moves. Without one, the
        matplotlib ``Figure`` for ``threshold``.

    Raises:
        ParameterError: labels not binary, or lengths differ.
    """
    y_true, y_score = _binary_inputs(y_true, y_score)
    threshold = float(threshold)
    if not is_live_frontend():
        fig = _operating_point_figure(y_true, y_score, threshold)
        if display:
            _show(fig)
        return fig
    import ipywidgets as w

    enable_colab_widgets()
    lo, hi = (float(y_score.min()), float(y_score.max())) if y_score.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    slider = w.FloatSlider(value=min(max(threshold, lo), hi), min=lo, max=hi, step=(hi - lo) / 200,
                           description="threshold", readout_format=".3f", continuous_update=True)
    rates = w.HTML()
    image = w.Image(format="png")

    def redraw(_change=None):
        op = _metrics.operating_point(y_true, y_score, slider.value)
        rates.value = (f"<b>sensitivity</b> {op['sensitivity']:.3f} &nbsp; <b>specificity</b> {op['specificity']:.3f}"
                       f" &nbsp; <b>PPV</b> {op['ppv']:.3f} &nbsp; <b>NPV</b> {op['npv']:.3f}")
        image.value = _figure_png(_operating_point_figure(y_true, y_score, slider.value))

    slider.observe(redraw, names="value")
    redraw()
    box = w.VBox([slider, rates, image])
    box.redraw = redraw
    if display:
        _show(box)
    return box
