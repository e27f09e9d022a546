"""A classification data set in memory, with its test set seen through a second scanner (domain shift).

:func:`load_with_scanner_shift` returns the train, validation and test splits as
rendered by the reference scanner ``A`` and, as the split ``"shifted"``, the
test set as another scanner renders it:

* for chest X-ray phantoms, **the same patients** (same seed: same anatomy,
  same lesions) rendered through another preset of
  :data:`medlab.data.phantoms.DOMAIN_PRESETS` (gain and offset, blur or lower
  resolution, a different noise texture);
* for a real data set, which has no scanner knob, the test images re-rendered
  through the same preset by :func:`simulate_scanner`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ParameterError

__all__ = ["ScannerShiftSplits", "load_with_scanner_shift", "simulate_scanner"]

_PHANTOM_NAMES = ("phantom", "phantom:chest_xray", "phantom:cxr")


@dataclass
class ScannerShiftSplits:
    """Images in memory (float32 in [0, 1], ``(N, C, H, W)``) and labels, per split.

    Attributes:
        x, y: ``{"train", "val", "test", "shifted"}`` -> images / int64 labels;
            ``y["shifted"]`` equals ``y["test"]`` (the same cases).
        class_names: the names of the labels.
        source: the data set's name.
        shifted_domain: the second scanner's preset name.
        lung_masks: the test set's lung masks ``(N, H, W)`` (phantoms only, else None).
        notes: how the shift was made.
    """

    x: dict
    y: dict
    class_names: list
    source: str
    shifted_domain: str
    lung_masks: np.ndarray | None = None
    notes: dict = field(default_factory=dict)


def simulate_scanner(images, domain="B", noise: float = 0.03, seed: int = 0) -> torch.Tensor:
    """Re-render images in [0, 1] through a phantom scanner preset (gain, offset, blur, resolution, noise).

    Applies the :class:`~medlab.data.phantoms.Domain` transformation the phantom
    generators use, channel by channel, and clips the result to [0, 1].

    Args:
        images: ``(N, C, H, W)`` tensor or array in [0, 1].
        domain: a preset name of :data:`~medlab.data.phantoms.DOMAIN_PRESETS` (or a Domain).
        noise: the noise level the preset's ``noise_gain`` multiplies.
        seed: seed of the noise (the same seed gives the same images).

    Raises:
        ParameterError: ``images`` is not 4-dimensional or the domain is unknown.
    """
    from .phantoms import resolve_domain
    from .phantoms._common import apply_domain

    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images,
                        dtype=torch.float32).detach().cpu()
    if x.ndim != 4:
        raise ParameterError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    out = apply_domain(x.reshape(n * c, h, w).numpy().copy(), np.random.default_rng(seed), resolve_domain(domain),
                       noise)
    return torch.from_numpy(np.clip(out, 0.0, 1.0).reshape(n, c, h, w))


def _arrays(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "images") and hasattr(dataset, "targets") and getattr(dataset, "transform", None) is None:
        return dataset.images.float(), dataset.targets.long()
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False)
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs).float(), torch.cat(ys).long()


def load_with_scanner_shift(data: str = "phantom", n_train: int = 600, n_val: int = 150, n_test: int = 300,
                            size: int = 64, seed: int = 0, shifted_domain: str = "B", classes=None, device=None,
                            **phantom_knobs) -> ScannerShiftSplits:
    """Train, validation and test splits from scanner A, and the test set from scanner ``shifted_domain``.

    Args:
        data: ``"phantom"`` (chest X-ray phantoms, :func:`medlab.data.phantoms.chest_xray`)
            or a real source of :func:`medlab.data.sources.load_source`
            (``medmnist:pneumoniamnist``, ``covid-radiography``, ...).
        n_train, n_val, n_test: split sizes (a real source gives at most what it has).
        size: image side in pixels (real images are resized to it).
        seed: the experiment's seed; each split has its own generator seed
            (:func:`medlab.data.dataset.split_seeds`).
        shifted_domain: the second scanner's preset, any but ``"A"``.
        classes: phantom classes in label order (default all of the generator's).
        device: where phantoms are rendered (``None`` or ``"cpu"``, ``"cuda"``, ``"auto"``;
            see :func:`medlab.data.phantoms.chest_xray`); it does not apply to real data.
        **phantom_knobs: passed to the phantom generator (e.g. ``lesion_contrast=2.0``).

    Raises:
        ParameterError: ``shifted_domain`` is ``A`` or unknown; a real data set is multi-label.
        DataNotFoundError: a real data set is not on this machine (the message says how to get it).
    """
    from . import phantoms
    from .dataset import split_seeds

    if shifted_domain not in phantoms.DOMAIN_PRESETS or shifted_domain == "A":
        raise ParameterError(f"shifted_domain must be one of the other scanners "
                             f"{sorted(set(phantoms.DOMAIN_PRESETS) - {'A'})}, not {shifted_domain!r}")
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if data.strip().lower() in _PHANTOM_NAMES:
        seeds = split_seeds(seed)
        x, y = {}, {}
        for split, n in sizes.items():
            batch = phantoms.chest_xray(n, size=size, seed=seeds[split], classes=classes, domain="A", device=device,
                                        **phantom_knobs)
            x[split], y[split] = torch.from_numpy(batch.images), torch.from_numpy(batch.labels).long()
            if split == "test":
                lungs, names = batch.mask("lung"), list(batch.class_names)
        shifted = phantoms.chest_xray(n_test, size=size, seed=seeds["test"], classes=classes, domain=shifted_domain,
                                      device=device, **phantom_knobs)
        x["shifted"], y["shifted"] = torch.from_numpy(shifted.images), torch.from_numpy(shifted.labels).long()
        return ScannerShiftSplits(x, y, names, "phantom:chest_xray", shifted_domain, lung_masks=lungs,
                                  notes={"shift": "same patients, other scanner preset"})

    from .sources import load_source
    from .sources.medmnist import nearest_size

    head = data.split(":", 1)[0].strip().lower()
    native = nearest_size(size) if head == "medmnist" else size
    x, y, names = {}, {}, None
    for split, n in sizes.items():
        ds = load_source(data, split=split, size=native, limit=n, seed=seed)
        x[split], y[split] = _arrays(ds)
        names = list(ds.class_names)
        if x[split].shape[-1] != size:
            x[split] = torch.nn.functional.interpolate(x[split], size=(size, size), mode="bilinear", antialias=True,
                                                       align_corners=False).clamp(0, 1)
    if y["train"].ndim != 1:
        raise ParameterError(f"{data} is multi-label; one class per image is needed here")
    x["shifted"] = simulate_scanner(x["test"], shifted_domain, seed=seed)
    y["shifted"] = y["test"].clone()
    return ScannerShiftSplits(x, y, names, data, shifted_domain, notes={"shift": "simulated scanner"})
