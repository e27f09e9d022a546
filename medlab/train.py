"""The training loop: ``fit``, ``evaluate``, ``predict``.

Flat, explicit functions in the style of torchvision's reference scripts:
:func:`train_one_epoch` and :func:`evaluate` are what :func:`fit` calls each
epoch, and each can be called on its own in a lesson.

What the loop does for you:

* mixed precision on CUDA (``amp="auto"``: bfloat16 where the GPU supports it,
  else float16 with a gradient scaler); ``amp="bf16"`` also works on the CPU;
* ``channels_last`` memory format for 4D inputs (``"auto"``: on CUDA);
* ``torch.inference_mode`` for evaluation and prediction;
* ``torch.compile`` on request (``compile="reduce-overhead"``: on CUDA it
  replays each step as a CUDA graph, which removes the per-kernel launch cost
  that dominates small models and small batches; off by default);
* ``tqdm.auto`` progress: one bar for the whole run with the last epoch's
  numbers as postfix (a widget in JupyterLab, text in papermill logs);
  ``progress=False`` silences it;
* checkpoints as plain dictionaries (``last.pt`` every epoch, ``best.pt``
  when the monitored value improves), loaded with ``weights_only=True``, and
  resuming from one (model, optimizer, scheduler, scaler, history and the
  random-number states, so a resumed run continues as the uninterrupted run
  would have on the same machine);
* early stopping on a monitored value and a :class:`History` of plain data.

Batches may be ``(inputs, targets)`` tuples or lists, dictionaries with an
``"image"`` entry and a ``"label"``/``"mask"``/``"target"`` entry, or bare
input tensors (for :func:`predict`).
"""
from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn as nn

from . import compute
from .errors import ParameterError
from .losses import get_loss
from .runtime import choose_device, seed_everything

__all__ = [
    "History", "Predictions", "fit", "train_one_epoch", "evaluate", "predict", "predict_masks", "save_checkpoint",
    "load_checkpoint", "resolve_amp", "resolve_compile", "COMPILE_MODES",
]

CHECKPOINT_FORMAT = "medlab-checkpoint-v1"
_TARGET_KEYS = ("label", "labels", "mask", "target", "targets", "seg", "y")
_INPUT_KEYS = ("image", "images", "input", "inputs", "x")


