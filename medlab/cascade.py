"""Segment, then classify: a two-stage cascade for ultrasound nodules (lesson 06).

Ma et al. (Med Phys 2017) found thyroid nodules in ultrasound with one CNN and
classified them with a second. This module builds that cascade on the
``us_nodule`` phantoms and the tools to question it:

* stage 1, :func:`train_segmenter` / :func:`predict_masks`: a U-Net outlines
  the nodule;
* stage 2 inputs, :func:`stage2_inputs`: the image cropped to a square around
  the (predicted) nodule (:func:`crop_around_mask`), optionally with the mask
  as a second channel, or the whole image for the direct classifier;
* :func:`degrade_masks`: masks shifted and rescaled by a severity in
  ``[0, 1]``, to measure how stage-2 errors follow stage-1 errors;
* :func:`run_comparison`: trains the direct classifier and both cascade
  variants at equal budget (same images, epochs and architecture) and reports
  AUROC with bootstrap intervals and sensitivity and specificity at an
  operating point chosen on the validation set;
* :func:`error_propagation`: stage 2 fed ground-truth, predicted and degraded
  masks, with the Dice of each;
* figures: :func:`plot_crops`, :func:`plot_comparison`, :func:`plot_error_propagation`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .errors import ParameterError

__all__ = [
    "VARIANTS", "PROFILE_KNOBS", "knobs", "classifier_name", "mask_boxes", "crop_around_mask", "stage2_inputs",
    "degrade_masks", "train_segmenter", "predict_masks", "case_dice", "train_classifier", "malignancy_scores",
    "binary_report", "ComparisonResult", "run_comparison", "error_propagation", "plot_crops", "plot_comparison",
    "plot_error_propagation", "load_nodule_data", "published_table",
]

#: Stage-2 inputs: the whole image (the direct classifier), the crop, the crop plus the mask as a channel.
VARIANTS = ("whole", "crop", "crop+mask")

#: Lesson 06's own sizes per profile. ``seg_train``: images the U-Net trains on (None: all of
#: the profile's ``n_train``); ``seg_epochs``: its epochs as a fraction of the profile's ``epochs``
#: (rounded, at least 1); ``seg_base``, ``seg_depth``: its width and depth; ``crop_size``: side of
#: the stage-2 crops; ``margin``: context around the nodule as a fraction of its box; ``degrade``:
#: severities of :func:`degrade_masks` for the error-propagation curve.
PROFILE_KNOBS = {
    "smoke": {"seg_train": 32, "seg_epochs": 0.75, "seg_base": 4, "seg_depth": 2, "crop_size": 16, "margin": 0.4,
              "degrade": (0.0, 0.5, 1.0)},
    "cpu": {"seg_train": 300, "seg_epochs": 0.75, "seg_base": 8, "seg_depth": 3, "crop_size": 32, "margin": 0.4,
            "degrade": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)},
    "gpu": {"seg_train": None, "seg_epochs": 0.75, "seg_base": 32, "seg_depth": 4, "crop_size": 64, "margin": 0.4,
            "degrade": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)},
}


def knobs(profile) -> dict:
    """Lesson 06's knobs for ``profile`` (a Profile or its name); unknown profiles get the ``cpu`` knobs."""
    name = getattr(profile, "name", profile)
    return dict(PROFILE_KNOBS.get(str(name), PROFILE_KNOBS["cpu"]))


def classifier_name(profile) -> str:
    """The profile's classifier as :func:`medlab.models.build_classifier` spells it (``smallcnn`` -> ``small_cnn``)."""
    name = str(getattr(profile, "classifier", profile)).lower()
    return "small_cnn" if name in ("smallcnn", "small-cnn") else name


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _check_stack(images, masks):
    img, msk = _as_numpy(images), _as_numpy(masks)
    if img.ndim != 4:
        raise ParameterError(f"images must be (N, C, H, W), got shape {img.shape}")
    if msk.shape != (img.shape[0], *img.shape[2:]):
        raise ParameterError(f"masks must be (N, H, W) = {(img.shape[0], *img.shape[2:])}, got {msk.shape}")
    return img.astype(np.float32, copy=False), msk.astype(bool)


