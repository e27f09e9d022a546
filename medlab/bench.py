"""Throughput and memory of the models and of the data path, measured the careful way.

What is measured
    * **Models** (:class:`Case`): images per second for a training step (forward,
      loss, backward, AdamW step) or for inference (forward under
      ``torch.inference_mode``), on random inputs already on the device, so the
      data path is left out. One grey-scale channel, two classes (the shape of
      the lessons' tasks). Variants: mixed precision (``amp``: bfloat16 where
      supported, else float16 with a gradient scaler), ``channels_last`` memory
      format, ``torch.compile``.
    * **Data path**: phantom generation (images per second of
      :mod:`medlab.data.phantoms`) and a ``DataLoader`` over a phantom data set
      with 0, 2, 4 workers (collation and worker hand-over, no model).
    * **Ceiling**: the machine's own limits measured in the same run: a large
      matrix product (FLOP/s, per dtype) and a large device-to-device copy
      (bytes/s, read plus write). Each model row carries the FLOPs it did per
      image (counted by ``torch.utils.flop_counter``), the achieved FLOP/s and
      the ratio to the matrix-product ceiling (for mixed precision the faster
      of float32 and the half dtype, since autocast keeps some layers in
      float32): how close to the limit the model runs. The float32 product is
      measured in the float32 math the model rows run in (TF32 or not, see
      :func:`math_mode`; on CUDA PyTorch lets cuDNN convolutions use TF32 by
      default), and ``tf32`` is recorded in the ceiling, the rows and the
      machine line, so that a fraction above 100% cannot come from comparing
      TF32 convolutions with a non-TF32 product; one that still does (noise)
      is kept and flagged (``ceiling_exceeded``), not clipped.
    * **Phantom generation against training** (:func:`phantom_ratios`): the
      generators' images per second over the training rate they would feed,
      measured in the same run (target :data:`PHANTOM_TARGET` times).

How
    Warm-up steps are run first and excluded (the first ``torch.compile`` call
    is timed separately as ``compile_s``); the device is synchronised before
    and after each timed repeat; each repeat times ``steps`` steps; the result
    is the median over repeats with the minimum, maximum and interquartile
    range as the spread. Peak memory: on CUDA the maximum allocated by PyTorch
    during the case (``torch.cuda.max_memory_allocated`` after a reset); on the
    CPU the peak resident set of the process sampled every 5 ms by a
    background thread (``peak_memory_mb``; the resident set includes PyTorch
    itself, about 0.7 GB) and its rise over the case's start
    (``memory_delta_mb``). The process-wide high-water mark that lessons record
    is left untouched.

A case that cannot run (``torch.compile`` without a working compiler, a dtype
the device lacks, out of memory) becomes a row whose ``status`` says
``"not available: <reason>"`` instead of an exception.

Typical use::

    results = medlab.bench.run("cpu")           # the small grid of the cpu profile
    results.save("bench.json")
    print(results.markdown())
    medlab.bench.plot_throughput(results, mode="train")

and from a shell ``medlab bench --grid full --out bench.json``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import ParameterError

__all__ = [
    "Case", "Grid", "BenchResults", "GRIDS", "MODELS", "grid", "grid_for_profile", "build_model", "measure",
    "measure_ceiling", "measure_phantoms", "measure_loader", "run", "load", "time_repeats", "summarize",
    "PeakMemory", "plot_throughput", "plot_memory", "plot_data_path", "FORMAT", "speedups", "speedup_markdown",
    "practical_times", "practical_markdown", "machine", "math_mode", "tf32_mode", "phantom_ratios",
    "PUBLISHED", "published_markdown",
]

FORMAT = "medlab-bench-v1"
MODELS = ("small_cnn", "resnet18", "resnet50", "densenet121", "unet")
MODES = ("train", "infer")
UNET_BASE_CHANNELS = 32  # the gpu profile's width; the full-width U-Net of the paper has 64
PHANTOM_TARGET = 5.0     # phantom generation should outrun the training it feeds by at least this factor

#: Published single-GPU training rates of ResNet-50 at 224 px that the ``resnet50@224`` rows can be set beside.
#: Caveats: NVIDIA's figures are for ResNet-50 v1.5 (3-channel ImageNet input, 1000 classes, SGD, DALI data
#: pipeline, NGC container 21.03); ours are torchvision's ResNet-50 with one input channel, two classes,
#: AdamW and random inputs already on the GPU. Same order of work per image, not the same program.
PUBLISHED = (
    {"model": "resnet50", "size": 224, "mode": "train", "amp": True, "images_per_s": 2470,
     "gpu": "1x A100 80GB (DGX A100)", "precision": "mixed precision",
     "source": "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "
               "'Training performance: NVIDIA DGX A100 (8x A100 80GB)', 1 GPU (checked)"},
    {"model": "resnet50", "size": 224, "mode": "train", "amp": False, "images_per_s": 938,
     "gpu": "1x A100 80GB (DGX A100)", "precision": "TF32",
     "source": "same table, TF32 column (checked)"},
    {"model": "resnet50", "size": 224, "mode": "train", "amp": True, "images_per_s": None,
     "gpu": "1x H100", "precision": "mixed precision (fp16)",
     "source": "about 2,600-2,800 images/s is often quoted; no published table was found to check it "
               "(not verified)"},
)


# ======================================================================================
# what to measure
# ======================================================================================
@dataclass(frozen=True)
class Case:
    """One model measurement.

    Attributes:
        model: ``small_cnn``, ``resnet18``, ``resnet50``, ``densenet121`` or ``unet``.
        size: image side in pixels.
        batch_size: images per step.
        mode: ``"train"`` (forward, loss, backward, optimizer step) or
            ``"infer"`` (forward only, ``torch.inference_mode``).
        amp: mixed precision (bfloat16 where the device supports it, else
            float16 with a gradient scaler).
        channels_last: inputs and weights in the channels-last memory format.
        compile: wrap the model in ``torch.compile``.
        width: channels of the first stage for ``unet`` (default
            ``UNET_BASE_CHANNELS``) and ``small_cnn`` (default 16); None for
            the torchvision models.
    """

    model: str
    size: int
    batch_size: int
    mode: str = "train"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    width: int | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise ParameterError(f"unknown benchmark model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.mode not in MODES:
            raise ParameterError(f"mode must be 'train' or 'infer', got {self.mode!r}")
        if self.width is not None and self.model not in ("unet", "small_cnn"):
            raise ParameterError(f"width applies to unet and small_cnn only, not {self.model!r}")
        for name in ("size", "batch_size") + (("width",) if self.width is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name} must be a positive whole number, got {value!r}")

    @property
    def variant(self) -> str:
        """``fp32``, or the switches that are on joined by ``+`` (e.g. ``amp+channels_last``)."""
        parts = [name for name, on in (("amp", self.amp), ("channels_last", self.channels_last),
                                       ("compile", self.compile)) if on]
        return "+".join(parts) or "fp32"

    @property
    def label(self) -> str:
        """A short name for tables: ``resnet18@64 train b32 amp`` (``unet16@128 ...`` with a width)."""
        width = "" if self.width is None else str(self.width)
        return f"{self.model}{width}@{self.size} {self.mode} b{self.batch_size} {self.variant}"


@dataclass(frozen=True)
class Grid:
    """A set of measurements and how hard to measure each.

    Attributes:
        name: the grid's name.
        cases: the model cases.
        phantoms: ``(kind, size, n)`` phantom-generation measurements.
        loader: ``(kind, size, n, batch_size, workers)`` for the DataLoader
            measurement, or None.
        warmup, repeats, steps: warm-up steps (excluded), timed repeats, steps
            per repeat.
        ceiling: ``{"matmul_n": side of the square matrices, "copy_mb": size of
            the copied tensor}`` or None to skip the ceiling.
    """

    name: str
    cases: tuple
    phantoms: tuple = ()
    loader: tuple | None = None
    warmup: int = 2
    repeats: int = 5
    steps: int = 3
    ceiling: dict | None = field(default_factory=lambda: {"matmul_n": 2048, "copy_mb": 256})


def _variants(model, size, batches, modes=MODES, variants=("fp32", "amp", "channels_last"),
              compile_variants=("compile", "amp+channels_last+compile"), compile_batch=None):
    """Cases for one model and size: every variant at every batch size, compiled ones at one batch size."""
    cases = []
    for mode in modes:
        for variant in variants:
            for batch in batches:
                cases.append(_case(model, size, batch, mode, variant))
        for variant in compile_variants:
            cases.append(_case(model, size, compile_batch or batches[len(batches) // 2], mode, variant))
    return cases


def _case(model, size, batch, mode, variant) -> Case:
    switches = set() if variant == "fp32" else set(variant.split("+"))
    unknown = switches - {"amp", "channels_last", "compile"}
    if unknown:
        raise ParameterError(f"unknown variant part(s) {sorted(unknown)}; use amp, channels_last, compile or fp32")
    return Case(model, size, batch, mode, "amp" in switches, "channels_last" in switches, "compile" in switches)


def grid(name: str) -> Grid:
    """A named grid: ``smoke`` (seconds), ``cpu`` (about a minute on 2 cores), ``gpu``, ``full``.

    ``full`` is ResNet-18 at 64 and 224 pixels, ResNet-50 at 224 (the model
    with published reference figures, see :data:`PUBLISHED`), DenseNet-121 at
    224, the U-Net at 128 and 256, training and inference, each in fp32, with mixed
    precision, with channels_last and their combination at three batch
    sizes, plus ``torch.compile`` alone and with both switches at the middle
    batch size; phantom generation at 64, 128 and 256 pixels; the DataLoader
    with 0, 2 and 4 workers. It is meant for a GPU; on a CPU it takes hours.
    ``gpu`` (the lesson's grid in the gpu profile) is ``full`` with
    ``torch.compile`` measured for ResNet-18 at 64 and the U-Net at 128 only,
    so that the lesson stays within a runner's timeout (compiling takes tens
    of seconds per case).
    """
    if name == "smoke":
        cases = [Case("small_cnn", 32, 8, mode, amp=amp) for mode in MODES for amp in (False, True)]
        cases.append(Case("unet", 32, 2, "infer"))
        cases.append(Case("small_cnn", 32, 8, "infer", compile=True))   # skipped unless compile is asked for
        return Grid("smoke", tuple(cases), phantoms=(("ct_slice", 32, 64),), loader=("ct_slice", 32, 64, 16, (0,)),
                    warmup=1, repeats=3, steps=1, ceiling={"matmul_n": 256, "copy_mb": 8})
    if name == "cpu":
        # Mixed precision on a CPU means bfloat16, which most CPUs without AVX-512 BF16 or AMX emulate
        # (tens of times slower than float32): it is shown on the small CNN only. The U-Net is the cpu
        # profile's width (16).
        cases = []
        for mode in MODES:
            cases += [Case("resnet18", 64, 16, mode), Case("resnet18", 64, 16, mode, channels_last=True)]
        cases += [Case("small_cnn", 64, 32, mode, amp=amp) for mode in MODES for amp in (False, True)]
        cases += [Case("unet", 128, 4, mode, width=16) for mode in MODES]
        cases.append(Case("small_cnn", 64, 32, "infer", compile=True))
        return Grid("cpu", tuple(cases), phantoms=(("ct_slice", 64, 256), ("chest_xray", 64, 256)),
                    loader=("ct_slice", 64, 512, 32, (0, 2, 4)), warmup=1, repeats=3, steps=1,
                    ceiling={"matmul_n": 1024, "copy_mb": 64})
    if name in ("full", "gpu"):
        cases = []
        for model, size, batches in (("resnet18", 64, (32, 128, 512)), ("resnet18", 224, (16, 64, 256)),
                                     ("resnet50", 224, (32, 128, 256)), ("densenet121", 224, (16, 64, 128)),
                                     ("unet", 128, (8, 32, 128)),
                                     ("unet", 256, (4, 16, 64))):
            compiled = name == "full" or (model, size) in (("resnet18", 64), ("unet", 128))
            cases += _variants(model, size, batches, variants=("fp32", "amp", "channels_last", "amp+channels_last"),
                               compile_variants=("compile", "amp+channels_last+compile") if compiled else ())
        return Grid(name, tuple(cases), phantoms=(("ct_slice", 64, 1024), ("ct_slice", 128, 512),
                                                    ("ct_slice", 256, 128), ("chest_xray", 128, 512)),
                    loader=("ct_slice", 128, 2048, 64, (0, 2, 4)), warmup=3, repeats=7, steps=10,
                    ceiling={"matmul_n": 8192, "copy_mb": 1024})
    raise ParameterError(f"unknown benchmark grid {name!r}; choose smoke, cpu, gpu or full")


GRIDS = ("smoke", "cpu", "gpu", "full")


def grid_for_profile(profile, device=None) -> Grid:
    """The grid a lesson runs in ``profile`` on ``device``.

    ``smoke`` -> smoke, ``cpu`` -> cpu, ``gpu`` -> gpu. Two exceptions keep a
    lesson within its time: the gpu grid is for a CUDA device, so ``gpu`` on
    any other device (``DEVICE="cpu"``, Apple ``mps``) gets the cpu grid; and a
    profile whose images are smaller than 64 pixels (``smoke``, or a profile
    shrunk through ``MEDLAB_PROFILE_OVERRIDES`` for a quick check) gets the
    smoke grid.
    """
    name = getattr(profile, "name", profile)
    chosen = {"smoke": "smoke", "cpu": "cpu", "gpu": "gpu"}.get(name, name)
    if chosen in ("gpu", "full") and device is not None and getattr(device, "type", str(device).split(":")[0]) != "cuda":
        chosen = "cpu"
    image_size = getattr(profile, "image_size", None)
    if image_size is not None and image_size < 64:
        chosen = "smoke"
    return grid(chosen)


# ======================================================================================
# small tools
# ======================================================================================
def summarize(values: Sequence[float]) -> dict:
    """Median, minimum, maximum and interquartile range of ``values``.

    The IQR is that of the inclusive quartiles (0 for fewer than two values).
    """
    values = [float(v) for v in values]
    if not values:
        raise ParameterError("summarize needs at least one value")
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "iqr": q3 - q1,
            "n": len(values)}


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_repeats(step: Callable[[], object], device="cpu", warmup: int = 1, repeats: int = 5,
                 steps: int = 1) -> list[float]:
    """Seconds taken by ``steps`` calls of ``step``, once per repeat, after ``warmup`` untimed calls.

    The device is synchronised before starting and after each repeat, so
    asynchronous GPU work is counted where it was queued.
    """
    import torch

    device = torch.device(device)
    if repeats < 1 or steps < 1 or warmup < 0:
        raise ParameterError("repeats and steps must be at least 1 and warmup at least 0")
    for _ in range(warmup):
        step()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


class PeakMemory:
    """Peak memory over a ``with`` block, in MiB.

    On CUDA: the maximum allocated by PyTorch (peak statistics reset on
    entry). Elsewhere: the peak resident set of this process, sampled every
    ``interval`` seconds by a background thread (plus a sample at entry and at
    exit). ``peak_mb`` is the peak, ``delta_mb`` its rise over the value at
    entry.
    """

    def __init__(self, device="cpu", interval: float = 0.005):
        import torch

        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = self.start_mb = None
        self._stop = threading.Event()
        self._thread = None
        self._peak = 0

    @property
    def kind(self) -> str:
        """``cuda_max_allocated`` or ``rss``."""
        return "cuda_max_allocated" if self.device.type == "cuda" else "rss"

    @property
    def delta_mb(self):
        return None if self.peak_mb is None else max(0.0, self.peak_mb - self.start_mb)

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        import psutil

        process = psutil.Process()
        self._peak = process.memory_info().rss
        self.start_mb = self._peak / 2**20

        def sample():
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return False
        import psutil

        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, psutil.Process().memory_info().rss)
        self.peak_mb = self._peak / 2**20
        return False


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(error).__name__}: {first}"[:240]


def _is_oom(error: BaseException) -> bool:
    return "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError"


def _amp_dtype(device):
    """bfloat16 where the device computes in it (CPU, Ampere and later GPUs), else float16 (a T4 only emulates it)."""
    import torch

    from .train import _native_bf16

    if device.type == "cuda":
        return torch.bfloat16 if _native_bf16() else torch.float16
    return torch.bfloat16


def _resolve_device(device):
    import torch

    if isinstance(device, torch.device):
        return device
    from .runtime import choose_device

    return choose_device(device)


# ======================================================================================
# float32 math mode (TF32)
# ======================================================================================
def _backends():
    """``{"matmul": (new-API holder, legacy module), "conv": (...)}`` of torch's TF32 switches."""
    import torch

    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    return {"matmul": (torch.backends.cuda.matmul, torch.backends.cuda.matmul),
            "conv": (cudnn_conv, torch.backends.cudnn)}


