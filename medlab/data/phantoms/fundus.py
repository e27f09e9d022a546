"""Colour fundus photograph phantoms graded for diabetic retinopathy (0-4), with every finding recorded.

An RGB photograph of the retina (display intensities in ``[0, 1]``, shape
``(N, 3, H, W)``): the circular field of view of the camera, the orange-red
fundus with a choroidal texture, the **optic disc** (left or right, by eye),
the darker **macula** with the fovea, a random **vessel tree** (four arcades
leaving the disc, with branches, veins darker and wider than arteries), and
the findings of diabetic retinopathy:

``microaneurysms`` (MA)
    tiny dark-red dots, the first sign of the disease;
``haemorrhages``
    dark-red dots and blots, larger than microaneurysms (their sizes overlap);
``hard exudates``
    yellow deposits, in clusters, often near the macula;
``neovascularisation`` (NV)
    a tangle of fine new vessels at the disc or along an arcade, sometimes with a
    large pre-retinal haemorrhage.

The grade follows a simplified International Clinical DR scale (Wilkinson et
al. 2003), applied to the findings drawn (:func:`dr_grade`):

======  =====================  ============================================================
grade   name                   findings
======  =====================  ============================================================
0       no DR                  none
1       mild NPDR              microaneurysms only
2       moderate NPDR          haemorrhages or hard exudates, short of grade 3
3       severe NPDR            >= ``SEVERE_HAEMORRHAGES`` haemorrhages in all four quadrants
4       proliferative DR       neovascularisation
======  =====================  ============================================================

(the real 4-2-1 rule of severe NPDR, over 20 haemorrhages in each quadrant, venous
beading in two, IRMA in one, does not fit in 64 pixels). *Referable* DR is grade 2 or
worse. Lesion sizes and contrasts are drawn per lesion from ranges that run
down to below what the image can show (a microaneurysm of a quarter pixel, a
haemorrhage of 5% contrast under noise), so a perfect score is not possible
from the pixels: the grade is the truth of what was drawn, not of what is visible.

Every image also varies, as photographs do (each drawn per image, after SynthSeg's
generator: Billot et al. 2023): field-of-view position and size, left or right
eye, disc position, the vessel tree, pigmentation (per-channel colour balance),
illumination (gain, gamma), vignetting, a smooth bias field, a smooth
deformation, blur and noise. ``variation`` scales all of them at once.

The pixels are rendered with torch, in batches, on a chosen ``device`` (:mod:`._torch`): the
per-image parameters (findings, anatomy, the random walks of the vessels) are drawn with NumPy
from ``seed``, then the vessel points are splatted and blurred into lines, the lesions drawn as
sums of Gaussians, the fundus shaded, deformed, blurred and given noise. On the CPU the random
numbers are those of medlab's earlier NumPy renderer, in the same order, so the images are its
images up to float rounding; on a GPU the pixel noise comes from a torch generator on the GPU.

``attrs``: ``n_microaneurysms``, ``n_haemorrhages``, ``n_exudates``,
``haemorrhage_quadrants`` (quadrants around the fovea holding a haemorrhage),
``neovascularisation`` (0/1), ``preretinal_haemorrhage`` (0/1),
``referable`` (0/1, grade >= 2), ``referable_signal`` (peak contrast, after the
blur of the image's pixels, of the most visible referable finding; 0 below grade 2),
``referable_evidence`` (contrast times area in pixels^2, summed over the referable findings; 0 below grade 2),
``largest_haemorrhage`` (radius in pixels at this size, 0 if none),
``haemorrhage_contrast`` and ``microaneurysm_contrast`` (mean drawn contrast, 0 if
none), ``eye`` (0 right, 1 left), ``disc_x``, ``illumination``, ``vignetting``,
``blur``, ``noise``, ``lesion_area`` (fraction of the image the findings cover),
``severity`` (the grade), ``domain``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ._common import PhantomBatch, balanced_labels, check_common, check_range, domain_args
from ._torch import (Canvas, PixelNoise, apply_domain, chunk_images, col, field_cells, phantom_device,
                     render_chunks, smooth_field, to_numpy)

__all__ = ["fundus", "FUNDUS_CLASSES", "FUNDUS_MASK_CLASSES", "dr_grade", "SEVERE_HAEMORRHAGES", "REFERABLE_GRADE"]

FUNDUS_CLASSES = ["no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR"]
FUNDUS_MASK_CLASSES = ["background", "vessel", "optic disc", "microaneurysm", "haemorrhage", "hard exudate",
                       "neovascularisation"]
#: haemorrhages (in all four quadrants) that make a case severe NPDR
SEVERE_HAEMORRHAGES = 10
#: referable diabetic retinopathy: moderate NPDR (grade 2) or worse
REFERABLE_GRADE = 2

_MAX_MA, _MAX_HAEM, _MAX_EXUD = 16, 24, 24
_ARCADES, _ARCADE_POINTS, _BRANCHES, _BRANCH_POINTS = 4, 44, 8, 18
_NV_SEGMENTS, _NV_POINTS = 5, 10
_PX = 2.0 / 64.0  # one pixel of a 64-pixel image, in normalised units: lesion sizes are given in it


def dr_grade(n_microaneurysms, n_haemorrhages, n_exudates, haemorrhage_quadrants, neovascularisation) -> np.ndarray:
    """The DR grade (0-4) of cases from their findings: the rule every phantom's label obeys.

    4 with neovascularisation; else 3 with at least :data:`SEVERE_HAEMORRHAGES` haemorrhages
    spread over all four quadrants; else 2 with any haemorrhage or hard exudate; else 1 with
    any microaneurysm; else 0. Arguments broadcast (arrays of one value per case).
    """
    ma, haem, exud = np.asarray(n_microaneurysms), np.asarray(n_haemorrhages), np.asarray(n_exudates)
    quadrants, nv = np.asarray(haemorrhage_quadrants), np.asarray(neovascularisation)
    return np.select([nv > 0, (haem >= SEVERE_HAEMORRHAGES) & (quadrants >= 4), (haem > 0) | (exud > 0), ma > 0],
                     [4, 3, 2, 1], 0).astype(np.int64)


def fundus(n: int, size: int = 64, seed: int = 0, *, lesion_contrast: float = 1.0, lesion_size: float = 1.0,
           variation: float = 1.0, noise: float = 0.025, domain="A", intensity_scale=None, intensity_offset=None,
           blur=None, noise_texture=None, resolution=None, device=None, as_tensors: bool = False) -> PhantomBatch:
    """Generate ``n`` colour fundus photographs with DR grades 0-4 and their findings.

    Args:
        n: number of images; the five grades are balanced.
        size: side of the square images in pixels (lesion sizes are set for 64 and scale with it).
        seed: seed of the only random generator used.
        lesion_contrast: difficulty: scale of every finding's contrast (1: the drawn ranges).
        lesion_size: difficulty: scale of every finding's size.
        variation: scale of the photographic variation (illumination, colour balance, vignetting,
            bias field, deformation, blur, position); 0 gives every image the same camera.
        noise: noise std (display units) at ``variation=1``; each image draws 0.5 to 1.5 times it.
        domain, intensity_scale, intensity_offset, blur, noise_texture, resolution:
            camera knobs (see :class:`~medlab.data.phantoms.Domain`), applied to each colour channel.
        device: where the pixels are rendered: ``None`` or ``"cpu"`` (default), ``"cuda"``, ``"auto"`` (the
            GPU when there is one). The per-image parameters and labels are the same on every device; the
            pixel noise on a GPU comes from a generator on the GPU, so a GPU renders other (equally likely)
            noise than the CPU. Same seed and device, same images.
        as_tensors: return ``images``, ``masks`` and ``labels`` as torch tensors on ``device`` instead of
            NumPy arrays (for drawing training data on the device; ``attrs`` stay NumPy).

    Returns:
        :class:`PhantomBatch` with ``images`` float32 ``(n, 3, size, size)`` in [0, 1] (RGB),
        ``labels`` the grades, mask ``findings`` (values: :data:`FUNDUS_MASK_CLASSES`) and the
        ``attrs`` listed in the module docstring.
    """
    n, size = check_common(n, size)
    lesion_contrast = check_range("lesion_contrast", lesion_contrast, 0.0, 3.0)
    lesion_size = check_range("lesion_size", lesion_size, 0.3, 3.0)
    variation = check_range("variation", variation, 0.0, 2.0)
    noise = check_range("noise", noise, 0.0, 0.5)
    dom = domain_args(domain, intensity_scale, intensity_offset, blur, noise_texture, resolution)

    rng = np.random.default_rng(seed)
    grades = balanced_labels(n, 5, rng)
    p = _draw_findings(rng, grades)
    p.update(_draw_anatomy(rng, n, variation, noise))
    p["lesion_contrast"] = np.full(n, lesion_contrast, np.float32)
    p["lesion_size"] = np.full(n, lesion_size, np.float32)

    dev = phantom_device(device)
    canvas, noise_source = Canvas(size, dev), PixelNoise(rng, seed, dev)
    peaks, evidence = _visibility(p, size)
    # on the CPU, the chunks of the NumPy renderer (each draws its pixel noise in turn from the stream)
    step = chunk_images(size, dev, cpu_pixels=2 ** 16)
    with torch.no_grad():
        images = torch.empty((n, 3, size, size), device=dev)
        masks = torch.empty((n, size, size), dtype=torch.int64, device=dev)

        def render(s, e, draws):
            _render({k: v[s:e] for k, v in p.items()}, size, draws, canvas, dom, (images[s:e], masks[s:e]))

        render_chunks(n, step, dev, lambda s, e: _draw_pixels(noise_source, p["warp"][s:e], size), render)
        finding_px = to_numpy((masks >= 3).sum(dim=(1, 2)))

    counts = {k: p[k].sum(axis=1).astype(np.int64) for k in ("ma_on", "haem_on", "exud_on")}
    labels = dr_grade(counts["ma_on"], counts["haem_on"], counts["exud_on"], p["quadrants"], p["nv"])
    if not np.array_equal(labels, grades):  # pragma: no cover - the drawing below guarantees it
        raise AssertionError("fundus phantom: drawn findings do not match their grade")
    px = 2.0 / size
    radius_px = p["haem_r"] * _PX * lesion_size / px
    attrs = {
        "n_microaneurysms": counts["ma_on"], "n_haemorrhages": counts["haem_on"], "n_exudates": counts["exud_on"],
        "haemorrhage_quadrants": p["quadrants"].astype(np.int64), "neovascularisation": p["nv"].astype(np.int64),
        "preretinal_haemorrhage": p["prh"].astype(np.int64),
        "referable": (grades >= REFERABLE_GRADE).astype(np.int64),
        "referable_signal": np.where(grades >= REFERABLE_GRADE, peaks, 0.0).astype(np.float32),
        "referable_evidence": np.where(grades >= REFERABLE_GRADE, evidence, 0.0).astype(np.float32),
        "largest_haemorrhage": np.where(p["haem_on"], radius_px, 0.0).max(axis=1).astype(np.float32),
        "haemorrhage_contrast": _mean_on(p["haem_c"] * lesion_contrast, p["haem_on"]),
        "microaneurysm_contrast": _mean_on(p["ma_c"] * lesion_contrast, p["ma_on"]),
        "eye": p["eye"].astype(np.int64), "disc_x": p["disc_x"].astype(np.float32),
        "illumination": p["gain"].astype(np.float32), "vignetting": p["vignette"].astype(np.float32),
        "blur": p["blur"].astype(np.float32), "noise": p["noise"].astype(np.float32),
        "lesion_area": (finding_px / float(size * size)).astype(np.float32),
        "severity": grades.copy(), "domain": np.full(n, dom.id, np.int64),
    }
    if as_tensors:
        grades = torch.as_tensor(grades, device=dev)
    else:
        images, masks = to_numpy(images), to_numpy(masks)
    params = dict(n=n, size=size, seed=seed, lesion_contrast=lesion_contrast, lesion_size=lesion_size,
                  variation=variation, noise=noise, domain=dom)
    return PhantomBatch(images=images, masks={"findings": masks}, labels=grades, attrs=attrs,
                        class_names=list(FUNDUS_CLASSES), mask_classes={"findings": list(FUNDUS_MASK_CLASSES)},
                        default_mask="findings", kind="fundus", units="a.u.", params=params)


def _mean_on(values, on):
    total = np.where(on, values, 0.0).sum(axis=1)
    return (total / np.maximum(on.sum(axis=1), 1)).astype(np.float32)


def _draw_findings(rng, grades) -> dict:
    """Counts, positions (around the fovea, normalised units), sizes (64-px pixels) and contrasts of the findings."""
    n = len(grades)
    g = grades
    # counts by grade: 0 none; 1 MAs only; 2 some haemorrhages and/or exudates; 3 many haemorrhages in every
    # quadrant; 4 neovascularisation with any of the others
    n_ma = np.select([g == 0, g == 1], [0, rng.integers(1, 7, n)], rng.integers(0, 13, n))
    n_haem = np.select([g <= 1, g == 2, g == 3], [0, rng.integers(0, 7, n), rng.integers(SEVERE_HAEMORRHAGES,
                                                                                         _MAX_HAEM + 1, n)],
                       rng.integers(0, 16, n))
    has_exud = (g >= 2) & (rng.uniform(size=n) < 0.55)
    n_exud = np.where(has_exud, rng.integers(1, _MAX_EXUD + 1, n), 0)
    n_exud = np.where((g == 2) & (n_haem == 0) & (n_exud == 0), rng.integers(1, 9, n), n_exud)  # grade 2 needs one
    ma_on = np.arange(_MAX_MA)[None] < n_ma[:, None]
    haem_on = np.arange(_MAX_HAEM)[None] < n_haem[:, None]
    exud_on = np.arange(_MAX_EXUD)[None] < n_exud[:, None]

    # haemorrhages: severe cases put at least two in every quadrant; others anywhere, but fewer than the severe count
    quad = rng.integers(0, 4, (n, _MAX_HAEM))
    quad[g == 3, :8] = np.tile(np.arange(4), 2)
    haem_t = (quad + rng.uniform(0.05, 0.95, (n, _MAX_HAEM))) * (np.pi / 2)
    haem_rad = np.sqrt(rng.uniform(0.02, 0.7, (n, _MAX_HAEM)))
    quadrants = np.array([np.unique(q[on]).size for q, on in zip(quad, haem_on)], np.int64)
    # grade 4 with many haemorrhages spread over the quadrants would also be "severe": fine, NV decides (grade 4)
    p = {
        "ma_on": ma_on, "haem_on": haem_on, "exud_on": exud_on, "quadrants": quadrants,
        "ma_t": rng.uniform(0, 2 * np.pi, (n, _MAX_MA)), "ma_rad": np.sqrt(rng.uniform(0.01, 0.6, (n, _MAX_MA))),
        "ma_r": np.exp(rng.uniform(np.log(0.3), np.log(0.9), (n, _MAX_MA))),  # radius, 64-px pixels
        "ma_c": rng.uniform(0.45, 1.0, (n, _MAX_MA)),
        "haem_t": haem_t, "haem_rad": haem_rad,
        "haem_r": np.exp(rng.uniform(np.log(0.6), np.log(5.0), (n, _MAX_HAEM))),
        "haem_aspect": rng.uniform(0.6, 1.6, (n, _MAX_HAEM)),
        "haem_c": np.exp(rng.uniform(np.log(0.12), np.log(1.5), (n, _MAX_HAEM))),  # above 0.95: saturated
        # exudates in one or two clusters around a point near the macula
        "exud_cy": rng.uniform(-0.35, 0.35, (n, 1)) + rng.normal(0, 0.04, (n, _MAX_EXUD)),
        "exud_cx": rng.uniform(-0.35, 0.35, (n, 1)) + rng.normal(0, 0.04, (n, _MAX_EXUD)),
        "exud_r": np.exp(rng.uniform(np.log(0.5), np.log(2.2), (n, _MAX_EXUD))),
        "exud_c": np.exp(rng.uniform(np.log(0.1), np.log(1.4), (n, _MAX_EXUD))),
        "nv": (g == 4), "nv_at_disc": rng.uniform(size=n) < 0.5,
        "nv_c": np.exp(rng.uniform(np.log(0.4), np.log(1.4), n)),
        "nv_angle": rng.uniform(0, 2 * np.pi, (n, _NV_SEGMENTS)), "nv_turn": rng.normal(0, 0.9, (n, _NV_SEGMENTS, _NV_POINTS)),
        "nv_where": rng.uniform(0.25, 0.6, n), "nv_side": rng.choice([-1.0, 1.0], n),
        "prh": (g == 4) & (rng.uniform(size=n) < 0.35),
        "prh_r": rng.uniform(3.0, 7.0, n), "prh_c": rng.uniform(0.5, 1.0, n),
        "prh_t": rng.uniform(0, 2 * np.pi, n), "prh_rad": rng.uniform(0.3, 0.6, n),
    }
    p["nv"] = p["nv"].astype(np.float32)
    return p


def _draw_anatomy(rng, n, v, noise) -> dict:
    """Eye, disc, field of view, vessel tree, pigmentation and camera, each drawn per image (scaled by ``v``)."""
    eye = rng.integers(0, 2, n)  # 0 right eye (disc on the image's right), 1 left
    side = np.where(eye == 0, 1.0, -1.0)
    fovea_y, fovea_x = rng.normal(0, 0.04 * v, n), rng.normal(0, 0.04 * v, n)
    disc_x = fovea_x + side * rng.uniform(0.42, 0.52, n)
    disc_y = fovea_y + rng.normal(-0.03, 0.04, n)
    # vessel arcades: superior/inferior temporal (long, around the macula) and nasal (short), from the disc
    sup = np.array([-1.0, 1.0, -1.0, 1.0])  # up (-y) or down
    temporal = np.array([1.0, 1.0, 0.0, 0.0])
    start = np.where(temporal > 0, 0.35, 0.55) * np.pi / 2  # angle from the vertical towards the x direction
    end = np.where(temporal > 0, 1.25, 0.9) * np.pi / 2
    direction = np.where(temporal > 0, -1.0, 1.0)[None] * side[:, None]  # temporal: towards the fovea
    length = np.where(temporal > 0, rng.uniform(1.3, 1.7, (n, 4)), rng.uniform(0.7, 1.0, (n, 4)))
    return {
        "eye": eye, "side": side, "fovea_y": fovea_y, "fovea_x": fovea_x, "disc_x": disc_x, "disc_y": disc_y,
        "disc_r": rng.uniform(0.10, 0.13, n), "disc_aspect": rng.uniform(0.85, 1.1, n),
        "disc_pale": rng.uniform(0.5, 0.9, n),
        "fov_y": rng.normal(0, 0.03 * v, n), "fov_x": rng.normal(0, 0.03 * v, n),
        "fov_r": 0.96 - rng.uniform(0, 0.08 * v, n),
        "arc_sup": np.broadcast_to(sup, (n, 4)).copy(), "arc_dir": direction,
        "arc_start": start[None] + rng.normal(0, 0.12, (n, 4)), "arc_end": end[None] + rng.normal(0, 0.15, (n, 4)),
        "arc_len": length, "arc_wiggle": rng.normal(0, 0.05, (n, 4, _ARCADE_POINTS)),
        "arc_width": np.array([1.1, 1.1, 0.8, 0.8])[None] * rng.uniform(0.8, 1.2, (n, 4)),
        "arc_dark": np.array([1.0, 0.8, 1.0, 0.8])[None] * rng.uniform(0.7, 1.0, (n, 4)),
        "br_parent": rng.integers(0, 4, (n, _BRANCHES)), "br_at": rng.integers(8, _ARCADE_POINTS - 8, (n, _BRANCHES)),
        "br_turn": rng.choice([-1.0, 1.0], (n, _BRANCHES)) * rng.uniform(0.5, 1.1, (n, _BRANCHES)),
        "br_len": rng.uniform(0.25, 0.6, (n, _BRANCHES)), "br_wiggle": rng.normal(0, 0.08, (n, _BRANCHES, _BRANCH_POINTS)),
        "vessel_contrast": rng.uniform(0.45, 0.7, n),
        # pigmentation and camera
        "base": np.stack([rng.uniform(0.72, 0.88, n), rng.uniform(0.30, 0.42, n), rng.uniform(0.12, 0.22, n)], 1),
        "colour": np.exp(rng.normal(0, 0.07 * v, (n, 3))), "gain": np.exp(rng.normal(0, 0.2 * v, n)),
        "gamma": np.exp(rng.normal(0, 0.15 * v, n)), "vignette": rng.uniform(0, 0.6 * v, n),
        "bias": rng.uniform(0, 0.25 * v, n), "macula_dark": rng.uniform(0.15, 0.35, n),
        "texture": rng.uniform(0.02, 0.06, n), "warp": rng.uniform(0, 1.5 * v, n),
        "blur": rng.uniform(0, 0.8 * v, n), "noise": noise * rng.uniform(0.5, 1.5, n) * (v if v < 1 else 1.0),
    }


def _walk(y0, x0, angle, step, wiggle):
    """Random-walk curves: start ``(m, k)``, heading ``angle`` ``(m, k, P)`` (radians from +x), step ``(m, k)``."""
    theta = angle + np.cumsum(wiggle, axis=-1)
    dy, dx = np.sin(theta) * step[..., None], np.cos(theta) * step[..., None]
    return y0[..., None] + np.cumsum(dy, axis=-1) - dy, x0[..., None] + np.cumsum(dx, axis=-1) - dx


def _splat(y, x, yc, xc, sy, sx, *amps) -> list:
    """Sums of axis-aligned Gaussians ``amp * exp(-((y-yc)/sy)^2/2 - ((x-xc)/sx)^2/2)`` over the last axis of the
    centres ``(m, L)`` (NumPy), on the pixel-centre coordinates ``y``, ``x`` (1-D tensors), one float32 ``(m, H, W)``
    image per set of amplitudes in ``amps``: one batched matrix product ``(m, k H, L) @ (m, L, W)``."""
    dev = y.device
    shape = np.shape(yc)

    def tensor(a):  # (m, L, 1) float32 on the device
        return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(a, shape), np.float32)).to(dev)[..., None]

    def axis(grid_1d, centre, sigma):
        return _exp_neg(-0.5 * ((grid_1d - tensor(centre)) / tensor(sigma)) ** 2)

    gy = axis(y, yc, sy)
    gy = torch.cat([gy * tensor(a) for a in amps], 2)
    out = torch.bmm(gy.transpose(1, 2), axis(x, xc, sx))
    return list(out.view(len(out), len(amps), len(y), len(x)).unbind(1))


def _exp_neg(a: torch.Tensor) -> torch.Tensor:
    """``exp(a)`` of arguments ``a <= 0``, those below -30 taken as -30 (in place on ``a``): the result changes by
    less than 1e-13, and torch's ``exp`` on a CPU is about fifty times slower for arguments below -88."""
    return a.clamp_(min=-30.0).exp_()


