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

import dataclasses
import functools

import numpy as np
import torch

from ...errors import ParameterError
from ._common import PhantomBatch, balanced_labels, check_common, check_range, domain_args
from ._torch import (Canvas, PixelNoise, Pose, Scratch, _gaussian_kernels, apply_domain, chunk_images, col,
                     field_cells, lerp_, phantom_device, ramp_coefficients, render_chunks, shift, smooth_field,
                     to_numpy)

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
    work = Scratch(dev)  # the image-sized temporaries, for this call only
    with torch.no_grad():
        # the chunks write their pixels straight into the outputs (no concatenation, no conversion pass)
        images = torch.empty((n, size, size), device=dev)
        lung, lesion = (torch.empty((n, size, size), dtype=torch.int64, device=dev) for _ in range(2))

        def render(s, e, draws):
            return _render({k: v[s:e] for k, v in p.items()}, labels[s:e], size, draws, canvas, lesion_contrast,
                           count, noise, dom, work, (images[s:e], lung[s:e], lesion[s:e]))

        chunks = render_chunks(n, chunk_images(size, dev), dev,
                               lambda s, e: _draw_pixels(noise_source, labels[s:e], size, count), render)
        del work
        if chunks:  # pixels per mask: float sums, exact
            contrast, lung_px, lesion_px, cons_px = (to_numpy(torch.cat(part)) for part in zip(*chunks))
            lung_px, lesion_px, cons_px = (v.astype(np.int64) for v in (lung_px, lesion_px, cons_px))
        else:
            contrast, lung_px, lesion_px, cons_px = np.zeros(0, np.float32), *(np.zeros(0, np.int64),) * 3

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
    images = images[:, None]
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


