"""Lesson 07 (trust and robustness): data, model and figures that the notebook calls.

The lesson trains one classifier on scanner A and then questions it: where it
looks (Grad-CAM and its sanity check, :mod:`medlab.sanity`), whether its
probabilities mean what they say (:mod:`medlab.calibration`), what a second
scanner does to it (domain shift), and how little it takes to fool it
(:mod:`medlab.robustness`).

Per-profile knobs (:data:`KNOBS`), on top of the profile's sizes:

``epsilons``
    the attack budgets of the robustness curve, in image units (0 is clean).
``pgd_steps``
    PGD iterations.
``n_attack``
    test images attacked for the robustness curve (None: the whole test set).
``n_cam``
    images per Grad-CAM figure.
``n_sanity``
    images explained in the randomisation cascade.
``lr``
    learning rate of AdamW.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ParameterError

__all__ = ["KNOBS", "knobs", "LessonData", "load_data", "simulate_scanner", "build_model", "train_model",
           "cam_layer", "logits", "pick_cases", "fraction_in_mask", "plot_domain_examples", "plot_intensity_histograms",
           "plot_attack_examples", "PHANTOM_CLASSES", "PHANTOM_KNOBS"]

#: Lesson knobs per profile (see the module docstring).
KNOBS: dict[str, dict] = {
    "smoke": {"epsilons": [0.0, 0.01, 0.03], "pgd_steps": 3, "n_attack": None, "n_cam": 4, "n_sanity": 4,
              "lr": 3e-3},
    "cpu": {"epsilons": [0.0, 0.002, 0.005, 0.01, 0.02], "pgd_steps": 5, "n_attack": 100, "n_cam": 8,
            "n_sanity": 8, "lr": 3e-3},
    "gpu": {"epsilons": [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04], "pgd_steps": 20, "n_attack": 1000,
            "n_cam": 8, "n_sanity": 16, "lr": 1e-3},
}

#: The phantom task: chest X-rays, normal against bacterial pneumonia (a dense lobar opacity in one lung).
PHANTOM_CLASSES = ("normal", "bacterial_pneumonia")

#: Generator knobs of the phantom task: twice the default lesion contrast, so that the cpu profile's small CNN
#: reaches an AUROC of about 0.97 in its 8 epochs (at the default contrast it stays near 0.85).
PHANTOM_KNOBS = {"lesion_contrast": 2.0}


def knobs(profile) -> dict:
    """The lesson's knobs for ``profile`` (a Profile or its name); unknown names get the ``cpu`` knobs."""
    name = getattr(profile, "name", profile)
    return dict(KNOBS.get(str(name), KNOBS["cpu"]))


@dataclass
class LessonData:
    """The lesson's images in memory (float32 in [0, 1], ``(N, C, H, W)``) and labels.

    ``shifted`` is the test set as scanner ``shifted_domain`` renders it: for
    phantoms the same patients (same seed, only the scanner differs); for real
    data the test images re-rendered through that scanner's knobs.
    ``lung_masks`` (phantoms only) are the test set's lung masks.
    """

    x: dict
    y: dict
    class_names: list
    source: str
    shifted_domain: str
    lung_masks: np.ndarray | None = None
    notes: dict = field(default_factory=dict)


def _arrays(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "images") and hasattr(dataset, "targets") and dataset.transform is None:
        return dataset.images.float(), dataset.targets.long()
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False)
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs).float(), torch.cat(ys).long()


def simulate_scanner(images, domain="B", noise: float = 0.03, seed: int = 0) -> torch.Tensor:
    """Re-render images in [0, 1] through a phantom scanner preset (gain, offset, blur, resolution, noise).

    Used for real data, which has no scanner knob: it applies the same
    :class:`~medlab.data.phantoms.Domain` transformation the phantom generators
    use, channel by channel, and clips to [0, 1].
    """
    from .data.phantoms import resolve_domain
    from .data.phantoms._common import apply_domain

    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim != 4:
        raise ParameterError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    dom = resolve_domain(domain)
    out = apply_domain(x.reshape(n * c, h, w).numpy().copy(), np.random.default_rng(seed), dom, noise)
    return torch.from_numpy(np.clip(out, 0.0, 1.0).reshape(n, c, h, w))


def _medmnist_size(size: int) -> int:
    sizes = (28, 64, 128, 224)
    return min(sizes, key=lambda s: abs(s - size))