def _kernels(sigmas, radius: int) -> np.ndarray:
    """``(len(sigmas), 2 radius + 1)`` normalised float32 Gaussian kernels reaching ``radius`` pixels, whatever
    their sigma (pixels; floored at 0.001)."""
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t[None] / np.maximum(sigmas, 1e-3)[:, None]) ** 2).astype(np.float32)
    return k / k.sum(axis=1, keepdims=True)


def _blur_radius(sigmas) -> int:
    """The reach in pixels of :func:`_blur_per_image`'s kernels for these sigmas: 0 (no blur) below 0.05."""
    top = float(np.max(sigmas)) if np.size(sigmas) else 0.0
    return 0 if top < 0.05 else int(np.ceil(3 * max(top, 1e-3)))


def _blur_kernels(x: torch.Tensor, kernels: np.ndarray) -> torch.Tensor:
    """Separable blur of a stack ``(B, H, W)`` with one kernel per image (``(B, 2 r + 1)``, rows then columns,
    edges replicated): weighted sums of shifted copies."""
    b, h, w = x.shape
    r = (kernels.shape[1] - 1) // 2
    k = torch.from_numpy(np.ascontiguousarray(kernels, np.float32)).to(x.device)[:, :, None, None]
    t = F.pad(x.reshape(1, b, h, w), (r, r, r, r), mode="replicate")[0]
    rows = t[:, 0:h] * k[:, 0]
    for i in range(1, 2 * r + 1):
        rows.addcmul_(t[:, i:i + h], k[:, i])
    out = rows[:, :, 0:w] * k[:, 0]
    for i in range(1, 2 * r + 1):
        out.addcmul_(rows[:, :, i:i + w], k[:, i])
    return out


