"""A 2D U-Net (Ronneberger et al. 2015), short enough to read in a lesson.

The encoder halves the image ``depth`` times while doubling the channels; the
decoder doubles it back, and at each scale concatenates the encoder's feature
map of the same size (the skip connection), so fine detail lost by pooling
comes back for the boundaries. A 1x1 convolution gives one logit per class
and pixel.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ParameterError

__all__ = ["UNet", "ConvBlock"]


def _norm(kind, channels):
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two rounds of 3x3 convolution, normalisation and ReLU."""

    def __init__(self, in_channels, out_channels, norm="batch"):
        bias = norm is None  # a norm layer has its own shift
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias), _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias), _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """2D U-Net.

    Args:
        in_channels: image channels (1 for CT or ultrasound).
        num_classes: output channels, one logit per class including
            background (use with cross-entropy or :class:`medlab.losses.DiceCELoss`).
        base_channels: channels at full resolution; doubled at each level.
        depth: number of 2x down-samplings (4 in the original paper).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or None.

    Any image size works: the input is zero-padded up to a multiple of
    ``2**depth`` and the output cropped back, so the logits have the input's
    height and width.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 16, depth: int = 4,
                 norm: str | None = "batch"):
        super().__init__()
        if norm not in ("batch", "instance", "group", None):
            raise ParameterError(f"norm must be 'batch', 'instance', 'group' or None, got {norm!r}")
        if depth < 1 or base_channels < 1 or in_channels < 1 or num_classes < 1:
            raise ParameterError("in_channels, num_classes, base_channels and depth must be at least 1")
        self.depth = depth
        channels = [base_channels * 2 ** level for level in range(depth + 1)]   # e.g. 16, 32, 64, 128, 256

        # encoder: a block at each level, the last one is the bottleneck
        self.encoder = nn.ModuleList([ConvBlock(in_channels, channels[0], norm)])
        for level in range(1, depth + 1):
            self.encoder.append(ConvBlock(channels[level - 1], channels[level], norm))
        self.pool = nn.MaxPool2d(2)

        # decoder: up-sample, concatenate the skip, convolve; from the deepest level up
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsample.append(nn.ConvTranspose2d(channels[level + 1], channels[level], kernel_size=2, stride=2))
            self.decoder.append(ConvBlock(2 * channels[level], channels[level], norm))

        self.head = nn.Conv2d(channels[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2 ** self.depth
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple))

        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth:        # keep the map for the decoder, then go down
                skips.append(x)
                x = self.pool(x)

        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips)):
            x = upsample(x)
            x = block(torch.cat([skip, x], dim=1))

        return self.head(x)[..., :height, :width]
