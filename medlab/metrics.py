"""Segmentation and classification metrics, with their conventions stated.

Every function takes NumPy arrays (torch tensors are converted) and returns
plain floats or NumPy arrays. The conventions below are tested against
MONAI, scikit-learn and medpy in ``tests/test_metrics.py``; where a peer
differs, the test shows the difference on purpose.

Segmentation (one case at a time; use :func:`per_case` for a batch)
    Inputs are either two boolean masks (the result is a float) or two integer
    label maps (the result is an array with one value per evaluated label, in
    the order of ``labels``; by default labels ``1 .. C-1``, or ``0 .. C-1``
    with ``include_background=True``, where ``C`` is ``num_classes`` or the
    largest label seen plus one).

    * Dice and IoU: both masks empty -> 1.0 (nothing to find, nothing found);
      exactly one empty -> 0.0. This is MONAI with ``ignore_empty=False`` and
      medpy's ``jc``; medpy 0.5's ``dc`` gives nan (0/0) for two empty masks.
    * Surfaces are the mask voxels that touch the outside of the mask along an
      axis (the mask minus its erosion by the cross-shaped structuring
      element; voxels outside the array count as outside), as in MONAI and
      medpy. Distances are Euclidean, in physical units when ``spacing`` (one
      value per axis, e.g. mm) is given.
    * HD95: the maximum of the two directed 95th percentiles of surface
      distances (MONAI's definition). medpy's ``hd95`` pools both directions
      before taking the percentile, which can give a smaller value.
    * Mean surface distance (``mean_surface_distance``): the mean of all
      surface distances of both directions pooled (MONAI's
      ``compute_average_surface_distance(symmetric=True)`` and medpy 0.5's
      ``assd``; some older tools average the two directed means instead).
    * Distances with one mask empty -> inf (a missed or hallucinated
      structure counts as the worst case); both empty -> nan. MONAI agrees.
    * Reductions over cases (:func:`reduce_cases`) ignore nan and report how
      many cases were left out.

Classification
    * Labels are integers ``0 .. C-1``; for binary problems the positive
      class is 1.
    * Rates with an empty denominator (e.g. PPV when nothing is called
      positive) are nan, not 0 as scikit-learn's default ``zero_division``
      gives: a rate that was not measurable should not look like a bad one.
    * AUROC with only one class present raises :class:`ParameterError`.
    * Bootstrap confidence intervals resample cases, or patients when
      ``groups`` is given, and skip resamples on which the metric is
      undefined (single-class resamples), reporting how many were skipped.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from .errors import ParameterError

__all__ = [
    # segmentation
    "dice", "iou", "hausdorff95", "mean_surface_distance", "surface_distances", "per_case", "reduce_cases",
    "CaseReduction",
    # segmentation: regions, tables of cases, burden
    "metric_name", "region_masks", "case_dice", "region_dice_metrics", "case_metrics", "summarise_regions",
    "pick_cases", "lesion_burden", "threshold_averaged_dice",
    # segmentation: lesion-wise detection
    "match_lesions", "lesion_scores",
    # detection against finding size and contrast
    "contrast_detail", "wilson_interval",
    # classification
    "confusion_matrix", "sensitivity", "specificity", "ppv", "npv", "f1", "operating_point", "auroc", "roc_curve",
    "roc_curve_band", "sensitivity_at_specificity", "youden_threshold", "quadratic_weighted_kappa",
    "reliability_curve", "expected_calibration_error", "calibration_confidence", "bootstrap_ci", "BootstrapCI",
    "ReliabilityCurve",
    "bootstrap_auroc",
]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ======================================================================================
# segmentation
# ======================================================================================
def _label_pairs(y_pred, y_true, num_classes, include_background, labels):
    """Yield (is_binary, [(pred_mask, true_mask), ...]) for the labels to evaluate."""
    pred, true = _to_numpy(y_pred), _to_numpy(y_true)
    if pred.shape != true.shape:
        raise ParameterError(f"prediction and reference differ in shape: {pred.shape} vs {true.shape}")
    if pred.dtype == bool and true.dtype == bool and labels is None and num_classes is None:
        return True, [(pred, true)]
    for name, arr in (("prediction", pred), ("reference", true)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ParameterError(
                f"{name} must be a boolean mask or an integer label map, got dtype {arr.dtype}; "
                "threshold probabilities or take argmax over classes first")
    if labels is None:
        if num_classes is None:
            highest = max(int(pred.max(initial=0)), int(true.max(initial=0)))
            num_classes = max(highest + 1, 2)
        labels = range(0 if include_background else 1, int(num_classes))
    return False, [(pred == label, true == label) for label in labels]


def _per_label(fn, y_pred, y_true, num_classes, include_background, labels, **kwargs):
    binary, pairs = _label_pairs(y_pred, y_true, num_classes, include_background, labels)
    values = [fn(p, t, **kwargs) for p, t in pairs]
    return float(values[0]) if binary else np.asarray(values, dtype=float)


def _dice_masks(p, t):
    total = p.sum() + t.sum()
    if total == 0:
        return 1.0
    return 2.0 * np.logical_and(p, t).sum() / total


def _iou_masks(p, t):
    union = np.logical_or(p, t).sum()
    if union == 0:
        return 1.0
    return np.logical_and(p, t).sum() / union


def dice(y_pred, y_true, num_classes=None, include_background=False, labels=None):
    """Dice similarity coefficient, 2|P∩T| / (|P| + |T|), of one case.

    Args:
        y_pred, y_true: boolean masks (result: float) or integer label maps of
            the same shape (result: one value per label).
        num_classes: number of classes including background; default: the
            largest label present plus one.
        include_background: evaluate label 0 too.
        labels: evaluate exactly these labels (overrides the two above).

    Convention: both masks empty -> 1.0, exactly one empty -> 0.0 (MONAI with
    ``ignore_empty=False``; medpy's ``dc`` returns nan for two empty masks,
    which would silently drop correctly empty cases from a nan-ignoring mean).
    """
    return _per_label(_dice_masks, y_pred, y_true, num_classes, include_background, labels)


def iou(y_pred, y_true, num_classes=None, include_background=False, labels=None):
    """Intersection over union (Jaccard index), |P∩T| / |P∪T|, of one case.

    Arguments as :func:`dice`. Both masks empty -> 1.0, exactly one empty -> 0.0.
    Per label, IoU = Dice / (2 - Dice).
    """
    return _per_label(_iou_masks, y_pred, y_true, num_classes, include_background, labels)


def _surface(mask):
    from scipy.ndimage import binary_erosion

    return np.logical_xor(mask, binary_erosion(mask, border_value=0))


def _check_spacing(spacing, ndim):
    if spacing is None:
        return None
    if np.isscalar(spacing):
        spacing = (float(spacing),) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or min(spacing) <= 0:
        raise ParameterError(f"spacing must be {ndim} positive numbers (one per axis), got {spacing!r}")
    return spacing


def surface_distances(mask_from, mask_to, spacing=None):
    """Distances from each surface voxel of ``mask_from`` to the nearest surface voxel of ``mask_to``.

    Args:
        mask_from, mask_to: boolean masks of the same shape (2D or 3D).
        spacing: voxel size per axis (a number for isotropic voxels); None means 1.

    Returns:
        A 1D float array, one distance per surface voxel of ``mask_from``;
        empty when ``mask_from`` is empty, all inf when only ``mask_to`` is.
    """
    a, b = _to_numpy(mask_from).astype(bool), _to_numpy(mask_to).astype(bool)
    if a.shape != b.shape:
        raise ParameterError(f"masks differ in shape: {a.shape} vs {b.shape}")
    spacing = _check_spacing(spacing, a.ndim)
    surface_a = _surface(a)
    if not surface_a.any():
        return np.zeros(0)
    surface_b = _surface(b)
    if not surface_b.any():
        return np.full(int(surface_a.sum()), np.inf)
    from scipy.ndimage import distance_transform_edt

    distance_to_b = distance_transform_edt(~surface_b, sampling=spacing)
    return distance_to_b[surface_a]


def _hd_masks(p, t, spacing=None, percentile=95.0):
    if not p.any() and not t.any():
        return np.nan
    if not p.any() or not t.any():
        return np.inf
    forward = surface_distances(p, t, spacing)
    backward = surface_distances(t, p, spacing)
    return max(np.percentile(forward, percentile), np.percentile(backward, percentile))


def _msd_masks(p, t, spacing=None):
    if not p.any() and not t.any():
        return np.nan
    if not p.any() or not t.any():
        return np.inf
    both = np.concatenate([surface_distances(p, t, spacing), surface_distances(t, p, spacing)])
    return both.mean()


def hausdorff95(y_pred, y_true, spacing=None, num_classes=None, include_background=False, labels=None,
                percentile=95.0):
    """95th-percentile Hausdorff distance of one case, in physical units when ``spacing`` is given.

    HD95 = max(P95 of distances from prediction surface to reference surface,
    P95 of distances from reference surface to prediction surface), MONAI's
    definition; ``percentile=100`` gives the classic Hausdorff distance.
    medpy's ``hd95`` pools both directions before the percentile instead, which
    hides a one-sided miss; medlab keeps the directed maximum.

    Conventions: one mask empty -> inf, both empty -> nan (there is no surface
    to measure), as in MONAI; the inf keeps a missed or hallucinated
    structure visible in a nan-ignoring mean over cases. Arguments otherwise as :func:`dice`; ``spacing`` is one value
    per axis (e.g. ``(z, y, x)`` in mm) or one number.
    """
    return _per_label(_hd_masks, y_pred, y_true, num_classes, include_background, labels,
                      spacing=spacing, percentile=percentile)


def mean_surface_distance(y_pred, y_true, spacing=None, num_classes=None, include_background=False, labels=None):
    """Symmetric mean surface distance of one case, in physical units when ``spacing`` is given.

    The mean of the surface distances of both directions pooled together
    (MONAI's ``compute_average_surface_distance(symmetric=True)``, medpy
    0.5's ``assd``), so that every surface voxel counts once, whichever mask it
    belongs to (averaging the two directed means instead would weight the
    voxels of the smaller surface more).

    Conventions: one mask empty -> inf, both empty -> nan. Arguments as
    :func:`hausdorff95`.
    """
    return _per_label(_msd_masks, y_pred, y_true, num_classes, include_background, labels, spacing=spacing)


def per_case(metric: Callable, y_pred, y_true, **kwargs) -> np.ndarray:
    """Apply a one-case metric to each case of a batch (the first axis).

    ``per_case(dice, pred_labels, true_labels, num_classes=3)`` gives an array
    of shape (cases, labels). Pass ``num_classes`` (or ``labels``) for label
    maps so that every case reports the same labels.
    """
    pred, true = _to_numpy(y_pred), _to_numpy(y_true)
    if pred.shape != true.shape:
        raise ParameterError(f"prediction and reference differ in shape: {pred.shape} vs {true.shape}")
    return np.asarray([metric(p, t, **kwargs) for p, t in zip(pred, true)], dtype=float)


class CaseReduction(NamedTuple):
    """Mean over cases, ignoring nan: ``mean``, cases used ``n_used`` and left out ``n_excluded``."""

    mean: float | np.ndarray
    n_used: int | np.ndarray
    n_excluded: int | np.ndarray


def reduce_cases(values) -> CaseReduction:
    """Average per-case values (shape (cases,) or (cases, labels)) ignoring nan.

    nan marks a case where the metric is undefined (e.g. HD95 with both masks
    empty); such cases are left out and counted in ``n_excluded``. inf is kept
    (a mean with an inf in it is inf: a missed structure is not averaged away).
    A label with no usable case has mean nan.
    """
    values = np.asarray(values, dtype=float)
    valid = ~np.isnan(values)
    n_used = valid.sum(axis=0)
    total = np.where(valid, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_used > 0, total / np.maximum(n_used, 1), np.nan)
    n_excluded = values.shape[0] - n_used
    if values.ndim == 1:
        return CaseReduction(float(mean), int(n_used), int(n_excluded))
    return CaseReduction(mean, n_used, n_excluded)


# ======================================================================================
# segmentation: regions, tables of cases, burden
# ======================================================================================
def metric_name(name: str) -> str:
    """``name`` as a metric key: spaces and hyphens become underscores (``"ground-glass"`` -> ``"ground_glass"``)."""
    return str(name).replace(" ", "_").replace("-", "_")


def region_masks(labels, region: Sequence[int]) -> np.ndarray:
    """Boolean mask of the pixels whose label is in ``region`` (a set of labels, e.g. ``(1, 2)`` for a whole lung)."""
    return np.isin(_to_numpy(labels), np.asarray(tuple(region)))


def case_dice(y_pred, y_true) -> np.ndarray:
    """Dice of each case of two stacks of boolean masks ``(N, ...)``, vectorised; returns ``(N,)`` floats.

    Same convention as :func:`dice`: both masks empty -> 1.0, exactly one
    empty -> 0.0. Each case is scored on its own (not pooled over the stack).
    """
    p, t = _to_numpy(y_pred).astype(bool), _to_numpy(y_true).astype(bool)
    if p.shape != t.shape or p.ndim < 2:
        raise ParameterError(f"expected two stacks of masks (N, ...) of the same shape, got {p.shape} and {t.shape}")
    axes = tuple(range(1, p.ndim))
    intersection = (p & t).sum(axes)
    total = p.sum(axes) + t.sum(axes)
    return np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))


def region_dice_metrics(regions, dice: Callable = case_dice) -> dict:
    """Validation metrics for :func:`medlab.train.fit`: mean per-case Dice of each region.

    Args:
        regions: ``{name: labels}``, e.g. ``{"lung": (1, 2), "lesion": (2,)}``.
        dice: ``dice(pred_masks, true_masks) -> (N,)`` (default :func:`case_dice`;
            a lesson may pass the one it wrote).

    Returns ``{"dice_<name>": fn(y_true, y_prob)}``; ``y_prob`` is the softmax
    ``(N, C, H, W)`` that ``fit`` hands over, its argmax the predicted labels.
    """
    def make(region):
        def fn(y_true, y_prob):
            pred = np.asarray(y_prob).argmax(1)
            return float(np.mean(dice(region_masks(pred, region), region_masks(y_true, region))))
        return fn

    return {f"dice_{metric_name(name)}": make(region) for name, region in regions.items()}


def case_metrics(y_pred, y_true, regions, spacing=None):
    """One row per case: Dice, IoU and HD95 of every region, and how many pixels it has.

    Args:
        y_pred, y_true: label maps ``(N, H, W)``.
        regions: ``{name: labels}``; nested regions (lung = {1, 2}, lesion = {2}) are fine.
        spacing: pixel size, for HD95 in physical units (mm).

    Columns per region ``r``: ``dice_r``, ``iou_r``, ``hd95_r`` (inf: one mask
    empty; nan: both empty), ``true_r`` and ``pred_r`` (pixels in the
    reference and the prediction). Returns a pandas DataFrame indexed by case.
    """
    import pandas as pd

    pred, true = _to_numpy(y_pred), _to_numpy(y_true)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ParameterError(f"pred and true must be label maps of the same shape (N, H, W); "
                             f"got {pred.shape} and {true.shape}")
    columns = {}
    for name, region in regions.items():
        p, t = region_masks(pred, region), region_masks(true, region)
        columns[f"dice_{name}"] = per_case(dice, p, t)
        columns[f"iou_{name}"] = per_case(iou, p, t)
        columns[f"hd95_{name}"] = per_case(hausdorff95, p, t, spacing=spacing)
        columns[f"true_{name}"] = t.sum((1, 2))
        columns[f"pred_{name}"] = p.sum((1, 2))
    table = pd.DataFrame(columns)
    table.index.name = "case"
    return table


def summarise_regions(table, regions: Sequence[str]):
    """Per region of a :func:`case_metrics` table: mean Dice and IoU, median HD95, and the empty-mask counts.

    Returns a pandas DataFrame indexed by region with columns ``dice`` (mean
    over all cases), ``dice_present`` (mean over cases where the region is in
    the reference), ``iou``, ``hd95_median`` (inf counted as the worst value,
    nan left out), ``n_cases``, ``n_present``, ``n_both_empty`` (Dice 1 by
    convention, HD95 nan), ``n_missed`` (present, nothing predicted),
    ``n_false_alarm`` (absent, something predicted) and ``n_hd95_inf``.
    """
    import pandas as pd

    rows = {}
    for name in regions:
        d, i, h = table[f"dice_{name}"], table[f"iou_{name}"], table[f"hd95_{name}"].to_numpy()
        present, predicted = table[f"true_{name}"] > 0, table[f"pred_{name}"] > 0
        defined = h[~np.isnan(h)]
        rows[name] = {
            "dice": float(d.mean()), "dice_present": float(d[present].mean()) if present.any() else float("nan"),
            "iou": float(i.mean()), "hd95_median": float(np.median(defined)) if defined.size else float("nan"),
            "n_cases": len(table), "n_present": int(present.sum()), "n_both_empty": int((~present & ~predicted).sum()),
            "n_missed": int((present & ~predicted).sum()), "n_false_alarm": int((~present & predicted).sum()),
            "n_hd95_inf": int(np.isinf(h).sum()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def pick_cases(table, region: str, among_present: bool = True) -> dict:
    """The ``best``, ``median`` and ``worst`` cases by Dice of ``region`` in a :func:`case_metrics` table.

    With ``among_present`` only cases where the region is in the reference
    are ranked (an empty-empty case scores 1 and would always be "best").
    Ties are broken by case order. Returns ``{"best": i, "median": j, "worst": k}``.
    """
    values = table[f"dice_{region}"]
    if among_present:
        present = table[f"true_{region}"] > 0
        if present.any():
            values = values[present]
    order = values.sort_values(kind="stable").index.to_list()
    if not order:
        raise ParameterError("no cases to pick from")
    return {"best": int(order[-1]), "median": int(order[len(order) // 2]), "worst": int(order[0])}


def lesion_burden(lesion, lung) -> np.ndarray:
    """Fraction of the lung involved, per case: lesion pixels inside the lung / lung pixels.

    ``lesion`` and ``lung`` are boolean ``(N, H, W)``; lesion pixels outside
    the lung are not counted, and a case with no lung pixels has burden 0.
    (The severity band CT-0..CT-4 of a burden is
    :func:`medlab.data.phantoms.mosmed_band`.)
    """
    lesion, lung = _to_numpy(lesion).astype(bool), _to_numpy(lung).astype(bool)
    if lesion.shape != lung.shape:
        raise ParameterError(f"lesion {lesion.shape} and lung {lung.shape} masks differ in shape")
    lung_pixels = lung.sum(axis=(-2, -1))
    return ((lesion & lung).sum(axis=(-2, -1)) / np.maximum(lung_pixels, 1)).astype(float)


def threshold_averaged_dice(y_prob, y_true, thresholds: int = 256) -> np.ndarray:
    """Inf-Net's Dice (Fan et al. 2020): a probability map's Dice averaged over ``thresholds`` thresholds.

    Each map of ``y_prob`` ``(N, H, W)`` is min-max normalised to [0, 1] on
    its own, turned into masks ``norm > level`` at ``thresholds`` evenly
    spaced levels from 0 to 1, and the Dice (:func:`case_dice`) of each mask
    against ``y_true`` (boolean ``(N, H, W)``) is averaged over the levels.
    Returns one value per case. It is not the Dice of a 0.5-thresholded mask
    and not comparable to one.
    """
    prob = _to_numpy(y_prob).astype(np.float64)
    true = _to_numpy(y_true).astype(bool)
    if prob.shape != true.shape:
        raise ParameterError(f"prob {prob.shape} and true {true.shape} differ in shape")
    lo = prob.min(axis=(1, 2), keepdims=True)
    hi = prob.max(axis=(1, 2), keepdims=True)
    norm = (prob - lo) / np.maximum(hi - lo, 1e-8)
    scores = [case_dice(norm > level, true) for level in np.linspace(0.0, 1.0, thresholds)]
    return np.mean(scores, axis=0)


# ======================================================================================
# classification: counts and rates
# ======================================================================================
def _labels_1d(y, name):
    arr = _to_numpy(y).ravel()
    if arr.dtype == bool:
        arr = arr.astype(int)
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(int)
        else:
            raise ParameterError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ParameterError(f"{name} must hold labels 0 .. C-1, found {arr.min()}")
    return arr


def confusion_matrix(y_true, y_pred, num_classes=None) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class (scikit-learn's layout).

    ``num_classes`` defaults to the largest label seen plus one (at least 2),
    so a class absent from both still gets its row and column.
    """
    t, p = _labels_1d(y_true, "y_true"), _labels_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ParameterError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if num_classes is None:
        num_classes = max(int(t.max(initial=0)), int(p.max(initial=0))) + 1
        num_classes = max(num_classes, 2)
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _ratio(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _rate(y_true, y_pred, average, num_classes, numerator, denominator):
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    counts = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    values = _ratio(_total(counts, numerator), _total(counts, denominator))
    if average == "binary":
        if cm.shape[0] != 2:
            raise ParameterError(f"average='binary' needs labels 0 and 1, found {cm.shape[0]} classes; "
                                 "use average=None (one value per class) or 'macro'")
        return float(values[1])
    if average is None:
        return values
    if average == "macro":
        return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
    raise ParameterError(f"average must be 'binary', 'macro' or None, got {average!r}")


def _total(counts, names):
    """Sum of the named count arrays (a name may repeat: F1's numerator is TP + TP)."""
    total = 0
    for name in names:
        total = total + counts[name]
    return total


def sensitivity(y_true, y_pred, average="binary", num_classes=None):
    """Sensitivity (recall, true-positive rate) = TP / (TP + FN).

    ``average='binary'``: for class 1; ``None``: one value per class
    (one-vs-rest); ``'macro'``: their mean ignoring nan. nan when the class
    has no true cases.
    """
    return _rate(y_true, y_pred, average, num_classes, ("tp",), ("tp", "fn"))


def specificity(y_true, y_pred, average="binary", num_classes=None):
    """Specificity (true-negative rate) = TN / (TN + FP); arguments as :func:`sensitivity`.

    nan when there are no negatives for the class.
    """
    return _rate(y_true, y_pred, average, num_classes, ("tn",), ("tn", "fp"))


def ppv(y_true, y_pred, average="binary", num_classes=None):
    """Positive predictive value (precision) = TP / (TP + FP); nan when nothing is called positive."""
    return _rate(y_true, y_pred, average, num_classes, ("tp",), ("tp", "fp"))


def npv(y_true, y_pred, average="binary", num_classes=None):
    """Negative predictive value = TN / (TN + FN); nan when nothing is called negative."""
    return _rate(y_true, y_pred, average, num_classes, ("tn",), ("tn", "fn"))


def f1(y_true, y_pred, average="binary", num_classes=None):
    """F1 = 2 TP / (2 TP + FP + FN), the harmonic mean of PPV and sensitivity.

    nan when the class is neither present nor predicted (scikit-learn's
    default gives 0 with a warning).
    """
    return _rate(y_true, y_pred, average, num_classes, ("tp", "tp"), ("tp", "tp", "fp", "fn"))


def operating_point(y_true, y_score, threshold: float) -> dict:
    """Counts and rates of a binary classifier calling ``y_score >= threshold`` positive.

    Returns a dict with ``tp``, ``fp``, ``fn``, ``tn``, ``sensitivity``,
    ``specificity``, ``ppv``, ``npv``, ``f1`` and ``threshold`` (rates nan
    when their denominator is empty).
    """
    t = _labels_1d(y_true, "y_true")
    s = _binary_scores(y_score)
    if t.shape != s.shape:
        raise ParameterError(f"y_true and y_score differ in length: {t.size} vs {s.size}")
    pred = (s >= threshold).astype(int)
    cm = confusion_matrix(t, pred, num_classes=2)
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    return {
        "threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "sensitivity": float(_ratio(tp, tp + fn)), "specificity": float(_ratio(tn, tn + fp)),
        "ppv": float(_ratio(tp, tp + fp)), "npv": float(_ratio(tn, tn + fn)),
        "f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
    }


# ======================================================================================
# classification: scores
# ======================================================================================
def _binary_scores(y_score):
    s = _to_numpy(y_score).astype(float)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    elif s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ParameterError(f"binary scores must be 1D (or (N, 2) probabilities), got shape {s.shape}")
    return s


def _check_both_classes(t):
    present = np.unique(t)
    if present.size < 2:
        raise ParameterError(
            f"AUROC/ROC is undefined when only one class is present (all labels are {present.tolist()}); "
            "it needs at least one positive and one negative case")
    if not set(present.tolist()) <= {0, 1}:
        raise ParameterError(f"binary ROC needs labels 0 and 1, got {present.tolist()}")


def auroc(y_true, y_score, average="macro"):
    """Area under the ROC curve (scikit-learn's ``roc_auc_score`` underneath).

    Args:
        y_true: labels 0 .. C-1.
        y_score: binary: scores of class 1, shape (N,) or probabilities (N, 2);
            multi-class: scores (N, C), evaluated one-vs-rest.
        average: multi-class only: ``'macro'`` (mean over classes), ``'weighted'``
            (by class frequency) or None (one value per class).

    Raises:
        ParameterError: only one class present (binary), or a class with no
            cases (multi-class): the AUROC is undefined there.
    """
    from sklearn.metrics import roc_auc_score

    t = _labels_1d(y_true, "y_true")
    s = _to_numpy(y_score).astype(float)
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] <= 2):
        s = _binary_scores(s)
        if s.shape != t.shape:
            raise ParameterError(f"y_true and y_score differ in length: {t.size} vs {s.size}")
        _check_both_classes(t)
        return float(roc_auc_score(t, s))
    if s.shape[0] != t.size:
        raise ParameterError(f"y_true and y_score differ in length: {t.size} vs {s.shape[0]}")
    n_classes = s.shape[1]
    counts = np.bincount(t, minlength=n_classes)
    if counts.size > n_classes:
        raise ParameterError(f"y_true has label {t.max()} but y_score has only {n_classes} columns")
    missing = np.nonzero(counts == 0)[0]
    if missing.size or np.any(counts == t.size):
        raise ParameterError(
            f"one-vs-rest AUROC is undefined for classes with no cases or no negatives; class counts {counts.tolist()}")
    per_class = np.array([roc_auc_score(t == k, s[:, k]) for k in range(n_classes)])
    if average is None:
        return per_class
    if average == "macro":
        return float(per_class.mean())
    if average == "weighted":
        return float(np.average(per_class, weights=counts))
    raise ParameterError(f"average must be 'macro', 'weighted' or None, got {average!r}")