def _tf32_switch(which: str):
    """Whether TF32 is allowed for ``which`` (``matmul`` or ``conv``); None when torch cannot say.

    The newer ``fp32_precision`` attribute (``"tf32"``/``"ieee"``) wins; ``"none"`` (or
    an older torch) falls back to the legacy ``allow_tf32`` flag. Reading the legacy
    flag after the two APIs were mixed raises in recent torch: that reads as None.
    """
    import warnings

    holder, legacy = _backends()[which]
    value = getattr(holder, "fp32_precision", None) if holder is not None else None
    if value in ("tf32", "ieee"):
        return value == "tf32"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(legacy.allow_tf32)
    except Exception:  # noqa: BLE001 - mixed legacy/new settings: unknown
        return None


def _set_tf32_switch(which: str, on: bool):
    """Set one TF32 switch with the API it is currently set through; returns a function that restores it."""
    import warnings

    holder, legacy = _backends()[which]
    value = getattr(holder, "fp32_precision", None) if holder is not None else None
    if value in ("tf32", "ieee"):
        holder.fp32_precision = "tf32" if on else "ieee"
        return lambda: setattr(holder, "fp32_precision", value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = legacy.allow_tf32
        legacy.allow_tf32 = bool(on)

    def restore():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            legacy.allow_tf32 = before
    return restore


def math_mode(device=None) -> dict:
    """The float32 math that model rows run in on ``device``: may they use TF32 tensor cores?

    Returns ``{"matmul_tf32", "conv_tf32", "float32_matmul_precision", "tf32_capable", "tf32"}``:

    * ``matmul_tf32``: cuBLAS matrix products (linear layers, and the ceiling's
      ``torch.mm``) may use TF32 (``torch.backends.cuda.matmul.fp32_precision``,
      or the legacy ``allow_tf32`` / ``torch.set_float32_matmul_precision``);
      off by default in PyTorch;
    * ``conv_tf32``: cuDNN convolutions may use TF32
      (``torch.backends.cudnn.conv.fp32_precision`` / ``allow_tf32``); **on** by
      default in PyTorch, which is why a float32 ceiling measured with a plain
      ``torch.mm`` understates what a convolutional network's float32 rows can reach;
    * ``float32_matmul_precision``: ``torch.get_float32_matmul_precision()``;
    * ``tf32_capable``: the device has TF32 tensor cores (CUDA, compute capability 8.0 or newer);
    * ``tf32``: float32 work on this device runs (at least partly) in TF32:
      capable and either switch on. Always False on a CPU.
    """
    import torch

    device = _resolve_device(device or "cpu")
    capable = False
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            capable = torch.cuda.get_device_capability(device)[0] >= 8
    matmul, conv = _tf32_switch("matmul"), _tf32_switch("conv")
    precision = torch.get_float32_matmul_precision()
    return {"matmul_tf32": matmul, "conv_tf32": conv, "float32_matmul_precision": precision,
            "tf32_capable": capable, "tf32": bool(capable and (matmul or conv or precision != "highest"))}


@contextlib.contextmanager
def tf32_mode(on: bool | None):
    """Within the block, TF32 on (True) or off (False) for both matrix products and convolutions.

    None changes nothing (the math mode torch is in is the one measured). The
    previous settings are restored on exit, through the same API they were set with.
    """
    if on is None:
        yield
        return
    restores = [_set_tf32_switch("matmul", on), _set_tf32_switch("conv", on)]
    try:
        yield
    finally:
        for restore in reversed(restores):
            restore()


@contextlib.contextmanager
def _matmul_tf32(on: bool):
    """TF32 for matrix products only, within the block (restored after)."""
    restore = _set_tf32_switch("matmul", on)
    try:
        yield
    finally:
        restore()


def _resolve_tf32(tf32):
    if tf32 is None or tf32 is True or tf32 is False:
        return tf32
    words = {"auto": None, "on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}
    if isinstance(tf32, str) and tf32.strip().lower() in words:
        return words[tf32.strip().lower()]
    raise ParameterError(f"tf32 must be 'auto' (leave torch's setting), 'on' or 'off' (or True/False/None), "
                         f"got {tf32!r}")


# ======================================================================================
# models
# ======================================================================================
def build_model(name: str, in_channels: int = 1, num_classes: int = 2, width: int | None = None):
    """The network a :class:`Case` measures (random weights).

    ``small_cnn``, ``resnet18`` and ``densenet121`` come from
    :func:`medlab.models.build_classifier` (``small_cnn`` with ``width``
    channels in its first stage when given); ``unet`` is
    :class:`medlab.models.UNet` with 4 levels and ``width`` (default
    ``UNET_BASE_CHANNELS``) channels at full resolution.
    """
    from .models import SmallCNN, UNet, build_classifier

    if name == "unet":
        return UNet(in_channels, num_classes, base_channels=width or UNET_BASE_CHANNELS, depth=4)
    if name not in MODELS:
        raise ParameterError(f"unknown benchmark model {name!r}; choose one of {', '.join(MODELS)}")
    if name == "small_cnn" and width is not None:
        return SmallCNN(in_channels, num_classes, width=width)
    return build_classifier(name, num_classes, in_channels=in_channels, progress=False)


def _flops_per_image(model, make_step_inputs, mode, loss_fn, batch) -> float | None:
    """FLOPs of one step per image (forward, plus backward when training), by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        x, y = make_step_inputs(batch)
        counter = FlopCounterMode(display=False)
        with counter:
            if mode == "train":
                loss_fn(model(x), y).backward()
            else:
                with torch.inference_mode():
                    model(x)
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops() / batch
    except Exception:  # noqa: BLE001 - the FLOP count is extra information only
        return None


def measure(case: Case, device="auto", warmup: int = 2, repeats: int = 5, steps: int = 3, seed: int = 0,
            ceiling: dict | None = None) -> dict:
    """Measure one :class:`Case`; returns a plain-data row (see :func:`run` for the keys).

    Never raises for a case the machine cannot run: the row's ``status`` is
    ``"ok"`` or ``"not available: <reason>"`` (``"out of memory"`` included).
    """
    import torch
    import torch.nn.functional as F

    from .losses import DiceCELoss

    device = _resolve_device(device)
    row = {"kind": "model", **asdict(case), "variant": case.variant, "label": case.label, "device": str(device),
           "status": "ok"}
    amp_dtype = _amp_dtype(device) if case.amp else None
    row["dtype"] = str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "float32"
    row["tf32"] = math_mode(device)["tf32"]     # float32 work (all of fp32 rows, part of amp rows) may use TF32
    row["math"] = ((f"{row['dtype']} autocast" if amp_dtype is not None else "float32")
                   + (" +TF32" if row["tf32"] else ""))
    torch.manual_seed(seed)
    model = optimizer = None
    try:
        with PeakMemory(device) as memory:
            model = build_model(case.model, width=case.width).to(device)
            memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
            model = model.to(memory_format=memory_format)
            model.train(case.mode == "train")
            generator = torch.Generator().manual_seed(seed)
            segmentation = case.model == "unet"
            seg_loss = DiceCELoss()

            def loss_fn(out, target):
                return seg_loss(out, target) if segmentation else F.cross_entropy(out.float(), target)

            def inputs(batch):
                x = torch.randn(batch, 1, case.size, case.size, generator=generator)
                shape = (batch, case.size, case.size) if segmentation else (batch,)
                y = torch.randint(0, 2, shape, generator=generator)
                return x.to(device, memory_format=memory_format), y.to(device)

            row["flops_per_image"] = _flops_per_image(model, inputs, case.mode, loss_fn, min(case.batch_size, 2))
            x, y = inputs(case.batch_size)
            net = model
            if case.compile:
                net = torch.compile(model)
            autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                        else contextlib.nullcontext())
            if case.mode == "train":
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

                def step():
                    optimizer.zero_grad(set_to_none=True)
                    with autocast:
                        loss = loss_fn(net(x), y)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()
            else:
                def step():
                    with torch.inference_mode(), autocast:
                        net(x)

            first = time.perf_counter()
            step()                              # the first call: compilation, allocator and kernel warm-up
            _synchronize(device)
            row["first_step_s"] = time.perf_counter() - first
            if case.compile:
                row["compile_s"] = row["first_step_s"]
            times = time_repeats(step, device, max(0, warmup - 1), repeats, steps)
        rates = [case.batch_size * steps / t for t in times]
        stats = summarize(rates)
        row.update(images_per_s=stats["median"], images_per_s_min=stats["min"], images_per_s_max=stats["max"],
                   images_per_s_iqr=stats["iqr"], repeats=repeats, steps=steps, warmup=warmup,
                   step_ms=1000 * statistics.median(times) / steps,
                   peak_memory_mb=memory.peak_mb, memory_delta_mb=memory.delta_mb, memory_kind=memory.kind)
        _add_ceiling_fraction(row, ceiling)
    except Exception as error:  # noqa: BLE001 - every failure becomes a recorded row
        row["status"] = "out of memory" if _is_oom(error) else f"not available: {_reason(error)}"
    finally:
        model = optimizer = None          # release the memory before the next case
        if case.compile:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _add_ceiling_fraction(row: dict, ceiling: dict | None) -> None:
    """Add ``achieved_tflops`` and, against ``ceiling``, ``ceiling_fraction`` to a model row.

    * The fraction is achieved FLOP/s over the matrix-product ceiling of the
      faster of float32 and the row's own dtype (mixed precision keeps some
      layers in float32).
    * The float32 ceiling must have been measured in the same math mode as the
      row (``tf32`` of both equal; see :func:`measure_ceiling`). When both
      record their mode and the modes differ, no fraction is given and
      ``ceiling_note`` says why: a TF32 row set against a ceiling measured
      without TF32 reads as up to several times "100%".
    * A fraction above 1 is kept, not clipped, and flagged with
      ``ceiling_exceeded = True`` (timing noise, or a kernel faster than the
      ceiling's ``torch.mm``: worth a look either way).
    * Old results without a recorded mode are compared as before.
    """
    flops = row.get("flops_per_image")
    if not flops or row.get("images_per_s") is None:
        return
    achieved = flops * row["images_per_s"]
    row["achieved_tflops"] = achieved / 1e12
    if ceiling:
        row_tf32, ceiling_tf32 = row.get("tf32"), ceiling.get("tf32")
        if row_tf32 is not None and ceiling_tf32 is not None and bool(row_tf32) != bool(ceiling_tf32):
            row["ceiling_note"] = (f"not compared: the row ran with TF32 {'on' if row_tf32 else 'off'}, the ceiling "
                                   f"was measured with TF32 {'on' if ceiling_tf32 else 'off'}")
            return
        # mixed precision runs some layers in float32: its ceiling is the faster of the two dtypes
        # (on a GPU the half-precision one; on a CPU without native bfloat16, float32)
        tflops = ceiling.get("matmul_tflops") or {}
        peak = max((tflops.get(name) or 0.0) for name in {"float32", row["dtype"]})
        if peak:
            row["ceiling_fraction"] = achieved / (peak * 1e12)
            row["ceiling_dtype"] = max({"float32", row["dtype"]}, key=lambda name: tflops.get(name) or 0.0)
            if row["ceiling_fraction"] > 1.0:
                row["ceiling_exceeded"] = True


# ======================================================================================
# ceiling and data path
# ======================================================================================
def measure_ceiling(device="auto", matmul_n: int = 2048, copy_mb: int = 256, repeats: int = 5,
                    dtypes: Iterable[str] = ("float32", "bfloat16", "float16")) -> dict:
    """The device's measured limits: matrix-product FLOP/s per dtype and copy bandwidth.

    Returns ``{"device", "matmul_n", "matmul_tflops": {dtype: TFLOP/s}, "copy_mb",
    "copy_gb_per_s": read+write bytes per second / 1e9, "notes": {dtype: reason},
    "tf32": bool, "math_mode": {...}}`` and, when TF32 is on,
    ``"float32_ieee_tflops"`` (the same product without TF32, for reference).

    The float32 product is measured in the math the model rows run in
    (:func:`math_mode`, read when this is called): when float32 convolutions
    or products may use TF32 (PyTorch's default on Ampere and newer GPUs
    allows it for cuDNN convolutions but not for matrix products), the
    product is measured with TF32 too, so that ``tf32`` is the same for the
    ceiling and the rows and no fraction of it exceeds 100% by a mismatch of
    math modes. Set the mode for a whole run with ``run(..., tf32="on"/"off")``.
    Both are the fastest of the repeats, not the median: a ceiling is what the
    machine can do, and on a busy machine the median would understate it (and
    put models above 100% of it).
    A dtype the device cannot multiply is left out with its reason in ``notes``.
    On the CPU, half-precision products are usually emulated and slow; they are
    measured on 256x256 matrices only.
    """
    import torch

    device = _resolve_device(device)
    mode = math_mode(device)
    result = {"device": str(device), "matmul_n": matmul_n, "matmul_tflops": {}, "copy_mb": copy_mb, "notes": {},
              "tf32": mode["tf32"], "math_mode": mode}
    generator = torch.Generator().manual_seed(0)

    def product_tflops(name, n):
        dtype = getattr(torch, name)
        a = torch.randn(n, n, generator=generator).to(device, dtype)
        b = torch.randn(n, n, generator=generator).to(device, dtype)
        times = time_repeats(lambda: torch.mm(a, b), device, warmup=1, repeats=repeats, steps=1)
        return 2 * n ** 3 / min(times) / 1e12

    for name in dtypes:
        if device.type == "cpu" and name != "float32":
            n = min(matmul_n, 256)          # half precision is emulated on most CPUs: keep it short
        else:
            n = matmul_n
        try:
            if name == "float32" and mode["tf32"] and not mode["matmul_tf32"] \
                    and mode["float32_matmul_precision"] == "highest":
                # the models' float32 convolutions may use TF32 (PyTorch's default), its products not: the
                # ceiling is the faster of the two, so the product is measured with TF32 (and, for
                # reference, once more as torch is set, without it)
                with _matmul_tf32(True):
                    result["matmul_tflops"][name] = product_tflops(name, n)
                result["float32_ieee_tflops"] = product_tflops(name, n)
            else:
                result["matmul_tflops"][name] = product_tflops(name, n)
        except Exception as error:  # noqa: BLE001
            result["notes"][name] = f"not available: {_reason(error)}"
    try:
        numel = copy_mb * 2**20 // 4
        src = torch.empty(numel, dtype=torch.float32, device=device).fill_(1.0)
        dst = torch.empty_like(src)
        times = time_repeats(lambda: dst.copy_(src), device, warmup=1, repeats=repeats, steps=1)
        result["copy_gb_per_s"] = 2 * src.numel() * 4 / min(times) / 1e9
        src = dst = None
    except Exception as error:  # noqa: BLE001
        result["notes"]["copy"] = f"not available: {_reason(error)}"
    return result


def measure_phantoms(kind: str = "ct_slice", size: int = 64, n: int = 256, repeats: int = 3, seed: int = 0,
                     device="cpu") -> dict:
    """Phantom generation speed: images per second of ``medlab.data.phantoms.<kind>(n, size)``.

    One warm-up call of 8 images; then ``repeats`` calls with different seeds;
    median and spread over the repeats. The phantoms rendered with torch
    (``medlab.data.stream.STREAM_KINDS``) are rendered on ``device`` (the
    device the training rows of the same run use; the CPU when that is Apple's
    ``mps``, which lacks the float64 arithmetic they use) and timed until the
    images are there; the others always run on the CPU.
    """
    import torch

    from .data import phantoms
    from .data.stream import STREAM_KINDS

    generator = getattr(phantoms, kind, None)
    if generator is None or kind not in ("chest_xray", "ct_slice", "lung_ultrasound", "us_nodule", "fundus"):
        raise ParameterError(f"unknown phantom kind {kind!r}; use chest_xray, ct_slice, lung_ultrasound, us_nodule "
                             f"or fundus")
    dev = _resolve_device(device) if kind in STREAM_KINDS else torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        dev = torch.device("cpu")
    on_device = {"device": dev, "as_tensors": True} if kind in STREAM_KINDS else {}
    generator(8, size=size, seed=seed, **on_device)
    times = []
    with PeakMemory(dev) as memory:
        for r in range(repeats):
            _synchronize(dev)
            start = time.perf_counter()
            generator(n, size=size, seed=seed + 1 + r, **on_device)
            _synchronize(dev)
            times.append(time.perf_counter() - start)
    stats = summarize([n / t for t in times])
    return {"kind": "phantom", "label": f"{kind}@{size}", "phantom": kind, "size": size, "n": n, "status": "ok",
            "device": str(dev), "images_per_s": stats["median"], "images_per_s_min": stats["min"],
            "images_per_s_max": stats["max"], "images_per_s_iqr": stats["iqr"], "repeats": repeats,
            "peak_memory_mb": memory.peak_mb, "memory_delta_mb": memory.delta_mb,
            "memory_kind": "rss" if dev.type == "cpu" else "allocator"}


def measure_loader(kind: str = "ct_slice", size: int = 64, n: int = 512, batch_size: int = 32,
                   workers: Sequence[int] = (0, 2, 4), repeats: int = 3, seed: int = 0,
                   pin_memory: bool = False, dataset=None, name: str | None = None) -> list[dict]:
    """DataLoader throughput over an in-memory phantom data set, one row per worker count.

    ``dataset`` (any map-style torch Dataset, e.g. from
    :func:`medlab.data.sources.load_source`) replaces the phantoms when given;
    ``name`` labels it. The phantom data set is generated once (not timed); each worker count gets a
    ``DataLoader`` (shuffled, ``persistent_workers`` when there are workers)
    whose first epoch (worker start-up) is timed separately as
    ``startup_s``; then ``repeats`` epochs are timed. Images per second =
    ``n`` per epoch time. The batches are only iterated, not used.
    """
    import torch
    from torch.utils.data import DataLoader

    from .data import phantoms
    from .data.dataset import PhantomDataset

    if dataset is None:
        dataset = PhantomDataset(getattr(phantoms, kind)(n, size=size, seed=seed))
    else:
        kind = name or type(dataset).__name__
    n = len(dataset)
    rows = []
    for count in workers:
        row = {"kind": "loader", "label": f"{kind}@{size} workers={count}", "phantom": kind, "size": size, "n": n,
               "batch_size": batch_size, "workers": int(count), "device": "cpu", "status": "ok"}
        try:
            with PeakMemory("cpu") as memory:
                loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=count,
                                    persistent_workers=count > 0, pin_memory=pin_memory and torch.cuda.is_available(),
                                    generator=torch.Generator().manual_seed(seed))
                start = time.perf_counter()
                for _ in loader:
                    pass
                row["startup_s"] = time.perf_counter() - start
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    for _ in loader:
                        pass
                    times.append(time.perf_counter() - start)
                del loader
            stats = summarize([n / t for t in times])
            row.update(images_per_s=stats["median"], images_per_s_min=stats["min"], images_per_s_max=stats["max"],
                       images_per_s_iqr=stats["iqr"], repeats=repeats, peak_memory_mb=memory.peak_mb,
                       memory_delta_mb=memory.delta_mb, memory_kind="rss (main process)")
        except Exception as error:  # noqa: BLE001
            row["status"] = f"not available: {_reason(error)}"
        rows.append(row)
    return rows


# ======================================================================================
# a whole grid
# ======================================================================================
def machine() -> dict:
    """The machine and software a result came from."""
    import torch

    from .runtime import cpu_model

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "gpu": None, "cuda": None}
    with contextlib.suppress(Exception):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["driver"] = _gpu_driver()
    return info


def _gpu_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (None when it is not there)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    with contextlib.suppress(Exception):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return None


class BenchResults:
    """The rows of a benchmark run with the machine and ceiling they came from.

    ``rows`` is a list of dictionaries. Model rows (``kind == "model"``) hold
    the :class:`Case` fields, ``variant``, ``label``, ``status``,
    ``images_per_s`` (median) with ``images_per_s_min``/``_max``/``_iqr``,
    ``step_ms``, ``first_step_s`` (``compile_s`` when compiled),
    ``peak_memory_mb``, ``memory_delta_mb``, ``memory_kind``,
    ``flops_per_image``, ``achieved_tflops`` and ``ceiling_fraction``.
    Phantom and loader rows hold ``images_per_s`` and its spread.
    """

    def __init__(self, rows=None, machine_info=None, ceiling=None, grid_name="", device="cpu", written=None,
                 elapsed_s=None):
        self.rows = list(rows or [])
        self.machine = dict(machine_info or {})
        self.ceiling = ceiling
        self.grid = grid_name
        self.device = str(device)
        self.written = written or time.strftime("%Y-%m-%d %H:%M:%S")
        self.elapsed_s = elapsed_s

    def __repr__(self):
        ok = sum(r.get("status") == "ok" for r in self.rows)
        return f"BenchResults(grid={self.grid!r}, device={self.device!r}, rows={len(self.rows)}, ok={ok})"

    def select(self, kind: str = "model", **where) -> list[dict]:
        """Rows of one ``kind`` (``model``, ``phantom``, ``loader``) whose fields equal ``where``."""
        return [r for r in self.rows if r.get("kind") == kind and all(r.get(k) == v for k, v in where.items())]

    def best(self, **where) -> dict | None:
        """The fastest ``ok`` model row matching ``where``."""
        rows = [r for r in self.select("model", **where) if r.get("status") == "ok"]
        return max(rows, key=lambda r: r["images_per_s"]) if rows else None

    def to_dict(self) -> dict:
        return {"format": FORMAT, "grid": self.grid, "device": self.device, "written": self.written,
                "elapsed_s": self.elapsed_s, "machine": self.machine, "ceiling": self.ceiling, "rows": self.rows}

    def save(self, path) -> Path:
        """Write the results as JSON (non-finite numbers as null); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(self.to_dict()), indent=1))
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "BenchResults":
        if data.get("format") != FORMAT:
            raise ParameterError(f"not a medlab benchmark result (format {data.get('format')!r}, expected {FORMAT!r})")
        return cls(data["rows"], data.get("machine"), data.get("ceiling"), data.get("grid", ""),
                   data.get("device", "cpu"), data.get("written"), data.get("elapsed_s"))

    def machine_line(self) -> str:
        m = self.machine
        gpu = m.get("gpu") or "no GPU"
        if m.get("gpu") and m.get("driver"):
            gpu += f" (driver {m['driver']}, CUDA {m.get('cuda', '?')})"
        text = (f"{m.get('cpu', '?')}, {m.get('cores', '?')} logical cores, torch {m.get('torch', '?')} "
                f"({m.get('torch_threads', '?')} threads), {gpu}; device {self.device}")
        mode = m.get("math_mode")
        if mode:
            switches = [name for name, key in (("convolutions", "conv_tf32"), ("matrix products", "matmul_tf32"))
                        if mode.get(key)]
            text += ("; float32 math: TF32 on (" + " and ".join(switches) + ")" if mode.get("tf32")
                     else "; float32 math: tf32 false (" + ("no TF32 hardware" if not mode.get("tf32_capable")
                                                            else "TF32 switched off") + ")")
        return text

    def markdown(self, parts: Sequence[str] = ("machine", "ceiling", "model", "data", "ratios", "published")) -> str:
        """Tables of the results, as Markdown: any of ``machine``, ``ceiling``, ``model``, ``data``,
        ``ratios`` (phantom generation against training, :func:`phantom_ratios`) and ``published``
        (:data:`PUBLISHED` beside the matching rows, when there are any)."""
        out = []
        if "machine" in parts:
            out += [f"Machine: {self.machine_line()}. Grid `{self.grid}`, written {self.written}.", ""]
        if self.ceiling and "ceiling" in parts:
            c = self.ceiling
            limits = [f"{k}{' (TF32)' if k == 'float32' and c.get('tf32') else ''} {v:.3g} TFLOP/s"
                      for k, v in c.get("matmul_tflops", {}).items()]
            if c.get("float32_ieee_tflops"):
                limits.append(f"float32 without TF32 {c['float32_ieee_tflops']:.3g} TFLOP/s (reference only)")
            if c.get("copy_gb_per_s"):
                limits.append(f"copy {c['copy_gb_per_s']:.3g} GB/s")
            mode = "" if "tf32" not in c else f"; tf32: {str(bool(c['tf32'])).lower()}, as the model rows"
            out += [f"Ceiling (matrix product {c.get('matmul_n')}², copy {c.get('copy_mb')} MiB{mode}): "
                    + ", ".join(limits), ""]
        models = self.select("model") if "model" in parts else []
        if models:
            out += ["| model | mode | batch | variant | math | images/s (median) | min–max | step ms | peak MiB | "
                    "Δ MiB | TFLOP/s | of ceiling | status |",
                    "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            for r in models:
                math_text = r.get("math") or r.get("dtype") or "–"
                if r["status"] != "ok":
                    out.append(f"| {_model_name(r)} | {r['mode']} | {r['batch_size']} | {r['variant']} | {math_text} "
                               f"| – | – | – | – | – | – | – | {r['status']} |")
                    continue
                extra = f" (compile {r['compile_s']:.0f} s)" if r.get("compile_s") else ""
                fraction = _fmt(r.get("ceiling_fraction"), ".1%")
                if r.get("ceiling_exceeded"):
                    fraction = f"**{fraction} ⚠**"
                elif r.get("ceiling_note"):
                    fraction = "n/c"
                out.append(
                    f"| {_model_name(r)} | {r['mode']} | {r['batch_size']} | {r['variant']} | {math_text} "
                    f"| {r['images_per_s']:,.1f} | {r['images_per_s_min']:,.1f}–{r['images_per_s_max']:,.1f} "
                    f"| {r['step_ms']:.1f} | {_fmt(r.get('peak_memory_mb'), '.0f')} "
                    f"| {_fmt(r.get('memory_delta_mb'), '.0f')} | {_fmt(r.get('achieved_tflops'), '.3g')} "
                    f"| {fraction} | ok{extra} |")
            out.append("")
            exceeded = [r["label"] for r in models if r.get("ceiling_exceeded")]
            if exceeded:
                out += [f"⚠ above the measured ceiling (kept, not clipped: timing noise or a kernel faster than "
                        f"the ceiling's matrix product): {', '.join(exceeded)}.", ""]
            if any(r.get("ceiling_note") for r in models):
                out += ["n/c: not compared, the row and the ceiling ran in different float32 math modes.", ""]
        for kind, title in (("phantom", "phantom generation"), ("loader", "DataLoader")):
            rows = self.select(kind) if "data" in parts else []
            if not rows:
                continue
            out += [f"| {title} | images/s (median) | min–max | notes |", "|---|---:|---:|---|"]
            for r in rows:
                if r["status"] != "ok":
                    out.append(f"| {r['label']} | – | – | {r['status']} |")
                    continue
                note = f"start-up {r['startup_s']:.2f} s" if "startup_s" in r else f"{r['n']} images per call"
                out.append(f"| {r['label']} | {r['images_per_s']:,.0f} | "
                           f"{r['images_per_s_min']:,.0f}–{r['images_per_s_max']:,.0f} | {note} |")
            out.append("")
        ratios = phantom_ratios(self) if "ratios" in parts else []
        if ratios:
            out += [f"| phantom generation vs training | generated images/s | trained images/s | ratio "
                    f"(target ≥ {PHANTOM_TARGET:g}) |", "|---|---:|---:|---:|"]
            for r in ratios:
                out.append(f"| {r['phantom']} vs {r['train_case']} | {r['images_per_s']:,.0f} | "
                           f"{r['train_images_per_s']:,.0f} | {r['ratio']:.1f}× {'met' if r['met'] else 'NOT met'} |")
            out.append("")
        if "published" in parts:
            published = published_markdown(self)
            if published:
                out += [published, ""]
        return "\n".join(out)


def speedups(results: BenchResults) -> list[dict]:
    """Each variant against fp32 for the same model, size, mode and batch size.

    Returns rows ``{"case", "variant", "speedup", "memory_ratio", "status"}``:
    ``speedup`` = images/s of the variant / images/s in fp32 (above 1: faster),
    ``memory_ratio`` = peak memory of the variant / that of fp32, on CUDA
    only (None on a CPU, where a process keeps memory it freed and the
    rise of a case depends on what ran before it).
    """
    out = []
    for row in results.select("model"):
        if row["variant"] == "fp32":
            continue
        base = next((r for r in results.select("model", model=row["model"], size=row["size"], mode=row["mode"],
                                                 batch_size=row["batch_size"], variant="fp32")
                     if r.get("width") == row.get("width")), None)
        entry = {"case": f"{_model_name(row)} {row['mode']} b{row['batch_size']}", "variant": row["variant"],
                 "speedup": None, "memory_ratio": None, "status": row["status"]}
        if base is not None and base["status"] == "ok" and row["status"] == "ok":
            entry["speedup"] = row["images_per_s"] / base["images_per_s"]
            # only the GPU's per-case peak is exact; a CPU process keeps freed memory, so its rise depends on order
            if str(row.get("memory_kind", "")).startswith("cuda") and base.get("peak_memory_mb"):
                entry["memory_ratio"] = row["peak_memory_mb"] / base["peak_memory_mb"]
        elif base is None and row["status"] == "ok":
            entry["status"] = "no fp32 row to compare with"
        out.append(entry)
    return out


def speedup_markdown(results: BenchResults) -> str:
    """:func:`speedups` as a Markdown table."""
    lines = ["| case | variant | speed vs fp32 | peak memory vs fp32 (GPU) | status |", "|---|---|---:|---:|---|"]
    for r in speedups(results):
        speed = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        lines.append(f"| {r['case']} | {r['variant']} | {speed} | "
                     f"{_fmt(r['memory_ratio'], '.2f')} | {r['status']} |")
    return "\n".join(lines)


def phantom_ratios(results: BenchResults, against: Sequence[tuple] = (("small_cnn", 64), ("resnet18", 64)),
                   target: float = PHANTOM_TARGET) -> list[dict]:
    """Phantom generation speed against the training it feeds, from rows of the same run.

    The training rate is that of the first ``(model, size)`` in ``against``
    with an ``ok`` float32 training row (the fastest such row; any variant if
    there is no float32 one): by default the cpu profile's small CNN at 64 px,
    else ResNet-18 at 64 px (the gpu grid). Returns one row per ``ok``
    phantom row: ``{"phantom", "images_per_s", "train_case", "train_images_per_s",
    "ratio", "target", "met"}``; empty without phantom or training rows.
    """
    reference = None
    for model, size in against:
        rows = [r for r in results.select("model", model=model, size=size, mode="train") if r["status"] == "ok"]
        fp32 = [r for r in rows if r["variant"] == "fp32"]
        if rows:
            reference = max(fp32 or rows, key=lambda r: r["images_per_s"])
            break
    if reference is None:
        return []
    out = []
    for r in results.select("phantom"):
        if r["status"] != "ok":
            continue
        ratio = r["images_per_s"] / reference["images_per_s"]
        out.append({"phantom": r["label"], "images_per_s": r["images_per_s"], "train_case": reference["label"],
                    "train_images_per_s": reference["images_per_s"], "ratio": ratio, "target": target,
                    "met": ratio >= target})
    return out


def published_markdown(results: BenchResults) -> str:
    """:data:`PUBLISHED` figures beside the fastest matching rows of ``results`` (empty when none match)."""
    lines = []
    for ref in PUBLISHED:
        rows = [r for r in results.select("model", model=ref["model"], size=ref["size"], mode=ref["mode"],
                                          amp=ref["amp"]) if r["status"] == "ok"]
        if not results.select("model", model=ref["model"], size=ref["size"], mode=ref["mode"]):
            continue
        best = max(rows, key=lambda r: r["images_per_s"]) if rows else None
        ours = f"{best['images_per_s']:,.0f} ({best['label']})" if best else "not measured"
        theirs = f"{ref['images_per_s']:,}" if ref["images_per_s"] else "–"
        ratio = f"{best['images_per_s'] / ref['images_per_s']:.2f}×" if best and ref["images_per_s"] else "–"
        lines.append(f"| {ref['model']}@{ref['size']} {ref['mode']}, {ref['precision']} | {ref['gpu']} | {theirs} "
                     f"| {ours} | {ratio} | {ref['source']} |")
    if not lines:
        return ""
    return "\n".join(["Published reference points (different program and data path: see the caveats of "
                      "`medlab.bench.PUBLISHED`; a ratio near 1 on an A100-class GPU says the measurement is sane):",
                      "", "| case | published on | images/s | ours (fastest matching row) | ours / published | "
                      "source |", "|---|---|---:|---:|---:|---|"] + lines)


def practical_times(results: BenchResults, jobs: Sequence[tuple]) -> list[dict]:
    """What the measured rates mean for real work.

    Args:
        jobs: ``(description, images, where)`` tuples; ``where`` is a dict of
            model-row fields (e.g. ``{"model": "resnet18", "size": 64, "mode":
            "train"}``) and the fastest ``ok`` row matching it sets the rate.

    Returns rows ``{"job", "images", "case", "images_per_s", "seconds"}``
    (rate and seconds None where no row matches).
    """
    out = []
    for description, images, where in jobs:
        row = results.best(**where)
        rate = row["images_per_s"] if row else None
        out.append({"job": description, "images": images, "case": row["label"] if row else "not measured",
                    "images_per_s": rate, "seconds": images / rate if rate else None})
    return out


def practical_markdown(results: BenchResults, jobs: Sequence[tuple]) -> str:
    """:func:`practical_times` as a Markdown table (times in seconds, or minutes above two minutes)."""
    lines = ["| job | measured case | images/s | time |", "|---|---|---:|---:|"]
    for r in practical_times(results, jobs):
        seconds = r["seconds"]
        when = ("–" if seconds is None else f"{seconds:.0f} s" if seconds < 120 else
                f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")
        lines.append(f"| {r['job']} | {r['case']} | {_fmt(r['images_per_s'], ',.1f')} | {when} |")
    return "\n".join(lines)


def _model_name(row) -> str:
    return f"{row['model']}{row.get('width') or ''}@{row['size']}"


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def load(path) -> BenchResults:
    """Read results written by :meth:`BenchResults.save` (or ``medlab bench --out``)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"no benchmark results at {str(path)!r}")
    return BenchResults.from_dict(json.loads(path.read_text()))


def run(grid_spec="cpu", device="auto", compile="auto", progress: bool = True, seed: int = 0,
        models: Sequence[str] | None = None, modes: Sequence[str] | None = None, repeats: int | None = None,
        out=None, log: Callable[[str], None] | None = None, data: str = "phantom", tf32="auto") -> BenchResults:
    """Run a grid and return its :class:`BenchResults`.

    Args:
        grid_spec: a :class:`Grid`, a grid name (``smoke``, ``cpu``, ``full``)
            or a profile (see :func:`grid_for_profile`).
        device: ``auto``, ``cpu``, ``cuda``, ...
        compile: ``True`` (or ``"yes"``) measure the compiled cases; ``False``
            (``"no"``) record them as skipped; ``"auto"``: measure them except
            in the ``smoke`` grid (compiling takes tens of seconds per model).
        models, modes: keep only these models / modes.
        repeats: override the grid's repeats.
        out: a JSON path to write the results to (also written after every
            row, so an interrupted run keeps what it measured).
        data: ``"phantom"``, or a data set name for
            :func:`medlab.data.sources.load_source` (its training split at the
            loader's image size) whose DataLoader is measured instead of the
            phantoms'. Phantom generation is measured either way.
        log: called with one line per finished row (e.g. ``print``).
        tf32: ``"auto"`` (None): measure in the float32 math mode torch is
            in (PyTorch's default on Ampere and newer GPUs: TF32 for cuDNN
            convolutions, not for matrix products); ``"on"``/``"off"`` (True/
            False): TF32 for both, for the whole run (restored afterwards).
            Either way the float32 ceiling is measured in the mode the rows
            run in and ``tf32`` is recorded in the ceiling, in each row and
            in the machine line.
    """
    device = _resolve_device(device)
    tf32 = _resolve_tf32(tf32)
    with tf32_mode(tf32):
        return _run(grid_spec, device, compile, progress, seed, models, modes, repeats, out, log, data)


def _run(grid_spec, device, compile, progress, seed, models, modes, repeats, out, log, data) -> BenchResults:
    if isinstance(grid_spec, Grid):
        spec = grid_spec
    elif grid_spec in GRIDS:
        spec = grid(grid_spec)
    else:
        spec = grid_for_profile(grid_spec, device)
    if isinstance(compile, str):
        words = {"auto": "auto", "yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}
        if compile.strip().lower() not in words:
            raise ParameterError(f"compile must be 'auto', 'yes' or 'no' (or True/False), got {compile!r}")
        compile = words[compile.strip().lower()]
    if compile not in (True, False, "auto"):
        raise ParameterError(f"compile must be 'auto', 'yes' or 'no' (or True/False), got {compile!r}")
    do_compile = spec.name != "smoke" if compile == "auto" else compile
    cases = [c for c in spec.cases if (not models or c.model in models) and (not modes or c.mode in modes)]
    repeats = repeats or spec.repeats
    dataset = None
    if data != "phantom" and spec.loader:      # load first: a missing data set stops the run before it starts
        from .data.sources import load_source

        dataset = load_source(data, split="train", size=spec.loader[1])
    started = time.perf_counter()
    results = BenchResults(machine_info={**machine(), "math_mode": math_mode(device)}, grid_name=spec.name,
                           device=device)
    work = (1 if spec.ceiling else 0) + len(cases) + len(spec.phantoms) + (1 if spec.loader else 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=work, desc=f"benchmark ({spec.name})", dynamic_ncols=True)

    def done(rows, text=None):
        if bar is not None:
            bar.update(1)
        for row in rows:
            results.rows.append(row)
            if log:
                log(text or _log_line(row))
        if out:
            results.elapsed_s = time.perf_counter() - started
            results.save(out)

    try:
        if spec.ceiling:
            results.ceiling = measure_ceiling(device, spec.ceiling["matmul_n"], spec.ceiling["copy_mb"],
                                              repeats=max(3, repeats))
            done([], None)
            if log:
                log("ceiling: " + ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in results.ceiling["matmul_tflops"].items())
                    + f", copy {results.ceiling.get('copy_gb_per_s', float('nan')):.3g} GB/s"
                    + f" (tf32: {str(results.ceiling['tf32']).lower()})")
        for case in cases:
            if bar is not None:
                bar.set_postfix_str(case.label)
            if case.compile and not do_compile:
                row = {"kind": "model", **asdict(case), "variant": case.variant, "label": case.label,
                       "device": str(device), "status": "not available: skipped in this grid "
                       "(torch.compile takes tens of seconds per model; pass compile=True / --compile)"}
            else:
                row = measure(case, device, spec.warmup, repeats, spec.steps, seed, results.ceiling)
            done([row])
        for kind, size, n in spec.phantoms:
            done([measure_phantoms(kind, size, n, repeats=repeats, seed=seed, device=device)])
        if spec.loader:
            kind, size, n, batch, workers = spec.loader
            done(measure_loader(kind, size, n, batch, workers, repeats=repeats, seed=seed,
                                pin_memory=device.type == "cuda", dataset=dataset, name=data))
    finally:
        if bar is not None:
            bar.close()
    results.elapsed_s = time.perf_counter() - started
    if log:
        for r in phantom_ratios(results):
            log(f"phantom generation {r['phantom']}: {r['ratio']:.1f}x the training rate of {r['train_case']} "
                f"(target {r['target']:g}x: {'met' if r['met'] else 'NOT met'})")
    if out:
        results.save(out)
    return results


def _log_line(row) -> str:
    if row.get("status") != "ok":
        return f"{row['label']}: {row['status']}"
    text = f"{row['label']}: {row['images_per_s']:,.1f} images/s ({row['images_per_s_min']:,.1f}-{row['images_per_s_max']:,.1f})"
    if row.get("peak_memory_mb") is not None:
        text += f", peak {row['peak_memory_mb']:.0f} MiB"
    if row.get("ceiling_fraction") is not None:
        text += f", {row['ceiling_fraction']:.1%} of the matmul ceiling" + (
            " (ABOVE the ceiling: noise?)" if row.get("ceiling_exceeded") else "")
    return text


# ======================================================================================
# figures
# ======================================================================================
def _axes(ax, figsize):
    """``(figure, axes)``: the given axes' figure, or a new Figure outside pyplot (shown once, with display)."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _model_groups(results: BenchResults, mode: str):
    rows = [r for r in results.select("model", mode=mode)]
    groups = {}
    for r in rows:
        groups.setdefault(f"{_model_name(r)}\nbatch {r['batch_size']}", []).append(r)
    return groups


def plot_throughput(results: BenchResults, mode: str = "train", ax=None, log_scale: bool | None = None):
    """Bar chart of images per second for each model, size and batch, one bar per variant.

    Error bars span the minimum to the maximum over repeats; a variant that
    could not run is marked ``n/a`` at the bottom of its group. Returns the Figure.
    """
    import numpy as np

    groups = _model_groups(results, mode)
    if not groups:
        raise ParameterError(f"no {mode!r} model rows in these results")
    variants = list(dict.fromkeys(r["variant"] for rows in groups.values() for r in rows))
    fig, ax = _axes(ax, (max(6.0, 1.3 * len(groups) * max(1, len(variants)) ** 0.5 + 2), 4.2))
    width = 0.8 / len(variants)
    rates = [r["images_per_s"] for rows in groups.values() for r in rows if r["status"] == "ok"]
    if log_scale is None:
        log_scale = bool(rates) and max(rates) / max(min(rates), 1e-9) > 30
    for j, variant in enumerate(variants):
        xs, ys, lo, hi = [], [], [], []
        for i, rows in enumerate(groups.values()):
            row = next((r for r in rows if r["variant"] == variant), None)
            if row is None:
                continue
            x = i + (j - (len(variants) - 1) / 2) * width
            if row["status"] != "ok":
                ax.text(x, 0.02, "n/a", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        rotation=90, fontsize=7, color="0.4")
                continue
            xs.append(x)
            ys.append(row["images_per_s"])
            lo.append(row["images_per_s"] - row["images_per_s_min"])
            hi.append(row["images_per_s_max"] - row["images_per_s"])
        ax.bar(xs, ys, width, yerr=[lo, hi] if xs else None, capsize=2, label=variant)
    ax.set_xticks(np.arange(len(groups)), list(groups), fontsize=8)
    ax.set_ylabel("images per second")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"{'training' if mode == 'train' else 'inference'} throughput on {results.device} "
                 "(median over repeats, bars: min–max)", fontsize=10)
    ax.legend(fontsize=8, ncols=min(len(variants), 3))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_memory(results: BenchResults, ax=None):
    """Horizontal bars of each model case's peak memory (and its rise over the case's start). Returns the Figure."""
    rows = [r for r in results.select("model") if r["status"] == "ok"]
    if not rows:
        raise ParameterError("no successful model rows in these results")
    fig, ax = _axes(ax, (7, 0.28 * len(rows) + 1.2))
    labels = [r["label"] for r in rows]
    peak = [r["peak_memory_mb"] or 0 for r in rows]
    delta = [r.get("memory_delta_mb") or 0 for r in rows]
    ys = range(len(rows))
    ax.barh(ys, peak, color="0.75", label="peak")
    ax.barh(ys, delta, left=[p - d for p, d in zip(peak, delta)], color="tab:orange", label="rise during the case")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    kind = rows[0].get("memory_kind", "")
    ax.set_xlabel("MiB (" + ("maximum allocated by PyTorch on the GPU" if kind.startswith("cuda")
                            else "resident set of the process") + ")")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_data_path(results: BenchResults, training_rate: float | None = None, ax=None):
    """Bars of phantom generation and DataLoader speed; optionally a line at a model's training rate."""
    rows = [r for r in results.select("phantom") + results.select("loader") if r["status"] == "ok"]
    if not rows:
        raise ParameterError("no data-path rows in these results")
    fig, ax = _axes(ax, (7, 0.4 * len(rows) + 1.4))
    colours = ["tab:green" if r["kind"] == "phantom" else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), [r["images_per_s"] for r in rows], color=colours,
            xerr=[[r["images_per_s"] - r["images_per_s_min"] for r in rows],
                  [r["images_per_s_max"] - r["images_per_s"] for r in rows]], capsize=2)
    ax.set_yticks(range(len(rows)), [("generate " if r["kind"] == "phantom" else "load ") + r["label"] for r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("images per second (log scale)")
    if training_rate:
        ax.axvline(training_rate, color="tab:red", ls="--", lw=1)
        ax.text(training_rate, -0.6, " training rate", color="tab:red", fontsize=8, va="bottom")
    ax.grid(axis="x", alpha=0.3)
    return fig
