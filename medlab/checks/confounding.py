"""Exercise on a confounded training set (lesson 03): where the laterality marker goes.

A shortcut is planted by letting an artefact follow the label. Lesson 03 puts a
laterality marker in a top corner of each chest X-ray:

* 03.1 the marker's side: with probability ``correlation`` it follows the label
  (normal -> 0, image left; any disease -> 1, image right), otherwise a fair coin
  decides. ``correlation=1`` is a training set assembled from two sources;
  ``correlation=0`` is a new hospital where the marker says nothing.

The answer draws random numbers, so it is checked by what it must do rather
than value by value: sides are 0 or 1, one per image; with correlation 1 they
are the label's side; otherwise the share of images whose marker follows the
label is ``correlation + (1 - correlation) / 2`` (within sampling error) for the
normal and the diseased images alike.
"""
from __future__ import annotations

import numpy as np

from . import Case, Exercise, register

__all__ = ["biased_marker_sides"]


def biased_marker_sides(labels, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """Marker side per image (0 image left, 1 image right), int64 ``(N,)``, from class labels ``(N,)`` (0 = normal).

    With probability ``correlation`` the side follows the label (normal left, any disease right), else a fair
    coin decides.
    """
    labels = np.asarray(labels)
    follows = rng.random(labels.size) < correlation
    coin = rng.integers(0, 2, labels.size)
    return np.where(follows, (labels != 0).astype(np.int64), coin)


def _cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)

    def labels(n, classes=3):
        return rng.integers(0, classes, n)

    def generator(k):
        return np.random.default_rng([seed, k])

    return [
        Case("3000 images of 3 classes, correlation 1 (every marker follows the label)",
             (labels(3000), 1.0, generator(0))),
        Case("3000 images of 3 classes, correlation 0 (a new hospital: markers at random)",
             (labels(3000), 0.0, generator(1))),
        Case("3000 images of 3 classes, correlation 0.6", (labels(3000), 0.6, generator(2))),
        Case("4000 images of 2 classes (normal, COVID-19), correlation 0.3", (labels(4000, 2), 0.3, generator(3))),
        Case("one COVID-19 image (label 2), correlation 1", (np.array([2]), 1.0, generator(4))),
        Case("five normal images, correlation 1", (np.zeros(5, dtype=np.int64), 1.0, generator(5))),
    ]


def _compare(got, expected, case: Case) -> str | None:
    labels, correlation = np.asarray(case.args[0]), float(case.args[1])
    sides = np.asarray(got.detach().cpu() if hasattr(got, "detach") else got)
    if sides.shape != labels.shape:
        return f"the result has shape {sides.shape}, expected one side per image: {labels.shape}"
    if not np.isin(sides, (0, 1)).all():
        return f"sides must be 0 (image left) or 1 (image right), got the values {sorted(set(sides.tolist()))[:6]}"
    label_side = (labels != 0).astype(np.int64)
    if correlation == 1.0:
        wrong = int((sides != label_side).sum())
        return None if wrong == 0 else (f"with correlation 1 every marker follows the label (normal left, any "
                                        f"disease right), but {wrong} of {labels.size} do not")
    expected_share = correlation + (1.0 - correlation) / 2.0
    for name, members in (("normal", labels == 0), ("diseased", labels != 0)):
        share = float((sides[members] == label_side[members]).mean())
        if abs(share - expected_share) > 0.05:
            return (f"on the {name} images the marker follows the label in {share:.0%} of cases; with correlation "
                    f"{correlation:g} it should be about {expected_share:.0%} (follows with probability "
                    f"{correlation:g}, else a fair coin that agrees half of the time)")
    return None


register(Exercise(
    key="03.1", title="the biased marker assignment", reference=biased_marker_sides, cases=_cases,
    compare=_compare,
    hint="the label's side is (labels != 0) (normal left = 0, pneumonia or COVID-19 right = 1); draw "
         "follows = rng.random(n) < correlation and a coin rng.integers(0, 2, n), then np.where(follows, side, coin)."))
