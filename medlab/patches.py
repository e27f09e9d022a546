"""Patches of volumes: random patches to train on, sliding windows to predict whole volumes.

A 3D network rarely sees a whole volume while it trains: memory and time grow with the
number of voxels, so it is trained on **patches** (say 32 x 32 x 32 voxels) drawn at random,
more often around the structure of interest than its share of the volume would give
(:func:`sample_patch`). At inference the whole volume is covered by **overlapping windows**
of the training patch size, each is predicted, and the overlapping predictions are blended
into one map, with weights that trust a window's centre more than its edges
(:func:`sliding_window_predict`, :func:`gaussian_weights`).

Conventions are MONAI's ``monai.inferers.sliding_window_inference`` (tested against it):
windows start every ``int(roi * (1 - overlap))`` voxels along each axis, the last one is moved
back to end at the volume's edge, a volume smaller than the window is zero-padded (evenly,
the odd voxel after) and the output cropped back, and the Gaussian weights have
``sigma = sigma_scale * roi`` with the smallest weight clamped to at least 1e-3.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ParameterError

__all__ = ["window_starts", "gaussian_weights", "sliding_window_predict", "sample_patch"]


def window_starts(size: int, roi: int, overlap: float = 0.5) -> list[int]:
    """Start indices of the windows along one axis of length ``size`` (``size >= roi``).

    Windows start every ``max(1, int(roi * (1 - overlap)))`` voxels; the last start is
    ``size - roi``, so the last window ends exactly at the edge.
    """
    if roi < 1 or size < roi:
        raise ParameterError(f"a window of {roi} voxels does not fit an axis of {size} voxels")
    if not 0 <= overlap < 1:
        raise ParameterError(f"overlap must be in [0, 1), got {overlap!r}")
    step = max(1, int(roi * (1 - overlap))) if roi < size else roi
    return list(range(0, size - roi, step)) + [size - roi]


def gaussian_weights(roi: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """A Gaussian bump of shape ``roi``: 1 at the centre, ``sigma = sigma_scale * roi`` per axis.

    Weights below 1e-3 (and below the map's own minimum) are raised to that floor, as in
    MONAI's ``compute_importance_map``, so that no voxel of a window weighs exactly zero.
    """
    weights = torch.ones(())
    for length in roi:
        x = torch.arange(length, dtype=torch.float32) - (length - 1) / 2
        weights = weights[..., None] * torch.exp(-x ** 2 / (2 * (sigma_scale * length) ** 2))
    return weights.clamp(min=max(float(weights.min()), 1e-3))


def sliding_window_predict(volume: torch.Tensor, predictor: Callable, roi: Sequence[int], overlap: float = 0.5,
                           weights: torch.Tensor | None = None, batch_size: int = 4) -> torch.Tensor:
    """Predict a whole volume window by window and blend the overlaps.

    Args:
        volume: ``(N, C, *spatial)`` tensor (2 or 3 spatial axes).
        predictor: maps a batch of windows ``(B, C, *roi)`` to ``(B, K, *roi)`` (a network
            in eval mode, or any function).
        roi: window size per spatial axis.
        overlap: fraction of a window shared with the next one along each axis, in [0, 1).
        weights: blending weights of shape ``roi`` (:func:`gaussian_weights`); None: uniform.
        batch_size: windows per call of ``predictor``.

    Returns:
        ``(N, K, *spatial)``: at each voxel, the weighted mean of the predictions of every
        window that covers it. The reference for MONAI's ``sliding_window_inference``
        (``mode="constant"`` with ``weights=None``, ``mode="gaussian"`` with
        ``gaussian_weights(roi)``).
    """
    roi = tuple(int(r) for r in roi)
    if volume.dim() != len(roi) + 2:
        raise ParameterError(f"volume must be (N, C, *spatial) with {len(roi)} spatial axes for roi {roi}, "
                             f"got shape {tuple(volume.shape)}")
    spatial = tuple(volume.shape[2:])
    padding = [max(r - s, 0) for r, s in zip(roi, spatial)]           # a volume smaller than a window
    pad_arg = [p for total in reversed(padding) for p in (total // 2, total - total // 2)]
    padded = F.pad(volume, pad_arg) if any(padding) else volume
    size = tuple(padded.shape[2:])
    w = torch.ones(roi) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if tuple(w.shape) != roi:
        raise ParameterError(f"weights must have the window's shape {roi}, got {tuple(w.shape)}")
    w = w.to(volume.device)
    corners = list(itertools.product(*(window_starts(s, r, overlap) for s, r in zip(size, roi))))
    out, norm = None, torch.zeros(size, device=volume.device)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        boxes = [tuple(slice(c, c + r) for c, r in zip(corner, roi)) for corner in chunk]
        windows = torch.cat([padded[(slice(None), slice(None), *box)] for box in boxes])
        pred = predictor(windows).float()
        if out is None:
            out = torch.zeros((volume.shape[0], pred.shape[1], *size), device=volume.device)
        for i, box in enumerate(boxes):
            out[(slice(None), slice(None), *box)] += pred[i * volume.shape[0]:(i + 1) * volume.shape[0]] * w
            norm[box] += w
    out = out / norm
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(padding, spatial))
    return out[(slice(None), slice(None), *crop)]


def sample_patch(image: np.ndarray, mask: np.ndarray, size: Sequence[int], foreground: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random patch of ``image`` ``(C, *spatial)`` and ``mask`` ``(*spatial)``.

    With probability ``foreground`` (and when the mask has a foreground voxel) the patch
    is centred on a random foreground voxel, else on a uniformly random voxel; the centre
    is then moved so that the patch lies inside the volume. A patch larger than the volume
    along an axis is refused.
    """
    size = tuple(int(s) for s in size)
    spatial = mask.shape
    if any(s > n for s, n in zip(size, spatial)):
        raise ParameterError(f"patch {size} is larger than the volume {spatial}")
    voxels = np.argwhere(mask > 0)
    if len(voxels) and rng.random() < foreground:
        centre = voxels[rng.integers(len(voxels))]
    else:
        centre = np.array([rng.integers(n) for n in spatial])
    start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, spatial)]
    box = tuple(slice(b, b + s) for b, s in zip(start, size))
    return image[(slice(None), *box)], mask[box]
