"""CT slice phantoms in Hounsfield units, with COVID-19 lesions labelled as in MedSeg.

An axial slice through the lower chest, radiological convention: anterior at
the top, the patient's right on the image's left. Tissues and their CT
numbers: air -1000, lung parenchyma about -860, fat about -100, soft tissue
and blood 30 to 50, cancellous bone about 250, cortical bone about 700.
Structures: body outline with subcutaneous fat, two lungs with vessels and
bronchi, heart, descending aorta, trachea/main bronchi, vertebra, sternum,
ribs.

Lesions follow the COVID-19 pattern (bilateral, peripheral, posterior,
multifocal) and are labelled as in the MedSeg COVID-19 CT segmentation data
set: 0 background, 1 ground-glass opacity (about -700 to -450 HU, vessels
still visible through it), 2 consolidation (about -100 to +40 HU, vessels
hidden).
"""
from __future__ import annotations

import numpy as np
import torch

from ...errors import ParameterError
from ._common import PhantomBatch, balanced_labels, check_common, check_range, domain_args
from ._torch import (Canvas, PixelNoise, Pose, apply_domain, blur, chunk_images, col, field_cells, lerp_,
                     phantom_device, ramp, ramp_, render_chunks, shift, smooth_field, to_numpy)

__all__ = ["ct_slice", "CT_CLASSES", "mosmed_band"]

CT_CLASSES = ["normal", "covid19"]
LESION_CLASSES = ["background", "ground-glass", "consolidation"]
HU_AIR, HU_LUNG, HU_FAT, HU_SOFT, HU_BONE, HU_CORTEX = -1000.0, -860.0, -100.0, 40.0, 250.0, 700.0


def mosmed_band(involvement) -> np.ndarray:
    """MosMedData severity band CT-0..CT-4 from the fraction of lung involved.

    CT-0: none; CT-1: under 25 %; CT-2: 25-50 %; CT-3: 50-75 %; CT-4: over 75 %.
    """
    f = np.asarray(involvement, dtype=np.float64)
    return np.where(f <= 0, 0, np.searchsorted([0.25, 0.5, 0.75], f, side="left") + 1).astype(np.int64)


