"""medlab: the helper package behind the medlab lessons.

Notebooks import only ``medlab``. Submodules load lazily, so ``import medlab``
stays fast and never touches the network::

    import medlab
    ctx = medlab.setup(notebook="00_medical_images", profile="auto", seed=0)
    medlab.io.read_image(...)
    medlab.record(hu_air=-1000.0)
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_SUBMODULES = {
    "bench", "checks", "cli", "compute", "data", "errors", "examples", "explain", "io", "losses", "metrics", "models",
    "profiles", "project", "records", "reset", "runner", "runtime", "student", "sweep", "train", "viz",
    "widgets",
}

__all__ = ["__version__", "setup", "record", "fit", *sorted(_SUBMODULES)]


def setup(*args, **kwargs):
    """Start a lesson: resolve the profile, seed, pick the device, print the environment.

    See :func:`medlab.records.setup`.
    """
    from .records import setup as _setup

    return _setup(*args, **kwargs)


def record(**metrics):
    """Write headline metrics to ``OUTPUT_DIR/metrics.json``. See :func:`medlab.records.record`."""
    from .records import record as _record

    return _record(**metrics)


def fit(*args, **kwargs):
    """Train a model: the training loop of lesson 01 plus progress bars, mixed precision and checkpoints.

    See :func:`medlab.train.fit`.
    """
    from .train import fit as _fit

    return _fit(*args, **kwargs)


def __getattr__(name):
    if not name.startswith("_"):
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists but one of its imports is missing
                raise
        else:
            globals()[name] = module
            return module
    raise AttributeError(f"module 'medlab' has no attribute {name!r}")
