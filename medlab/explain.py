"""Where does a classifier look? Grad-CAM, written out so that a lesson can read it.

Grad-CAM (Selvaraju et al., ICCV 2017) explains one class score of a
convolutional network with a coarse heat map:

1. run the image forward and keep the activations ``A`` (channels k, height,
   width) of one convolutional layer, usually the last one, where each
   position still corresponds to a region of the image;
2. back-propagate the chosen class score ``y_c`` to that layer: ``dy_c/dA``;
3. weight each channel by its average gradient,
   ``alpha_k = mean over positions of dy_c/dA_k``;
4. the map is ``ReLU(sum_k alpha_k A_k)``: the regions whose features push the
   class score up. It is then upsampled to the image size and, for display,
   scaled to [0, 1] per image.

The map is as coarse as the layer (8 x 8 for a 64-pixel image after three
poolings) and says where evidence for a class lies, not why. Lesson 07 shows
the sanity check that any such map must pass.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ParameterError

__all__ = ["grad_cam", "grad_cam_map", "default_layer"]


def default_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The layer Grad-CAM explains by default, as ``(name, module)``.

    The last stage of the feature extractor: ``layer4`` of a ResNet,
    ``features`` of a DenseNet, EfficientNet, MobileNet or medlab's
    ``SmallCNN``, also when the network is wrapped (``model.layer4``);
    otherwise the last ``Conv2d`` in the model.

    Raises:
        ParameterError: the model has no convolution to explain.
    """
    modules = dict(model.named_modules())
    for stage in ("layer4", "features"):  # also inside a wrapper, as in "model.features"
        found = [(name, m) for name, m in modules.items() if name.split(".")[-1] == stage
                 and any(isinstance(c, nn.Conv2d) for c in m.modules())]
        if found:
            return min(found, key=lambda item: item[0].count("."))
    convs = [(name, m) for name, m in modules.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ParameterError(f"{type(model).__name__} has no Conv2d layer; Grad-CAM needs a convolutional layer")
    return convs[-1]


def _resolve_layer(model: nn.Module, layer) -> nn.Module:
    if layer is None:
        return default_layer(model)[1]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ParameterError("the layer passed to grad_cam is not part of the model")
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Sequential)) and n][-8:]
        raise ParameterError(f"the model has no layer named {layer!r}; layers near the end are {names}")
    return modules[layer]


def _targets(target, logits: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape
    if target is None:
        if k == 1:
            return (logits[:, 0] > 0).long()
        return logits.argmax(1)
    t = torch.as_tensor(np.broadcast_to(np.asarray(target), (n,)).copy(), dtype=torch.long, device=logits.device)
    high = max(k, 2)
    if (t < 0).any() or (t >= high).any():
        raise ParameterError(f"target classes must be between 0 and {high - 1}, got {sorted(set(t.tolist()))}")
    return t


def _class_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:  # one logit: class 1 is the logit, class 0 its negative
        return torch.where(targets == 1, logits[:, 0], -logits[:, 0])
    return logits.gather(1, targets[:, None])[:, 0]


def grad_cam_map(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """The Grad-CAM map at the layer's resolution, from the layer's activations and their gradients.

    Args:
        activation: ``A``, the layer's output, shape (N, K, h, w).
        gradient: ``dy_c/dA``, the gradient of each image's class score with
            respect to ``A``, the same shape.

    Returns:
        ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the mean of ``dy_c/dA_k``
        over the h x w positions: shape (N, h, w), not upsampled, not scaled.

    Raises:
        ParameterError: the two are not 4-D tensors of the same shape.
    """
    if activation.ndim != 4 or activation.shape != gradient.shape:
        raise ParameterError(f"activation and gradient must both be (N, K, h, w), got {tuple(activation.shape)} "
                             f"and {tuple(gradient.shape)}")
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # alpha_k: one weight per channel and image
    return F.relu((weights * activation).sum(dim=1))


def grad_cam(model: nn.Module, images, target: int | Sequence[int] | None = None, layer=None,
             normalize: bool = True, upsample: bool = True, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heat maps of ``model`` for ``images``.

    Args:
        model: a classifier returning logits of shape (N, classes), or (N, 1)
            for a binary model with one logit.
        images: a tensor or array of shape (N, C, H, W) (or (C, H, W) for one).
        target: the class to explain: None for each image's predicted class,
            an int for the same class everywhere, or one int per image.
        layer: the convolutional layer to explain: a module of ``model``, its
            dotted name (``"layer4"``, ``"features.8"``), or None for
            :func:`default_layer`.
        normalize: scale each map to [0, 1] (a map that is zero everywhere
            stays zero); False keeps the raw ``ReLU(sum alpha_k A_k)`` values.
        upsample: resize the maps bilinearly to the image's height and width;
            False returns them at the layer's resolution.
        batch_size: images per forward and backward pass.

    Returns:
        float32 array of shape (N, H, W) (the layer's grid if not upsampled).
        The model's training mode and its parameters' ``requires_grad`` are
        left as they were; no gradient is left on the parameters.
    """
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ParameterError(f"grad_cam expects images of shape (N, C, H, W), got {tuple(x.shape)}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be at least 1, got {batch_size}")
    module = _resolve_layer(model, layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    per_image_target = target is not None and np.ndim(target) > 0
    if per_image_target and len(target) != len(x):
        raise ParameterError(f"{len(target)} targets for {len(x)} images: give one per image, one int, or None")

    saved: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        # Keep the values now (an in-place ReLU may overwrite them later) and catch the gradient
        # that flows into this output; a hook registered before an in-place change sees the
        # gradient of the value it was registered on.
        saved["activation"] = output.detach().clone()
        output.register_hook(lambda grad: saved.__setitem__("gradient", grad.detach()))

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(keep)
    maps = []
    try:
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size].to(device=device, dtype=dtype)
            with torch.enable_grad():
                chunk.requires_grad_(True)  # so the graph exists even if every parameter is frozen
                logits = model(chunk)
                if logits.ndim != 2:
                    raise ParameterError(f"grad_cam needs logits of shape (N, classes), got {tuple(logits.shape)}")
                chosen = target[start:start + batch_size] if per_image_target else target
                score = _class_scores(logits, _targets(chosen, logits)).sum()
                torch.autograd.grad(score, chunk)
            activation, gradient = saved["activation"].float(), saved["gradient"].float()
            cam = grad_cam_map(activation, gradient)[:, None]
            if upsample:
                cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            maps.append(cam[:, 0].cpu())
    finally:
        handle.remove()
        model.train(was_training)
    cams = torch.cat(maps).numpy().astype(np.float32)
    if normalize:
        low = cams.min(axis=(1, 2), keepdims=True)
        span = cams.max(axis=(1, 2), keepdims=True) - low
        cams = np.where(span > 0, (cams - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    return cams
