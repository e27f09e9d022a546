"""Sanity checks for saliency maps: does the explanation depend on what the model learned?

Adebayo et al. (NeurIPS 2018) proposed the **model-parameter randomisation
test**: re-initialise the network's layers one by one, from the output down
(a *cascade*), and recompute the explanation after each step. A map that
explains the model must change as the model is destroyed; a map that stays the
same is showing the image (edges, bright regions), not the model's reasoning,
however convincing it looks. Arun et al. (Radiology: AI 2021) ran these checks
on chest X-ray models and found several popular methods wanting.

Similarity of two maps is measured as Adebayo et al. did: the Spearman rank
correlation of their pixel values and the structural similarity index (SSIM).
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import ParameterError

__all__ = ["learnable_layers", "cascade_layers", "randomise_weights", "randomisation_cascade", "rank_correlation", "ssim",
           "plot_cascade"]

_LAYER_TYPES = (nn.Conv2d, nn.Linear)


def learnable_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolution and linear layers, from the input to the output."""
    return [name for name, m in model.named_modules() if isinstance(m, _LAYER_TYPES)]


def cascade_layers(model: nn.Module, stages: int = 6) -> list[str]:
    """Up to ``stages`` layers for the cascade, from the output down, evenly spread (head and first layer included).

    A ResNet-18 has 21 convolution and linear layers; a figure with a column
    per layer is unreadable, and the trend shows with a handful.
    """
    names = list(reversed(learnable_layers(model)))
    if stages < 1:
        raise ParameterError(f"stages must be >= 1, got {stages}")
    if len(names) <= stages:
        return names
    picks = np.unique(np.round(np.linspace(0, len(names) - 1, stages)).astype(int))
    return [names[i] for i in picks]


def randomise_weights(model: nn.Module, from_layer: str, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with ``from_layer`` and every layer after it re-initialised.

    "After" is in the order of :func:`learnable_layers` (input to output): the
    cascade of Adebayo et al. randomises from the output down, so randomising
    from a layer means that layer and everything above it. Each layer gets its
    PyTorch default initialisation (``reset_parameters``) from a generator
    seeded from ``seed`` (through NumPy's ``SeedSequence``, so that the
    draws do not repeat the model's own initialisation under the same
    experiment seed); batch-norm layers are kept. The original model is
    not touched.

    Raises:
        ParameterError: ``from_layer`` is not one of :func:`learnable_layers`.
    """
    names = learnable_layers(model)
    if from_layer not in names:
        raise ParameterError(f"{from_layer!r} is not a convolution or linear layer of the model; layers: {names}")
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(np.random.SeedSequence([int(seed), 7]).generate_state(1)[0]))
        for name in names[names.index(from_layer):]:
            modules[name].reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    return clone


def rank_correlation(a, b) -> np.ndarray:
    """Spearman rank correlation between paired maps, one value per map.

    Args:
        a, b: ``(N, H, W)`` (or ``(H, W)``) arrays of the same shape.

    Returns:
        float array ``(N,)``; nan where a map is constant (no ranking).
        Ties get average ranks, as in ``scipy.stats.spearmanr``.
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ParameterError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / np.where(denominator > 0, denominator, 1), np.nan)