def _blur_per_image(img: torch.Tensor, sigmas) -> torch.Tensor:
    """Gaussian blur of each image ``(m, c, H, W)`` with its own sigma (pixels), every channel alike: kernels
    reaching ``ceil(3 max(sigmas))`` pixels; no blur when every sigma is below 0.05."""
    m, c, h, w = img.shape
    radius = _blur_radius(sigmas)
    if radius == 0:
        return img
    kernels = np.repeat(_kernels(np.asarray(sigmas, np.float64), radius), c, axis=0)
    return _blur_kernels(img.reshape(m * c, h, w), kernels).reshape(m, c, h, w)


def _lines(groups, size: int, device) -> list:
    """Chains of points drawn as lines: one float32 ``(m, size, size)`` image per group of parts (their sum).

    Each part is ``(py, px, weight, sigma_px)``: points ``(m, L)`` (normalised coordinates) with weights,
    splatted bilinearly into ``(m, size, size)``, blurred by ``sigma_px`` per image (floored at 0.3 pixels;
    the kernels of a part reach ``ceil(3 max(sigma))`` pixels, edges replicated) and multiplied by it: a chain
    of points ``w`` pixels apart with weight ``w * sqrt(2 pi)`` becomes a line whose cross-section peaks near
    ``sigma / sqrt(sigma^2 + 1/4)`` (thin lines are fainter). All parts are splatted together (a scatter-add in
    float64 on the device).
    """
    m = len(groups[0][0][0])
    parts = [part for group in groups for part in group]
    sigmas = [np.maximum(np.broadcast_to(np.asarray(part[3], np.float64), (m,)), 0.3) for part in parts]
    kernels = [_kernels(sigma, _blur_radius(sigma)) for sigma in sigmas]
    # the points of every part, float64 on the device: (m, points), and the image each point is drawn into
    py, px_, weight = (torch.from_numpy(np.concatenate([np.broadcast_to(part[i], part[0].shape) for part in parts],
                                                       1).astype(np.float64)).to(device) for i in range(3))
    owner = np.repeat(np.arange(len(parts)), [part[0].shape[1] for part in parts])
    image = torch.from_numpy((owner[None] * m + np.arange(m)[:, None]) * (size * size)).to(device)
    fy, fx = (py + 1.0) * (size / 2.0) - 0.5, (px_ + 1.0) * (size / 2.0) - 0.5
    y0, x0 = torch.floor(fy), torch.floor(fx)
    wy, wx = fy - y0, fx - x0
    y0, x0 = y0.long(), x0.long()
    total = torch.zeros(len(parts) * m * size * size, dtype=torch.float64, device=device)
    for dy, dx, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)  # points off the image add nothing
        at, add = torch.where(ok, image + yy * size + xx, 0).view(-1), torch.where(ok, weight * w, 0.0).view(-1)
        if total.device.type == "cpu":  # in order: the same sums every time
            total.index_add_(0, at, add)
        else:  # index_add_ adds atomically (in any order) on a GPU; the sorted accumulation is reproducible
            total.index_put_((at,), add, accumulate=True)
    total = total.view(len(parts), m, size, size).float()
    # blurred, the line's cross-section integrates to weight / spacing = sqrt(2 pi): its peak is 1 / sigma_total,
    # and times sigma it becomes sigma / sigma_total (1 for wide lines)
    dens = [_blur_kernels(total[k], kernels[k]).mul_(col(sigmas[k], device)) for k in range(len(parts))]
    out, k = [], 0
    for group in groups:
        out.append(functools.reduce(torch.add, dens[k:k + len(group)]))
        k += len(group)
    return out


