"""The lung ultrasound phantom's variation knobs (pose, intensity mixture, bias, blur jitter, fade).

Their defaults (all 0) must render exactly the frames and clips of the generator before the knobs existed: the
fingerprints below were computed from that code (lesson 05 and the phantom gallery rely on it). Turned on, each knob
must change the images in its own way, stay reproducible for a seed, and leave the labels and the other draws alone.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from medlab.data import phantoms as P
from medlab.errors import ParameterError

VARIATION = dict(pose=1.0, intensity_mixture=1.0, bias=0.3, blur_jitter=1.0, fade=0.6)

# Fingerprints of the generator before the variation knobs were added (computed from that code): per case the
# generator, its arguments, the labels, each frame's mean, each frame's pixel counts of the findings classes 1-4
# (pleural line, A-line, B-line, consolidation) and each frame's score. Tolerances, not a hash of the float bytes:
# NumPy's vectorised exp/log differ in the last bit between CPUs, which may move a boundary pixel.
BEFORE = {'frames_mixed': ('lung_ultrasound', {'n': 12, 'size': 64, 'seed': 0, 'probe': 'mixed'},
                  [1, 2, 3, 0, 1, 3, 0, 3, 2, 2, 0, 1],
                  [0.15296, 0.32237, 0.3864, 0.17965, 0.11848, 0.39274, 0.19976, 0.19172, 0.31545, 0.31349,
                   0.3246, 0.16757],
                  [[59, 342, 99, 0], [102, 326, 417, 53], [86, 0, 1517, 49], [74, 296, 0, 0], [54, 219, 220, 0],
                   [110, 0, 1529, 0], [128, 491, 0, 0], [51, 0, 956, 0], [104, 0, 331, 31], [96, 186, 316, 86],
                   [138, 539, 0, 0], [62, 264, 160, 0]],
                  [1, 2, 3, 0, 1, 3, 0, 3, 2, 2, 0, 1]),
 'frames_linear_B': ('lung_ultrasound',
                     {'n': 8, 'size': 48, 'seed': 3, 'probe': 'linear', 'domain': 'B', 'lesion_contrast': 0.7},
                     [2, 3, 2, 1, 0, 1, 3, 0],
                     [0.32887, 0.31895, 0.34231, 0.26599, 0.32155, 0.33277, 0.34551, 0.31231],
                     [[64, 0, 152, 100], [63, 144, 703, 69], [91, 0, 304, 57], [89, 196, 129, 0],
                      [97, 135, 0, 0], [86, 228, 68, 0], [77, 0, 780, 0], [113, 287, 0, 0]],
                     [2, 3, 2, 1, 0, 1, 3, 0]),
 'frames_convex': ('lung_ultrasound',
                   {'n': 8, 'size': 32, 'seed': 5, 'probe': 'convex', 'count': 2.0, 'lesion_size': 1.5},
                   [1, 0, 2, 3, 3, 1, 2, 0],
                   [0.23779, 0.13975, 0.17437, 0.16551, 0.22937, 0.22493, 0.15337, 0.1945],
                   [[35, 61, 121, 0], [36, 95, 0, 0], [21, 155, 15, 32], [30, 0, 145, 0], [20, 16, 246, 5],
                    [29, 0, 77, 0], [15, 0, 87, 18], [29, 191, 0, 0]],
                   [1, 0, 2, 3, 3, 1, 2, 0]),
 'clips_mixed': ('lung_ultrasound_clips', {'n': 4, 'frames': 5, 'size': 32, 'seed': 2, 'probe': 'mixed'},
                 [3, 2, 0, 1],
                 [0.2359, 0.23721, 0.23947, 0.23777, 0.23694, 0.15551, 0.15518, 0.15008, 0.15137, 0.15404,
                  0.3927, 0.39184, 0.39345, 0.39217, 0.39251, 0.2006, 0.20057, 0.20011, 0.19257, 0.19507],
                 [[30, 0, 292, 0], [30, 0, 308, 0], [30, 0, 308, 0], [30, 0, 308, 0], [30, 0, 308, 0],
                  [28, 0, 32, 3], [28, 0, 50, 4], [32, 0, 18, 4], [32, 0, 34, 5], [30, 0, 44, 5],
                  [71, 183, 23, 0], [71, 183, 23, 0], [71, 183, 23, 0], [71, 183, 23, 0], [72, 189, 0, 0],
                  [24, 145, 77, 0], [24, 145, 77, 0], [24, 145, 77, 0], [26, 159, 26, 0], [26, 156, 33, 0]],
                 [3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])}


def _digest(batch) -> str:
    """sha256 over images, masks, labels and attrs: equal digests mean the same batch on this machine."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(batch.images).tobytes())
    for k in sorted(batch.masks):
        h.update(np.ascontiguousarray(batch.masks[k]).tobytes())
    h.update(np.asarray(batch.labels).tobytes())
    for k in sorted(batch.attrs):
        h.update(np.ascontiguousarray(batch.attrs[k]).tobytes())
    return h.hexdigest()


def _frames(batch):
    """Images ``(frames, H, W)`` and findings ``(frames, H, W)`` of a frame or clip batch."""
    images = np.asarray(batch.images)
    return images.reshape(-1, *images.shape[-2:]), np.asarray(batch.masks["findings"]).reshape(-1, *images.shape[-2:])


