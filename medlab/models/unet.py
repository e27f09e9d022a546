"""A U-Net (Ronneberger et al. 2015; 3D as in Cicek et al. 2016), short enough to read in a lesson.

The same code builds a 2D network (images ``(N, C, H, W)``) or a 3D one
(volumes ``(N, C, D, H, W)``, ``spatial_dims=3``): only the layer types change.
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

__all__ = ["UNet", "ConvBlock", "BATCH_NORM_MOMENTUM", "pixel_shares"]


_LAYERS = {2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d, nn.InstanceNorm2d),
           3: (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d, nn.InstanceNorm3d)}


def _layers(spatial_dims):
    if spatial_dims not in _LAYERS:
        raise ParameterError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}")
    return _LAYERS[spatial_dims]


#: How fast batch norm's running statistics (what the network uses in evaluation) follow the batches: each step
#: moves them 30 % of the way to the batch's mean and variance. With PyTorch's default, 0.1, they trail a network
#: that is still changing fast by tens of steps, so a U-Net evaluated after its first 10 to 40 steps marks every
#: pixel as foreground, or none, although in training mode it already segments. On 128 px CT phantoms, after 30
#: steps, pooled validation Dice over three seeds: 0.12-0.26 with 0.1, 0.16-0.50 with 0.3, 0.16-0.53 with the
#: batches' own statistics (``benchmarks/norm_momentum.py``).
BATCH_NORM_MOMENTUM = 0.3


def _norm(kind, channels, spatial_dims=2):
    _, _, _, batch_norm, instance_norm = _layers(spatial_dims)
    if kind == "batch":
        return batch_norm(channels, momentum=BATCH_NORM_MOMENTUM)
    if kind == "instance":
        return instance_norm(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two rounds of 3x3 (3x3x3 with ``spatial_dims=3``) convolution, normalisation and ReLU."""

    def __init__(self, in_channels, out_channels, norm="batch", spatial_dims=2):
        conv = _layers(spatial_dims)[0]
        bias = norm is None  # a norm layer has its own shift
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=bias), _norm(norm, out_channels, spatial_dims),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=bias), _norm(norm, out_channels, spatial_dims),
            nn.ReLU(inplace=True),
        )


def pixel_shares(masks, num_classes: int) -> list[float]:
    """Share of each class among the pixels (or voxels) of integer label maps ``masks``: a U-Net's ``class_prior``.

    A class with no pixel counts as one pixel, so that every share is positive.

    Raises:
        ParameterError: a label outside ``0 .. num_classes - 1``.
    """
    labels = torch.as_tensor(masks).flatten().long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ParameterError(f"labels must lie in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}")
    counts = torch.bincount(labels, minlength=num_classes).double().clamp_min(1.0)
    return (counts / counts.sum()).tolist()


class UNet(nn.Module):
    """U-Net for images (2D, the default) or volumes (``spatial_dims=3``).

    Args:
        in_channels: image channels (1 for CT or ultrasound; 3 for T1, T2 and FLAIR MRI).
        num_classes: output channels, one logit per class including
            background (use with cross-entropy or :class:`medlab.losses.DiceCELoss`).
        base_channels: channels at full resolution; doubled at each level.
        depth: number of 2x down-samplings (4 in the original paper).
        norm: ``"batch"`` (with running statistics that follow the batches quickly:
            :data:`BATCH_NORM_MOMENTUM`), ``"instance"``, ``"group"`` or None.
        spatial_dims: 2 for images ``(N, C, H, W)``, 3 for volumes
            ``(N, C, D, H, W)`` (3x3x3 convolutions, 2x2x2 pooling).
        class_prior: optional share of each class among the training pixels
            (``num_classes`` positive numbers, e.g. ``[0.977, 0.023]`` for small
            lesions; :func:`pixel_shares` computes it). The output layer's bias then
            starts at their logarithms, so the untrained network predicts the prior
            (Lin et al., "Focal loss for dense object detection", ICCV 2017). With
            PyTorch's initialisation the classes' outputs start about level (an
            untrained network may call most pixels lesion); cross-entropy then spends
            its first hundreds of steps pulling the lesion output down towards the
            prior, and on some seeds that sweeps the threshold past every pixel before
            the network has learnt which are lesions: Dice falls to 0 for tens of
            steps. None (the default) keeps PyTorch's initialisation.

    Any image size works: the input is zero-padded up to a multiple of
    ``2**depth`` along every spatial axis and the output cropped back, so the
    logits have the input's spatial size.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 16, depth: int = 4,
                 norm: str | None = "batch", spatial_dims: int = 2, class_prior=None):
        super().__init__()
        conv, up_conv, max_pool, _, _ = _layers(spatial_dims)
        if norm not in ("batch", "instance", "group", None):
            raise ParameterError(f"norm must be 'batch', 'instance', 'group' or None, got {norm!r}")
        if depth < 1 or base_channels < 1 or in_channels < 1 or num_classes < 1:
            raise ParameterError("in_channels, num_classes, base_channels and depth must be at least 1")
        self.depth, self.spatial_dims = depth, spatial_dims
        channels = [base_channels * 2 ** level for level in range(depth + 1)]   # e.g. 16, 32, 64, 128, 256

        # encoder: a block at each level, the last one is the bottleneck
        self.encoder = nn.ModuleList([ConvBlock(in_channels, channels[0], norm, spatial_dims)])
        for level in range(1, depth + 1):
            self.encoder.append(ConvBlock(channels[level - 1], channels[level], norm, spatial_dims))
        self.pool = max_pool(2)

        # decoder: up-sample, concatenate the skip, convolve; from the deepest level up
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsample.append(up_conv(channels[level + 1], channels[level], kernel_size=2, stride=2))
            self.decoder.append(ConvBlock(2 * channels[level], channels[level], norm, spatial_dims))

        self.head = conv(channels[0], num_classes, kernel_size=1)
        if class_prior is not None:
            prior = torch.as_tensor(class_prior, dtype=torch.float32).flatten()
            if prior.numel() != num_classes or not bool((prior > 0).all()) or not bool(torch.isfinite(prior).all()):
                raise ParameterError(f"class_prior must be {num_classes} positive shares (one per class), "
                                     f"not {class_prior!r}")
            with torch.no_grad():
                self.head.bias.copy_(torch.log(prior / prior.sum()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ParameterError(f"a {self.spatial_dims}D U-Net takes (N, C, {'D, ' * (self.spatial_dims == 3)}H, W) "
                                 f"inputs, got shape {tuple(x.shape)}")
        size = x.shape[2:]
        multiple = 2 ** self.depth
        padding = []
        for length in reversed(size):          # F.pad lists the last axis first
            padding += [0, -length % multiple]
        x = F.pad(x, padding)

        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth:        # keep the map for the decoder, then go down
                skips.append(x)
                x = self.pool(x)

        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips)):
            x = upsample(x)
            x = block(torch.cat([skip, x], dim=1))

        return self.head(x)[(..., *(slice(0, length) for length in size))]
