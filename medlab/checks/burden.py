"""Exercise on lesion burden and the CT-0..CT-4 severity grade (lesson 04).

* 04.1 burden and grade: per case, the burden is the number of lesion pixels
  *inside the lung* divided by the number of lung pixels (0 when there is no
  lung), and the MosMedData grade follows from it: CT-0 no lesion, CT-1 up to
  25 %, CT-2 up to 50 %, CT-3 up to 75 %, CT-4 above (a limit belongs to the
  milder grade). The references are :func:`medlab.metrics.lesion_burden` and
  :func:`medlab.data.phantoms.mosmed_band`, the band the CT phantoms record.
"""
from __future__ import annotations

import numpy as np

from .. import metrics
from . import Case, Exercise, register

__all__ = ["burden_and_grade"]


def burden_and_grade(lesion: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per case ``(N,)``: burden (fraction of the lung covered by lesion) and grade 0..4."""
    from ..data.phantoms import mosmed_band

    burden = metrics.lesion_burden(lesion, lung)
    return burden, mosmed_band(burden)


def _limits_case():
    """Six 10x10 lungs (100 pixels) with 0, 25, 50, 75, 76 and 100 lesion pixels: every limit exactly."""
    lung = np.zeros((6, 12, 12), bool)
    lung[:, 1:11, 1:11] = True
    lesion = np.zeros_like(lung)
    for i, count in enumerate((0, 25, 50, 75, 76, 100)):
        rows, cols = np.nonzero(lung[i])
        lesion[i, rows[:count], cols[:count]] = True
    return lesion, lung


def _burden_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    lung = np.zeros((6, 20, 20), bool)
    lung[:, 3:17, 2:9] = True
    lung[:, 3:17, 11:18] = True
    lesion = (rng.random(lung.shape) < rng.uniform(0.0, 0.9, (6, 1, 1))) & lung
    spill = lesion.copy()
    spill[:, 0:3, :] = True                       # lesion pixels painted outside the lung
    no_lung = lung.copy()
    no_lung[1] = False                            # a slice with no lung at all (above the apex)
    limits = _limits_case()
    return [
        Case("6 random slices, lesions inside the lung", (lesion, lung)),
        Case("burdens of exactly 0, 25, 50, 75, 76 and 100 % (the grade limits)", limits),
        Case("lesion pixels outside the lung (a prediction can paint them there)", (spill, lung)),
        Case("a slice without lung pixels", (spill, no_lung)),
        Case("one slice, no lesion", (np.zeros((1, 20, 20), bool), lung[:1])),
    ]


register(Exercise(
    key="04.1", title="lesion burden and CT grade", reference=burden_and_grade, cases=_burden_cases,
    hint="count only lesion pixels inside the lung ((lesion & lung).sum(axis=(1, 2))) and divide by the lung's "
         "pixels, np.maximum(lung_pixels, 1) so that a slice without lung gets 0, not a division by zero; "
         "grade: 0 for no lesion, then 1, 2, 3 for burdens up to and including 0.25, 0.50, 0.75, else 4.",
))
