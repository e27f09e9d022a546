"""Ultrasound nodule phantoms (thyroid or breast): benign against malignant, with the nodule mask.

A linear-probe B-mode image (display intensity in ``[0, 1]``) of a thyroid
lobe or a breast with one nodule, for the segment-then-classify lesson (Ma et
al. 2017). The classes differ by the features of the ACR TI-RADS and BI-RADS
lexicons, drawn from overlapping distributions so that no single feature
decides:

benign
    oval, wider than tall, smooth margin, iso- to mildly hypoechoic, sometimes
    a thin hypoechoic halo, posterior enhancement, rarely a microcalcification.
malignant
    irregular, lobulated or spiculated margin, often taller than wide,
    markedly hypoechoic, punctate microcalcifications, often posterior shadowing.

``attrs["severity"]`` is a TI-RADS-like level (1 to 5) from the points the
nodule's drawn features score (echogenicity, shape, margin, echogenic foci).

The pixels are rendered in batches with torch, on the CPU or a GPU (``device``);
on the CPU they are the images of the earlier NumPy renderer up to float rounding.
"""
from __future__ import annotations

import numpy as np
import torch

from ...errors import ParameterError
from ._common import PhantomBatch, balanced_labels, check_common, check_range, domain_args
from ._torch import (Canvas, PixelNoise, apply_domain, blur, chunk_images, col, field_cells, gauss_, phantom_device,
                     ramp_, render_chunks, smooth_field, to_numpy)
from ._torch import speckle as speckle_tensor

__all__ = ["us_nodule", "NODULE_CLASSES", "tirads_level"]

NODULE_CLASSES = ["benign", "malignant"]
ORGANS = ("thyroid", "breast")
_MAX_CALC = 12


def tirads_level(points) -> np.ndarray:
    """ACR TI-RADS level (1 to 5) from points: 0 TR1, 1-2 TR2, 3 TR3, 4-6 TR4, 7+ TR5."""
    pts = np.asarray(points)
    return np.select([pts <= 0, pts <= 2, pts == 3, pts <= 6], [1, 2, 3, 4], 5).astype(np.int64)