# ======================================================================================
# cropping and degrading
# ======================================================================================
def mask_boxes(masks, margin: float = 0.4, min_side: int = 8) -> np.ndarray:
    """A square box around each mask's foreground: ``(N, 4)`` ints ``(row0, row1, col0, col1)``, end-exclusive.

    The box is centred on the foreground's bounding box, its side the longer
    side of that box times ``1 + margin`` (context around the nodule), at
    least ``min_side`` pixels. It may extend past the image (cropping pads with
    zeros). An empty mask (stage 1 found nothing) gives the whole image.
    """
    m = _as_numpy(masks).astype(bool)
    if m.ndim != 3:
        raise ParameterError(f"masks must be (N, H, W), got shape {m.shape}")
    if margin < 0:
        raise ParameterError(f"margin must be >= 0 (a fraction of the nodule's box), got {margin}")
    n, h, w = m.shape
    boxes = np.empty((n, 4), np.int64)
    for i in range(n):
        rows, cols = np.flatnonzero(m[i].any(axis=1)), np.flatnonzero(m[i].any(axis=0))
        if rows.size == 0:
            boxes[i] = (0, h, 0, w)
            continue
        cy, cx = (rows[0] + rows[-1] + 1) / 2.0, (cols[0] + cols[-1] + 1) / 2.0
        side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) * (1.0 + margin)
        side = int(np.ceil(max(side, min_side)))
        r0, c0 = int(np.floor(cy - side / 2.0)), int(np.floor(cx - side / 2.0))
        boxes[i] = (r0, r0 + side, c0, c0 + side)
    return boxes


def _crop(array2d, box):
    r0, r1, c0, c1 = box
    h, w = array2d.shape[-2:]
    out = np.zeros(array2d.shape[:-2] + (r1 - r0, c1 - c0), array2d.dtype)
    rs, re, cs, ce = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    out[..., rs - r0:re - r0, cs - c0:ce - c0] = array2d[..., rs:re, cs:ce]
    return out


def crop_around_mask(images, masks, out_size: int, margin: float = 0.4, with_mask: bool = False) -> np.ndarray:
    """Crop each image to the square box around its mask and resize to ``out_size``.

    Args:
        images: ``(N, C, H, W)`` float.
        masks: ``(N, H, W)`` boolean or 0/1: where stage 1 (or the truth) puts the nodule.
        out_size: side of the crops in pixels.
        margin: context around the nodule (see :func:`mask_boxes`).
        with_mask: append the cropped mask as an extra channel (the "mask as
            channel" variant): stage 2 then knows the nodule's outline, not only
            its surroundings.

    Returns:
        float32 ``(N, C (+1), out_size, out_size)``; images resized bilinearly
        (with antialiasing when shrinking), the mask channel by nearest
        neighbour. Outside the image the crop is zero.
    """
    img, msk = _check_stack(images, masks)
    if isinstance(out_size, bool) or not isinstance(out_size, (int, np.integer)) or out_size < 4:
        raise ParameterError(f"out_size must be a whole number of pixels, at least 4, not {out_size!r}")
    boxes = mask_boxes(msk, margin)
    channels = img.shape[1] + int(with_mask)
    out = np.empty((len(img), channels, out_size, out_size), np.float32)
    for i, box in enumerate(boxes):
        crop = torch.from_numpy(_crop(img[i], box))[None]
        shrink = crop.shape[-1] > out_size
        out[i, :img.shape[1]] = F.interpolate(crop, size=(out_size, out_size), mode="bilinear",
                                              align_corners=False, antialias=shrink)[0].numpy()
        if with_mask:
            mc = torch.from_numpy(_crop(msk[i].astype(np.float32), box))[None, None]
            out[i, -1] = F.interpolate(mc, size=(out_size, out_size), mode="nearest")[0, 0].numpy()
    return out


def stage2_inputs(images, masks, variant: str, crop_size: int, margin: float = 0.4) -> np.ndarray:
    """What stage 2 sees: ``whole`` (the image as it is), ``crop`` or ``crop+mask`` (see :func:`crop_around_mask`)."""
    if variant not in VARIANTS:
        raise ParameterError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if variant == "whole":
        img, _ = _check_stack(images, masks)
        return img
    return crop_around_mask(images, masks, crop_size, margin, with_mask=variant == "crop+mask")