def ssim(a, b, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity (scikit-image) between paired maps in ``[0, data_range]``, one value per map."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ParameterError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    win = min(7, a.shape[-1], a.shape[-2])
    win -= 1 - win % 2  # odd
    return np.array([structural_similarity(x, y, data_range=data_range, win_size=win) for x, y in zip(a, b)])


def _vanished_as(values, reference, maps, constant_as):
    """Give pairs where the trained map varies but the new one is constant the value ``constant_as``."""
    if constant_as is None:
        return values
    flat_ref, flat_new = reference.reshape(len(reference), -1), maps.reshape(len(maps), -1)
    vanished = (np.ptp(flat_new, axis=1) == 0) & (np.ptp(flat_ref, axis=1) > 0)
    return np.where(vanished, constant_as, values)


def randomisation_cascade(model: nn.Module, images, explain: Callable, layers: Sequence[str] | None = None,
                          seed: int = 0, progress: bool = True, constant_as: float | None = 0.0) -> dict:
    """Adebayo et al.'s cascading randomisation test.

    Args:
        model: the trained model (not modified).
        images: the images to explain, as ``explain`` takes them.
        explain: ``explain(model, images) -> (N, H, W)`` maps in [0, 1], for
            example ``lambda m, x: medlab.explain.grad_cam(m, x, target=1)``.
            Explain a fixed class (not the predicted one), so that a changed
            prediction does not count as a changed explanation.
        layers: the layers to randomise, from the output down; default all of
            :func:`learnable_layers` in reverse.
        seed: seed of the re-initialisation.
        progress: a tqdm bar over the steps.
        constant_as: the rank correlation given when the randomised model's
            map is constant (Grad-CAM of a random network is often zero
            everywhere: ReLU of a negative sum) while the trained map is not.
            The rank correlation is undefined there, but the explanation has
            vanished, which keeps nothing of the trained map's ranking: 0 by
            default. None leaves nan.

    Returns:
        ``{"stages": ["trained", "<layer>", ...], "maps": [(N, H, W) per stage],
        "rank_correlation": [(N,) per stage], "ssim": [(N,) per stage]}``; each
        stage's similarities are to the trained model's maps (the first stage
        is 1 by construction). Stage ``k`` has the ``k`` top-most layers
        randomised.
    """
    from tqdm.auto import tqdm

    names = learnable_layers(model)
    order = list(reversed(names)) if layers is None else list(layers)
    unknown = [n for n in order if n not in names]
    if unknown:
        raise ParameterError(f"unknown layers {unknown}; the model's layers are {names}")
    reference = np.asarray(explain(model, images), dtype=float)
    result = {"stages": ["trained"], "maps": [reference], "rank_correlation": [rank_correlation(reference, reference)],
              "ssim": [ssim(reference, reference)]}
    for name in tqdm(order, desc="randomising layers", disable=not progress, leave=True):
        # the cascade: randomise from the lowest layer named so far, which covers every layer above it
        lowest = min(order[:order.index(name) + 1], key=names.index)
        randomised = randomise_weights(model, lowest, seed=seed)
        maps = np.asarray(explain(randomised, images), dtype=float)
        result["stages"].append(name)
        result["maps"].append(maps)
        result["rank_correlation"].append(_vanished_as(rank_correlation(reference, maps), reference, maps,
                                                       constant_as))
        result["ssim"].append(ssim(reference, maps))
    return result


def plot_cascade(images, cascade: dict, n_images: int = 3, stage_labels: Sequence[str] | None = None):
    """The maps of a few images at every stage of the cascade, and the mean similarity per stage.

    Args:
        images: the images the cascade explained (``(N, 1, H, W)`` or ``(N, H, W)``).
        cascade: the result of :func:`randomisation_cascade`.
        n_images: rows of maps to show.
        stage_labels: column titles (default the stage names).

    Returns:
        A Figure: maps over images (rows: images, columns: stages), and below
        the mean rank correlation and SSIM to the trained model's maps with
        their spread (10th-90th percentile across images).
    """
    from matplotlib.figure import Figure

    imgs = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    stages = cascade["stages"]
    labels = list(stage_labels or stages)
    k = len(stages)
    n = max(1, min(n_images, len(imgs)))
    fig = Figure(figsize=(1.7 * k + 0.5, 1.7 * n + 2.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.7 * n, 2.6])
    axes = np.atleast_2d(top.subplots(n, k))
    for i in range(n):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(imgs[i], cmap="gray", interpolation="nearest")
            ax.imshow(cascade["maps"][j][i], cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(labels[j], fontsize=8)
    ax = bottom.subplots()
    x = np.arange(k)
    for key, colour, name in (("rank_correlation", "C0", "Spearman rank correlation"), ("ssim", "C1", "SSIM")):
        values = np.asarray(cascade[key], dtype=float)
        mean = np.nanmean(values, axis=1)
        low, high = np.nanpercentile(values, 10, axis=1), np.nanpercentile(values, 90, axis=1)
        ax.plot(x, mean, "o-", color=colour, label=name)
        ax.fill_between(x, low, high, color=colour, alpha=0.15)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(x, labels, rotation=20, fontsize=8)
    ax.set(ylabel="similarity to trained maps", ylim=(-1.05, 1.05), xlabel="randomised down to layer")
    ax.legend(fontsize=8)
    return fig
