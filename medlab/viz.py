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
    "class_examples", "plot_grouped_bars",
    "image_grid", "mask_overlay", "cam_overlay", "plot_roc", "plot_confusion_matrix", "plot_learning_curves",
    "plot_calibration", "CLASS_COLOURS", "plot_reliability", "plot_intensity_histograms", "plot_attack_examples",
    "plot_robustness_curve", "plot_randomisation_cascade",
    "plot_label_examples", "plot_cases", "plot_case_dice", "plot_histories", "plot_dice_vs_hd95", "plot_burden",
    "plot_size_curves", "plot_rocs", "plot_orthogonal_views",
    "plot_contrast_detail",
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


def class_examples(images, labels, class_names: Sequence[str], per_class: int = 3, seed: int = 0,
                   panel_size: float = 2.0):
    """A few images of every class, drawn at random, titled with the class name: a row of ``per_class`` per class.

    Args:
        images: (N, H, W) or (N, 1, H, W) array or tensor.
        labels: (N,) class indices into ``class_names``.
        class_names: the name of each class.
        per_class: images per class and columns of the grid; a class with fewer images gets fewer (and the rows
            after it shift), a class with none is left out.
        seed: which images are drawn.
    """
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(np.int64).ravel()
    if len(labels) != len(images):
        raise ParameterError(f"{len(labels)} labels for {len(images)} images")
    if per_class < 1:
        raise ParameterError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen, titles = [], []
    for c, name in enumerate(class_names):
        members = np.flatnonzero(labels == c)
        pick = np.sort(rng.choice(members, min(per_class, members.size), replace=False))
        chosen += [images[int(i)] for i in pick]
        titles += [str(name)] * pick.size
    if not chosen:
        raise ParameterError("no image belongs to any of the classes")
    return image_grid(chosen, titles=titles, ncols=per_class, panel_size=panel_size)


def plot_grouped_bars(values: Mapping[str, Mapping[str, float]], ylabel: str = "", title: str | None = None,
                      ylim=None, reference: float | None = None, ax=None):
    """Bars of a few numbers per group, side by side, each labelled with its value.

    Args:
        values: ``{group: {series: value}}``, e.g. ``{"whole image": {"test A": 0.98, "test B": 0.61}}``; every
            group has the same series, drawn in the same colour across groups.
        ylabel, title, ylim: axis labels and limits.
        reference: draw a dashed horizontal line there (chance level, say).
    """
    groups = list(values)
    if not groups:
        raise ParameterError("plot_grouped_bars needs at least one group")
    series = list(values[groups[0]])
    if not series or any(list(values[g]) != series for g in groups):
        raise ParameterError(f"every group needs the same series; got {[list(values[g]) for g in groups]}")
    fig, ax = _axes(ax, (max(4.0, 1.6 + 1.4 * len(groups) * len(series) / 2), 3.8))
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        heights = [float(values[g][name]) for g in groups]
        offset = (j - (len(series) - 1) / 2) * width
        ax.bar(x + offset, heights, width, label=name, color=f"C{j}")
        for xi, h in zip(x, heights):
            ax.text(xi + offset, h + 0.01, f"{h:.2f}", ha="center", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="0.6", ls="--", lw=0.8)
    ax.set_xticks(x, groups)
    ax.set(ylabel=ylabel, ylim=ylim)
    if title:
        ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
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
# segmentation: examples, picked cases, per-case Dice, learning curves of several runs, burden
# --------------------------------------------------------------------------------------
def _fmt_mm(value):
    return "inf" if np.isinf(value) else "n/a" if np.isnan(value) else f"{value:.1f} mm"


