"""Brain MRI phantoms in 3D, built on the real MNI152 template's tissue masks (offline).

Two generators share one renderer:

* :func:`brain_mri`: multi-channel volumes (T1-, T2- and FLAIR-like contrasts)
  with white-matter lesions of varied number, size and contrast, and an exact
  lesion mask and tissue map (segmentation).
* :func:`brain_atrophy`: T1-like volumes of controls and of patients with
  Alzheimer-like atrophy (enlarged ventricles, thinner cortex), with normal
  ageing adding atrophy of its own (classification).

How a case is made (in the spirit of SynthSeg, Billot et al., Medical Image
Analysis 86:102789, 2023: the intensities, shape and artefacts are drawn anew
for every image):

1. The tissue masks of nilearn's MNI152 2009 template at 2 mm (grey matter,
   white matter, CSF; the lateral ventricles found as the CSF that is enclosed
   by brain) are smoothed to the output voxel size and sampled on the output
   grid through a random affine transform and a smooth random displacement
   field: partial-volume fractions of each tissue in every output voxel.
2. Optional atrophy: the ventricles grow by some millimetres (tissue next to
   them becomes CSF) and the cortex thins from the outer surface inwards.
3. Lesions (``brain_mri``): irregular ellipsoids centred in white matter, more
   often near the ventricles, never touching each other; each has a radius
   and a contrast drawn from the given ranges. The mask keeps the voxels that
   are at least half lesion and white matter.
4. Intensities: each tissue's mean per channel is drawn per case around a
   typical T1/T2/FLAIR value; the image is the fraction-weighted mix; a lesion
   moves the white matter it replaces towards the lesion value by its
   contrast (bright on T2 and FLAIR, dark on T1).
5. Scanner: a smooth multiplicative bias field, Gaussian blur, Rician noise;
   values clipped to ``[0, 1]``.

Each lesion's visibility is recorded: its contrast-to-noise ratio in the
channel where it shows best, and the Rose criterion ``CNR * sqrt(voxels) >= 5``
(the Rose criterion, after Albert Rose: an object needs a signal-to-noise ratio,
integrated over its area, of about 5 to be seen with certainty). The smallest and faintest lesions are below it, so no
method reaches a perfect score.

Arrays are laid out ``(D, H, W) = (slices inferior->superior, anterior->posterior,
right->left)`` like :func:`medlab.io.read_image`; ``spacing`` is ``(dz, dy, dx)``
in mm. Randomness: case ``i`` of ``seed`` comes from
``numpy.random.default_rng((seed, i))``, so it is the same whatever ``n``.

Rendering: the voxels are computed with torch on ``device`` (the CPU by default, or a
GPU), one case at a time: the warp (``grid_sample``), atrophy, tissue map, intensities,
bias field, blur and noise. The per-case parameters (pose, deformation grid, intensities,
lesions) are drawn with NumPy from the case's generator, and the lesions are placed on
the CPU (a few small boxes each, with scipy's labelling), so they are the same on every
device. On the CPU the voxel noise comes from that generator too, and the volumes are
those of medlab's earlier NumPy renderer up to float rounding; on a GPU it comes from a
generator on the GPU seeded from ``(seed, i)``. Same seed and device, same volumes;
the number of torch threads does not change them.
"""
from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ParameterError
from ._torch import PixelNoise, blur1d, phantom_device, to_numpy

__all__ = ["BrainVolumes", "AtrophyVolumes", "brain_mri", "brain_atrophy", "TISSUE_NAMES", "CHANNEL_CONTRASTS",
           "ATROPHY_CLASSES", "ROSE_K"]

#: Names of the values of the ``tissue`` maps.
TISSUE_NAMES = ["background", "grey matter", "white matter", "CSF"]
#: Class names of :func:`brain_atrophy`.
ATROPHY_CLASSES = ["control", "atrophy"]
#: Rose criterion: a lesion counts as visible when ``CNR * sqrt(voxels) >= ROSE_K``.
ROSE_K = 5.0

#: Typical mean intensity per channel of background, grey matter, white matter,
#: CSF and lesion (each drawn per case within +- ``intensity_jitter``).
CHANNEL_CONTRASTS: dict[str, tuple[float, float, float, float, float]] = {
    "T1": (0.0, 0.55, 0.78, 0.18, 0.33),
    "T2": (0.0, 0.55, 0.38, 0.88, 0.85),
    "FLAIR": (0.0, 0.56, 0.42, 0.08, 0.92),
    "PD": (0.0, 0.70, 0.58, 0.78, 0.85),
}

#: Field of view (mm) of the output grid, centred on the brain (the template's brain is
#: about 156 x 180 x 146 mm; the rest is margin for the random deformation).
FOV_MM = (184.0, 216.0, 184.0)
_SOURCE_MM = 2.0
_PAD = 16


