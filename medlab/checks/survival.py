"""Exercise on survival analysis (lesson 11): Harrell's concordance index with censoring.

* 11.2 the concordance index: over every *comparable* pair of patients, the
  share in which the patient with the higher predicted risk is the one who
  had the event first.

A pair ``(i, j)`` is comparable when we know who progressed first: patient
``i`` had the event (``event[i] == 1``) and either ``time[i] < time[j]``, or
``time[i] == time[j]`` and ``j`` was censored then (a patient censored at day 5
was still well at day 5). Two events at the same time, or a pair whose earlier
time is a censoring, are not comparable. A comparable pair is concordant when
``risk[i] > risk[j]``, counts one half when the risks are equal, and is
discordant otherwise. This is ``lifelines.utils.concordance_index(time, -risk,
event)`` (lifelines scores *survival*, so the risk enters with a minus sign).
"""
from __future__ import annotations

import numpy as np

from . import Case, Exercise, compare, register

__all__ = ["concordance_index"]


def concordance_index(time, event, risk) -> float:
    """Harrell's C of predicted ``risk`` (higher: earlier event) for ``time`` (N,) and ``event`` (N,) 0/1.

    Raises:
        ValueError: no comparable pair (no event, or every event tied with every other time).
    """
    time, risk = np.asarray(time, dtype=np.float64), np.asarray(risk, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    earlier = (time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~event[None, :])
    comparable = earlier & event[:, None]  # row i had the event before column j
    if not comparable.any():
        raise ValueError("no comparable pair of patients: the concordance index is undefined")
    concordant = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return float((concordant * comparable).sum() / comparable.sum())


def _cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)

    def cohort(n, censored, ties=False, risk_ties=False):
        time = rng.integers(1, 15, n).astype(float) if ties else rng.exponential(10, n).round(3)
        event = (rng.random(n) > censored).astype(int)
        risk = -np.log1p(time) + rng.normal(0, 1, n)
        if risk_ties:
            risk = np.round(risk)
        return time, event, risk

    cases = [
        Case("30 patients, 40% censored", cohort(30, 0.4)),
        Case("30 patients, none censored", cohort(30, 0.0)),
        Case("40 patients, 70% censored (censoring matters)", cohort(40, 0.7)),
        Case("25 patients with tied times (whole days)", cohort(25, 0.4, ties=True)),
        Case("25 patients with tied risks (risk rounded)", cohort(25, 0.3, risk_ties=True)),
    ]
    cases += [
        Case("an event and a censoring on the same day (the censored patient outlived the other)",
             (np.array([5.0, 5.0, 9.0]), np.array([1, 0, 1]), np.array([2.0, 1.0, 0.5]))),
        Case("two events on the same day (not comparable with each other)",
             (np.array([3.0, 3.0, 8.0, 10.0]), np.array([1, 1, 1, 0]), np.array([1.0, 3.0, 2.0, 0.0]))),
        Case("the earlier time censored (that pair is not comparable)",
             (np.array([2.0, 6.0, 7.0]), np.array([0, 1, 1]), np.array([0.1, 0.9, 0.5]))),
        Case("a perfect risk score", (np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 1, 0]),
                                      np.array([4.0, 3.0, 2.0, 1.0]))),
        Case("a constant risk score (every pair a tie: 0.5)", (np.array([1.0, 2.0, 3.0, 4.0]),
                                                               np.array([1, 0, 1, 0]), np.zeros(4))),
    ]
    return cases


def _compare(got, expected, case) -> str | None:
    try:
        value = float(got)
    except (TypeError, ValueError):
        return f"return one number, got {type(got).__name__}"
    if abs(value - (1 - expected)) < 1e-9 and abs(expected - 0.5) > 1e-6:
        return (f"got {value:.4f}, expected {expected:.4f}: exactly 1 - C. A pair is concordant when the patient "
                f"who had the event first has the HIGHER risk")
    return compare(value, expected, atol=1e-9, rtol=1e-9, where="the concordance index")


register(Exercise(
    key="11.2", title="Harrell's concordance index with censoring", reference=concordance_index, cases=_cases,
    hint="build (N, N) boolean matrices: row i, column j. Comparable: event[i] and (time[i] < time[j], or "
         "time[i] == time[j] and j censored). Score each comparable pair 1 when risk[i] > risk[j], 0.5 when the risks "
         "are equal, 0 otherwise; C = summed scores / number of comparable pairs. A censored patient never starts a "
         "comparable pair.",
    compare=_compare))