def _blob(r, aspect, contrast, px):
    """Anti-aliased blobs of radius ``r`` (normalised) and ``contrast``, blurred by half a pixel: the sigmas
    ``(sy, sx)`` of their Gaussians and their peak (the contrast, reduced for blobs of a pixel or less)."""
    ry, rx = r * np.sqrt(aspect), r / np.sqrt(aspect)
    half = 0.5 * px
    sy, sx = np.sqrt(ry ** 2 + half ** 2), np.sqrt(rx ** 2 + half ** 2)
    return sy, sx, contrast * (ry * rx) / (sy * sx)


def _integral_px(peak, r, aspect, px):
    """The integral of anti-aliased blobs (peak contrast times area, in pixels^2 at this size), per blob."""
    ry, rx = r * np.sqrt(aspect), r / np.sqrt(aspect)
    sy, sx = np.sqrt(ry ** 2 + (0.5 * px) ** 2), np.sqrt(rx ** 2 + (0.5 * px) ** 2)
    return np.minimum(peak, 0.95) * 2 * np.pi * sy * sx / px ** 2


def _lesions(p, size) -> dict:
    """Centres, sigmas and peak contrasts of the blobs (microaneurysms, haemorrhages, exudates, pre-retinal
    haemorrhage), per image (NumPy)."""
    px = 2.0 / size
    scale_c, scale_r = p["lesion_contrast"][:, None], p["lesion_size"][:, None] * _PX
    fy, fx = p["fovea_y"][:, None], p["fovea_x"][:, None]
    out = {}
    ma_r = p["ma_r"] * scale_r
    sy, sx, peak = _blob(ma_r, np.ones_like(ma_r), p["ma_c"] * scale_c * p["ma_on"], px)
    out["ma"] = (fy + 0.85 * p["ma_rad"] * np.sin(p["ma_t"]), fx + 0.85 * p["ma_rad"] * np.cos(p["ma_t"]), sy, sx,
                 peak, p["ma_on"] * 1.0)
    hr = p["haem_r"] * scale_r
    sy, sx, peak = _blob(hr, p["haem_aspect"], p["haem_c"] * scale_c * p["haem_on"], px)
    out["haem"] = (fy - 0.8 * p["haem_rad"] * np.cos(p["haem_t"]),  # quadrant q spans angles q*90..(q+1)*90 degrees
                   fx + 0.8 * p["haem_rad"] * np.sin(p["haem_t"]), sy, sx, peak, p["haem_on"] * 1.0)
    er = p["exud_r"] * scale_r
    sy, sx, peak = _blob(er, np.ones_like(er), p["exud_c"] * scale_c * p["exud_on"], px)
    out["exud"] = (fy + p["exud_cy"], fx + p["exud_cx"], sy, sx, peak, p["exud_on"] * 1.0)
    prh_r = (p["prh_r"] * scale_r[:, 0])[:, None]
    sy, sx, peak = _blob(prh_r, np.full_like(prh_r, 0.7), (p["prh"] * p["prh_c"] * p["lesion_contrast"])[:, None], px)
    out["prh"] = ((fy[:, 0] + p["prh_rad"] * np.sin(p["prh_t"]))[:, None],
                  (fx[:, 0] + p["prh_rad"] * np.cos(p["prh_t"]))[:, None], sy, sx, peak, p["prh"][:, None] * 1.0)
    return out


