"""Lesson 03: three-class COVID-19 chest X-ray classification, and shortcut learning.

The case study trains a classifier for normal / bacterial pneumonia / COVID-19 on
chest X-ray phantoms (or a real data set), reports one-vs-rest AUROC with
bootstrap intervals, COVID-19 sensitivity at a fixed specificity and the
confusion matrix (:func:`classification_report`), and then reproduces, in a
controlled way, the failure DeGrave, Janizek and Lee described (Nat Mach Intell
3:610-619, 2021): models trained on COVID-19 chest X-rays assembled from
different sources learned *where the images came from* (text, markers, patient
position) instead of the lung findings.

The phantom has a laterality marker whose side can follow the label
(``marker_correlation``): on the training set the marker says "normal" (image
left) or "diseased" (image right); on the test set the side is random. A model
that learned the marker loses accuracy there, and Grad-CAM shows it looking at
the corner (:func:`shortcut_experiment`). The fix shown is lung masking: the
network only sees the lung fields, where the marker never is.

Lesson-specific sizes per profile are in :data:`LESSON_KNOBS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ParameterError

__all__ = ["LESSON_KNOBS", "CXR_TASK", "lesson_knobs", "covid_index", "load_data", "train_classifier",
           "predict_proba", "classification_report", "report_table", "ShortcutResult", "shortcut_data",
           "shortcut_experiment", "marker_box", "cam_in_box", "plot_shortcut", "plot_class_examples"]

#: The chest X-ray phantom task of the lesson: all three classes, opacities 1.5 times the generator's default
#: contrast and milder exposure and rotation variation (as in lesson 01), so that a small network can learn the
#: task within the CPU budget.
CXR_TASK = {"classes": ["normal", "bacterial_pneumonia", "covid19"], "lesion_contrast": 1.5, "exposure": 0.3,
            "rotation": 4.0}

#: Lesson-03 knobs per profile. ``epochs``: passes over the training set for each model (the profile's
#: epochs are for the whole lesson budget, which trains three models here); ``lr``: AdamW learning rate;
#: ``width``: first-block channels of the small CNN; ``specificity``: the operating point at which
#: COVID-19 sensitivity is reported; ``marker_correlation``: how often the training marker follows the label;
#: ``cam_images``: images shown with Grad-CAM.
LESSON_KNOBS = {
    "smoke": dict(epochs=1, lr=3e-3, width=4, specificity=0.9, marker_correlation=1.0, cam_images=4),
    "cpu": dict(epochs=6, lr=3e-3, width=16, specificity=0.9, marker_correlation=1.0, cam_images=8),
    "gpu": dict(epochs=30, lr=1e-3, width=32, specificity=0.9, marker_correlation=1.0, cam_images=8),
}


def lesson_knobs(profile) -> dict:
    """The lesson-03 knobs of ``profile``; ``epochs`` follows the profile's epochs relative to its default."""
    from .profiles import PROFILES, resolve

    prof = resolve(profile)
    if prof.name not in LESSON_KNOBS:
        raise ParameterError(f"no lesson knobs for profile {prof.name!r}; known: {sorted(LESSON_KNOBS)}")
    knobs = dict(LESSON_KNOBS[prof.name])
    knobs["epochs"] = max(1, round(knobs["epochs"] * prof.epochs / max(PROFILES[prof.name].epochs, 1)))
    return knobs


def covid_index(class_names) -> int:
    """Index of the COVID-19 class in ``class_names`` (``covid19``, ``COVID``, ``COVID-19``; not ``Non-COVID``)."""
    for i, name in enumerate(class_names):
        key = str(name).lower().replace("-", "").replace("_", "").replace(" ", "")
        if key in ("covid19", "covid"):
            return i
    raise ParameterError(f"no COVID-19 class among {list(class_names)}")


def _loader(dataset, batch_size, shuffle, seed=0):
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator if shuffle else None)


