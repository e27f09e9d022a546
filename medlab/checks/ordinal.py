"""Exercises on ordinal regression with a CORAL head (lesson 05): cumulative targets, the head, decoding.

An ordinal grade ``y`` in ``0 .. K-1`` is learned as ``K - 1`` yes/no questions
"is the grade above k?" (Frank and Hall 2001; CORAL, Cao, Mirjalili and
Raschka 2020):

* 05.1 the cumulative targets: grade ``k`` -> ``[1] * k + [0] * (K - 1 - k)``,
  a float tensor ``(N, K-1)`` for ``binary_cross_entropy_with_logits``;
* 05.2 the CORAL head's forward: one weight vector shared by all thresholds
  and one bias per threshold, ``logit_k = features . w + b_k``;
* 05.3 decoding: the predicted grade is the number of thresholds whose
  probability ``sigmoid(logit_k)`` exceeds 0.5.

The references below are the answers; the notebook holds the same lines
between solution markers.
"""
from __future__ import annotations

import torch

from . import Case, Exercise, compare, register

__all__ = ["cumulative_targets", "coral_logits", "grades_from_logits"]


# ---------------------------------------------------------------------------------------
# the references
# ---------------------------------------------------------------------------------------
def cumulative_targets(grades: torch.Tensor, num_grades: int) -> torch.Tensor:
    """Cumulative targets ``[y > k]`` for ``k = 0 .. K-2``: float tensor ``(N, K-1)`` from grades ``(N,)``.

    Grade 0 gives all zeros, grade ``K-1`` all ones; grade 2 of 4 gives ``[1, 1, 0]``.
    """
    thresholds = torch.arange(num_grades - 1, device=grades.device)
    return (grades[:, None] > thresholds[None, :]).float()


def coral_logits(features: torch.Tensor, weight: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """CORAL threshold logits ``(N, K-1)``: ``features (N, D) @ weight (D,)``, plus ``biases (K-1,)`` per threshold."""
    return (features @ weight)[:, None] + biases[None, :]


def grades_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Predicted grades ``(N,)`` (int64): how many threshold probabilities ``sigmoid(logits)`` exceed 0.5."""
    return (torch.sigmoid(logits) > 0.5).sum(dim=1)


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def _targets_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    return [
        Case("8 random grades of K=4", (torch.randint(0, 4, (8,), generator=g), 4)),
        Case("a batch of 1 (grade 2 of K=4)", (torch.tensor([2]), 4)),
        Case("3 grades of K=4 (as many frames as thresholds)", (torch.tensor([0, 3, 1]), 4)),
        Case("K=2 (one threshold)", (torch.tensor([0, 1, 1, 0, 1]), 2)),
        Case("K=6 with the top grade absent", (torch.randint(0, 5, (12,), generator=g), 6)),
        Case("every frame grade 0", (torch.zeros(5, dtype=torch.long), 4)),
        Case("every frame the top grade", (torch.full((5,), 3, dtype=torch.long), 4)),
    ]


def _coral_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)

    def case(n, d, k, what):
        features = torch.randn(n, d, generator=g)
        weight = torch.randn(d, generator=g).requires_grad_()
        biases = torch.sort(torch.randn(k - 1, generator=g), descending=True).values.requires_grad_()
        return Case(f"{what}: features ({n}, {d}), K={k}", (features, weight, biases))

    return [case(6, 8, 4, "a batch of 6"), case(1, 8, 4, "a batch of 1"), case(3, 5, 4, "N equal to K-1"),
            case(4, 16, 2, "one threshold"), case(10, 3, 7, "K=7")]


def _decode_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    return [
        Case("16 random frames of K=4", (2 * torch.randn(16, 3, generator=g),)),
        Case("logits between 0 and 0.5 (probabilities just above one half)",
             (torch.tensor([[0.3, 0.1, -2.0], [0.4, 0.2, 0.05]]),)),
        Case("a batch of 1", (torch.tensor([[3.0, 1.0, -1.0]]),)),
        Case("K=2 (one threshold)", (torch.tensor([[-1.0], [2.0], [0.2]]),)),
        Case("logits exactly 0 (probability exactly one half is not above it)", (torch.zeros(3, 3),)),
        Case("every threshold far below (grade 0)", (torch.full((4, 5), -9.0),)),
        Case("every threshold far above (top grade)", (torch.full((4, 5), 9.0),)),
        Case("thresholds out of order (yes, no, yes)", (torch.tensor([[2.0, -1.0, 1.0], [-1.0, 2.0, -3.0]]),)),
    ]


# ---------------------------------------------------------------------------------------
# comparisons beyond the values
# ---------------------------------------------------------------------------------------
def _compare_targets(got, expected, case) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"return a torch tensor, got {type(got).__name__}"
    if not got.is_floating_point():
        return (f"the targets should be a float tensor (binary cross-entropy needs floats), got {got.dtype}; "
                f"end with .float()")
    return compare(got, expected, where="the targets")


def _compare_logits(got, expected, case) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"return a torch tensor, got {type(got).__name__}"
    if not got.requires_grad:
        return "the logits carry no gradient back to the weight and biases: keep to torch operations (no .detach(), no NumPy)"
    return compare(got, expected, where="the logits")


def _compare_grades(got, expected, case) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"return a torch tensor, got {type(got).__name__}"
    if got.is_floating_point() or got.dtype == torch.bool:
        return f"grades are whole numbers: return an integer tensor, got {got.dtype}"
    return compare(got, expected, where="the grades")


register(Exercise(
    key="05.1", title="cumulative ordinal targets", reference=cumulative_targets, cases=_targets_cases,
    hint="grade k of K becomes K-1 yes/no answers [k > 0, k > 1, ..., k > K-2]: compare grades[:, None] with "
         "torch.arange(K - 1) (K-1 columns, not K; not a one-hot vector), then .float()",
    compare=_compare_targets))

register(Exercise(
    key="05.2", title="CORAL head forward", reference=coral_logits, cases=_coral_cases,
    hint="one score per frame, features @ weight, shape (N,); then add the K-1 biases to it as columns: "
         "score[:, None] + biases[None, :] gives (N, K-1)",
    compare=_compare_logits))

register(Exercise(
    key="05.3", title="decoding CORAL logits to grades", reference=grades_from_logits, cases=_decode_cases,
    hint="apply torch.sigmoid to the logits, compare with 0.5 (strictly above), and count the thresholds passed "
         "per frame: .sum(dim=1)",
    compare=_compare_grades))
