"""MNI152: nilearn's bundled T1 template with brain, grey and white matter, as slices with tissue masks."""
from __future__ import annotations

import functools

import numpy as np

from ...errors import DataNotFoundError, ParameterError
from ..dataset import ArrayDataset
from ._base import SourceInfo, check_split, stable_hash

MNI_LABELS = ["background", "grey matter", "white matter", "CSF and other brain"]
PLANES = ("axial", "coronal", "sagittal")
MNI_INFO = SourceInfo(
    name="mni152",
    title="MNI152 2009 T1 template with tissue probability maps (bundled with nilearn)",
    modality="MRI, T1-weighted template (an average of 152 adult brains), 1 or 2 mm",
    task="tissue segmentation: 0 background, 1 grey matter, 2 white matter, 3 CSF and other brain",
    origin="nilearn.datasets.load_mni152_template and load_mni152_{brain,gm,wm}_mask/_template "
           "(files shipped inside the nilearn package; no download)",
    licence="the MNI ICBM152 templates are freely distributable with their copyright notice "
            "(McConnell Brain Imaging Centre); nilearn is BSD",
    citation="Fonov et al. Unbiased average age-appropriate atlases for pediatric studies. NeuroImage 54:313-327, "
             "2011; Fonov et al. NeuroImage 47:S102, 2009.",
    layout="(inside the installed nilearn package; nothing to put anywhere)",
    how_to_get="pip install nilearn",
    folder="",
    options={"plane": "axial (default), coronal or sagittal", "resolution": "2 (default) or 1 mm",
             "size": "resize slices (padded to square) to size x size", "target": "mask (tissues) or brain (0/1)",
             "seed": "split seed"},
)


def load_volumes(resolution: int = 2) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The T1 template (scaled to [0, 1]) and the tissue label map, laid out (S, P, L) like medlab.io.

    Tissue labels: inside nilearn's brain mask, the largest of the grey-matter,
    white-matter and remaining (1 - GM - WM) probabilities; 0 outside.
    Cached per resolution (nilearn takes seconds to build them); the arrays
    returned are read-only.
    """
    if resolution not in (1, 2):
        raise ParameterError("resolution must be 1 or 2 (mm)")
    return _load_volumes(int(resolution))


@functools.lru_cache(maxsize=2)
def _load_volumes(resolution: int):
    try:
        import nibabel as nib
        from nilearn import datasets
    except ImportError:
        raise DataNotFoundError("mni152", "the MNI152 source needs nilearn: pip install nilearn") from None
    def arr(img):
        img = nib.as_closest_canonical(img)
        return np.asarray(img.get_fdata(), dtype=np.float32).transpose(2, 1, 0)[:, ::-1, ::-1], img.header.get_zooms()

    t1, zooms = arr(datasets.load_mni152_template(resolution=resolution))
    brain, _ = arr(datasets.load_mni152_brain_mask(resolution=resolution))
    gm, _ = arr(datasets.load_mni152_gm_template(resolution=resolution))
    wm, _ = arr(datasets.load_mni152_wm_template(resolution=resolution))
    other = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = np.argmax(np.stack([gm, wm, other]), axis=0) + 1
    labels = np.where(brain > 0.5, tissue, 0).astype(np.int64)
    t1 = t1 / max(float(t1.max()), 1e-6)
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    t1, labels = np.ascontiguousarray(t1), np.ascontiguousarray(labels)
    t1.flags.writeable = False
    labels.flags.writeable = False
    return t1, labels, spacing


def _square(stack: np.ndarray) -> np.ndarray:
    n, h, w = stack.shape
    s = max(h, w)
    out = np.zeros((n, s, s), stack.dtype)
    out[:, (s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = stack
    return out


def load_mni152(root=None, split="train", *, plane="axial", resolution=2, size=None, target="mask",
                min_brain_fraction=0.02, seed=0, transform=None, joint_transform=None) -> ArrayDataset:
    """Slices of the MNI152 template with tissue masks, as an :class:`ArrayDataset`.

    Slices with less than ``min_brain_fraction`` of brain are dropped; the
    rest are cut into 10 contiguous blocks (neighbouring slices look alike)
    and the blocks split 7/1/2 by ``seed``. Slices are padded to square, then
    resized to ``size`` when given. ``root`` is ignored (the files live in
    nilearn).
    """
    split = check_split(split)
    if plane not in PLANES:
        raise ParameterError(f"plane must be one of {PLANES}, not {plane!r}")
    t1, labels, _ = load_volumes(resolution)
    axis = PLANES.index(plane)
    t1, labels = np.moveaxis(t1, axis, 0), np.moveaxis(labels, axis, 0)
    if plane != "axial":  # show superior at the top
        t1, labels = t1[:, ::-1], labels[:, ::-1]
    frac = (labels > 0).reshape(len(labels), -1).mean(1)
    idx = np.flatnonzero(frac >= min_brain_fraction)
    blocks = np.array_split(idx, 10)
    order = np.argsort([stable_hash(f"mni-block-{i}", seed) for i in range(len(blocks))])
    part = {}
    for rank, b in enumerate(order):
        name = "train" if rank < 7 else "val" if rank < 8 else "test"
        for i in blocks[b]:
            part[int(i)] = name
    keep = np.array([i for i in idx if split == "all" or part[int(i)] == split], dtype=int)
    images, masks = _square(t1[keep]), _square(labels[keep])
    if size is not None:
        from .ct import _resize_stack

        images, masks = _resize_stack(images, size), _resize_stack(masks, size, mask=True)
    if target == "mask":
        targets, names = masks, list(MNI_LABELS)
    elif target == "brain":
        targets, names = (masks > 0).astype(np.int64), ["background", "brain"]
    else:
        raise ParameterError("target must be 'mask' or 'brain'")
    ds = ArrayDataset(images[:, None].astype(np.float32), targets, names, transform=transform,
                      joint_transform=joint_transform, meta={"slice": keep})
    ds.source = "mni152"
    return ds


load_mni152.__doc__ = (load_mni152.__doc__ or "") + "\n\n    Source:\n\n    " + MNI_INFO.describe().replace("\n", "\n    ")