@dataclass
class BrainVolumes:
    """Multi-channel brain MRI phantoms with white-matter lesions (from :func:`brain_mri`).

    Attributes:
        images: float32 ``(N, C, D, H, W)`` in ``[0, 1]``.
        lesions: uint8 ``(N, D, H, W)``, 1 = white-matter lesion.
        tissue: uint8 ``(N, D, H, W)``: 0 background, 1 grey matter, 2 white matter
            (lesions included), 3 CSF (see :data:`TISSUE_NAMES`).
        spacing: voxel size ``(dz, dy, dx)`` in mm.
        channel_names: names of the ``C`` channels (``T1``, ``T2``, ``FLAIR``, ``PD``).
        lesion_table: pandas DataFrame, one row per lesion: ``case``, ``lesion``
            (its number in the case, from 1), ``volume_mm3`` (voxels in the mask
            times the voxel volume), ``voxels``, ``radius_mm`` (drawn
            equivalent-sphere radius), ``contrast`` (drawn, 0-1), ``cnr`` (mean
            intensity change over the mask divided by the noise standard
            deviation, best channel), ``rose`` (``cnr * sqrt(voxels)``),
            ``visible`` (``rose >= ROSE_K``), ``z``, ``y``, ``x`` (centre, voxels).
        attrs: per-case arrays: ``n_lesions``, ``lesion_volume_mm3``, ``noise``,
            ``blur``, ``ventricle_mm`` (ventricle enlargement drawn),
            ``ventricle_ml`` (ventricle volume from the tissue fractions).
        params: the arguments that made the batch.

    ``images``, ``lesions`` and ``tissue`` are NumPy arrays, or torch tensors on the rendering device when
    :func:`brain_mri` was called with ``as_tensors=True``.
    """

    images: np.ndarray
    lesions: np.ndarray
    tissue: np.ndarray
    spacing: tuple
    channel_names: list
    lesion_table: Any
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"BrainVolumes(images={tuple(self.images.shape)}, channels={self.channel_names}, "
                f"spacing={tuple(round(s, 2) for s in self.spacing)} mm, lesions={len(self.lesion_table)})")


@dataclass
class AtrophyVolumes:
    """T1-like brain volumes of controls and of patients with atrophy (from :func:`brain_atrophy`).

    Attributes:
        images: float32 ``(N, 1, D, H, W)`` in ``[0, 1]``.
        labels: int64 ``(N,)``: 0 control, 1 atrophy (see ``class_names``).
        severity: float ``(N,)`` in ``[0, 1]``: the disease's share of the atrophy
            (0 for controls).
        age: float ``(N,)`` in years; ageing enlarges the ventricles and thins the
            cortex in everyone.
        spacing: voxel size ``(dz, dy, dx)`` in mm.
        tissue: uint8 ``(N, D, H, W)`` tissue maps (as in :class:`BrainVolumes`).
        attrs: per-case arrays: ``ventricle_mm`` (total ventricle enlargement
            drawn: individual + age + disease), ``thinning_mm`` (cortex thinning),
            ``ventricle_ml`` (ventricle volume measured on the fractions), ``noise``.
        class_names: ``["control", "atrophy"]``.
        channel_names: ``["T1"]``.
        params: the arguments that made the batch.

    ``images``, ``labels`` and ``tissue`` are NumPy arrays, or torch tensors on the rendering device when
    :func:`brain_atrophy` was called with ``as_tensors=True``.
    """

    images: np.ndarray
    labels: np.ndarray
    severity: np.ndarray
    age: np.ndarray
    spacing: tuple
    tissue: np.ndarray
    attrs: dict = field(default_factory=dict)
    class_names: list = field(default_factory=lambda: list(ATROPHY_CLASSES))
    channel_names: list = field(default_factory=lambda: ["T1"])
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        labels = to_numpy(self.labels) if isinstance(self.labels, torch.Tensor) else self.labels
        counts = np.bincount(labels, minlength=2)
        return (f"AtrophyVolumes(images={tuple(self.images.shape)}, control={counts[0]}, atrophy={counts[1]}, "
                f"spacing={tuple(round(s, 2) for s in self.spacing)} mm)")


# ----------------------------------------------------------------------------------------------
# the template


_CACHE_NAME = "mni152_brain_maps_2mm_v1.npz"


@functools.lru_cache(maxsize=1)
def _template_2mm():
    """Tissue one-hot, ventricle and outer-surface distances (mm) of MNI152 at 2 mm, padded.

    nilearn takes several seconds to build its templates, so the derived maps are kept in
    ``data_dir()/cache`` (a few MB) after the first call; a missing or unreadable cache is rebuilt.
    """
    from ..download import data_dir

    path = data_dir() / "cache" / _CACHE_NAME
    try:
        with np.load(path, allow_pickle=False) as z:
            tissue, dist = z["tissue"], z["dist"].astype(np.float32)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        tissue, dist = _build_template_2mm()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, tissue=tissue, dist=dist.astype(np.float16))
            tmp.replace(path)
        except OSError:
            pass    # a read-only data folder: rebuilt next time
        dist = dist.astype(np.float16).astype(np.float32)   # the same values as from the cache
    onehot = np.stack([tissue == k for k in range(4)]).astype(np.float32)
    pad = [(0, 0)] + [(_PAD, _PAD)] * 3
    onehot = np.pad(onehot, pad)
    onehot[0] += 1.0 - onehot.sum(0)                                    # the padding is background
    dist = np.pad(dist, pad, mode="edge")
    idx = np.argwhere(tissue > 0)
    centre = (idx.min(0) + idx.max(0)) / 2.0 + _PAD
    return onehot, dist, centre


