"""Lung ultrasound phantoms: frames and clips scored 0 to 3 by the ICLUS definitions.

B-mode images (display intensity in ``[0, 1]``, black outside the field of
view) from a convex probe (a fan) or a linear probe (a rectangle). Each image
is first drawn in probe space (rows = depth, columns = lateral position)
where the lung's signs are horizontal or vertical, then scan-converted; so
A-lines follow the fan's arcs and B-lines its rays, as on a real scanner.

Scores (Soldati et al. 2020; Roy et al., IEEE TMI 2020):

0. continuous, regular pleural line with horizontal A-lines (reverberations at
   multiples of the pleural depth).
1. indented, irregular pleural line with vertical white areas below it: a few
   separate B-lines (laser-like bright rays from the pleura to the bottom of
   the image that erase the A-lines).
2. broken pleural line with small to large consolidated (darker, tissue-like)
   areas below the break, air bronchograms inside, white areas below.
3. dense, largely extended white lung (confluent B-lines over most of the
   width), with or without consolidations.

Nuisances: chest-wall speckle and fascia, rib shadows, depth attenuation,
gain, probe type, pleural depth.

Variation knobs (all 0 by default, which renders exactly the images of earlier
versions for the same seed; their randomness comes from a second generator
derived from the seed, so turning one on changes nothing else), as for the chest
X-ray phantom: ``pose`` (where the probe sits: depth and tilt of the pleural line,
wider rib shadows), ``intensity_mixture`` (per-image gain, echo levels and dynamic
range drawn from a mixture of machine presets), ``bias`` (depth-dependent
attenuation and a smooth time-gain-compensation field), ``blur_jitter`` (a per-image
loss of resolution) and ``fade`` (the findings of abnormal frames shrink and fade,
some down to invisible, so that no reader can grade every frame right).
"""
from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ._common import (PhantomBatch, apply_domain, balanced_labels, blur, check_common, check_range,
                      chunk_size, col, domain_args, ellipse_r2, ramp, render_in_chunks)

__all__ = ["lung_ultrasound", "lung_ultrasound_clips", "LUS_CLASSES"]

LUS_CLASSES = ["score 0", "score 1", "score 2", "score 3"]
FINDINGS = ["background", "pleural line", "A-line", "B-line", "consolidation"]
PROBES = ("convex", "linear", "mixed")
_MAX_B = 8


