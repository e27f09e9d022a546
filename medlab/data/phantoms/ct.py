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

from ...errors import ParameterError
from ._common import (PhantomBatch, apply_domain, balanced_labels, blur, check_common, check_range,
                      chunk_size, col, domain_args, ellipse_r2, grid, ramp, render_in_chunks, smooth_field)

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
             consolidation_fraction=None) -> PhantomBatch:
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
    images = np.empty((n, 1, size, size), np.float32)
    lung = np.empty((n, size, size), np.int64)
    lesion = np.empty((n, size, size), np.int64)
    contrast = np.zeros(n, np.float32)
    render_in_chunks(p, n, chunk_size(size),
                     lambda sub, s, e: _render(sub, labels[s:e], size, rng, lesion_contrast, count, noise, dom),
                     (images[:, 0], lung, lesion, contrast))

    lung_px = np.maximum(lung.sum(axis=(1, 2)), 1)
    lesion_px = (lesion > 0).sum(axis=(1, 2))
    involvement = (lesion_px / lung_px).astype(np.float32)
    attrs = {
        "lesion_area": (lesion_px / float(size * size)).astype(np.float32),
        "involvement": involvement,
        "severity": mosmed_band(involvement),
        "consolidation_fraction": ((lesion == 2).sum(axis=(1, 2)) / np.maximum(lesion_px, 1)).astype(np.float32),
        "lesion_pixels": lesion_px.astype(np.int64),
        "lesion_contrast": np.where(lesion_px > 0, contrast, 0.0).astype(np.float32),
        "ggo_contrast": np.where(lesion_px > 0, lesion_contrast * (p["ggo_hu"] - p["lung_hu"]), 0.0).astype(np.float32),
        "consolidation_contrast": np.where((lesion == 2).any(axis=(1, 2)),
                                           lesion_contrast * (p["cons_hu"] - p["lung_hu"]), 0.0).astype(np.float32),
        "lung_hu": p["lung_hu"].astype(np.float32),
        "domain": np.full(n, dom.id, np.int64),
    }
    params = dict(n=n, size=size, seed=seed, lesion_contrast=lesion_contrast, lesion_size=lesion_size,
                  count=count, noise=noise, consolidation=consolidation, domain=dom)
    return PhantomBatch(
        images=images, masks={"lung": lung, "lesion": lesion}, labels=labels, attrs=attrs,
        class_names=list(CT_CLASSES),
        mask_classes={"lung": ["background", "lung"], "lesion": list(LESION_CLASSES)},
        default_mask="lesion", kind="ct_slice", units="HU", params=params)


