"""Chest X-ray phantoms: normal, bacterial pneumonia, COVID-19.

A frontal (PA) radiograph in display convention: air dark, bone and soft
tissue bright, intensities roughly in ``[0, 1]``. The image's left is the
patient's right. Anatomy: thorax silhouette, two lungs with vascular
markings, heart, mediastinum and spine, trachea, hemidiaphragms, clavicles
and posterior ribs. Patient size, position, rotation and exposure vary.

Variation knobs (all 0 by default, which renders exactly the images of earlier
versions for the same seed; their randomness comes from a second generator
derived from the seed, so turning one on changes nothing else), after SynthSeg's
generator (Billot et al. 2023): ``pose`` (extra shift, rotation and scale of the
whole chest), ``deformation`` (a smooth elastic displacement), ``intensity_mixture``
(per-image tissue intensities drawn from a mixture of body habitus / technique
components), ``bias`` (a smooth multiplicative bias field) and ``blur_jitter``
(a per-image Gaussian blur, a loss of resolution). Masks and the recorded
per-case attributes follow every transform.

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
from ._common import (PhantomBatch, apply_domain, balanced_labels, blur, check_common, check_range, chunk_size,
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
               noise_texture=None, resolution=None, pose: float = 0.0, deformation: float = 0.0,
               intensity_mixture: float = 0.0, bias: float = 0.0, blur_jitter: float = 0.0) -> PhantomBatch:
    """Generate ``n`` frontal chest X-ray phantoms with lung and lesion masks.

    Args:
        n: number of images; classes are balanced.
        size: side of the square images in pixels.
        seed: seed of the random generators (same seed, same images).
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
        pose: variation: scale of an extra random pose of the whole chest (0 to 3):
            at 1, shifts up to 0.15 of the half-width in each direction, rotations up
            to 10 degrees and size changes up to 15 % either way, on top of ``rotation``
            and the generator's own small jitter.
        deformation: variation: amplitude of a smooth elastic displacement field (0 to 5;
            1 displaces by about 0.04 of the half-width, 1.3 pixels at 64 px).
        intensity_mixture: variation: spread of the per-image tissue intensities (0 to 2):
            each image draws a component of a mixture (standard, dense/under-penetrated,
            thin/high contrast) that scales lung, soft tissue, bone and vessel intensities,
            plus a per-tissue jitter; 1 is the full spread.
        bias: variation: strength of a smooth multiplicative bias field (0 to 1; the
            log-gain has about this standard deviation across the image).
        blur_jitter: variation: each image is blurred with a Gaussian of sigma drawn
            uniformly in ``[0, blur_jitter]`` pixels (0 to 4).

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
        ``patient_scale``, ``exposure_gain``, ``domain``; with ``pose``: ``shift_x``,
        ``shift_y`` (translation, half-widths); with ``intensity_mixture``:
        ``mixture_component`` (0 standard, 1 dense, 2 thin), ``lung_level``; with
        ``blur_jitter``: ``blur_sigma`` (pixels).
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
    pose = check_range("pose", pose, 0.0, 3.0)
    deformation = check_range("deformation", deformation, 0.0, 5.0)
    intensity_mixture = check_range("intensity_mixture", intensity_mixture, 0.0, 2.0)
    bias = check_range("bias", bias, 0.0, 1.0)
    blur_jitter = check_range("blur_jitter", blur_jitter, 0.0, 4.0)

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
    variation = _draw_variation(p, seed, n, pose, deformation, intensity_mixture, bias, blur_jitter)

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
        **variation,
    }
    params = dict(n=n, size=size, seed=seed, classes=names, lesion_contrast=lesion_contrast,
                  lesion_size=lesion_size, count=count, noise=noise, exposure=exposure,
                  rotation=rotation, marker=marker, marker_correlation=marker_correlation,
                  domain=dom, pose=pose, deformation=deformation, intensity_mixture=intensity_mixture,
                  bias=bias, blur_jitter=blur_jitter)
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
    if "warp" in p:  # smooth elastic displacement, defined on the image grid
        x, y = x + _waves(p["warp"][:, 0], y0, x0), y + _waves(p["warp"][:, 1], y0, x0)
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
    mix = p.get("tissues")  # per-image multipliers (lung, soft tissue, bone, vessels), or None
    tissue = (lambda k: col(mix[:, k])) if mix is not None else (lambda k: 1.0)
    img = col(p["tissue_level"]) * (1.0 - 0.25 * ax * ax)
    if mix is not None:
        img *= tissue(1)
    img += 0.12 * tissue(2) * ramp(ax - 0.07, 0.02)  # spine
    img -= 0.18 * ramp(ax - 0.03, 0.015) * ramp(y + 0.35, 0.04)  # trachea
    img = 0.04 + body * (img - 0.04)
    # clavicles
    for sign in (-1.0, 1.0):
        d = (y - (-0.718 + 0.18 * sign * x)) * (1.0 / 0.035)
        img += 0.10 * tissue(2) * np.exp(-d * d) * ramp(0.1 - sign * x, 0.03) * ramp(ax - 0.65, 0.05)

    # vascular markings: fine texture, denser towards the hila
    texture = smooth_field(rng, m, size, cells=max(8, size // 6))
    hilum = np.exp(-((ax - 0.22) * 4.0) ** 2 - (y * 2.0) ** 2)
    lung_tissue = col(p["lung_level"]) * tissue(0) + 0.025 * tissue(3) * texture + 0.06 * tissue(3) * hilum
    img += lung_any * (lung_tissue - img)

    # posterior ribs (nine, evenly spaced, curving down laterally), over lungs and chest wall
    cage = ramp(ellipse_r2(y, x, -0.05, 0.0, 0.78, 0.82) - 1.0, 0.1)
    u = (y - (0.55 * (ax - 0.08) ** 2 - 0.1 * ax) - col(p["rib_phase"]) + 0.78) * (1.0 / 0.13) + 0.5
    frac = (u - np.floor(u) - 0.5) * (0.13 / 0.035)
    ribs = np.exp(-frac * frac) * ((u > 0) & (u < 9) & (ax > 0.06))
    img += col(p["rib_level"]) * tissue(2) * ribs * cage

    # pathology: an opacity map in [0, 1], computed at half resolution (it is smooth)
    half = max(16, size // 2)
    yh, xh = grid(half)
    def patient(sel):
        xs = ca[sel] * xh - sa[sel] * yh - col(p["tx"][sel]) / sc[sel]
        ys = sa[sel] * xh + ca[sel] * yh - col(p["ty"][sel]) / sc[sel]
        if "warp" in p:
            xs, ys = xs + _waves(p["warp"][sel, 0], yh, xh), ys + _waves(p["warp"][sel, 1], yh, xh)
        return xs, ys
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
    rise = lesion_contrast * opac
    if "bias" in p:  # smooth multiplicative bias field over the whole image (the finding included)
        gain = np.exp(_waves(p["bias"], y0, x0))
        img *= gain
        rise = rise * gain
    lung_mask = (lung_any >= 0.5).astype(np.int64)
    peak = np.maximum(opac.max(axis=(1, 2), keepdims=True), 1e-6)
    lesion_mask = ((opac > 0.3 * peak) & (opac > 0.02) & (lung_mask > 0)).astype(np.int64)
    contrast = _mean_rise(img, rise, lesion_mask, p) * dom.intensity_scale

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
    if "blur_sigma" in p:  # per-image loss of resolution
        img = np.stack([blur(im[None], float(sg))[0] if sg > 0 else im for im, sg in zip(img, p["blur_sigma"])])
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


#: Mixture of tissue-intensity components (multipliers of lung, soft tissue, bone, vessels) and their weights:
#: standard; dense (large patient, under-penetrated: grey lungs, faint bones); thin (high contrast: dark lungs).
_TISSUE_COMPONENTS = np.array([[1.0, 1.0, 1.0, 1.0], [1.45, 1.12, 0.75, 0.8], [0.7, 0.88, 1.4, 1.3]])
_TISSUE_WEIGHTS = np.array([0.5, 0.25, 0.25])


def _draw_variation(p, seed, n, pose, deformation, intensity_mixture, bias, blur_jitter) -> dict:
    """Draw the variation knobs' per-image parameters into ``p`` (a second generator); return extra attrs.

    Nothing is drawn, and ``p`` is left alone, when every knob is 0: the images are then those of the
    generator without the knobs, bit for bit.
    """
    if not (pose or deformation or intensity_mixture or bias or blur_jitter):
        return {}
    vrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    shift = vrng.uniform(-0.15, 0.15, (n, 2))
    turn = np.deg2rad(vrng.uniform(-10.0, 10.0, n))
    zoom = np.exp(vrng.uniform(-0.15, 0.15, n))
    warp = _draw_waves(vrng, (n, 2), 0.04 * deformation, (0.5, 1.6))
    component = vrng.choice(len(_TISSUE_WEIGHTS), size=n, p=_TISSUE_WEIGHTS)
    jitter = vrng.normal(0.0, 0.1, (n, 4))
    field = _draw_waves(vrng, (n,), bias, (0.2, 0.7))
    sigma = vrng.uniform(0.0, 1.0, n) * blur_jitter
    attrs = {}
    if pose:
        p["tx"] = p["tx"] + pose * shift[:, 0]
        p["ty"] = p["ty"] + pose * shift[:, 1]
        p["angle"] = p["angle"] + pose * turn
        p["scale"] = p["scale"] * zoom ** pose
        attrs.update(shift_x=p["tx"].astype(np.float32), shift_y=p["ty"].astype(np.float32))
    if deformation:
        p["warp"] = warp
    if intensity_mixture:
        tissues = 1.0 + intensity_mixture * (_TISSUE_COMPONENTS[component] - 1.0 + jitter)
        p["tissues"] = np.clip(tissues, 0.3, 3.0)
        attrs.update(mixture_component=component.astype(np.int64),
                     lung_level=(p["lung_level"] * p["tissues"][:, 0]).astype(np.float32))
    if bias:
        p["bias"] = field
    if blur_jitter:
        p["blur_sigma"] = sigma
        attrs["blur_sigma"] = sigma.astype(np.float32)
    return attrs


def _draw_waves(rng, shape, amplitude, frequency) -> np.ndarray:
    """Parameters of a smooth random field, a sum of 4 plane waves: ``shape + (4, 4)`` (amplitude, fy, fx, phase).

    The field (see :func:`_waves`) has about ``amplitude`` standard deviation; ``frequency`` is the range of
    the waves' spatial frequencies in cycles per image width.
    """
    amp = rng.normal(0.0, 1.0, shape + (4,)) * amplitude / np.sqrt(2.0)  # 4 waves of variance a^2/2 each
    freq = np.pi * rng.uniform(*frequency, shape + (4,))  # radians per half-width: cycles per width * 2pi / 2
    theta = rng.uniform(0.0, 2.0 * np.pi, shape + (4,))
    phase = rng.uniform(0.0, 2.0 * np.pi, shape + (4,))
    return np.stack([amp, freq * np.sin(theta), freq * np.cos(theta), phase], axis=-1)


def _waves(params, y, x) -> np.ndarray:
    """Evaluate the fields of :func:`_draw_waves` (``(N, 4, 4)``) on a grid: ``(N, H, W)`` float32."""
    out = 0.0
    for k in range(params.shape[1]):
        a, fy, fx, ph = (col(params[:, k, j]) for j in range(4))
        out = out + a * np.sin(fy * y + fx * x + ph)
    return np.asarray(out, dtype=np.float32)