def lung_ultrasound(n: int, size: int = 64, seed: int = 0, *, probe: str = "convex",
                    lesion_contrast: float = 1.0, lesion_size: float = 1.0, count: float = 1.0,
                    noise: float = 0.04, speckle: float = 0.8, domain="A", intensity_scale=None,
                    intensity_offset=None, blur=None, noise_texture=None, resolution=None, pose: float = 0.0,
                    intensity_mixture: float = 0.0, bias: float = 0.0, blur_jitter: float = 0.0,
                    fade: float = 0.0) -> PhantomBatch:
    """Generate ``n`` lung ultrasound frames with ICLUS scores 0-3 and finding masks.

    Args:
        n: number of frames; the four scores are balanced.
        size: side of the square images in pixels.
        seed: seed of the random generators (same seed, same images).
        probe: ``convex`` (fan), ``linear`` (rectangle) or ``mixed`` (half each, at random).
        lesion_contrast: difficulty: brightness of the pleura, A-lines, B-lines and the darkness of
            consolidations relative to the background (1 default).
        lesion_size: difficulty: scale of the consolidations.
        count: difficulty: scale of the number of B-lines (1 default).
        noise: additive electronic noise std (display units).
        speckle: speckle strength, 0 (none) to 1 (fully developed).
        domain, intensity_scale, intensity_offset, blur, noise_texture, resolution:
            scanner knobs (see :class:`Domain`).
        pose: variation: where the probe sits (0 to 3): at 1, the pleural line lies up to 0.08 of the
            imaging depth deeper or shallower and tilts up to 0.06 more, and a rib shadow can reach up to
            0.35 of the half-width further in (it hides what lies under it).
        intensity_mixture: variation: spread of the per-image echo levels (0 to 2): each image draws a
            machine preset from a mixture (standard, low gain, high gain with a bright chest wall, low
            dynamic range) that scales the gain, the chest-wall echo, the lung's floor and the log
            compression, plus a per-level jitter; 1 is the full spread.
        bias: variation: strength of the depth-dependent shading (0 to 1): extra attenuation (up to
            1.5 ``bias`` more) and a smooth gain field, mostly along depth (a time-gain-compensation
            curve), whose log-gain has about ``bias`` standard deviation.
        blur_jitter: variation: each image is blurred with a Gaussian of lateral sigma drawn uniformly
            in ``[0, blur_jitter]`` pixels, and 0.6 of that axially (0 to 4).
        fade: variation: how far the findings of abnormal frames run down (0 to 1): each abnormal
            frame (clip) draws a strength ``s = 1 - fade * u`` (``u`` uniform in [0, 1]) that scales the
            contrast of its B-lines, white lung and consolidation and shrinks their size (by
            ``0.5 + 0.5 s``), and pulls its A-lines towards a normal frame's; at 1, some findings are
            invisible and the best possible accuracy is below 1. The label stays the frame's grade.

    Returns:
        :class:`PhantomBatch`, ``images`` ``(n, 1, size, size)`` in [0, 1]; masks
        ``findings`` (0 background, 1 pleural line, 2 A-line, 3 B-line,
        4 consolidation; the default), ``consolidation`` (0/1) and
        ``sector`` (0/1, the field of view); attrs ``score``, ``severity``
        (= score), ``n_b_lines``, ``lesion_area`` (B-lines plus consolidation,
        fraction of the image), ``consolidation_area``, ``pleural_depth``
        (fraction of the imaging depth), ``probe`` (0 convex, 1 linear), ``domain``; with any variation
        knob: ``finding_strength`` (``s`` above: 1 for normal frames and without ``fade``),
        ``finding_contrast`` (the B-lines' and consolidation's contrast relative to the generator's
        default: ``s`` times ``lesion_contrast``; 0 for normal frames), ``finding_size`` (their size
        relative to the default; 0 for normal frames); with ``intensity_mixture``: ``preset`` (0
        standard, 1 low gain, 2 high gain, 3 low dynamic range), ``gain``; with ``blur_jitter``:
        ``blur_sigma`` (pixels).
    """
    batch = _generate(n, 1, size, seed, probe, lesion_contrast, lesion_size, count, noise, speckle,
                      domain, intensity_scale, intensity_offset, blur, noise_texture, resolution,
                      pose, intensity_mixture, bias, blur_jitter, fade)
    batch.kind = "lung_ultrasound"
    return batch


def lung_ultrasound_clips(n: int, frames: int = 16, size: int = 64, seed: int = 0, *,
                          probe: str = "convex", lesion_contrast: float = 1.0, lesion_size: float = 1.0,
                          count: float = 1.0, noise: float = 0.04, speckle: float = 0.8,
                          domain="A", intensity_scale=None, intensity_offset=None, blur=None,
                          noise_texture=None, resolution=None, pose: float = 0.0, intensity_mixture: float = 0.0,
                          bias: float = 0.0, blur_jitter: float = 0.0, fade: float = 0.0) -> PhantomBatch:
    """Generate ``n`` lung ultrasound clips of ``frames`` frames with a clip-level score.

    The probe is still; the lung slides under the pleura with breathing (a
    lateral shift of everything below the pleural line), B-lines flicker and
    consolidations can slide partly out of view. Each frame is scored by the
    same rules as :func:`lung_ultrasound`; the clip's score is the highest frame
    score (ICLUS video scoring), and at least one frame shows it.

    Args:
        n: number of clips; clip scores are balanced.
        frames: frames per clip (2 to 256).
        size, seed, probe, lesion_contrast, lesion_size, count, noise, speckle, domain, ...,
            pose, intensity_mixture, bias, blur_jitter, fade: as in :func:`lung_ultrasound`
            (the variation is drawn per clip: the probe is still).

    Returns:
        :class:`PhantomBatch` with ``images`` ``(n, frames, 1, size, size)``,
        masks ``(n, frames, size, size)``, ``labels`` the clip scores, and
        attrs as for frames (per clip) plus ``frame_scores`` ``(n, frames)``.
    """
    frames = int(check_range("frames", frames, 2, 256))
    batch = _generate(n, frames, size, seed, probe, lesion_contrast, lesion_size, count, noise, speckle,
                      domain, intensity_scale, intensity_offset, blur, noise_texture, resolution,
                      pose, intensity_mixture, bias, blur_jitter, fade)
    batch.kind = "lung_ultrasound_clips"
    return batch


