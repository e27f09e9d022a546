"""Models: one factory for classifiers, and a U-Net written to be read.

* :func:`build_classifier` - torchvision backbones and a small CNN of our own,
  with a clear weights policy (none, ImageNet, or a file of ours);
* :func:`freeze_backbone`, :func:`unfreeze`, :func:`count_parameters` for
  transfer learning;
* :mod:`medlab.models.pretrained` - the pretrained weights cache
  (:func:`resolve_pretraining`: ImageNet, a phantom pretraining cached by its
  configuration, or a file);
* :class:`UNet` - a 2D U-Net;
* :class:`NormalisedModel` - a classifier with its input normalisation inside.
"""
from .classifiers import (
    CLASSIFIERS,
    SmallCNN,
    WeightsNotFoundError,
    adapt_input_channels,
    build_classifier,
    classifier_name,
    count_parameters,
    freeze_backbone,
    load_weights,
    read_state_dict,
    unfreeze,
)
from .unet import UNet, pixel_shares
from .pretrained import Pretrained, resolve_pretraining
from .wrappers import NormalisedModel

__all__ = [
    "CLASSIFIERS", "NormalisedModel", "SmallCNN", "UNet", "pixel_shares", "WeightsNotFoundError", "adapt_input_channels",
    "build_classifier", "classifier_name",
    "count_parameters", "freeze_backbone", "load_weights", "read_state_dict", "unfreeze",
    "Pretrained", "resolve_pretraining",
]