def roc_curve(y_true, y_score, drop_intermediate=True):
    """ROC curve of a binary classifier: ``(fpr, tpr, thresholds)`` (scikit-learn's ``roc_curve``).

    A case is positive when its score is >= the threshold; the first
    threshold is inf (nothing called positive). Raises ParameterError when
    only one class is present.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    t = _labels_1d(y_true, "y_true")
    s = _binary_scores(y_score)
    if s.shape != t.shape:
        raise ParameterError(f"y_true and y_score differ in length: {t.size} vs {s.size}")
    _check_both_classes(t)
    return sk_roc_curve(t, s, drop_intermediate=drop_intermediate)


def sensitivity_at_specificity(y_true, y_score, specificity: float = 0.95):
    """Best sensitivity among thresholds whose specificity is at least ``specificity``.

    Returns ``(sensitivity, threshold)``: calling ``y_score >= threshold``
    positive gives that sensitivity with specificity >= the target on these
    data (the target is a floor, not an interpolation).
    """
    if not 0.0 <= specificity <= 1.0:
        raise ParameterError(f"specificity must be between 0 and 1, got {specificity}")
    fpr, tpr, thresholds = roc_curve(y_true, y_score, drop_intermediate=False)
    ok = (1.0 - fpr) >= specificity - 1e-12
    best = np.flatnonzero(ok)[np.argmax(tpr[ok])]
    return float(tpr[best]), float(thresholds[best])


def youden_threshold(y_true, y_score) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y_true, y_score, drop_intermediate=False)
    j = tpr - fpr
    j[~np.isfinite(thresholds)] = -np.inf
    return float(thresholds[int(np.argmax(j))])


def roc_curve_band(y_true, y_score, n=200, seed=0, groups=None, level=0.95, grid=101) -> dict:
    """ROC curve with a pointwise bootstrap band on a grid of false-positive rates.

    Resamples cases (patients with ``groups``), skips single-class resamples,
    interpolates each resample's TPR on ``fpr`` = ``linspace(0, 1, grid)``.

    Returns:
        dict with ``fpr``, ``tpr`` (the full data), ``low`` and ``high``
        (percentile band), ``auroc``, ``auroc_low``, ``auroc_high``,
        ``n_resamples`` and ``n_skipped``.
    """
    t = _labels_1d(y_true, "y_true")
    s = _binary_scores(y_score)
    fpr_grid = np.linspace(0.0, 1.0, grid)

    def interpolated(tt, ss):
        fpr, tpr, _ = roc_curve(tt, ss, drop_intermediate=False)
        out = np.interp(fpr_grid, fpr, tpr)
        out[0] = 0.0 if fpr_grid[0] < fpr[1] else out[0]
        return out

    full = interpolated(t, s)
    curves, aucs, skipped = [], [], 0
    for index in _bootstrap_indices(t.size, groups, n, seed):
        tt = t[index]
        if np.unique(tt).size < 2:
            skipped += 1
            continue
        curves.append(interpolated(tt, s[index]))
        aucs.append(auroc(tt, s[index]))
    alpha = (1.0 - level) / 2.0
    curves = np.asarray(curves) if curves else np.full((1, grid), np.nan)
    return {
        "fpr": fpr_grid, "tpr": full,
        "low": np.quantile(curves, alpha, axis=0), "high": np.quantile(curves, 1 - alpha, axis=0),
        "auroc": auroc(t, s),
        "auroc_low": float(np.quantile(aucs, alpha)) if aucs else float("nan"),
        "auroc_high": float(np.quantile(aucs, 1 - alpha)) if aucs else float("nan"),
        "n_resamples": n - skipped, "n_skipped": skipped,
    }


def quadratic_weighted_kappa(y_true, y_pred, num_classes=None) -> float:
    """Cohen's kappa with quadratic weights for ordinal grades ``0 .. K-1``.

    kappa = 1 - sum(W * O) / sum(W * E), with O the confusion matrix, E the
    matrix expected by chance from the marginals and W_ij = (i - j)^2. The
    distance between grades is the difference of the grade values, so grades
    0 and 3 are three steps apart even when grades 1 and 2 never occur
    (scikit-learn's ``cohen_kappa_score`` ranks only the labels it sees unless
    given ``labels=range(K)``). Returns nan when all cases share one grade in
    both ratings (kappa is undefined there).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(float)
    k = cm.shape[0]
    grades = np.arange(k)
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / max(cm.sum(), 1)
    denominator = (weights * expected).sum()
    if denominator == 0:
        return float("nan")
    return float(1.0 - (weights * cm).sum() / denominator)