def _generate(n, frames, size, seed, probe, lesion_contrast, lesion_size, count, noise, speckle,
              domain, intensity_scale, intensity_offset, blur_, noise_texture, resolution,
              pose=0.0, intensity_mixture=0.0, bias=0.0, blur_jitter=0.0, fade=0.0):
    n, size = check_common(n, size)
    if probe not in PROBES:
        raise ParameterError(f"probe must be one of {PROBES}, not {probe!r}")
    lesion_contrast = check_range("lesion_contrast", lesion_contrast, 0.0, 5.0)
    lesion_size = check_range("lesion_size", lesion_size, 0.2, 3.0)
    count = check_range("count", count, 0.0, 3.0)
    noise = check_range("noise", noise, 0.0, 1.0)
    speckle = check_range("speckle", speckle, 0.0, 1.0)
    dom = domain_args(domain, intensity_scale, intensity_offset, blur_, noise_texture, resolution)
    pose = check_range("pose", pose, 0.0, 3.0)
    intensity_mixture = check_range("intensity_mixture", intensity_mixture, 0.0, 2.0)
    bias = check_range("bias", bias, 0.0, 1.0)
    blur_jitter = check_range("blur_jitter", blur_jitter, 0.0, 4.0)
    fade = check_range("fade", fade, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, 4, rng)
    p = _draw_params(rng, labels, probe, lesion_size, count)
    variation = _draw_variation(p, labels, seed, lesion_contrast, pose, intensity_mixture, bias, blur_jitter, fade)

    t_total = n * frames
    images = np.empty((t_total, size, size), np.float32)
    findings = np.empty((t_total, size, size), np.int64)
    sector = np.empty((t_total, size, size), np.int64)
    frame_scores = np.empty(t_total, np.int64)
    n_b = np.empty(t_total, np.int64)
    step = max(1, chunk_size(size, 2 ** 17) // frames)  # clips per chunk
    render_in_chunks(p, n, step,
                     lambda sub, s, e: _render_clips(sub, labels[s:e], frames, size, rng, lesion_contrast,
                                                     noise, speckle, dom),
                     (images, findings, sector, frame_scores, n_b), rows_per_item=frames)

    consolidation = (findings == 4).astype(np.int64)
    area = float(size * size)
    attrs_frame = {
        "score": frame_scores,
        "severity": frame_scores.copy(),
        "n_b_lines": n_b,
        "lesion_area": (((findings == 3) | (findings == 4)).sum(axis=(1, 2)) / area).astype(np.float32),
        "consolidation_area": (consolidation.sum(axis=(1, 2)) / area).astype(np.float32),
    }
    attrs_clip = {
        "pleural_depth": p["dp"].astype(np.float32),
        "probe": p["probe"].astype(np.int64),
        "domain": np.full(n, dom.id, np.int64),
        **variation,
    }
    mask_classes = {"findings": list(FINDINGS), "consolidation": ["background", "consolidation"],
                    "sector": ["outside", "field of view"]}
    params = dict(n=n, frames=frames, size=size, seed=seed, probe=probe, lesion_contrast=lesion_contrast,
                  lesion_size=lesion_size, count=count, noise=noise, speckle=speckle, domain=dom, pose=pose,
                  intensity_mixture=intensity_mixture, bias=bias, blur_jitter=blur_jitter, fade=fade)
    if frames == 1:
        attrs = {**attrs_frame, **attrs_clip}
        return PhantomBatch(
            images=images[:, None], masks={"findings": findings, "consolidation": consolidation, "sector": sector},
            labels=labels, attrs=attrs, class_names=list(LUS_CLASSES), mask_classes=mask_classes,
            default_mask="findings", units="a.u.", params=params)
    shape = (n, frames, size, size)
    fs = frame_scores.reshape(n, frames)
    attrs = {
        "score": fs.max(axis=1),
        "severity": fs.max(axis=1),
        "frame_scores": fs,
        "n_b_lines": n_b.reshape(n, frames).max(axis=1),
        "lesion_area": attrs_frame["lesion_area"].reshape(n, frames).mean(axis=1),
        "consolidation_area": attrs_frame["consolidation_area"].reshape(n, frames).mean(axis=1),
        **attrs_clip,
    }
    return PhantomBatch(
        images=images.reshape(n, frames, 1, size, size),
        masks={"findings": findings.reshape(shape), "consolidation": consolidation.reshape(shape),
               "sector": sector.reshape(shape)},
        labels=labels, attrs=attrs, class_names=list(LUS_CLASSES), mask_classes=mask_classes,
        default_mask="findings", units="a.u.", params=params)


def _draw_params(rng, labels, probe, lesion_size, count):
    n = len(labels)
    if probe == "mixed":
        probe_id = rng.integers(0, 2, n)
    else:
        probe_id = np.full(n, PROBES.index(probe), np.int64)
    nb_range = {0: (0, 0), 1: (1, 4), 2: (1, 5), 3: (0, 2)}
    n_b = np.array([rng.integers(nb_range[s][0], nb_range[s][1] + 1) for s in labels])
    n_b = np.clip(np.round(n_b * count), 0, _MAX_B).astype(np.int64)
    n_b[(labels == 1) & (n_b == 0) & (count > 0)] = 1
    # an isolated faint B-line is normal: some score-0 frames have one
    normal_b = (labels == 0) & (rng.uniform(size=n) < 0.3) & (count > 0)
    n_b[normal_b] = 1
    b_amp = rng.uniform(0.3, 0.9, (n, _MAX_B))
    b_amp[normal_b, 0] = rng.uniform(0.2, 0.45, int(normal_b.sum()))
    return {
        "probe": probe_id,
        "dp": rng.uniform(0.15, 0.36, n),  # pleural depth, fraction of the imaging depth
        "tilt": rng.uniform(-0.04, 0.04, n),
        "gain": rng.uniform(0.65, 1.35, n),
        "atten": rng.uniform(0.3, 1.0, n),
        "wall_echo": rng.uniform(0.25, 0.4, n),
        "fascia_d": rng.uniform(0.3, 0.8, (n, 2)),  # fraction of pleural depth
        "rib": rng.uniform(size=(n, 2)) < 0.5,  # a rib at the left / right edge
        "rib_l": rng.uniform(0.72, 0.95, (n, 2)),
        "pleura_amp": rng.uniform(0.8, 1.1, n),
        "irregular": np.where(labels == 0, rng.uniform(0.0, 0.008, n), rng.uniform(0.004, 0.018, n)),
        "a_lines": np.where(labels == 0, rng.uniform(0.4, 1.0, n),
                            np.where(labels == 1, rng.uniform(0.2, 0.9, n), rng.uniform(0.0, 0.5, n))),
        "n_b": n_b,
        "b_l": rng.uniform(-0.75, 0.75, (n, _MAX_B)),
        "b_w": rng.uniform(0.03, 0.06, (n, _MAX_B)),
        "b_amp": b_amp,
        "cons": labels >= 2,
        "cons_present": (labels == 2) | ((labels == 3) & (rng.uniform(size=n) < 0.4)),
        "cons_l": rng.uniform(-0.5, 0.5, n),
        "cons_w": rng.uniform(0.08, 0.25, n) * lesion_size,
        "cons_d": rng.uniform(0.05, 0.16, n) * lesion_size,
        "gap_w": rng.uniform(1.1, 1.5, n),
        "white_from": rng.uniform(-1.0, -0.2, n),
        "white_to": rng.uniform(0.2, 1.0, n),
        "white_amp": rng.uniform(0.35, 0.7, n),
        "slide_amp": rng.uniform(0.02, 0.06, n),
        "slide_phase": rng.uniform(0, 2 * np.pi, n),
        "breath_frames": rng.uniform(10, 20, n),
    }


#: Machine presets of the intensity mixture: multipliers of (gain, chest-wall echo, the lung's echo floor, the
#: log-compression factor) and their weights: standard; low gain; high gain with a bright chest wall; low dynamic
#: range (strong compression: a grey, flat image).
_PRESETS = np.array([[1.0, 1.0, 1.0, 1.0], [0.6, 0.9, 0.8, 1.0], [1.5, 1.35, 1.3, 1.0], [1.0, 1.1, 1.6, 4.0]])
_PRESET_WEIGHTS = np.array([0.4, 0.2, 0.2, 0.2])


def _draw_variation(p, labels, seed, lesion_contrast, pose, intensity_mixture, bias, blur_jitter, fade) -> dict:
    """Draw the variation knobs' per-clip parameters into ``p`` (a second generator); return extra attrs.

    Nothing is drawn, and ``p`` is left alone, when every knob is 0: the images are then those of the
    generator without the knobs, bit for bit. All draws are made whichever knobs are on, so one knob's
    values do not depend on the others.
    """
    if not (pose or intensity_mixture or bias or blur_jitter or fade):
        return {}
    n = len(labels)
    vrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    depth, tilt = vrng.uniform(-0.08, 0.08, n), vrng.uniform(-0.06, 0.06, n)
    rib_in = vrng.uniform(0.0, 0.35, (n, 2))
    preset = vrng.choice(len(_PRESET_WEIGHTS), size=n, p=_PRESET_WEIGHTS)
    jitter = vrng.normal(0.0, 0.1, (n, 4))
    atten = vrng.uniform(0.0, 1.5, n)
    field = _draw_waves(vrng, n, bias)
    sigma = vrng.uniform(0.0, 1.0, n) * blur_jitter
    strength = np.where(labels > 0, 1.0 - fade * vrng.uniform(0.0, 1.0, n), 1.0)
    normal_a = vrng.uniform(0.4, 1.0, n)  # the A-lines of a normal frame, where a faded frame's tend
    attrs = {}
    if pose:
        p["dp"] = np.clip(p["dp"] + pose * depth, 0.08, 0.6)
        p["tilt"] = p["tilt"] + pose * tilt
        p["rib_l"] = np.clip(p["rib_l"] - pose * rib_in, 0.2, None)
        p["rib_hides"] = np.ones(n, bool)  # B-lines under a rib shadow are not seen
    if intensity_mixture:
        levels = np.clip(1.0 + intensity_mixture * (_PRESETS[preset] - 1.0 + jitter), 0.3, 6.0)
        p["gain"] = p["gain"] * levels[:, 0]
        p["wall_echo"] = p["wall_echo"] * levels[:, 1]
        p["floor"] = 0.07 * levels[:, 2]
        p["compress"] = 8.0 * levels[:, 3]
        attrs.update(preset=preset.astype(np.int64), gain=p["gain"].astype(np.float32))
    if bias:
        p["atten"] = p["atten"] + bias * atten
        p["tgc"] = field
    if blur_jitter:
        p["blur_sigma"] = sigma
        attrs["blur_sigma"] = sigma.astype(np.float32)
    if fade:
        size = 0.5 + 0.5 * strength
        p["b_amp"] = p["b_amp"] * strength[:, None]
        p["b_w"] = p["b_w"] * size[:, None]
        p["white_amp"] = p["white_amp"] * strength
        p["white_from"], p["white_to"] = p["white_from"] * size, p["white_to"] * size
        p["cons_w"], p["cons_d"] = p["cons_w"] * size, p["cons_d"] * size
        p["cons_c"] = strength
        p["a_lines"] = strength * p["a_lines"] + (1.0 - strength) * normal_a
    abnormal = labels > 0
    attrs.update(finding_strength=strength.astype(np.float32),
                 finding_contrast=np.where(abnormal, strength * lesion_contrast, 0.0).astype(np.float32),
                 finding_size=np.where(abnormal, 0.5 + 0.5 * strength, 0.0).astype(np.float32))
    return attrs


def _draw_waves(rng, n, amplitude) -> np.ndarray:
    """Parameters ``(n, 3, 4)`` (amplitude, depth frequency, lateral frequency, phase) of a smooth gain field that
    varies mostly with depth, a sum of 3 waves with about ``amplitude`` standard deviation (see :func:`_waves`)."""
    amp = rng.normal(0.0, 1.0, (n, 3)) * amplitude * np.sqrt(2.0 / 3.0)  # 3 waves of variance a^2/3 each
    fd = 2.0 * np.pi * rng.uniform(0.4, 1.5, (n, 3))  # cycles over the imaging depth
    fl = np.pi * rng.uniform(-0.3, 0.3, (n, 3))  # cycles per half-width: a slow lateral drift
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, 3))
    return np.stack([amp, fd, fl, phase], axis=-1)


