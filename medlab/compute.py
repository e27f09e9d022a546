"""How much arithmetic a lesson did, and about how long it would take on an NVIDIA T4.

:mod:`medlab.train` counts the floating-point operations (FLOPs) its loops run
(:func:`medlab.train.fit`, :func:`~medlab.train.evaluate`,
:func:`~medlab.train.predict` and what calls them) and adds them to a tally
kept for the whole process; :func:`medlab.setup` empties it when a lesson
starts and :func:`medlab.record` turns it into an estimate for a T4 (the GPU
Colab most often gives) and prints it.

How the counting works, and what it costs: each loop runs its *first* batch
under torch's :class:`~torch.utils.flop_counter.FlopCounterMode` (forward, loss
and backward when training; forward when evaluating) and remembers the FLOPs
per case; the loop then multiplies by the number of cases it went through
(which it counts anyway). Nothing is added to the other steps. FLOPs are those
of matrix products and convolutions, which is what ``FlopCounterMode`` counts
(2 per multiply-add) and where nearly all the arithmetic of a network is.
Loops a lesson writes itself (lesson 01 writes the training loop out) are not
counted unless they use :class:`Meter`; their time falls under "the rest".

The estimate, in seconds::

    t4 = sum over precisions p of  flops[p] / T4_SUSTAINED_FLOPS[p]   (the counted loops)
         + (wall time of the lesson - time spent in the counted loops)   (the rest)

* ``p`` is the precision the same call would use on a T4: ``amp`` on
  (``"auto"``, ``"fp16"``) is float16 autocast on the T4's tensor cores, ``amp``
  off or ``"bf16"`` (no bfloat16 tensor cores before Ampere) is float32.
* The rest (data generation, plotting, metrics, the lesson's own loops) is
  assumed to take as long as on the machine that measured it.
* Measured on a GPU, the counted part is at least the time it took there: a
  T4 does not run a step faster than the (faster) GPU it is compared with.
  Small networks on small batches are bound by kernel launches rather than
  arithmetic, and this floor is what keeps their estimate honest.
* Measured on a CPU, the launch cost a T4 would pay is not known, so the
  estimate for small networks is optimistic; it still says whether the lesson
  is seconds or minutes of GPU arithmetic.

The T4 rates (assumptions, documented in :data:`T4_SUSTAINED_FLOPS`): the
published peaks are 8.1 TFLOPS float32 and 65 TFLOPS float16 with tensor cores
(NVIDIA T4 specifications, e.g. as listed at sysrqmts.com/en/gpus/nvidia/tesla/t4:
8.141 and 65.13 TFLOPS). What a real network sustains is a fraction of that:
NVIDIA's published ResNet-50 v1.5 throughput on one T4 (PyTorch, DeepLearningExamples
``PyTorch/Classification/ConvNets/resnet50v1.5/README.md``, "Inference performance:
NVIDIA T4") is 428 images/s in float32 (batch 64) and 1198 images/s with mixed
precision (batch 256); at 8.18 GFLOPs per 224x224 image (``FlopCounterMode`` on
torchvision's ``resnet50``) that is 3.5 TFLOPS (43 % of the float32 peak) and
9.8 TFLOPS (15 % of the float16 peak). These are best cases (a large network,
large batches, inference); training and the lessons' smaller networks reach
less, so the estimate leans low.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

__all__ = [
    "Meter", "Tally", "T4_PEAK_FLOPS", "T4_SUSTAINED_FLOPS", "t4_precision", "reset", "add", "tally",
    "estimate_t4", "format_duration", "format_flops", "report_line", "PRECISIONS",
]

PRECISIONS = ("fp32", "fp16")

#: Published peak rates of an NVIDIA T4, FLOPs per second (float32; float16 on tensor cores).
T4_PEAK_FLOPS = {"fp32": 8.1e12, "fp16": 65e12}

#: Rates assumed sustained on a T4, FLOPs per second: NVIDIA's ResNet-50 v1.5 throughput on one T4
#: (428 images/s float32, 1198 images/s mixed precision) times 8.18 GFLOPs per image; see the module docstring.
T4_SUSTAINED_FLOPS = {"fp32": 3.5e12, "fp16": 9.8e12}


def t4_precision(amp) -> str:
    """The precision a loop called with ``amp`` would run at on a T4: ``"fp16"`` or ``"fp32"``.

    ``amp="auto"``/True/``"fp16"`` is float16 autocast on a T4 (which has no
    bfloat16 tensor cores); off, None or ``"bf16"`` is float32 arithmetic.
    """
    if amp is True:
        return "fp16"
    if isinstance(amp, str) and amp.lower() in ("auto", "fp16", "float16", "half"):
        return "fp16"
    return "fp32"


@dataclass
class Tally:
    """What the counted loops of this process did since the last :func:`reset`.

    Attributes:
        flops: FLOPs per T4 precision (``"fp32"``, ``"fp16"``).
        seconds: wall time spent inside the counted loops.
        loops: how many loops were counted (a fit's training and validation
            passes count apart; each evaluate or predict call is one).
        batches: how many batches they ran (steps; for a later per-step cost).
    """

    flops: dict = field(default_factory=lambda: dict.fromkeys(PRECISIONS, 0))
    seconds: float = 0.0
    loops: int = 0
    batches: int = 0

    @property
    def total_flops(self) -> int:
        """All counted FLOPs, whatever the precision."""
        return int(sum(self.flops.values()))


_TALLY = Tally()


def reset() -> None:
    """Empty the process-wide tally (:func:`medlab.setup` does it when a lesson starts)."""
    global _TALLY
    _TALLY = Tally()


def add(flops, precision: str = "fp32", seconds: float = 0.0, batches: int = 0) -> None:
    """Add one loop's ``flops`` at ``precision``, the ``seconds`` it took and its ``batches`` to the tally."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    _TALLY.flops[precision] += int(flops)
    _TALLY.seconds += float(seconds)
    _TALLY.loops += 1
    _TALLY.batches += int(batches)


