"""Masks made wrong on purpose, to measure what a worse segmenter would do to the steps after it.

A two-stage system (segment, then classify or measure) inherits the first
stage's mistakes. :func:`degrade_masks` turns correct masks into masks of a
controlled, known quality (moved and rescaled by an amount set by a
``severity``), so that a lesson can feed them to the second stage and plot its
result against the masks' Dice, without training a worse first stage.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["degrade_masks"]


def degrade_masks(masks, severity: float, seed: int = 0):
    """Masks shifted and rescaled by an amount set by ``severity``.

    Each foreground is moved by ``severity`` times its equivalent radius
    (``sqrt(area / pi)``) in a random direction and scaled about its centroid by
    a random factor between ``1 - 0.5 severity`` and ``1 + 0.5 severity``
    (at least 0.2): severity 0 returns the masks unchanged, 0.5 typically
    halves the Dice, 1 leaves little overlap. The outline's shape is kept (only
    its place and size change). Empty masks stay empty. Deterministic for a seed.

    Args:
        masks: boolean or 0/1 ``(N, H, W)``, a NumPy array or a torch tensor.
        severity: in ``[0, 2]``.
        seed: seed of the random directions and factors.

    Returns:
        boolean ``(N, H, W)``, a torch tensor when ``masks`` is one, else a NumPy array.

    Raises:
        ParameterError: ``masks`` is not ``(N, H, W)`` or ``severity`` is outside ``[0, 2]``.
    """
    from scipy.ndimage import affine_transform

    is_tensor = hasattr(masks, "detach")
    m = (masks.detach().cpu().numpy() if is_tensor else np.asarray(masks)).astype(bool)
    if m.ndim != 3:
        raise ParameterError(f"masks must be (N, H, W), got shape {m.shape}")
    s = float(severity)
    if not 0.0 <= s <= 2.0:
        raise ParameterError(f"severity must be in [0, 2] (0 unchanged, 1 little overlap), got {severity!r}")
    out = m.copy()
    if s > 0.0:
        rng = np.random.default_rng(seed)
        angles = rng.uniform(0, 2 * np.pi, len(m))
        scales = 1.0 + s * 0.5 * rng.choice([-1.0, 1.0], len(m)) * rng.uniform(0.6, 1.0, len(m))
        for i, mask in enumerate(m):
            area = mask.sum()
            if area == 0:
                continue
            centre = np.array(np.nonzero(mask)).mean(axis=1)
            shift = s * np.sqrt(area / np.pi) * np.array([np.sin(angles[i]), np.cos(angles[i])])
            scale = max(scales[i], 0.2)
            # output pixel x samples the input at centre + (x - centre - shift) / scale
            offset = centre - (centre + shift) / scale
            out[i] = affine_transform(mask.astype(np.uint8), np.full(2, 1.0 / scale), offset=offset, order=0,
                                      mode="constant", cval=0) > 0
    if is_tensor:
        import torch

        return torch.from_numpy(out).to(masks.device)
    return out