def _render(p, labels, size, rng, lesion_contrast, count, noise, dom):
    m = len(labels)
    y0, x0 = grid(size)
    a, sc = col(p["angle"]), col(p["scale"])
    ca, sa = np.cos(a) / sc, np.sin(a) / sc
    x = ca * x0 - sa * y0 - col(p["tx"]) / sc
    y = sa * x0 + ca * y0 - col(p["ty"]) / sc
    edge = 1.5 / size

    def disc(cy, cx, ry, rx, angle=0.0):
        radius = np.minimum(np.min(ry), np.min(rx))
        return ramp(ellipse_r2(y, x, cy, cx, ry, rx, angle) - 1.0, 2.0 * edge / radius)

    brx, bry = col(p["body_rx"]), col(p["body_ry"])
    r2_body = ellipse_r2(y, x, 0.05, 0.0, bry, brx)
    body = ramp(r2_body - 1.0, 2.0 * edge / 0.6)
    inner_r2 = (1.0 - col(p["fat"]) * 1.4) ** 2
    inner = ramp(r2_body - inner_r2, 2.0 * edge / 0.6)
    img = HU_AIR + body * (HU_FAT - HU_AIR) + inner * (HU_SOFT - HU_FAT)

    # ribs: short bony segments evenly spaced around the chest wall, none over sternum or spine
    theta = np.arctan2((y - 0.05) / bry, x / brx)
    ring = ramp(np.abs(r2_body - 0.77) - 0.055, 0.05)
    phase = theta * (8.0 / np.pi) + 0.5
    arc = ramp(np.abs(phase - np.floor(phase) - 0.5) - 0.22, 0.1) * ramp(np.abs(np.abs(theta) - np.pi / 2) * -1.0 + 0.3, 0.1)
    img += ring * arc * (HU_CORTEX - img) * 0.8
    img += disc(0.05 - bry * 0.84, 0.0, 0.05, 0.09) * (HU_BONE - img)  # sternum
    r2_vert = ellipse_r2(y, x, 0.36, 0.0, 0.12, 0.13)
    img += ramp(r2_vert - 1.0, 2 * edge / 0.12) * (HU_CORTEX - img)
    img += ramp(r2_vert - 0.6, 2 * edge / 0.12) * (HU_BONE - img)
    img += disc(0.55, 0.0, 0.09, 0.035) * (HU_CORTEX - img) * 0.8  # spinous process

    # lungs: tilted ellipses with a straight medial border, around heart, aorta and spine
    lrx, lry = col(p["lung_rx"]), col(p["lung_ry"])
    hr = col(p["heart_r"])
    lungs = np.zeros_like(img)
    lung_r2 = []
    for sign in (-1.0, 1.0):
        r2 = ellipse_r2(y, x, 0.02, sign * 0.43, lry, lrx, angle=-sign * 0.25)
        lung_r2.append(r2)
        np.maximum(lungs, ramp(r2 - 1.0, 2 * edge / 0.3) * ramp(0.13 - sign * x, edge), out=lungs)
    lungs *= 1.0 - disc(-0.12, 0.1, hr * 1.1, hr * 1.4, 0.5)  # heart
    lungs *= 1.0 - disc(0.22, 0.14, 0.075, 0.075)  # descending aorta
    lungs *= 1.0 - ramp(r2_vert - 1.6, 0.2)
    lungs *= ramp(r2_body - 0.85, 2 * edge / 0.6)
    lung_mask = lungs >= 0.5

    # parenchyma with a gentle anterior-posterior gradient (dependent lung is denser)
    lung_img = col(p["lung_hu"]) + 25.0 * smooth_field(rng, m, size, cells=max(8, size // 6)) + 40.0 * y

    # vessels: points scattered in the lungs (bigger and brighter towards the hila), blurred into blobs
    k_hil, k_per = 8, 60
    py = np.concatenate([rng.normal(0.05, 0.18, (m, k_hil)), rng.uniform(-0.5, 0.55, (m, k_per))], 1)
    px = np.concatenate([np.sign(rng.uniform(-1, 1, (m, k_hil))) * rng.uniform(0.15, 0.45, (m, k_hil)),
                         rng.uniform(-0.8, 0.8, (m, k_per))], 1)
    amp = np.concatenate([np.full((m, k_hil), 3.0), np.full((m, k_per), 1.0)], 1)
    s_, ty, tx, an = p["scale"][:, None], p["ty"][:, None], p["tx"][:, None], p["angle"][:, None]
    gx, gy = px * s_ + tx, py * s_ + ty  # patient coordinates -> image coordinates
    ix = np.clip(((np.cos(an) * gx + np.sin(an) * gy + 1) / 2 * size).astype(int), 0, size - 1)
    iy = np.clip(((-np.sin(an) * gx + np.cos(an) * gy + 1) / 2 * size).astype(int), 0, size - 1)
    pts = np.zeros_like(img)
    np.add.at(pts, (np.broadcast_to(np.arange(m)[:, None], iy.shape), iy, ix), amp)
    sig = max(0.6, 0.007 * size)
    vessels = np.clip(blur(pts, sig) * (2 * np.pi * sig * sig * 0.8), 0, 1)
    lung_img += vessels * (HU_SOFT - lung_img) * 0.9

    # bronchi near each hilum (air with a soft-tissue wall); trachea in the mediastinum
    for sign in (-1.0, 1.0):
        r2 = ellipse_r2(y, x, 0.02, sign * 0.26, 0.05, 0.05)
        lung_img += ramp(r2 - 1.0, 0.2) * (HU_SOFT - lung_img) * 0.6
        lung_img += ramp(r2 - 0.45, 0.2) * (HU_AIR - lung_img)
    img += lungs * (lung_img - img)
    img += disc(0.08, 0.0, 0.055, 0.065) * (HU_AIR - img)

    # lesions: a smooth field favouring the periphery and the posterior lung, thresholded per slice
    lesion_mask = np.zeros((m, size, size), np.int64)
    contrast = np.zeros(m, np.float32)
    sick = np.flatnonzero(labels == 1)
    if len(sick):
        f = smooth_field(rng, len(sick), size, cells=3 + count)
        # peripheral: how close to each lung's border, in lung radii
        r2 = np.where(x[sick] < 0, lung_r2[0][sick], lung_r2[1][sick])
        periph = np.clip(1.0 - np.abs(1.0 - r2), 0, 1)
        score = f + 1.2 * periph + col(p["posterior"][sick]) * y[sick]
        lm = lung_mask[sick]
        thr = col(_quantile_in_mask(score, lm, 1.0 - p["involvement"][sick]))
        les = lm & (score > thr)
        cfrac = p["cons_frac"][sick]
        cons_thr = col(_quantile_in_mask(score, les, 1.0 - cfrac))
        has_cons = (cfrac > 0)[:, None, None]
        cons = les & (score > cons_thr) & has_cons
        # soft edges: the HU rise tapers over about a pixel outside the mask
        soft = np.clip((score - thr) * 4.0 + 0.5, 0, 1) * lm
        lung_hu = col(p["lung_hu"][sick])
        ggo_img = img[sick] + lesion_contrast * soft * (col(p["ggo_hu"][sick]) - lung_hu) * (1.0 - 0.5 * vessels[sick])
        cons_soft = np.clip((score - cons_thr) * 5.0 + 0.5, 0, 1) * lm * has_cons
        cons_target = img[sick] + lesion_contrast * (col(p["cons_hu"][sick]) - lung_hu)
        before = img[sick]
        img[sick] = ggo_img + cons_soft * (cons_target - ggo_img)
        lesion_mask[sick] = np.where(cons, 2, np.where(les, 1, 0))
        # the finding's contrast: mean HU rise inside its mask (the gain acts on it; blur and noise do not count)
        rise = ((img[sick] - before) * les).sum(axis=(1, 2)) / np.maximum(les.sum(axis=(1, 2)), 1)
        contrast[sick] = rise * dom.intensity_scale

    img = apply_domain(img, rng, dom, noise, reference=HU_AIR, offset_unit=1000.0, mid=0.0)
    np.clip(img, -1024.0, 3071.0, out=img)
    return img, lung_mask.astype(np.int64), lesion_mask, contrast


def _per_slice(name: str, values, n: int, low: float, high: float) -> np.ndarray:
    """``values`` as a float64 array of ``n`` finite numbers in ``[low, high]`` (a clear error otherwise)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size != n:
        raise ParameterError(f"{name} must hold one value per slice: {array.size} values for n={n}")
    if not np.all(np.isfinite(array)) or array.min(initial=low) < low or array.max(initial=high) > high:
        raise ParameterError(f"{name} must lie between {low} and {high}, got {array.min():.3g} to {array.max():.3g}")
    return array


def _quantile_in_mask(values: np.ndarray, mask: np.ndarray, q) -> np.ndarray:
    """Per-image quantile ``q`` (array) of ``values`` inside ``mask`` (computed on a 2x subsample)."""
    v = values[:, ::2, ::2].reshape(len(values), -1)
    mk = mask[:, ::2, ::2].reshape(len(values), -1)
    v = np.where(mk, v, np.inf)
    v = np.sort(v, axis=1)
    counts = mk.sum(axis=1)
    pos = np.clip(np.floor(np.asarray(q) * counts).astype(int), 0, np.maximum(counts - 1, 0))
    out = np.take_along_axis(v, pos[:, None], axis=1)[:, 0]
    return np.where(counts > 0, out, np.inf)
