"""Torch datasets over phantoms and arrays, and reproducible train/val/test splits.

Every dataset medlab hands to a lesson yields ``(image, target)`` pairs:

* ``image``: float32 tensor ``(C, H, W)`` (clips: ``(T, C, H, W)``), values
  roughly in ``[0, 1]``; CT phantoms are windowed from HU (``window``
  argument, default the wide window -1100..+400 HU) unless ``window=None``.
* ``target``: int64 scalar class index (``target="label"``) or int64 ``(H, W)``
  label map (``target="mask"`` or a mask name).

and has ``class_names`` (the names of the target's values) and, for phantoms,
``batch`` (the :class:`PhantomBatch`, with ``attrs`` for per-sample analysis).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ParameterError

__all__ = ["ArrayDataset", "PhantomDataset", "make_splits", "make_loader", "PHANTOM_KINDS", "split_seeds",
           "stratified_subset"]

#: The phantom kinds :func:`make_splits` knows, with their generator's name.
PHANTOM_KINDS = ("chest_xray", "ct_slice", "lung_ultrasound", "lung_ultrasound_clips", "us_nodule", "fundus")
_KIND_ALIASES = {"cxr": "chest_xray", "chest": "chest_xray", "ct": "ct_slice", "lus": "lung_ultrasound",
                 "lung_us": "lung_ultrasound", "lus_clips": "lung_ultrasound_clips", "nodule": "us_nodule",
                 "thyroid": "us_nodule", "retina": "fundus"}


class ArrayDataset(Dataset):
    """A dataset over in-memory arrays: images ``(N, C, H, W)`` and targets.

    Args:
        images: float array or tensor ``(N, C, H, W)`` (or ``(N, T, C, H, W)``).
        targets: int array ``(N,)`` (labels) or ``(N, H, W)`` (masks).
        class_names: names of the target values.
        transform: optional callable applied to the image tensor.
        joint_transform: optional callable ``(image, target) -> (image, target)``
            applied after ``transform`` (for segmentation augmentation that must
            move image and mask together).
        meta: optional dict of per-sample arrays (kept as ``.meta``).
    """

    def __init__(self, images, targets, class_names, transform: Callable | None = None,
                 joint_transform: Callable | None = None, meta: dict | None = None):
        images = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        targets = torch.as_tensor(np.ascontiguousarray(targets) if isinstance(targets, np.ndarray) else targets)
        if images.shape[0] != targets.shape[0]:
            raise ParameterError(f"{images.shape[0]} images but {targets.shape[0]} targets")
        self.images = images.float()
        self.targets = targets.long()
        self.class_names = list(class_names)
        self.transform = transform
        self.joint_transform = joint_transform
        self.meta = meta or {}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i):
        image, target = self.images[i], self.targets[i]
        if self.transform is not None:
            image = self.transform(image)
        if self.joint_transform is not None:
            image, target = self.joint_transform(image, target)
        return image, target

    @property
    def labels(self) -> np.ndarray:
        """Targets as a NumPy array (handy for class counts and metrics)."""
        return self.targets.numpy()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, image={tuple(self.images.shape[1:])}, "
                f"target={tuple(self.targets.shape[1:]) or 'label'}, classes={self.class_names})")


class PhantomDataset(ArrayDataset):
    """A :class:`PhantomBatch` as a torch dataset.

    Args:
        batch: the phantoms.
        target: ``"label"`` (image class), ``"mask"`` (the batch's default mask)
            or the name of a mask (for example ``"lung"``).
        transform, joint_transform: as in :class:`ArrayDataset`.
        window: for CT (HU) phantoms, the display window mapping HU to [0, 1]:
            a name from ``CT_WINDOWS``, a ``(level, width)`` pair, or None to
            keep HU. Default ``"wide"`` (-1100 to +400 HU: lung and soft tissue
            both visible). Ignored for other modalities.
    """

    def __init__(self, batch, target: str = "label", transform: Callable | None = None,
                 joint_transform: Callable | None = None, window="wide"):
        from .phantoms import window as _window

        images = batch.images
        if batch.units == "HU" and window is not None:
            level, width = (window, None) if isinstance(window, str) else window
            images = _window(images, level, width)
        if target == "label":
            targets, names = batch.labels, batch.class_names
        else:
            name = batch.default_mask if target == "mask" else target
            targets = batch.mask(name)
            names = batch.mask_classes.get(name, [])
        super().__init__(images, targets, names, transform, joint_transform, meta=batch.attrs)
        self.batch = batch
        self.target = target


def split_seeds(seed: int) -> dict[str, int]:
    """The generator seeds of the train, val and test splits derived from ``seed``.

    Uses NumPy's ``SeedSequence.spawn``, so the three streams are independent
    and never equal to ``seed`` or to each other.
    """
    children = np.random.SeedSequence(int(seed)).spawn(3)
    return {name: int(c.generate_state(1)[0]) for name, c in zip(("train", "val", "test"), children)}


def make_splits(kind: str, n_train: int, n_val: int, n_test: int, size: int = 64, seed: int = 0,
                target: str = "label", transform: Callable | None = None,
                joint_transform: Callable | None = None, device=None, **knobs) -> dict[str, PhantomDataset]:
    """Train, validation and test :class:`PhantomDataset` of one phantom kind.

    Each split is generated from its own seed (:func:`split_seeds`), so the
    splits are reproducible, disjoint (no image appears in two splits) and a
    split's images do not change when another split's size does.

    Args:
        kind: ``chest_xray``, ``ct_slice``, ``lung_ultrasound``,
            ``lung_ultrasound_clips`` or ``us_nodule`` (aliases ``cxr``, ``ct``,
            ``lus``, ``nodule``).
        n_train, n_val, n_test: split sizes.
        size: image side in pixels.
        seed: the experiment's seed.
        target: ``"label"``, ``"mask"`` or a mask name (see :class:`PhantomDataset`).
        transform, joint_transform: applied to the training split only.
        device: where the phantoms are rendered (``None`` or ``"cpu"``, ``"cuda"``,
            ``"auto"``; see the generators); the datasets hold NumPy arrays either way.
        **knobs: passed to the generator (difficulty and domain knobs).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``.
    """
    from . import phantoms

    name = _KIND_ALIASES.get(kind, kind)
    if name not in PHANTOM_KINDS:
        raise ParameterError(f"unknown phantom kind {kind!r}; known kinds: {', '.join(PHANTOM_KINDS)}")
    window = knobs.pop("window", "wide")
    generator = getattr(phantoms, name)
    seeds = split_seeds(seed)
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        try:
            batch = generator(n, size=size, seed=seeds[split], device=device, **knobs)
        except TypeError as exc:
            raise ParameterError(f"{name}: {exc}") from None
        out[split] = PhantomDataset(batch, target=target, window=window,
                                    transform=transform if split == "train" else None,
                                    joint_transform=joint_transform if split == "train" else None)
    return out


def make_loader(data, batch_size: int = 32, shuffle: bool = False, seed: int = 0, samples_per_epoch: int | None = None,
                num_workers: int = 0, pin_memory: bool = False):
    """A DataLoader over ``data`` whose order is fixed by ``seed``.

    Args:
        data: a Dataset, or a tuple of arrays / tensors with the same first
            dimension (images, and targets if any), wrapped in a TensorDataset
            (images as float32, targets as int64).
        shuffle: draw a new, seeded order every epoch.
        samples_per_epoch: with ``shuffle``, draw ``max(len(data),
            samples_per_epoch)`` samples per epoch, so that a small data set takes
            as many gradient steps per epoch as a larger one.
        num_workers, pin_memory: passed to the DataLoader.

    Raises:
        ParameterError: ``data`` is empty, or its arrays differ in length.
    """
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    if isinstance(data, (tuple, list)):
        tensors = [torch.as_tensor(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a) for a in data]
        if len({t.shape[0] for t in tensors}) > 1:
            raise ParameterError(f"arrays of different lengths: {[t.shape[0] for t in tensors]}")
        tensors = [tensors[0].float(), *(t.long() for t in tensors[1:])]
        data = TensorDataset(*tensors)
    if len(data) == 0:
        raise ParameterError("the dataset is empty: nothing to load")
    sampler = None
    if shuffle:
        generator = torch.Generator().manual_seed(int(seed))
        sampler = RandomSampler(data, num_samples=max(len(data), int(samples_per_epoch or 0)), generator=generator)
    return DataLoader(data, batch_size=int(batch_size), sampler=sampler, shuffle=False, num_workers=int(num_workers),
                      pin_memory=pin_memory)


def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` cases that keep the class proportions of ``labels`` (at least one per class).

    Each class gets ``floor(share * n)`` cases (at least one); what is left over goes to the classes
    furthest below their share. The same ``seed`` gives the same subset; subsets for growing ``n`` are
    not nested. ``n == len(labels)`` returns every index.

    Raises:
        ParameterError: ``n`` is not between 1 and ``len(labels)``, or too small to hold every class.
    """
    labels = np.asarray(labels)
    if not 1 <= n <= labels.size:
        raise ParameterError(f"subset size must be between 1 and {labels.size}, got {n}")
    if n == labels.size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    if n < classes.size:
        raise ParameterError(f"a subset of {n} cannot hold all {classes.size} classes")
    quota = np.maximum(1, np.floor(counts / labels.size * n).astype(int))
    while quota.sum() < n:  # hand out the remainder to the largest classes
        quota[np.argmax(counts - quota)] += 1
    while quota.sum() > n:
        quota[np.argmax(quota)] -= 1
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))
