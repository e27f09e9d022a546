"""Exercise on Grad-CAM (lesson 03): the channel weights and the map.

Grad-CAM (Selvaraju et al. 2017) explains a class score ``y_c`` with a layer's
activations ``A`` (N, K, h, w) and their gradients ``dy_c/dA`` (same shape):

* 03.2 the map at the layer's resolution: each channel's weight ``alpha_k`` is
  its gradient averaged over the h x w positions; the map is
  ``ReLU(sum_k alpha_k A_k)``, shape (N, h, w).

The reference is :func:`medlab.explain.grad_cam_map`, which
:func:`medlab.explain.grad_cam` (used by the later lessons) calls; the notebook
holds the same lines between solution markers, and its own ``grad_cam`` (hooks,
upsampling, scaling) is kept equal to the package's by a test.
"""
from __future__ import annotations

import torch

from ..explain import grad_cam_map
from . import Case, Exercise, register

__all__ = ["grad_cam_map"]


def _cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)

    def layer(n, k, h, w):  # activations after a ReLU are >= 0; gradients have either sign
        return torch.relu(torch.randn(n, k, h, w, generator=g)), torch.randn(n, k, h, w, generator=g)

    activation, gradient = layer(3, 4, 5, 5)
    opposed = torch.relu(torch.randn(2, 6, 4, 4, generator=g))
    return [
        Case("a batch of 4 images, 8 channels on an 8 x 8 grid", layer(4, 8, 8, 8)),
        Case("a batch of 1 image, 16 channels on a 4 x 4 grid", layer(1, 16, 4, 4)),
        Case("a grid that is not square (2 images, 5 channels, 6 x 3)", layer(2, 5, 6, 3)),
        Case("a 1 x 1 grid (a ResNet's last layer on a small image)", layer(2, 3, 1, 1)),
        Case("gradients that vary across positions but average to a clear sign per channel",
             (activation, gradient + torch.linspace(-2, 2, 4)[None, :, None, None])),
        Case("every channel's gradient negative: nothing speaks for the class, so the map is zero",
             (opposed, -torch.rand(2, 6, 4, 4, generator=g) - 0.1)),
    ]


register(Exercise(
    key="03.2", title="Grad-CAM channel weights and map", reference=grad_cam_map, cases=_cases,
    hint="alpha = gradient.mean(dim=(2, 3), keepdim=True) (the gradient averaged over the positions, one weight "
         "per image and channel, not the activations); multiply it with the activations, sum over the channels "
         "(dim=1) and keep only what speaks for the class with a ReLU; the result is (N, h, w)."))
