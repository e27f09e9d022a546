"""Lung ultrasound phantoms: frames and clips scored 0 to 3 by the ICLUS definitions.

B-mode images (display intensity in ``[0, 1]``, black outside the field of
view) from a convex probe (a fan) or a linear probe (a rectangle). Each image
is first drawn in probe space (rows = depth, columns = lateral position)
where the lung's signs are horizontal or vertical, then scan-converted; so
A-lines follow the fan's arcs and B-lines its rays, as on a real scanner.

The pixels are rendered in batches with torch, on the CPU or a GPU (``device``);
on the CPU they are the images of the earlier NumPy renderer up to float rounding.

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

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ParameterError
from ._common import PhantomBatch, balanced_labels, check_common, check_range, domain_args
from ._torch import (PixelNoise, apply_domain, blur1d, chunk_images, col, gauss_, phantom_device, ramp_, render_chunks,
                     to_numpy)
from ._torch import speckle as speckle_tensor

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
                    fade: float = 0.0, device=None, as_tensors: bool = False) -> PhantomBatch:
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
        device: where the pixels are rendered: ``None`` or ``"cpu"`` (default), ``"cuda"``, ``"auto"`` (the
            GPU when there is one). The per-image parameters and labels are the same on every device; the
            pixel noise on a GPU comes from a generator on the GPU, so a GPU renders other (equally likely)
            noise than the CPU (the pleural line's fine irregularity is drawn with the noise, so the
            findings masks differ by a few pixels too). Same seed and device, same images.
        as_tensors: return ``images``, ``masks`` and ``labels`` as torch tensors on ``device`` instead of
            NumPy arrays (for drawing training data on the device; ``attrs`` stay NumPy).

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
                      pose, intensity_mixture, bias, blur_jitter, fade, device, as_tensors)
    batch.kind = "lung_ultrasound"
    return batch


def lung_ultrasound_clips(n: int, frames: int = 16, size: int = 64, seed: int = 0, *,
                          probe: str = "convex", lesion_contrast: float = 1.0, lesion_size: float = 1.0,
                          count: float = 1.0, noise: float = 0.04, speckle: float = 0.8,
                          domain="A", intensity_scale=None, intensity_offset=None, blur=None,
                          noise_texture=None, resolution=None, pose: float = 0.0, intensity_mixture: float = 0.0,
                          bias: float = 0.0, blur_jitter: float = 0.0, fade: float = 0.0, device=None,
                          as_tensors: bool = False) -> PhantomBatch:
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
            pose, intensity_mixture, bias, blur_jitter, fade, device, as_tensors: as in
            :func:`lung_ultrasound` (the variation is drawn per clip: the probe is still). On a GPU the
            B-lines' flicker and the pleural line's irregularity come from the GPU's generator too, so the
            frame scores may differ from the CPU's; the clip labels do not.

    Returns:
        :class:`PhantomBatch` with ``images`` ``(n, frames, 1, size, size)``,
        masks ``(n, frames, size, size)``, ``labels`` the clip scores, and
        attrs as for frames (per clip) plus ``frame_scores`` ``(n, frames)``.
    """
    frames = int(check_range("frames", frames, 2, 256))
    batch = _generate(n, frames, size, seed, probe, lesion_contrast, lesion_size, count, noise, speckle,
                      domain, intensity_scale, intensity_offset, blur, noise_texture, resolution,
                      pose, intensity_mixture, bias, blur_jitter, fade, device, as_tensors)
    batch.kind = "lung_ultrasound_clips"
    return batch


