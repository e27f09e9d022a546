"""Segmentation data sets: images with a label for every pixel, split and ready to train on.

``load_segmentation(DATA, task, size=..., ...)`` gives a :class:`SegmentationData`
with train/val/test datasets of ``(image (1, H, W) in [0, 1], labels (H, W))``, the
names of the labels, the *regions* to evaluate, the pixel spacing in mm and, for
the lesion task, the lung masks of the test cases (for the lesion burden).

Conventions:

* A *region* is a structure that is evaluated, given as the set of labels
  that make it up: on the CT phantoms ``lung = {1, 2}`` (the whole lung,
  lesions included) and ``lesion = {2}``; nested structures are evaluated as
  regions, as in the BraTS challenge (see :func:`medlab.metrics.case_metrics`).
* CT images are windowed from HU to [0, 1] with the wide window
  (-1100 to +400 HU), so that aerated lung, ground-glass and consolidation
  all stay distinguishable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError

__all__ = ["SegmentationData", "load_segmentation", "approximate_lung_mask", "PHANTOM_FOV_MM",
           "NOMINAL_CT_FOV_MM", "SEGMENTATION_TASKS"]

#: The side of the field of view of the CT phantoms in millimetres (an adult chest
#: CT is reconstructed on a 350-400 mm field): pixel spacing = 400 / image size.
PHANTOM_FOV_MM = 400.0

#: Nominal field of view of the real CT slices whose files carry no usable pixel
#: spacing (MedSeg's slices were converted from images; MosMedData is resampled).
NOMINAL_CT_FOV_MM = 360.0

#: What each task segments (see :func:`load_segmentation`).
SEGMENTATION_TASKS = ("lung_lesion", "lesion_type")


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

    def arrays(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, H, W)`` in [0, 1] and label maps ``(N, H, W)`` of one split (``train``, ``val``, ``test``)."""
        if split not in ("train", "val", "test"):
            raise ParameterError(f"split must be 'train', 'val' or 'test', not {split!r}")
        ds = getattr(self, split)
        return _images(ds), _targets(ds)

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
    from .dataset import ArrayDataset

    return ArrayDataset(np.ascontiguousarray(images, dtype=np.float32), np.ascontiguousarray(targets),
                        class_names, meta=meta)


def load_segmentation(data: str = "phantom", task: str = "lung_lesion", size: int = 64, n_train: int = 400,
              n_val: int = 100, n_test: int = 200, seed: int = 0, root=None, device=None,
              **knobs) -> SegmentationData:
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
        device: where phantoms are rendered (``None`` or ``"cpu"``, ``"cuda"``,
            ``"auto"``; see :func:`medlab.data.phantoms.ct_slice`). Real data
            are read from files, so it does not apply to them.
        **knobs: phantom generator knobs (``lesion_size``, ``noise``, ...).

    Raises:
        ParameterError: unknown task, or a data set this task cannot use.
        DataNotFoundError: a real data set is not on this machine (the message says how to get it).
    """
    if task not in SEGMENTATION_TASKS:
        raise ParameterError(f"task must be one of {SEGMENTATION_TASKS}, not {task!r}")
    name = str(data).strip().lower()
    if name in ("phantom", "phantom:ct", "phantom:ct_slice"):
        return _phantom_data(task, size, n_train, n_val, n_test, seed, dict(knobs, device=device))
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
    from .dataset import split_seeds
    from .phantoms import ct_slice, window

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
    from .sources import load_source
    from .sources.mni152 import load_volumes

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
    from .phantoms import window
    from .sources import load_source

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
    from .phantoms import window
    from .sources import load_source

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