def ct_slice(n: int, size: int = 64, seed: int = 0, *, lesion_contrast: float = 1.0,
             lesion_size: float = 1.0, count: int = 3, noise: float = 20.0,
             consolidation: float = 0.35, domain="A", intensity_scale=None, intensity_offset=None,
             blur=None, noise_texture=None, resolution=None, lesions=None, involvement=None,
             consolidation_fraction=None, device=None, as_tensors: bool = False) -> PhantomBatch:
    """Generate ``n`` axial chest CT slices (HU) with lung and lesion masks.

    Args:
        n: number of slices; half ``normal``, half ``covid19`` (lesions present).
        size: side of the square slices in pixels.
        seed: seed of the only random generator used.
        lesion_contrast: difficulty: scale of the lesions' HU rise (1 default).
        lesion_size: difficulty: scale of the lung fraction involved
            (default draws 3 % to 45 % per COVID-19 slice).
        count: difficulty: how many separate foci (1 to 8; more gives smaller ones).
        noise: image noise std in HU (CT noise at a typical low dose is 10 to 30 HU).
        consolidation: mean fraction of each lesion that is consolidation (0 to 1).
        domain, intensity_scale, intensity_offset, blur, noise_texture, resolution:
            scanner knobs (see :class:`Domain`); for CT the gain acts around
            -1000 HU (air stays air), ``intensity_offset`` is in HU, and a
            preset's gain and offset are applied at a quarter and half strength
            (preset ``B`` moves water by about -10 HU and adds blur and
            correlated noise, ``C`` moves it by about +20 HU at half resolution).
        lesions, involvement, consolidation_fraction: optional per-slice
            values (arrays of length ``n``) for a caller that decides each
            case itself (a cohort drawn from a causal model): which slices
            have lesions (0/1; replaces the balanced ``normal``/``covid19``
            labels), the fraction of lung each lesion should cover (0.005 to
            0.95) and the mean consolidation fraction of each lesion (0 to 1).
            The random draws are the same with or without them, so the other
            properties of each slice do not change.
        device: where the pixels are rendered: ``None`` or ``"cpu"`` (default), ``"cuda"``, ``"auto"`` (the
            GPU when there is one). The per-slice parameters and labels are the same on every device; the
            pixel noise on a GPU comes from a generator on the GPU, so a GPU renders other (equally likely)
            noise than the CPU. Same seed and device, same images.
        as_tensors: return ``images``, ``masks`` and ``labels`` as torch tensors on ``device`` instead of
            NumPy arrays (for drawing training data on the device; ``attrs`` stay NumPy).

    Returns:
        :class:`PhantomBatch` with ``images`` in HU, ``(n, 1, size, size)``;
        masks ``lung`` (0/1, lesions included) and ``lesion`` (0 background,
        1 ground-glass, 2 consolidation; the default); attrs ``lesion_area``
        (fraction of the image), ``lesion_pixels`` (pixels of the lesion
        mask), ``involvement`` (fraction of lung), ``severity`` (MosMedData
        band 0-4 from the involvement), ``consolidation_fraction`` (of the
        lesion), ``lesion_contrast`` (the finding's contrast in HU: the mean
        rise in CT number that the lesion causes inside its mask, after the
        scanner's gain, before blur and noise), ``ggo_contrast`` and
        ``consolidation_contrast`` (the drawn rise in HU of each lesion type
        over the slice's parenchyma, ``lung_hu``; vessels, soft edges and the
        lesion's mix make the measured ``lesion_contrast`` differ), ``lung_hu``
        (the parenchyma's base CT number); contrasts are 0 on slices without
        a lesion; ``domain``. Use
        ``batch.display("lung")`` or :func:`window` to view or train on it.
    """
    n, size = check_common(n, size)
    lesion_contrast = check_range("lesion_contrast", lesion_contrast, 0.0, 5.0)
    lesion_size = check_range("lesion_size", lesion_size, 0.1, 2.0)
    count = int(check_range("count", count, 1, 8))
    noise = check_range("noise", noise, 0.0, 500.0)
    consolidation = check_range("consolidation", consolidation, 0.0, 1.0)
    import dataclasses

    dom = domain_args(domain, None, None, blur, noise_texture, resolution)
    # a preset's gain and offset are milder on CT (water moves by tens of HU, not hundreds)
    dom = dataclasses.replace(dom, intensity_scale=1.0 + (dom.intensity_scale - 1.0) * 0.25,
                              intensity_offset=dom.intensity_offset * 0.5)
    if intensity_scale is not None:
        dom = dataclasses.replace(dom, intensity_scale=float(intensity_scale))
    if intensity_offset is not None:
        dom = dataclasses.replace(dom, intensity_offset=float(intensity_offset) / 1000.0)

    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, 2, rng)
    p = {
        "scale": rng.uniform(0.8, 1.08, n),
        "angle": np.deg2rad(rng.uniform(-8, 8, n)),
        "ty": rng.uniform(-0.1, 0.1, n),
        "tx": rng.uniform(-0.1, 0.1, n),
        "body_rx": rng.uniform(0.82, 0.92, n),
        "body_ry": rng.uniform(0.56, 0.66, n),
        "fat": rng.uniform(0.03, 0.10, n),
        "lung_rx": rng.uniform(0.30, 0.35, n),
        "lung_ry": rng.uniform(0.44, 0.50, n),
        "lung_hu": rng.uniform(-900, -780, n),
        "heart_r": rng.uniform(0.15, 0.19, n),
        "involvement": np.clip(rng.uniform(0.03, 0.45, n) * lesion_size, 0.005, 0.95),
        "cons_frac": np.clip(rng.beta(2, 2, n) * 2 * consolidation, 0.0, 1.0),
        "ggo_hu": rng.uniform(-700, -450, n),
        "cons_hu": rng.uniform(-100, 40, n),
        "posterior": rng.uniform(0.5, 1.5, n),
    }
    if lesions is not None:
        labels = (_per_slice("lesions", lesions, n, 0.0, 1.0) > 0).astype(np.int64)
    if involvement is not None:
        p["involvement"] = np.clip(_per_slice("involvement", involvement, n, 0.0, 1.0), 0.005, 0.95)
    if consolidation_fraction is not None:
        p["cons_frac"] = _per_slice("consolidation_fraction", consolidation_fraction, n, 0.0, 1.0)
    dev = phantom_device(device)
    canvas, noise_source = Canvas(size, dev), PixelNoise(rng, seed, dev)
    with torch.no_grad():
        chunks = render_chunks(
            n, chunk_images(size, dev), dev,
            lambda s, e: _draw_pixels(noise_source, labels[s:e], size, count),
            lambda s, e, draws: _render({k: v[s:e] for k, v in p.items()}, labels[s:e], size, draws, canvas,
                                        lesion_contrast, count, noise, dom))
        if chunks:
            images, lung, lesion, contrast = (torch.cat(part) for part in zip(*chunks))
        else:
            images, contrast = torch.zeros((0, size, size), device=dev), torch.zeros(0, device=dev)
            lung = torch.zeros((0, size, size), dtype=torch.bool, device=dev)
            lesion = torch.zeros((0, size, size), dtype=torch.uint8, device=dev)
        lung_px = to_numpy(torch.count_nonzero(lung, dim=(1, 2)))
        lesion_px = to_numpy(torch.count_nonzero(lesion, dim=(1, 2)))
        cons_px = to_numpy(torch.count_nonzero(lesion == 2, dim=(1, 2)))
        contrast = to_numpy(contrast)

    involvement = (lesion_px / np.maximum(lung_px, 1)).astype(np.float32)
    attrs = {
        "lesion_area": (lesion_px / float(size * size)).astype(np.float32),
        "involvement": involvement,
        "severity": mosmed_band(involvement),
        "consolidation_fraction": (cons_px / np.maximum(lesion_px, 1)).astype(np.float32),
        "lesion_pixels": lesion_px,
        "lesion_contrast": np.where(lesion_px > 0, contrast, 0.0).astype(np.float32),
        "ggo_contrast": np.where(lesion_px > 0, lesion_contrast * (p["ggo_hu"] - p["lung_hu"]), 0.0).astype(np.float32),
        "consolidation_contrast": np.where(cons_px > 0, lesion_contrast * (p["cons_hu"] - p["lung_hu"]),
                                           0.0).astype(np.float32),
        "lung_hu": p["lung_hu"].astype(np.float32),
        "domain": np.full(n, dom.id, np.int64),
    }
    images, lung, lesion = images[:, None], lung.to(torch.int64), lesion.to(torch.int64)
    if as_tensors:
        labels = torch.as_tensor(labels, device=dev)
    else:
        images, lung, lesion = to_numpy(images), to_numpy(lung), to_numpy(lesion)
    params = dict(n=n, size=size, seed=seed, lesion_contrast=lesion_contrast, lesion_size=lesion_size,
                  count=count, noise=noise, consolidation=consolidation, domain=dom)
    return PhantomBatch(
        images=images, masks={"lung": lung, "lesion": lesion}, labels=labels, attrs=attrs,
        class_names=list(CT_CLASSES),
        mask_classes={"lung": ["background", "lung"], "lesion": list(LESION_CLASSES)},
        default_mask="lesion", kind="ct_slice", units="HU", params=params)


