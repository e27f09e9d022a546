"""Each phantom records its finding's size and contrast, and the records match the masks and the pixels.

The contrast is checked the way it is defined: the same seed rendered with ``lesion_contrast=0`` draws the same
random numbers (same anatomy, same noise, same masks), so the difference of the two images is the lesion alone.
"""
from __future__ import annotations

import numpy as np
import pytest

from medlab.data import make_splits, load_segmentation
from medlab.data import phantoms as P


def _mean_in_mask(diff, masks):
    return np.array([d[m].mean() if m.any() else 0.0 for d, m in zip(diff, masks)])


@pytest.mark.parametrize("kind", ["chest_xray", "ct_slice"])
def test_recorded_lesion_size_equals_the_mask(kind):
    batch = getattr(P, kind)(24, size=48, seed=2)
    pixels = (batch.masks["lesion"] > 0).sum(axis=(1, 2))
    np.testing.assert_array_equal(batch.attrs["lesion_pixels"], pixels)
    np.testing.assert_allclose(batch.attrs["lesion_area"] * 48 * 48, pixels, atol=1e-3)
    assert (batch.attrs["lesion_contrast"][pixels == 0] == 0).all()
    assert (batch.attrs["lesion_contrast"][pixels > 0] > 0).all()


@pytest.mark.parametrize("knobs", [dict(), dict(noise=0.0), dict(lesion_contrast=1.5, exposure=0.3, rotation=4.0)])
def test_chest_xray_recorded_contrast_is_the_mean_rise_in_the_lesion(knobs):
    a = P.chest_xray(30, size=48, seed=5, **knobs)
    b = P.chest_xray(30, size=48, seed=5, **{**knobs, "lesion_contrast": 0.0})
    np.testing.assert_array_equal(a.masks["lesion"], b.masks["lesion"])  # the same draws, the same lesions
    measured = _mean_in_mask(a.images[:, 0] - b.images[:, 0], a.masks["lesion"] > 0)
    np.testing.assert_allclose(a.attrs["lesion_contrast"], measured, atol=3e-3)  # only the final clip differs
    # the recorded strength is the generator's draw: a stronger opacity, a higher contrast
    sick = a.labels > 0
    assert np.corrcoef(a.attrs["lesion_strength"][sick], a.attrs["lesion_contrast"][sick])[0, 1] > 0.3
    assert (a.attrs["lesion_strength"][~sick] == 0).all()


@pytest.mark.parametrize("knobs", [dict(), dict(noise=0.0), dict(lesion_size=1.5, count=5)])
def test_ct_recorded_contrast_is_the_mean_hu_rise_in_the_lesion(knobs):
    a = P.ct_slice(30, size=48, seed=5, **knobs)
    b = P.ct_slice(30, size=48, seed=5, **{**knobs, "lesion_contrast": 0.0})
    np.testing.assert_array_equal(a.masks["lesion"], b.masks["lesion"])
    measured = _mean_in_mask(a.images[:, 0] - b.images[:, 0], a.masks["lesion"] > 0)
    np.testing.assert_allclose(a.attrs["lesion_contrast"], measured, atol=0.1)  # HU
    sick = a.attrs["lesion_pixels"] > 0
    # the drawn type contrasts: ground-glass rises less than consolidation; the mix lies near them
    cons = a.attrs["consolidation_contrast"] > 0
    assert (a.attrs["ggo_contrast"][cons] < a.attrs["consolidation_contrast"][cons]).all()
    assert (a.attrs["lesion_contrast"][sick] <= np.maximum(a.attrs["ggo_contrast"], a.attrs["consolidation_contrast"])[sick] + 1).all()
    # ground-glass pixels rise by about the drawn ground-glass contrast (vessels show through: a little less)
    ggo = a.masks["lesion"] == 1
    rise = a.images[:, 0] - b.images[:, 0]
    ratios = [np.median(rise[i][ggo[i]]) / a.attrs["ggo_contrast"][i] for i in range(len(a)) if ggo[i].sum() > 5]
    assert len(ratios) >= 5 and 0.7 < min(ratios) and max(ratios) < 1.02


def test_contrast_scales_with_the_contrast_knob():
    a = P.ct_slice(12, size=32, seed=1)
    b = P.ct_slice(12, size=32, seed=1, lesion_contrast=0.5)
    np.testing.assert_allclose(b.attrs["lesion_contrast"], 0.5 * a.attrs["lesion_contrast"], rtol=1e-4, atol=1e-3)


def test_findings_reach_the_loaders_the_lessons_use():
    splits = make_splits("chest_xray", 6, 3, 9, size=32, seed=0)
    for ds in splits.values():
        assert {"lesion_pixels", "lesion_contrast", "severity"} <= set(ds.meta)
        assert len(ds.meta["lesion_contrast"]) == len(ds)
    seg = load_segmentation("phantom", "lesion_type", size=32, n_train=4, n_val=2, n_test=6, seed=0)
    for key in ("lesion_pixels", "lesion_contrast", "ggo_contrast", "consolidation_contrast", "involvement"):
        assert len(seg.test_meta[key]) == 6
    np.testing.assert_array_equal(seg.test_meta["lesion_pixels"], (seg.test_targets > 0).sum(axis=(1, 2)))