def _generate(n, frames, size, seed, probe, lesion_contrast, lesion_size, count, noise, speckle,
              domain, intensity_scale, intensity_offset, blur_, noise_texture, resolution,
              pose=0.0, intensity_mixture=0.0, bias=0.0, blur_jitter=0.0, fade=0.0, device=None, as_tensors=False):
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
    dev = phantom_device(device)
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, 4, rng)
    p = _draw_params(rng, labels, probe, lesion_size, count)
    variation = _draw_variation(p, labels, seed, lesion_contrast, pose, intensity_mixture, bias, blur_jitter, fade)

    noise_source = PixelNoise(rng, seed, dev)
    passes = 2 if size >= 64 else 1
    with torch.no_grad():
        chunks = render_chunks(
            n, _clips_per_chunk(size, frames, dev), dev,
            lambda s, e: _draw_pixels(noise_source, e - s, frames, size, passes),
            lambda s, e, draws: _render_clips({k: v[s:e] for k, v in p.items()}, labels[s:e], frames, size, draws,
                                              dev, lesion_contrast, noise, speckle, dom))
        if chunks:
            images, findings, sector = (torch.cat(part) for part in list(zip(*chunks))[:3])
            frame_scores = np.concatenate([c[3] for c in chunks])
            n_b = np.concatenate([c[4] for c in chunks])
            lesion_px, consolidation_px = to_numpy(torch.cat([c[5] for c in chunks], 1))
        else:
            images = torch.zeros((0, size, size), device=dev)
            findings = sector = torch.zeros((0, size, size), dtype=torch.uint8, device=dev)
            frame_scores = n_b = lesion_px = consolidation_px = np.zeros(0, np.int64)
        consolidation = (findings == 4).to(torch.int64)
        findings, sector = findings.to(torch.int64), sector.to(torch.int64)

    area = float(size * size)
    attrs_frame = {
        "score": frame_scores,
        "severity": frame_scores.copy(),
        "n_b_lines": n_b,
        "lesion_area": (lesion_px / area).astype(np.float32),
        "consolidation_area": (consolidation_px / area).astype(np.float32),
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
        images = images[:, None]
    else:
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
        images = images.reshape(n, frames, 1, size, size)
        findings, consolidation, sector = (t.reshape(n, frames, size, size) for t in (findings, consolidation, sector))
    masks = {"findings": findings, "consolidation": consolidation, "sector": sector}
    if as_tensors:
        labels = torch.as_tensor(labels, device=dev)
    else:
        images, masks = to_numpy(images), {k: to_numpy(v) for k, v in masks.items()}
    return PhantomBatch(
        images=images, masks=masks, labels=labels, attrs=attrs, class_names=list(LUS_CLASSES),
        mask_classes=mask_classes, default_mask="findings", units="a.u.", params=params)


def _clips_per_chunk(size: int, frames: int, device: torch.device) -> int:
    """Clips per rendering chunk: about 2^17 pixels on a CPU (the NumPy renderer's chunk, which is part of the
    random stream: do not change it), 2^24 on a GPU."""
    return max(1, chunk_images(size, device, cpu_pixels=2 ** 17) // frames)


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




def _waves(params, d: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    """Evaluate the fields of :func:`_draw_waves` (``(K, 3, 4)``) at depth ``d`` ``(1, H, 1)`` and lateral ``lat``
    ``(1, 1, W)``: ``(K, H, W)`` float32.

    ``sum_j a_j sin(fd_j d + fl_j lat + ph_j)``, with ``sin(u + v) = sin u cos v + cos u sin v`` split into a
    depth part and a lateral part: one batched matrix product of rank 6, the sines on the axes only.
    """
    w = np.asarray(params, np.float64)
    dd = d.reshape(-1).double().cpu().numpy()
    ll = lat.reshape(-1).double().cpu().numpy()
    a, fd, fl, ph = (w[:, :, j, None] for j in range(4))  # (K, 3, 1)
    depth, lateral = fd * dd, fl * ll + ph  # (K, 3, H), (K, 3, W)
    rows = np.concatenate([a * np.sin(depth), a * np.cos(depth)], 1).transpose(0, 2, 1)  # (K, H, 6)
    cols = np.concatenate([np.cos(lateral), np.sin(lateral)], 1)  # (K, 6, W)
    as_tensor = lambda v: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(d.device)  # noqa: E731
    return torch.bmm(as_tensor(rows), as_tensor(cols))


def _draw_pixels(noise: PixelNoise, m: int, frames: int, size: int, passes: int) -> dict:
    """The random numbers of one chunk of ``m`` clips, in the order the renderer has always drawn them: the
    B-lines' flicker, the lung's and the chest wall's speckle, the pleural line's irregularity, the scanner noise."""
    wide = size + 2 * _margin(size)
    draws = {"b_on": noise.uniform(0.0, 1.0, (m, frames, _MAX_B)) if frames > 1 else None}
    draws["lung"] = speckle_tensor(noise, (m, size, wide), lateral_passes=passes)
    draws["wall"] = speckle_tensor(noise, (m, size, wide), lateral_passes=passes) if frames > 1 else None
    draws["irregular"] = noise.normal(0.0, 1.0, (m, wide)).to(device=noise.device, dtype=torch.float32)
    draws["z"] = noise.standard_normal((m * frames, size, size)).to(noise.device)
    return draws


def _margin(size: int) -> int:
    """Columns drawn on each side of the view, for the lung's sliding."""
    return int(np.ceil(0.1 * size)) + 2


def _render_clips(p, labels, frames, size, draws, dev, lesion_contrast, noise, speckle, dom):
    """Render ``len(labels)`` clips of ``frames`` frames (frames == 1: still frames) on ``dev``: tensors
    ``(images, findings, sector)`` ``(m · frames, size, size)`` (the masks uint8), NumPy ``(score, n_b_visible)``
    per frame, and a ``(2, m · frames)`` tensor of the pixels of B-lines and consolidation, and of consolidation;
    ``draws`` from :func:`_draw_pixels`."""
    m = len(labels)
    t = np.arange(frames)
    # lateral sliding of the lung under the pleura, per frame (fraction of the width)
    if frames > 1:
        shift = p["slide_amp"][:, None] * np.sin(2 * np.pi * t[None] / p["breath_frames"][:, None] + p["slide_phase"][:, None])
        shift -= shift[:, :1]  # the first frame shows the clip's findings in place
        b_on = to_numpy(draws["b_on"]) < 0.8
        b_on[:, 0] = True
    else:
        shift = np.zeros((m, 1))
        b_on = np.ones((m, 1, _MAX_B), bool)
    k = m * frames
    c = lambda v: col(v, dev)  # noqa: E731  per-frame values as (k, 1, 1) float32

    def per_frame(a):
        return np.repeat(np.asarray(a), frames, axis=0)

    H = W = size
    margin = _margin(size)
    d = ((torch.arange(H, dtype=torch.float32, device=dev) + 0.5) / H).view(1, H, 1)  # depth 0..1
    lat = ((torch.arange(W + 2 * margin, dtype=torch.float32, device=dev) - margin + 0.5) / W * 2 - 1)
    lat = lat[margin:margin + W].view(1, 1, W)
    sh = shift.reshape(k)  # lateral shift per frame
    sh_px = np.round(sh * W / 2).astype(int)

    # clip-level random textures, drawn wider than the view and cropped per frame (the lung's slides)
    lung_tex = draws["lung"]
    if frames == 1:
        wall_s = lung_s = lung_tex[:, :, margin:margin + W]
    else:
        clip_idx = torch.arange(m, device=dev).repeat_interleave(frames)
        start = torch.as_tensor(margin - sh_px, device=dev)  # first column of each frame's (slid) view
        wall_s = draws["wall"][:, :, margin:margin + W].repeat_interleave(frames, 0)
        lung_s = lung_tex.unfold(2, W, 1)[clip_idx, :, start]  # (k, H, W): each frame's window
    irregular_ext = blur1d(draws["irregular"], max(1.0, W / 24), dim=-1)
    irregular_ext /= irregular_ext.std(dim=1, keepdim=True, correction=0) + 1e-6
    if frames == 1:
        irr = irregular_ext[:, margin:margin + W]
    else:
        irr = irregular_ext.unfold(1, W, 1)[clip_idx, start]

    P = {key: per_frame(v) for key, v in p.items()}
    dp_smooth = c(P["dp"]) + c(P["tilt"]) * lat  # (k, 1, W)
    dp = dp_smooth + c(P["irregular"]) * irr[:, None, :]
    below = ramp_(dp - d, 1.5 / H)  # 1 below the pleural line

    # chest wall: speckle, two fascia lines, echo falling with depth
    fascia = torch.zeros((k, H, 1), device=dev)
    for j in range(2):
        fd = c(P["fascia_d"][:, j] * P["dp"])
        fascia += gauss_((d - fd).mul_(H / 1.2))
    amp = (c(P["wall_echo"]) + 0.35 * fascia) * (1.0 - below)

    # pleural line, with gaps where it is broken (score 2 and some 3)
    line_t = 1.2 / H
    pleura_profile = gauss_((d - dp).div_(line_t))
    line_amp = c(P["pleura_amp"]).expand(k, 1, W)
    cons = P["cons_present"]
    cons_l = P["cons_l"] + sh
    if cons.any():
        gap = (lat - c(cons_l)).abs() < c(P["cons_w"] * P["gap_w"])
        broken = line_amp * (1.0 - 0.75 * c(P["cons_c"])) if "cons_c" in P else line_amp * 0.25
        line_amp = torch.where(gap & c(cons).bool(), broken, line_amp)
    amp = amp + lesion_contrast * pleura_profile * line_amp

    # B-lines: vertical rays from the pleura down, erasing A-lines (all of a frame's at once: (k, B, W))
    b_l = P["b_l"] + sh[:, None]
    on = (np.arange(_MAX_B)[None] < P["n_b"][:, None]) & b_on.reshape(k, _MAX_B)
    as_rows = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=dev)[:, :, None]  # noqa: E731
    g = gauss_((lat - as_rows(b_l)).div_(as_rows(P["b_w"]))).mul_(as_rows(P["b_amp"] * on))
    bprof = g.amax(dim=1, keepdim=True).clamp_min_(0.0)  # (k, 1, W)
    # white lung: confluent B-lines over most of the width (score 3)
    white = labels == 3
    if white.any():
        wl = ramp_(torch.maximum(c(P["white_from"]) - lat, lat - c(P["white_to"])), 0.15)
        wl = wl * c(P["white_amp"] * np.repeat(white, frames))
        wl = wl * (0.8 + 0.2 * torch.cos(lat * 23.0 + c(sh) * 40))
        torch.maximum(bprof, wl, out=bprof)
    b_mask_lat = bprof > 0.3

    # A-lines at multiples of the pleural depth, faded where B-lines are
    a_img = torch.zeros((k, H, W), device=dev)
    a_mask = torch.zeros((k, H, W), dtype=torch.bool, device=dev)
    for j, level in ((2, 0.6), (3, 0.35), (4, 0.2)):
        prof = gauss_((d - j * dp_smooth).div_(line_t * 1.3))
        a_img += level * prof
        a_mask |= prof > 0.4
    a_vis = c(P["a_lines"]) * (1.0 - torch.clamp(bprof * 1.5, 0, 1))
    fade = 1.0 - 0.35 * d
    floor = c(P["floor"]) if "floor" in P else 0.07  # the lung's echo floor (a machine preset varies it)
    lung_amp = floor + lesion_contrast * (0.8 * a_img * a_vis + bprof * 0.65 * fade)
    amp = amp + below * lung_amp

    # subpleural consolidation: darker tissue hanging from the pleura, air bronchograms inside
    cons_mask = torch.zeros((k, H, W), dtype=torch.bool, device=dev)
    if cons.any():
        idx = np.flatnonzero(cons)
        ti = torch.as_tensor(idx, device=dev)
        cy = dp[ti] + c(P["cons_d"][idx]) * 0.5
        dx = (lat - c(cons_l[idx])) * (1.0 / c(P["cons_w"][idx]))
        dy = (d - cy) * (1.0 / c(P["cons_d"][idx] * 0.9))
        r2 = dx * dx + dy * dy
        region = ramp_(r2 - 1.0, 0.3) * below[ti]
        tissue = (lung_s[ti] > 2.2).float().mul_(0.5).add_(0.22)
        cur = amp[ti]
        lc = lesion_contrast * c(P["cons_c"][idx]) if "cons_c" in P else lesion_contrast  # faded: fainter
        cur = cur * (1 - region) + region * ((1 - lc) * cur + lc * tissue)
        # white area below the consolidation (shred sign)
        under = ramp_((lat - c(cons_l[idx])).abs() - c(P["cons_w"][idx]) * 0.8, 0.1) * \
            (d > cy + c(P["cons_d"][idx] * 0.45))
        cur = cur + lc * 0.4 * under * (1 - region)
        amp[ti] = cur
        cons_mask[ti] = region > 0.5

    # rib shadows at the edges: a bright arc above the pleura and darkness below it
    for side, sign in ((0, -1.0), (1, 1.0)):
        has = P["rib"][:, side]
        if not has.any():
            continue
        inner = c(P["rib_l"][:, side])
        in_rib = ramp_(inner - sign * lat, 0.05) * c(has)  # lateral extent of the rib
        rib_top = c(P["dp"]) - 0.06
        surface = gauss_((d - rib_top).mul_(H / 1.5))
        shadow = ramp_(rib_top - d, 2.0 / H)
        amp = amp * (1 - in_rib * shadow * 0.92) + in_rib * surface * 0.8

    # speckle (static in the chest wall, sliding with the lung), attenuation, log compression
    spk = torch.where(below > 0.5, lung_s, wall_s)
    amp = amp * ((1 - speckle) + speckle * spk)
    amp = amp * torch.exp(-c(P["atten"]) * d) * c(P["gain"])
    if "tgc" in P:  # depth-dependent shading: a smooth time-gain-compensation curve
        amp = amp * torch.exp(_waves(P["tgc"], d, lat))
    compress = c(P["compress"]) if "compress" in P else 8.0  # the machine's dynamic range
    img = torch.log1p(amp.clamp_min_(0.0).mul_(compress)).div_(torch.log1p(torch.as_tensor(compress * 1.3)))
    if "blur_sigma" in P:  # per-image loss of resolution, wider laterally than axially
        img = blur1d(blur1d(img, 0.6 * P["blur_sigma"], dim=-2), P["blur_sigma"], dim=-1)
    img = apply_domain(img, draws["z"], dom, noise)
    img.clamp_(0.0, 1.0)

    # findings label map in probe space
    findings = torch.zeros((k, H, W), dtype=torch.uint8, device=dev)
    findings.masked_fill_((a_mask & (a_vis > 0.25)) & (below > 0.5), 2)
    findings.masked_fill_((pleura_profile > 0.4) & (line_amp > 0.5), 1)
    findings.masked_fill_(b_mask_lat & (below > 0.5), 3)
    findings.masked_fill_(cons_mask, 4)
    # shadows hide everything under a rib
    shaded = torch.zeros((k, 1, W), dtype=torch.bool, device=dev)  # columns under a rib
    for side, sign in ((0, -1.0), (1, 1.0)):
        shaded |= (sign * lat > c(P["rib_l"][:, side])) & c(P["rib"][:, side]).bool()
    findings.masked_fill_(shaded & (d > c(P["dp"]) - 0.06), 0)

    # frame score: what the frame shows
    in_view = np.abs(b_l) < 1.0
    if "rib_hides" in P:  # a B-line under a rib's shadow is not seen
        for side, sign in ((0, -1.0), (1, 1.0)):
            in_view &= ~(P["rib"][:, side:side + 1] & (sign * b_l > P["rib_l"][:, side:side + 1]))
    n_b_visible = (on & in_view).sum(axis=1)
    cons_visible = to_numpy(cons_mask.sum(dim=(1, 2))) >= max(2, 0.001 * H * W)
    lab = np.repeat(labels, frames)
    score = np.where(lab == 3, 3, np.where(cons_visible, 2, np.where(n_b_visible > 0, 1, 0)))
    score = np.minimum(score, lab)

    # scan conversion
    sector = torch.ones((k, H, W), dtype=torch.uint8, device=dev)
    convex = np.flatnonzero(P["probe"] == 0)
    if len(convex) == k:
        img, findings, sector = _to_fan(img, findings, size)
    elif len(convex):
        rows = torch.as_tensor(convex, device=dev)
        img[rows], findings[rows], sector[rows] = _to_fan(img[rows], findings[rows], size)
    areas = torch.stack([torch.count_nonzero(findings >= 3, dim=(1, 2)),  # B-lines and consolidation
                         torch.count_nonzero(findings == 4, dim=(1, 2))])  # consolidation
    return img, findings, sector, score.astype(np.int64), n_b_visible.astype(np.int64), areas




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


@functools.lru_cache(maxsize=16)
def _fan_tensors(size: int, device: torch.device) -> tuple:
    """:func:`_fan_grid` as tensors on ``device``: the grid ``(1, size, size, 2)`` and the field of view, float
    ``(size, size)`` and uint8."""
    grid, inside = _fan_grid(size)
    inside_t = torch.as_tensor(inside, device=device)
    return torch.as_tensor(grid, device=device)[None], inside_t.float(), inside_t.to(torch.uint8)


def _to_fan(img: torch.Tensor, findings: torch.Tensor, size: int) -> tuple:
    """Scan-convert probe-space images ``(K, H, W)`` and findings (uint8) to the convex probe's fan: images
    sampled bilinearly, findings at the nearest pixel, 0 outside the fan; returns ``(images, findings, sector)``."""
    grid, inside, inside_u8 = _fan_tensors(size, img.device)
    g = grid.expand(len(img), -1, -1, -1)
    out = F.grid_sample(img[:, None], g, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    lab = F.grid_sample(findings.float()[:, None], g, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.mul_(inside), lab[:, 0].to(torch.uint8).mul_(inside_u8), inside_u8.expand(len(img), -1, -1)
