"""Exercise on lesion-wise detection (lesson 09).

* 09.2 matching lesions: split each case of the boolean stacks ``(N, D, H, W)`` into lesions
  (connected components, 26-connectivity: ``scipy.ndimage.label`` with
  ``generate_binary_structure(3, 3)``), case by case. A true lesion is **detected** when at
  least one predicted voxel lies on it; a predicted lesion is a **false positive** when none
  of its voxels lies on a true lesion. Return ``{"detected": bool per true lesion, "size":
  voxels per true lesion, "false_positives": int, "predicted": int}``. The reference is
  :func:`medlab.metrics.match_lesions`.
"""
from __future__ import annotations

import numpy as np

from .. import metrics
from . import Case, Exercise, register

__all__ = ["match_lesions"]


def match_lesions(pred: np.ndarray, true: np.ndarray) -> dict:
    """True lesions detected (and their sizes), false-positive and all predicted lesions; see the module."""
    return metrics.match_lesions(pred, true)


def _blobs(rng, shape, count, radius):
    """A boolean volume with ``count`` random balls of radius up to ``radius`` voxels."""
    grid = np.indices(shape)
    volume = np.zeros(shape, bool)
    for _ in range(count):
        centre = [rng.integers(0, n) for n in shape]
        r = rng.uniform(0.8, radius)
        volume |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= r ** 2
    return volume


def _cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    shape = (12, 14, 13)
    true = np.stack([_blobs(rng, shape, 5, 2.5) for _ in range(3)])
    pred = np.stack([_blobs(rng, shape, 4, 2.5) for _ in range(3)]) | (true & (rng.random(true.shape) < 0.3))

    merge_true = np.zeros((1, *shape), bool)
    merge_true[0, 2:4, 2:4, 2:4] = merge_true[0, 2:4, 2:4, 7:9] = True      # two lesions ...
    merge_pred = np.zeros_like(merge_true)
    merge_pred[0, 3, 3, 1:10] = True                                        # ... one predicted streak over both
    split_pred = np.zeros_like(merge_true)
    split_pred[0, 2, 2, 2] = split_pred[0, 3, 3, 8] = split_pred[0, 3, 2, 7] = True  # three blobs on two lesions

    diagonal = np.zeros((1, *shape), bool)
    diagonal[0, 4, 4, 4] = diagonal[0, 5, 5, 5] = True                      # touching at a corner: one lesion
    diagonal[0, 9, 9, 9] = True
    diagonal_pred = np.zeros_like(diagonal)
    diagonal_pred[0, 5, 5, 5] = diagonal_pred[0, 0, 0, 0] = diagonal_pred[0, 1, 1, 1] = True

    same_place = np.zeros((2, *shape), bool)
    same_place[:, 5:7, 5:7, 5:7] = True                                     # the same spot in two cases
    same_place_pred = np.zeros_like(same_place)
    same_place_pred[0, 6, 6, 6] = True
    empty = np.zeros((2, *shape), bool)
    return [
        Case("three random cases with several lesions each", (pred, true)),
        Case("one predicted streak covering two true lesions (both detected, one predicted lesion)",
             (merge_pred, merge_true)),
        Case("three predicted blobs on two true lesions", (split_pred, merge_true)),
        Case("lesions that touch only at a corner (26-connectivity joins them)", (diagonal_pred, diagonal)),
        Case("a lesion at the same place in two cases (cases must not be joined)", (same_place_pred, same_place)),
        Case("nothing predicted", (empty, true[:2])),
        Case("no true lesion, two predicted", (true[:2], empty)),
        Case("both empty", (empty, empty.copy())),
    ]


register(Exercise(
    key="09.2", title="matching lesions", reference=match_lesions, cases=_cases,
    hint="label each case on its own (for p, t in zip(pred, true)) with scipy.ndimage.label(t, STRUCTURE) where "
         "STRUCTURE = scipy.ndimage.generate_binary_structure(3, 3) (26 neighbours); a true lesion k is detected "
         "when p[labels == k].any(); a predicted blob j is a false positive when not t[pred_labels == j].any(); "
         "sizes are (labels == k).sum(); 'predicted' is the number of predicted blobs over all cases.",
))