def degrade_masks(masks, severity: float, seed: int = 0) -> np.ndarray:
    """Masks made wrong on purpose: shifted and rescaled by an amount set by ``severity``.

    Each foreground is moved by ``severity`` times its equivalent radius
    (``sqrt(area / pi)``) in a random direction and scaled by a random factor
    between ``1 - 0.5 severity`` and ``1 + 0.5 severity`` about its centroid:
    severity 0 returns the masks unchanged, 0.5 typically halves the Dice,
    1 leaves little overlap. Empty masks stay empty. Deterministic for a seed.

    Returns:
        boolean ``(N, H, W)``.
    """
    from scipy.ndimage import affine_transform

    m = _as_numpy(masks).astype(bool)
    if m.ndim != 3:
        raise ParameterError(f"masks must be (N, H, W), got shape {m.shape}")
    s = float(severity)
    if not 0.0 <= s <= 2.0:
        raise ParameterError(f"severity must be in [0, 2] (0 unchanged, 1 little overlap), got {severity!r}")
    if s == 0.0:
        return m.copy()
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi, len(m))
    scales = 1.0 + s * 0.5 * rng.choice([-1.0, 1.0], len(m)) * rng.uniform(0.6, 1.0, len(m))
    out = np.zeros_like(m)
    for i, mask in enumerate(m):
        area = mask.sum()
        if area == 0:
            continue
        centre = np.array(np.nonzero(mask)).mean(axis=1)
        shift = s * np.sqrt(area / np.pi) * np.array([np.sin(angles[i]), np.cos(angles[i])])
        scale = max(scales[i], 0.2)
        # output pixel x samples input at centre + (x - centre - shift) / scale
        offset = centre - (centre + shift) / scale
        out[i] = affine_transform(mask.astype(np.uint8), np.full(2, 1.0 / scale), offset=offset, order=0,
                                  mode="constant", cval=0) > 0
    return out


def case_dice(pred_masks, true_masks) -> np.ndarray:
    """Dice of each case (boolean masks ``(N, H, W)``); both empty -> 1, one empty -> 0 (medlab's convention)."""
    from .metrics import dice, per_case

    return per_case(dice, _as_numpy(pred_masks).astype(bool), _as_numpy(true_masks).astype(bool))


# ======================================================================================
# training the two stages
# ======================================================================================
def _loader(x, y, batch_size, shuffle, seed=0):
    ds = TensorDataset(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
                       torch.as_tensor(np.ascontiguousarray(y)).long())
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train_segmenter(train_images, train_masks, val_images, val_masks, base_channels: int = 8, depth: int = 3,
                    epochs: int = 5, batch_size: int = 32, lr: float = 3e-3, device="auto", seed: int = 0,
                    progress: bool = True):
    """Stage 1: train a :class:`medlab.models.UNet` (nodule against background) with Dice plus cross-entropy.

    Returns ``(model, history)``; the model is in eval mode on ``device`` with
    the weights of its best validation epoch.
    """
    from .models import UNet
    from .runtime import seed_everything
    from .train import fit

    img, msk = _check_stack(train_images, train_masks)
    vimg, vmsk = _check_stack(val_images, val_masks)
    seed_everything(seed)  # the initial weights too, whatever ran before
    model = UNet(in_channels=img.shape[1], num_classes=2, base_channels=base_channels, depth=depth)
    history = fit(model, _loader(img, msk, batch_size, True, seed), _loader(vimg, vmsk, 2 * batch_size, False),
                  loss="dice_ce", lr=lr, epochs=epochs, device=device, seed=seed, restore_best=True,
                  scheduler="cosine", progress=progress)
    return model.eval(), history


def predict_masks(model, images, batch_size: int = 64, device="auto") -> np.ndarray:
    """Stage-1 masks: the U-Net's most probable label per pixel, boolean ``(N, H, W)``."""
    from .train import predict

    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.dim() != 4:
        raise ParameterError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    logits, _ = predict(model, DataLoader(TensorDataset(x), batch_size=batch_size), device=device, activation=None)
    return logits.argmax(axis=1) == 1