def us_nodule(n: int, size: int = 64, seed: int = 0, *, organ: str = "thyroid",
              lesion_contrast: float = 1.0, lesion_size: float = 1.0, count: float = 1.0,
              noise: float = 0.04, speckle: float = 0.8, overlap: float = 0.35,
              domain="A", intensity_scale=None, intensity_offset=None, blur=None,
              noise_texture=None, resolution=None, device=None, as_tensors: bool = False) -> PhantomBatch:
    """Generate ``n`` ultrasound images of a nodule, benign or malignant, with its mask.

    Args:
        n: number of images; benign and malignant are balanced.
        size: side of the square images in pixels.
        seed: seed of the random generator (same seed, same images).
        organ: ``thyroid`` (strap muscles, carotid artery, homogeneous gland) or
            ``breast`` (subcutaneous fat, Cooper's ligaments, fibroglandular tissue).
        lesion_contrast: difficulty: scale of the nodule's echogenicity difference from the gland.
        lesion_size: difficulty: scale of the nodule's size (1: about a fifth of the width).
        count: difficulty: scale of the number of microcalcifications.
        noise: additive noise std (display units).
        speckle: speckle strength, 0 to 1.
        overlap: difficulty in ``[0, 1]``: how much the two classes' feature
            distributions overlap (0 textbook cases, 1 no difference in
            distribution except through the label noise of real life).
        domain, intensity_scale, intensity_offset, blur, noise_texture, resolution:
            scanner knobs (see :class:`Domain`).
        device: where the pixels are rendered: ``None`` or ``"cpu"`` (default), ``"cuda"``, ``"auto"`` (the
            GPU when there is one). The per-image parameters and labels are the same on every device; the
            pixel noise on a GPU comes from a generator on the GPU, so a GPU renders other (equally likely)
            noise than the CPU. Same seed and device, same images.
        as_tensors: return ``images``, ``masks`` and ``labels`` as torch tensors on ``device`` instead of
            NumPy arrays (for drawing training data on the device; ``attrs`` stay NumPy).

    Returns:
        :class:`PhantomBatch` with ``images`` ``(n, 1, size, size)`` in [0, 1];
        mask ``nodule`` (0/1, the default); attrs ``lesion_area`` (fraction of
        the image), ``aspect`` (width / height; below 1 is taller than wide),
        ``irregularity`` (margin roughness, 0 smooth), ``spiculated`` (0/1),
        ``halo`` (0/1, a thin hypoechoic rim), ``n_calcifications``, ``echogenicity`` (nodule / gland echo ratio),
        ``severity`` (TI-RADS-like level 1-5), ``domain``.
    """
    n, size = check_common(n, size)
    if organ not in ORGANS:
        raise ParameterError(f"organ must be one of {ORGANS}, not {organ!r}")
    lesion_contrast = check_range("lesion_contrast", lesion_contrast, 0.0, 3.0)
    lesion_size = check_range("lesion_size", lesion_size, 0.3, 2.5)
    count = check_range("count", count, 0.0, 3.0)
    noise = check_range("noise", noise, 0.0, 1.0)
    speckle = check_range("speckle", speckle, 0.0, 1.0)
    overlap = check_range("overlap", overlap, 0.0, 1.0)
    dom = domain_args(domain, intensity_scale, intensity_offset, blur, noise_texture, resolution)
    dev = phantom_device(device)

    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, 2, rng)
    mal = labels == 1
    # each feature: with probability `overlap` drawn from the other class's distribution
    def feature(benign_draw, malignant_draw):
        swap = rng.uniform(size=n) < overlap * 0.5
        as_mal = mal ^ swap
        return np.where(as_mal, malignant_draw, benign_draw), as_mal

    aspect, _ = feature(np.clip(rng.normal(1.55, 0.25, n), 1.05, 2.3), np.clip(rng.normal(0.85, 0.18, n), 0.55, 1.2))
    irregular, _ = feature(rng.uniform(0.0, 0.035, n), rng.uniform(0.06, 0.16, n))
    spic, _ = feature(np.zeros(n), (rng.uniform(size=n) < 0.5).astype(float) * rng.uniform(0.12, 0.3, n))
    # benign: hyperechoic or mildly hypoechoic (never quite isoechoic, so every nodule can be outlined)
    benign_echo = np.where(rng.uniform(size=n) < 0.5, rng.uniform(1.2, 1.5, n), rng.uniform(0.6, 0.85, n))
    echo, _ = feature(benign_echo, rng.uniform(0.3, 0.55, n))
    n_calc, _ = feature((rng.uniform(size=n) < 0.1) * rng.integers(1, 3, n),
                        (rng.uniform(size=n) < 0.75) * rng.integers(3, 10, n))
    n_calc = np.clip(np.round(n_calc * count), 0, _MAX_CALC).astype(np.int64)
    posterior, _ = feature(rng.uniform(1.05, 1.3, n), np.where(rng.uniform(size=n) < 0.5, rng.uniform(0.5, 0.8, n), 1.0))
    halo = (~mal) & (rng.uniform(size=n) < 0.4)
    p = {
        "aspect": aspect, "irregular": irregular, "spic": spic, "echo": echo, "n_calc": n_calc,
        "posterior": posterior, "halo": halo,
        "r0": rng.uniform(0.18, 0.3, n) * lesion_size,
        "cy": rng.uniform(0.45, 0.6, n), "cx": rng.uniform(-0.35, 0.35, n),
        "angle": rng.uniform(-0.25, 0.25, n),
        "harm_amp": rng.uniform(0.3, 1.0, (n, 6)), "harm_phase": rng.uniform(0, 2 * np.pi, (n, 6)),
        "spic_k": rng.integers(5, 11, n), "spic_phase": rng.uniform(0, 2 * np.pi, n),
        "calc_r": np.sqrt(rng.uniform(0, 0.7, (n, _MAX_CALC))), "calc_t": rng.uniform(0, 2 * np.pi, (n, _MAX_CALC)),
        "gain": rng.uniform(0.75, 1.25, n), "atten": rng.uniform(0.2, 0.8, n),
        "gland": rng.uniform(0.45, 0.6, n),
        "layer": rng.uniform(0.15, 0.3, n) if organ == "thyroid" else rng.uniform(0.25, 0.4, n),
        "carotid_x": np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0) * rng.uniform(0.7, 0.85, n),
    }
    canvas, noise_source = Canvas(size, dev), PixelNoise(rng, seed, dev)
    with torch.no_grad():
        chunks = render_chunks(
            n, chunk_images(size, dev), dev,
            lambda s, e: _draw_pixels(noise_source, e - s, size),
            lambda s, e, draws: _render({k: v[s:e] for k, v in p.items()}, canvas, draws, organ, lesion_contrast,
                                        speckle, noise, dom))
        if chunks:
            images, mask = (torch.cat(part) for part in zip(*chunks))
        else:
            images = torch.zeros((0, size, size), device=dev)
            mask = torch.zeros((0, size, size), dtype=torch.uint8, device=dev)
        nodule_px = to_numpy(mask.sum(dim=(1, 2)))
        images, mask = images[:, None], mask.to(torch.int64)
    if as_tensors:
        labels = torch.as_tensor(labels, device=dev)
    else:
        images, mask = to_numpy(images), to_numpy(mask)

    points = (np.where(echo < 0.5, 3, np.where(echo < 0.85, 2, 1))  # very hypo / hypo / iso-hyper
              + 3 * (aspect < 1.0)  # taller than wide
              + 2 * ((irregular > 0.05) | (spic > 0))  # irregular or lobulated margin
              + 3 * (n_calc > 0))  # punctate echogenic foci
    attrs = {
        "lesion_area": (nodule_px / float(size * size)).astype(np.float32),
        "aspect": aspect.astype(np.float32),
        "irregularity": (irregular + spic).astype(np.float32),
        "spiculated": (spic > 0).astype(np.int64),
        "halo": halo.astype(np.int64),
        "n_calcifications": n_calc,
        "echogenicity": echo.astype(np.float32),
        "severity": tirads_level(points),
        "domain": np.full(n, dom.id, np.int64),
    }
    params = dict(n=n, size=size, seed=seed, organ=organ, lesion_contrast=lesion_contrast, lesion_size=lesion_size,
                  count=count, noise=noise, speckle=speckle, overlap=overlap, domain=dom)
    return PhantomBatch(
        images=images, masks={"nodule": mask}, labels=labels, attrs=attrs,
        class_names=list(NODULE_CLASSES), mask_classes={"nodule": ["background", "nodule"]},
        default_mask="nodule", kind="us_nodule", units="a.u.", params=params)