def _draw_pixels(noise, labels, size, count) -> dict:
    """The random numbers of one chunk's pixels, in the order the renderer has always drawn them."""
    m, sick = len(labels), int((labels == 1).sum())
    k_hil, k_per = 8, 60
    return {"parenchyma": field_cells(noise, m, max(8, size // 6)),
            "py": torch.cat([noise.normal(0.05, 0.18, (m, k_hil)), noise.uniform(-0.5, 0.55, (m, k_per))], 1),
            "px_sign": noise.uniform(-1, 1, (m, k_hil)), "px_hil": noise.uniform(0.15, 0.45, (m, k_hil)),
            "px_per": noise.uniform(-0.8, 0.8, (m, k_per)),
            "lesion": field_cells(noise, sick, 3 + count) if sick else None,
            "z": noise.standard_normal((m, size, size))}


def _render(p, labels, size, draws, canvas, lesion_contrast, count, sigma_noise, dom):
    """Render one chunk of slices on ``canvas.device``: ``(images HU, lung mask, lesion mask, contrast)`` tensors."""
    dev = canvas.device
    m = len(labels)
    f64 = lambda v: torch.as_tensor(np.asarray(v, np.float64), device=dev)  # noqa: E731
    pose = Pose.rotation(p["angle"], p["scale"], p["tx"], p["ty"])
    y, x = pose.coords(canvas)
    edge = 1.5 / size

    def disc(cy, cx, ry, rx, angle=0.0):
        radius = min(float(np.min(ry)), float(np.min(rx)))
        return canvas.ramp(shift(pose.ellipse(cy, cx, ry, rx, angle), 1.0), 2.0 * edge / radius)

    brx, bry = p["body_rx"], p["body_ry"]
    q_body = pose.ellipse(0.05, 0.0, bry, brx)
    body = canvas.ramp(shift(q_body, 1.0), 2.0 * edge / 0.6)
    inner = canvas.ramp(shift(q_body, (1.0 - p["fat"] * 1.4) ** 2), 2.0 * edge / 0.6)
    img = body.mul_(HU_FAT - HU_AIR).add_(HU_AIR).add_(inner.mul_(HU_SOFT - HU_FAT))

    # ribs: short bony segments evenly spaced around the chest wall, none over sternum or spine
    theta = torch.atan2(canvas.quadric(pose.line(b=1.0 / bry, c=-0.05 / bry)), canvas.quadric(pose.line(a=1.0 / brx)))
    ring = ramp_(canvas.quadric(shift(q_body, 0.77)).abs_().sub_(0.055), 0.05)
    phase = theta * (8.0 / np.pi)
    arc = ramp_(phase.add_(0.5).remainder_(1.0).sub_(0.5).abs_().sub_(0.22), 0.1)
    arc.mul_(ramp_(theta.abs_().sub_(np.pi / 2).abs_().neg_().add_(0.3), 0.1))
    lerp_(img, ring.mul_(arc).mul_(0.8), HU_CORTEX)
    lerp_(img, disc(0.05 - bry * 0.84, 0.0, 0.05, 0.09), HU_BONE)  # sternum
    q_vert = pose.ellipse(0.36, 0.0, 0.12, 0.13)
    lerp_(img, canvas.ramp(shift(q_vert, 1.0), 2 * edge / 0.12), HU_CORTEX)
    lerp_(img, canvas.ramp(shift(q_vert, 0.6), 2 * edge / 0.12), HU_BONE)
    lerp_(img, disc(0.55, 0.0, 0.09, 0.035).mul_(0.8), HU_CORTEX)  # spinous process

    # lungs: tilted ellipses with a straight medial border, around heart, aorta and spine
    lrx, lry, hr = p["lung_rx"], p["lung_ry"], p["heart_r"]
    lungs, lung_r2 = None, []
    for sign in (-1.0, 1.0):
        q = pose.ellipse(0.02, sign * 0.43, lry, lrx, angle=-sign * 0.25)
        lung_r2.append(canvas.quadric(q))
        side = canvas.ramp(shift(q, 1.0), 2 * edge / 0.3).mul_(canvas.ramp(pose.line(a=-sign, c=0.13), edge))
        lungs = side if lungs is None else torch.maximum(lungs, side, out=lungs)
    lungs.mul_(1.0 - disc(-0.12, 0.1, hr * 1.1, hr * 1.4, 0.5))  # heart
    lungs.mul_(1.0 - disc(0.22, 0.14, 0.075, 0.075))  # descending aorta
    lungs.mul_(1.0 - canvas.ramp(shift(q_vert, 1.6), 0.2))
    lungs.mul_(canvas.ramp(shift(q_body, 0.85), 2 * edge / 0.6))
    lung_mask = lungs >= 0.5

    # parenchyma with a gentle anterior-posterior gradient (dependent lung is denser)
    lung_img = smooth_field(draws["parenchyma"], size).mul_(25.0).add_(col(p["lung_hu"], dev)).add_(y, alpha=40.0)

    # vessels: points scattered in the lungs (bigger and brighter towards the hila), blurred into blobs
    k_hil, k_per = draws["px_hil"].shape[1], draws["px_per"].shape[1]
    py = draws["py"].to(dev)
    px = torch.cat([torch.sign(draws["px_sign"]) * draws["px_hil"], draws["px_per"]], 1).to(dev)
    amp = torch.cat([torch.full((m, k_hil), 3.0, device=dev), torch.full((m, k_per), 1.0, device=dev)], 1)
    s_, ty, tx, an = (f64(p[k])[:, None] for k in ("scale", "ty", "tx", "angle"))
    gx, gy = px * s_ + tx, py * s_ + ty  # patient coordinates -> image coordinates
    ix = ((torch.cos(an) * gx + torch.sin(an) * gy + 1) / 2 * size).to(torch.int64).clamp_(0, size - 1)
    iy = ((-torch.sin(an) * gx + torch.cos(an) * gy + 1) / 2 * size).to(torch.int64).clamp_(0, size - 1)
    pts = torch.zeros(m * size * size, device=dev)
    rows = torch.arange(m, device=dev)[:, None].expand_as(iy)
    pts.index_put_((((rows * size + iy) * size + ix).reshape(-1),), amp.reshape(-1), accumulate=True)
    sig = max(0.6, 0.007 * size)
    vessels = blur(pts.view(m, size, size), sig).mul_(2 * np.pi * sig * sig * 0.8).clamp_(0, 1)
    lerp_(lung_img, vessels * 0.9, HU_SOFT)

    # bronchi near each hilum (air with a soft-tissue wall); trachea in the mediastinum
    for sign in (-1.0, 1.0):
        q = pose.ellipse(0.02, sign * 0.26, 0.05, 0.05)
        lerp_(lung_img, canvas.ramp(shift(q, 1.0), 0.2).mul_(0.6), HU_SOFT)
        lerp_(lung_img, canvas.ramp(shift(q, 0.45), 0.2), HU_AIR)
    lerp_(img, lungs, lung_img)
    lerp_(img, disc(0.08, 0.0, 0.055, 0.065), HU_AIR)

    # lesions: a smooth field favouring the periphery and the posterior lung, thresholded per slice
    lesion_mask = torch.zeros((m, size, size), dtype=torch.uint8, device=dev)
    contrast = torch.zeros(m, device=dev)
    sick_np = np.flatnonzero(labels == 1)
    if len(sick_np):
        sick = torch.as_tensor(sick_np, device=dev)
        f = smooth_field(draws["lesion"], size)
        # peripheral: how close to each lung's border, in lung radii
        r2 = torch.where(x[sick] < 0, lung_r2[0][sick], lung_r2[1][sick])
        periph = (1.0 - (1.0 - r2).abs_()).clamp_(0, 1)
        score = f.add_(periph, alpha=1.2).addcmul_(col(p["posterior"][sick_np], dev), y[sick])
        lm = lung_mask[sick]
        thr = _quantile_in_mask(score, lm, 1.0 - p["involvement"][sick_np])[:, None, None]
        les = lm & (score > thr)
        cfrac = p["cons_frac"][sick_np]
        cons_thr = _quantile_in_mask(score, les, 1.0 - cfrac)[:, None, None]
        has_cons = col(cfrac > 0, dev) > 0
        cons = les & (score > cons_thr) & has_cons
        # soft edges: the HU rise tapers over about a pixel outside the mask
        soft = ((score - thr).mul_(4.0).add_(0.5).clamp_(0, 1)) * lm
        lung_hu = col(p["lung_hu"][sick_np], dev)
        before = img[sick]
        ggo_img = before + soft.mul_(lesion_contrast * (col(p["ggo_hu"][sick_np], dev) - lung_hu)) \
            .mul_(1.0 - 0.5 * vessels[sick])
        cons_soft = (score - cons_thr).mul_(5.0).add_(0.5).clamp_(0, 1) * (lm & has_cons)
        cons_target = before + lesion_contrast * (col(p["cons_hu"][sick_np], dev) - lung_hu)
        after = ggo_img.lerp_(cons_target, cons_soft)
        img[sick] = after
        lesion_mask[sick] = les.to(torch.uint8) + cons.to(torch.uint8)
        # the finding's contrast: mean HU rise inside its mask (the gain acts on it; blur and noise do not count)
        lesf = les.float()
        rise = ((after - before) * lesf).sum(dim=(1, 2)) / lesf.sum(dim=(1, 2)).clamp_min(1)
        contrast[sick] = rise * dom.intensity_scale

    img = apply_domain(img, draws["z"], dom, sigma_noise, reference=HU_AIR, offset_unit=1000.0, mid=0.0)
    img.clamp_(-1024.0, 3071.0)
    return img, lung_mask, lesion_mask, contrast


def _per_slice(name: str, values, n: int, low: float, high: float) -> np.ndarray:
    """``values`` as a float64 array of ``n`` finite numbers in ``[low, high]`` (a clear error otherwise)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size != n:
        raise ParameterError(f"{name} must hold one value per slice: {array.size} values for n={n}")
    if not np.all(np.isfinite(array)) or array.min(initial=low) < low or array.max(initial=high) > high:
        raise ParameterError(f"{name} must lie between {low} and {high}, got {array.min():.3g} to {array.max():.3g}")
    return array


def _quantile_in_mask(values: torch.Tensor, mask: torch.Tensor, q) -> torch.Tensor:
    """Per-image quantile ``q`` (array) of ``values`` inside ``mask`` (computed on a 2x subsample)."""
    v = values[:, ::2, ::2].reshape(len(values), -1)
    mk = mask[:, ::2, ::2].reshape(len(values), -1)
    v = torch.where(mk, v, torch.inf).sort(dim=1).values
    counts = mk.sum(dim=1)
    q = torch.as_tensor(np.asarray(q, np.float64), device=values.device)
    pos = torch.minimum(torch.floor(q * counts).to(torch.int64), (counts - 1).clamp_min(0)).clamp_min(0)
    out = torch.gather(v, 1, pos[:, None])[:, 0]
    return torch.where(counts > 0, out, torch.inf)