def train_classifier(x_train, y_train, x_val, y_val, classifier: str = "small_cnn", epochs: int = 8,
                     batch_size: int = 32, lr: float = 3e-3, device="auto", seed: int = 0, progress: bool = True):
    """Stage 2 (or the direct classifier): benign (0) against malignant (1), two logits and cross-entropy.

    The number of input channels is read from ``x_train``. Returns
    ``(model, history)`` with the best validation epoch's weights, in eval mode.
    """
    from .models import build_classifier
    from .runtime import seed_everything
    from .train import fit

    x = np.asarray(x_train, dtype=np.float32)
    seed_everything(seed)  # the initial weights too, whatever ran before
    model = build_classifier(classifier_name(classifier), num_classes=2, in_channels=int(x.shape[1]))
    history = fit(model, _loader(x, y_train, batch_size, True, seed), _loader(x_val, y_val, 2 * batch_size, False),
                  lr=lr, epochs=epochs, device=device, seed=seed, restore_best=True, scheduler="cosine",
                  progress=progress)
    return model.eval(), history


def malignancy_scores(model, x, batch_size: int = 128, device="auto") -> np.ndarray:
    """Probability of malignancy (softmax of the second logit) for each input ``(N, C, H, W)``."""
    from .train import predict

    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    probs, _ = predict(model, DataLoader(TensorDataset(t), batch_size=batch_size), device=device)
    return probs[:, 1]


def binary_report(y_true, scores, threshold: float, n_bootstrap: int = 500, seed: int = 0) -> dict:
    """AUROC with a percentile bootstrap interval, and sensitivity / specificity at ``threshold``.

    ``threshold`` should come from other data (the validation set), so that
    the operating point is not tuned on the cases it is judged on.
    """
    from . import metrics

    t, s = np.asarray(y_true).ravel(), np.asarray(scores, dtype=float).ravel()
    ci = metrics.bootstrap_ci(metrics.auroc, t, s, n=n_bootstrap, seed=seed)
    op = metrics.operating_point(t, s, threshold)
    return {"auroc": ci.estimate, "auroc_low": ci.low, "auroc_high": ci.high, "threshold": float(threshold),
            "sensitivity": float(op["sensitivity"]), "specificity": float(op["specificity"])}


# ======================================================================================
# the comparison
# ======================================================================================
@dataclass
class ComparisonResult:
    """What :func:`run_comparison` measured and trained.

    Attributes:
        reports: ``{variant: binary_report(...)}`` on the test set, cascade
            variants fed stage-1's predicted masks.
        models: ``{variant: classifier}`` and ``"segmenter"``.
        thresholds: the operating point of each variant, chosen on validation (Youden).
        dice_test: per-case Dice of the predicted test masks.
        pred_masks: ``{"val": ..., "test": ...}`` predicted masks.
        scores: ``{variant: test scores}``.
        histories: training histories of every model.
    """

    reports: dict
    models: dict
    thresholds: dict
    dice_test: np.ndarray
    pred_masks: dict
    scores: dict
    histories: dict = field(default_factory=dict)

    def table(self) -> str:
        """The comparison as aligned text."""
        lines = [f"{'classifier':32s} {'AUROC':>6s} {'95% CI':>13s} {'sens':>5s} {'spec':>5s}"]
        names = {"whole": "direct (whole image)", "crop": "cascade: crop", "crop+mask": "cascade: crop + mask channel"}
        for v, r in self.reports.items():
            lines.append(f"{names.get(v, v):32s} {r['auroc']:6.3f} {r['auroc_low']:6.3f}-{r['auroc_high']:.3f} "
                         f"{r['sensitivity']:5.2f} {r['specificity']:5.2f}")
        return "\n".join(lines)


