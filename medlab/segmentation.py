"""U-Net segmentation for the lessons: data, training, masks, per-case metrics, lesion burden.

Shared by lesson 02 (segmentation: lungs and lesions, loss comparison),
lesson 04 (COVID-19 CT lesions: ground-glass and consolidation, severity) and
any lesson that chains a segmenter into something else. The flow::

    cfg  = settings(ctx.profile)                          # sizes for this profile
    data = load_data("phantom", task="lung_lesion", size=cfg["image_size"], ...)
    model, history = train(data, loss="dice_ce", **training_args(cfg), seed=SEED, device=ctx.device)
    pred = predict_masks(model, data.test)                # (N, H, W) labels
    table = case_metrics(pred, data.test_targets, data.regions, data.spacing)
    summary = summarise(table, data.regions)

Conventions (those of :mod:`medlab.metrics`):

* A *region* is a structure that is evaluated, given as the set of labels
  that make it up: on the CT phantoms ``lung = {1, 2}`` (the whole lung,
  lesions included) and ``lesion = {2}``; nested structures are evaluated as
  regions, as in the BraTS challenge.
* Dice and IoU: both masks empty -> 1.0, exactly one empty -> 0.0.
* HD95 in millimetres (``spacing``): one mask empty -> inf, both empty ->
  nan. Summaries report the *median* HD95 over cases (inf counts as the worst
  value, nan is left out) and how many cases were inf.
* Lesion burden (involvement) = lesion pixels inside the lung / lung pixels,
  and the MosMedData severity band CT-0..CT-4 from it
  (:func:`medlab.data.phantoms.mosmed_band`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from .errors import ParameterError

__all__ = [
    "SETTINGS", "settings", "training_args", "SegmentationData", "load_data", "PHANTOM_FOV_MM", "TASKS",
    "LOSSES", "make_loss", "build_unet", "describe_unet", "plot_examples", "make_loader", "dice_metrics", "train", "predict_masks", "predict_probabilities",
    "region_masks", "case_metrics", "summarise", "pick_cases", "approximate_lung_mask", "lesion_burden",
    "severity_grade", "burden_table", "grade_agreement", "threshold_averaged_dice", "plot_cases",
    "plot_dice_distribution", "plot_histories", "plot_dice_vs_hd95", "plot_burden", "published_covid_results",
]

#: The side of the field of view of the CT phantoms in millimetres (an adult chest
#: CT is reconstructed on a 350-400 mm field): pixel spacing = 400 / image size.
PHANTOM_FOV_MM = 400.0

#: Nominal field of view of the real CT slices whose files carry no usable pixel
#: spacing (MedSeg's slices were converted from images; MosMedData is resampled).
NOMINAL_CT_FOV_MM = 360.0

#: What each task segments.
TASKS = ("lung_lesion", "lesion_type")

#: The losses a lesson compares, by the names :func:`medlab.train.fit` knows.
LOSSES = {"cross_entropy": "cross-entropy", "dice": "soft Dice", "dice_ce": "Dice + cross-entropy"}

#: Per-lesson, per-profile sizes, as caps on the profile's own fields (the
#: smaller wins, so ``MEDLAB_PROFILE_OVERRIDES`` can shrink them further), plus
#: ``depth`` (U-Net down-samplings) and ``lr`` (AdamW learning rate).
#: Lesson ``02`` trains three U-Nets (one per loss), lesson ``04`` one.
#: The ``cpu`` caps keep a lesson within about two minutes on two cores: a
#: narrow, shallow U-Net (8 channels, 3 levels) and batches of 8 (more gradient
#: steps for the same compute: with 32 the lesions were not learnt in time).
SETTINGS: dict[str, dict[str, dict]] = {
    "02": {
        "smoke": {"batch_size": 8, "depth": 2, "lr": 3e-3},
        "cpu": {"n_train": 320, "n_val": 64, "n_test": 200, "epochs": 6, "batch_size": 8, "base_channels": 8,
                "depth": 3, "lr": 3e-3},
        "gpu": {"depth": 4, "lr": 1e-3},
    },
    "04": {
        "smoke": {"batch_size": 8, "depth": 2, "lr": 3e-3},
        "cpu": {"n_train": 400, "n_val": 64, "n_test": 200, "epochs": 8, "batch_size": 8, "base_channels": 8,
                "depth": 3, "lr": 3e-3},
        "gpu": {"depth": 4, "lr": 1e-3},
    },
}
_PROFILE_FIELDS = ("image_size", "n_train", "n_val", "n_test", "epochs", "batch_size", "base_channels",
                   "num_workers")


def settings(profile, lesson: str = "02", **changes) -> dict:
    """Sizes for segmentation lesson ``lesson`` under ``profile`` (a :class:`~medlab.profiles.Profile`).

    Each field is the smaller of the profile's value and the cap in
    ``SETTINGS[lesson][profile.name]`` (a profile of another name gets the
    ``gpu`` caps); ``depth`` and ``lr`` come from there too. Keyword
    arguments replace fields (a lesson's own knobs).

    Returns:
        dict with ``image_size``, ``n_train``, ``n_val``, ``n_test``,
        ``epochs``, ``batch_size``, ``base_channels``, ``num_workers``,
        ``depth``, ``lr``.
    """
    if lesson not in SETTINGS:
        raise ParameterError(f"lesson must be one of {sorted(SETTINGS)}, not {lesson!r}")
    caps = SETTINGS[lesson].get(getattr(profile, "name", ""), SETTINGS[lesson]["gpu"])
    out = {}
    for name in _PROFILE_FIELDS:
        value = getattr(profile, name)
        out[name] = min(value, caps[name]) if name in caps else value
    out["depth"] = caps.get("depth", 4)
    out["lr"] = caps.get("lr", 1e-3)
    # a U-Net needs at least 4 pixels at its deepest level
    out["depth"] = max(1, min(out["depth"], int(math.log2(max(out["image_size"], 8))) - 2))
    unknown = sorted(set(changes) - set(out))
    if unknown:
        raise ParameterError(f"unknown segmentation setting(s) {unknown}; settings are {sorted(out)}")
    out.update(changes)
    return out


def training_args(cfg: Mapping) -> dict:
    """The keyword arguments of :func:`train` taken from :func:`settings` output."""
    return {k: cfg[k] for k in ("epochs", "batch_size", "base_channels", "depth", "lr", "num_workers")} | {
        "samples_per_epoch": cfg["n_train"]}


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class SegmentationData:
    """Train/val/test datasets of one segmentation task, with what is needed to evaluate them.

    Attributes:
        train, val, test: torch datasets of ``(image (1, H, W) in [0, 1], labels (H, W))``.
        class_names: names of the label values, background first.
        regions: the evaluated structures, ``{name: (labels...)}``.
        spacing: pixel size ``(row, column)`` in mm (see ``notes``).
        source: the ``DATA`` value it came from.
        test_lung: boolean lung masks of the test cases ``(N, H, W)`` for the
            lesion burden (None where the task has no lung), exact on
            phantoms, approximated from HU (:func:`approximate_lung_mask`) on
            real CT.
        test_meta: per-test-case arrays (phantoms: ``involvement``,
            ``severity``, ...; real data: ``slice`` or ``study``).
        notes: a sentence on where the spacing and the lung mask come from.
    """

    train: object
    val: object
    test: object
    class_names: list
    regions: dict
    spacing: tuple
    source: str
    test_lung: np.ndarray | None = None
    test_meta: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def num_classes(self) -> int:
        """Output channels of the U-Net (background included)."""
        return len(self.class_names)

    @property
    def test_targets(self) -> np.ndarray:
        """Reference label maps of the test split, ``(N, H, W)`` int64."""
        return _targets(self.test)

    @property
    def test_images(self) -> np.ndarray:
        """Test images ``(N, H, W)`` in [0, 1]."""
        return _images(self.test)


def _targets(ds) -> np.ndarray:
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets)
    return np.stack([np.asarray(ds[i][1]) for i in range(len(ds))])


def _images(ds) -> np.ndarray:
    if hasattr(ds, "images"):
        return np.asarray(ds.images)[:, 0]
    return np.stack([np.asarray(ds[i][0])[0] for i in range(len(ds))])


def _array_dataset(images, targets, class_names, meta=None):
    from .data.dataset import ArrayDataset

    return ArrayDataset(np.ascontiguousarray(images, dtype=np.float32), np.ascontiguousarray(targets),
                        class_names, meta=meta)


def load_data(data: str = "phantom", task: str = "lung_lesion", size: int = 64, n_train: int = 400,
              n_val: int = 100, n_test: int = 200, seed: int = 0, root=None, **knobs) -> SegmentationData:
    """Train, validation and test data of a segmentation task.

    Args:
        data: ``phantom`` (CT phantoms, the default), ``mni152`` (MRI slices of
            nilearn's template: grey matter, white matter, CSF; offline),
            ``medseg-covid-ct`` or ``mosmeddata`` (real CT; see
            ``medlab data list``).
        task: ``lung_lesion``: phantom labels 0 background, 1 lung, 2 lesion
            (regions ``lung`` = {1, 2}, ``lesion`` = {2}); on real data the data
            set's own classes. ``lesion_type``: 0 background, 1 ground-glass, 2
            consolidation (MedSeg's labels; MedSeg's pleural effusion becomes
            background, MosMedData has one ``lesion`` class), with the test
            lung masks for the burden.
        size: image side in pixels.
        n_train, n_val, n_test: phantom split sizes (real data: all slices of
            each split are used).
        seed: the experiment's seed (phantom generation and real-data splits).
        root: folder of a real data set (default ``MEDLAB_DATA_DIR/<name>``).
        **knobs: phantom generator knobs (``lesion_size``, ``noise``, ...).

    Raises:
        ParameterError: unknown task, or a data set this task cannot use.
        DataNotFoundError: a real data set is not on this machine (the message says how to get it).
    """
    if task not in TASKS:
        raise ParameterError(f"task must be one of {TASKS}, not {task!r}")
    name = str(data).strip().lower()
    if name in ("phantom", "phantom:ct", "phantom:ct_slice"):
        return _phantom_data(task, size, n_train, n_val, n_test, seed, knobs)
    if knobs:
        raise ParameterError(f"phantom knobs {sorted(knobs)} do not apply to DATA={data!r}")
    if name == "mni152":
        if task != "lung_lesion":
            raise ParameterError("mni152 is brain MRI: it has no lesions; use DATA='phantom', "
                                 "'medseg-covid-ct' or 'mosmeddata' for the lesion task")
        return _mni_data(size, seed)
    if name == "medseg-covid-ct":
        return _medseg_data(task, size, seed, root)
    if name == "mosmeddata":
        return _mosmed_data(task, size, seed, root)
    raise ParameterError(f"DATA={data!r} has no segmentation masks here; use 'phantom', 'mni152', "
                         "'medseg-covid-ct' or 'mosmeddata'")


def _phantom_data(task, size, n_train, n_val, n_test, seed, knobs):
    from .data.dataset import split_seeds
    from .data.phantoms import ct_slice, window

    seeds = split_seeds(seed)
    splits, test_lung, test_meta = {}, None, {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        try:
            batch = ct_slice(n, size=size, seed=seeds[split], **knobs)
        except TypeError as exc:
            raise ParameterError(f"ct_slice: {exc}") from None
        images = window(batch.images, "wide")
        lung, lesion = batch.masks["lung"], batch.masks["lesion"]
        if task == "lung_lesion":
            targets, names = np.where(lesion > 0, 2, lung), ["background", "lung", "lesion"]
        else:
            targets, names = lesion, ["background", "ground-glass", "consolidation"]
        splits[split] = _array_dataset(images, targets, names, meta=batch.attrs)
        if split == "test":
            test_lung, test_meta = lung.astype(bool), dict(batch.attrs)
    regions = {"lung": (1, 2), "lesion": (2,)} if task == "lung_lesion" else {
        "ground-glass": (1,), "consolidation": (2,), "lesion": (1, 2)}
    spacing = (PHANTOM_FOV_MM / size,) * 2
    return SegmentationData(splits["train"], splits["val"], splits["test"], names, regions, spacing, "phantom",
                            test_lung=test_lung if task == "lesion_type" else None, test_meta=test_meta,
                            notes=f"CT phantoms on a {PHANTOM_FOV_MM:.0f} mm field of view: "
                                  f"{spacing[0]:.2f} mm per pixel; exact lung masks.")


def _mni_data(size, seed):
    from .data.sources import load_source
    from .data.sources.mni152 import load_volumes

    parts = {s: load_source("mni152", split=s, size=size, seed=seed) for s in ("train", "val", "test")}
    t1, _, zooms = load_volumes(2)
    side = max(t1.shape[1:])
    spacing = (zooms[1] * side / size, zooms[2] * side / size)
    names = list(parts["train"].class_names)
    regions = {n: (i,) for i, n in enumerate(names) if i > 0}
    return SegmentationData(parts["train"], parts["val"], parts["test"], names, regions, spacing, "mni152",
                            test_meta=dict(parts["test"].meta),
                            notes=f"MNI152 T1 template at 2 mm, slices padded to {side} pixels and resized to "
                                  f"{size}: {spacing[0]:.2f} mm per pixel.")


def _medseg_data(task, size, seed, root):
    from .data.phantoms import window
    from .data.sources import load_source

    parts, lung = {}, None
    for split in ("train", "val", "test"):
        ds = load_source("medseg-covid-ct", root=root, split=split, size=size, window=None, seed=seed)
        hu = np.asarray(ds.images)[:, 0]
        targets = np.asarray(ds.targets)
        names = list(ds.class_names)
        if task == "lesion_type":
            targets, names = np.where(targets == 3, 0, targets), names[:3]
        parts[split] = _array_dataset(window(hu, "wide")[:, None], targets, names, meta=dict(ds.meta))
        if split == "test" and task == "lesion_type":
            lung = approximate_lung_mask(hu, lesion=targets > 0)
    regions = {n: (i,) for i, n in enumerate(names) if i > 0}
    if task == "lesion_type":
        regions["lesion"] = (1, 2)
    spacing = (NOMINAL_CT_FOV_MM / size,) * 2
    return SegmentationData(parts["train"], parts["val"], parts["test"], names, regions, spacing,
                            "medseg-covid-ct", test_lung=lung, test_meta=dict(parts["test"].meta),
                            notes=f"MedSeg slices carry no reliable pixel spacing: a nominal {NOMINAL_CT_FOV_MM:.0f} mm "
                                  f"field of view is assumed ({spacing[0]:.2f} mm per pixel); the lung mask is "
                                  "approximated from HU.")


def _mosmed_data(task, size, seed, root):
    from .data.phantoms import window
    from .data.sources import load_source

    parts, lung, meta = {}, None, {}
    for split in ("train", "val", "test"):
        ds = load_source("mosmeddata", root=root, split=split, target="mask", size=size, window=None, seed=seed)
        hus, masks, study = [], [], []
        for i in range(len(ds)):
            x, m = ds[i]
            hus.append(x.numpy()[0])
            masks.append(m.numpy())
            study += [i] * x.shape[1]
        hu = np.concatenate(hus) if hus else np.zeros((0, size, size), np.float32)
        targets = np.concatenate(masks) if masks else np.zeros((0, size, size), np.int64)
        parts[split] = _array_dataset(window(hu, "wide")[:, None], targets, ["background", "lesion"],
                                      meta={"study": np.asarray(study)})
        if split == "test":
            meta = {"study": np.asarray(study)}
            if task == "lesion_type":
                lung = approximate_lung_mask(hu, lesion=targets > 0)
    spacing = (NOMINAL_CT_FOV_MM / size,) * 2
    return SegmentationData(parts["train"], parts["val"], parts["test"], ["background", "lesion"],
                            {"lesion": (1,)}, spacing, "mosmeddata", test_lung=lung, test_meta=meta,
                            notes="MosMedData studies resampled to a fixed grid: the pixel spacing is nominal "
                                  f"({spacing[0]:.2f} mm); its masks do not separate ground-glass from "
                                  "consolidation; the lung mask is approximated from HU.")


def approximate_lung_mask(hu: np.ndarray, lesion: np.ndarray | None = None, threshold: float = -320.0,
                          min_fraction: float = 0.002) -> np.ndarray:
    """A rough lung mask from a stack of CT slices in HU ``(N, H, W)``.

    Air-density pixels (below ``threshold`` HU) that do not touch the image
    border (the air around the patient does), in connected parts larger than
    ``min_fraction`` of the slice, plus ``lesion`` (dense lesions are not air).
    Good enough for a burden estimate when a data set has no lung masks; the
    trachea and bowel gas are included, which a real lung segmentation would
    remove.
    """
    from scipy import ndimage

    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ParameterError(f"hu must be a stack of slices (N, H, W), got shape {hu.shape}")
    out = np.zeros(hu.shape, bool)
    for i, sl in enumerate(hu):
        labels, n = ndimage.label(sl < threshold)
        if n == 0:
            continue
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        sizes = ndimage.sum_labels(np.ones_like(sl), labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= min_fraction * sl.size) + 1
        keep = np.setdiff1d(keep, border)
        out[i] = ndimage.binary_fill_holes(np.isin(labels, keep))
    if lesion is not None:
        out |= np.asarray(lesion, bool)
    return out


# ----------------------------------------------------------------------------------------------
# model and training


def build_unet(num_classes: int, base_channels: int = 16, depth: int = 4, in_channels: int = 1):
    """The lessons' U-Net (:class:`medlab.models.UNet`, batch norm), one logit per class."""
    from .models import UNet

    return UNet(in_channels=in_channels, num_classes=num_classes, base_channels=base_channels, depth=depth)


def make_loader(dataset, batch_size: int = 32, shuffle: bool = False, seed: int = 0, samples_per_epoch=None,
                num_workers: int = 0):
    """A DataLoader; with ``shuffle``, a seeded order of ``max(len, samples_per_epoch)`` samples per epoch.

    ``samples_per_epoch`` lets a small real data set (70 MedSeg slices) take
    as many gradient steps per epoch as the profile's phantom set.
    """
    from torch.utils.data import DataLoader, RandomSampler

    if len(dataset) == 0:
        raise ParameterError("the dataset is empty: nothing to load")
    sampler = None
    if shuffle:
        generator = torch.Generator().manual_seed(int(seed))
        sampler = RandomSampler(dataset, num_samples=max(len(dataset), int(samples_per_epoch or 0)),
                                generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers)


def region_masks(labels: np.ndarray, region: Sequence[int]) -> np.ndarray:
    """Boolean mask of the pixels whose label is in ``region``."""
    return np.isin(np.asarray(labels), np.asarray(tuple(region)))


def dice_metrics(regions: Mapping[str, Sequence[int]]) -> dict:
    """Validation metrics for :func:`medlab.train.fit`: mean per-case Dice of each region.

    Returns ``{"dice_<region>": fn(y_true, y_prob)}``; ``y_prob`` is the
    softmax ``(N, C, H, W)``, its argmax the predicted labels.
    """
    def make(region):
        def fn(y_true, y_prob):
            pred = np.asarray(y_prob).argmax(1)
            p, t = region_masks(pred, region), region_masks(y_true, region)
            inter = (p & t).sum((1, 2))
            total = p.sum((1, 2)) + t.sum((1, 2))
            return float(np.mean(np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))))
        return fn

    return {f"dice_{name.replace(' ', '_').replace('-', '_')}": make(region) for name, region in regions.items()}


