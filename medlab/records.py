"""The metrics record a lesson writes and the runner reads.

A lesson starts with :func:`setup` and ends with :func:`record`::

    ctx = medlab.setup("01_transfer_learning", profile=PROFILE, seed=SEED,
                       device=DEVICE, output_dir=OUTPUT_DIR, params=dict(DATA=DATA))
    ...
    medlab.record(auroc_scratch=0.81, auroc_finetune=0.93)

``record`` writes ``OUTPUT_DIR/metrics.json``: the notebook's name, profile,
parameters, seed, device, package versions, wall time since ``setup``, peak
memory of the kernel process and the metrics, and the compute the lesson's
``medlab.train`` loops did with an estimate of its run time on an NVIDIA T4
(``compute_flops``, ``t4_estimate_s`` and the details under ``compute``; see
:mod:`medlab.compute`), which it also prints as one line for the learner.
Calling it again adds to the metrics already written. Only finite numbers,
strings, booleans and small lists of those are accepted; a NaN or infinite
metric is written as ``null`` and its name listed under ``"nonfinite"`` so the
runner can flag it.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ParameterError

__all__ = ["Context", "setup", "record", "current", "read_metrics", "peak_memory_mb", "METRICS_FILE"]

METRICS_FILE = "metrics.json"
MAX_LIST_LENGTH = 1000


@dataclass
class Context:
    """What :func:`setup` resolved for a lesson; :func:`record` writes it down."""

    notebook: str
    profile: object  # medlab.profiles.Profile
    seed: int
    device: object  # torch.device
    output_dir: Path
    params: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    metrics: dict = field(default_factory=dict)
    nonfinite: list = field(default_factory=list)
    quiet: bool = False

    @property
    def knobs(self) -> dict:
        """This lesson's own knobs in the resolved profile (see :data:`medlab.profiles.LESSON_KNOBS`)."""
        return self.profile.knobs(self.notebook)

    @property
    def phantom_device(self):
        """Where this lesson renders its phantoms: the lesson's CUDA GPU in the ``gpu`` profile, else the CPU.

        In the ``gpu`` profile the phantoms are drawn on the GPU the networks train on, so generating thousands of
        128-pixel images takes a fraction of a second. Everywhere else they are drawn on the CPU: these are the
        images the ``smoke`` and ``cpu`` profiles' expected metrics were measured on (a GPU draws its pixel noise
        from a stream of its own), and Apple's ``mps`` lacks the float64 arithmetic the renderers use.
        """
        import torch

        if self.profile.name == "gpu" and self.device.type == "cuda":
            return self.device
        return torch.device("cpu")

    @property
    def metrics_path(self) -> Path:
        """Where :func:`record` writes."""
        return self.output_dir / METRICS_FILE


_CURRENT: Context | None = None