def _build_template_2mm():
    from scipy import ndimage as ndi

    from ..sources.mni152 import load_volumes

    t1, labels, _ = load_volumes(2)
    brain = labels > 0
    csf_like = (labels == 3) | (brain & (t1 < 0.45))
    free = csf_like | ~brain
    comp, _ = ndi.label(free)
    outside = comp == comp[0, 0, 0]
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    sizes[comp[0, 0, 0]] = 0
    ventricles = comp == int(np.argmax(sizes))      # the CSF enclosed by brain: the lateral ventricles
    tissue = labels.copy()
    tissue[ventricles] = 3
    h = _SOURCE_MM
    d_vent = (ndi.distance_transform_edt(~ventricles) - ndi.distance_transform_edt(ventricles)) * h
    d_out = ndi.distance_transform_edt(~outside) * h - h / 2          # depth below the outer brain surface
    return tissue.astype(np.uint8), np.stack([d_vent, d_out]).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _template(spacing: tuple):
    """The template's maps smoothed for output voxels of ``spacing`` mm, as a torch tensor (1, 6, Z, Y, X)."""
    from scipy.ndimage import gaussian_filter

    onehot, dist, centre = _template_2mm()
    sigma = [np.sqrt(max((0.42 * s) ** 2 - (0.42 * _SOURCE_MM) ** 2, 0.0)) / _SOURCE_MM for s in spacing]
    smooth = np.stack([gaussian_filter(c, sigma, mode="nearest", truncate=3.0) for c in onehot])
    maps = np.concatenate([smooth, dist])
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None], centre


def _grid_shape(spacing, shape):
    if shape is not None:
        shape = (int(shape),) * 3 if np.isscalar(shape) else tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 8:
            raise ParameterError(f"shape must be an int or three ints >= 8, not {shape!r}")
        return shape
    return tuple(int(round(f / s)) for f, s in zip(FOV_MM, spacing))


# ----------------------------------------------------------------------------------------------
# one case