def _render(p, labels, size, draws, canvas, lesion_contrast, count, sigma_noise, dom, work, out):
    """Render one chunk of slices on ``canvas.device`` into ``out`` (images HU, lung mask, lesion mask: slices of
    the outputs); return ``(contrast, lung pixels, lesion pixels, consolidation pixels)`` per slice.

    ``work`` is the call's :class:`Scratch`: every image-sized temporary lives there (on a CPU a
    fresh tensor costs page faults), masks are 0/1 floats (cheaper than booleans on a CPU) until they are
    written out, and the operations are in place. Small structures (bones, heart, aorta, bronchi, trachea) and
    the ribs are drawn on the pixel windows they cover; vessels are stamped point by point. What decides the
    masks (lungs, lesion score and thresholds) keeps the arithmetic of the first torch renderer, so the masks
    are the same; the rest equals it up to float rounding (below 0.01 HU).
    """
    dev = canvas.device
    m = len(labels)
    shape = (m, size, size)
    t1, t2 = work("t1", *shape), work("t2", *shape)
    f64 = lambda v: torch.as_tensor(np.asarray(v, np.float64), device=dev)  # noqa: E731
    pose = Pose.rotation(p["angle"], p["scale"], p["tx"], p["ty"])
    y = canvas.quadric(pose.line(b=1.0), out=work("y", *shape))
    edge = 1.5 / size

    def patch(coefs, width):
        """``canvas.ramp(coefs, width)`` on the pixel window outside which it is 0 in every slice: the
        window (an index into ``(m, size, size)`` tensors) and the ramp there (small structures cost little)."""
        return _ramp_window(canvas, coefs, width, t1)

    def disc(cy, cx, ry, rx, angle=0.0):
        radius = min(float(np.min(ry)), float(np.min(rx)))
        return patch(shift(pose.ellipse(cy, cx, ry, rx, angle), 1.0), 2.0 * edge / radius)

    def lerp_in(target, window_ramp, value):
        window, weight = window_ramp
        lerp_(target[window], weight, value)

    def cut_(target, window_ramp):
        """``target *= 1 - ramp`` (only the window changes)."""
        window, weight = window_ramp
        target[window].mul_(weight.neg_().add_(1.0))

    brx, bry = p["body_rx"], p["body_ry"]
    q_body = pose.ellipse(0.05, 0.0, bry, brx)
    img = canvas.ramp(shift(q_body, 1.0), 2.0 * edge / 0.6, out=work("img", *shape))
    torch.add(_scalar(HU_AIR, dev), img, alpha=HU_FAT - HU_AIR, out=img)
    img.add_(canvas.ramp(shift(q_body, (1.0 - p["fat"] * 1.4) ** 2), 2.0 * edge / 0.6, out=t1), alpha=HU_SOFT - HU_FAT)

    # ribs: short bony segments evenly spaced around the chest wall, none over sternum or spine (drawn on the
    # window of the ring around the chest wall, q_body < 0.85, outside which they are 0)
    rows, cols = _support(q_body, 0.85, size)
    win = (slice(None), rows, cols)
    basis = _window_basis(canvas, rows.start, rows.stop, cols.start, cols.stop)
    wshape = (m, rows.stop - rows.start, cols.stop - cols.start)

    def on_window(coefs, name):
        c = torch.from_numpy(np.ascontiguousarray(coefs, np.float32)).to(dev, non_blocking=True)
        return torch.mm(c, basis, out=work(name, m, basis.shape[1])).view(wshape)

    theta = torch.atan2(on_window(pose.line(b=1.0 / bry, c=-0.05 / bry), "r1"),
                        on_window(pose.line(a=1.0 / brx), "r2"), out=work("r1", *wshape))
    # ring = ramp(|q - 0.77| - 0.055, 0.05)
    ring = on_window(shift(q_body, 0.77), "r2").abs_()
    torch.add(_scalar(1.6, dev), ring, alpha=-20.0, out=ring).clamp_(0.0, 1.0)
    # arc = ramp(|frac(8 theta / pi + 0.5) - 0.5| - 0.22, 0.1), the distance to the nearest integer by round
    phase = torch.mul(theta, 8.0 / np.pi, out=work("r3", *wshape))
    arc = phase.sub_(torch.round(phase, out=work("r4", *wshape))).abs_()
    torch.add(_scalar(2.7, dev), arc, alpha=-10.0, out=arc).clamp_(0.0, 1.0)
    # none over sternum or spine: ramp(0.3 - ||theta| - pi/2|, 0.1)
    lateral = theta.abs_().sub_(np.pi / 2).abs_()
    arc.mul_(torch.add(_scalar(-2.5, dev), lateral, alpha=10.0, out=lateral).clamp_(0.0, 1.0))
    lerp_(img[win], ring.mul_(arc).mul_(0.8), HU_CORTEX)
    lerp_in(img, disc(0.05 - bry * 0.84, 0.0, 0.05, 0.09), HU_BONE)  # sternum
    q_vert = pose.ellipse(0.36, 0.0, 0.12, 0.13)
    lerp_in(img, patch(shift(q_vert, 1.0), 2 * edge / 0.12), HU_CORTEX)
    lerp_in(img, patch(shift(q_vert, 0.6), 2 * edge / 0.12), HU_BONE)
    window, spine = disc(0.55, 0.0, 0.09, 0.035)
    lerp_in(img, (window, spine.mul_(0.8)), HU_CORTEX)  # spinous process

    # lungs: tilted ellipses with a straight medial border, around heart, aorta and spine
    lrx, lry, hr = p["lung_rx"], p["lung_ry"], p["heart_r"]
    lungs, q_lungs = work("lungs", *shape), []
    for sign in (-1.0, 1.0):
        q = pose.ellipse(0.02, sign * 0.43, lry, lrx, angle=-sign * 0.25)
        q_lungs.append(q)
        side = canvas.ramp(shift(q, 1.0), 2 * edge / 0.3, out=lungs if sign < 0 else t1)
        side.mul_(canvas.ramp(pose.line(a=-sign, c=0.13), edge, out=t2))
        if sign > 0:
            torch.maximum(lungs, side, out=lungs)
    cut_(lungs, disc(-0.12, 0.1, hr * 1.1, hr * 1.4, 0.5))  # heart
    cut_(lungs, disc(0.22, 0.14, 0.075, 0.075))  # descending aorta
    cut_(lungs, patch(shift(q_vert, 1.6), 0.2))
    lungs.mul_(canvas.ramp(shift(q_body, 0.85), 2 * edge / 0.6, out=t1))
    lung_mask = torch.ge(lungs, 0.5, out=work("lung_mask", *shape))  # 0/1

    # parenchyma with a gentle anterior-posterior gradient (dependent lung is denser)
    lung_img = smooth_field(draws["parenchyma"], size, out=work("lung_img", *shape), scratch=work)
    lung_img.mul_(25.0).add_(col(p["lung_hu"], dev)).add_(y, alpha=40.0)

    # vessels: points scattered in the lungs (bigger and brighter towards the hila), blurred into blobs
    k_hil, k_per = draws["px_hil"].shape[1], draws["px_per"].shape[1]
    py = draws["py"].to(dev)
    px = torch.cat([torch.sign(draws["px_sign"]) * draws["px_hil"], draws["px_per"]], 1).to(dev)
    amp = torch.cat([torch.full((m, k_hil), 3.0, device=dev), torch.full((m, k_per), 1.0, device=dev)], 1)
    s_, ty, tx, an = (f64(p[k])[:, None] for k in ("scale", "ty", "tx", "angle"))
    gx, gy = px * s_ + tx, py * s_ + ty  # patient coordinates -> image coordinates
    ix = ((torch.cos(an) * gx + torch.sin(an) * gy + 1) / 2 * size).to(torch.int64).clamp_(0, size - 1)
    iy = ((-torch.sin(an) * gx + torch.cos(an) * gy + 1) / 2 * size).to(torch.int64).clamp_(0, size - 1)
    sig = max(0.6, 0.007 * size)
    vessels = _blur_points(iy, ix, amp, size, sig, 2 * np.pi * sig * sig * 0.8, work).clamp_(0, 1)
    lerp_(lung_img, torch.mul(vessels, 0.9, out=t1), HU_SOFT)

    # bronchi near each hilum (air with a soft-tissue wall); trachea in the mediastinum
    for sign in (-1.0, 1.0):
        q = pose.ellipse(0.02, sign * 0.26, 0.05, 0.05)
        window, wall = patch(shift(q, 1.0), 0.2)
        lerp_in(lung_img, (window, wall.mul_(0.6)), HU_SOFT)
        lerp_in(lung_img, patch(shift(q, 0.45), 0.2), HU_AIR)
    lerp_(img, lungs, lung_img)
    lerp_in(img, disc(0.08, 0.0, 0.055, 0.065), HU_AIR)

    # lesions: a smooth field favouring the periphery and the posterior lung, thresholded per slice
    lesion = work("lesion", *shape).zero_()  # 0 background, 1 ground-glass, 2 consolidation
    contrast, lesion_px, cons_px = (torch.zeros(m, device=dev) for _ in range(3))
    sick_np = np.flatnonzero(labels == 1)
    if len(sick_np):
        k, sick, ps = len(sick_np), torch.as_tensor(sick_np, device=dev), pose[sick_np]
        one = (k, size, size)
        score = smooth_field(draws["lesion"], size, out=work("score", *one), scratch=work)
        # peripheral: how close to each lung's border, in lung radii (the lung on the slice's side of x = 0)
        left = torch.lt(canvas.quadric(ps.line(a=1.0), out=work("t1", *one)), 0.0, out=work("t1", *one))
        r2 = canvas.quadric(q_lungs[0][sick_np], out=work("t2", *one)).mul_(left)
        r2.add_(canvas.quadric(q_lungs[1][sick_np], out=work("t3", *one)).mul_(left.neg_().add_(1.0)))
        periph = r2.neg_().add_(1.0).abs_().neg_().add_(1.0).clamp_(0, 1)
        ys = torch.index_select(y, 0, sick, out=work("t1", *one))
        score.add_(periph, alpha=1.2).addcmul_(col(p["posterior"][sick_np], dev), ys)
        lm = torch.index_select(lung_mask, 0, sick, out=work("lm", *one))
        cfrac = p["cons_frac"][sick_np]
        thr, cons_thr = _quantile_in_mask(score, lm, 1.0 - p["involvement"][sick_np], 1.0 - cfrac)
        thr, cons_thr = thr[:, None, None], cons_thr[:, None, None]
        les = torch.gt(score, thr, out=work("les", *one)).mul_(lm)
        has_cons = col(cfrac > 0, dev)  # 0/1
        cons = torch.gt(score, cons_thr, out=work("t2", *one)).mul_(les).mul_(has_cons)
        # soft edges: the HU rise tapers over about a pixel outside the mask
        soft = torch.sub(score, thr, out=work("t3", *one)).mul_(4.0).add_(0.5).clamp_(0, 1).mul_(lm)
        lung_hu = col(p["lung_hu"][sick_np], dev)
        before = torch.index_select(img, 0, sick, out=work("before", *one))
        clear = torch.index_select(vessels, 0, sick, out=work("t1", *one)).mul_(-0.5).add_(1.0)
        soft.mul_(lesion_contrast * (col(p["ggo_hu"][sick_np], dev) - lung_hu)).mul_(clear)
        after = torch.add(before, soft, out=work("after", *one))
        cons_soft = torch.sub(score, cons_thr, out=work("t1", *one)).mul_(5.0).add_(0.5).clamp_(0, 1) \
            .mul_(lm).mul_(has_cons)
        cons_target = torch.add(before, lesion_contrast * (col(p["cons_hu"][sick_np], dev) - lung_hu), out=soft)
        after.lerp_(cons_target, cons_soft)
        img.index_copy_(0, sick, after)
        lesion.index_copy_(0, sick, torch.add(les, cons, out=work("t1", *one)))
        # the finding's contrast: mean HU rise inside its mask (the gain acts on it; blur and noise do not count)
        n_les = les.sum(dim=(1, 2))
        rise = after.sub_(before).mul_(les).sum(dim=(1, 2)) / n_les.clamp_min(1)
        contrast[sick] = rise * dom.intensity_scale
        lesion_px[sick], cons_px[sick] = n_les, cons.sum(dim=(1, 2))

    img = apply_domain(img, draws["z"], dom, sigma_noise, reference=HU_AIR, offset_unit=1000.0, mid=0.0)
    out_img, out_lung, out_lesion = out
    torch.clamp(img, -1024.0, 3071.0, out=out_img)
    out_lung.copy_(lung_mask)
    out_lesion.copy_(lesion)
    return contrast, lung_mask.sum(dim=(1, 2)), lesion_px, cons_px