def tally() -> Tally:
    """A copy of the process-wide tally."""
    return Tally(flops=dict(_TALLY.flops), seconds=_TALLY.seconds, loops=_TALLY.loops, batches=_TALLY.batches)


class Meter:
    """Counts one loop's FLOPs: measured on its first batch, scaled by the cases that follow.

    ``meter.measure(step, n)`` runs ``step()`` (forward and backward of a batch
    of ``n`` cases) under ``FlopCounterMode`` and returns what it returns; the
    loop then calls ``meter.cases_done(total)`` with the cases it went through
    and ``meter.commit()`` once at the end, which adds ``flops`` to the tally.
    """

    def __init__(self, precision: str = "fp32"):
        self.precision = precision
        self.first_flops = None  # FLOPs of the first batch
        self.first_cases = None  # its number of cases
        self.cases = 0
        self.batches = 0
        self.started = time.perf_counter()

    @property
    def measured(self) -> bool:
        """Whether the first batch has been measured."""
        return self.first_flops is not None

    def measure(self, step, cases: int):
        """Run ``step()`` under torch's FLOP counter and remember its FLOPs per case; returns ``step()``."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            result = step()
        self.first_flops, self.first_cases = int(counter.get_total_flops()), max(int(cases), 1)
        return result

    def cases_done(self, cases: int, batches: int = 0) -> None:
        """Add ``cases`` processed cases in ``batches`` batches (the first batch included)."""
        self.cases += int(cases)
        self.batches += int(batches)

    @property
    def flops(self) -> int:
        """FLOPs of all cases so far: first batch's FLOPs per case times the cases (exact for equal batches)."""
        if self.first_flops is None:
            return 0
        return self.first_flops * self.cases // self.first_cases

    def commit(self, seconds: float | None = None) -> None:
        """Add this loop to the process-wide tally (``seconds``: default, the time since the meter was made)."""
        if seconds is None:
            seconds = time.perf_counter() - self.started
        add(self.flops, self.precision, seconds, self.batches)


def estimate_t4(counted: Tally, wall_s: float, device_type: str = "cpu") -> dict:
    """The T4 estimate for a lesson that ran ``wall_s`` seconds with ``counted`` loops on ``device_type``.

    Returns plain data: ``t4_estimate_s`` and its two parts ``t4_compute_s``
    (counted loops on a T4) and ``rest_s`` (everything else, as measured),
    ``flops`` (total) and ``flops_by_precision``, ``loops`` and ``batches``,
    ``counted_s`` (time in counted loops here) and ``wall_time_s``. See the module docstring for the formula.
    """
    compute_s = sum(counted.flops.get(p, 0) / T4_SUSTAINED_FLOPS[p] for p in PRECISIONS)
    if device_type == "cuda":
        compute_s = max(compute_s, counted.seconds)
    rest_s = max(float(wall_s) - counted.seconds, 0.0)
    return {"flops": counted.total_flops, "flops_by_precision": dict(counted.flops), "loops": counted.loops,
            "batches": counted.batches,
            "counted_s": round(counted.seconds, 2), "wall_time_s": round(float(wall_s), 2),
            "t4_compute_s": round(compute_s, 2), "rest_s": round(rest_s, 2),
            "t4_estimate_s": round(compute_s + rest_s, 1),
            "t4_sustained_flops": dict(T4_SUSTAINED_FLOPS)}


def format_duration(seconds) -> str:
    """``"12 s"``, ``"6 min"``, ``"1.5 h"``: a duration as a learner reads it (rounded)."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_flops(flops) -> str:
    """``"1.8 GFLOP"``, ``"3.2 TFLOP"``, ``"1.1 PFLOP"``: a FLOP count with its prefix."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP"
    return f"{flops:.0f} FLOP"


def report_line(estimate: dict, device: str, device_name: str | None = None) -> str:
    """One line for the learner: this run's time (since ``medlab.setup``), where, and the T4 estimate."""
    where = f"{device} ({device_name})" if device_name else device
    return (f"This run: {format_duration(estimate['wall_time_s'])} on {where}. "
            f"Estimated on a T4: about {format_duration(estimate['t4_estimate_s'])} "
            f"({format_flops(estimate['flops'])} in medlab.train loops: {format_duration(estimate['t4_compute_s'])} "
            f"on a T4; the other {format_duration(estimate['rest_s'])} assumed as here).")