def plot_label_examples(images, targets, class_names: Sequence[str], n: int = 4, seed: int = 0,
                        panel_size: float = 3.0, suptitle: str | None = None):
    """``n`` images with their reference label maps filled in, cases with the highest label first.

    Args:
        images: ``(N, H, W)`` (or ``(N, 1, H, W)``) images; targets: ``(N, H, W)`` label maps.
        class_names: names of the labels, background first.
        seed: which cases are drawn.
    """
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    targets = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets)
    if images.ndim == 4:
        images = images[:, 0]
    fg = targets.reshape(len(targets), -1).max(1)
    order = np.random.default_rng(seed).permutation(len(targets))
    order = np.concatenate([order[fg[order] == fg.max()], order[fg[order] != fg.max()]])[:n]
    fig = _figure((panel_size * len(order), panel_size + 0.4))
    axes = np.atleast_1d(fig.subplots(1, len(order)))
    for ax, i in zip(axes, order):
        mask_overlay(images[i], targets[i], mode="both", class_names=list(class_names[1:]), title=f"case {i}", ax=ax)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_cases(images, pred, true, cases: Mapping[str, int], class_names: Sequence[str], table=None,
               region: str | None = None, suptitle: str | None = None, panel_size: float = 3.2):
    """Prediction (filled) and reference (dashed contours) over the image, one panel per picked case.

    Args:
        images: ``(N, H, W)`` images; pred, true: ``(N, H, W)`` label maps.
        cases: ``{"best": i, "median": j, ...}`` (e.g. from :func:`medlab.metrics.pick_cases`).
        class_names: names of the labels, background first.
        table, region: a :func:`medlab.metrics.case_metrics` table and a region:
            each title then shows the case's Dice and HD95 of ``region``.
    """
    fig = _figure((panel_size * len(cases), panel_size + 0.5))
    axes = np.atleast_1d(fig.subplots(1, len(cases)))
    for ax, (label, i) in zip(axes, cases.items()):
        title = f"{label} (case {i})"
        if table is not None and region is not None:
            title += (f"\n{region}: Dice {table.loc[i, f'dice_{region}']:.2f}, "
                      f"HD95 {_fmt_mm(table.loc[i, f'hd95_{region}'])}")
        mask_overlay(images[i], pred[i], mode="filled", class_names=list(class_names[1:]), reference=true[i],
                     title=title, ax=ax)
        ax.title.set_fontsize(9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_case_dice(tables: Mapping[str, object], regions: Sequence[str], present_only: bool = True):
    """Per-case Dice of each region: a box and the cases as dots per table (e.g. one table per loss).

    ``tables`` maps a run's name to its :func:`medlab.metrics.case_metrics`
    table. With ``present_only`` a region's panel shows only the cases where it
    is in the reference (the empty-empty cases all score 1 by convention).
    """
    fig = _figure((3.6 * len(regions), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(regions)))
    rng = np.random.default_rng(0)
    for ax, region in zip(axes, regions):
        values = []
        for table in tables.values():
            d = table[f"dice_{region}"]
            values.append(d[table[f"true_{region}"] > 0].to_numpy() if present_only else d.to_numpy())
        ax.boxplot(values, showfliers=False, widths=0.5)
        for k, v in enumerate(values, start=1):
            ax.plot(k + rng.uniform(-0.15, 0.15, len(v)), v, ".", ms=3, alpha=0.5, color=f"C{k - 1}")
        ax.set_xticks(range(1, len(values) + 1), list(tables), rotation=15, fontsize=8)
        ax.set(ylim=(-0.03, 1.03), ylabel="Dice per case",
               title=f"{region}" + (f" (cases with {region})" if present_only else ""))
    return fig


def plot_histories(histories: Mapping[str, object], metrics: Sequence[str] = ()):
    """Learning curves of several runs: loss (left) and validation metrics (right), one colour per run.

    Args:
        histories: a run's name (e.g. its loss) -> its :class:`medlab.train.History`
            (or a ``{name: [values per epoch]}`` dictionary).
        metrics: history keys to draw on the right, e.g. ``["val_dice_lung", "val_dice_lesion"]``.

    Losses of different kinds are on different scales: compare their shapes, not heights.
    """
    fig = _figure((10, 3.6))
    left, right = fig.subplots(1, 2)
    styles = ("-", "--", ":", "-.")
    for k, (name, h) in enumerate(histories.items()):
        left.plot(h["epoch"], h["train_loss"], "o-", ms=3, color=f"C{k}", alpha=0.5, label=f"{name} (train)")
        if "val_loss" in h:
            left.plot(h["epoch"], h["val_loss"], "s--", ms=3, color=f"C{k}", label=f"{name} (val)")
        for j, key in enumerate(metrics):
            if key in h:
                right.plot(h["epoch"], h[key], styles[j % len(styles)], marker="o", ms=3, color=f"C{k}",
                           label=f"{name}: {key}")
    left.set(xlabel="epoch", ylabel="loss (each on its own scale)", title="training and validation loss")
    right.set(xlabel="epoch", ylabel="metric", ylim=(-0.02, 1.02), title="validation metrics")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return fig


def plot_dice_vs_hd95(table, region: str, highlight: int = 3):
    """Per-case Dice against HD95 of one region, the ``highlight`` cases where they disagree most labelled.

    ``table`` is a :func:`medlab.metrics.case_metrics` table. Disagreement:
    a large finite HD95 with a high Dice (a good overlap with a stray island
    far away). Cases with HD95 inf (one mask empty) are drawn at the top edge.
    """
    d, h = table[f"dice_{region}"].to_numpy(), table[f"hd95_{region}"].to_numpy()
    ok = ~np.isnan(h)
    finite = np.isfinite(h)
    top = (np.nanmax(h[finite]) * 1.15) if finite.any() else 1.0
    fig = _figure((5.2, 4))
    ax = fig.subplots()
    ax.scatter(d[finite], h[finite], s=12, alpha=0.6, label="cases")
    inf = ok & ~finite
    if inf.any():
        ax.scatter(d[inf], np.full(inf.sum(), top), marker="^", color="C3", s=18, label="HD95 = inf (one mask empty)")
    if finite.any():
        score = np.where(finite, h / (np.nanmax(h[finite]) + 1e-9) + d, -np.inf)
        for i in np.argsort(-score)[:highlight]:
            if np.isfinite(score[i]):
                ax.annotate(f"case {table.index[i]}", (d[i], h[i]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    ax.set(xlabel=f"Dice ({region})", ylabel=f"HD95 ({region}), mm", xlim=(-0.03, 1.03),
           title=f"{region}: overlap and boundary distance per case")
    ax.legend(fontsize=7)
    return fig


def plot_burden(true, pred, limits: Sequence[float] = (0.25, 0.5, 0.75), same=None):
    """Predicted against true fraction of an organ involved, per case, with the grade limits drawn.

    Args:
        true, pred: burdens per case (fractions in [0, 1]).
        limits: the burdens where a grade ends (MosMedData: 25, 50, 75 %).
        same: boolean per case, whether the two grades agree (crosses where not).
    """
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    same = np.ones(len(true), bool) if same is None else np.asarray(same, bool)
    fig = _figure((4.8, 4.4))
    ax = fig.subplots()
    for edge in limits:
        ax.axvline(edge, color="0.8", lw=0.8)
        ax.axhline(edge, color="0.8", lw=0.8)
    ax.scatter(true[same], pred[same], s=12, alpha=0.6, label="same grade")
    ax.scatter(true[~same], pred[~same], s=18, color="C3", marker="x", label="different grade")
    top = max(0.3, float(max(true.max(initial=0), pred.max(initial=0))) * 1.05)
    ax.plot([0, top], [0, top], ls="--", color="0.5", lw=0.8)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="true involvement (fraction of lung)",
           ylabel="predicted involvement", title="lesion burden; grey lines: the grade limits")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
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


# --------------------------------------------------------------------------------------
# trust: calibration compared, intensity shift, adversarial examples, saliency sanity checks
# --------------------------------------------------------------------------------------
def plot_reliability(curves: Sequence[tuple[str, object, object]], n_bins: int = 10, title: str | None = None):
    """Several reliability curves on one diagram (each one's ECE in the legend), above their histograms.

    Args:
        curves: ``(label, y_true, y_prob)`` triples; ``y_prob`` as
            :func:`medlab.metrics.reliability_curve` takes it (class-1
            probability, ``(N, 2)`` probabilities, or ``(N, C)`` for the
            top-label reading).
        n_bins: equal-width bins on [0, 1].
        title: the diagram's title (default: "reliability diagram (n bins)").

    Raises:
        ParameterError: no curves.
    """
    if not curves:
        raise ParameterError("plot_reliability needs at least one (label, y_true, y_prob)")
    fig = _figure((5.2, 6.0))
    ax, ax_hist = fig.subplots(2, 1, height_ratios=[3, 1.2], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="perfect calibration")
    edges = np.linspace(0, 1, n_bins + 1)
    binary = True
    for i, (label, y_true, y_prob) in enumerate(curves):
        curve = _metrics.reliability_curve(y_true, y_prob, n_bins)
        ece = _metrics.expected_calibration_error(y_true, y_prob, n_bins)
        ax.plot(curve.confidence, curve.observed, "o-", color=f"C{i}", label=f"{label} (ECE {ece:.3f})")
        binary = binary and (np.ndim(y_prob) == 1 or np.shape(y_prob)[1] == 2)
        ax_hist.hist(_metrics.calibration_confidence(y_true, y_prob), bins=edges, histtype="step", color=f"C{i}",
                     lw=1.5)
    ax.set(ylabel="observed frequency of class 1" if binary else "accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title or f"reliability diagram ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.set(xlabel="predicted probability", ylabel="cases")
    return fig


def plot_intensity_histograms(sets: Mapping[str, object], bins: int = 64, value_range=(0.0, 1.0)):
    """Pixel-intensity histograms (density, log scale) of several image sets, one line each.

    Args:
        sets: ``{label: images}`` (arrays or tensors of any shape); the legend
            gives each set's mean and standard deviation.
        bins: equal-width bins over ``value_range``.
    """
    fig, ax = _axes(None, (5.6, 3.4))
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    for i, (label, images) in enumerate(sets.items()):
        values = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float).ravel()
        hist, _ = np.histogram(values, bins=edges, density=True)
        ax.step(edges[:-1], hist, where="post", color=f"C{i}",
                label=f"{label} (mean {values.mean():.2f}, sd {values.std():.2f})")
    ax.set(xlabel="pixel intensity", ylabel="density", yscale="log")
    ax.legend(fontsize=8)
    return fig


def plot_attack_examples(clean, adversarial, cams_clean, cams_adv, p_clean, p_adv, class_names: Sequence[str],
                         labels, limit: float | None = None):
    """Per case (rows): clean image with its heat map, the perturbation, attacked image with its heat map.

    Args:
        clean, adversarial: ``(N, 1, H, W)`` (or ``(N, H, W)``) images in [0, 1].
        cams_clean, cams_adv: ``(N, H, W)`` maps in [0, 1] (e.g. Grad-CAM of the predicted class).
        p_clean, p_adv: ``(N, classes)`` probabilities; titles give the picked
            class and its probability.
        class_names: names of the classes; ``labels`` the true classes.
        limit: the perturbation's colour scale is +/- ``limit`` (default its
            largest absolute value, so that a perturbation of a few grey levels shows).
    """
    def grey(a):
        a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=float)
        return a[:, 0] if a.ndim == 4 else a

    clean, adversarial = grey(clean), grey(adversarial)
    p_clean, p_adv = np.asarray(p_clean, dtype=float), np.asarray(p_adv, dtype=float)
    delta = adversarial - clean
    limit = limit or max(float(np.abs(delta).max()), 1e-8)
    n = len(clean)
    if n == 0:
        raise ParameterError("plot_attack_examples needs at least one case")
    fig = _figure((7.2, 2.3 * n + 0.3))
    axes = np.atleast_2d(fig.subplots(n, 3))
    for i in range(n):
        k_clean, k_adv = int(np.argmax(p_clean[i])), int(np.argmax(p_adv[i]))
        panels = ((clean[i], cams_clean[i], f"clean: {class_names[k_clean]} {p_clean[i][k_clean]:.2f}"),
                  (delta[i], None, f"perturbation (+/-{limit:.3f})"),
                  (adversarial[i], cams_adv[i], f"attacked: {class_names[k_adv]} {p_adv[i][k_adv]:.2f}"))
        for ax, (image, cam, title) in zip(axes[i], panels):
            if cam is None:
                ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            else:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.imshow(np.asarray(cam), cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        axes[i, 0].set_ylabel(f"true: {class_names[int(labels[i])]}", fontsize=8)
    return fig


def plot_robustness_curve(curve: Mapping, marker_epsilon: float | None = None, pixel_levels: int | None = 255):
    """Accuracy (left) and AUROC (right) against the attack budget epsilon, one line per attack.

    Args:
        curve: ``{"epsilons": [...], "<attack>": {"accuracy": [...], "auroc": [...]}, ...}``
            with one value per epsilon (an attack may lack ``auroc``).
        marker_epsilon: draw a vertical line there.
        pixel_levels: label the top axis in grey levels of an image with this
            many levels above black (255 for 8 bits); None: no second axis.
    """
    eps = np.asarray(curve["epsilons"], dtype=float)
    methods = [k for k in curve if k != "epsilons"]
    fig = _figure((9.0, 3.6))
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("accuracy", "auroc"), ("accuracy", "AUROC")):
        for i, method in enumerate(methods):
            if key in curve[method]:
                ax.plot(eps, np.asarray(curve[method][key], dtype=float), "o-", color=f"C{i}", label=method.upper())
        ax.axhline(0.5, color="0.6", ls=":", lw=0.8, label="chance (balanced)")
        if marker_epsilon is not None:
            ax.axvline(marker_epsilon, color="0.3", ls="--", lw=0.8)
        ax.set(xlabel="epsilon (L-inf, image units)", ylabel=label, ylim=(-0.02, 1.02))
        if pixel_levels:
            top = ax.secondary_xaxis("top", functions=(lambda e: e * pixel_levels, lambda g: g / pixel_levels))
            top.set_xlabel(f"grey levels (of {pixel_levels})")
    axes[0].legend(fontsize=8)
    return fig


def plot_randomisation_cascade(images, stages: Sequence[str], maps: Sequence, similarity: Sequence,
                               n_images: int = 3, ylabel: str = "rank correlation with the trained maps"):
    """Heat maps of a few images at every stage of a randomisation cascade, and the similarity per stage.

    Args:
        images: the explained images, ``(N, 1, H, W)`` or ``(N, H, W)``.
        stages: a name per stage (the first is usually the trained model).
        maps: per stage, ``(N, H, W)`` maps in [0, 1].
        similarity: per stage, ``(N,)`` similarities to the first stage's maps
            (e.g. Spearman rank correlations); the lower panel shows their mean
            and their 10th to 90th percentile across images.
        n_images: rows of maps to show.
    """
    imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    imgs = imgs[:, 0] if imgs.ndim == 4 else imgs
    k = len(stages)
    if k == 0 or len(maps) != k or len(similarity) != k:
        raise ParameterError(f"need one map set and one similarity per stage: {k} stages, {len(maps)} map sets, "
                             f"{len(similarity)} similarities")
    n = max(1, min(n_images, len(imgs)))
    fig = _figure((1.7 * k + 0.5, 1.7 * n + 2.8))
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.7 * n, 2.6])
    axes = np.atleast_2d(top.subplots(n, k))
    for i in range(n):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(imgs[i], cmap="gray", interpolation="nearest")
            ax.imshow(np.asarray(maps[j][i], dtype=float), cmap="jet", vmin=0, vmax=1, alpha=0.45,
                      interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(stages[j], fontsize=8)
    ax = bottom.subplots()
    x = np.arange(k)
    values = [np.asarray(v, dtype=float) for v in similarity]
    mean = np.array([np.nanmean(v) for v in values])
    low = np.array([np.nanpercentile(v, 10) for v in values])
    high = np.array([np.nanpercentile(v, 90) for v in values])
    ax.plot(x, mean, "o-", color="C0", label="mean")
    ax.fill_between(x, low, high, color="C0", alpha=0.15, label="10th to 90th percentile")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(x, list(stages), rotation=20, fontsize=8)
    ax.set(ylabel=ylabel, ylim=(-1.05, 1.05), xlabel="randomised from the output down to")
    ax.legend(fontsize=8)
    return fig


def plot_size_curves(summary: Sequence[Mapping], runs: Sequence[Mapping] = (), labels: Mapping[str, str] | None = None,
                     ylabel: str = "test AUROC", chance: float | None = 0.5, title: str | None = None, ax=None):
    """A metric against training-set size (log scale): one line per group, with bands and single runs.

    Args:
        summary: one dict per group and size with ``group``, ``size``, ``mean`` and optionally ``low`` and
            ``high`` (drawn as a band, e.g. a bootstrap interval).
        runs: one dict per single run with ``group``, ``size`` and ``value`` (drawn as dots, e.g. seeds).
        labels: legend label of each group (default the group's name).
        chance: a dashed reference line (None: none).
    """
    labels = dict(labels or {})
    fig, ax = _axes(ax, (6.4, 4.2))
    groups = list(dict.fromkeys(r["group"] for r in summary))
    sizes = sorted({int(r["size"]) for r in summary})
    for i, group in enumerate(groups):
        rows = sorted((r for r in summary if r["group"] == group), key=lambda r: r["size"])
        x = [r["size"] for r in rows]
        colour = f"C{i}"
        if all("low" in r and "high" in r for r in rows):
            ax.fill_between(x, [r["low"] for r in rows], [r["high"] for r in rows], color=colour, alpha=0.15, lw=0)
        ax.plot(x, [r["mean"] for r in rows], "o-", color=colour, lw=2, label=labels.get(group, str(group)))
        dots = [(r["size"], r["value"]) for r in runs if r["group"] == group]
        if dots:
            ax.scatter(*zip(*dots), color=colour, s=10, alpha=0.6)
    if chance is not None:
        ax.axhline(chance, color="0.6", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set(xlabel="labelled training images (log scale)", ylabel=ylabel, title=title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_rocs(y_true, scores: Mapping[str, object], title: str | None = None, ax=None):
    """Several ROC curves on one axes, one per entry of ``scores`` (label -> class-1 scores), AUROC in the legend."""
    t = np.asarray(y_true).ravel()
    fig, ax = _axes(ax, (4.8, 4.6))
    for i, (label, score) in enumerate(scores.items()):
        fpr, tpr, _ = _metrics.roc_curve(t, score)
        ax.plot(fpr, tpr, color=f"C{i}", lw=2, label=f"{label} (AUROC {_metrics.auroc(t, score):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", aspect="equal", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
           title=title)
    ax.legend(loc="lower right", fontsize=7)
    return fig


def plot_orthogonal_views(volumes: Mapping[str, object], spacing=(1.0, 1.0, 1.0), masks: Mapping[str, object] | None = None,
                          centre=None, title: str | None = None):
    """Axial, coronal and sagittal slices through ``centre`` of one or more volumes, one row each.

    Args:
        volumes: ``{row title: (D, H, W) array}``, all of the same shape (e.g. the T1, T2 and FLAIR channels).
        spacing: ``(dz, dy, dx)`` in mm: the pixels are drawn with their physical aspect ratio, so an
            anisotropic volume looks as stretched as it is.
        masks: ``{colour: (D, H, W) boolean}`` outlines drawn on every panel (e.g. ``{"red": lesions}``).
        centre: ``(z, y, x)`` voxel the three planes go through; default the middle of the volume.

    Axes as :func:`medlab.io.read_image` lays them out: ``(D, H, W)`` run towards superior, posterior and
    the patient's left, so axial views show anterior up and the patient's right on the left (radiological
    convention), and coronal and sagittal views show superior up.
    """
    rows = {name: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float)
            for name, v in volumes.items()}
    shapes = {v.shape for v in rows.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ParameterError(f"volumes must all be (D, H, W) arrays of one shape, got {sorted(shapes)}")
    shape = next(iter(shapes))
    z, y, x = (np.array(shape) // 2) if centre is None else centre
    dz, dy, dx = spacing
    cuts = [("axial", lambda v: v[z], dy / dx), ("coronal", lambda v: v[:, y], dz / dx),
            ("sagittal", lambda v: v[:, :, x], dz / dy)]
    fig = _figure((7.5, 2.4 * len(rows) + 0.3))
    axes = np.atleast_2d(fig.subplots(len(rows), 3))
    for r, (name, volume) in enumerate(rows.items()):
        for c, (plane, cut, aspect) in enumerate(cuts):
            ax = axes[r, c]
            # medlab.io's axes run towards (superior, posterior, left): superior up in coronal and sagittal views
            ax.imshow(cut(volume), cmap="gray", aspect=aspect, origin="upper" if plane == "axial" else "lower")
            for colour, mask in (masks or {}).items():
                m = cut(np.asarray(mask, dtype=float))
                if m.any():
                    ax.contour(m, levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {plane}" if len(rows) > 1 else plane, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------
# contrast-detail
# --------------------------------------------------------------------------------------
def plot_contrast_detail(table, size_label: str = "size", contrast_label: str = "contrast",
                         title: str | None = None):
    """A contrast-detail figure from :func:`medlab.metrics.contrast_detail`'s table.

    Left: a heat map of sensitivity, size bins across and contrast bins up (faint at the bottom), each cell
    with its sensitivity and number of findings (grey and "n=0" where a cell is empty). Right: sensitivity
    against size bin, one line per contrast band, with the table's Wilson intervals as error bars.

    Args:
        table: the DataFrame ``contrast_detail`` returns.
        size_label, contrast_label: axis titles (say the units).
        title: figure title.
    """
    from matplotlib import colormaps

    size_bins = list(dict.fromkeys(table["size_bin"]))
    contrast_bins = list(dict.fromkeys(table["contrast_bin"]))
    if len(table) != len(size_bins) * len(contrast_bins):
        raise ParameterError("plot_contrast_detail needs the full grid that medlab.metrics.contrast_detail returns")
    sens = table["sensitivity"].to_numpy(float).reshape(len(size_bins), len(contrast_bins)).T   # contrast x size
    count = table["count"].to_numpy(int).reshape(len(size_bins), len(contrast_bins)).T
    low = table["ci_low"].to_numpy(float).reshape(sens.T.shape).T
    high = table["ci_high"].to_numpy(float).reshape(sens.T.shape).T
    fig = _figure((10.0, 3.9))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1.0]})
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(sens), origin="lower", cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (j, i), value in np.ndenumerate(sens):
        text = f"{value:.2f}\nn={count[j, i]}" if count[j, i] else "n=0"
        ax.text(i, j, text, ha="center", va="center", fontsize=8,
                color="black" if np.isnan(value) or value > 0.6 else "white")
    ax.set_xticks(range(len(size_bins)), size_bins, fontsize=8)
    ax.set_yticks(range(len(contrast_bins)), contrast_bins, fontsize=8)
    ax.set(xlabel=size_label, ylabel=contrast_label, title="sensitivity per cell (n: findings)")
    fig.colorbar(im, ax=ax, label="sensitivity", shrink=0.9)
    x = np.arange(len(size_bins))
    for j, band in enumerate(contrast_bins):
        ok = count[j] > 0
        err = np.clip(np.vstack([sens[j] - low[j], high[j] - sens[j]])[:, ok], 0.0, None)
        ax2.errorbar(x[ok] + (j - (len(contrast_bins) - 1) / 2) * 0.06, sens[j][ok], yerr=err, marker="o",
                     capsize=3, color=colormaps["plasma"](0.15 + 0.7 * j / max(1, len(contrast_bins) - 1)),
                     label=f"{contrast_label.split(' (')[0]} {band}")
    ax2.set_xticks(x, size_bins, fontsize=8)
    ax2.set(xlabel=size_label, ylabel="sensitivity", ylim=(-0.03, 1.05),
            title=f"sensitivity against size, per contrast band ({table.attrs.get('level', 0.95):.0%} Wilson)")
    ax2.legend(fontsize=7, loc="lower right")
    for a in (ax, ax2):
        a.title.set_fontsize(9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