def load_data(data: str, profile, seed: int = 0, **knobs) -> dict:
    """Train, validation and test sets of the three-class task: ``{"train", "val", "test"}``.

    ``data="phantom"``: chest X-ray phantoms (:data:`CXR_TASK`, plus ``knobs``)
    at the profile's sizes. ``covid-radiography``: its Normal, Viral Pneumonia
    and COVID folders; ``covid-qu-ex``: its Normal, Non-COVID and COVID-19
    folders; both through :func:`medlab.data.sources.load_source`, limited to
    the profile's sizes, resized to its image size.
    """
    from .data.dataset import make_splits
    from .profiles import resolve

    prof = resolve(profile)
    if data == "phantom":
        return make_splits("chest_xray", prof.n_train, prof.n_val, prof.n_test, size=prof.image_size, seed=seed,
                           **{**CXR_TASK, **knobs})
    from .data.sources import load_source

    options = {"size": prof.image_size, "seed": seed}
    if data.lower().startswith("covid-radiography"):
        options["classes"] = ["Normal", "Viral Pneumonia", "COVID"]
    elif not data.lower().startswith("covid-qu-ex"):
        raise ParameterError(f"lesson 03 needs DATA='phantom', 'covid-radiography' or 'covid-qu-ex', not {data!r}")
    sizes = {"train": prof.n_train, "val": prof.n_val, "test": prof.n_test}
    return {split: load_source(data, split=split, limit=n, **options) for split, n in sizes.items()}


def _labels(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64)


def train_classifier(train_ds, val_ds, arch: str, knobs: dict, batch_size: int = 32, seed: int = 0,
                     device="cpu", progress: bool = True):
    """Train a classifier (small CNN of ``knobs["width"]`` or a torchvision network) on ``train_ds``.

    Returns ``(model, history)``. The validation set gives ``val_loss`` and ``val_auroc`` per epoch;
    the weights of the epoch with the best validation loss are kept.
    """
    from .metrics import auroc
    from .train import fit
    from .transfer import build_model

    num_classes = len(train_ds.class_names)
    in_channels = int(train_ds[0][0].shape[0])
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, in_channels, knobs["width"])
    history = fit(model, _loader(train_ds, batch_size, True, seed), _loader(val_ds, 256, False),
                  epochs=knobs["epochs"], lr=knobs["lr"], device=device, seed=seed, progress=progress,
                  scheduler="cosine", metrics={"auroc": auroc}, restore_best=True)
    return model, history


