"""Models: one factory for classifiers, and a U-Net written to be read.

* :func:`build_classifier` - torchvision backbones and a small CNN of our own,
  with a clear weights policy (none, ImageNet, or a file of ours);
* :func:`freeze_backbone`, :func:`unfreeze`, :func:`count_parameters` for
  transfer learning;
* :class:`UNet` - a 2D U-Net.
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
from .unet import UNet

__all__ = [
    "CLASSIFIERS", "SmallCNN", "UNet", "WeightsNotFoundError", "adapt_input_channels", "build_classifier", "classifier_name",
    "count_parameters", "freeze_backbone", "load_weights", "read_state_dict", "unfreeze",
]
