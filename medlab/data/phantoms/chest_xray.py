"""Chest X-ray phantoms: normal, bacterial pneumonia, COVID-19.

A frontal (PA) radiograph in display convention: air dark, bone and soft
tissue bright, intensities roughly in ``[0, 1]``. The image's left is the
patient's right. Anatomy: thorax silhouette, two lungs with vascular
markings, heart, mediastinum and spine, trachea, hemidiaphragms, clavicles
and posterior ribs. Patient size, position, rotation and exposure vary.

Classes (their radiographic signs, as in the literature the lessons cite):

``normal``
    clear lungs.
``bacterial_pneumonia``
    unilateral lobar consolidation: a dense, fairly homogeneous opacity filling
    part of one lobe of one lung, sharp where it meets a fissure.
``covid19``
    bilateral, peripheral, lower-zone ground-glass opacities: hazy, patchy,
    lower contrast, several patches along the lateral lung borders.
"""
from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ._common import (PhantomBatch, apply_domain, balanced_labels, check_common, check_range, chunk_size,
                      col, domain_args, ellipse_r2, grid, ramp, render_in_chunks, resize, smooth_field)

__all__ = ["chest_xray", "CXR_CLASSES"]

CXR_CLASSES = ["normal", "bacterial_pneumonia", "covid19"]
_ALIASES = {"pneumonia": "bacterial_pneumonia", "bacterial": "bacterial_pneumonia",
            "covid": "covid19", "covid-19": "covid19"}


def _class_list(classes) -> list[str]:
    if classes is None:
        return list(CXR_CLASSES)
    if isinstance(classes, str):
        classes = [classes]
    names = [_ALIASES.get(str(c).lower(), str(c).lower()) for c in classes]
    bad = [c for c in names if c not in CXR_CLASSES]
    if bad or len(set(names)) != len(names) or len(names) < 2:
        raise ParameterError(f"classes must be two or more distinct names from {CXR_CLASSES} "
                             f"(aliases {sorted(_ALIASES)}), not {classes!r}")
    return names