def predict_proba(model, dataset, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (N, C), labels (N,))`` of ``model`` on ``dataset``."""
    from .train import predict

    prob, y = predict(model, _loader(dataset, 256, False), device=device)
    return prob, np.asarray(y, dtype=np.int64)


def classification_report(y_true, prob, class_names, specificity: float = 0.9, n_bootstrap: int = 500,
                          seed: int = 0) -> dict:
    """The lesson's metrics of a multi-class classifier.

    Returns a dict with ``auroc`` (one-vs-rest per class), ``auroc_low`` / ``auroc_high``
    (bootstrap percentile interval per class, cases resampled), ``macro_auroc``, ``accuracy``,
    ``covid`` (index of the COVID-19 class), ``covid_sensitivity`` at ``specificity`` (COVID-19
    against the rest, the best sensitivity whose specificity is at least the target) with its
    ``covid_threshold``, and ``y_pred`` (the arg-max class).
    """
    from .metrics import auroc, bootstrap_ci, sensitivity_at_specificity

    y = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(prob, dtype=float)
    per_class = bootstrap_ci(lambda t, p: auroc(t, p, average=None), y, prob, n=n_bootstrap, seed=seed)
    c = covid_index(class_names)
    sens, threshold = sensitivity_at_specificity((y == c).astype(int), prob[:, c], specificity)
    y_pred = prob.argmax(axis=1)
    return {"auroc": np.asarray(per_class.estimate), "auroc_low": np.asarray(per_class.low),
            "auroc_high": np.asarray(per_class.high), "macro_auroc": float(np.mean(per_class.estimate)),
            "accuracy": float((y_pred == y).mean()), "covid": c, "covid_sensitivity": sens,
            "covid_threshold": threshold, "specificity": specificity, "y_pred": y_pred,
            "class_names": list(class_names)}


def report_table(report: dict) -> str:
    """The report as a small text table (one row per class)."""
    lines = [f"{'class (one vs rest)':24s} {'AUROC':>6s}  95% bootstrap CI"]
    for name, a, lo, hi in zip(report["class_names"], report["auroc"], report["auroc_low"], report["auroc_high"]):
        lines.append(f"{name:24s} {a:6.3f}  {lo:.3f} - {hi:.3f}")
    lines.append(f"{'macro average':24s} {report['macro_auroc']:6.3f}")
    lines.append(f"accuracy (arg-max class): {report['accuracy']:.3f}")
    lines.append(f"COVID-19 sensitivity at specificity >= {report['specificity']:.2f}: "
                 f"{report['covid_sensitivity']:.3f} (threshold {report['covid_threshold']:.3f})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# shortcut learning
# ---------------------------------------------------------------------------------------------
def shortcut_data(profile, seed: int = 0, marker_correlation: float = 1.0, mask_lungs: bool = False) -> dict:
    """Phantom splits for the shortcut experiment.

    Train and validation: a laterality marker whose side follows the label with probability
    ``marker_correlation`` (normal: image left; pneumonia or COVID-19: image right). Test: the same
    phantoms' generator with the marker on a random side (``marker_correlation=0``). With
    ``mask_lungs`` every image is multiplied by its lung mask (the exact mask of the phantom, standing in
    for a lung-segmentation model), which removes the marker and everything else outside the lungs.
    """
    from .data.dataset import PhantomDataset, split_seeds
    from .data.phantoms import chest_xray
    from .profiles import resolve

    prof = resolve(profile)
    seeds = split_seeds(seed + 104729)  # other images than the first half of the lesson
    out = {}
    for split, n, corr in (("train", prof.n_train, marker_correlation), ("val", prof.n_val, marker_correlation),
                           ("test", prof.n_test, 0.0)):
        batch = chest_xray(n, size=prof.image_size, seed=seeds[split], marker=True, marker_correlation=corr,
                           **CXR_TASK)
        if mask_lungs:
            batch.images = batch.images * batch.masks["lung"][:, None].astype(np.float32)
        out[split] = PhantomDataset(batch)
    # the same test images with the marker following the label, to measure the in-distribution score
    batch = chest_xray(prof.n_test, size=prof.image_size, seed=seeds["test"], marker=True, marker_correlation=1.0,
                       **CXR_TASK)
    if mask_lungs:
        batch.images = batch.images * batch.masks["lung"][:, None].astype(np.float32)
    out["test_correlated"] = PhantomDataset(batch)
    return out


def marker_box(size: int, side: int, margin: float = 0.04) -> tuple[slice, slice]:
    """Rows and columns of the marker square of the chest X-ray phantom (``side`` 0 image left, 1 right)."""
    def to_px(v):
        return int(round((v + 1.0) / 2.0 * size))

    cx = 0.78 if side == 1 else -0.78
    half = 0.07 + margin
    return slice(to_px(-0.82 - half), to_px(-0.82 + half)), slice(to_px(cx - half), to_px(cx + half))


def cam_in_box(cams, marker_sides) -> np.ndarray:
    """Fraction of each Grad-CAM map's mass that falls on the image's marker (nan without marker)."""
    cams = np.asarray(cams, dtype=float)
    out = np.full(len(cams), np.nan)
    for i, (cam, side) in enumerate(zip(cams, marker_sides)):
        if side < 0:
            continue
        rows, cols = marker_box(cam.shape[-1], int(side))
        out[i] = cam[rows, cols].sum() / max(cam.sum(), 1e-12)
    return out


def _abnormal_auroc(y, prob, normal: int = 0) -> float:
    """AUROC of 'any disease' against normal, scored by 1 - P(normal): what the marker encodes."""
    from .metrics import auroc

    return float(auroc((np.asarray(y) != normal).astype(int), 1.0 - np.asarray(prob)[:, normal]))


@dataclass
class ShortcutResult:
    """One arm of the shortcut experiment.

    Attributes:
        name: ``shortcut`` (marker visible) or ``masked`` (lungs only).
        auroc_correlated: disease-vs-normal AUROC where the marker follows the label (as in training).
        auroc_random: the same where the marker side is random (a new hospital).
        accuracy_correlated, accuracy_random: three-class accuracy on the two test sets.
        cam_marker: mean fraction of the Grad-CAM mass on the marker (random-marker test images).
        cams, cam_index: Grad-CAM maps and the test indices they belong to.
        model: the trained model; data: the splits.
    """

    name: str
    auroc_correlated: float
    auroc_random: float
    accuracy_correlated: float
    accuracy_random: float
    cam_marker: float
    cams: np.ndarray
    cam_index: np.ndarray
    model: object = None
    data: dict = field(default_factory=dict)

    @property
    def drop(self) -> float:
        """How much AUROC is lost when the marker stops following the label."""
        return self.auroc_correlated - self.auroc_random


def shortcut_experiment(profile, knobs: dict, arch: str, seed: int = 0, mask_lungs: bool = False, device="cpu",
                        batch_size: int = 32, progress: bool = True) -> ShortcutResult:
    """Train on marker-correlated phantoms, test with correlated and random markers, explain with Grad-CAM.

    Grad-CAM (:func:`medlab.explain.grad_cam`, predicted class) is computed for the first
    ``knobs["cam_images"]`` normal-labelled test images whose marker sits on the *disease* side (image
    right) and first diseased images with the marker on the *normal* side: the cases where the marker lies.
    """
    from .explain import grad_cam

    data = shortcut_data(profile, seed, knobs["marker_correlation"], mask_lungs)
    model, _ = train_classifier(data["train"], data["val"], arch, knobs, batch_size, seed, device, progress)
    prob_c, y_c = predict_proba(model, data["test_correlated"], device)
    prob_r, y_r = predict_proba(model, data["test"], device)
    test = data["test"]
    sides = np.asarray(test.batch.attrs["marker_side"])
    lying = np.flatnonzero(((y_r == 0) & (sides == 1)) | ((y_r != 0) & (sides == 0)))
    k = int(knobs["cam_images"])
    first = np.concatenate([lying[y_r[lying] == 0][: k // 2], lying[y_r[lying] != 0][: k - k // 2]])
    images = torch.stack([test[int(i)][0] for i in first]) if first.size else torch.zeros(0)
    cams = grad_cam(model, images.to(next(model.parameters()).device)) if first.size else np.zeros((0, 1, 1))
    # the marker's box is measured on the unmasked image geometry (with masking it is simply dark)
    share = cam_in_box(cams, sides[first]) if first.size else np.array([np.nan])
    return ShortcutResult(
        name="masked" if mask_lungs else "shortcut",
        auroc_correlated=_abnormal_auroc(y_c, prob_c), auroc_random=_abnormal_auroc(y_r, prob_r),
        accuracy_correlated=float((prob_c.argmax(1) == y_c).mean()),
        accuracy_random=float((prob_r.argmax(1) == y_r).mean()),
        cam_marker=float(np.nanmean(share)), cams=np.asarray(cams), cam_index=first, model=model, data=data)


def plot_shortcut(results, title: str | None = None):
    """Bars: disease-vs-normal AUROC with the marker following the label and with a random marker, per arm."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    names = [r.name for r in results]
    x = np.arange(len(results))
    corr = [r.auroc_correlated for r in results]
    rand = [r.auroc_random for r in results]
    ax.bar(x - 0.18, corr, 0.36, label="marker follows the label (like training)", color="C0")
    ax.bar(x + 0.18, rand, 0.36, label="marker on a random side (new hospital)", color="C1")
    for xi, a, b in zip(x, corr, rand):
        ax.text(xi - 0.18, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
        ax.text(xi + 0.18, b + 0.01, f"{b:.2f}", ha="center", fontsize=8)
    ax.axhline(0.5, color="0.6", ls="--", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels({"shortcut": "whole image", "masked": "lungs only (masked)"}.get(n, n) for n in names)
    ax.set(ylim=(0.3, 1.08), ylabel="AUROC, any disease vs normal",
           title=title or "trained where the marker gives the answer away")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_class_examples(dataset, per_class: int = 3, seed: int = 0):
    """A few training images of every class (a grid, one row per class)."""
    from .viz import image_grid

    y = _labels(dataset)
    rng = np.random.default_rng(seed)
    names = dataset.class_names
    index = np.concatenate([rng.choice(np.flatnonzero(y == c), min(per_class, int((y == c).sum())), replace=False)
                            for c in range(len(names)) if (y == c).any()])
    images = np.stack([dataset[int(i)][0][0].numpy() for i in index])
    return image_grid(images, titles=[names[y[i]] for i in index], ncols=per_class, panel_size=2.0)