def _sum(x: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """Per-channel float64 sums of ``x`` ``(C, ...)``, the same whatever the number of torch threads.

    A whole-tensor reduction on a CPU splits the work between threads and adds their partial sums in another
    order with two threads than with one; summing ``rows`` fixed slices first (one thread each) and then the
    ``rows`` partial sums does not.
    """
    flat = x.reshape(len(x), -1).to(torch.float64)
    pad = (-flat.shape[1]) % rows
    if pad:
        flat = F.pad(flat, (0, pad))
    return flat.view(len(x), rows, -1).sum(-1).sum(-1)


def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    """float32 ``(C, 1, 1, 1)`` mean of each channel of ``x`` ``(C, D, H, W)`` (thread-count independent)."""
    return (_sum(x) / x[0].numel()).to(x.dtype).view(-1, 1, 1, 1)


def _first_argmax(frac: torch.Tensor) -> torch.Tensor:
    """uint8 index of the largest of the ``(K, ...)`` values at each voxel, the first on ties (``np.argmax``):
    a few comparisons, several times faster than ``torch.argmax`` over the first axis on a CPU."""
    best, index = frac[0].clone(), torch.zeros(frac.shape[1:], dtype=torch.uint8, device=frac.device)
    for k in range(1, len(frac)):
        larger = frac[k] > best
        index.masked_fill_(larger, k)
        best = torch.maximum(best, frac[k])
    return index


def _smooth_noise(rng, shape, cells, channels=1, device=None):
    """Smooth random fields (channels, *shape) on ``device``, zero mean and unit std each: a coarse grid of
    standard normal numbers drawn from ``rng`` (``(1, channels, *cells)``), upsampled trilinearly."""
    coarse = torch.from_numpy(rng.standard_normal((1, channels) + tuple(cells)).astype(np.float32))
    up = F.interpolate(coarse.to(device), size=shape, mode="trilinear", align_corners=True)[0]
    up -= _channel_mean(up)
    centred = up - _channel_mean(up)
    up /= _channel_mean(centred.mul_(centred)).sqrt_().add_(1e-6)
    return up


def _warp(rng, maps, centre, shape, spacing, deformation):
    """Sample the template maps (on their device) through a random affine + smooth displacement: (6, D, H, W)."""
    dev = maps.device
    ang = np.deg2rad(rng.uniform(-6, 6, 3))
    scale = np.exp(rng.normal(0, 0.04) + rng.normal(0, 0.03, 3))       # head size, then per axis
    shift = rng.normal(0, 3.0, 3)
    cz, sz = np.cos(ang[0]), np.sin(ang[0])
    cy, sy = np.cos(ang[1]), np.sin(ang[1])
    cx, sx = np.cos(ang[2]), np.sin(ang[2])
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    a = (rz @ ry @ rx) / scale[None, :]
    view = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
    axes = [((torch.arange(n, dtype=torch.float64, device=dev) - (n - 1) / 2.0) * s).view(v)
            for n, s, v in zip(shape, spacing, view)]                       # mm, (z, y, x)
    disp = _smooth_noise(rng, shape, (5, 6, 5), channels=3, device=dev).mul_(deformation)
    size = maps.shape[2:]
    grid = torch.empty(shape + (3,), dtype=torch.float32, device=dev)
    for k in range(3):   # source voxel index k, as a grid_sample coordinate in [-1, 1] (x, y, z order)
        q = axes[0] * a[k, 0] + axes[1] * a[k, 1] + axes[2] * a[k, 2] + shift[k] + disp[k].to(torch.float64)
        src = q / _SOURCE_MM + centre[k]
        grid[..., 2 - k] = src / (size[k] - 1) * 2 - 1
    out = F.grid_sample(maps, grid[None], mode="bilinear", padding_mode="border", align_corners=True)
    return out[0]


def _atrophy(frac, d_vent, d_out, enlarge_mm, thin_mm, voxel_mm):
    """Grow the ventricles by ``enlarge_mm`` and thin the cortex by ``thin_mm`` (fraction tensors in place)."""
    w = voxel_mm

    def inside(d):  # fraction of the voxel on the negative side of the level set d = 0
        return torch.clamp(0.5 - d / w, 0.0, 1.0)

    if enlarge_mm != 0.0:
        delta = inside(d_vent - enlarge_mm) - inside(d_vent)
        grow = delta.clamp_min(0.0)
        take_wm = torch.minimum(frac[2], grow)
        take_gm = torch.minimum(frac[1], grow - take_wm)
        frac[2] -= take_wm
        frac[1] -= take_gm
        frac[3] += take_wm + take_gm
        shrink = torch.minimum((-delta).clamp_min_(0.0), frac[3])    # smaller ventricles: CSF back to white matter
        frac[3] -= shrink
        frac[2] += shrink
    if thin_mm > 0.0:
        deeper = (inside(d_out - thin_mm) - inside(d_out)).clamp_min_(0.0)   # the outer thin_mm of the brain
        lost = torch.minimum(frac[1], deeper * torch.clamp(frac[1] / (frac[1] + frac[2] + 1e-6), 0, 1))
        frac[1] -= lost
        frac[3] += lost
    return frac


def _lesion_blob(rng, radius_mm):
    """An irregular ellipsoid: returns a function of offsets (mm) giving inside (bool)."""
    axes = np.exp(rng.normal(0, 0.25, 3))
    axes /= np.prod(axes) ** (1 / 3)
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    waves = rng.standard_normal((3, 3)) * 0.8
    phase = rng.uniform(0, 2 * np.pi, 3)
    amp = rng.uniform(0.05, 0.2)
    r = radius_mm * axes

    def inside(off):  # off (3, ...) in mm
        u = np.tensordot(rot.T, off, axes=1) / r.reshape(3, *([1] * (off.ndim - 1)))
        rho = np.sqrt((u ** 2).sum(0))
        unit = u / (rho + 1e-6)
        wobble = 1.0 + amp * np.sin(np.tensordot(waves, unit, axes=1) * 3.0
                                    + phase.reshape(3, *([1] * (off.ndim - 1)))).mean(0)
        return rho <= wobble

    return inside


def _place_lesions(rng, count, tissue, frac_wm, d_vent, spacing, radius_mm, contrast, max_tries=20):
    """Lesions in white matter: soft fractions (D, H, W), label map (D, H, W) and one dict per lesion."""
    from scipy import ndimage as ndi

    shape = tissue.shape
    soft = np.zeros(shape, np.float32)
    ids = np.zeros(shape, np.int32)
    rows = []
    wm = (tissue == 2) & (frac_wm >= 0.5)
    cand = np.flatnonzero(wm)
    if count == 0 or cand.size == 0:
        return soft, ids, rows
    weight = 1.0 + 3.0 * np.exp(-np.maximum(d_vent.ravel()[cand], 0.0) / 8.0)   # periventricular preference
    weight /= weight.sum()
    sp = np.asarray(spacing, dtype=np.float64)
    sub = [np.maximum(2, np.ceil(2 * s / min(sp)).astype(int)) for s in sp]
    full = np.ones((3, 3, 3), bool)
    taken = np.zeros(shape, bool)                       # existing lesions dilated by one voxel
    for _ in range(count):
        for _try in range(max_tries):
            r_mm = float(np.exp(rng.uniform(np.log(radius_mm[0]), np.log(radius_mm[1]))))
            c = float(rng.uniform(*contrast))
            centre_idx = np.array(np.unravel_index(rng.choice(cand, p=weight), shape))
            centre = centre_idx + rng.uniform(-0.5, 0.5, 3)
            inside = _lesion_blob(rng, r_mm)
            half = np.ceil(1.6 * r_mm / sp).astype(int) + 1
            lo = np.maximum(centre_idx - half, 0)
            hi = np.minimum(centre_idx + half + 1, shape)
            # supersampled fraction of each voxel of the box inside the lesion
            offs = [((np.arange(s) + 0.5) / s - 0.5) for s in sub]
            box = [np.arange(lo[k], hi[k])[:, None] + offs[k][None, :] for k in range(3)]   # (n_k, s_k)
            oz = (box[0] - centre[0]) * sp[0]
            oy = (box[1] - centre[1]) * sp[1]
            ox = (box[2] - centre[2]) * sp[2]
            Z, SZ, Y, SY, X, SX = np.ix_(*[np.arange(v) for v in (oz.shape[0], oz.shape[1], oy.shape[0],
                                                                    oy.shape[1], ox.shape[0], ox.shape[1])])
            off = np.stack(np.broadcast_arrays(oz[Z, SZ], oy[Y, SY], ox[X, SX]))
            f = inside(off).mean(axis=(1, 3, 5)).astype(np.float32)
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            ok = wm[sl] & ~taken[sl]
            m = (f >= 0.5) & ok
            if not m.any():
                if not (f * ok).any():
                    continue
                m = np.zeros_like(ok)
                m[np.unravel_index(np.argmax(f * ok), f.shape)] = True    # a sub-voxel lesion keeps one voxel
            lab, k = ndi.label(m, structure=full)
            if k > 1:
                m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
            near = ndi.binary_dilation(m, structure=full)
            effect = f * near * frac_wm[sl]
            if (soft[sl][near] > 0).any():
                continue
            lesion_id = len(rows) + 1
            ids[sl][m] = lesion_id
            soft[sl] += effect
            taken[sl] |= ndi.binary_dilation(near, structure=full)
            zc, yc, xc = np.argwhere(m).mean(0) + lo
            rows.append({"lesion": lesion_id, "voxels": int(m.sum()), "radius_mm": r_mm, "contrast": c,
                         "z": float(zc), "y": float(yc), "x": float(xc)})
            break
    return soft, ids, rows


def _render_case(rng, noise_source, maps, centre, shape, spacing, channels, *, deformation, ventricle_mm,
                 thinning_mm, n_lesions, radius_mm, contrast, intensity_jitter, bias, blur, noise):
    """One case on ``maps.device``: images (C, D, H, W) and tissue (D, H, W) tensors, lesion ids (NumPy, on the
    CPU), lesion rows, ventricle ml, noise sigma, blur sigma.

    The parameters come from ``rng`` in the order of the NumPy renderer this replaced; the Rician noise from
    ``noise_source`` (a :class:`~medlab.data.phantoms._torch.PixelNoise`: ``rng`` itself on the CPU).
    """
    dev = maps.device
    warped = _warp(rng, maps, centre, shape, spacing, deformation)
    frac = warped[:4].clamp_min(0.0)
    frac /= frac[0] + frac[1] + frac[2] + frac[3] + 1e-6
    d_vent, d_out = warped[4], warped[5]
    voxel = float(np.mean(spacing))
    frac = _atrophy(frac, d_vent, d_out, ventricle_mm, thinning_mm, voxel)
    tissue = _first_argmax(frac)
    in_vent = torch.clamp(0.5 - (d_vent - max(ventricle_mm, 0.0) - voxel) / voxel, 0, 1)
    vent_ml = float(_sum((frac[3] * in_vent)[None])[0]) * float(np.prod(spacing)) / 1000.0
    if n_lesions > 0:   # placed one by one on the CPU (scipy labelling)
        soft, ids, rows = _place_lesions(rng, n_lesions, to_numpy(tissue), to_numpy(frac[2]), to_numpy(d_vent),
                                         spacing, radius_mm, contrast)
    else:
        ids, rows = np.zeros(shape, np.int32), []
    if rows:   # each lesion's contrast, spread over its soft border (the voxels next to its mask)
        ids_t = torch.from_numpy(ids).to(dev, torch.int64)
        table = torch.tensor([0.0] + [row["contrast"] for row in rows], dtype=torch.float32, device=dev)
        contrast_map = table[ids_t]
        spread = F.max_pool3d(contrast_map[None, None], 3, stride=1, padding=1)[0, 0]
        contrast_map = torch.where(ids_t > 0, contrast_map, spread)
        in_lesion = ids_t > 0
        soft_contrast = torch.from_numpy(soft).to(dev) * contrast_map
    sigma_noise = float(rng.uniform(*noise))
    sigma_blur = float(rng.uniform(*blur))
    bias_fields = _smooth_noise(rng, shape, (3, 3, 3), channels=len(channels), device=dev).mul_(bias).exp_()
    images = torch.empty((len(channels),) + shape, device=dev)
    lesion_signal = []   # per channel: the blurred lesion signal in the voxels of the lesion masks (NumPy)
    for ci, name in enumerate(channels):
        means = np.array(CHANNEL_CONTRASTS[name], np.float64)
        means[1:] += rng.uniform(-intensity_jitter, intensity_jitter, 4)
        m = means[:4].astype(np.float32).tolist()
        img = frac[0] * m[0] + frac[1] * m[1] + frac[2] * m[2] + frac[3] * m[3]
        if rows:
            les = soft_contrast * float(np.float32(means[4] - means[2]))
            img = img.add_(les).mul_(bias_fields[ci])
            les = les.mul_(bias_fields[ci])
        else:
            img = img.mul_(bias_fields[ci])
        if sigma_blur > 0:   # scipy's gaussian_filter(..., truncate=3.0): mode "reflect"
            for dim in (1, 2, 3):
                img = blur1d(img[None], sigma_blur, dim=dim, mode="reflect")[0]
                if rows:
                    les = blur1d(les[None], sigma_blur, dim=dim, mode="reflect")[0]
        n1 = noise_source.standard_normal(shape).to(dev)
        n2 = noise_source.standard_normal(shape).to(dev)
        if noise_source.gen is not None and ci + 1 < len(channels):
            # noise from the device's generator: still take from ``rng`` the numbers the CPU takes for this
            # channel's noise, so that the next channel's means (drawn after them) are the same on every device
            rng.standard_normal(shape, dtype=np.float32)
            rng.standard_normal(shape, dtype=np.float32)
        img = img.add_(n1.mul_(sigma_noise)).square_().add_(n2.mul_(sigma_noise).square_()).sqrt_()
        images[ci] = img.clamp_(0.0, 1.0)
        if rows:
            lesion_signal.append(to_numpy(les[in_lesion]))
    if rows:
        signal, lesion_of = np.stack(lesion_signal), ids[ids > 0]
        for row in rows:
            cnr = np.abs(signal[:, lesion_of == row["lesion"]].mean(1)) / sigma_noise
            row["cnr"] = float(cnr.max())
            row["rose"] = float(cnr.max() * np.sqrt(row["voxels"]))
            row["visible"] = bool(row["rose"] >= ROSE_K)
    return images, tissue, ids, rows, vent_ml, sigma_noise, sigma_blur


# ----------------------------------------------------------------------------------------------
# public generators


def _check_pair(name, value, low, high):
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a pair (low, high), not {value!r}") from None
    if not low <= a <= b <= high:
        raise ParameterError(f"{name}={value!r}: need {low} <= low <= high <= {high}")
    return a, b


def _check_render(deformation, intensity_jitter, bias):
    from ._common import check_range

    check_range("deformation", deformation, 0.0, 20.0)
    check_range("intensity_jitter", intensity_jitter, 0.0, 0.3)
    check_range("bias", bias, 0.0, 1.0)


def _check_common(n, voxel_mm, anisotropy, channels):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ParameterError(f"n must be a non-negative integer, not {n!r}")
    try:
        voxel_mm, anisotropy = float(voxel_mm), float(anisotropy)
    except (TypeError, ValueError):
        raise ParameterError("voxel_mm and anisotropy must be numbers") from None
    if not 1.5 <= voxel_mm <= 12.0:
        raise ParameterError(f"voxel_mm={voxel_mm} is out of range [1.5, 12] mm (4 mm is about 46x54x46 voxels)")
    if not 1.0 <= anisotropy <= 4.0:
        raise ParameterError(f"anisotropy={anisotropy} is out of range [1, 4] (slice thickness / in-plane size)")
    if isinstance(channels, str):
        channels = (channels,)
    channels = [str(c).upper() for c in channels]
    bad = [c for c in channels if c not in CHANNEL_CONTRASTS]
    if bad or not channels:
        raise ParameterError(f"unknown channel(s) {bad}; channels are any of {sorted(CHANNEL_CONTRASTS)}")
    return int(n), (voxel_mm * anisotropy, voxel_mm, voxel_mm), channels


def brain_mri(n: int, *, seed: int = 0, voxel_mm: float = 4.0, channels: Sequence[str] = ("T1", "T2", "FLAIR"),
              lesion_load: tuple = (0, 12), lesion_radius_mm: tuple = (2.0, 8.0),
              lesion_contrast: tuple = (0.3, 1.0), anisotropy: float = 1.0, shape=None,
              deformation: float = 2.5, ventricle_mm: tuple = (-1.0, 3.0), intensity_jitter: float = 0.05,
              bias: float = 0.12, blur: tuple = (0.0, 0.6), noise: tuple = (0.02, 0.05), device=None,
              as_tensors: bool = False) -> BrainVolumes:
    """Multi-channel brain MRI phantoms with white-matter lesions and exact masks.

    Args:
        n: number of cases.
        seed: case ``i`` is drawn from ``default_rng((seed, i))``.
        voxel_mm: in-plane voxel size in mm (4 mm gives 46 x 54 x 46 voxels).
        channels: any of ``T1``, ``T2``, ``FLAIR``, ``PD`` (image channels, in order).
        lesion_load: (min, max) number of lesions per case, drawn uniformly (inclusive).
        lesion_radius_mm: (min, max) equivalent-sphere radius, drawn log-uniformly.
        lesion_contrast: (min, max) contrast, 0 = like white matter, 1 = the full
            lesion intensity of each channel (bright on T2/FLAIR, dark on T1).
        anisotropy: slice thickness / in-plane size: spacing ``(voxel_mm * anisotropy,
            voxel_mm, voxel_mm)``; thick slices average the anatomy along ``D``.
        shape: output grid ``(D, H, W)`` (or one int); default: the field of view
            :data:`FOV_MM` divided by the spacing.
        deformation: standard deviation (mm) of the smooth random displacement.
        ventricle_mm: (min, max) ventricle enlargement (mm; negative shrinks),
            drawn per case: anatomical variety.
        intensity_jitter: each tissue mean varies by up to this much per case and channel.
        bias: strength of the multiplicative bias field (log-scale std).
        blur: (min, max) Gaussian blur sigma in voxels, per case.
        noise: (min, max) Rician noise sigma, per case.
        device: where the voxels are rendered: ``None`` or ``"cpu"`` (default), ``"cuda"``, ``"auto"`` (the
            GPU when there is one). The per-case parameters, tissue maps and lesions are the same on every
            device (the lesions are placed on the CPU); the voxel noise on a GPU comes from a generator on
            the GPU, so a GPU renders other (equally likely) noise than the CPU. Same seed and device, same
            volumes.
        as_tensors: return ``images``, ``lesions`` and ``tissue`` as torch tensors on ``device`` instead of
            NumPy arrays (same dtypes; ``lesion_table`` and ``attrs`` stay pandas/NumPy).

    Returns:
        :class:`BrainVolumes`.
    """
    import pandas as pd

    n, spacing, channels = _check_common(n, voxel_mm, anisotropy, channels)
    lo, hi = lesion_load
    if not (0 <= int(lo) <= int(hi) <= 200):
        raise ParameterError(f"lesion_load={lesion_load!r}: need 0 <= min <= max <= 200 lesions per case")
    radius_mm = _check_pair("lesion_radius_mm", lesion_radius_mm, 0.5, 40.0)
    contrast = _check_pair("lesion_contrast", lesion_contrast, 0.0, 2.0)
    ventricle = _check_pair("ventricle_mm", ventricle_mm, -4.0, 15.0)
    blur = _check_pair("blur", blur, 0.0, 3.0)
    noise = _check_pair("noise", noise, 0.0, 0.5)
    _check_render(deformation, intensity_jitter, bias)
    shape = _grid_shape(spacing, shape)
    dev = phantom_device(device)
    maps, centre = _template(spacing)
    maps = maps.to(dev)
    images = torch.empty((n, len(channels)) + shape, device=dev)
    lesions = torch.empty((n,) + shape, dtype=torch.uint8, device=dev)
    tissue = torch.empty((n,) + shape, dtype=torch.uint8, device=dev)
    attrs = {k: np.zeros(n) for k in ("n_lesions", "lesion_volume_mm3", "noise", "blur", "ventricle_mm",
                                      "ventricle_ml")}
    rows = []
    vox_mm3 = float(np.prod(spacing))
    for i in range(n):
        rng = np.random.default_rng((int(seed), i))
        count = int(rng.integers(int(lo), int(hi) + 1))
        vent = float(rng.uniform(*ventricle))
        with torch.no_grad():
            img, tis, ids, case_rows, vent_ml, s_noise, s_blur = _render_case(
                rng, PixelNoise(rng, int(seed), dev, key=(i,)), maps, centre, shape, spacing, channels,
                deformation=deformation, ventricle_mm=vent, thinning_mm=0.0, n_lesions=count,
                radius_mm=radius_mm, contrast=contrast, intensity_jitter=intensity_jitter, bias=bias, blur=blur,
                noise=noise)
            images[i], tissue[i] = img, tis
            lesions[i] = torch.from_numpy((ids > 0).view(np.uint8)).to(dev)
        for r in case_rows:
            rows.append({"case": i, **r, "volume_mm3": r["voxels"] * vox_mm3})
        attrs["n_lesions"][i] = len(case_rows)
        attrs["lesion_volume_mm3"][i] = float((ids > 0).sum()) * vox_mm3
        attrs["noise"][i], attrs["blur"][i] = s_noise, s_blur
        attrs["ventricle_mm"][i], attrs["ventricle_ml"][i] = vent, vent_ml
    columns = ["case", "lesion", "volume_mm3", "voxels", "radius_mm", "contrast", "cnr", "rose", "visible",
               "z", "y", "x"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.astype({"case": int, "lesion": int, "voxels": int, "visible": bool})
    params = dict(n=n, seed=seed, voxel_mm=voxel_mm, channels=list(channels), lesion_load=tuple(lesion_load),
                  lesion_radius_mm=radius_mm, lesion_contrast=contrast, anisotropy=anisotropy, shape=shape,
                  deformation=deformation, ventricle_mm=ventricle, intensity_jitter=intensity_jitter,
                  bias=bias, blur=blur, noise=noise)
    if not as_tensors:
        images, lesions, tissue = to_numpy(images), to_numpy(lesions), to_numpy(tissue)
    return BrainVolumes(images, lesions, tissue, spacing, list(channels), table, attrs, params)


def brain_atrophy(n: int, *, seed: int = 0, voxel_mm: float = 4.0, anisotropy: float = 1.0, shape=None,
                  effect: float = 1.0, age_range: tuple = (55.0, 90.0), patient_age_shift: float = 3.0,
                  ventricle_sd_mm: float = 1.0, deformation: float = 2.5, intensity_jitter: float = 0.05,
                  bias: float = 0.12, blur: tuple = (0.0, 0.6), noise: tuple = (0.02, 0.05), device=None,
                  as_tensors: bool = False) -> AtrophyVolumes:
    """T1-like brain volumes of controls and patients with Alzheimer-like atrophy.

    Every case's ventricles grow by ``individual + ageing + disease`` mm and its
    cortex thins by ``ageing + disease`` mm:

    * individual: normal(0, ``ventricle_sd_mm``) (people differ);
    * ageing: 0.06 mm per year over 55 for the ventricles, 0.015 mm per year for the cortex;
    * disease (patients only): ``effect * severity`` times 4 mm (ventricles)
      and 0.8 mm (cortex), severity uniform in [0.15, 1].

    Patients are on average ``patient_age_shift`` years older. Old controls and
    mild patients overlap, so atrophy alone does not separate the classes:
    the best possible AUROC is below 1.

    Args:
        n: number of cases (half controls, half patients, shuffled).
        seed: case ``i`` is drawn from ``default_rng((seed, i))``.
        voxel_mm, anisotropy, shape, deformation, intensity_jitter, bias, blur,
            noise, device: as in :func:`brain_mri`.
        effect: scale of the disease's atrophy (0 = the classes differ only in age).
        age_range: (min, max) age in years, uniform.
        patient_age_shift: years added to patients' ages (clipped to the range).
        ventricle_sd_mm: individual variation of ventricle size (mm of enlargement).
        as_tensors: return ``images``, ``labels`` and ``tissue`` as torch tensors on ``device`` instead of
            NumPy arrays (``severity``, ``age`` and ``attrs`` stay NumPy).

    Returns:
        :class:`AtrophyVolumes` (``images`` ``(N, 1, D, H, W)``).
    """
    n, spacing, channels = _check_common(n, voxel_mm, anisotropy, ("T1",))
    ages = _check_pair("age_range", age_range, 0.0, 120.0)
    blur = _check_pair("blur", blur, 0.0, 3.0)
    noise = _check_pair("noise", noise, 0.0, 0.5)
    if not 0.0 <= float(effect) <= 5.0:
        raise ParameterError(f"effect={effect!r} is out of range [0, 5]")
    _check_render(deformation, intensity_jitter, bias)
    shape = _grid_shape(spacing, shape)
    dev = phantom_device(device)
    maps, centre = _template(spacing)
    maps = maps.to(dev)
    labels = np.random.default_rng((int(seed), 1 << 30)).permutation(np.arange(n) % 2).astype(np.int64)
    images = torch.empty((n, 1) + shape, device=dev)
    tissue = torch.empty((n,) + shape, dtype=torch.uint8, device=dev)
    severity, age = np.zeros(n), np.zeros(n)
    attrs = {k: np.zeros(n) for k in ("ventricle_mm", "thinning_mm", "ventricle_ml", "noise")}
    for i in range(n):
        rng = np.random.default_rng((int(seed), i))
        a = float(rng.uniform(*ages))
        s = float(rng.uniform(0.15, 1.0))
        individual = float(rng.normal(0.0, ventricle_sd_mm))
        thin_individual = float(rng.normal(0.0, 0.15))
        if labels[i] == 1:
            a = min(a + patient_age_shift, ages[1])
        else:
            s = 0.0
        years = max(a - 55.0, 0.0)
        vent = individual + 0.06 * years + float(effect) * s * 4.0
        thin = max(thin_individual + 0.015 * years + float(effect) * s * 0.8, 0.0)
        with torch.no_grad():
            img, tis, _, _, vent_ml, s_noise, _ = _render_case(
                rng, PixelNoise(rng, int(seed), dev, key=(i,)), maps, centre, shape, spacing, channels,
                deformation=deformation, ventricle_mm=vent, thinning_mm=thin, n_lesions=0, radius_mm=(1.0, 1.0),
                contrast=(0.0, 0.0), intensity_jitter=intensity_jitter, bias=bias, blur=blur, noise=noise)
            images[i], tissue[i] = img, tis
        severity[i], age[i] = s, a
        attrs["ventricle_mm"][i], attrs["thinning_mm"][i] = vent, thin
        attrs["ventricle_ml"][i], attrs["noise"][i] = vent_ml, s_noise
    params = dict(n=n, seed=seed, voxel_mm=voxel_mm, anisotropy=anisotropy, shape=shape, effect=effect,
                  age_range=ages, patient_age_shift=patient_age_shift, ventricle_sd_mm=ventricle_sd_mm,
                  deformation=deformation, intensity_jitter=intensity_jitter, bias=bias, blur=blur, noise=noise)
    if as_tensors:
        labels = torch.as_tensor(labels, device=dev)
    else:
        images, tissue = to_numpy(images), to_numpy(tissue)
    return AtrophyVolumes(images, labels, severity, age, spacing, tissue, attrs, params=params)