def run_comparison(data: dict, profile, variants: Sequence[str] = VARIANTS, device="auto", seed: int = 0,
                   n_bootstrap: int | None = None, progress: bool = True) -> ComparisonResult:
    """Train stage 1, then every stage-2 variant at equal budget, and test them.

    Args:
        data: ``{"train"|"val"|"test": (images (N,1,H,W), masks (N,H,W), labels (N,))}``.
        profile: a :class:`~medlab.profiles.Profile`: epochs, batch size,
            classifier and bootstrap come from it, the U-Net's size from
            :func:`knobs`.
        variants: which of :data:`VARIANTS` to train.
        n_bootstrap: resamples for the AUROC interval (default the profile's ``bootstrap``).

    Every stage-2 variant trains on the same training images for the same
    epochs with the same architecture; the cascade variants see crops around
    the *ground-truth* masks in training and around the *predicted* masks in
    validation and test, as a deployed cascade would. The operating point of
    each is Youden's threshold on the validation set.
    """
    from tqdm.auto import tqdm

    from . import metrics

    for v in variants:
        if v not in VARIANTS:
            raise ParameterError(f"unknown variant {v!r}; choose from {VARIANTS}")
    for split in ("train", "val", "test"):
        if split not in data or len(data[split]) != 3:
            raise ParameterError("data must map train, val and test to (images, masks, labels)")
    k = knobs(profile)
    n_boot = int(profile.bootstrap if n_bootstrap is None else n_bootstrap)
    (xtr, mtr, ytr), (xva, mva, yva), (xte, mte, yte) = data["train"], data["val"], data["test"]
    steps = [s for s in ("segmenter", *variants)]
    bar = tqdm(steps, desc="cascade", disable=not progress)
    models, histories, reports, thresholds, scores = {}, {}, {}, {}, {}
    pred = {}
    for step in bar:
        bar.set_description(f"training {step}")
        if step == "segmenter":
            n_seg = len(xtr) if k["seg_train"] is None else min(int(k["seg_train"]), len(xtr))
            seg_epochs = max(1, int(round(k["seg_epochs"] * profile.epochs)))
            seg, hist = train_segmenter(xtr[:n_seg], mtr[:n_seg], xva, mva, k["seg_base"], k["seg_depth"],
                                        seg_epochs, profile.batch_size, device=device, seed=seed,
                                        progress=False)
            models["segmenter"], histories["segmenter"] = seg, hist
            pred = {"val": predict_masks(seg, xva, device=device), "test": predict_masks(seg, xte, device=device)}
            continue
        xin_tr = stage2_inputs(xtr, mtr, step, k["crop_size"], k["margin"])
        xin_va = stage2_inputs(xva, pred["val"], step, k["crop_size"], k["margin"])
        xin_te = stage2_inputs(xte, pred["test"], step, k["crop_size"], k["margin"])
        clf, hist = train_classifier(xin_tr, ytr, xin_va, yva, profile.classifier, profile.epochs,
                                     profile.batch_size, device=device, seed=seed, progress=False)
        models[step], histories[step] = clf, hist
        val_scores = malignancy_scores(clf, xin_va, device=device)
        thresholds[step] = metrics.youden_threshold(yva, val_scores)
        scores[step] = malignancy_scores(clf, xin_te, device=device)
        reports[step] = binary_report(yte, scores[step], thresholds[step], n_boot, seed)
    return ComparisonResult(reports, models, thresholds, case_dice(pred["test"], mte), pred, scores, histories)


def error_propagation(result: ComparisonResult, test: tuple, profile, severities: Sequence[float] | None = None,
                      variants: Sequence[str] = ("crop", "crop+mask"), device="auto", seed: int = 0,
                      progress: bool = True) -> list[dict]:
    """Stage 2's test AUROC when fed masks of known quality.

    Feeds each trained cascade variant the ground-truth masks, stage 1's
    predicted masks, and ground-truth masks degraded by each severity
    (:func:`degrade_masks`), and measures each mask set's mean Dice against
    the truth. Returns one row per mask set: ``{"masks", "dice", "auroc_<variant>"...}``.
    No model is retrained: this is what a deployed stage 2 would do with a
    worse (or better) stage 1.
    """
    from tqdm.auto import tqdm

    from . import metrics

    images, true_masks, labels = test
    k = knobs(profile)
    severities = k["degrade"] if severities is None else severities
    mask_sets = [("predicted (stage 1)", result.pred_masks["test"])]
    mask_sets += [("ground truth" if s == 0 else f"degraded {s:.1f}", degrade_masks(true_masks, s, seed + 1))
                  for s in severities]
    rows = []
    for name, masks in tqdm(mask_sets, desc="mask sets", disable=not progress):
        row = {"masks": name, "dice": float(np.mean(case_dice(masks, true_masks)))}
        for v in variants:
            x = stage2_inputs(images, masks, v, k["crop_size"], k["margin"])
            row[f"auroc_{v}"] = float(metrics.auroc(labels, malignancy_scores(result.models[v], x, device=device)))
        rows.append(row)
    return rows