def make_loss(loss):
    """The loss module for a name in :data:`LOSSES` (a callable is returned as it is).

    ``cross_entropy`` is pixel-wise cross-entropy; ``dice`` and ``dice_ce``
    compute the soft Dice over the whole batch (``batch=True``, as nnU-Net
    does): with one Dice per image, a slice without lesion scores the same
    loss for any false-positive area, so nothing teaches the network to keep
    healthy slices clean.
    """
    from .losses import DiceCELoss, DiceLoss

    if callable(loss):
        return loss
    if loss == "cross_entropy":
        return torch.nn.CrossEntropyLoss()
    if loss == "dice":
        return DiceLoss(batch=True)
    if loss == "dice_ce":
        return DiceCELoss(batch=True)
    raise ParameterError(f"loss must be one of {sorted(LOSSES)} or a callable, not {loss!r}")


def describe_unet(model, size: int = 64, in_channels: int = 1) -> str:
    """The shape of the feature maps at every stage of a :class:`medlab.models.UNet`, as text.

    Runs one blank ``(1, in_channels, size, size)`` image through the model
    and reports what each encoder block, up-sampling and decoder block gives
    out, and the number of trainable parameters.
    """
    from .models import count_parameters

    rows, hooks = [], []
    named = [(f"encoder {i}" + (" (bottleneck)" if i == len(model.encoder) - 1 else ""), m)
             for i, m in enumerate(model.encoder)]
    for i, (up, dec) in enumerate(zip(model.upsample, model.decoder)):
        named += [(f"up-sample {i}", up), (f"decoder {i} (after concatenating the skip)", dec)]
    named.append(("head (1x1 convolution: one logit per class)", model.head))
    order = {id(m): k for k, (_, m) in enumerate(named)}
    for name, module in named:
        hooks.append(module.register_forward_hook(
            lambda m, i, o, name=name: rows.append((order[id(m)], f"{name:48s} {tuple(o.shape[1:])}"))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = count_parameters(model)
    total = total.get("trainable", total) if isinstance(total, dict) else total
    lines = [f"{'input':48s} {(in_channels, size, size)}"] + [r for _, r in sorted(rows)]
    return "\n".join(lines + [f"trainable parameters: {total:,}"])


def train(data: SegmentationData, loss: str = "dice_ce", *, epochs: int = 6, batch_size: int = 32,
          base_channels: int = 8, depth: int = 3, lr: float = 3e-3, seed: int = 0, device="auto",
          samples_per_epoch=None, num_workers: int = 0, progress: bool = True, model=None):
    """Train a U-Net on ``data`` with one loss; return ``(model, history)``.

    AdamW with a cosine learning-rate schedule; validation Dice of every
    region each epoch (``history["val_dice_<region>"]``); the weights of the
    epoch with the lowest validation loss are restored at the end.

    Args:
        loss: ``cross_entropy``, ``dice``, ``dice_ce`` (see :func:`make_loss`) or a callable.
        model: a model to train instead of a new :func:`build_unet`.
        seed: fixes initialisation, batch order and dropout.
    """
    from .train import fit

    loss_fn = make_loss(loss)
    torch.manual_seed(seed)
    if model is None:
        model = build_unet(data.num_classes, base_channels, depth)
    train_loader = make_loader(data.train, batch_size, shuffle=True, seed=seed, samples_per_epoch=samples_per_epoch,
                               num_workers=num_workers)
    val_loader = make_loader(data.val, max(batch_size, 64), num_workers=num_workers) if len(data.val) else None
    history = fit(model, train_loader, val_loader, loss=loss_fn, lr=lr, epochs=epochs, device=device,
                  scheduler="cosine", metrics=dice_metrics(data.regions) if val_loader else None,
                  restore_best=val_loader is not None, seed=seed, progress=progress)
    return model, history


def predict_probabilities(model, dataset, batch_size: int = 64, device="auto") -> np.ndarray:
    """Softmax probabilities ``(N, C, H, W)`` float32 of every case of ``dataset``."""
    from .train import predict

    return predict(model, make_loader(dataset, batch_size), device=device).y_prob


def predict_masks(model, dataset, batch_size: int = 64, device="auto") -> np.ndarray:
    """Predicted label maps ``(N, H, W)`` (argmax over classes) of every case of ``dataset``."""
    from .runtime import choose_device

    device = device if isinstance(device, torch.device) else choose_device(device)
    was_training = model.training
    model.eval().to(device)
    out = []
    with torch.inference_mode():
        for x, _ in make_loader(dataset, batch_size):
            out.append(model(x.to(device)).argmax(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# evaluation


def case_metrics(pred: np.ndarray, true: np.ndarray, regions: Mapping[str, Sequence[int]], spacing=None):
    """One row per case: Dice, IoU and HD95 (mm) of every region, and whether it is present.

    Columns per region ``r``: ``dice_r``, ``iou_r``, ``hd95_r`` (inf: one mask
    empty; nan: both empty), ``true_r`` and ``pred_r`` (pixels in the
    reference and the prediction). Returns a pandas DataFrame indexed by case.
    """
    import pandas as pd

    from . import metrics

    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ParameterError(f"pred and true must be label maps of the same shape (N, H, W); "
                             f"got {pred.shape} and {true.shape}")
    columns = {}
    for name, region in regions.items():
        p, t = region_masks(pred, region), region_masks(true, region)
        columns[f"dice_{name}"] = metrics.per_case(metrics.dice, p, t)
        columns[f"iou_{name}"] = metrics.per_case(metrics.iou, p, t)
        columns[f"hd95_{name}"] = metrics.per_case(metrics.hausdorff95, p, t, spacing=spacing)
        columns[f"true_{name}"] = t.sum((1, 2))
        columns[f"pred_{name}"] = p.sum((1, 2))
    table = pd.DataFrame(columns)
    table.index.name = "case"
    return table


def summarise(table, regions: Sequence[str]):
    """Per region: mean Dice and IoU (all cases, and cases where the structure is present),
    median HD95 (mm, inf counted as worst, nan left out), and counts of the conventions' cases.

    Returns a pandas DataFrame indexed by region with columns ``dice``,
    ``dice_present``, ``iou``, ``hd95_median``, ``n_cases``, ``n_present``,
    ``n_both_empty`` (Dice 1 by convention, HD95 nan), ``n_missed`` (present,
    nothing predicted), ``n_false_alarm`` (absent, something predicted) and
    ``n_hd95_inf``.
    """
    import pandas as pd

    rows = {}
    for name in regions:
        d, i, h = table[f"dice_{name}"], table[f"iou_{name}"], table[f"hd95_{name}"].to_numpy()
        present, predicted = table[f"true_{name}"] > 0, table[f"pred_{name}"] > 0
        finite_or_inf = h[~np.isnan(h)]
        rows[name] = {
            "dice": float(d.mean()), "dice_present": float(d[present].mean()) if present.any() else float("nan"),
            "iou": float(i.mean()), "hd95_median": float(np.median(finite_or_inf)) if finite_or_inf.size else float("nan"),
            "n_cases": len(table), "n_present": int(present.sum()), "n_both_empty": int((~present & ~predicted).sum()),
            "n_missed": int((present & ~predicted).sum()), "n_false_alarm": int((~present & predicted).sum()),
            "n_hd95_inf": int(np.isinf(h).sum()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def pick_cases(table, region: str, among_present: bool = True) -> dict:
    """The ``best``, ``median`` and ``worst`` cases by Dice of ``region`` (case indices).

    With ``among_present`` only cases where the region is in the reference
    are ranked (an empty-empty case scores 1 and would always be "best").
    Ties are broken by case order.
    """
    dice = table[f"dice_{region}"]
    if among_present:
        present = table[f"true_{region}"] > 0
        if present.any():
            dice = dice[present]
    order = dice.sort_values(kind="stable").index.to_list()
    if not order:
        raise ParameterError("no cases to pick from")
    return {"best": int(order[-1]), "median": int(order[len(order) // 2]), "worst": int(order[0])}


def threshold_averaged_dice(prob: np.ndarray, true: np.ndarray, thresholds: int = 256) -> np.ndarray:
    """Inf-Net's evaluation: Dice of one probability map averaged over ``thresholds`` thresholds.

    Each map ``(N, H, W)`` is min-max normalised to [0, 1], thresholded at
    ``thresholds`` evenly spaced levels in [0, 1], and the Dice of each binary
    mask against ``true`` (boolean ``(N, H, W)``) is averaged. Returns one
    value per case. This is not the Dice of a 0.5-thresholded mask, and it is
    not comparable to one.
    """
    prob = np.asarray(prob, dtype=np.float64)
    true = np.asarray(true, bool)
    if prob.shape != true.shape:
        raise ParameterError(f"prob {prob.shape} and true {true.shape} differ in shape")
    lo = prob.min(axis=(1, 2), keepdims=True)
    hi = prob.max(axis=(1, 2), keepdims=True)
    norm = (prob - lo) / np.maximum(hi - lo, 1e-8)
    levels = np.linspace(0.0, 1.0, thresholds)
    out = np.zeros(len(prob))
    t_sum = true.sum((1, 2))
    for level in levels:
        p = norm > level
        inter = (p & true).sum((1, 2))
        total = p.sum((1, 2)) + t_sum
        out += np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return out / len(levels)


# ----------------------------------------------------------------------------------------------
# lesion burden and severity


def lesion_burden(lesion: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Fraction of the lung involved, per case: lesion pixels inside the lung / lung pixels.

    ``lesion`` and ``lung`` are boolean ``(N, H, W)``; a case with no lung
    pixels has burden 0.
    """
    lesion, lung = np.asarray(lesion, bool), np.asarray(lung, bool)
    if lesion.shape != lung.shape:
        raise ParameterError(f"lesion {lesion.shape} and lung {lung.shape} masks differ in shape")
    lung_px = lung.sum(axis=(-2, -1))
    return ((lesion & lung).sum(axis=(-2, -1)) / np.maximum(lung_px, 1)).astype(float)


def severity_grade(involvement) -> np.ndarray:
    """MosMedData band CT-0..CT-4 (0, under 25 %, 25-50 %, 50-75 %, over 75 % of the lung) as 0..4."""
    from .data.phantoms import mosmed_band

    return mosmed_band(involvement)


def burden_table(pred: np.ndarray, true: np.ndarray, lung: np.ndarray, lesion_labels: Sequence[int] = (1, 2)):
    """Per case: true and predicted involvement and severity grade.

    Both use the same ``lung`` mask, so a disagreement comes from the lesion
    outline alone. Returns a DataFrame with ``involvement_true``,
    ``involvement_pred``, ``grade_true``, ``grade_pred``.
    """
    import pandas as pd

    f_true = lesion_burden(region_masks(true, lesion_labels), lung)
    f_pred = lesion_burden(region_masks(pred, lesion_labels), lung)
    table = pd.DataFrame({"involvement_true": f_true, "involvement_pred": f_pred,
                          "grade_true": severity_grade(f_true), "grade_pred": severity_grade(f_pred)})
    table.index.name = "case"
    return table


def grade_agreement(table) -> dict:
    """Agreement of true and predicted grades: ``kappa`` (quadratic weighted, 5 grades),
    ``exact`` (fraction equal), ``within_one`` (fraction at most one band apart),
    ``burden_mae`` (mean absolute involvement error, fraction of lung)."""
    from .metrics import quadratic_weighted_kappa

    t, p = table["grade_true"].to_numpy(), table["grade_pred"].to_numpy()
    return {"kappa": quadratic_weighted_kappa(t, p, num_classes=5), "exact": float(np.mean(t == p)),
            "within_one": float(np.mean(np.abs(t - p) <= 1)),
            "burden_mae": float(np.mean(np.abs(table["involvement_true"] - table["involvement_pred"])))}


# ----------------------------------------------------------------------------------------------
# figures


def _fmt_mm(value):
    return "inf" if np.isinf(value) else "n/a" if np.isnan(value) else f"{value:.1f} mm"


def plot_cases(images, pred, true, cases: Mapping[str, int], class_names: Sequence[str], table=None,
               region: str | None = None, suptitle: str | None = None, panel_size: float = 3.2):
    """Prediction (filled) and reference (dashed contours) over the image, one panel per picked case.

    Args:
        images: ``(N, H, W)`` images; pred, true: ``(N, H, W)`` label maps.
        cases: ``{"best": i, "median": j, ...}`` (from :func:`pick_cases`).
        class_names: names of the labels, background first.
        table, region: when given, each title shows the case's Dice and HD95 of ``region``.
    """
    from .viz import _figure, mask_overlay

    fig = _figure((panel_size * len(cases), panel_size + 0.5))
    axes = np.atleast_1d(fig.subplots(1, len(cases)))
    for ax, (label, i) in zip(axes, cases.items()):
        title = f"{label} (case {i})"
        if table is not None and region is not None:
            title += f"\n{region}: Dice {table.loc[i, f'dice_{region}']:.2f}, HD95 {_fmt_mm(table.loc[i, f'hd95_{region}'])}"
        mask_overlay(images[i], pred[i], mode="filled", class_names=list(class_names[1:]), reference=true[i],
                     title=title, ax=ax)
        ax.title.set_fontsize(9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_examples(dataset, class_names: Sequence[str], n: int = 4, seed: int = 0, panel_size: float = 3.0,
                  suptitle: str | None = None):
    """``n`` cases of ``dataset`` with their reference labels filled in, cases with a lesion first."""
    from .viz import _figure, mask_overlay

    targets = _targets(dataset)
    fg = targets.reshape(len(targets), -1).max(1)
    order = np.random.default_rng(seed).permutation(len(targets))
    order = np.concatenate([order[fg[order] == fg.max()], order[fg[order] != fg.max()]])[:n]
    images = _images(dataset)
    fig = _figure((panel_size * len(order), panel_size + 0.4))
    axes = np.atleast_1d(fig.subplots(1, len(order)))
    for ax, i in zip(axes, order):
        mask_overlay(images[i], targets[i], mode="both", class_names=list(class_names[1:]), title=f"case {i}", ax=ax)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_dice_distribution(tables: Mapping[str, object], regions: Sequence[str], present_only: bool = True):
    """Per-case Dice of each region, one box and the cases as dots per table (e.g. per loss).

    With ``present_only`` a region's panel shows only the cases where it is in
    the reference (the empty-empty cases all score 1 by convention).
    """
    from .viz import _figure

    fig = _figure((3.6 * len(regions), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(regions)))
    rng = np.random.default_rng(0)
    for ax, region in zip(axes, regions):
        values = []
        for table in tables.values():
            d = table[f"dice_{region}"]
            values.append(d[table[f"true_{region}"] > 0].to_numpy() if present_only else d.to_numpy())
        ax.boxplot(values, showfliers=False, widths=0.5)
        for k, v in enumerate(values, start=1):
            ax.plot(k + rng.uniform(-0.15, 0.15, len(v)), v, ".", ms=3, alpha=0.5, color=f"C{k - 1}")
        ax.set_xticks(range(1, len(values) + 1), [LOSSES.get(n, n) for n in tables], rotation=15, fontsize=8)
        ax.set(ylim=(-0.03, 1.03), ylabel="Dice per case",
               title=f"{region}" + (f" (cases with {region})" if present_only else ""))
    return fig


def plot_histories(histories: Mapping[str, object], regions: Sequence[str]):
    """Learning curves of several runs: validation loss (left) and validation Dice of each region (right).

    ``histories`` maps a run's name (a loss) to its :class:`medlab.train.History`.
    Losses of different kinds are on different scales: compare their shapes, not heights.
    """
    from .viz import _figure

    fig = _figure((10, 3.6))
    left, right = fig.subplots(1, 2)
    styles = ("-", "--", ":", "-.")
    for k, (name, h) in enumerate(histories.items()):
        label = LOSSES.get(name, name)
        left.plot(h["epoch"], h["train_loss"], "o-", ms=3, color=f"C{k}", alpha=0.5, label=f"{label} (train)")
        if "val_loss" in h:
            left.plot(h["epoch"], h["val_loss"], "s--", ms=3, color=f"C{k}", label=f"{label} (val)")
        for j, region in enumerate(regions):
            key = "val_dice_" + region.replace(" ", "_").replace("-", "_")
            if key in h:
                right.plot(h["epoch"], h[key], styles[j % len(styles)], marker="o", ms=3, color=f"C{k}",
                           label=f"{label}: {region}")
    left.set(xlabel="epoch", ylabel="loss (each on its own scale)", title="training and validation loss")
    right.set(xlabel="epoch", ylabel="mean Dice per case", ylim=(-0.02, 1.02), title="validation Dice")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return fig


def plot_dice_vs_hd95(table, region: str, highlight: int = 3):
    """Per-case Dice against HD95 of one region, the ``highlight`` cases where they disagree most labelled.

    Disagreement: among cases with the largest finite HD95, those whose Dice
    is still high (a good overlap with a stray island far away). Cases with
    HD95 inf (one mask empty) are drawn at the top edge.
    """
    from .viz import _figure

    d, h = table[f"dice_{region}"].to_numpy(), table[f"hd95_{region}"].to_numpy()
    ok = ~np.isnan(h)
    finite = np.isfinite(h)
    top = (np.nanmax(h[finite]) * 1.15) if finite.any() else 1.0
    fig = _figure((5.2, 4))
    ax = fig.subplots()
    ax.scatter(d[finite], h[finite], s=12, alpha=0.6, label="cases")
    inf = ok & ~finite
    if inf.any():
        ax.scatter(d[inf], np.full(inf.sum(), top), marker="^", color="C3", s=18, label="HD95 = inf (one mask empty)")
    if finite.any():
        score = np.where(finite, h / (np.nanmax(h[finite]) + 1e-9) + d, -np.inf)
        for i in np.argsort(-score)[:highlight]:
            if np.isfinite(score[i]):
                ax.annotate(f"case {table.index[i]}", (d[i], h[i]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    ax.set(xlabel=f"Dice ({region})", ylabel=f"HD95 ({region}), mm", xlim=(-0.03, 1.03),
           title=f"{region}: overlap and boundary distance per case")
    ax.legend(fontsize=7)
    return fig


def plot_burden(table):
    """Predicted against true lung involvement per case, with the CT-0..CT-4 band limits."""
    from .viz import _figure

    fig = _figure((4.8, 4.4))
    ax = fig.subplots()
    for edge in (0.25, 0.5, 0.75):
        ax.axvline(edge, color="0.8", lw=0.8)
        ax.axhline(edge, color="0.8", lw=0.8)
    agree = table["grade_true"] == table["grade_pred"]
    ax.scatter(table["involvement_true"][agree], table["involvement_pred"][agree], s=12, alpha=0.6,
               label="same grade")
    ax.scatter(table["involvement_true"][~agree], table["involvement_pred"][~agree], s=18, color="C3",
               marker="x", label="different grade")
    top = max(0.3, float(table[["involvement_true", "involvement_pred"]].to_numpy().max()) * 1.05)
    ax.plot([0, top], [0, top], ls="--", color="0.5", lw=0.8)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="true involvement (fraction of lung)",
           ylabel="predicted involvement", title="lesion burden; grey lines: CT-1 | CT-2 | CT-3 | CT-4 limits")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    return fig


def published_covid_results(own: Mapping[str, float] | None = None, own_label: str = "this lesson"):
    """Published COVID-19 CT lesion segmentation results beside ``own`` (a pandas DataFrame).

    ``own`` may hold ``ground-glass``, ``consolidation`` and ``lesion`` Dice.
    Figures as REFERENCES cites them; see each row's note for why they are not
    directly comparable.
    """
    import pandas as pd

    nan = float("nan")
    rows = [
        ("COPLE-Net (Wang et al. 2020)", "CT scans, 130 test scans", nan, nan, 0.80,
         "3D volumes of real patients; noisy-label training; Dice as a review cites it"),
        ("Inf-Net (Fan et al. 2020)", "MedSeg, 48 test slices", 0.62, 0.46, 0.682,
         "Dice averaged over 256 thresholds of the probability map; per-class values as a review cites them "
         "(the repository's releases give ground-glass 0.62-0.65, consolidation 0.24-0.36)"),
        ("Semi-Inf-Net (Fan et al. 2020)", "MedSeg, 48 test slices", nan, nan, 0.739,
         "as Inf-Net, with pseudo-labels from unlabelled CT"),
        ("MONAI baseline, COVID-19-20 challenge (Roth et al. 2022)", "challenge validation scans", nan, nan, 0.69,
         "3D; mean over validation cases, +/- 0.18"),
    ]
    table = pd.DataFrame(rows, columns=["method", "data", "ground-glass", "consolidation", "lesion", "note"])
    if own is not None:
        mine = pd.DataFrame([(own_label, own.get("data", ""), own.get("ground-glass", nan),
                              own.get("consolidation", nan), own.get("lesion", nan), own.get("note", ""))],
                            columns=table.columns)
        table = pd.concat([mine, table], ignore_index=True)
    return table.set_index("method")
