"""Exercise on late fusion (lesson 11): combining two models' probabilities through their logits.

* 11.1 late fusion: ``sigmoid(w * logit(p_image) + (1 - w) * logit(p_table))``,
  probabilities first clipped to ``[eps, 1 - eps]`` so that a model that says
  exactly 0 or 1 does not make the fused score infinite or undefined.

The reference below is the answer; the notebook holds the same lines between
solution markers.
"""
from __future__ import annotations

import numpy as np

from . import Case, Exercise, compare, register

__all__ = ["late_fusion", "EPS"]

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-6


def late_fusion(p_image, p_table, weight):
    """Fused probability ``(N,)``: the weighted mean of the two models' logits, back through the sigmoid.

    Args:
        p_image, p_table: probabilities ``(N,)`` of the image and the table model.
        weight: the image model's weight in ``[0, 1]`` (the table gets ``1 - weight``).
    """
    p_image = np.clip(np.asarray(p_image, dtype=np.float64), EPS, 1 - EPS)
    p_table = np.clip(np.asarray(p_table, dtype=np.float64), EPS, 1 - EPS)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    z = weight * logit(p_image) + (1 - weight) * logit(p_table)
    return 1 / (1 + np.exp(-z))


def _cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    u = lambda n: rng.uniform(0.02, 0.98, n)  # noqa: E731
    return [
        Case("20 patients, weight 0.5", (u(20), u(20), 0.5)),
        Case("20 patients, weight 0.3 (the table counts more)", (u(20), u(20), 0.3)),
        Case("weight 1 (the image model alone)", (u(8), u(8), 1.0)),
        Case("weight 0 (the table model alone)", (u(8), u(8), 0.0)),
        Case("confident models (probabilities near 0 and 1)", (np.array([0.999, 0.001, 0.9, 0.2]),
                                                                np.array([0.7, 0.01, 0.0001, 0.99]), 0.6)),
        Case("probabilities exactly 0 and 1, weight 0 (the image says 1 but does not count)",
             (np.array([1.0, 0.0, 0.5]), np.array([0.2, 0.6, 0.5]), 0.0)),
        Case("probabilities exactly 0 and 1, both models", (np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]), 0.5)),
        Case("one patient", (np.array([0.8]), np.array([0.4]), 0.7)),
    ]


def _compare(got, expected, case) -> str | None:
    array = np.asarray(got, dtype=np.float64) if not hasattr(got, "detach") else got.detach().cpu().numpy()
    if array.shape != np.shape(expected):
        return f"the fused probabilities have shape {array.shape}, expected {np.shape(expected)} (one per patient)"
    if not np.all(np.isfinite(array)):
        return ("some fused probabilities are nan or infinite: clip the probabilities to [1e-6, 1 - 1e-6] before "
                "the logit (log(p / (1 - p)) is infinite at 0 and 1, and 0 * infinity is nan)")
    if np.any((array < 0) | (array > 1)):
        return "return probabilities (between 0 and 1): the fused logit still has to go through the sigmoid"
    return compare(array, expected, atol=1e-6, rtol=1e-5, where="the fused probabilities")


register(Exercise(
    key="11.1", title="late fusion of two models' probabilities", reference=late_fusion, cases=_cases,
    hint="clip both probabilities to [1e-6, 1 - 1e-6]; take logit(p) = log(p / (1 - p)) of each; weight the image "
         "logit by `weight` and the table logit by 1 - weight; add; map back with 1 / (1 + exp(-z)). Averaging the "
         "probabilities themselves is a different (weaker) rule.",
    compare=_compare))
