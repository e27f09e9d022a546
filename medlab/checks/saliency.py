"""Exercise: how similar are two heat maps? The Spearman rank correlation, map by map.

Adebayo et al. (NeurIPS 2018) compare a saliency map of the trained model with
the map of a partly randomised copy by the Spearman rank correlation of their
pixel values: rank each map's pixels (ties share their average rank, as
``scipy.stats.rankdata`` gives them; Grad-CAM's ReLU leaves many zeros), then
take the Pearson correlation of the two rank vectors. One value per pair of
maps. A map that is constant (Grad-CAM of a random network often vanishes)
ranks nothing: the pair gets 0.
"""
from __future__ import annotations

import numpy as np
import torch

from . import Case, Exercise, register

__all__ = ["rank_correlation"]


def rank_correlation(maps_a, maps_b):
    """Spearman rank correlation of each pair of maps ``(N, H, W)`` -> ``(N,)``; 0 where a map is constant."""
    from scipy.stats import rankdata

    a = np.asarray(maps_a, dtype=float).reshape(len(maps_a), -1)
    b = np.asarray(maps_b, dtype=float).reshape(len(maps_b), -1)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return np.where(denominator > 0, (ra * rb).sum(axis=1) / np.where(denominator > 0, denominator, 1), 0.0)


def _cases(seed):
    g = torch.Generator().manual_seed(seed)

    def maps(n, h, w):
        return torch.rand(n, h, w, generator=g).numpy()

    a, b = maps(4, 8, 8), maps(4, 8, 8)
    relu_a = np.maximum(maps(3, 8, 8) - 0.6, 0) / 0.4  # most pixels exactly 0, as Grad-CAM's ReLU leaves them
    relu_b = np.maximum(relu_a + 0.3 * maps(3, 8, 8) - 0.3, 0)
    distorted = a ** 3 + 0.05 * maps(4, 8, 8)  # same ranking, roughly; very different values
    constant = a.copy()
    constant[1] = 0.0
    scaled = np.stack([a[0], a[1] * 0.01, a[2], a[3] * 100])  # maps on very different scales
    return [
        Case("4 pairs of random 8x8 maps", (a, b)),
        Case("a map and a monotone distortion of it (ranks barely change, values do)", (a, distorted)),
        Case("maps with many tied zeros, as Grad-CAM's ReLU leaves them", (relu_a, relu_b)),
        Case("a map compared with itself and with its negative",
             (np.stack([a[0], a[1]]), np.stack([a[0], -a[1]]))),
        Case("a randomised model whose map vanished (constant, all zeros)", (a, constant)),
        Case("maps of different scales in one batch", (scaled, b)),
        Case("a single 5x7 map", (maps(1, 5, 7), maps(1, 5, 7))),
    ]


def _compare(got, expected, case):
    from . import compare

    value = got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got)
    if value.shape != expected.shape:
        return (f"the result has shape {tuple(value.shape)}, expected {tuple(expected.shape)}: one correlation per "
                f"pair of maps, not one for the whole batch")
    if np.isnan(value.astype(float)).any():
        return "the result contains nan: give 0 where a map is constant (it ranks nothing)"
    return compare(value.astype(float), expected)


register(Exercise(
    key="07.1", title="rank correlation of two heat maps", reference=rank_correlation, cases=_cases,
    compare=_compare,
    hint="per pair of maps: flatten, rank the pixels with scipy.stats.rankdata (ties get their average rank), "
         "then the Pearson correlation of the two rank vectors; 0 where a map is constant",
))
