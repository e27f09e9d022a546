"""Where and how the code runs: device choice, seeding, determinism, environment report."""
from __future__ import annotations

import os
import platform
import random
import sys
from importlib import metadata

from .errors import ParameterError

__all__ = ["cpu_model", "choose_device", "seed_everything", "set_deterministic", "environment", "environment_report"]

REPORTED_PACKAGES = (
    "medlab", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "matplotlib",
    "pydicom", "nibabel", "Pillow", "papermill", "ipywidgets", "tqdm", "monai", "medpy", "nilearn",
)


def choose_device(device: str = "auto"):
    """Return the ``torch.device`` to use.

    Args:
        device: ``auto`` (CUDA if available, then Apple ``mps``, else CPU),
            ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ParameterError: the name is not one of these, or names a device that
            is not on this machine (the message says what is).
    """
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ParameterError("DEVICE='mps' asked for, but Apple's MPS backend is not available here; use 'auto' or 'cpu'")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ParameterError(f"DEVICE={device!r} asked for, but no CUDA GPU is available here; use 'auto' or 'cpu'")
        if ":" in name:
            index_text = name.split(":", 1)[1]
            if not index_text.isdigit():
                raise ParameterError(f"DEVICE={device!r}: the GPU index must be a whole number, as in 'cuda:1'")
            index = int(index_text)
            count = torch.cuda.device_count()
            if index >= count:
                raise ParameterError(f"DEVICE={device!r}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}")
        return torch.device(name)
    raise ParameterError(f"unknown DEVICE {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Returns the seed, so a notebook can write ``SEED = seed_everything(SEED)``.
    Code in medlab that needs randomness takes a seed or a generator
    explicitly; this call covers user code and libraries that use globals.
    """
    import numpy as np
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ParameterError(f"SEED must be a non-negative whole number, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (or allow fast non-deterministic ones again).

    With ``enabled`` the same seed on the same machine gives the same numbers.
    cuDNN autotuning is switched off, and ``CUBLAS_WORKSPACE_CONFIG`` is set as
    CUDA requires. Operations with no deterministic implementation warn rather
    than fail.
    """
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str = "auto") -> dict:
    """The environment as plain data: Python, packages, CPU, memory, device.

    Missing optional packages appear with version ``None``.
    """
    import psutil
    import torch

    dev = choose_device(device)
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "device": str(dev),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "packages": {name: _version(name) for name in REPORTED_PACKAGES},
    }
    return info


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for reports and benchmark results."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_report(device: str = "auto", profile=None) -> str:
    """A short human-readable report of :func:`environment`, for notebooks and ``medlab doctor``."""
    info = environment(device)
    lines = [
        f"Python {info['python']} on {info['platform']}",
        f"CPU: {info['cpu']} ({info['cores']} cores, torch uses {info['torch_threads']} threads), RAM {info['memory_gb']} GB",
        f"Device: {info['device']}" + (f" ({info['gpu']}, CUDA {info['cuda']})" if info["gpu"] else ""),
    ]
    if profile is not None:
        lines.append(f"Profile: {profile.name} ({profile.description})")
    present = [f"{k} {v}" for k, v in info["packages"].items() if v]
    missing = [k for k, v in info["packages"].items() if not v]
    lines.append("Packages: " + ", ".join(present))
    if missing:
        lines.append("Not installed (optional): " + ", ".join(missing))
    return "\n".join(lines)
