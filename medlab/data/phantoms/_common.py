"""Shared pieces of the phantom generators: the batch container, grids, noise, domain knobs.

Conventions (every generator follows them):

* ``images``: float32, shape ``(N, 1, H, W)`` (clips: ``(N, T, 1, H, W)``).
  X-ray and ultrasound images are display intensities, roughly in ``[0, 1]``
  (clipped to it). CT images are in Hounsfield units (air -1000, water 0);
  :func:`window` maps them to ``[0, 1]`` for display or training.
* ``masks``: a dict of int64 label maps, each ``(N, H, W)`` (clips ``(N, T, H, W)``);
  ``mask_classes[name]`` names the values of map ``name`` and ``default_mask``
  is the map a segmentation lesson uses unless told otherwise.
* ``labels``: int64 ``(N,)``, indices into ``class_names``. Classes are
  balanced: each appears ``N // K`` or ``N // K + 1`` times, in random order.
* ``attrs``: a dict of per-sample NumPy arrays (length ``N``): at least
  ``lesion_area`` (fraction of the image), ``severity`` (generator specific,
  documented there) and ``domain`` (the integer id of the domain preset).
* Randomness comes from generators seeded by ``seed`` only
  (``numpy.random.default_rng(seed)``, and for optional variation knobs a
  second stream ``default_rng(SeedSequence(seed, spawn_key=...))`` that is not
  drawn from when the knobs are off), so a call is reproducible for the same
  arguments: bit for bit on one machine, and up to the last bit of NumPy's
  vectorised transcendental functions across CPUs.
* The chest X-ray, CT, lung ultrasound, ultrasound nodule and fundus phantoms render their pixels with torch on a chosen
  ``device`` (``_torch``): the same draws in the same order on the CPU; on a
  GPU the per-pixel noise comes from a torch generator on the GPU instead.
  The NumPy helpers below are what :mod:`medlab.data.shift` applies to any
  image (``apply_domain``), and the references the torch primitives are
  tested against.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ...errors import ParameterError

__all__ = [
    "PhantomBatch", "Domain", "DOMAIN_PRESETS", "CT_WINDOWS", "window", "resolve_domain",
]

#: Standard CT display windows as (level, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "wide": (-350.0, 1500.0),
}


def window(hu, level: float | str = "lung", width: float | None = None):
    """Map CT numbers (HU) to ``[0, 1]`` with a display window.

    Args:
        hu: array (NumPy or torch) of Hounsfield units.
        level: window centre in HU, or a name from :data:`CT_WINDOWS`
            (``lung``, ``mediastinum``, ``bone``, ``wide``).
        width: window width in HU (omit when ``level`` is a name).

    Returns:
        ``(hu - (level - width/2)) / width`` clipped to ``[0, 1]``, same type as ``hu``.
    """
    if isinstance(level, str):
        if level not in CT_WINDOWS:
            raise ParameterError(f"unknown CT window {level!r}; known windows: {sorted(CT_WINDOWS)}")
        level, width = CT_WINDOWS[level]
    if width is None or width <= 0:
        raise ParameterError("window width must be a positive number of HU")
    low = level - width / 2.0
    scaled = (hu - low) / width
    if hasattr(scaled, "clamp"):
        return scaled.clamp(0.0, 1.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


@dataclass
class PhantomBatch:
    """Images with exact ground truth, as returned by every phantom generator.

    Attributes:
        images: float32 ``(N, 1, H, W)`` (clips ``(N, T, 1, H, W)``); see the
            module docstring for the intensity convention of each modality.
        masks: dict of int64 label maps ``(N, H, W)`` (clips ``(N, T, H, W)``).
        labels: int64 ``(N,)`` class indices into ``class_names``.
        attrs: dict of per-sample arrays of length ``N``.
        class_names: names of the image-level classes.
        mask_classes: for each mask, the names of its values (index = value).
        default_mask: the mask a segmentation target uses by default.
        kind: generator name (``chest_xray``, ``ct_slice``, ...).
        units: ``"a.u."`` (display intensity in [0, 1]) or ``"HU"``.
        params: the generator arguments that made the batch (for the record).
    """

    images: np.ndarray
    masks: dict[str, np.ndarray]
    labels: np.ndarray
    attrs: dict[str, np.ndarray]
    class_names: list[str]
    mask_classes: dict[str, list[str]] = field(default_factory=dict)
    default_mask: str | None = None
    kind: str = ""
    units: str = "a.u."
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        per_class = ", ".join(f"{c}={k}" for c, k in zip(self.class_names, counts))
        masks = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.masks.items())
        return (f"PhantomBatch(kind={self.kind!r}, images={tuple(self.images.shape)} {self.units}, "
                f"labels: {per_class}; masks: {masks}; attrs: {sorted(self.attrs)})")

    @property
    def size(self) -> int:
        """Side of the square images, in pixels."""
        return int(self.images.shape[-1])

    def mask(self, name: str | None = None) -> np.ndarray:
        """Return the label map ``name`` (default: :attr:`default_mask`)."""
        key = self.default_mask if name is None else name
        if key not in self.masks:
            raise ParameterError(f"{self.kind} phantoms have no mask {key!r}; masks: {sorted(self.masks)}")
        return self.masks[key]

    def display(self, level: float | str = "lung", width: float | None = None) -> np.ndarray:
        """Images mapped to ``[0, 1]``: CT through :func:`window`, others unchanged."""
        if self.units == "HU":
            return window(self.images, level, width)
        return self.images

    def subset(self, index) -> "PhantomBatch":
        """A new batch holding only the samples ``index`` (slice, integer array or boolean mask)."""
        if isinstance(index, slice):
            idx = index
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
        return dataclasses.replace(
            self,
            images=self.images[idx],
            masks={k: v[idx] for k, v in self.masks.items()},
            labels=self.labels[idx],
            attrs={k: np.asarray(v)[idx] for k, v in self.attrs.items()},
        )

    @classmethod
    def concat(cls, batches: Sequence["PhantomBatch"]) -> "PhantomBatch":
        """Join batches of the same kind and size (for example two scanner domains)."""
        batches = list(batches)
        if not batches:
            raise ParameterError("concat needs at least one PhantomBatch")
        first = batches[0]
        for other in batches[1:]:
            if other.kind != first.kind or other.images.shape[1:] != first.images.shape[1:]:
                raise ParameterError("concat: batches differ in kind or image shape")
            if other.class_names != first.class_names:
                raise ParameterError("concat: batches have different class_names")
            if set(other.masks) != set(first.masks) or set(other.attrs) != set(first.attrs):
                raise ParameterError("concat: batches have different masks or attrs")
        return dataclasses.replace(
            first,
            images=np.concatenate([b.images for b in batches]),
            masks={k: np.concatenate([b.masks[k] for b in batches]) for k in first.masks},
            labels=np.concatenate([b.labels for b in batches]),
            attrs={k: np.concatenate([np.asarray(b.attrs[k]) for b in batches]) for k in first.attrs},
            params={"concat": [b.params for b in batches]},
        )


# ----------------------------------------------------------------------------------------------
# domain ("scanner") knobs


@dataclass(frozen=True)
class Domain:
    """How a "scanner" renders an image: the domain-shift knobs.

    Attributes:
        id: integer recorded in ``attrs["domain"]``.
        intensity_scale: gain applied to the clean image (around the modality's
            reference level: 0 for display images, -1000 HU for CT).
        intensity_offset: added after the gain, in display units (CT: times 1000 HU).
        blur: Gaussian point-spread sigma in pixels (0 = sharp).
        noise_texture: ``gaussian`` (white, additive), ``correlated`` (additive,
            spatially correlated over about two pixels) or ``speckle``
            (multiplicative).
        resolution: fraction of the native resolution the scanner resolves
            (1 = full; 0.5 renders at half resolution and scales back up).
        noise_gain: factor on the generator's ``noise`` level.
    """

    id: int = 0
    intensity_scale: float = 1.0
    intensity_offset: float = 0.0
    blur: float = 0.0
    noise_texture: str = "gaussian"
    resolution: float = 1.0
    noise_gain: float = 1.0


#: Named scanner presets. ``A`` is the reference; ``B`` and ``C`` shift it.
DOMAIN_PRESETS: dict[str, Domain] = {
    "A": Domain(id=0),
    "B": Domain(id=1, intensity_scale=0.8, intensity_offset=0.08, blur=1.0,
                noise_texture="correlated", resolution=1.0, noise_gain=1.2),
    "C": Domain(id=2, intensity_scale=1.2, intensity_offset=-0.06, blur=0.0,
                noise_texture="speckle", resolution=0.5, noise_gain=0.8),
}

NOISE_TEXTURES = ("gaussian", "correlated", "speckle")


def resolve_domain(domain="A", **overrides) -> Domain:
    """Build a :class:`Domain` from a preset name, an int id, a dict or a Domain, plus overrides.

    ``overrides`` whose value is None are ignored, so generators can pass their
    keyword arguments straight through.
    """
    if isinstance(domain, Domain):
        base = domain
    elif isinstance(domain, str):
        if domain not in DOMAIN_PRESETS:
            raise ParameterError(f"unknown domain {domain!r}; presets: {sorted(DOMAIN_PRESETS)}")
        base = DOMAIN_PRESETS[domain]
    elif isinstance(domain, (int, np.integer)) and not isinstance(domain, bool):
        matches = [d for d in DOMAIN_PRESETS.values() if d.id == int(domain)]
        base = matches[0] if matches else Domain(id=int(domain))
    elif isinstance(domain, dict):
        base = Domain(**domain)
    elif domain is None:
        base = DOMAIN_PRESETS["A"]
    else:
        raise ParameterError(f"domain must be a preset name, an int, a dict or a Domain, not {domain!r}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    try:
        result = dataclasses.replace(base, **changes)
    except TypeError as exc:
        raise ParameterError(f"unknown domain knob: {exc}") from None
    if result.noise_texture not in NOISE_TEXTURES:
        raise ParameterError(f"noise_texture must be one of {NOISE_TEXTURES}, not {result.noise_texture!r}")
    if not 0.05 <= result.resolution <= 1.0:
        raise ParameterError("resolution must be in [0.05, 1] (1 = native)")
    if result.blur < 0:
        raise ParameterError("blur must be >= 0 pixels")
    return result


# ----------------------------------------------------------------------------------------------
# numerical helpers (all vectorised over the batch)


def check_common(n, size, seed=None) -> tuple[int, int]:
    """Validate ``n`` and ``size``; return them as ints."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ParameterError(f"n must be a non-negative integer, not {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
        raise ParameterError(f"size must be an integer between 16 and 1024 pixels, not {size!r}")
    return int(n), int(size)


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Raise ParameterError unless ``low <= value <= high``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, not {value!r}") from None
    if not low <= v <= high:
        raise ParameterError(f"{name}={value!r} is out of range [{low}, {high}]")
    return v


def balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels in ``0..k-1``, each class ``n//k`` or ``n//k + 1`` times, shuffled."""
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` in ``[-1, 1]``, each ``(1, size, size)`` float32."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return c[None, :, None], c[None, None, :]


def col(values) -> np.ndarray:
    """Per-sample values as float32 ``(N, 1, 1)`` for broadcasting against images."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def resize(x: np.ndarray, size: int | tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a stack ``(N, h, w)`` to ``(N, size, size)`` (torch interpolation, float32)."""
    import torch
    import torch.nn.functional as F

    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if x.shape[-2:] == shape:
        return x.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(t, size=shape, mode=mode, antialias=mode in ("bilinear", "bicubic") and shape[0] < x.shape[-2], **kwargs)
    return out[:, 0].numpy()


def blur(x: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian blur of a stack ``(N, H, W)``; ``sigma`` in pixels, scalar or ``(sy, sx)``."""
    from scipy.ndimage import gaussian_filter1d

    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    out = x.astype(np.float32, copy=True)
    if sy > 0:
        out = gaussian_filter1d(out, sy, axis=-2, mode="nearest", truncate=3.0)
    if sx > 0:
        out = gaussian_filter1d(out, sx, axis=-1, mode="nearest", truncate=3.0)
    return out


def smooth_field(rng: np.random.Generator, n: int, size: int, cells: int = 6) -> np.ndarray:
    """Smooth random fields ``(N, size, size)``, zero mean and unit std per image.

    White noise on a ``cells x cells`` grid, upsampled bilinearly: features
    about ``size / cells`` pixels across.
    """
    low = rng.standard_normal((n, cells + 2, cells + 2)).astype(np.float32)
    up = resize(low, size * (cells + 2) // cells, mode="bilinear")
    m = (up.shape[-1] - size) // 2
    field_ = up[:, m:m + size, m:m + size]
    field_ = field_ - field_.mean(axis=(1, 2), keepdims=True)
    return field_ / (field_.std(axis=(1, 2), keepdims=True) + 1e-6)


def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """A linear 0-to-1 ramp (cheap anti-aliased edge): 1 where ``d <= -width/2``, 0 where ``d >= width/2``."""
    out = d * (-1.0 / width)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def ellipse_r2(y, x, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    """Squared normalised elliptic radius (< 1 inside); ``ramp(r2 - 1, 2 * w)`` gives an edge ``w`` wide."""
    dy, dx = y - cy, x - cx
    if np.any(np.asarray(angle) != 0):
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, c * dy - s * dx
    dx *= 1.0 / rx
    dy *= 1.0 / ry
    dx *= dx
    dy *= dy
    if dx.shape == np.broadcast_shapes(dx.shape, dy.shape):
        dx += dy
        return dx
    return dx + dy


def apply_domain(clean: np.ndarray, rng: np.random.Generator, dom: Domain, noise: float,
                 reference: float = 0.0, offset_unit: float = 1.0, mid: float = 0.5) -> np.ndarray:
    """Render a clean stack ``(N, H, W)`` through a scanner ``dom`` with noise level ``noise``.

    Order: resolution loss, blur, gain around ``reference`` plus offset
    (``offset_unit`` converts the offset to image units), then noise of the
    domain's texture (``speckle`` noise has std ``noise`` where the image
    equals ``mid`` and scales with the signal above ``reference``). Always draws the same random numbers for the same shape,
    so changing a knob never changes the rest of the sample.
    """
    n, h, w = clean.shape
    out = clean
    if dom.resolution < 1.0:
        low = max(4, int(round(h * dom.resolution)))
        out = resize(resize(out, low), h)
    if dom.blur > 0:
        out = blur(out, dom.blur)
    if dom.intensity_scale != 1.0 or dom.intensity_offset != 0.0:
        out = (out - reference) * dom.intensity_scale + reference + dom.intensity_offset * offset_unit
    z = rng.standard_normal(out.shape, dtype=np.float32)
    sigma = noise * dom.noise_gain
    if sigma > 0:
        if dom.noise_texture == "correlated":
            z = blur(z, 1.0)
            z /= z.std() + 1e-6
            out = out + sigma * z
        elif dom.noise_texture == "speckle":
            out = out + sigma * z * np.maximum(out - reference, 0.0) / (mid - reference)
        else:
            out = out + sigma * z
    return out.astype(np.float32, copy=False)


def domain_args(domain, intensity_scale, intensity_offset, blur_, noise_texture, resolution) -> Domain:
    """Generators' keyword arguments to a :class:`Domain` (None keeps the preset's value)."""
    return resolve_domain(domain, intensity_scale=intensity_scale, intensity_offset=intensity_offset,
                          blur=blur_, noise_texture=noise_texture, resolution=resolution)