@pytest.mark.parametrize("case", BEFORE)
def test_defaults_render_the_generator_before_the_knobs(case):
    fn, kwargs, labels, means, counts, scores = BEFORE[case]
    batch = getattr(P, fn)(**kwargs)
    images, findings = _frames(batch)
    assert np.asarray(batch.labels).tolist() == labels
    np.testing.assert_allclose(images.reshape(len(images), -1).mean(1), means, atol=2e-5)
    got = np.stack([(findings == k).sum(axis=(1, 2)) for k in (1, 2, 3, 4)], axis=1)
    np.testing.assert_allclose(got, counts, atol=2)
    frame_scores = batch.attrs["frame_scores"] if "frame_scores" in batch.attrs else batch.attrs["score"]
    assert np.asarray(frame_scores).reshape(-1).tolist() == scores
    zeros = {k: 0.0 for k in VARIATION}
    assert _digest(getattr(P, fn)(**kwargs, **zeros)) == _digest(batch)


@pytest.mark.parametrize("fn", ["lung_ultrasound", "lung_ultrasound_clips"])
def test_variation_is_deterministic_and_leaves_the_other_draws_alone(fn):
    kw = dict(size=32, seed=4, probe="mixed", **({"frames": 3} if fn.endswith("clips") else {}))
    a = getattr(P, fn)(12, **kw, **VARIATION)
    b = getattr(P, fn)(12, **kw, **VARIATION)
    assert _digest(a) == _digest(b)
    plain = getattr(P, fn)(12, **kw)
    np.testing.assert_array_equal(a.labels, plain.labels)
    np.testing.assert_array_equal(a.attrs["probe"], plain.attrs["probe"])
    assert not np.array_equal(a.images, plain.images)
    for key in ("finding_strength", "finding_contrast", "finding_size", "preset", "gain", "blur_sigma"):
        assert a.attrs[key].shape == (12,)


def test_pose_moves_the_pleural_line_and_the_mask_follows():
    kw = dict(size=48, seed=2, probe="linear")
    plain = P.lung_ultrasound(60, **kw)
    posed = P.lung_ultrasound(60, pose=1.5, **kw)
    assert posed.attrs["pleural_depth"].std() > 1.3 * plain.attrs["pleural_depth"].std()
    rows = np.arange(48)[None, :, None]
    pleura = posed.masks["findings"] == 1
    mean_row = (pleura * rows).sum(axis=(1, 2)) / np.maximum(pleura.sum(axis=(1, 2)), 1)
    assert np.corrcoef(posed.attrs["pleural_depth"], mean_row)[0, 1] > 0.95
    # wider rib shadows: more of the frame below the pleura is dark
    dark = lambda b: (b.images[:, 0, 40:] < 0.05).mean()
    assert dark(posed) > dark(plain)


def test_intensity_mixture_varies_the_echo_levels():
    kw = dict(size=32, seed=3, probe="linear", noise=0.0)
    plain = P.lung_ultrasound(120, **kw)
    mixed = P.lung_ultrasound(120, intensity_mixture=1.0, **kw)
    mean = lambda b: b.images.reshape(len(b.images), -1).mean(1)
    assert mean(mixed).std() > 1.3 * mean(plain).std()
    preset = mixed.attrs["preset"]
    assert set(np.unique(preset)) == {0, 1, 2, 3}
    assert mean(mixed)[preset == 1].mean() < mean(mixed)[preset == 2].mean()  # low gain darker than high gain


def test_bias_shades_along_depth_and_blur_jitter_is_recorded():
    kw = dict(size=48, seed=6, probe="linear", noise=0.0)
    plain = P.lung_ultrasound(40, **kw)
    shaded = P.lung_ultrasound(40, bias=0.8, **kw)
    profile = lambda b: b.images[:, 0].mean(axis=2)  # mean over the width, per depth
    assert np.abs(profile(shaded) - profile(plain)).mean() > 0.02
    blurred = P.lung_ultrasound(40, blur_jitter=2.0, **kw)
    sigma = blurred.attrs["blur_sigma"]
    assert sigma.min() >= 0 and sigma.max() <= 2.0 and sigma.std() > 0
    detail = np.abs(np.diff(blurred.images[:, 0], axis=2)).mean(axis=(1, 2))  # lateral sharpness
    assert np.corrcoef(sigma, detail)[0, 1] < -0.5


def test_fade_runs_the_findings_down_towards_invisible():
    kw = dict(size=48, seed=7, probe="linear", noise=0.0)
    plain = P.lung_ultrasound(80, **kw)
    faded = P.lung_ultrasound(80, fade=1.0, **kw)
    labels, s = np.asarray(faded.labels), faded.attrs["finding_strength"]
    assert (s[labels == 0] == 1).all() and (faded.attrs["finding_contrast"][labels == 0] == 0).all()
    assert s[labels > 0].min() < 0.15 and s[labels > 0].max() <= 1.0
    np.testing.assert_allclose(faded.attrs["finding_size"][labels > 0], 0.5 + 0.5 * s[labels > 0], rtol=1e-6)
    lesion = lambda b: np.isin(b.masks["findings"], (3, 4)).sum(axis=(1, 2))
    weak = (labels > 0) & (s < 0.3)
    assert weak.any() and (lesion(faded)[weak] < 0.5 * lesion(plain)[weak] + 1).all()
    # a faded B-line is dimmer: score-1 frames' brightest column below the pleura falls with the strength
    one = labels == 1
    bright = faded.images[one, 0, 30:].mean(axis=1).max(axis=1) - faded.images[one, 0, 30:].mean(axis=(1, 2))
    assert np.corrcoef(s[one], bright)[0, 1] > 0.5


@pytest.mark.parametrize("bad", [dict(pose=-1), dict(pose=4), dict(intensity_mixture=3), dict(bias=2),
                                 dict(blur_jitter=-0.1), dict(fade=1.5)])
def test_bad_variation_knobs_are_refused(bad):
    with pytest.raises(ParameterError, match=next(iter(bad))):
        P.lung_ultrasound(4, size=32, **bad)
    with pytest.raises(ParameterError, match=next(iter(bad))):
        P.lung_ultrasound_clips(4, frames=2, size=32, **bad)