def _visibility(p, size):
    """Per image: the peak contrast of the most visible referable finding, and the referable evidence (contrast
    times area in pixels^2, summed over the findings), both float32 (NumPy)."""
    px = 2.0 / size
    scale_r = p["lesion_size"][:, None] * _PX
    les = _lesions(p, size)
    haem_peak, exud_peak = les["haem"][4], les["exud"][4]
    hr, er = p["haem_r"] * scale_r, p["exud_r"] * scale_r
    prh_r = (p["prh_r"] * scale_r[:, 0])[:, None]
    # what a reader could see of the referable findings: the highest peak contrast of any of them
    nv_peak = p["nv"] * p["nv_c"] * p["lesion_contrast"] * np.minimum(1.0, (0.5 * _PX * p["lesion_size"] / (0.5 * px)))
    peaks = np.maximum.reduce([np.where(p["haem_on"], haem_peak, 0).max(1), np.where(p["exud_on"], exud_peak, 0).max(1),
                               nv_peak, p["prh"] * p["prh_c"] * p["lesion_contrast"]])
    peaks = np.minimum(peaks, 0.95).astype(np.float32)  # the rendering saturates there
    # how much referable signal the eye holds in all: contrast times area (pixels^2), summed over the findings
    nv_len = _NV_SEGMENTS * _NV_POINTS * 0.7 * _PX / px
    evidence = ((np.where(p["haem_on"], _integral_px(haem_peak, hr, p["haem_aspect"], px), 0).sum(1)
                 + np.where(p["exud_on"], _integral_px(exud_peak, er, 1.0, px), 0).sum(1)
                 + nv_peak * nv_len * np.sqrt(2 * np.pi) * np.maximum(0.5 * _PX * p["lesion_size"] / px, 0.3)
                 + p["prh"] * _integral_px(p["prh_c"] * p["lesion_contrast"], prh_r[:, 0], 0.7, px))).astype(np.float32)
    return peaks, evidence


