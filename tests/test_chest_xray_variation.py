"""The chest X-ray phantom's variation knobs (pose, deformation, intensity mixture, bias, blur jitter).

Their defaults (all 0) must render exactly the images of the generator before the knobs existed: the hashes
below were computed from that code (lessons 00, 01 and 07 rely on it). Turned on, they must vary pose and
intensity, and the masks and recorded findings must follow every transform.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from medlab.data import phantoms as P
from medlab.errors import ParameterError

VARIATION = dict(pose=1.0, deformation=1.0, intensity_mixture=1.0, bias=0.2, blur_jitter=1.0)
LESSON_03 = dict(classes=["normal", "bacterial_pneumonia", "covid19"], lesion_contrast=1.5, exposure=0.3, rotation=4.0)

# Fingerprints of the generator before the variation knobs were added (computed from that code, which gave these
# same images bit for bit on the machine where the knobs were written): the labels, each case's lung and lesion
# pixel counts and each image's mean. Not a hash of the float bytes: NumPy's vectorised exp/sin/cos differ in the
# last bit between CPUs (AVX2 against AVX-512), so the tolerances allow a boundary pixel and rounding, no more.
BEFORE = {
    "default": (dict(n=12, size=64, seed=0), [0, 2, 1, 1, 2, 2, 0, 0, 0, 1, 2, 1],
                [0.5104, 0.42966, 0.57544, 0.36328, 0.29605, 0.45443, 0.50916, 0.28563, 0.39732, 0.47636, 0.40532,
                 0.47318],
                [0, 84, 295, 98, 73, 139, 0, 0, 0, 81, 50, 101],
                [918, 604, 950, 628, 844, 684, 936, 934, 747, 811, 602, 641]),
    "lesson03": (dict(n=9, size=48, seed=3, **LESSON_03), [1, 0, 2, 1, 1, 0, 2, 0, 2],
                 [0.42635, 0.41008, 0.35522, 0.43617, 0.31662, 0.4072, 0.40164, 0.41211, 0.42326],
                 [54, 0, 42, 153, 42, 0, 43, 0, 57],
                 [429, 425, 401, 489, 390, 430, 429, 450, 467]),
    "marker_B": (dict(n=8, size=32, seed=5, marker=True, marker_correlation=0.5, domain="B"),
                 [1, 1, 2, 0, 1, 2, 0, 0],
                 [0.444, 0.38476, 0.38872, 0.32897, 0.32926, 0.43873, 0.48522, 0.46152],
                 [19, 34, 30, 0, 25, 31, 0, 0],
                 [161, 189, 182, 155, 149, 278, 194, 171]),
    "C_two": (dict(n=6, size=40, seed=1, classes=["normal", "covid"], domain="C"), [0, 0, 0, 1, 1, 1],
              [0.50596, 0.32777, 0.61063, 0.2873, 0.51792, 0.26525],
              [0, 0, 0, 53, 47, 37],
              [284, 337, 351, 285, 325, 226]),
}


def _digest(batch) -> str:
    """sha256 over images, masks, labels and attrs: equal digests mean the same batch on this machine."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(batch.images).tobytes())
    for k in sorted(batch.masks):
        h.update(np.ascontiguousarray(batch.masks[k]).tobytes())
    h.update(batch.labels.tobytes())
    for k in sorted(batch.attrs):
        h.update(np.ascontiguousarray(batch.attrs[k]).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("case", BEFORE)
def test_defaults_render_the_generator_before_the_knobs(case):
    kwargs, labels, means, lesion, lung = BEFORE[case]
    batch = P.chest_xray(**kwargs)
    n = len(labels)
    assert batch.labels.tolist() == labels
    np.testing.assert_allclose(batch.images.reshape(n, -1).mean(1), means, atol=2e-5)
    np.testing.assert_allclose(batch.masks["lesion"].reshape(n, -1).sum(1), lesion, atol=1)
    np.testing.assert_allclose(batch.masks["lung"].reshape(n, -1).sum(1), lung, atol=1)
    zeros = {k: 0.0 for k in VARIATION}
    assert _digest(P.chest_xray(**kwargs, **zeros)) == _digest(batch)


def test_variation_is_deterministic_and_leaves_the_other_draws_alone():
    a = P.chest_xray(12, size=32, seed=4, **VARIATION)
    b = P.chest_xray(12, size=32, seed=4, **VARIATION)
    assert _digest(a) == _digest(b)
    plain = P.chest_xray(12, size=32, seed=4)
    np.testing.assert_array_equal(a.labels, plain.labels)
    np.testing.assert_array_equal(a.attrs["lesion_strength"], plain.attrs["lesion_strength"])
    assert not np.array_equal(a.images, plain.images)


def _centroids(lung):
    ys, xs = np.mgrid[:lung.shape[1], :lung.shape[2]]
    w = lung.sum(axis=(1, 2))
    return (lung * ys).sum(axis=(1, 2)) / w, (lung * xs).sum(axis=(1, 2)) / w, w


def test_pose_moves_rotates_and_scales_the_chest_and_the_masks_follow():
    plain = P.chest_xray(80, size=48, seed=2)
    posed = P.chest_xray(80, size=48, seed=2, pose=1.5)
    cy0, cx0, w0 = _centroids(plain.masks["lung"])
    cy1, cx1, w1 = _centroids(posed.masks["lung"])
    assert cx1.std() > 1.5 * cx0.std() and cy1.std() > 1.5 * cy0.std()  # position varies more
    assert np.log(w1).std() > 1.2 * np.log(w0).std()  # size varies more
    assert np.abs(posed.attrs["rotation"]).max() > np.abs(plain.attrs["rotation"]).max() + 3
    # the recorded shift and the lung mask move together
    assert np.corrcoef(posed.attrs["shift_x"], cx1)[0, 1] > 0.8
    lesion, lung = posed.masks["lesion"] > 0, posed.masks["lung"] > 0
    assert not (lesion & ~lung).any()
    np.testing.assert_array_equal(posed.attrs["lesion_pixels"], lesion.sum(axis=(1, 2)))


def test_intensity_mixture_varies_the_tissue_intensities():
    kw = dict(size=32, seed=3, exposure=0.0, lesion_contrast=0.0)  # no exposure variation, no opacities
    plain = P.chest_xray(90, **kw)
    mixed = P.chest_xray(90, intensity_mixture=1.0, **kw)

    def lung_mean(b):
        return np.array([im[0][m > 0].mean() for im, m in zip(b.images, b.masks["lung"])])

    assert lung_mean(mixed).std() > 1.3 * lung_mean(plain).std()
    assert set(np.unique(mixed.attrs["mixture_component"])) == {0, 1, 2}
    dense = mixed.attrs["mixture_component"] == 1
    assert lung_mean(mixed)[dense].mean() > lung_mean(mixed)[~dense].mean()  # dense patients: greyer lungs


@pytest.mark.parametrize("knobs", [dict(pose=1.0, deformation=2.0), dict(intensity_mixture=1.0, bias=0.3),
                                   dict(VARIATION, blur_jitter=0.0)])
def test_recorded_findings_follow_the_transforms(knobs):
    a = P.chest_xray(30, size=48, seed=5, noise=0.0, **LESSON_03, **knobs)
    b = P.chest_xray(30, size=48, seed=5, noise=0.0, **{**LESSON_03, "lesion_contrast": 0.0}, **knobs)
    np.testing.assert_array_equal(a.masks["lesion"], b.masks["lesion"])
    m = a.masks["lesion"] > 0
    measured = np.array([d[k].mean() if k.any() else 0.0 for d, k in zip(a.images[:, 0] - b.images[:, 0], m)])
    unclipped = ~((a.images[:, 0] >= 1.0) & m).any(axis=(1, 2))  # the record is before the final clip to [0, 1]
    assert unclipped.sum() >= 25
    np.testing.assert_allclose(a.attrs["lesion_contrast"][unclipped], measured[unclipped], atol=3e-3)
    np.testing.assert_array_equal(a.attrs["lesion_pixels"], m.sum(axis=(1, 2)))


def test_deformation_bends_the_anatomy_and_blur_jitter_is_recorded():
    plain = P.chest_xray(10, size=48, seed=6)
    bent = P.chest_xray(10, size=48, seed=6, deformation=3.0)
    changed = (plain.masks["lung"] != bent.masks["lung"]).mean(axis=(1, 2))
    assert (changed > 0.005).all()
    blurred = P.chest_xray(10, size=48, seed=6, noise=0.0, blur_jitter=2.0)
    sigma = blurred.attrs["blur_sigma"]
    assert sigma.min() >= 0 and sigma.max() <= 2.0 and sigma.std() > 0


@pytest.mark.parametrize("bad", [dict(pose=-1), dict(deformation=9), dict(intensity_mixture=3),
                                 dict(bias=2), dict(blur_jitter=-0.1)])
def test_bad_variation_knobs_are_refused(bad):
    with pytest.raises(ParameterError, match=next(iter(bad))):
        P.chest_xray(4, size=32, **bad)