# ======================================================================================
# figures
# ======================================================================================
def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_crops(images, true_masks, pred_masks, labels, crop_size: int, margin: float = 0.4, n: int = 6,
               class_names: Sequence[str] = ("benign", "malignant")):
    """What stage 2 sees, one example per column.

    Rows: the image with the true outline (green) and, when ``pred_masks``
    is given, stage 1's outline (red) and its Dice; the crop cut around the
    predicted outline (around the true one when ``pred_masks`` is None); the
    mask channel of that crop.
    """
    img, tm = _check_stack(images, true_masks)
    predicted = pred_masks is not None
    _, pm = _check_stack(images, pred_masks) if predicted else (img, tm)
    n = min(n, len(img))
    crops = crop_around_mask(img[:n], pm[:n], crop_size, margin, with_mask=True)
    dice_values = case_dice(pm[:n], tm[:n])
    fig = _figure((2.0 * n, 6.2))
    axes = fig.subplots(3, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(img[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[0, i].contour(tm[i], levels=[0.5], colors="lime", linewidths=1)
        title = class_names[int(labels[i])]
        if predicted:
            if pm[i].any():
                axes[0, i].contour(pm[i], levels=[0.5], colors="red", linewidths=1)
            title += f"\nDice {dice_values[i]:.2f}"
        axes[0, i].set_title(title, fontsize=8)
        axes[1, i].imshow(crops[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[2, i].imshow(crops[i, 1], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("truth green,\nstage 1 red" if predicted else "true outline", fontsize=8)
    axes[1, 0].set_ylabel("crop for stage 2", fontsize=8)
    axes[2, 0].set_ylabel("mask channel", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_comparison(result: ComparisonResult):
    """Test AUROC with its bootstrap interval for each classifier, and the sensitivity and specificity."""
    names = {"whole": "direct\n(whole image)", "crop": "cascade:\ncrop", "crop+mask": "cascade:\ncrop + mask"}
    variants = list(result.reports)
    fig = _figure((8.5, 3.4))
    left, right = fig.subplots(1, 2)
    au = np.array([result.reports[v]["auroc"] for v in variants])
    lo = np.array([result.reports[v]["auroc_low"] for v in variants])
    hi = np.array([result.reports[v]["auroc_high"] for v in variants])
    xs = np.arange(len(variants))
    left.bar(xs, au, color=["0.6" if v == "whole" else "C0" for v in variants])
    left.errorbar(xs, au, yerr=[au - lo, hi - au], fmt="none", ecolor="k", capsize=4)
    left.set(xticks=xs, xticklabels=[names.get(v, v) for v in variants], ylabel="test AUROC (95% CI)",
             ylim=(max(0.0, float(lo.min()) - 0.1), 1.0), title="discrimination")
    width = 0.38
    for j, (key, colour) in enumerate((("sensitivity", "C3"), ("specificity", "C2"))):
        right.bar(xs + (j - 0.5) * width, [result.reports[v][key] for v in variants], width, color=colour, label=key)
    right.set(xticks=xs, xticklabels=[names.get(v, v) for v in variants], ylim=(0, 1.05),
              title="at the validation-chosen threshold")
    right.legend(fontsize=8, loc="lower right")
    return fig


def plot_error_propagation(rows: Sequence[dict], reference: float | None = None):
    """Stage-2 AUROC against the Dice of the masks it was fed; ``reference``: the direct classifier's AUROC."""
    fig = _figure((5.4, 4.0))
    ax = fig.subplots()
    keys = [k for k in rows[0] if k.startswith("auroc_")]
    degraded = [r for r in rows if r["masks"].startswith(("degraded", "ground"))]
    order = np.argsort([r["dice"] for r in degraded])
    for j, key in enumerate(keys):
        ax.plot([degraded[i]["dice"] for i in order], [degraded[i][key] for i in order], "o-", color=f"C{j}",
                label=key.replace("auroc_", "cascade: "))
        for r in rows:
            if r["masks"].startswith("predicted"):
                ax.plot([r["dice"]], [r[key]], "*", ms=14, color=f"C{j}", markeredgecolor="k",
                        label="stage 1's own masks" if j == 0 else None)
    if reference is not None:
        ax.axhline(reference, ls="--", color="0.5", label="direct classifier")
    ax.set(xlabel="mean Dice of the masks stage 2 was given", ylabel="stage-2 test AUROC",
           title="errors propagate down the cascade")
    ax.legend(fontsize=8)
    return fig


# ======================================================================================
# lesson 06 plumbing: data and the published context
# ======================================================================================
def load_nodule_data(data: str, profile, seed: int = 0, **phantom_knobs) -> dict:
    """Lesson 06's splits: ``{"train"|"val"|"test": (images (N,1,S,S), masks (N,S,S) bool, labels (N,))}``.

    ``data``: ``phantom`` or ``phantom:thyroid`` (thyroid nodules, the
    default) or ``phantom:breast`` (breast masses); sizes from ``profile``;
    ``phantom_knobs`` go to :func:`medlab.data.phantoms.us_nodule` (``overlap``,
    ``lesion_contrast``, ...).

    Raises:
        ParameterError: any other source: no real data set with both nodule
            outlines and benign/malignant labels is wired into medlab yet.
    """
    from .data import make_splits

    name = str(data).strip().lower()
    organs = {"phantom": "thyroid", "phantom:thyroid": "thyroid", "phantom:us_nodule": "thyroid",
              "phantom:breast": "breast"}
    if name not in organs:
        raise ParameterError(
            f"lesson 06 needs images with nodule outlines *and* benign/malignant labels; DATA={data!r} is not one "
            "of them. Use DATA='phantom' (thyroid nodules) or DATA='phantom:breast' (breast masses). For your own "
            "data, build the (images, masks, labels) arrays of each split and pass them to cascade.run_comparison.")
    sp = make_splits("us_nodule", profile.n_train, profile.n_val, profile.n_test, size=profile.image_size, seed=seed,
                     target="mask", organ=organs[name], **phantom_knobs)
    return {k: (v.images.numpy(), v.targets.numpy().astype(bool), np.asarray(v.batch.labels)) for k, v in sp.items()}


def published_table(own: dict) -> str:
    """A markdown table setting this lesson's result beside published ultrasound nodule classifiers.

    ``own``: ``{"stage1_dice", "auroc_direct", "auroc_cascade", "auroc_cascade_mask"}``.
    """
    def fmt(key):
        value = own.get(key)
        return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"

    return "\n".join([
        "| work | data | design | reported |",
        "|---|---|---|---|",
        f"| this lesson | thyroid nodule phantoms | direct classifier, whole image | AUROC {fmt('auroc_direct')} |",
        f"| this lesson | thyroid nodule phantoms | U-Net (Dice {fmt('stage1_dice')}), then classifier on the crop "
        f"| AUROC {fmt('auroc_cascade')}; with the mask channel {fmt('auroc_cascade_mask')} |",
        "| Ma et al. 2017 (Med Phys) | clinical thyroid ultrasound | two cascaded CNNs: segment, then classify "
        "| see the paper (not quoted here) |",
        "| Ko et al. 2019 (Head Neck) | clinical thyroid ultrasound | CNN diagnosis compared with experienced "
        "radiologists | see the paper (not quoted here) |",
        "| Yang et al. 2023, MedMNIST v2 (Sci Data) | BreastMNIST: breast ultrasound, 28 px, "
        "benign/normal vs malignant "
        "| ResNet-18, whole image | test AUROC 0.901, accuracy 0.863 |",
    ])