def _waves(params, d, lat) -> np.ndarray:
    """Evaluate the fields of :func:`_draw_waves` (``(K, 3, 4)``) at depth ``d`` and lateral ``lat``: ``(K, H, W)``."""
    out = 0.0
    for j in range(params.shape[1]):
        a, fd, fl, ph = (col(params[:, j, i]) for i in range(4))
        out = out + a * np.sin(fd * d + fl * lat + ph)
    return np.asarray(out, dtype=np.float32)


def _render_clips(p, labels, frames, size, rng, lesion_contrast, noise, speckle, dom):
    """Render ``len(labels)`` clips of ``frames`` frames; frames == 1 gives still frames."""
    m = len(labels)
    t = np.arange(frames)
    # lateral sliding of the lung under the pleura, per frame (fraction of the width)
    if frames > 1:
        shift = p["slide_amp"][:, None] * np.sin(2 * np.pi * t[None] / p["breath_frames"][:, None] + p["slide_phase"][:, None])
        shift -= shift[:, :1]  # the first frame shows the clip's findings in place
        b_on = rng.uniform(size=(m, frames, _MAX_B)) < 0.8
        b_on[:, 0] = True
    else:
        shift = np.zeros((m, 1))
        b_on = np.ones((m, 1, _MAX_B), bool)
    k = m * frames

    def per_frame(a):
        return np.repeat(np.asarray(a), frames, axis=0)

    H = W = size
    margin = int(np.ceil(0.1 * W)) + 2
    d = ((np.arange(H, dtype=np.float32) + 0.5) / H)[None, :, None]  # depth 0..1
    lat_ext = ((np.arange(W + 2 * margin, dtype=np.float32) - margin + 0.5) / W * 2 - 1)  # lateral with margins
    lat = lat_ext[margin:margin + W][None, None, :]
    sh = shift.reshape(k)  # lateral shift per frame
    sh_px = np.round(sh * W / 2).astype(int)

    # clip-level random textures, generated wider than the view and cropped per frame
    def complex_speckle():
        return speckle_field(rng, (m, H, W + 2 * margin), lateral_passes=2 if size >= 64 else 1)

    lung_tex = complex_speckle()
    wall_tex = complex_speckle() if frames > 1 else lung_tex  # a still frame needs one texture
    rows = np.arange(H)[None, :, None]
    clip_idx = np.repeat(np.arange(m), frames)[:, None, None]
    still = margin + np.arange(W)[None, None, :]
    slid = still - sh_px[:, None, None]
    wall_s = wall_tex[clip_idx, rows, still]
    lung_s = lung_tex[clip_idx, rows, slid]
    irregular_ext = blur(rng.standard_normal((m, W + 2 * margin)).astype(np.float32)[:, None], (0, max(1.0, W / 24)))[:, 0]
    irregular_ext /= irregular_ext.std(axis=1, keepdims=True) + 1e-6
    irr = irregular_ext[np.repeat(np.arange(m), frames)[:, None], margin + np.arange(W)[None] - sh_px[:, None]]

    P = {key: per_frame(v) for key, v in p.items()}
    dp_smooth = col(P["dp"]) + col(P["tilt"]) * lat  # (k, 1, W)
    dp = dp_smooth + col(P["irregular"]) * irr[:, None, :]
    below = ramp(dp - d, 1.5 / H)  # 1 below the pleural line

    # chest wall: speckle, two fascia lines, echo falling with depth
    fascia = np.zeros((k, H, 1), np.float32)
    for j in range(2):
        fd = col(P["fascia_d"][:, j] * P["dp"])
        fascia += np.exp(-((d - fd) * (H / 1.2)) ** 2)
    amp = (col(P["wall_echo"]) + 0.35 * fascia) * (1.0 - below)

    # pleural line, with gaps where it is broken (score 2 and some 3)
    line_t = 1.2 / H
    pleura_profile = np.exp(-((d - dp) / line_t) ** 2)
    line_amp = col(P["pleura_amp"]) * np.ones((k, 1, W), np.float32)
    cons = P["cons_present"]
    cons_l = P["cons_l"] + sh
    if cons.any():
        gap = np.abs(lat - col(cons_l)) < col(P["cons_w"] * P["gap_w"])
        broken = line_amp * (1.0 - 0.75 * col(P["cons_c"])) if "cons_c" in P else line_amp * 0.25
        line_amp = np.where(gap & cons[:, None, None], broken, line_amp)
    amp = amp + lesion_contrast * pleura_profile * line_amp

    # B-lines: vertical rays from the pleura down, erasing A-lines
    b_l = P["b_l"] + sh[:, None]
    on = (np.arange(_MAX_B)[None] < P["n_b"][:, None]) & b_on.reshape(k, _MAX_B)
    bprof = np.zeros((k, 1, W), np.float32)
    for j in range(_MAX_B):
        if not on[:, j].any():
            continue
        g = np.exp(-((lat - col(b_l[:, j])) / col(P["b_w"][:, j])) ** 2) * col(P["b_amp"][:, j] * on[:, j])
        np.maximum(bprof, g, out=bprof)
    # white lung: confluent B-lines over most of the width (score 3)
    white = (labels == 3)
    if white.any():
        wl = ramp(np.maximum(col(P["white_from"]) - lat, lat - col(P["white_to"])), 0.15)
        wl = wl * col(P["white_amp"] * np.repeat(white, frames))
        wl = wl * (0.8 + 0.2 * np.cos(lat * 23.0 + col(sh) * 40))
        np.maximum(bprof, wl, out=bprof)
    b_mask_lat = bprof > 0.3

    # A-lines at multiples of the pleural depth, faded where B-lines are
    a_img = np.zeros((k, H, W), np.float32)
    a_mask = np.zeros((k, H, W), bool)
    for j, level in ((2, 0.6), (3, 0.35), (4, 0.2)):
        prof = np.exp(-((d - j * dp_smooth) / (line_t * 1.3)) ** 2)
        a_img += level * prof
        a_mask |= prof > 0.4
    a_vis = col(P["a_lines"]) * (1.0 - np.clip(bprof * 1.5, 0, 1))
    fade = 1.0 - 0.35 * d
    floor = col(P["floor"]) if "floor" in P else 0.07  # the lung's echo floor (a machine preset varies it)
    lung_amp = floor + lesion_contrast * (0.8 * a_img * a_vis + bprof * 0.65 * fade)
    amp = amp + below * lung_amp

    # subpleural consolidation: darker tissue hanging from the pleura, air bronchograms inside
    cons_mask = np.zeros((k, H, W), bool)
    if cons.any():
        idx = np.flatnonzero(cons)
        cy = dp[idx] + col(P["cons_d"][idx]) * 0.5
        r2 = ellipse_r2(d, lat, cy, col(cons_l[idx]), col(P["cons_d"][idx] * 0.9), col(P["cons_w"][idx]))
        region = ramp(r2 - 1.0, 0.3) * below[idx]
        bronch = (lung_s[idx] > 2.2) * 0.5
        tissue = 0.22 + bronch
        cur = amp[idx]
        lc = lesion_contrast * col(P["cons_c"][idx]) if "cons_c" in P else lesion_contrast  # faded: fainter
        cur = cur * (1 - region) + region * ((1 - lc) * cur + lc * tissue)
        # white area below the consolidation (shred sign)
        under = ramp(np.abs(lat - col(cons_l[idx])) - col(P["cons_w"][idx]) * 0.8, 0.1) * (d > cy + col(P["cons_d"][idx] * 0.45))
        cur = cur + lc * 0.4 * under * (1 - region)
        amp[idx] = cur
        cons_mask[idx] = region > 0.5

    # rib shadows at the edges: a bright arc above the pleura and darkness below it
    for side, sign in ((0, -1.0), (1, 1.0)):
        has = P["rib"][:, side]
        if not has.any():
            continue
        inner = col(P["rib_l"][:, side])
        in_rib = ramp(inner - sign * lat, 0.05) * col(has)  # lateral extent of the rib
        rib_top = col(P["dp"]) - 0.06
        surface = np.exp(-((d - rib_top) * (H / 1.5)) ** 2)
        shadow = ramp(rib_top - d, 2.0 / H)
        amp = amp * (1 - in_rib * shadow * 0.92) + in_rib * surface * 0.8

    # speckle (static in the chest wall, sliding with the lung), attenuation, log compression
    spk = np.where(below > 0.5, lung_s, wall_s)
    amp = amp * ((1 - speckle) + speckle * spk)
    amp = amp * np.exp(-col(P["atten"]) * d) * col(P["gain"])
    if "tgc" in P:  # depth-dependent shading: a smooth time-gain-compensation curve
        amp = amp * np.exp(_waves(P["tgc"], d, lat))
    if "compress" in P:  # the machine's dynamic range
        c = col(P["compress"])
        img = (np.log1p(c * np.clip(amp, 0, None)) / np.log1p(c * 1.3)).astype(np.float32)
    else:
        img = np.log1p(8.0 * np.clip(amp, 0, None)) / np.log1p(8.0 * 1.3)
    if "blur_sigma" in P:  # per-image loss of resolution, wider laterally than axially
        img = np.stack([blur(im[None], (0.6 * float(sg), float(sg)))[0] if sg > 0 else im
                        for im, sg in zip(img, P["blur_sigma"])])
    img = apply_domain(img, rng, dom, noise)
    np.clip(img, 0.0, 1.0, out=img)

    # findings label map in probe space
    findings = np.zeros((k, H, W), np.int64)
    findings[(a_mask & (a_vis > 0.25)) & (below > 0.5)] = 2
    findings[np.broadcast_to((pleura_profile > 0.4) & (line_amp > 0.5), (k, H, W))] = 1
    findings[np.broadcast_to(b_mask_lat, (k, H, W)) & (below > 0.5)] = 3
    findings[cons_mask] = 4
    # shadows hide everything under a rib
    for side, sign in ((0, -1.0), (1, 1.0)):
        has = P["rib"][:, side]
        hidden = (sign * lat > col(P["rib_l"][:, side])) & has[:, None, None] & (d > col(P["dp"]) - 0.06)
        findings[np.broadcast_to(hidden, (k, H, W)) & (findings > 0)] = 0

    # frame score: what the frame shows
    in_view = np.abs(b_l) < 1.0
    if "rib_hides" in P:  # a B-line under a rib's shadow is not seen
        for side, sign in ((0, -1.0), (1, 1.0)):
            in_view &= ~(P["rib"][:, side:side + 1] & (sign * b_l > P["rib_l"][:, side:side + 1]))
    n_b_visible = (on & in_view).sum(axis=1)
    cons_visible = cons_mask.sum(axis=(1, 2)) >= max(2, 0.001 * H * W)
    lab = np.repeat(labels, frames)
    score = np.where(lab == 3, 3, np.where(cons_visible, 2, np.where(n_b_visible > 0, 1, 0)))
    score = np.minimum(score, lab)

    # scan conversion
    sector = np.ones((k, H, W), np.int64)
    convex = np.flatnonzero(P["probe"] == 0)
    if len(convex):
        img[convex], findings[convex], sector[convex] = _to_fan(img[convex], findings[convex], size)
    return img, findings, sector, score, n_b_visible