def _draw_pixels(noise: PixelNoise, m: int, size: int) -> dict:
    """The random numbers of one chunk of ``m`` images, in the order the renderer has always drawn them: the
    background's texture, the nodule's inner texture, the speckle, the scanner noise."""
    return {"texture": field_cells(noise, m, max(6, size // 8)),
            "inner": field_cells(noise, m, max(8, size // 5)),
            "speckle": speckle_tensor(noise, (m, size, size), lateral_passes=2 if size >= 64 else 1),
            "z": noise.standard_normal((m, size, size)).to(noise.device)}


def _render(p, canvas: Canvas, draws, organ, lesion_contrast, speckle_level, sigma_noise, dom):
    """Render one chunk on ``canvas.device``: tensors ``(images (m, size, size), nodule mask uint8)``; ``draws``
    from :func:`_draw_pixels`."""
    dev, size = canvas.device, canvas.size
    m = len(p["aspect"])
    c = lambda v: col(v, dev)  # noqa: E731  per-image values as (m, 1, 1) float32
    x = canvas.x0
    d = (canvas.y0 + 1.0) / 2.0  # depth 0 (skin) .. 1
    edge = 2.0 / size

    # background layers: skin, subcutaneous layer / strap muscles, gland, deep tissue
    tex = smooth_field(draws["texture"], size)
    layer_end = c(p["layer"])
    skin = gauss_((d - 0.025).mul_(size).div_(1.5)) * 0.6
    if organ == "thyroid":
        sub = 0.22 + 0.03 * tex  # strap muscles: hypoechoic, striated
        sub = sub + 0.06 * (torch.sin(d * 90.0 + 0.4 * tex) > 0.6)
        gland = c(p["gland"]) + 0.04 * tex
        deep = 0.18
    else:
        sub = 0.2 + 0.05 * tex  # subcutaneous fat lobules
        # Cooper's ligaments: bright oblique curves
        sub = sub + 0.45 * (torch.sin((x * 3.0 + d * 6.0) * 2.0 + 1.5 * tex).abs() < 0.15)
        gland = c(p["gland"]) + 0.1 * tex
        deep = 0.25
    in_gland = ramp_(layer_end - d, edge) * ramp_(d - 0.85, 0.04)
    amp = sub * (1 - in_gland) + gland * in_gland
    amp = amp * ramp_(0.85 - d, 0.04) + deep * ramp_(d - 0.85, 0.04)
    amp = amp + skin
    if organ == "thyroid":
        # carotid artery at one side: anechoic, with posterior enhancement below it
        r2 = ((x - c(p["carotid_x"])) / 0.16) ** 2 + ((d - 0.45) / 0.14) ** 2
        amp = amp * (1 - 0.92 * ramp_(r2 - 1.0, 0.25))

    # nodule boundary in polar coordinates around its centre
    a = c(p["angle"])
    sx = c(p["r0"] * np.sqrt(p["aspect"]))  # half-width
    sy = c(p["r0"] / np.sqrt(p["aspect"]))  # half-height
    dx, dy = x - c(p["cx"]), (d - c(p["cy"])) * 2.0
    u = (torch.cos(a) * dx + torch.sin(a) * dy) / sx
    v = (-torch.sin(a) * dx + torch.cos(a) * dy) / sy
    rho = torch.sqrt(u * u + v * v)
    phi = torch.atan2(v, u)
    border = torch.ones_like(rho)
    irr = c(p["irregular"])
    for j, k in enumerate((2, 3, 4, 5, 7, 9)):
        border += irr * c(p["harm_amp"][:, j] / (1 + 0.3 * j)) * torch.cos(k * phi + c(p["harm_phase"][:, j]))
    if (p["spic"] > 0).any():
        wav = torch.cos(c(p["spic_k"]) * phi + c(p["spic_phase"]) + 0.6 * torch.sin(2 * phi))
        border += c(p["spic"]) * torch.clip(wav, 0, 1) ** 6
    # edge width in rho units: about one pixel
    e_rho = edge / torch.minimum(sx, sy)
    inside = ramp_(rho - border, 2 * e_rho)
    nodule_mask = inside >= 0.5

    echo = 1.0 + lesion_contrast * (c(p["echo"]) - 1.0)
    inner_tex = 1.0 + 0.06 * smooth_field(draws["inner"], size)
    amp = amp * (1 - inside) + inside * amp * echo * inner_tex
    # halo: a thin hypoechoic rim (benign)
    if p["halo"].any():
        rim = ramp_((rho - border).abs() - 0.08, 2 * e_rho) * c(p["halo"])
        amp = amp * (1 - 0.5 * lesion_contrast * rim)
    # posterior features: enhancement (>1) or shadowing (<1) in a column below the nodule
    below = ramp_(dx.abs() - sx * 0.8, 0.05) * ramp_(c(p["cy"]) + sy / 2 - d, 0.03) * (1 - inside)
    amp = amp * (1 + below * (c(p["posterior"]) - 1) * lesion_contrast)

    # microcalcifications: bright punctate foci inside the nodule
    calc = torch.zeros_like(amp)
    on = np.arange(_MAX_CALC)[None] < p["n_calc"][:, None]
    if on.any():
        cr, ct = p["calc_r"], p["calc_t"]
        cu, cv = cr * np.cos(ct), cr * np.sin(ct)
        ang = p["angle"][:, None]
        sxv = np.asarray(p["r0"] * np.sqrt(p["aspect"]), np.float32)[:, None]  # as the float32 columns above
        syv = np.asarray(p["r0"] / np.sqrt(p["aspect"]), np.float32)[:, None]
        px = p["cx"][:, None] + np.cos(ang) * cu * sxv - np.sin(ang) * cv * syv
        py = p["cy"][:, None] + (np.sin(ang) * cu * sxv + np.cos(ang) * cv * syv) / 2.0
        ix = np.clip(((px + 1) / 2 * size).astype(int), 0, size - 1)
        iy = np.clip((py * size).astype(int), 0, size - 1)
        idx = np.broadcast_to(np.arange(m)[:, None], ix.shape)
        flat = torch.as_tensor((idx[on] * size + iy[on]) * size + ix[on], device=dev)
        calc.view(-1).index_put_((flat,), torch.ones(len(flat), device=dev), accumulate=True)
        calc = blur(calc, 0.5 * max(1.0, size / 96)).mul_(4.0).clamp_(0, 1) * nodule_mask

    # speckle, attenuation, gain, log compression
    amp = amp * ((1 - speckle_level) + speckle_level * draws["speckle"]) + 1.2 * calc
    amp = amp * torch.exp(-c(p["atten"]) * d) * c(p["gain"])
    img = torch.log1p(amp.clamp_min_(0.0).mul_(8.0)).div_(float(np.log1p(8.0 * 1.2)))
    img = apply_domain(img, draws["z"], dom, sigma_noise)
    img.clamp_(0.0, 1.0)
    return img, nodule_mask.to(torch.uint8)