def _draw_pixels(noise, warp, size) -> dict:
    """The random numbers of one chunk's pixels, in the order the renderer has always drawn them."""
    m = len(warp)
    draws = {"texture": field_cells(noise, m, max(6, size // 6)), "bias": field_cells(noise, m, 3)}
    if np.any(warp > 0):
        draws["warp"] = (field_cells(noise, m, 4), field_cells(noise, m, 4))  # dy, dx
    if noise.gen is None:  # the NumPy stream holds a set of normal numbers that no pixel uses: pass over them
        noise.standard_normal((m * 3, size, size))
    draws["z"] = noise.standard_normal((m * 3, size, size)).to(noise.device)
    return draws


def _vessel_lines(p, size):
    """The vessel tree (and neovascularisation) as random-walk point chains: :func:`_lines` groups (NumPy)."""
    m = len(p["eye"])
    px = 2.0 / size
    step = p["arc_len"] / _ARCADE_POINTS
    t = np.linspace(0, 1, _ARCADE_POINTS)[None, None]
    from_vertical = p["arc_start"][..., None] + (p["arc_end"] - p["arc_start"])[..., None] * t
    heading = np.arctan2(p["arc_sup"][..., None] * np.cos(from_vertical), p["arc_dir"][..., None] * np.sin(from_vertical))
    wiggle = np.diff(heading, axis=-1, prepend=heading[..., :1]) + p["arc_wiggle"]
    wiggle[..., 0] += heading[..., 0]
    ay, ax = _walk(np.repeat(p["disc_y"][:, None], 4, 1), np.repeat(p["disc_x"][:, None], 4, 1),
                   np.zeros((m, 4, 1)), step, wiggle)
    aw = p["arc_width"][..., None] * (1.0 - 0.55 * t) * _PX
    idx = np.arange(m)[:, None]
    by0, bx0 = ay[idx, p["br_parent"], p["br_at"]], ax[idx, p["br_parent"], p["br_at"]]
    parent_heading = heading[idx, p["br_parent"], p["br_at"]]
    bw = p["br_wiggle"].copy()
    bw[..., 0] += parent_heading + p["br_turn"]
    by, bx = _walk(by0, bx0, np.zeros((m, _BRANCHES, 1)), p["br_len"] / _BRANCH_POINTS, bw)
    bwid = (0.55 * aw[idx, p["br_parent"], p["br_at"]])[..., None] * (1.0 - 0.4 * np.linspace(0, 1, _BRANCH_POINTS))
    # three width classes (first and second half of the arcades, branches), each rasterised and blurred by
    # its own per-image width: a line whose cross-section peaks at the vessel's darkness
    half = _ARCADE_POINTS // 2
    vessels = []
    for py_, px_, width, dark, spacing in (
            (ay[..., :half], ax[..., :half], aw[..., :half], p["arc_dark"][..., None], step),
            (ay[..., half:], ax[..., half:], aw[..., half:], p["arc_dark"][..., None], step),
            (by, bx, bwid, p["arc_dark"][idx, p["br_parent"]][..., None], p["br_len"] / _BRANCH_POINTS)):
        sigma = width.reshape(m, -1).mean(axis=1) / px  # pixels
        weight = np.broadcast_to(dark * (spacing / px)[..., None], py_.shape) * np.sqrt(2 * np.pi)
        vessels.append((py_.reshape(m, -1), px_.reshape(m, -1), weight.reshape(m, -1), sigma))
    groups = [vessels]
    if p["nv"].any():  # neovascularisation: short tangled fine vessels at the disc or along an arcade
        at = np.clip((p["nv_where"] * _ARCADE_POINTS).astype(int), 0, _ARCADE_POINTS - 1)
        which = np.where(p["nv_side"] > 0, 0, 1)
        cy = np.where(p["nv_at_disc"], p["disc_y"], ay[np.arange(m), which, at])
        cx = np.where(p["nv_at_disc"], p["disc_x"], ax[np.arange(m), which, at])
        turn = p["nv_turn"].copy()
        turn[..., 0] += p["nv_angle"]
        ny, nx = _walk(np.repeat(cy[:, None], _NV_SEGMENTS, 1), np.repeat(cx[:, None], _NV_SEGMENTS, 1),
                       np.zeros((m, _NV_SEGMENTS, 1)), np.full((m, _NV_SEGMENTS), 0.7 * _PX), turn)
        nw = 0.5 * _PX * p["lesion_size"] / px  # pixels
        weight = (p["nv"] * p["nv_c"] * p["lesion_contrast"] * 0.7 * _PX / px * np.sqrt(2 * np.pi))[:, None]
        weight = np.repeat(weight, _NV_SEGMENTS * _NV_POINTS, 1)
        groups.append([(ny.reshape(m, -1), nx.reshape(m, -1), weight, nw)])
    return groups


def _render(p, size, draws, canvas, dom, out) -> None:
    """Render one chunk on ``canvas.device`` into ``out = (images (m, 3, H, W), masks (m, H, W))``; ``draws``
    from :func:`_draw_pixels`."""
    dev = canvas.device
    m = len(p["eye"])
    y, x = canvas.y0, canvas.x0
    px = 2.0 / size
    c = lambda a: col(a, dev)  # noqa: E731

    # --- vessel tree: arcades and branches, drawn as chains of Gaussians; density -> opacity
    lines = _lines(_vessel_lines(p, size), size, dev)
    vessels = 1.0 - torch.exp(-1.6 * lines[0])
    nv = 1.0 - torch.exp(-1.6 * lines[1]) if len(lines) > 1 else torch.zeros_like(vessels)

    # --- lesions (positions around the fovea), and their footprints (every present lesion at unit height)
    les = _lesions(p, size)
    yv, xv = y.reshape(-1), x.reshape(-1)
    blob, foot = {}, {}  # each kind's lesions at their peak contrast, and at unit height
    for kind, (yc, xc, sy, sx, peak, on) in les.items():
        blob[kind], foot[kind] = _splat(yv, xv, yc, xc, sy, sx, peak, on)
    footprints = [(6, nv / torch.clamp_min(nv.amax(dim=(1, 2), keepdim=True), 1e-6) * (nv > 0.01)),
                  (5, foot["exud"]), (4, foot["haem"] + foot["prh"]), (3, foot["ma"])]
    red = torch.clamp(blob["ma"] + blob["haem"] + blob["prh"], 0.0, 0.95)
    exud = torch.clamp(blob["exud"], 0.0, 0.9)

    # --- fundus, macula, disc
    ry, rx = y - c(p["fov_y"]), x - c(p["fov_x"])
    r2 = ry ** 2 + rx ** 2
    texture = smooth_field(draws["texture"], size)
    bias = smooth_field(draws["bias"], size)
    fov = torch.clamp((c(p["fov_r"]) - torch.sqrt(r2)) / px + 0.5, 0.0, 1.0)
    d2 = (y - c(p["fovea_y"])) ** 2 + (x - c(p["fovea_x"])) ** 2
    macula = _exp_neg(-d2 / (2 * 0.14 ** 2))
    fovea = _exp_neg(-d2 / (2 * (1.2 * px) ** 2))
    dr2 = ((y - c(p["disc_y"])) / c(p["disc_r"] * p["disc_aspect"])) ** 2 + ((x - c(p["disc_x"])) / c(p["disc_r"])) ** 2
    disc = torch.clamp((1.0 - torch.sqrt(dr2)) * c(p["disc_r"]) / px + 0.5, 0.0, 1.0)
    cup = _exp_neg(-dr2 / (2 * 0.35 ** 2))
    shade = (1.0 + c(p["texture"]) * texture) * (1.0 - c(p["macula_dark"]) * macula + 0.15 * fovea)
    shade *= (1.0 + c(p["bias"]) * bias) * (1.0 - c(p["vignette"]) * r2)

    rgb = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=dev).view(-1, 3, 1, 1)  # noqa: E731
    tint = rgb((0.45, 0.75, 0.6))  # darkening of R, G, B by vessels and red lesions
    img = rgb(p["base"]) * shade[:, None]
    disc_, vc = disc[:, None], c(p["vessel_contrast"])[:, None]
    # img += disc (pale (disc colour - img) + 0.12 cup)
    img.add_((rgb((1.0, 0.86, 0.62)) - img).mul_(c(p["disc_pale"])[:, None]).add_(0.12 * cup[:, None]).mul_(disc_))
    # img *= 1 - tint (vessel contrast · vessels · (1 - 0.7 disc) + nv), then 1 - tint · red
    img.mul_((tint * (vc * vessels[:, None] * (1.0 - 0.7 * disc_) + nv[:, None])).neg_().add_(1.0))
    img.mul_((tint * red[:, None]).neg_().add_(1.0))
    img.add_((rgb((0.98, 0.9, 0.35)) - img).mul_(exud[:, None]))  # img += exudates (exudate colour - img)
    img.mul_(rgb(p["colour"] * p["gain"][:, None]))

    # label map, painted in order of priority
    mask = (vessels > 0.3).to(torch.int64)
    mask.masked_fill_(disc > 0.5, 2)
    for value, layer in footprints:
        mask.masked_fill_((layer > 0.45) & (mask < 3), value)
    # smooth deformation of image and mask
    if "warp" in draws:
        img, mask = _deform(img, mask, draws["warp"], p["warp"] * px, canvas)
    img *= fov[:, None]
    mask.masked_fill_(fov < 0.5, 0)
    # camera: blur (per image), gamma, domain, noise
    img = _blur_per_image(img, p["blur"])
    img = img.clamp_(0.0, 1.0).log_().mul_(c(p["gamma"])[:, None]).exp_()  # img ** gamma (4 times faster than pow)
    flat = apply_domain(img.reshape(m * 3, size, size), draws["z"], dom, 0.0)  # the camera's resolution, blur, gain
    z = draws["z"]
    if dom.noise_texture == "correlated":
        z = _blur_kernels(z, _kernels(np.ones(m * 3), 3))
        z /= z.std(correction=0) + 1e-6
    elif dom.noise_texture == "speckle":
        z = z * (torch.clamp_min(flat, 0.0) / 0.5)
    flat = flat + z * c(np.repeat(p["noise"], 3) * dom.noise_gain)  # each image its own noise level
    torch.mul(flat.view(m, 3, size, size), fov[:, None], out=out[0]).clamp_(0.0, 1.0)
    out[1].copy_(mask)


def _deform(img, mask, fields, amplitude, canvas):
    """A smooth random displacement (about ``amplitude`` normalised units, per image) of images ``(m, 3, H, W)``
    and label maps ``(m, H, W)``: ``fields`` the two :func:`field_cells` grids (y, then x)."""
    size, dev = canvas.size, canvas.device
    g = torch.empty((len(img), size, size, 2), device=dev)
    for k, (field, start) in enumerate(zip(fields[::-1], (canvas.x0, canvas.y0))):  # x, then y
        g[..., k] = smooth_field(field, size).mul_(col(amplitude, dev)).add_(start)
    out = F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=False)
    lab = F.grid_sample(mask[:, None].float(), g, mode="nearest", padding_mode="border", align_corners=False)
    return out, lab[:, 0].to(torch.int64)
