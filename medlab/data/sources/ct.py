"""CT sources: MedSeg COVID-19 CT segmentation (100 slices) and MosMedData (1,110 studies)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataNotFoundError, ImageReadError, ParameterError
from ..dataset import ArrayDataset
from ..download import source_dir
from ._base import FileDataset, SourceInfo, assign_split, check_split, limit_items, require, stable_hash


def _window(hu, window):
    from ..phantoms import window as _w

    if window is None:
        return hu.astype(np.float32)
    level, width = (window, None) if isinstance(window, str) else window
    return _w(hu.astype(np.float32), level, width)


def _read_volume(path: Path) -> np.ndarray:
    from ._base import read_any

    arr = read_any(path).array
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ImageReadError(path, f"expected a 3D volume, got shape {arr.shape}")
    return arr


def _resize_stack(arr: np.ndarray, size, mask=False) -> np.ndarray:
    """Resize the last two axes of (S, H, W) to (size, size)."""
    if size is None or arr.shape[-2:] == (size, size):
        return arr
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[:, None]
    if mask:
        return F.interpolate(t, size=(size, size), mode="nearest")[:, 0].numpy().astype(np.int64)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < arr.shape[-1])[:, 0].numpy()


# ---------------------------------------------------------------------------------------------
# MedSeg

MEDSEG_LABELS = ["background", "ground-glass", "consolidation", "pleural effusion"]
MEDSEG_INFO = SourceInfo(
    name="medseg-covid-ct",
    title="MedSeg COVID-19 CT segmentation data set (100 axial slices)",
    modality="CT, 512x512 axial slices in HU (NIfTI)",
    task="segmentation: 0 background, 1 ground-glass, 2 consolidation, 3 pleural effusion",
    origin="http://medicalsegmentation.com/covid19/ (slices from the Italian Society of Medical and "
           "Interventional Radiology, segmented by a radiologist)",
    licence="as stated on the MedSeg page (check it before redistributing)",
    citation="MedSeg. COVID-19 CT segmentation dataset. 2020. http://medicalsegmentation.com/covid19/ "
             "(used by Fan et al., Inf-Net, IEEE TMI 39:2626-2637, 2020).",
    layout="tr_im.nii.gz     (100 slices, HU)\ntr_mask.nii.gz   (100 slices, labels 0-3)\n"
           "[val_im.nii.gz]  (10 slices without masks; optional)",
    how_to_get="download 'Training images' (tr_im.nii.gz) and 'Training masks' (tr_mask.nii.gz) from "
               "http://medicalsegmentation.com/covid19/ (the links lead to Google Drive).",
    folder="medseg-covid-ct",
    options={"target": "mask (default) or label (slice has a lesion)", "size": "resize (default 512 native)",
             "window": "CT window name or (level, width); None keeps HU", "seed": "split seed"},
)


def medseg_files(root=None) -> tuple[Path, Path]:
    """Paths of ``tr_im.nii.gz`` and ``tr_mask.nii.gz``; DataNotFoundError if either is missing."""
    base = Path(root) if root is not None else source_dir(MEDSEG_INFO.folder)
    im, mk = base / "tr_im.nii.gz", base / "tr_mask.nii.gz"
    missing = [p.name for p in (im, mk) if not p.is_file()]
    if missing:
        require(MEDSEG_INFO, base, f"missing {', '.join(missing)}")
    return im, mk


def load_medseg(root=None, split="train", *, target="mask", size=None, window="wide", seed=0,
                limit=None, transform=None, joint_transform=None) -> ArrayDataset:
    """MedSeg COVID-19 CT slices as an :class:`ArrayDataset` of ``(1, H, W)`` images.

    The 100 slices come from about 40 patients without identifiers, and
    neighbouring slices often share a patient, so the split is made of
    contiguous blocks of 10 slices (7 train, 1 val, 2 test blocks, chosen by
    ``seed``). Raises :class:`ImageReadError` when image and mask shapes
    differ or the mask holds labels outside 0-3.
    """
    split = check_split(split)
    im_path, mk_path = medseg_files(root)
    hu, mask = _read_volume(im_path), _read_volume(mk_path)
    if hu.shape != mask.shape:
        raise ImageReadError(mk_path, f"mask shape {mask.shape} differs from image shape {hu.shape} of {im_path}")
    mask = np.rint(mask).astype(np.int64)
    bad = np.setdiff1d(np.unique(mask), np.arange(4))
    if bad.size:
        raise ImageReadError(mk_path, f"labels {bad.tolist()} outside 0-3 (MedSeg: 0 background, "
                             "1 ground-glass, 2 consolidation, 3 pleural effusion)")
    n = len(hu)
    blocks = np.arange(n) // 10
    order = np.argsort([stable_hash(f"medseg-block-{b}", seed) for b in range(blocks.max() + 1)])
    n_blocks = len(order)
    n_train = max(1, round(0.7 * n_blocks))
    n_val = max(1, round(0.1 * n_blocks)) if n_blocks > 2 else 0
    part = {int(b): ("train" if i < n_train else "val" if i < n_train + n_val else "test") for i, b in enumerate(order)}
    keep = np.array([split == "all" or part[int(b)] == split for b in blocks])
    images = _window(_resize_stack(hu[keep], size), window)[:, None]
    masks = _resize_stack(mask[keep], size, mask=True)
    if target == "mask":
        targets, names = masks, list(MEDSEG_LABELS)
    elif target == "label":
        targets, names = (masks.reshape(len(masks), -1).max(1) > 0).astype(np.int64), ["no lesion", "lesion"]
    else:
        raise ParameterError("target must be 'mask' or 'label'")
    if limit is not None and limit < len(images):
        idx = limit_items(list(range(len(images))), None, limit, seed)
        images, targets = images[idx], targets[idx]
    ds = ArrayDataset(images, targets, names, transform=transform, joint_transform=joint_transform,
                      meta={"slice": np.flatnonzero(keep)})
    ds.source = "medseg-covid-ct"
    return ds


# ---------------------------------------------------------------------------------------------
# MosMedData

MOSMED_CLASSES = ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]
MOSMED_INFO = SourceInfo(
    name="mosmeddata",
    title="MosMedData: chest CT scans with COVID-19 related findings (1,110 studies)",
    modality="CT volumes in HU (NIfTI), about 512x512x40",
    task="severity classification CT-0..CT-4 by lung involvement (0, <25 %, 25-50 %, 50-75 %, >75 %); "
         "50 CT-1 studies with lesion masks",
    origin="https://mosmed.ai/datasets/covid19_1110/ (Moscow Center for Diagnostics and Telemedicine)",
    licence="CC BY-NC-ND 3.0 (as stated with the data set; check it)",
    citation="Morozov et al. MosMedData: chest CT scans with COVID-19 related findings. arXiv:2005.06465, 2020.",
    layout="[COVID19_1110/]studies/CT-0/study_0001.nii.gz ... studies/CT-4/*.nii.gz\n"
           "[COVID19_1110/]masks/study_0255_mask.nii.gz ...   (50 masks)",
    how_to_get="download the archive from https://mosmed.ai/datasets/covid19_1110/ (a form or torrent), "
               "then unpack it into the root folder.",
    folder="mosmeddata",
    options={"target": "label (default) or mask (the 50 masked studies)", "depth": "slices after resampling "
             "(default 32)", "size": "side after resampling (default 128)", "window": "CT window", "limit": "studies"},
)


def mosmed_root(root=None) -> Path:
    """The folder holding ``studies/`` (``COVID19_1110`` inside ``root`` accepted)."""
    base = Path(root) if root is not None else source_dir(MOSMED_INFO.folder)
    for cand in (base / "COVID19_1110", base):
        if (cand / "studies").is_dir():
            return cand
    require(MOSMED_INFO, base, "no studies/ folder")
    raise AssertionError  # pragma: no cover


class MosMedDataset(FileDataset):
    """MosMedData studies, each read on access and resampled to ``(1, depth, size, size)``."""

    def __init__(self, items, split, target, depth, size, window, transform, joint_transform):
        self.items, self.split, self.target = items, split, target
        self.depth, self.size, self.window = depth, size, window
        self.transform, self.joint_transform = transform, joint_transform
        self.class_names = list(MOSMED_CLASSES) if target == "label" else ["background", "lesion"]
        self.source = "mosmeddata"

    @property
    def labels(self) -> np.ndarray:
        """Severity band of every study (no file is read)."""
        return np.array([it[1] for it in self.items], dtype=np.int64)

    def _resample(self, vol, mask=False):
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
        shape = (self.depth, self.size, self.size)
        if mask:
            return F.interpolate(t, size=shape, mode="nearest")[0, 0].numpy().astype(np.int64)
        return F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()

    def _load(self, item):
        path, label, mask_path = item
        vol = _read_volume(path)
        image = _window(self._resample(vol), self.window)[None]
        if self.target == "label":
            return image, label
        mask = _read_volume(mask_path)
        if mask.shape != vol.shape:
            raise ImageReadError(mask_path, f"mask shape {mask.shape} differs from image shape {vol.shape} of {path}")
        return image, (self._resample(mask, mask=True) > 0).astype(np.int64)


def load_mosmed(root=None, split="train", *, target="label", depth=32, size=128, window="wide", seed=0,
                limit=None, transform=None, joint_transform=None) -> MosMedDataset:
    """MosMedData studies as a dataset of volumes (one item per study, split 70/10/20 by study)."""
    split = check_split(split)
    folder = mosmed_root(root)
    items = []
    for label, cls in enumerate(MOSMED_CLASSES):
        for p in sorted((folder / "studies" / cls).glob("*.nii*")):
            stem = p.name.split(".nii")[0]
            m = folder / "masks" / f"{stem}_mask.nii.gz"
            if not m.is_file():
                m = folder / "masks" / f"{stem}_mask.nii"
            items.append((p, label, m if m.is_file() else None))
    if not items:
        require(MOSMED_INFO, folder, "no NIfTI studies in studies/CT-0..CT-4")
    if target == "mask":
        items = [it for it in items if it[2] is not None]
        if not items:
            raise DataNotFoundError(MOSMED_INFO.name, f"no masks in {folder / 'masks'} matching the studies "
                                    f"(expected study_XXXX_mask.nii.gz). {MOSMED_INFO.how_to_get}")
    elif target != "label":
        raise ParameterError("target must be 'label' or 'mask'")
    keep = assign_split([it[0].name for it in items], split, seed=seed)
    items = [it for it, k in zip(items, keep) if k]
    items = limit_items(items, [it[1] for it in items], limit, seed)
    return MosMedDataset(items, split, target, depth, size, window, transform, joint_transform)


for _fn, _info in ((load_medseg, MEDSEG_INFO), (load_mosmed, MOSMED_INFO)):
    _fn.__doc__ = (_fn.__doc__ or "") + "\n\n    Source:\n\n    " + _info.describe().replace("\n", "\n    ")