@functools.lru_cache(maxsize=64)
def _scalar(value: float, device: torch.device) -> torch.Tensor:
    """A 0-d float32 tensor (``torch.add(_scalar(c), x, alpha=k)`` is ``c + k x`` in one pass)."""
    return torch.tensor(float(value), device=device)


def _ramp_window(canvas: Canvas, coefs: np.ndarray, width: float, out: torch.Tensor):
    """``canvas.ramp(coefs, width)`` computed only on the smallest pixel window (rows and columns) outside
    which the ramp is 0 in every slice, into ``out``'s memory: ``(window, ramp)``, ``window`` an index
    ``(:, rows, cols)`` of ``(N, size, size)`` tensors. The same numbers as on the whole canvas."""
    size, m = canvas.size, len(coefs)
    rows, cols = _support(coefs, width / 2.0, size)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    basis = _window_basis(canvas, rows.start, rows.stop, cols.start, cols.stop)
    c = torch.from_numpy(np.ascontiguousarray(ramp_coefficients(coefs, width), np.float32))
    c = c.to(canvas.device, non_blocking=True)
    ramp = torch.mm(c, basis, out=out.view(-1)[:m * h * w].view(m, h * w)).view(m, h, w).clamp_(0.0, 1.0)
    return (slice(None), rows, cols), ramp


