"""Figures for the lessons. Each function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``:
nothing is shown on import or on creation and no global figure list grows
across a long notebook. In Jupyter a returned figure is shown when it is the
last expression of a cell (or with ``display(fig)``); in a script save it
with ``fig.savefig(path)``. Functions that draw a single panel accept
``ax=`` to draw into an existing axes (their figure is returned).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import metrics as _metrics
from .errors import ParameterError

__all__ = [
    "image_grid", "mask_overlay", "cam_overlay", "plot_roc", "plot_confusion_matrix", "plot_learning_curves",
    "plot_calibration", "CLASS_COLOURS",
]

#: Colours of labels 1, 2, 3, ... in overlays (label 0 is background and not drawn).
CLASS_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf")


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = _figure(figsize)
    return fig, fig.subplots()


def _as_image(image):
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):  # channels first
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ParameterError(f"expected a 2D image (or H x W x 3), got shape {arr.shape}")
    return arr


def _window(window):
    if window is None:
        return None, None
    center, width = window
    return center - width / 2.0, center + width / 2.0


# --------------------------------------------------------------------------------------
# images and masks
# --------------------------------------------------------------------------------------
def image_grid(images, titles: Sequence[str] | None = None, ncols: int = 4, cmap: str = "gray", window=None,
               panel_size: float = 2.5, suptitle: str | None = None):
    """Show images in a grid with a title above each.

    Args:
        images: a sequence of 2D arrays (or tensors; (1, H, W) and (3, H, W)
            are accepted), or an array of shape (N, H, W) / (N, 1, H, W).
        titles: one title per image (e.g. the label).
        ncols: columns of the grid.
        window: ``(center, width)`` applied to every grey image; None scales
            each image to its own min-max.
    """
    images = [_as_image(im) for im in images]
    if not images:
        raise ParameterError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ParameterError(f"{len(titles)} titles for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = int(np.ceil(len(images) / ncols))
    fig = _figure((panel_size * ncols, panel_size * nrows + (0.4 if suptitle else 0)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    vmin, vmax = _window(window)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap=cmap if images[i].ndim == 2 else None, vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def cam_overlay(images, cams, titles: Sequence[str] | None = None, ncols: int = 4, alpha: float = 0.45,
                suptitle: str | None = None, panel_size: float = 2.5, cmap: str = "jet"):
    """Heat maps (Grad-CAM or any saliency in [0, 1]) drawn over their images.

    Args:
        images: (N, H, W) or (N, 1, H, W) array or tensor, or a sequence of 2D
            images; each is shown in grey, scaled to its own min-max.
        cams: (N, H, W) maps in [0, 1] (as :func:`medlab.explain.grad_cam`
            returns them), the same height and width as the images.
        titles: one title per panel.
        alpha: opacity of the heat map (0 shows only the image).
    """
    images = [_as_image(im) for im in images]
    cams = [np.asarray(c, dtype=float) for c in cams]
    if not images:
        raise ParameterError("cam_overlay needs at least one image")
    if len(cams) != len(images):
        raise ParameterError(f"{len(cams)} maps for {len(images)} images")
    for im, cam in zip(images, cams):
        if cam.shape != im.shape[:2]:
            raise ParameterError(f"a map of shape {cam.shape} cannot lie over an image of shape {im.shape[:2]}; "
                                 "compute it with grad_cam(..., upsample=True)")
    if titles is not None and len(titles) != len(images):
        raise ParameterError(f"{len(titles)} titles for {len(images)} images")
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must be between 0 and 1, got {alpha}")
    ncols = max(1, min(ncols, len(images)))
    nrows = int(np.ceil(len(images) / ncols))
    fig = _figure((panel_size * ncols, panel_size * nrows + (0.4 if suptitle else 0)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None, interpolation="nearest")
        ax.imshow(cams[i], cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def mask_overlay(image, mask, mode: str = "both", class_names: Mapping[int, str] | Sequence[str] | None = None,
                 alpha: float = 0.35, window=None, title: str | None = None, reference=None, ax=None):
    """Draw a label mask over an image, with a legend entry per class.

    Args:
        image: 2D image.
        mask: integer label map of the same shape (0 = background).
        mode: ``"filled"`` (translucent colour), ``"contour"`` (outline) or
            ``"both"``.
        class_names: names of labels 1, 2, ... (a sequence starting at label 1,
            or a mapping label -> name); default ``class 1``, ``class 2``, ...
        alpha: opacity of the filled colour.
        window: ``(center, width)`` for the image; None uses its min-max.
        reference: optional second label map (e.g. the ground truth) drawn as
            dashed contours, to compare a prediction with it.
        ax: draw into this axes.
    """
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if mode not in ("filled", "contour", "both"):
        raise ParameterError(f"mode must be 'filled', 'contour' or 'both', got {mode!r}")
    image = _as_image(image)
    mask = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if mask.shape != image.shape[:2]:
        raise ParameterError(f"mask shape {mask.shape} differs from image shape {image.shape[:2]}")
    if reference is not None:
        reference = np.asarray(reference.detach().cpu() if hasattr(reference, "detach") else reference)
        if reference.shape != mask.shape:
            raise ParameterError(f"reference shape {reference.shape} differs from mask shape {mask.shape}")
    fig, ax = _axes(ax, (5, 5))
    vmin, vmax = _window(window)
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=vmin, vmax=vmax, interpolation="nearest")
    labels = sorted(int(v) for v in np.unique(mask) if v != 0)
    if reference is not None:
        labels = sorted(set(labels) | {int(v) for v in np.unique(reference) if v != 0})

    def name(label):
        if class_names is None:
            return f"class {label}"
        if isinstance(class_names, Mapping):
            return str(class_names.get(label, f"class {label}"))
        return str(class_names[label - 1]) if label - 1 < len(class_names) else f"class {label}"

    handles = []
    for label in labels:
        colour = CLASS_COLOURS[(label - 1) % len(CLASS_COLOURS)]
        region = mask == label
        if mode in ("filled", "both") and region.any():
            rgba = np.zeros((*mask.shape, 4))
            rgba[region] = to_rgba(colour, alpha)
            ax.imshow(rgba, interpolation="nearest")
        if mode in ("contour", "both") and region.any():
            ax.contour(region.astype(float), levels=[0.5], colors=[colour], linewidths=1.5)
        if reference is not None and (reference == label).any():
            ax.contour((reference == label).astype(float), levels=[0.5], colors=[colour], linewidths=1.2,
                       linestyles="dashed")
        if mode == "contour":
            handles.append(Line2D([], [], color=colour, lw=1.5, label=name(label)))
        else:
            handles.append(Patch(facecolor=to_rgba(colour, max(alpha, 0.5)), edgecolor=colour, label=name(label)))
    if reference is not None and labels:
        handles.append(Line2D([], [], color="0.3", lw=1.2, ls="dashed", label="reference"))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------
def plot_roc(y_true, y_score, n_bootstrap: int = 200, seed: int = 0, groups=None, level: float = 0.95,
             operating_point=None, label: str | None = None, ax=None):
    """ROC curve with a pointwise bootstrap band and an optional operating point.

    Args:
        y_true, y_score: binary labels and class-1 scores (or (N, 2) probabilities).
        n_bootstrap: bootstrap resamples for the band (0: no band); resamples
            cases, or patients with ``groups``; single-class resamples skipped.
        operating_point: None; a threshold (float); ``"youden"``; or
            ``{"specificity": 0.9}`` for the best sensitivity at that
            specificity. Drawn as a dot with its sensitivity and specificity.
        label: legend label of the curve (default "ROC").

    The legend gives the AUROC with its bootstrap interval.
    """
    t = np.asarray(y_true).ravel()
    fig, ax = _axes(ax, (4.8, 4.6))
    fpr, tpr, _ = _metrics.roc_curve(t, y_score, drop_intermediate=False)
    auc = _metrics.auroc(t, y_score)
    text = f"{label or 'ROC'} (AUROC {auc:.3f}"
    if n_bootstrap:
        band = _metrics.roc_curve_band(t, y_score, n=n_bootstrap, seed=seed, groups=groups, level=level)
        ax.fill_between(band["fpr"], band["low"], band["high"], color="C0", alpha=0.2, lw=0,
                        label=f"{int(level * 100)}% bootstrap band")
        text += f", {int(level * 100)}% CI {band['auroc_low']:.3f}-{band['auroc_high']:.3f}"
    ax.plot(fpr, tpr, color="C0", lw=2, label=text + ")")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="chance")
    if operating_point is not None:
        if isinstance(operating_point, str) and operating_point == "youden":
            threshold = _metrics.youden_threshold(t, y_score)
        elif isinstance(operating_point, Mapping) and "specificity" in operating_point:
            _, threshold = _metrics.sensitivity_at_specificity(t, y_score, operating_point["specificity"])
        elif isinstance(operating_point, (int, float)):
            threshold = float(operating_point)
        else:
            raise ParameterError("operating_point must be a threshold, 'youden' or {'specificity': value}")
        op = _metrics.operating_point(t, y_score, threshold)
        ax.plot([1 - op["specificity"]], [op["sensitivity"]], "o", color="C3", ms=8, zorder=5,
                label=f"threshold {threshold:.3g}: sens {op['sensitivity']:.2f}, spec {op['specificity']:.2f}")
    ax.set(xlabel="1 - specificity (false-positive rate)", ylabel="sensitivity (true-positive rate)",
           xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def plot_confusion_matrix(y_true, y_pred, class_names: Sequence[str] | None = None, normalize: str | None = None,
                          num_classes: int | None = None, ax=None):
    """Confusion matrix as a heat map, rows = true class, columns = predicted.

    Args:
        normalize: None (counts), ``"true"`` (each row sums to 1: per-class
            sensitivity on the diagonal) or ``"pred"`` (each column sums to 1:
            PPV on the diagonal). Counts are always printed.
    """
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    cm = _metrics.confusion_matrix(y_true, y_pred, num_classes)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize is None:
            shown = cm.astype(float)
        elif normalize == "true":
            shown = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            shown = cm / cm.sum(axis=0, keepdims=True)
        else:
            raise ParameterError(f"normalize must be None, 'true' or 'pred', got {normalize!r}")
    fig, ax = _axes(ax, (1.1 * k + 2.2, 1.1 * k + 1.6))
    image = ax.imshow(np.nan_to_num(shown), cmap="Blues", vmin=0, vmax=1 if normalize else max(cm.max(), 1))
    fig.colorbar(image, ax=ax, shrink=0.8)
    top = np.nanmax(shown) if np.isfinite(shown).any() else 0
    for (i, j), count in np.ndenumerate(cm):
        text = f"{count}" if normalize is None else f"{shown[i, j]:.2f}\n({count})"
        ax.text(j, i, text, ha="center", va="center", fontsize=9,
                color="white" if np.isfinite(shown[i, j]) and shown[i, j] > top / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names, xlabel="predicted",
           ylabel="true")
    ax.set_title("confusion matrix" + ("" if normalize is None else f" (normalised over {normalize})"))
    return fig


def plot_calibration(y_true, y_prob, n_bins: int = 10, label: str | None = None):
    """Reliability diagram above a histogram of the predicted probabilities.

    Binning as :func:`medlab.metrics.reliability_curve` (binary: probability of
    class 1 vs fraction of positives; multi-class: top-label confidence vs
    accuracy). The title gives the expected calibration error.
    """
    curve = _metrics.reliability_curve(y_true, y_prob, n_bins)
    ece = _metrics.expected_calibration_error(y_true, y_prob, n_bins)
    fig = _figure((4.6, 5.6))
    ax, ax_hist = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="perfect calibration")
    widths = np.diff(curve.edges)
    centres = curve.edges[:-1] + widths / 2
    bins = np.searchsorted(curve.edges[1:-1], curve.confidence)
    ax.bar(centres[bins], curve.observed, width=widths[bins], color="C0", alpha=0.3, edgecolor="C0",
           label="observed per bin")
    ax.plot(curve.confidence, curve.observed, "o-", color="C0", label=label or "model")
    ax.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"reliability diagram (ECE {ece:.3f}, {n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.bar(centres[bins], curve.count, width=widths[bins], color="0.5")
    ax_hist.set(xlabel="predicted probability (confidence)", ylabel="cases")
    return fig


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def plot_learning_curves(history, metrics: Sequence[str] | None = None):
    """Losses (left) and other per-epoch quantities (right) against epoch, best epoch marked.

    Args:
        history: a :class:`medlab.train.History`, its ``to_dict()``, or a plain
            ``{name: [values per epoch]}`` dictionary.
        metrics: which non-loss quantities to show on the right (default:
            every ``val_*`` quantity that is not a loss).
    """
    from matplotlib.ticker import MaxNLocator

    if hasattr(history, "to_dict"):
        history = history.to_dict()
    series = history.get("metrics", history)
    best_epoch = history.get("best_epoch") if "metrics" in history else None
    epochs = series.get("epoch") or list(range(1, 1 + max(len(v) for v in series.values())))
    losses = [k for k in series if "loss" in k]
    others = list(metrics) if metrics is not None else [k for k in series if k.startswith("val_") and "loss" not in k]
    if not losses and not others:
        raise ParameterError("history has nothing to plot")
    fig = _figure((9 if others else 5, 3.6))
    axes = np.atleast_1d(fig.subplots(1, 2 if others else 1))

    def draw(ax, keys, ylabel):
        for key in keys:
            values = np.array([np.nan if v is None else v for v in series[key]], dtype=float)
            ax.plot(epochs[:len(values)], values, "o-", ms=3, label=key)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", ls=":", lw=1, label=f"best epoch {best_epoch}")
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)

    draw(axes[0], losses, "loss")
    if others:
        missing = [k for k in others if k not in series]
        if missing:
            raise ParameterError(f"history has no {missing}; it has {sorted(series)}")
        draw(axes[1], others, "metric")
    return fig