def chest_xray(n: int, size: int = 64, seed: int = 0, *, classes=None,
               lesion_contrast: float = 1.0, lesion_size: float = 1.0, count: int = 3,
               noise: float = 0.03, exposure: float = 1.0, rotation: float = 8.0,
               marker: bool = False, marker_correlation: float = 0.0,
               domain="A", intensity_scale=None, intensity_offset=None, blur=None,
               noise_texture=None, resolution=None) -> PhantomBatch:
    """Generate ``n`` frontal chest X-ray phantoms with lung and lesion masks.

    Args:
        n: number of images; classes are balanced.
        size: side of the square images in pixels.
        seed: seed of the only random generator used (same seed, same images).
        classes: subset of ``CXR_CLASSES`` (``normal``, ``bacterial_pneumonia``
            alias ``pneumonia``, ``covid19`` alias ``covid``) in label order;
            default all three.
        lesion_contrast: difficulty: scale of the opacities' brightness (1 default, 0 invisible).
        lesion_size: difficulty: scale of the lesions' extent.
        count: difficulty: ground-glass patches per lung for COVID-19 (1 to 6).
        noise: quantum noise std in display units.
        exposure: nuisance: scale of the random exposure (gain, offset, gamma) variation.
        rotation: nuisance: maximum patient rotation in degrees.
        marker: draw a laterality marker in a top corner of every image.
        marker_correlation: in ``[0, 1]``: with this probability the marker's
            side follows the label (``normal`` left, any disease right), else
            it is left or right at random. A shortcut a classifier can learn.
        domain: scanner preset (``A``, ``B``, ``C``), id, dict or :class:`Domain`.
        intensity_scale, intensity_offset, blur, noise_texture, resolution:
            override single domain knobs (see :class:`Domain`).

    Returns:
        :class:`PhantomBatch` with ``images`` ``(n, 1, size, size)`` in [0, 1];
        masks ``lung`` (0/1) and ``lesion`` (0/1, the default mask); attrs ``lesion_area``
        (fraction of the image), ``lesion_pixels`` (pixels of the lesion mask),
        ``severity`` (fraction of lung involved), ``lesion_contrast`` (the
        finding's contrast: the mean rise in display intensity that the
        opacity causes inside the lesion mask, after the exposure and the
        scanner's gain, before blur, noise and the final clip to [0, 1]; 0
        without a lesion), ``lesion_strength`` (the drawn peak opacity, 0 to 1,
        before ``lesion_contrast`` scales it; 0 for ``normal``), ``side`` (0 none, 1 right lung, 2 left lung, 3 both), ``marker_side``
        (-1 none, 0 image left, 1 image right), ``rotation`` (degrees),
        ``patient_scale``, ``exposure_gain``, ``domain``.
    """
    n, size = check_common(n, size)
    names = _class_list(classes)
    lesion_contrast = check_range("lesion_contrast", lesion_contrast, 0.0, 5.0)
    lesion_size = check_range("lesion_size", lesion_size, 0.2, 3.0)
    count = int(check_range("count", count, 1, 6))
    noise = check_range("noise", noise, 0.0, 1.0)
    exposure = check_range("exposure", exposure, 0.0, 3.0)
    rotation = check_range("rotation", rotation, 0.0, 45.0)
    marker_correlation = check_range("marker_correlation", marker_correlation, 0.0, 1.0)
    dom = domain_args(domain, intensity_scale, intensity_offset, blur, noise_texture, resolution)

    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, len(names), rng)
    disease = np.array([CXR_CLASSES.index(names[k]) for k in labels], dtype=np.int64)

    # per-sample parameters, all drawn up front (independent of chunking)
    p = {
        "scale": rng.uniform(0.84, 1.1, n),
        "angle": np.deg2rad(rng.uniform(-rotation, rotation, n)),
        "ty": rng.uniform(-0.1, 0.1, n),
        "tx": rng.uniform(-0.1, 0.1, n),
        "lung_ry": rng.uniform(0.56, 0.66, n),
        "lung_rx": rng.uniform(0.26, 0.31, n),
        "dome": rng.uniform(0.32, 0.42, n),
        "heart_rx": rng.uniform(0.27, 0.35, n),
        "heart_ry": rng.uniform(0.30, 0.36, n),
        "lung_level": rng.uniform(0.14, 0.24, n),
        "tissue_level": rng.uniform(0.52, 0.62, n),
        "rib_level": rng.uniform(0.03, 0.06, n),
        "rib_phase": rng.uniform(-0.04, 0.04, n),
        "gain": 1.0 + exposure * rng.uniform(-0.18, 0.18, n),
        "offset": exposure * rng.uniform(-0.07, 0.07, n),
        "gamma": 1.0 + exposure * rng.uniform(-0.2, 0.2, n),
        # pneumonia: side 0 = patient's right (image left), lobe 0 lower / 1 upper
        "pn_side": rng.integers(0, 2, n),
        "pn_lobe": (rng.uniform(size=n) < 0.3).astype(np.int64),
        "pn_strength": rng.uniform(0.6, 1.0, n),
        "pn_cy": rng.uniform(-0.25, 0.25, n),
        "pn_cx": rng.uniform(-0.35, 0.35, n),
        "pn_r": rng.uniform(0.6, 1.0, n),
        # covid: up to 6 patches per lung, peripheral and low
        "cv_strength": rng.uniform(0.55, 1.0, n),
        "cv_count": rng.integers(max(1, count - 1), count + 2, n),
        "cv_t": rng.uniform(-0.1, 0.75, (n, 2, 7)),  # vertical position along the lung (1 = base)
        "cv_r": rng.uniform(0.16, 0.30, (n, 2, 7)),
        "cv_asym": rng.uniform(0.5, 1.0, n),  # the weaker lung's fraction of strength
    }
    # laterality marker
    if marker:
        follow = rng.uniform(size=n) < marker_correlation
        random_side = rng.integers(0, 2, n)
        marker_side = np.where(follow, (disease > 0).astype(np.int64), random_side)
    else:
        marker_side = np.full(n, -1, dtype=np.int64)

    images = np.empty((n, 1, size, size), np.float32)
    lung = np.empty((n, size, size), np.int64)
    lesion = np.empty((n, size, size), np.int64)
    contrast = np.zeros(n, np.float32)
    render_in_chunks(p, n, chunk_size(size),
                     lambda sub, s, e: _render(sub, disease[s:e], marker_side[s:e], size, rng,
                                               lesion_contrast, lesion_size, noise, dom),
                     (images[:, 0], lung, lesion, contrast))

    lung_px = np.maximum((lung > 0).sum(axis=(1, 2)), 1)
    lesion_px = lesion.sum(axis=(1, 2))
    side = np.zeros(n, np.int64)
    side[disease == 1] = p["pn_side"][disease == 1] + 1
    side[disease == 2] = 3
    side[lesion_px == 0] = 0
    attrs = {
        "lesion_area": (lesion_px / float(size * size)).astype(np.float32),
        "lesion_pixels": lesion_px.astype(np.int64),
        "severity": (lesion_px / lung_px).astype(np.float32),
        "lesion_contrast": np.where(lesion_px > 0, contrast, 0.0).astype(np.float32),
        "lesion_strength": np.select([disease == 1, disease == 2], [p["pn_strength"], p["cv_strength"]],
                                     0.0).astype(np.float32),
        "side": side,
        "marker_side": marker_side,
        "rotation": np.rad2deg(p["angle"]).astype(np.float32),
        "patient_scale": p["scale"].astype(np.float32),
        "exposure_gain": p["gain"].astype(np.float32),
        "domain": np.full(n, dom.id, np.int64),
    }
    params = dict(n=n, size=size, seed=seed, classes=names, lesion_contrast=lesion_contrast,
                  lesion_size=lesion_size, count=count, noise=noise, exposure=exposure,
                  rotation=rotation, marker=marker, marker_correlation=marker_correlation,
                  domain=dom)
    return PhantomBatch(
        images=images, masks={"lung": lung, "lesion": lesion}, labels=labels, attrs=attrs,
        class_names=names,
        mask_classes={"lung": ["background", "lung"], "lesion": ["background", "lesion"]},
        default_mask="lesion", kind="chest_xray", units="a.u.", params=params)


