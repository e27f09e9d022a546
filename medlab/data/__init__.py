"""Data for the lessons: phantoms with exact ground truth, real data sets, downloads.

Three layers, each usable alone:

``medlab.data.phantoms``
    Synthetic chest X-rays, CT slices (in Hounsfield units), lung ultrasound
    frames and clips, and ultrasound nodules. Deterministic for a seed, exact
    masks and labels, knobs for difficulty and for "scanner" domain shift.
``medlab.data.sources``
    ``load_source(name, root=None, split="train", **options)`` for the names a
    notebook's ``DATA`` parameter accepts (``phantom``, ``medmnist:<flag>``,
    ``covid-radiography``, ``covid-qu-ex``, ``medseg-covid-ct``, ``mosmeddata``,
    ``pocus``, ``folder:<path>``, ``mni152``).
``medlab.data.download``
    ``MEDLAB_DATA_DIR``, checksum-verified atomic downloads and safe extraction.
``medlab.data.labelmaps``
    ``load_segmentation(DATA, task, size=...)``: train/val/test images with a
    label per pixel, the regions to evaluate, the pixel spacing and lung masks.
``medlab.data.volumes``
    ``load_volumes(DATA, task, n_train=..., ...)``: 3D volumes (brain MRI phantoms,
    NIfTI case folders, MedMNIST 3D) as NumPy train/val/test arrays; ``resample_volume``.
``medlab.data.patients``
    ``load_cohort(DATA, n, seed=..., size=...)``: patients with a clinical table
    and a CT slice each, drawn from a stated causal model (or read from a folder).

``medlab.data.PhantomStream``
    fresh phantoms every epoch, rendered with torch on the training device, as
    batches that ``medlab.fit`` takes in place of a DataLoader.

The phantoms draw their parameters with NumPy; the chest X-ray and CT phantoms
render their pixels with torch on the device you choose (``device=``), the
others with NumPy and SciPy.
"""
from __future__ import annotations

import importlib

__all__ = [
    "fetch", "use_google_drive",
    "PhantomBatch", "PhantomDataset", "ArrayDataset", "make_splits", "make_loader", "stratified_subset",
    "load_source", "degrade_masks", "nearest_medmnist_size",
    "list_sources", "data_dir", "phantoms", "sources", "download", "load_with_scanner_shift", "simulate_scanner",
    "SegmentationData", "load_segmentation", "Cohort", "load_cohort",
    "VolumeData", "load_volumes", "resample_volume", "PhantomStream",
]

_LAZY = {
    "PhantomBatch": ("medlab.data.phantoms", "PhantomBatch"),
    "PhantomDataset": ("medlab.data.dataset", "PhantomDataset"),
    "ArrayDataset": ("medlab.data.dataset", "ArrayDataset"),
    "make_splits": ("medlab.data.dataset", "make_splits"),
    "make_loader": ("medlab.data.dataset", "make_loader"),
    "stratified_subset": ("medlab.data.dataset", "stratified_subset"),
    "load_source": ("medlab.data.sources", "load_source"),
    "list_sources": ("medlab.data.sources", "list_sources"),
    "nearest_medmnist_size": ("medlab.data.sources.medmnist", "nearest_size"),
    "data_dir": ("medlab.data.download", "data_dir"),
    "use_google_drive": ("medlab.data.download", "use_google_drive"),
    "fetch": ("medlab.data.sources", "fetch_source"),
    "degrade_masks": ("medlab.data.masks", "degrade_masks"),
    "load_with_scanner_shift": ("medlab.data.shift", "load_with_scanner_shift"),
    "simulate_scanner": ("medlab.data.shift", "simulate_scanner"),
    "SegmentationData": ("medlab.data.labelmaps", "SegmentationData"),
    "load_segmentation": ("medlab.data.labelmaps", "load_segmentation"),
    "Cohort": ("medlab.data.patients", "Cohort"),
    "load_cohort": ("medlab.data.patients", "load_cohort"),
    "VolumeData": ("medlab.data.volumes", "VolumeData"),
    "load_volumes": ("medlab.data.volumes", "load_volumes"),
    "resample_volume": ("medlab.data.volumes", "resample_volume"),
    "PhantomStream": ("medlab.data.stream", "PhantomStream"),
}
_SUBMODULES = {"phantoms", "sources", "download", "dataset", "cli", "masks", "shift", "labelmaps", "patients", "volumes", "stream"}


def __getattr__(name):
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'medlab.data' has no attribute {name!r}")