# ======================================================================================
# calibration
# ======================================================================================
class ReliabilityCurve(NamedTuple):
    """Per non-empty bin: mean ``confidence``, ``observed`` frequency, case ``count``; and all bin ``edges``."""

    confidence: np.ndarray
    observed: np.ndarray
    count: np.ndarray
    edges: np.ndarray


def calibration_confidence(y_true, y_prob) -> np.ndarray:
    """The probability each case is binned by in :func:`reliability_curve` and :func:`expected_calibration_error`.

    Binary (``(N,)`` or ``(N, 2)``): the probability of class 1; multi-class ``(N, C)``: the top-label
    confidence.
    """
    return _calibration_inputs(y_true, y_prob)[0]


def _calibration_inputs(y_true, y_prob):
    t = _labels_1d(y_true, "y_true")
    p = _to_numpy(y_prob).astype(float)
    if p.ndim == 2 and p.shape[1] > 2:
        confidence = p.max(axis=1)
        correct = (p.argmax(axis=1) == t).astype(float)
    else:
        confidence = _binary_scores(p)
        correct = (t == 1).astype(float)
    if confidence.size != t.size:
        raise ParameterError(f"y_true and y_prob differ in length: {t.size} vs {confidence.size}")
    if confidence.size and (confidence.min() < 0 or confidence.max() > 1):
        raise ParameterError("probabilities must lie in [0, 1]; apply softmax or sigmoid to logits first")
    return confidence, correct