def _render(p, disease, marker_side, size, rng, lesion_contrast, lesion_size, noise, dom):
    m = len(disease)
    y0, x0 = grid(size)
    # patient coordinates: rotate, shift and scale the image grid
    a, sc = col(p["angle"]), col(p["scale"])
    ca, sa = np.cos(a) / sc, np.sin(a) / sc
    x = ca * x0 - sa * y0 - col(p["tx"]) / sc
    y = sa * x0 + ca * y0 - col(p["ty"]) / sc
    ax = np.abs(x)
    edge = 2.0 / size  # soft edges about one pixel wide

    # thorax: sloping shoulders up to the neck, straight flanks
    half_width = 0.24 + 0.66 * np.sqrt(np.clip((y + 1.1) * 2.0, 0.0, 1.0))
    body = ramp(ax - half_width, 0.02)

    # lungs: tall ellipses tilted so that the apex is medial, cut by the domes
    ry, rx = col(p["lung_ry"]), col(p["lung_rx"])
    dome = col(p["dome"])
    lungs = []
    for sign, dome_shift in ((-1.0, -0.04), (1.0, 0.0)):  # image left = patient's right
        cx = sign * 0.37
        r2 = ellipse_r2(y, x, -0.08, cx, ry, rx, angle=sign * 0.1)
        dome_y = dome + (dome_shift - 0.1) + 0.9 * (x - cx * 0.9) ** 2
        inside = ramp(r2 - 1.0, 2.0 * edge / 0.3)
        inside *= ramp(y - dome_y, edge)
        inside *= ramp(0.07 - sign * x, edge)
        lungs.append(inside)
    heart = ramp(ellipse_r2(y, x, 0.32, 0.1, col(p["heart_ry"]), col(p["heart_rx"]), 0.35) - 1.0, 0.06)
    not_heart = 1.0 - heart
    for lg in lungs:
        lg *= not_heart
    lung_any = np.maximum(lungs[0], lungs[1])

    # soft tissue: brighter in the middle (thicker), bright mediastinum and spine
    img = col(p["tissue_level"]) * (1.0 - 0.25 * ax * ax)
    img += 0.12 * ramp(ax - 0.07, 0.02)  # spine
    img -= 0.18 * ramp(ax - 0.03, 0.015) * ramp(y + 0.35, 0.04)  # trachea
    img = 0.04 + body * (img - 0.04)
    # clavicles
    for sign in (-1.0, 1.0):
        d = (y - (-0.718 + 0.18 * sign * x)) * (1.0 / 0.035)
        img += 0.10 * np.exp(-d * d) * ramp(0.1 - sign * x, 0.03) * ramp(ax - 0.65, 0.05)

    # vascular markings: fine texture, denser towards the hila
    texture = smooth_field(rng, m, size, cells=max(8, size // 6))
    hilum = np.exp(-((ax - 0.22) * 4.0) ** 2 - (y * 2.0) ** 2)
    lung_tissue = col(p["lung_level"]) + 0.025 * texture + 0.06 * hilum
    img += lung_any * (lung_tissue - img)

    # posterior ribs (nine, evenly spaced, curving down laterally), over lungs and chest wall
    cage = ramp(ellipse_r2(y, x, -0.05, 0.0, 0.78, 0.82) - 1.0, 0.1)
    u = (y - (0.55 * (ax - 0.08) ** 2 - 0.1 * ax) - col(p["rib_phase"]) + 0.78) * (1.0 / 0.13) + 0.5
    frac = (u - np.floor(u) - 0.5) * (0.13 / 0.035)
    ribs = np.exp(-frac * frac) * ((u > 0) & (u < 9) & (ax > 0.06))
    img += col(p["rib_level"]) * ribs * cage

    # pathology: an opacity map in [0, 1], computed at half resolution (it is smooth)
    half = max(16, size // 2)
    yh, xh = grid(half)
    def patient(sel):
        return (ca[sel] * xh - sa[sel] * yh - col(p["tx"][sel]) / sc[sel],
                sa[sel] * xh + ca[sel] * yh - col(p["ty"][sel]) / sc[sel])
    opac = np.zeros_like(img)
    pn = np.flatnonzero(disease == 1)
    if len(pn):
        xx, yy = patient(pn)
        side = p["pn_side"][pn]
        sign = col(np.where(side == 0, -1.0, 1.0))
        # lobe: below (lower) or above (upper) an oblique fissure
        fissure = -0.05 + 0.35 * (xx - sign * 0.37) * sign
        lower = col(p["pn_lobe"][pn] == 0)
        lobe = ramp((fissure - yy) * (2.0 * lower - 1.0), 0.03)
        cy = np.where(p["pn_lobe"][pn] == 0, 0.2, -0.35) + 0.2 * p["pn_cy"][pn]
        ccx = np.where(side == 0, -0.37, 0.37) + 0.2 * p["pn_cx"][pn]
        r = p["pn_r"][pn] * 0.42 * lesion_size
        blob_r2 = ellipse_r2(yy, xx, col(cy), col(ccx), col(r * 1.1), col(r * 0.8))
        patch = smooth_field(rng, len(pn), half, cells=4)
        blob = ramp(blob_r2 - 1.0 + 0.25 * patch, 0.7)
        op = blob * lobe * (0.85 + 0.15 * smooth_field(rng, len(pn), half, cells=10))
        op = resize(op * col(p["pn_strength"][pn] * 0.40), size)
        lung_sel = np.where(col(side == 0), lungs[0][pn], lungs[1][pn])
        opac[pn] = op * lung_sel
    cv = np.flatnonzero(disease == 2)
    if len(cv):
        k_cv = len(cv)
        xx, yy = patient(cv)
        patch = smooth_field(rng, k_cv, half, cells=max(6, size // 8))
        ry_cv, rx_cv = ry[cv], rx[cv]
        ops = []
        for li, sign in enumerate((-1.0, 1.0)):
            acc = np.zeros((k_cv, half, half), np.float32)
            for j in range(7):
                on = col(p["cv_count"][cv] > j)
                t = col(p["cv_t"][cv, li, j])
                cy = -0.08 + t * ry_cv * 0.9
                # peripheral: near the lateral border at that height
                lateral = np.sqrt(np.clip(1.0 - ((cy + 0.08) / ry_cv) ** 2, 0.05, 1.0))
                cx = sign * (0.37 + 0.7 * rx_cv * lateral)
                inv = on / (col(p["cv_r"][cv, li, j]) * lesion_size * rx_cv * 1.6)
                dy, dx = (yy - cy) * (inv / 1.3), (xx - cx) * inv
                np.maximum(acc, np.exp(-(dy * dy + dx * dx)) * (on > 0), out=acc)
            weight = 1.0 if li == 0 else col(p["cv_asym"][cv])
            ops.append(resize(acc * (0.75 + 0.35 * patch) * weight, size))
        op = np.clip(ops[0] * lungs[0][cv] + ops[1] * lungs[1][cv], 0.0, 1.0)
        opac[cv] = op * col(p["cv_strength"][cv] * 0.34)

    img += lesion_contrast * opac
    lung_mask = (lung_any >= 0.5).astype(np.int64)
    peak = np.maximum(opac.max(axis=(1, 2), keepdims=True), 1e-6)
    lesion_mask = ((opac > 0.3 * peak) & (opac > 0.02) & (lung_mask > 0)).astype(np.int64)
    contrast = _mean_rise(img, lesion_contrast * opac, lesion_mask, p) * dom.intensity_scale

    # laterality marker: a bright square with a notch, in a top corner
    has_marker = marker_side >= 0
    if has_marker.any():
        mx = col(np.where(marker_side == 1, 0.78, -0.78))
        sq = (np.abs(y0 + 0.82) < 0.07) & (np.abs(x0 - mx) < 0.07)
        notch = (np.abs(y0 + 0.80) < 0.035) & (np.abs(x0 - mx - 0.02) < 0.035)
        mk = sq & ~notch & has_marker[:, None, None]
        img[mk] = 0.95

    # exposure: gamma, gain and offset per image
    np.clip(img, 1e-3, 1.5, out=img)
    img = np.exp(np.log(img) * col(p["gamma"])) * col(p["gain"]) + col(p["offset"])
    img = apply_domain(img, rng, dom, noise)
    np.clip(img, 0.0, 1.0, out=img)
    return img, lung_mask, lesion_mask, contrast


def _expose(v, gamma, gain):
    """The exposure step of :func:`_render` without its offset (it cancels in a difference)."""
    return np.exp(np.log(np.clip(v, 1e-3, 1.5)) * gamma) * gain


def _mean_rise(img, rise, lesion_mask, p):
    """Per image: mean over the lesion mask of exposure(img) - exposure(img - rise) (no random draws)."""
    rows, yy, xx = np.nonzero(lesion_mask)
    with_ = img[rows, yy, xx]
    gamma, gain = p["gamma"][rows], p["gain"][rows]
    diff = _expose(with_, gamma, gain) - _expose(with_ - rise[rows, yy, xx], gamma, gain)
    m = len(img)
    return (np.bincount(rows, weights=diff, minlength=m) / np.maximum(np.bincount(rows, minlength=m), 1)).astype(np.float32)
