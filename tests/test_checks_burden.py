"""Exercise 04.1 (lesion burden and CT grade): the reference passes, the natural mistakes fail, a stub stops."""
from __future__ import annotations

import numpy as np
import pytest

from medlab import checks
from medlab.checks import burden as ref


def _verdict(fn):
    return checks.run_cases(checks.exercises()["04.1"], fn)[1]


def _written(lesion, lung, inside=True, guard=True, limits_inclusive=True, whole_image=False):
    lung_pixels = lung.sum(axis=(1, 2))
    lesion_pixels = (lesion & lung if inside else lesion).sum(axis=(1, 2))
    if whole_image:
        burden = lesion_pixels / lesion[0].size
    elif guard:
        burden = lesion_pixels / np.maximum(lung_pixels, 1)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            burden = lesion_pixels / lung_pixels
    if limits_inclusive:
        grade = np.select([burden == 0, burden <= 0.25, burden <= 0.50, burden <= 0.75], [0, 1, 2, 3], default=4)
    else:
        grade = np.select([burden == 0, burden < 0.25, burden < 0.50, burden < 0.75], [0, 1, 2, 3], default=4)
    return burden, grade


def test_reference_and_a_written_version_pass():
    assert _verdict(ref.burden_and_grade) is None
    assert _verdict(_written) is None
    # ceil(4 * burden) is the same banding, written differently: it passes too
    assert _verdict(lambda le, lu: (_written(le, lu)[0], np.ceil(_written(le, lu)[0] * 4).astype(int))) is None


def test_reference_grades_as_the_ct_phantoms_record_them():
    from medlab.data.phantoms import ct_slice

    batch = ct_slice(12, size=32, seed=3, lesion_size=1.5)
    burden, grade = ref.burden_and_grade(batch.masks["lesion"] > 0, batch.masks["lung"] > 0)
    np.testing.assert_allclose(burden, batch.attrs["involvement"], atol=1e-6)
    np.testing.assert_array_equal(grade, batch.attrs["severity"])


@pytest.mark.parametrize("wrong, why", [
    (lambda le, lu: _written(le, lu, limits_inclusive=False), "off by one at a limit (25 % -> CT-2)"),
    (lambda le, lu: _written(le, lu, whole_image=True), "burden over the whole image, not the lung"),
    (lambda le, lu: _written(le, lu, inside=False), "lesion pixels outside the lung counted"),
    (lambda le, lu: _written(le, lu, guard=False), "no lung -> division by zero (nan)"),
    (lambda le, lu: (_written(le, lu)[0], np.minimum(4, (_written(le, lu)[0] * 4).astype(int))),
     "floor(4 * burden): small burdens graded CT-0"),
    (lambda le, lu: (_written(le, lu)[0] * 100, _written(le, lu)[1]), "percent instead of a fraction"),
    (lambda le, lu: _written(le, lu)[1], "the grade alone"),
])
def test_check_fails_known_wrong_versions(wrong, why):
    assert _verdict(wrong) is not None, why