def _window_basis(canvas: Canvas, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    """The canvas basis on the pixel window ``[r0, r1) x [c0, c1)``: ``(6, h · w)``."""
    key = (r0, r1, c0, c1)
    cache = canvas.__dict__.setdefault("_windows", {})
    if key not in cache:
        cache[key] = canvas.basis.view(6, canvas.size, canvas.size)[:, r0:r1, c0:c1].reshape(6, -1).contiguous()
    return cache[key]


def _support(coefs: np.ndarray, level: float, size: int, margin: int = 2) -> tuple[slice, slice]:
    """Rows and columns of the pixels where the quadric ``coefs`` (ellipses, ``(N, 6)`` on the canvas basis)
    is below ``level`` in some slice, widened by ``margin`` pixels (float rounding); never empty."""
    a, b, c, d, e, f = coefs.T
    det = 4.0 * a * c - b * b  # the quadratic part is positive definite for an ellipse
    if not (det > 0).all():
        return slice(0, size), slice(0, size)
    centre = np.stack([b * e - 2.0 * c * d, b * d - 2.0 * a * e]) / det  # (x, y) where the gradient is 0
    k = np.maximum(level - f - 0.5 * (d * centre[0] + e * centre[1]), 0.0) * 4.0 / det
    half = np.sqrt(np.stack([k * c, k * a]))  # q < level: (p - centre)' M (p - centre) < k det / 4
    lo, hi = (centre - half).min(1), (centre + half).max(1)  # canvas coordinates of the box
    scale = size / 2.0
    (x0, y0), (x1, y1) = (lo + 1.0) * scale - 0.5, (hi + 1.0) * scale - 0.5  # pixel indices
    r0, c0 = (min(max(int(np.floor(v)) - margin, 0), size - 1) for v in (y0, x0))
    r1, c1 = (min(max(int(np.ceil(v)) + margin + 1, start + 1), size) for v, start in ((y1, r0), (x1, c0)))
    return slice(r0, r1), slice(c0, c1)


def _blur_points(iy, ix, amp, size, sigma, scale, work) -> torch.Tensor:
    """The points ``amp`` at pixels ``(iy, ix)`` (``(N, P)`` each) blurred as :func:`blur` does (edges
    replicated), times ``scale``: each point adds its ``(2r + 1)²`` stamp of the separable kernel (cheaper than
    blurring whole images, the points are few) into a padded canvas, whose inside is returned."""
    weights, r, offsets = _blur_stamp(size, float(sigma), iy.device)
    m, w = len(iy), size + 2 * r
    base = (torch.arange(m, device=iy.device)[:, None] * w + iy + r) * w + ix + r  # (N, P) in the padded canvas
    rows = weights[iy].mul_(amp.to(torch.float32)[:, :, None])  # (N, P, 2r + 1)
    stamps = torch.mul(rows[:, :, :, None], weights[ix][:, :, None, :])  # (N, P, 2r + 1, 2r + 1)
    pad = work("blur.pad", m, w, w).zero_()
    index = (base[:, :, None] + offsets).view(-1)
    if pad.device.type == "cpu":  # in order, one thread: the same sums every time
        pad.view(-1).index_add_(0, index, stamps.view(-1))
    else:  # index_add_ adds atomically (in any order) on a GPU; the sorted accumulation is reproducible
        pad.view(-1).index_put_((index,), stamps.view(-1), accumulate=True)
    return torch.mul(pad[:, r:r + size, r:r + size], scale, out=work("vessels", m, size, size))


@functools.lru_cache(maxsize=16)
def _blur_stamp(size: int, sigma: float, device: torch.device) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The 1-D weights of :func:`blur` (scipy's kernel, edges replicated) as stamps: ``weights[p, r + d]`` is
    the weight of input pixel ``p`` in output pixel ``p + d`` (0 outside the image); ``r``; the offsets of a
    ``(2r + 1)²`` stamp in a canvas padded by ``r``."""
    radius = int(3.0 * sigma + 0.5)
    k = _gaussian_kernels(torch.tensor([sigma], dtype=torch.float64), radius)[0].double().numpy()
    B = np.zeros((size, size))  # B[i, p]: weight of input p in output i (reads clamped to the edge)
    for j in range(2 * radius + 1):
        np.add.at(B, (np.arange(size), np.clip(np.arange(size) + j - radius, 0, size - 1)), k[j])
    weights = np.zeros((size, 2 * radius + 1))
    for d in range(-radius, radius + 1):
        p = np.arange(max(0, -d), min(size, size - d))
        weights[p, d + radius] = B[p + d, p]
    off = torch.arange(-radius, radius + 1, device=device)
    offsets = (off[:, None] * (size + 2 * radius) + off[None, :]).reshape(-1)
    return torch.as_tensor(weights, dtype=torch.float32, device=device), radius, offsets


def _per_slice(name: str, values, n: int, low: float, high: float) -> np.ndarray:
    """``values`` as a float64 array of ``n`` finite numbers in ``[low, high]`` (a clear error otherwise)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size != n:
        raise ParameterError(f"{name} must hold one value per slice: {array.size} values for n={n}")
    if not np.all(np.isfinite(array)) or array.min(initial=low) < low or array.max(initial=high) > high:
        raise ParameterError(f"{name} must lie between {low} and {high}, got {array.min():.3g} to {array.max():.3g}")
    return array


def _quantile_in_mask(values: torch.Tensor, mask: torch.Tensor, q, q_upper) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image quantiles of ``values`` on a 2x subsample: ``q`` (array) inside ``mask`` (0/1), and ``q_upper``
    inside the part of the mask above that first quantile; ``inf`` where a mask is empty.

    One sort gives both: the masked values above the first quantile are the tail of the sorted masked values.
    """
    n = len(values)
    v = values[:, ::2, ::2].reshape(n, -1)
    mk = mask[:, ::2, ::2].reshape(n, -1)
    v = v.masked_fill_(mk == 0, torch.inf)
    if v.device.type == "cpu":  # NumPy's vectorised sort is many times faster than torch's on a CPU
        v = torch.from_numpy(np.sort(v.numpy(), axis=1))
    else:
        v = v.sort(dim=1).values
    counts = mk.sum(dim=1).to(torch.int64)
    dev = values.device
    pos = torch.minimum(torch.floor(torch.as_tensor(np.asarray(q, np.float64), device=dev) * counts)
                        .to(torch.int64), (counts - 1).clamp_min(0)).clamp_min(0)
    first = torch.where(counts > 0, torch.gather(v, 1, pos[:, None])[:, 0], torch.inf)
    below = (v <= first[:, None]).sum(dim=1)  # values at or under the first quantile (all masked ones if inf)
    above = (counts - below).clamp_min(0)
    pos = torch.minimum(torch.floor(torch.as_tensor(np.asarray(q_upper, np.float64), device=dev) * above)
                        .to(torch.int64), (above - 1).clamp_min(0)).clamp_min(0)
    upper = torch.gather(v, 1, (below.clamp_max(v.shape[1] - 1) + pos)[:, None].clamp_max(v.shape[1] - 1))[:, 0]
    return first, torch.where(above > 0, upper, torch.inf)