def load_data(data: str, profile, seed: int = 0, shifted_domain: str = "B") -> LessonData:
    """Train, validation and test sets (scanner A) and the shifted test set.

    Args:
        data: ``"phantom"`` (chest X-ray phantoms, normal vs COVID-19) or a
            real source of :func:`medlab.data.sources.load_source`
            (``medmnist:pneumoniamnist``, ``covid-radiography``, ...).
        profile: the :class:`~medlab.profiles.Profile` (sizes).
        seed: the experiment seed.
        shifted_domain: the second scanner's preset (``B`` or ``C``).

    Raises:
        DataNotFoundError: a real data set is not on this machine (the message
            says how to get it).
    """
    from .data import phantoms
    from .data.dataset import split_seeds

    if shifted_domain not in phantoms.DOMAIN_PRESETS or shifted_domain == "A":
        raise ParameterError(f"shifted_domain must be one of the other scanners {sorted(phantoms.DOMAIN_PRESETS)[1:]}, "
                             f"not {shifted_domain!r}")
    sizes = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
    if data.strip().lower() in ("phantom", "phantom:chest_xray", "phantom:cxr"):
        seeds = split_seeds(seed)
        x, y = {}, {}
        for split, n in sizes.items():
            batch = phantoms.chest_xray(n, size=profile.image_size, seed=seeds[split], classes=PHANTOM_CLASSES,
                                        domain="A", **PHANTOM_KNOBS)
            x[split], y[split] = torch.from_numpy(batch.images), torch.from_numpy(batch.labels)
            if split == "test":
                lungs = batch.mask("lung")
        shifted = phantoms.chest_xray(sizes["test"], size=profile.image_size, seed=seeds["test"],
                                      classes=PHANTOM_CLASSES, domain=shifted_domain, **PHANTOM_KNOBS)
        x["shifted"], y["shifted"] = torch.from_numpy(shifted.images), torch.from_numpy(shifted.labels)
        return LessonData(x, y, list(PHANTOM_CLASSES), "phantom:chest_xray", shifted_domain, lung_masks=lungs)

    from .data.sources import load_source

    head = data.split(":", 1)[0].strip().lower()
    size = _medmnist_size(profile.image_size) if head == "medmnist" else profile.image_size
    x, y, names = {}, {}, None
    for split, n in sizes.items():
        ds = load_source(data, split=split, size=size, limit=n, seed=seed)
        x[split], y[split] = _arrays(ds)
        names = list(ds.class_names)
        if x[split].shape[-1] != profile.image_size:
            x[split] = torch.nn.functional.interpolate(x[split], size=(profile.image_size,) * 2, mode="bilinear",
                                                       antialias=True, align_corners=False).clamp(0, 1)
    if y["train"].ndim != 1:
        raise ParameterError(f"{data} is multi-label; this lesson needs one class per image")
    x["shifted"] = simulate_scanner(x["test"], shifted_domain, seed=seed)
    y["shifted"] = y["test"].clone()
    return LessonData(x, y, names, data, shifted_domain, notes={"shift": "simulated scanner"})


def build_model(profile, num_classes: int, train_images: torch.Tensor, weights=None):
    """The profile's classifier with its input normalisation inside (a :class:`~medlab.robustness.NormalisedModel`).

    The mean and standard deviation (one per channel) come from the training images.
    """
    from .models import build_classifier
    from .robustness import NormalisedModel

    x = torch.as_tensor(train_images)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    model = build_classifier(profile.classifier, num_classes=num_classes, in_channels=int(x.shape[1]),
                             weights=weights, progress=False)
    return NormalisedModel(model, mean, std)


def cam_layer(model) -> str:
    """The dotted name of the layer Grad-CAM explains in a :class:`~medlab.robustness.NormalisedModel`."""
    from .explain import default_layer

    inner = getattr(model, "model", model)
    name = default_layer(inner)[0]
    return f"model.{name}" if inner is not model else name