def setup(notebook: str, profile="auto", seed: int = 0, device: str = "auto", output_dir=".",
          params: dict | None = None, deterministic: bool = True, quiet: bool = False) -> Context:
    """Start a lesson: resolve the profile, seed everything, choose the device.

    Args:
        notebook: the lesson's name, e.g. ``"00_medical_images"``.
        profile: ``smoke``, ``cpu``, ``gpu`` or ``auto`` (see :mod:`medlab.profiles`).
        seed: fixes data, initialisation and order.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        output_dir: folder for ``metrics.json`` (created if missing).
        params: the notebook's other parameters, recorded as they were.
        deterministic: ask torch for deterministic kernels.
        quiet: do not print the environment report.

    Returns:
        the :class:`Context`, which holds ``profile``, ``device`` and ``seed``.
    """
    from . import compute, profiles, runtime

    global _CURRENT
    resolved = profiles.resolve(profile)
    dev = runtime.choose_device(device)
    runtime.seed_everything(seed)
    if deterministic:
        runtime.set_deterministic(True)
    out = Path(output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    _CURRENT = Context(notebook=notebook, profile=resolved, seed=seed, device=dev, output_dir=out,
                       params=dict(params or {}), quiet=quiet)
    compute.reset()  # the T4 estimate counts this lesson's loops only
    show_figures_inline()
    if not quiet:
        print(runtime.environment_report(str(dev), resolved))
    return _CURRENT


def show_figures_inline() -> bool:
    """In a notebook, show a returned or ``display``-ed matplotlib ``Figure`` as an image.

    ``medlab.viz`` builds figures without pyplot, so no backend shows them by
    itself; this registers IPython's PNG formatter for ``Figure`` (what
    ``%matplotlib inline`` also does) without changing the backend a user
    chose. Returns False outside an IPython kernel, where there is nothing to do.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    select_figure_formats(shell, {"png"}, bbox_inches="tight")
    return True


def _exercise_results() -> dict:
    """``{exercise: "passed" | "failed: ..."}`` for the exercises checked in this kernel so far."""
    module = sys.modules.get("medlab.checks")
    return dict(module.RESULTS) if module is not None else {}


def current() -> Context:
    """The context of the running lesson.

    Raises:
        ParameterError: :func:`setup` has not been called in this kernel.
    """
    if _CURRENT is None:
        raise ParameterError("no lesson is set up: call medlab.setup(...) in the set-up cell before medlab.record(...)")
    return _CURRENT


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _clean(name: str, value, ctx: Context):
    """Turn a metric value into JSON-safe plain data, or refuse it."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy or torch scalar
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            if name not in ctx.nonfinite:
                ctx.nonfinite.append(name)
            return None
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST_LENGTH:
            raise ParameterError(f"metric {name!r} is a list of {len(value)} items; record at most {MAX_LIST_LENGTH} (save big arrays to a file instead)")
        return [_clean(name, item, ctx) for item in value]
    raise ParameterError(f"metric {name!r} has type {type(value).__name__}; record numbers, strings, booleans or small lists of them")


def _profile_overrides() -> dict | None:
    """The profile fields replaced through ``MEDLAB_PROFILE_OVERRIDES``, or None."""
    from .profiles import OVERRIDES_VARIABLE

    text = os.environ.get(OVERRIDES_VARIABLE, "").strip()
    return json.loads(text) if text else None


def record(**metrics) -> Path:
    """Add ``metrics`` to the lesson's ``metrics.json`` and return its path.

    NaN and infinite values are written as ``null`` and listed under
    ``"nonfinite"``; the runner treats a null metric that has an expectation
    as a failure. Prints this run's wall time and the estimate for a T4
    (unless :func:`setup` was quiet).
    """
    from . import compute, runtime

    ctx = current()
    for name, value in metrics.items():
        ctx.metrics[name] = _clean(name, value, ctx)
    env = runtime.environment(str(ctx.device))
    wall = time.perf_counter() - ctx.started
    estimate = compute.estimate_t4(compute.tally(), wall, ctx.device.type)
    document = {
        "notebook": ctx.notebook,
        "profile": ctx.profile.name,
        "profile_overrides": _profile_overrides(),
        "seed": ctx.seed,
        "device": str(ctx.device),
        "params": {k: _clean(k, v, ctx) if not isinstance(v, dict) else str(v) for k, v in ctx.params.items()},
        "versions": {k: v for k, v in env["packages"].items() if v},
        "machine": {"cpu": env["cpu"], "cores": env["cores"], "gpu": env["gpu"]},
        "wall_time_s": round(wall, 2),
        "peak_memory_mb": peak_memory_mb(),
        "metrics": ctx.metrics,
        "nonfinite": ctx.nonfinite,
        "exercises": _exercise_results(),
        "compute_flops": estimate["flops"],
        "t4_estimate_s": estimate["t4_estimate_s"],
        "compute": estimate,
    }
    path = ctx.metrics_path
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, allow_nan=False))
    os.replace(tmp, path)
    if not ctx.quiet:
        print(compute.report_line(estimate, str(ctx.device), env["gpu"] or env["cpu"]))
    return path


def read_metrics(path) -> dict:
    """Read a ``metrics.json`` written by :func:`record` (a folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    return json.loads(path.read_text())