# ======================================================================================
# history
# ======================================================================================
@dataclass
class History:
    """What happened in training, as plain data.

    Attributes:
        metrics: one list per quantity, one entry per epoch: ``epoch``
            (1-based), ``train_loss``, ``lr``, and with a validation loader
            ``val_loss`` and ``val_<name>`` for each validation metric.
        monitor: the quantity that picks the best epoch (e.g. ``val_loss``).
        mode: ``"min"`` or ``"max"``: whether lower or higher is better.
        best_epoch: 1-based epoch with the best monitored value (None before
            any epoch).
        best_value: that value.
        stopped_early: whether early stopping ended the run.
        epoch_seconds: wall time of each epoch (kept apart from ``metrics``,
            which are identical between runs with the same seed).

    ``history["val_loss"]`` reads a list; :meth:`to_dict` and
    :meth:`from_dict` convert to and from JSON-ready dictionaries.
    """

    metrics: dict = field(default_factory=dict)
    monitor: str = "val_loss"
    mode: str = "min"
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    epoch_seconds: list = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        return self.metrics[key]

    def __contains__(self, key) -> bool:
        return key in self.metrics

    def __len__(self) -> int:
        return len(self.metrics.get("epoch", []))

    def keys(self):
        return self.metrics.keys()

    def append(self, row: Mapping) -> None:
        """Add one epoch's values (missing quantities get None)."""
        n = len(self)
        for key in row:
            self.metrics.setdefault(key, [None] * n)
        for key, values in self.metrics.items():
            value = row.get(key)
            values.append(None if value is None else float(value) if key != "epoch" else int(value))

    def is_improvement(self, value) -> bool:
        """Whether ``value`` beats the best so far under ``mode``."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def to_dict(self) -> dict:
        return {"metrics": {k: list(v) for k, v in self.metrics.items()}, "monitor": self.monitor,
                "mode": self.mode, "best_epoch": self.best_epoch, "best_value": self.best_value,
                "stopped_early": self.stopped_early, "epoch_seconds": list(self.epoch_seconds)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "History":
        return cls(metrics={k: list(v) for k, v in data.get("metrics", {}).items()},
                   monitor=data.get("monitor", "val_loss"), mode=data.get("mode", "min"),
                   best_epoch=data.get("best_epoch"), best_value=data.get("best_value"),
                   stopped_early=bool(data.get("stopped_early", False)),
                   epoch_seconds=list(data.get("epoch_seconds", [])))


class Predictions(NamedTuple):
    """Outputs of :func:`predict`: ``y_prob`` (probabilities or logits) and ``y_true`` (None without targets)."""

    y_prob: np.ndarray
    y_true: np.ndarray | None


# ======================================================================================
# small pieces
# ======================================================================================
def resolve_amp(amp, device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision.

    ``"auto"`` (or True): on CUDA bfloat16 when the GPU has bfloat16 hardware
    (Ampere and later), else float16 (a T4 would only emulate bfloat16, slowly,
    and cuDNN has no bfloat16 convolutions there); elsewhere off (bfloat16 on
    most CPUs is slower than float32).
    ``"bf16"``/``"fp16"`` force a dtype (both run on the CPU too); None,
    False, ``"off"`` or ``"fp32"`` switch mixed precision off.
    """
    device = torch.device(device)
    if amp in (None, False) or (isinstance(amp, str) and amp.lower() in ("off", "none", "fp32", "float32", "no")):
        return None
    if amp is True or (isinstance(amp, str) and amp.lower() == "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if _native_bf16() else torch.float16
        return None
    if isinstance(amp, str) and amp.lower() in ("bf16", "bfloat16"):
        return torch.bfloat16
    if isinstance(amp, str) and amp.lower() in ("fp16", "float16", "half"):
        return torch.float16
    raise ParameterError(f"amp must be 'auto', 'bf16', 'fp16' or None, got {amp!r}")


def _native_bf16() -> bool:
    """Whether the current CUDA GPU computes in bfloat16 natively (not by emulation, which a T4 answers True to)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before the argument existed: its answer was the native one
        return bool(torch.cuda.is_bf16_supported())


#: ``torch.compile`` modes ``fit(compile=...)`` accepts.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_compile(compile, device) -> str | None:
    """The ``torch.compile`` mode for ``fit(compile=...)`` on ``device``, or None to run eagerly.

    * None, False, ``"off"`` (the default of :func:`fit`): no compilation, on
      every device. Compiling costs tens of seconds before the first step,
      which a lesson of a minute cannot always repay.
    * ``"auto"``: ``"reduce-overhead"`` on CUDA (CUDA graphs: one launch per
      step instead of one per kernel; worth it when steps are short, small
      models or batches), off elsewhere.
    * True or ``"default"``, ``"reduce-overhead"``, ``"max-autotune"``,
      ``"max-autotune-no-cudagraphs"``: that ``torch.compile`` mode on any
      device (on a CPU the CUDA-graph part of ``reduce-overhead`` does nothing).

    Raises:
        ParameterError: any other value.
    """
    device = torch.device(device)
    if compile is None or compile is False or (isinstance(compile, str) and compile.lower() in ("off", "none", "no")):
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile.lower() == "auto":
        return "reduce-overhead" if device.type == "cuda" else None
    if isinstance(compile, str) and compile.lower() in COMPILE_MODES:
        return compile.lower()
    raise ParameterError(f"compile must be None/'off', 'auto', True or one of {', '.join(COMPILE_MODES)}; "
                         f"got {compile!r}")


def _compiled(model, mode, device):
    """``torch.compile(model, mode=mode)``, marked for CUDA-graph step boundaries when it replays graphs."""
    if not hasattr(torch, "compile"):
        raise ParameterError(f"compile={mode!r} needs torch.compile (PyTorch 2.0 or newer); this is torch "
                             f"{torch.__version__}: pass compile=None")
    net = torch.compile(model, mode=mode)
    net._medlab_cudagraphs = device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
    return net


def _mark_step(model) -> None:
    """Tell CUDA-graph trees that a new step starts (the outputs of the previous one may be overwritten)."""
    if getattr(model, "_medlab_cudagraphs", False):
        torch.compiler.cudagraph_mark_step_begin()


def _resolve_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else choose_device(device)


def _resolve_channels_last(channels_last, device) -> bool:
    if isinstance(channels_last, str):
        if channels_last.lower() != "auto":
            raise ParameterError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        return device.type == "cuda"
    return bool(channels_last)


def _autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _split_batch(batch):
    """(inputs, targets) from a tuple/list, a dict, or a bare tensor (targets None)."""
    if type(batch) in (tuple, list):          # the common case first: (x, y)
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in _INPUT_KEYS if k in batch), None)
        if x is None:
            raise ParameterError(f"a batch dictionary needs one of the keys {_INPUT_KEYS}, got {list(batch)}")
        y = next((batch[k] for k in _TARGET_KEYS if k in batch), None)
        return x, y
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _to_device(tensor, device, channels_last):
    if not isinstance(tensor, torch.Tensor):
        return tensor
    if channels_last and tensor.dim() == 4 and tensor.is_floating_point():
        return tensor.to(device, non_blocking=True, memory_format=torch.channels_last)
    if tensor.device == device:
        return tensor
    return tensor.to(device, non_blocking=True)


def _probabilities(outputs: torch.Tensor) -> torch.Tensor:
    outputs = outputs.float()
    if outputs.dim() >= 2 and outputs.shape[1] > 1:
        return torch.softmax(outputs, dim=1)
    return torch.sigmoid(outputs)


def _progress_bar(total, enabled, desc):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, mininterval=0.5)


# ======================================================================================
# one epoch, evaluation, prediction
# ======================================================================================
def _forward_backward(model, x, y, loss_fn, optimizer, device, amp_dtype, scaler):
    """Forward, loss and backward of one batch (gradients cleared first); returns the loss."""
    with _autocast(device, amp_dtype):
        loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss


def _eager(model):
    """The module behind a ``torch.compile`` wrapper (the first, FLOP-counted batch runs eagerly)."""
    return getattr(model, "_orig_mod", model)


def train_one_epoch(model, loader, loss_fn, optimizer, device, amp_dtype=None, scaler=None, channels_last=False,
                    grad_clip=None, bar=None, meter: compute.Meter | None = None) -> float:
    """One pass over ``loader`` with gradient steps; returns the mean loss per case.

    ``amp_dtype`` comes from :func:`resolve_amp`; ``scaler`` is a
    ``torch.amp.GradScaler`` (needed for float16 only); ``bar`` a tqdm bar
    advanced once per batch. Batch losses stay on the device and are read once
    at the end, so the loop never waits on the GPU between batches. ``meter``
    (a :class:`medlab.compute.Meter`) counts the FLOPs: it measures the first
    batch it sees and is told how many cases the epoch had.
    """
    model.train()
    losses, sizes = [], []
    measure = meter is not None and not meter.measured
    for batch in loader:
        x, y = _split_batch(batch)
        x, y = _to_device(x, device, channels_last), _to_device(y, device, False)
        _mark_step(model)
        if measure:
            loss = meter.measure(lambda: _forward_backward(_eager(model), x, y, loss_fn, optimizer, device,
                                                           amp_dtype, scaler), x.shape[0])
            measure = False
        else:
            loss = _forward_backward(model, x, y, loss_fn, optimizer, device, amp_dtype, scaler)
        if scaler is not None:
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        losses.append(loss.detach())
        sizes.append(x.shape[0])
        if bar is not None:
            bar.update(1)
    if meter is not None:
        meter.cases_done(sum(sizes), len(sizes))
    if not losses:
        return float("nan")
    weights = torch.tensor(sizes, dtype=torch.float32, device=losses[0].device)
    return float((torch.stack(losses).float() * weights).sum() / weights.sum())


def _run_inference(model, loader, device, amp_dtype, channels_last, loss_fn=None, keep_outputs=False,
                   activation="auto", progress=False, desc="eval", meter: compute.Meter | None = None):
    was_training = model.training
    measure, cases, batches = meter is not None and not meter.measured, 0, 0
    model.eval()
    losses, sizes = [], []
    outputs, targets = [], []
    bar = _progress_bar(len(loader) if hasattr(loader, "__len__") else None, progress, desc)
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = _split_batch(batch)
                x = _to_device(x, device, channels_last)
                y_dev = _to_device(y, device, False)
                _mark_step(model)
                with _autocast(device, amp_dtype):
                    if measure:
                        out = meter.measure(lambda: _eager(model)(x), x.shape[0])
                        measure = False
                    else:
                        out = model(x)
                    if meter is not None:
                        cases, batches = cases + x.shape[0], batches + 1
                    if loss_fn is not None and y_dev is not None:
                        losses.append(loss_fn(out, y_dev).detach())     # read once at the end: no sync per batch
                        sizes.append(x.shape[0])
                if keep_outputs:
                    out = out.float()
                    if activation == "auto":
                        out = _probabilities(out)
                    elif activation == "softmax":
                        out = torch.softmax(out, dim=1)
                    elif activation == "sigmoid":
                        out = torch.sigmoid(out)
                    outputs.append(out.cpu())
                    if y is not None:
                        targets.append(y.cpu() if torch.is_tensor(y) else torch.as_tensor(y))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
        if meter is not None:
            meter.cases_done(cases, batches)
    mean_loss = None
    if losses:
        weights = torch.tensor(sizes, dtype=torch.float32, device=losses[0].device)
        mean_loss = float((torch.stack(losses).float() * weights).sum() / weights.sum())
    y_prob = torch.cat(outputs).numpy() if outputs else None
    y_true = torch.cat(targets).numpy() if targets else None
    return mean_loss, y_prob, y_true


def _compute_metrics(metrics, y_true, y_prob, prefix=""):
    values = {}
    for name, fn in (metrics or {}).items():
        try:
            values[prefix + name] = float(fn(y_true, y_prob))
        except (ValueError, ZeroDivisionError) as error:
            warnings.warn(f"metric {name!r} is undefined on this validation set ({error}); recorded as nan",
                          stacklevel=3)
            values[prefix + name] = float("nan")
    return values


def evaluate(model, loader, loss=None, device="auto", amp="auto", channels_last="auto",
             metrics: Mapping[str, Callable] | None = None, progress=False) -> dict:
    """Evaluate ``model`` on ``loader`` under ``torch.inference_mode``.

    Args:
        loss: a loss (callable or name, see :func:`medlab.losses.get_loss`);
            None skips the loss.
        metrics: ``{"name": fn}``; each ``fn(y_true, y_prob)`` gets NumPy arrays
            of all targets and all probabilities (softmax over channel 1 with
            two or more outputs, sigmoid with one), e.g.
            ``{"auroc": medlab.metrics.auroc}``. A metric that raises
            ``ValueError`` (undefined, e.g. one class only) gives nan and a
            warning.

    Returns:
        ``{"loss": mean loss per case (if a loss was given), name: value, ...}``.
        The model's train/eval mode is restored afterwards.
    """
    device = _resolve_device(device)
    dtype = resolve_amp(amp, device)
    cl = _resolve_channels_last(channels_last, device)
    loss_fn = get_loss(loss) if loss is not None else None
    meter = compute.Meter(compute.t4_precision(amp))
    try:
        mean_loss, y_prob, y_true = _run_inference(model, loader, device, dtype, cl, loss_fn,
                                                   keep_outputs=bool(metrics), progress=progress, meter=meter)
    finally:
        meter.commit()
    result = {}
    if loss_fn is not None:
        result["loss"] = mean_loss
    if metrics:
        result.update(_compute_metrics(metrics, y_true, y_prob))
    return result


def predict(model, loader, device="auto", amp="auto", channels_last="auto", activation="auto",
            progress=False) -> Predictions:
    """Model outputs for every case of ``loader``, in loader order.

    Args:
        activation: ``"auto"`` (softmax over channel 1 with two or more
            outputs, sigmoid with one), ``"softmax"``, ``"sigmoid"`` or None
            (raw logits).

    Returns:
        ``Predictions(y_prob, y_true)``: NumPy arrays; ``y_true`` is None when
        the batches carry no targets. Unpack as ``y_prob, y_true = predict(...)``.
    """
    if activation not in ("auto", "softmax", "sigmoid", None):
        raise ParameterError(f"activation must be 'auto', 'softmax', 'sigmoid' or None, got {activation!r}")
    device = _resolve_device(device)
    dtype = resolve_amp(amp, device)
    cl = _resolve_channels_last(channels_last, device)
    meter = compute.Meter(compute.t4_precision(amp))
    try:
        _, y_prob, y_true = _run_inference(model, loader, device, dtype, cl, None, keep_outputs=True,
                                           activation=activation, progress=progress, desc="predict", meter=meter)
    finally:
        meter.commit()
    return Predictions(y_prob, y_true)


def predict_masks(model, data, batch_size: int = 64, device="auto", amp="auto", channels_last="auto",
                  progress=False) -> np.ndarray:
    """Label maps from a segmentation network: the most probable class of every pixel.

    Args:
        model: a network whose output is ``(N, C, H, W)`` logits (or ``(N, C, D, H, W)``).
        data: a DataLoader, a Dataset, or an array / tensor of images ``(N, C, H, W)``.

    Returns:
        int64 NumPy array ``(N, H, W)`` in the order of ``data``. For a
        two-class network, ``predict_masks(...) == 1`` is the foreground mask.
    """
    from .data.dataset import make_loader

    if isinstance(data, (np.ndarray, torch.Tensor)):
        images = torch.as_tensor(np.asarray(data, dtype=np.float32) if isinstance(data, np.ndarray) else data)
        if images.dim() < 4:
            raise ParameterError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        data = make_loader((images,), batch_size)
    elif not isinstance(data, torch.utils.data.DataLoader):
        data = make_loader(data, batch_size)
    logits, _ = predict(model, data, device=device, amp=amp, channels_last=channels_last, activation=None,
                        progress=progress)
    return logits.argmax(axis=1).astype(np.int64)


# ======================================================================================
# checkpoints
# ======================================================================================
def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    if "python" in state:
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model):
    return getattr(model, "_orig_mod", getattr(model, "module", model))


def save_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, epoch=0, history=None,
                    extra: Mapping | None = None) -> Path:
    """Save a checkpoint as a plain dictionary (tensors, numbers, strings, lists).

    Keys: ``format``, ``epoch``, ``model`` (state dict), ``optimizer``,
    ``scheduler``, ``scaler`` (their state dicts or None), ``history`` (a
    dict), ``rng`` (random-number states), ``config`` (the model's
    ``medlab_config`` when it has one) and ``extra``. Readable with
    ``torch.load(path, weights_only=True)``; :func:`medlab.models.build_classifier`
    accepts the path as ``weights``. The file is written atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": history.to_dict() if isinstance(history, History) else history,
        "rng": _rng_state(),
        "config": dict(getattr(_unwrap(model), "medlab_config", {}) or {}),
        "extra": dict(extra or {}),
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, temporary)
    temporary.replace(path)
    return path


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, scaler=None, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` and load it into what is given.

    Returns the checkpoint dictionary (see :func:`save_checkpoint`).

    Raises:
        ParameterError: the file does not exist or is not a medlab checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"checkpoint {str(path)!r} does not exist")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ParameterError(f"{str(path)!r} is not a medlab checkpoint (no 'model' entry)")
    if model is not None:
        _unwrap(model).load_state_dict(checkpoint["model"])
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and checkpoint.get("scaler") is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    return checkpoint


# ======================================================================================
# fit
# ======================================================================================
def _make_optimizer(optimizer, model, lr, weight_decay):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ParameterError("the model has no trainable parameters (is the whole network frozen?)")
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, (int, float)) and not isinstance(optimizer, bool):
        lr, optimizer = float(optimizer), None
    name = "adamw" if optimizer is None else str(optimizer).lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01 if weight_decay is None else weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay or 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay or 0.0)
    raise ParameterError(
        f"optimizer must be an Optimizer, a learning rate, 'adamw', 'adam' or 'sgd'; got {optimizer!r}")


def _make_scheduler(scheduler, optimizer, epochs):
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        if scheduler.lower() == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        if scheduler.lower() == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
        raise ParameterError(f"scheduler must be 'cosine', 'plateau', a scheduler or a function of the optimizer; "
                             f"got {scheduler!r}")
    if hasattr(scheduler, "step"):
        return scheduler
    if callable(scheduler):
        return scheduler(optimizer)
    raise ParameterError(f"cannot use {scheduler!r} as a scheduler")


def _early_stopping(early_stopping):
    if early_stopping is None or early_stopping is False:
        return None, 0.0
    if isinstance(early_stopping, Mapping):
        return int(early_stopping.get("patience", 5)), float(early_stopping.get("min_delta", 0.0))
    if isinstance(early_stopping, int) and not isinstance(early_stopping, bool) and early_stopping >= 1:
        return early_stopping, 0.0
    raise ParameterError(f"early_stopping must be None, a patience (epochs) or {{'patience': .., 'min_delta': ..}}; "
                         f"got {early_stopping!r}")


def fit(model: nn.Module, train_loader, val_loader=None, loss="cross_entropy", optimizer=None, lr: float = 1e-3,
        epochs: int = 1, device="auto", amp="auto", channels_last="auto", scheduler=None, early_stopping=None,
        checkpoint_dir=None, resume=None, metrics: Mapping[str, Callable] | None = None, monitor: str | None = None,
        mode: str | None = None, restore_best: bool = False, grad_clip: float | None = None,
        weight_decay: float | None = None, seed: int | None = None, progress: bool = True,
        compile=None) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: any ``nn.Module``; moved to ``device`` (and to channels_last).
        train_loader, val_loader: iterables of batches (see the module
            docstring); ``val_loader`` may be None.
        loss: a callable ``loss(outputs, targets)`` or a name
            (``cross_entropy``, ``bce``, ``dice``, ``dice_ce``, ``focal``).
        optimizer: a ``torch.optim.Optimizer``, a name (``adamw`` (default),
            ``adam``, ``sgd``) or a learning rate; ``lr`` is used for names.
        epochs: total number of epochs (a resumed run continues up to it).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... or a ``torch.device``.
        amp: see :func:`resolve_amp`; ``"auto"`` is mixed precision on CUDA only.
        channels_last: True, False or ``"auto"`` (on CUDA).
        scheduler: None, ``"cosine"``, ``"plateau"``, a scheduler built on
            ``optimizer``, or a function ``optimizer -> scheduler``; stepped
            once per epoch (plateau schedulers get the monitored value).
        early_stopping: None, a patience in epochs, or
            ``{"patience": 5, "min_delta": 0.0}``: stop when the monitored value
            has not improved by more than ``min_delta`` for that many epochs.
        checkpoint_dir: write ``last.pt`` every epoch and ``best.pt`` on
            improvement there.
        resume: a checkpoint path, or True for ``checkpoint_dir/last.pt``:
            load model, optimizer, scheduler, scaler, history and random
            states, and continue from the next epoch.
        metrics: validation metrics ``{"name": fn(y_true, y_prob)}`` (see
            :func:`evaluate`), recorded as ``val_<name>``.
        monitor: the quantity for best epoch, early stopping and ``best.pt``;
            default ``val_loss`` with a validation loader, else ``train_loss``.
        mode: ``"min"`` or ``"max"``; default ``min`` for names containing
            ``loss``, else ``max``.
        restore_best: load the best epoch's weights into ``model`` at the end.
        grad_clip: clip the gradient norm to this value.
        weight_decay: for optimizers built by name (AdamW default 0.01).
        seed: when given, :func:`medlab.runtime.seed_everything` is called
            first: the same seed, model and data give the same history on the
            same machine (CPU; GPU kernels may add non-determinism).
        progress: show a tqdm bar.
        compile: None (default: eager, on every device), ``"auto"``
            (``"reduce-overhead"`` on CUDA, off elsewhere), True/``"default"``,
            ``"reduce-overhead"``, ``"max-autotune"`` or
            ``"max-autotune-no-cudagraphs"``: run the training and validation
            steps through ``torch.compile(model, mode=...)`` (see
            :func:`resolve_compile`). ``reduce-overhead`` uses CUDA graphs on
            CUDA: for small models, whose steps are bound by kernel launches
            rather than arithmetic, this is where the time goes. The first
            epoch includes the compilation (tens of seconds; see
            ``History.epoch_seconds``). ``model`` itself stays uncompiled and
            holds the trained weights; checkpoints are the same.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ParameterError(f"epochs must be a non-negative whole number, got {epochs!r}")
    if seed is not None:
        seed_everything(seed)
    device = _resolve_device(device)
    amp_dtype = resolve_amp(amp, device)
    use_channels_last = _resolve_channels_last(channels_last, device)
    compile_mode = resolve_compile(compile, device)
    model.to(device)
    if use_channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = get_loss(loss)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    optimizer = _make_optimizer(optimizer, model, lr, weight_decay)
    scheduler = _make_scheduler(scheduler, optimizer, epochs)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    patience, min_delta = _early_stopping(early_stopping)

    monitor = monitor or ("val_loss" if val_loader is not None else "train_loss")
    if mode is None:
        mode = "min" if "loss" in monitor else "max"
    if mode not in ("min", "max"):
        raise ParameterError(f"mode must be 'min' or 'max', got {mode!r}")
    history = History(monitor=monitor, mode=mode)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    start_epoch = 0
    if resume:
        if resume is True:
            if checkpoint_dir is None:
                raise ParameterError("resume=True needs checkpoint_dir (where last.pt is)")
            resume = checkpoint_dir / "last.pt"
        checkpoint = load_checkpoint(resume, model, optimizer, scheduler, scaler, map_location=device)
        history = History.from_dict(checkpoint["history"] or {})
        history.monitor, history.mode = monitor, mode
        start_epoch = int(checkpoint["epoch"])
        _set_rng_state(checkpoint.get("rng", {}))

    best_state = None
    if restore_best and history.best_epoch is not None and checkpoint_dir is not None \
            and (checkpoint_dir / "best.pt").is_file():
        best_state = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=True)["model"]
    epochs_without_improvement = 0
    if history.best_epoch is not None and len(history):
        epochs_without_improvement = len(history) - history.best_epoch

    net = _compiled(model, compile_mode, device) if compile_mode else model
    train_meter, val_meter = compute.Meter(compute.t4_precision(amp)), compute.Meter(compute.t4_precision(amp))
    counted_s = 0.0  # time in the epochs' training and validation passes (medlab.compute's tally)
    steps = len(train_loader) if hasattr(train_loader, "__len__") else None
    bar = _progress_bar(steps * (epochs - start_epoch) if steps is not None else None, progress, "training")
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            if bar is not None:
                bar.set_description(f"epoch {epoch}/{epochs}")
            started = time.perf_counter()
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            row["train_loss"] = train_one_epoch(net, train_loader, loss_fn, optimizer, device, amp_dtype, scaler,
                                                use_channels_last, grad_clip, bar, meter=train_meter)
            if val_loader is not None:
                val_loss, y_prob, y_true = _run_inference(net, val_loader, device, amp_dtype, use_channels_last,
                                                          loss_fn, keep_outputs=bool(metrics), meter=val_meter)
                row["val_loss"] = val_loss
                if metrics:
                    row.update(_compute_metrics(metrics, y_true, y_prob, prefix="val_"))
            if not math.isfinite(row["train_loss"]):
                warnings.warn(f"training loss is {row['train_loss']} at epoch {epoch}: lower the learning rate, "
                              "clip gradients (grad_clip=1.0) or switch mixed precision off (amp=None)",
                              stacklevel=2)
            if monitor not in row:
                raise ParameterError(f"monitor {monitor!r} is not computed; available: {sorted(row)}")
            history.append(row)
            history.epoch_seconds.append(time.perf_counter() - started)
            counted_s += history.epoch_seconds[-1]

            value = row[monitor]
            improved = history.is_improvement(value) and (
                history.best_value is None or abs(value - history.best_value) > min_delta)
            if improved:
                history.best_epoch, history.best_value = epoch, float(value)
                epochs_without_improvement = 0
                if restore_best:
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}
            else:
                epochs_without_improvement += 1

            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(value)
                else:
                    scheduler.step()

            stop = patience is not None and epochs_without_improvement >= patience
            history.stopped_early = bool(stop)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir / "last.pt", model, optimizer, scheduler, scaler, epoch, history)
                if improved:
                    save_checkpoint(checkpoint_dir / "best.pt", model, optimizer, scheduler, scaler, epoch, history)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                                 if k not in ("epoch",) and isinstance(v, float)}, refresh=True)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
        train_meter.commit(seconds=counted_s)
        if val_loader is not None:
            val_meter.commit(seconds=0.0)  # its time is inside the epochs' counted above
    if restore_best and best_state is not None:
        _unwrap(model).load_state_dict(best_state)
    return history
