"""Wrappers around a classifier that change what it sees, not what it is.

:class:`NormalisedModel` puts the input normalisation inside the model, so that
everything outside it (the data, saliency maps, adversarial attacks) works with
images in their real range (0 to 1) and an attack's budget is measured in grey
levels, not in units of a data set's standard deviation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ParameterError

__all__ = ["NormalisedModel"]


class NormalisedModel(nn.Module):
    """A classifier that normalises its own input: ``model((x - mean) / std)``.

    Args:
        model: the classifier proper (kept as ``.model``).
        mean, std: a number or one value per channel (for example the training
            images' ``x.mean(dim=(0, 2, 3))`` and ``x.std(dim=(0, 2, 3))``);
            kept as buffers, so they move with the model and are saved in its
            ``state_dict``.

    Raises:
        ParameterError: a standard deviation is not positive.
    """

    def __init__(self, model: nn.Module, mean=0.0, std=1.0):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).detach().reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).detach().reshape(1, -1, 1, 1)
        if torch.any(std_t <= 0):
            raise ParameterError(f"std must be positive, got {std_t.flatten().tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x):
        return self.model((x - self.mean) / self.std)
