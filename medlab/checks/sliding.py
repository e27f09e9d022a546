"""Exercise on sliding-window inference over a volume (lesson 09).

* 09.1 sliding-window prediction: cover a volume ``(N, C, D, H, W)`` with windows of the
  training patch size that overlap by a fraction ``overlap`` (starts from
  :func:`medlab.patches.window_starts`: every ``int(roi * (1 - overlap))`` voxels, the last
  window moved back to end at the edge), predict each window, and return at every voxel the
  weighted mean of the predictions of the windows covering it (``weights`` of the window's
  shape, uniform when None). The reference is :func:`medlab.patches.sliding_window_predict`,
  itself tested against MONAI's ``sliding_window_inference``.
"""
from __future__ import annotations

import torch

from .. import patches
from . import Case, Exercise, register

__all__ = ["sliding_window_predict", "WindowPredictor"]


def sliding_window_predict(volume, predictor, roi, overlap=0.5, weights=None):
    """``(N, K, D, H, W)``: the blended predictions of overlapping windows (see the module)."""
    return patches.sliding_window_predict(volume, predictor, roi, overlap, weights)


class WindowPredictor:
    """A fixed stand-in for a network: a random 3x3x3 convolution plus each window's own mean.

    The mean term makes every window's prediction depend on where the window is, as a real
    network's does near its edges; without it, any way of blending identical local
    predictions would agree and the check could not tell them apart.
    """

    def __init__(self, in_channels: int, out_channels: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(out_channels, in_channels, 3, 3, 3, generator=generator) / 9
        self.bias = torch.randn(out_channels, generator=generator)

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.conv3d(windows, self.weight, self.bias, padding=1)
        return out + 3 * windows.mean(dim=(1, 2, 3, 4), keepdim=True)


def _cases(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)

    def volume(*shape):
        return torch.randn(*shape, generator=generator)

    return [
        Case("a (1, 2, 20, 24, 18) volume, windows (8, 12, 9), overlap 0.5, Gaussian weights",
             (volume(1, 2, 20, 24, 18), WindowPredictor(2, 2, seed), (8, 12, 9), 0.5,
              patches.gaussian_weights((8, 12, 9)))),
        Case("the same with uniform weights (weights=None)",
             (volume(1, 2, 20, 24, 18), WindowPredictor(2, 2, seed + 1), (8, 12, 9), 0.5, None)),
        Case("overlap 0 on a 13-voxel cube with 6-voxel windows: the last window must move back to the edge",
             (volume(1, 1, 13, 13, 13), WindowPredictor(1, 2, seed + 2), (6, 6, 6), 0.0, None)),
        Case("one window as large as the volume",
             (volume(1, 1, 8, 8, 8), WindowPredictor(1, 2, seed + 3), (8, 8, 8), 0.5,
              patches.gaussian_weights((8, 8, 8)))),
        Case("two volumes, three output channels, overlap 0.25, Gaussian weights",
             (volume(2, 1, 15, 11, 17), WindowPredictor(1, 3, seed + 4), (7, 7, 7), 0.25,
              patches.gaussian_weights((7, 7, 7)))),
        Case("windows of different sizes per axis and a large overlap (0.75)",
             (volume(1, 2, 12, 16, 10), WindowPredictor(2, 2, seed + 5), (4, 8, 6), 0.75,
              patches.gaussian_weights((4, 8, 6), sigma_scale=0.25))),
    ]


register(Exercise(
    key="09.1", title="sliding-window inference", reference=sliding_window_predict, cases=_cases,
    hint="loop over every combination of window starts (itertools.product of window_starts along D, H and W); "
         "add predictor(window) * weights into an output array and the weights alone into a normaliser of the "
         "volume's spatial shape, then divide the two; with weights=None use torch.ones(roi). The output has the "
         "predictor's channel count K, not the volume's C.",
    atol=1e-4,
))
