"""Image classifiers behind one factory, with a clear weights policy.

``weights`` is one of:

* ``None``: random initialisation (torchvision's defaults);
* ``"imagenet"``: torchvision's default ImageNet weights for that
  architecture, through its weights API. Online, torchvision downloads the
  file once into ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch`` by
  default); offline, the file must already be there, and if it is not, a
  :class:`WeightsNotFoundError` says which file, where, and how to fetch it;
* a path to a saved ``state_dict`` or to a medlab checkpoint (a dict with a
  ``"model"`` entry, as written by :func:`medlab.train.fit`), loaded with
  ``torch.load(..., weights_only=True)``.

Medical images are often single-channel. With ImageNet weights and
``in_channels=1`` the first convolution's RGB kernels are summed over colour,
so a grey image x gives the same response as the RGB image (x, x, x) did; for
other channel counts the kernels are repeated and rescaled. The final linear
layer (the head) is replaced by a new one with ``num_classes`` outputs.
"""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import DataNotFoundError, ParameterError

__all__ = [
    "CLASSIFIERS", "SmallCNN", "classifier_name", "WeightsNotFoundError", "adapt_input_channels", "build_classifier",
    "load_weights", "read_state_dict",
    "freeze_backbone", "unfreeze", "count_parameters",
]

TORCHVISION_CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v3_small")
CLASSIFIERS = ("small_cnn", *TORCHVISION_CLASSIFIERS)


class WeightsNotFoundError(DataNotFoundError):
    """Pretrained weights are neither in the local cache nor downloadable.

    Attributes:
        name: what was asked for (e.g. ``"imagenet weights for resnet18"``).
        how_to_get_it: where the file must go and how to fetch it.
    """

    def __init__(self, name: str, how_to_get_it: str):
        self.name = name
        self.how_to_get_it = how_to_get_it
        Exception.__init__(self, f"{name} are not available: {how_to_get_it}")


class SmallCNN(nn.Module):
    """A small convolutional classifier for the CPU profiles.

    ``depth`` blocks of (3x3 convolution, batch norm, ReLU, 2x2 max-pool),
    doubling the channels from ``width``; then global average pooling, dropout
    and a linear head. About 25k parameters with the defaults: trains in
    seconds on a laptop CPU on 64x64 images. ``spatial_dims=3`` builds the
    same network for volumes ``(N, C, D, H, W)`` (3x3x3 convolutions, 2x2x2
    pooling).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, depth: int = 3,
                 dropout: float = 0.1, spatial_dims: int = 2):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ParameterError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}")
        conv, norm, pool, global_pool = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
                                         if spatial_dims == 2 else
                                         (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d))
        layers, channels = [], in_channels
        for i in range(depth):
            out = width * 2 ** i
            layers += [
                conv(channels, out, kernel_size=3, padding=1, bias=False),
                norm(out),
                nn.ReLU(inplace=True),
                pool(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = global_pool(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------
def _imagenet_weights_enum(name):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def _cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _build_imagenet(name: str, progress: bool) -> nn.Module:
    """torchvision's model with its default ImageNet weights (3 channels, 1000 classes)."""
    from torchvision.models import get_model

    weights = _imagenet_weights_enum(name)
    target = _cache_file(weights.url)
    try:
        return get_model(name, weights=weights, progress=progress)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:  # URLError: OSError
        cached = target.exists()
        problem = (f"the cached file {target} could not be loaded ({type(error).__name__}: {error}); "
                   "delete it and fetch it again" if cached else
                   f"the file {target.name} is not in the cache and could not be downloaded "
                   f"({type(error).__name__}: {error})")
        how = (
            f"{problem}. On a machine with internet access run\n"
            f"    python -c \"import torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\"\n"
            f"and copy {target.name} from its ~/.cache/torch/hub/checkpoints/ to {target.parent}/ here, "
            f"or download {weights.url} into that folder yourself. "
            f"The folder follows $TORCH_HOME (now {os.environ.get('TORCH_HOME', 'unset')}). "
            "Or use weights=None to train from scratch.")
        raise WeightsNotFoundError(f"ImageNet weights for {name}", how) from error