def _binomial(x: np.ndarray, axis: int) -> np.ndarray:
    """One [1, 2, 1] / 4 smoothing pass along ``axis`` (edges repeated)."""
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    out[..., 1:-1] = x[..., :-2] + x[..., 2:]
    out[..., 1:-1] += 2.0 * x[..., 1:-1]
    out[..., 0] = 3.0 * x[..., 0] + x[..., 1]
    out[..., -1] = 3.0 * x[..., -1] + x[..., -2]
    out *= 0.25
    return np.moveaxis(out, -1, axis)


def speckle_field(rng: np.random.Generator, shape, lateral_passes: int = 2) -> np.ndarray:
    """Fully developed speckle: the envelope of a complex Gaussian field blurred by a point-spread
    function longer laterally than axially; mean 1 per image."""
    re = rng.standard_normal(shape, dtype=np.float32)
    im = rng.standard_normal(shape, dtype=np.float32)
    for arr in (re, im):
        arr[...] = _binomial(arr, -2)
        for _ in range(lateral_passes):
            arr[...] = _binomial(arr, -1)
    env = np.sqrt(re * re + im * im)
    env /= env.mean(axis=(-2, -1), keepdims=True)
    return env


_FAN_CACHE: dict[int, tuple] = {}


def _fan_grid(size: int):
    """Sampling grid of a convex probe: for each image pixel, its (depth, lateral) in probe space."""
    if size not in _FAN_CACHE:
        apex, r0, r1, half_angle = -0.45, 0.55, 1.45, np.deg2rad(38)
        yy = (np.arange(size) + 0.5) / size  # 0 top .. 1 bottom
        xx = (np.arange(size) + 0.5) / size * 2 - 1
        Y, X = np.meshgrid(yy, xx, indexing="ij")
        r = np.sqrt((Y - apex) ** 2 + X ** 2)
        th = np.arctan2(X, Y - apex)
        depth = (r - r0) / (r1 - r0)
        lateral = th / half_angle
        inside = (depth >= 0) & (depth <= 1) & (np.abs(lateral) <= 1)
        grid = np.stack([lateral, depth * 2 - 1], -1).astype(np.float32)  # grid_sample wants (x, y)
        _FAN_CACHE[size] = (grid, inside)
    return _FAN_CACHE[size]


def _to_fan(img, findings, size):
    import torch
    import torch.nn.functional as F

    grid, inside = _fan_grid(size)
    g = torch.from_numpy(grid)[None].expand(len(img), -1, -1, -1)
    out = F.grid_sample(torch.from_numpy(np.ascontiguousarray(img))[:, None], g, mode="bilinear",
                        padding_mode="zeros", align_corners=False)[:, 0].numpy()
    lab = F.grid_sample(torch.from_numpy(findings.astype(np.float32))[:, None], g, mode="nearest",
                        padding_mode="zeros", align_corners=False)[:, 0].numpy().astype(np.int64)
    out = out * inside
    lab = lab * inside
    sector = np.broadcast_to(inside, img.shape).astype(np.int64)
    return out, lab, sector