def train_model(model, data: LessonData, profile, seed: int = 0, device="cpu", lr: float = 3e-3, progress=True):
    """Train ``model`` on ``data``'s training split (validation split monitored); returns the History.

    AdamW, cosine learning-rate schedule, random horizontal flips as
    augmentation, the best validation-loss epoch's weights restored at the end.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from . import metrics
    from .train import fit

    generator = torch.Generator().manual_seed(int(seed))
    train = DataLoader(_FlipDataset(data.x["train"], data.y["train"]), batch_size=profile.batch_size, shuffle=True,
                       generator=generator, num_workers=0)
    val = DataLoader(TensorDataset(data.x["val"], data.y["val"]), batch_size=256)
    return fit(model, train, val, loss="cross_entropy", lr=lr, epochs=profile.epochs, device=device,
               scheduler="cosine", metrics={"auroc": metrics.auroc}, restore_best=True, seed=seed, progress=progress)


class _FlipDataset(torch.utils.data.Dataset):
    """Images and labels with a random left-right flip (deterministic under torch's seed)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        image = self.x[i]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.y[i]


def logits(model, images: torch.Tensor, device="cpu", batch_size: int = 256) -> np.ndarray:
    """Raw model outputs ``(N, classes)`` as float64 NumPy (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                out.append(model(images[start:start + batch_size].to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).double().numpy()


def pick_cases(y_true, prob, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to ``n`` correctly and up to ``n`` wrongly classified cases.

    Correct cases alternate between the classes (the most confident of each
    first); wrong cases are the most confidently wrong first.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=float)
    pred, confidence = p.argmax(1), p.max(1)
    order = np.argsort(-confidence, kind="stable")
    wrong = [i for i in order if pred[i] != y[i]][:n]
    per_class = [[i for i in order if pred[i] == y[i] == k] for k in range(p.shape[1])]
    correct = []
    for rank in range(n):
        for cases in per_class:
            if rank < len(cases) and len(correct) < n:
                correct.append(cases[rank])
    return np.asarray(correct, dtype=int), np.asarray(wrong, dtype=int)


def fraction_in_mask(cams, masks) -> np.ndarray:
    """Share of each heat map's total inside its mask (1: all of the map lies on the structure).

    nan for an all-zero map.
    """
    cams = np.asarray(cams, dtype=float)
    masks = np.asarray(masks) > 0
    if cams.shape != masks.shape:
        raise ParameterError(f"maps {cams.shape} and masks {masks.shape} differ in shape")
    total = cams.sum(axis=(1, 2))
    inside = (cams * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def plot_domain_examples(a_images, b_images, labels, class_names, n: int = 4, names=("scanner A", "scanner B")):
    """The same cases as two scanners render them: row 1 scanner A, row 2 scanner B, one grey scale (0 to 1)."""
    from matplotlib.figure import Figure

    a, b = np.asarray(a_images)[:n, 0], np.asarray(b_images)[:n, 0]
    n = len(a)
    fig = Figure(figsize=(2.1 * n, 4.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, n))
    for j in range(n):
        for i, (imgs, name) in enumerate(((a, names[0]), (b, names[1]))):
            ax = axes[i, j]
            ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
            if i == 0:
                ax.set_title(class_names[int(labels[j])], fontsize=9)
    return fig


def plot_intensity_histograms(sets: dict, bins: int = 64):
    """Pixel-intensity histograms (density) of several image sets, one line each."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(0, 1, bins + 1)
    for i, (label, images) in enumerate(sets.items()):
        values = np.asarray(images, dtype=float).ravel()
        hist, _ = np.histogram(values, bins=edges, density=True)
        ax.step(edges[:-1], hist, where="post", color=f"C{i}",
                label=f"{label} (mean {values.mean():.2f}, sd {values.std():.2f})")
    ax.set(xlabel="pixel intensity", ylabel="density", yscale="log")
    ax.legend(fontsize=8)
    return fig


def plot_attack_examples(clean, adversarial, cams_clean, cams_adv, p_clean, p_adv, class_names, labels,
                         magnify: float | None = None):
    """Per case (rows): clean image with its Grad-CAM, the perturbation (magnified), attacked image with its Grad-CAM.

    Titles give the true class and the probability of the class the model
    picks on each image.
    """
    from matplotlib.figure import Figure

    clean = np.asarray(clean)[:, 0]
    adversarial = np.asarray(adversarial)[:, 0]
    delta = adversarial - clean
    limit = magnify or max(float(np.abs(delta).max()), 1e-8)
    n = len(clean)
    fig = Figure(figsize=(7.2, 2.3 * n + 0.3), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, 3))
    for i in range(n):
        k_clean, k_adv = int(np.argmax(p_clean[i])), int(np.argmax(p_adv[i]))
        panels = (
            (clean[i], cams_clean[i], f"clean: {class_names[k_clean]} {p_clean[i][k_clean]:.2f}"),
            (delta[i], None, f"perturbation (+/-{limit:.3f})"),
            (adversarial[i], cams_adv[i], f"attacked: {class_names[k_adv]} {p_adv[i][k_adv]:.2f}"),
        )
        for ax, (image, cam, title) in zip(axes[i], panels):
            if cam is None:
                ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            else:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        axes[i, 0].set_ylabel(f"true: {class_names[int(labels[i])]}", fontsize=8)
    return fig