def _strip_prefixes(state: dict) -> dict:
    """Remove ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes."""
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def read_state_dict(weights) -> dict:
    """The state dict in ``weights``: a dict, a saved ``state_dict`` file or a medlab checkpoint.

    Files are read with ``torch.load(..., map_location="cpu", weights_only=True)``:
    plain tensors and containers only, never arbitrary pickled code. A
    medlab checkpoint is recognised by its ``"model"`` entry; ``module.`` and
    ``_orig_mod.`` key prefixes (DataParallel, torch.compile) are removed.

    Raises:
        ParameterError: the file does not exist or holds no state dict.
    """
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ParameterError(
                f"weights file {str(path)!r} does not exist; weights must be None, 'imagenet' or the path of a "
                "saved state_dict or medlab checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = weights
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ParameterError(f"weights must hold a state_dict (a dict of tensors), got {type(state).__name__}")
    return _strip_prefixes(state)


def load_weights(model: nn.Module, weights, strict: bool = True) -> nn.Module:
    """Load a state dict, a path to one, or a path to a medlab checkpoint into ``model``.

    The weights are read by :func:`read_state_dict`. Returns ``model``.

    Raises:
        ParameterError: the file does not exist, or its tensors do not fit the
            model (the message lists mismatched keys; check ``num_classes`` and
            ``in_channels``).
    """
    state = read_state_dict(weights)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        raise ParameterError(
            f"the weights do not fit this model (check num_classes and in_channels): {error}") from None
    return model


# ---------------------------------------------------------------------------------------
# first layer and head
# ---------------------------------------------------------------------------------------
def _first_conv(model):
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ParameterError(f"{type(model).__name__} has no Conv2d layer to adapt")


def _head(model):
    """Qualified name and module of the classification head (the last Linear layer)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ParameterError(f"{type(model).__name__} has no Linear layer to use as its head")
    return found


def _set_submodule(model, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def adapt_input_channels(model: nn.Module, in_channels: int, pretrained: bool) -> nn.Module:
    """Give the first convolution ``in_channels`` inputs.

    With ``pretrained`` weights (trained on RGB): for 1 channel the kernels
    are summed over colour; otherwise they are repeated to cover the channels
    and scaled by 3 / in_channels, so the response to a grey image stays the
    same size.
    """
    name, conv = _first_conv(model)
    if conv.in_channels == in_channels:
        return model
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    if pretrained:
        with torch.no_grad():
            old = conv.weight
            if in_channels == 1:
                new.weight.copy_(old.sum(dim=1, keepdim=True))
            else:
                repeats = math.ceil(in_channels / old.shape[1])
                new.weight.copy_(old.repeat(1, repeats, 1, 1)[:, :in_channels] * (old.shape[1] / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    _set_submodule(model, name, new)
    return model


def _replace_head(model, num_classes):
    name, linear = _head(model)
    if linear.out_features != num_classes:
        _set_submodule(model, name, nn.Linear(linear.in_features, num_classes, bias=linear.bias is not None))
    return name


# ---------------------------------------------------------------------------------------
# the factory
# ---------------------------------------------------------------------------------------
def classifier_name(name: str) -> str:
    """The canonical spelling of a classifier's name (``smallcnn``, ``Small-CNN`` -> ``small_cnn``).

    Raises:
        ParameterError: the name is not one of :data:`CLASSIFIERS` (the message lists them).
    """
    key = str(name).strip().lower().replace("-", "_")
    key = {"smallcnn": "small_cnn", "small": "small_cnn"}.get(key, key)
    if key not in CLASSIFIERS:
        raise ParameterError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    return key


def build_classifier(name: str, num_classes: int, in_channels: int = 1, weights=None,
                     progress: bool = True, width: int = 16) -> nn.Module:
    """Build an image classifier.

    Args:
        name: one of :data:`CLASSIFIERS`: ``small_cnn`` (ours, for the CPU
            profiles), ``resnet18``, ``resnet34``, ``resnet50``,
            ``densenet121``, ``efficientnet_b0``, ``mobilenet_v3_small``.
        num_classes: outputs of the head (2 for a binary problem with
            cross-entropy).
        in_channels: channels of the input images (1 for grey scale).
        weights: ``None``, ``"imagenet"`` or a path to a state dict / medlab
            checkpoint (see the module docstring).
        progress: show torchvision's download progress bar.
        width: channels of the first stage of ``small_cnn`` (ignored by the
            torchvision networks).

    Returns:
        The model, with ``model.medlab_config`` (name, num_classes,
        in_channels, weights) and ``model.medlab_head`` (the head's module
        name) set for :func:`freeze_backbone` and for the record.

    Raises:
        ParameterError: unknown name, bad sizes, or a weights file that does not
            fit.
        WeightsNotFoundError: ``"imagenet"`` asked for offline without the
            file in the cache.
    """
    key = classifier_name(name)
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{label} must be a positive whole number, got {value!r}")
    imagenet = isinstance(weights, str) and weights.lower() == "imagenet"
    if key == "small_cnn":
        if imagenet:
            raise ParameterError("small_cnn has no ImageNet weights; use weights=None or a file of your own")
        model = SmallCNN(in_channels, num_classes, width=int(width))
    elif imagenet:
        model = _build_imagenet(key, progress)
        adapt_input_channels(model, in_channels, pretrained=True)
        _replace_head(model, num_classes)
    else:
        from torchvision.models import get_model

        model = get_model(key, weights=None, num_classes=num_classes)
        adapt_input_channels(model, in_channels, pretrained=False)
    if weights is not None and not imagenet:
        if not isinstance(weights, (str, os.PathLike, dict)):
            raise ParameterError(f"weights must be None, 'imagenet' or a path, got {weights!r}")
        load_weights(model, weights)
    model.medlab_head = _head(model)[0]
    model.medlab_config = {"name": key, "num_classes": num_classes, "in_channels": in_channels,
                           "weights": None if weights is None else str(weights) if not isinstance(weights, dict)
                           else "state_dict"}
    return model


# ---------------------------------------------------------------------------------------
# transfer-learning helpers
# ---------------------------------------------------------------------------------------
def freeze_backbone(model: nn.Module, head: str | None = None) -> nn.Module:
    """Stop gradients everywhere except in the head; returns ``model``.

    Args:
        head: module name of the part that stays trainable; default
            ``model.medlab_head`` (set by :func:`build_classifier`) or else the
            last Linear layer.

    Batch-norm layers in the frozen backbone still update their running
    statistics in ``model.train()`` mode; put them in eval mode too if the new
    data must not shift them.
    """
    head = head or getattr(model, "medlab_head", None) or _head(model)[0]
    head_params = {id(p) for p in model.get_submodule(head).parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in head_params)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter trainable again (for fine-tuning the whole network); returns ``model``."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def count_parameters(model: nn.Module) -> dict:
    """Numbers of parameters: ``{"trainable": ..., "frozen": ..., "total": ...}``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}