def reliability_curve(y_true, y_prob, n_bins: int = 10) -> ReliabilityCurve:
    """Reliability diagram data with ``n_bins`` equal-width bins on [0, 1].

    Binary (``y_prob`` of shape (N,) or (N, 2)): the predicted probability of
    class 1 against the observed fraction of positives, exactly as
    scikit-learn's ``calibration_curve(strategy='uniform')`` bins them.
    Multi-class (N, C): top-label confidence against accuracy. Empty bins are
    left out.
    """
    confidence, correct = _calibration_inputs(y_true, y_prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    keep = count > 0
    return ReliabilityCurve(conf_sum[keep] / count[keep], correct_sum[keep] / count[keep], count[keep], edges)


def expected_calibration_error(y_true, y_prob, n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (cases in bin / N) * |observed - confidence|.

    Binning and the binary/multi-class reading as :func:`reliability_curve`.
    nan with no cases.
    """
    curve = reliability_curve(y_true, y_prob, n_bins)
    total = curve.count.sum()
    if total == 0:
        return float("nan")
    return float(np.sum(curve.count / total * np.abs(curve.observed - curve.confidence)))


# ======================================================================================
# bootstrap
# ======================================================================================
class BootstrapCI(NamedTuple):
    """A metric on all data (``estimate``) with a percentile interval ``low`` .. ``high``."""

    estimate: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray
    n_resamples: int
    n_skipped: int
    level: float


def _bootstrap_indices(n_cases, groups, n, seed):
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n):
            yield rng.integers(0, n_cases, n_cases)
        return
    groups = _to_numpy(groups).ravel()
    if groups.size != n_cases:
        raise ParameterError(f"groups must have one entry per case: {groups.size} vs {n_cases}")
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse))]
    members = [order[bounds[g]:bounds[g + 1]] for g in range(bounds.size - 1)]
    n_groups = len(members)
    for _ in range(n):
        chosen = rng.integers(0, n_groups, n_groups)
        yield np.concatenate([members[g] for g in chosen])


def bootstrap_ci(metric: Callable, y_true, y_pred, groups: Sequence | None = None, n: int = 1000,
                 seed: int = 0, level: float = 0.95) -> BootstrapCI:
    """Percentile bootstrap confidence interval of ``metric(y_true, y_pred)``.

    Args:
        metric: any function of ``(y_true, y_pred)`` returning a number (or an
            array, e.g. one value per class), such as :func:`auroc` or
            :func:`sensitivity`; ``y_pred`` may be labels or scores.
        y_true, y_pred: arrays whose first axis is the case.
        groups: optional patient id per case: whole patients are resampled,
            so that several images of one patient do not narrow the interval
            as if they were independent.
        n: number of resamples.
        seed: seed of the resampling (same seed -> same interval).
        level: coverage of the interval.

    Resamples on which the metric is undefined (it raises ``ValueError``, as
    AUROC does on a single-class resample, or returns nan) are skipped and
    counted in ``n_skipped``; all-skipped gives a nan interval.
    """
    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1, got {level}")
    t, p = _to_numpy(y_true), _to_numpy(y_pred)
    if t.shape[0] != p.shape[0]:
        raise ParameterError(f"y_true and y_pred differ in number of cases: {t.shape[0]} vs {p.shape[0]}")
    estimate = metric(t, p)
    values, skipped = [], 0
    for index in _bootstrap_indices(t.shape[0], groups, n, seed):
        try:
            value = np.asarray(metric(t[index], p[index]), dtype=float)
        except ValueError:
            skipped += 1
            continue
        if np.any(np.isnan(value)):
            skipped += 1
            continue
        values.append(value)
    alpha = (1.0 - level) / 2.0
    if values:
        stacked = np.asarray(values)
        low, high = np.quantile(stacked, alpha, axis=0), np.quantile(stacked, 1 - alpha, axis=0)
    else:
        low = high = np.full(np.shape(estimate), np.nan)
    if np.ndim(estimate) == 0:
        estimate, low, high = float(estimate), float(low), float(high)
    return BootstrapCI(estimate, low, high, n - skipped, skipped, level)


def bootstrap_auroc(y_true, y_score, n: int = 1000, seed: int = 0, level: float = 0.95) -> BootstrapCI:
    """Percentile bootstrap interval of a binary AUROC, or of the mean AUROC of several models on one test set.

    Args:
        y_true: labels 0 and 1, shape (N,).
        y_score: class-1 scores (N,), or (N, S): one column per model (for
            example per training seed); the statistic is then the mean of the
            S AUROCs, and each resample of the cases is shared by the S columns.
        n, seed, level: resamples, their seed, coverage.

    The same as ``bootstrap_ci(lambda t, p: mean of auroc(t, p[:, j]), y_true, y_score, n=n, seed=seed)``
    (the same resamples for the same seed; single-class resamples skipped and counted), computed for all
    resamples at once with the Mann-Whitney form of the AUROC (ties get average ranks), which makes
    thousands of resamples take a fraction of a second.

    Raises:
        ParameterError: only one class present, labels other than 0 and 1, or lengths that differ.
    """
    from scipy.stats import rankdata

    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1, got {level}")
    t = _labels_1d(y_true, "y_true")
    s = _to_numpy(y_score).astype(float)
    s = s[:, None] if s.ndim == 1 else s
    if s.ndim != 2 or s.shape[0] != t.size:
        raise ParameterError(f"y_score must be (N,) or (N, S) with N = {t.size} cases, got shape {s.shape}")
    _check_both_classes(t)
    estimate = float(np.mean([auroc(t, s[:, j]) for j in range(s.shape[1])]))
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.integers(0, t.size, t.size) for _ in range(n)]) if n else np.zeros((0, t.size), int)
    positives = t[draws]
    n_pos = positives.sum(axis=1)
    ok = (n_pos > 0) & (n_pos < t.size)
    draws, positives, n_pos = draws[ok], positives[ok], n_pos[ok]
    n_neg = t.size - n_pos
    values = np.zeros(len(draws))
    for j in range(s.shape[1]):
        ranks = rankdata(s[:, j][draws], axis=1)
        values += ((ranks * positives).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    values /= s.shape[1]
    alpha = (1.0 - level) / 2.0
    low, high = (np.quantile(values, [alpha, 1 - alpha]) if values.size else (np.nan, np.nan))
    return BootstrapCI(estimate, float(low), float(high), int(ok.sum()), int((~ok).sum()), level)


# ======================================================================================
# lesion-wise detection
# ======================================================================================
def match_lesions(y_pred, y_true, connectivity: int | None = None) -> dict:
    """Match predicted and true lesions (connected components), case by case.

    Each case of the boolean stacks ``(N, *spatial)`` is split into lesions with
    ``scipy.ndimage.label``; components never join across cases. A **true lesion is
    detected** when at least one predicted voxel lies on it; a **predicted lesion is a
    false positive** when none of its voxels lies on a true lesion. (A predicted blob that
    covers two true lesions detects both; two predicted blobs on one true lesion are both
    true positives on the predicted side.) This is the overlap rule of the ISBI 2015 and
    MSSEG lesion-wise scores at its most lenient (any overlap).

    Args:
        y_pred, y_true: boolean (or 0/1) arrays ``(N, *spatial)`` of the same shape.
        connectivity: neighbours that join voxels into one lesion, as in
            ``scipy.ndimage.generate_binary_structure(ndim, connectivity)``: 1 faces only
            (6 in 3D), up to the number of spatial axes (26 in 3D, the default).

    Returns:
        ``{"detected": bool (L,), "size": int (L,), "false_positives": int, "predicted": int}``:
        one entry per true lesion (cases in order, lesions in ``label`` order) with its size
        in voxels; the number of predicted lesions that touch no true lesion; the number of
        predicted lesions.
    """
    from scipy import ndimage

    p, t = _to_numpy(y_pred).astype(bool), _to_numpy(y_true).astype(bool)
    if p.shape != t.shape or p.ndim < 2:
        raise ParameterError(f"y_pred and y_true must be stacks (N, *spatial) of the same shape, got {p.shape} "
                             f"and {t.shape}")
    structure = ndimage.generate_binary_structure(p.ndim - 1, connectivity or p.ndim - 1)
    detected, size, false_positives, predicted = [], [], 0, 0
    for pred_case, true_case in zip(p, t):
        true_labels, n_true = ndimage.label(true_case, structure)
        pred_labels, n_pred = ndimage.label(pred_case, structure)
        size += np.bincount(true_labels.ravel(), minlength=n_true + 1)[1:].tolist()
        hit = np.bincount(true_labels[pred_case], minlength=n_true + 1)[1:]       # predicted voxels on each lesion
        detected += (hit > 0).tolist()
        touching = np.bincount(pred_labels[true_case], minlength=n_pred + 1)[1:]  # true voxels under each blob
        false_positives += int((touching == 0).sum())
        predicted += n_pred
    return {"detected": np.array(detected, dtype=bool), "size": np.array(size, dtype=np.int64),
            "false_positives": false_positives, "predicted": predicted}


def lesion_scores(match: dict) -> dict:
    """Lesion-wise sensitivity, precision and F1 from :func:`match_lesions`.

    * sensitivity = detected true lesions / true lesions (nan without true lesions);
    * precision = predicted lesions that touch a true one / predicted lesions (nan
      without predicted lesions);
    * F1 = 2 P S / (P + S); conventions as for Dice: no true and no predicted lesion ->
      1.0, exactly one of the two empty -> 0.0.

    Returns:
        ``{"sensitivity", "precision", "f1", "true_lesions", "predicted_lesions"}``.
    """
    n_true, n_pred = len(match["detected"]), int(match["predicted"])
    sens = float(np.mean(match["detected"])) if n_true else float("nan")
    prec = (n_pred - int(match["false_positives"])) / n_pred if n_pred else float("nan")
    if n_true == 0 or n_pred == 0:
        f1_value = 1.0 if n_true == n_pred else 0.0
    else:
        f1_value = 2 * prec * sens / (prec + sens) if prec + sens > 0 else 0.0
    return {"sensitivity": sens, "precision": float(prec), "f1": float(f1_value), "true_lesions": n_true,
            "predicted_lesions": n_pred}


# ======================================================================================
# contrast-detail analysis
# ======================================================================================
def wilson_interval(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion ``successes / trials`` (arrays broadcast).

    ``(p + z^2/2n ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the
    normal quantile of ``level``; unlike the normal (Wald) interval it stays in
    [0, 1] and is not empty at 0 or n successes. ``trials == 0`` gives nan.
    """
    from scipy.stats import norm

    k, n = np.asarray(successes, float), np.asarray(trials, float)
    z = float(norm.ppf(0.5 + level / 2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    low, high = np.where(k <= 0, 0.0, low), np.where(k >= n, 1.0, high)   # exact ends, no rounding below p
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def _bin_index(values, edges, name):
    edges = np.asarray(edges, float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ParameterError(f"{name} must be at least two increasing edges, got {edges.tolist()}")
    index = np.searchsorted(edges, values, side="right") - 1            # edges[i] <= v < edges[i + 1]
    index[values == edges[-1]] = edges.size - 2                           # the last bin holds its right edge
    index[~((values >= edges[0]) & (values <= edges[-1]))] = -1           # outside every bin (nan included)
    return edges, index


def contrast_detail(detected, size, contrast, size_bins, contrast_bins, level: float = 0.95):
    """Sensitivity per cell of a size x contrast grid: the data of a contrast-detail curve.

    A contrast-detail phantom asks which findings an observer detects as they get smaller and fainter. Give
    one entry per finding (a positive case, or a lesion) that should have been found.

    Args:
        detected: boolean ``(L,)``, whether each finding was found (the rule is the caller's).
        size, contrast: ``(L,)`` each finding's size and contrast (any units; the table keeps them).
        size_bins, contrast_bins: increasing bin edges. A value ``v`` is in bin ``i`` when
            ``edges[i] <= v < edges[i + 1]``; the last bin also holds its right edge
            (``numpy.histogram``'s rule). Values outside every bin (and nan) are left out; the table's
            ``attrs["left_out"]`` says how many. Use ``numpy.inf`` as a last edge for an open bin.
        level: confidence level of the Wilson interval.

    Returns:
        a pandas DataFrame, one row per cell (size bins outer, contrast bins inner, in edge order):
        ``size_bin``, ``contrast_bin`` (labels such as ``"[5, 25)"``), ``size_low``, ``size_high``,
        ``contrast_low``, ``contrast_high``, ``count`` (findings in the cell), ``detected``,
        ``sensitivity`` (``detected / count``; nan with ``count`` 0), ``ci_low``, ``ci_high`` (Wilson
        interval; nan with ``count`` 0).
    """
    import pandas as pd

    found = _to_numpy(detected).astype(bool).ravel()
    s, c = _to_numpy(size).astype(float).ravel(), _to_numpy(contrast).astype(float).ravel()
    if not found.size == s.size == c.size:
        raise ParameterError(f"detected, size and contrast need one value per finding; got {found.size}, "
                             f"{s.size} and {c.size}")
    s_edges, si = _bin_index(s, size_bins, "size_bins")
    c_edges, ci = _bin_index(c, contrast_bins, "contrast_bins")
    inside = (si >= 0) & (ci >= 0)
    shape = (s_edges.size - 1, c_edges.size - 1)
    cell = np.ravel_multi_index((si[inside], ci[inside]), shape)
    count = np.bincount(cell, minlength=shape[0] * shape[1])
    hits = np.bincount(cell, weights=found[inside], minlength=shape[0] * shape[1]).astype(np.int64)
    low, high = wilson_interval(hits, count, level)

    def label(lo, hi, last):
        return f"[{lo:g}, {hi:g}{']' if last and np.isfinite(hi) else ')'}"

    rows = []
    for i in range(shape[0]):
        for j in range(shape[1]):
            k = i * shape[1] + j
            rows.append({"size_bin": label(s_edges[i], s_edges[i + 1], i == shape[0] - 1),
                         "contrast_bin": label(c_edges[j], c_edges[j + 1], j == shape[1] - 1),
                         "size_low": s_edges[i], "size_high": s_edges[i + 1],
                         "contrast_low": c_edges[j], "contrast_high": c_edges[j + 1],
                         "count": int(count[k]), "detected": int(hits[k]),
                         "sensitivity": hits[k] / count[k] if count[k] else np.nan,
                         "ci_low": low[k], "ci_high": high[k]})
    table = pd.DataFrame(rows)
    table.attrs["left_out"] = int((~inside).sum())
    table.attrs["level"] = level
    return table
