"""medlab.data.degrade_masks: masks made wrong by a known amount (moved from lesson 06's module)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab.data import degrade_masks
from medlab.errors import ParameterError
from medlab.metrics import case_dice


def _discs(n=20, size=48, centre=(24, 24), radius=8):
    yy, xx = np.mgrid[:size, :size]
    m = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    return np.repeat(m[None], n, axis=0)


def test_dice_falls_as_the_severity_grows_and_severity_zero_changes_nothing():
    m = _discs()
    dice = [case_dice(degrade_masks(m, s, seed=3), m).mean() for s in (0.0, 0.3, 0.6, 1.0)]
    assert dice[0] == 1.0
    assert all(a > b for a, b in zip(dice, dice[1:]))
    assert dice[-1] < 0.5


def test_the_same_seed_gives_the_same_masks_and_empty_masks_stay_empty():
    m = _discs(5)
    assert np.array_equal(degrade_masks(m, 0.5, seed=1), degrade_masks(m, 0.5, seed=1))
    assert not np.array_equal(degrade_masks(m, 0.5, seed=1), degrade_masks(m, 0.5, seed=2))
    assert not degrade_masks(np.zeros((1, 16, 16), bool), 1.0).any()


def test_the_shape_is_kept_only_moved_and_rescaled():
    m = np.zeros((1, 64, 64), bool)
    m[0, 20:40, 28:36] = True  # tall: 20 x 8
    out = degrade_masks(m, 0.6, seed=0)[0]
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert height / width == pytest.approx(20 / 8, rel=0.25)  # still taller than wide, by about as much


def test_a_tensor_in_gives_a_boolean_tensor_out():
    m = torch.from_numpy(_discs(3))
    out = degrade_masks(m, 0.4, seed=0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool and out.shape == m.shape
    assert np.array_equal(out.numpy(), degrade_masks(m.numpy(), 0.4, seed=0))


def test_wrong_arguments_are_named():
    with pytest.raises(ParameterError, match="severity"):
        degrade_masks(_discs(1), -0.1)
    with pytest.raises(ParameterError, match=r"\(N, H, W\)"):
        degrade_masks(np.zeros((16, 16), bool), 0.5)
