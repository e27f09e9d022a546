"""3D data sets: volumes with a mask or a label, split by case and ready to train on.

``load_volumes(DATA, task, n_train=..., n_val=..., n_test=...)`` gives a
:class:`VolumeData` whose ``train``, ``val`` and ``test`` are ``(images, targets)``
pairs of NumPy arrays: images float32 ``(N, C, D, H, W)`` (roughly in ``[0, 1]``),
targets uint8 masks ``(N, D, H, W)`` (segmentation) or int64 labels ``(N,)``
(classification). Sources (the notebooks' ``DATA`` values):

``phantom``
    :func:`medlab.data.phantoms.brain_mri` (``task="lesion"``: white-matter
    lesion masks on T1/T2/FLAIR; ``task="tissue"``: the tissue map),
    :func:`medlab.data.phantoms.brain_atrophy` (``task="atrophy"``: control
    vs atrophy). Offline, built on nilearn's MNI152 template.
``folder:PATH``
    Your own NIfTI cases with lesion masks, in the layout of the MSSEG 2016
    and ISBI 2015 MS lesion challenges (see :data:`FOLDER_LAYOUT`); every case
    is resampled to ``voxel_mm`` isotropic voxels, cropped or padded to one
    shape and normalised per channel.
``medmnist:<flag>``
    The six MedMNIST 3D sets (``organmnist3d``, ``nodulemnist3d``,
    ``adrenalmnist3d``, ``fracturemnist3d``, ``vesselmnist3d``,
    ``synapsemnist3d``) at ``size`` 28 or 64, with their official splits.

Axes are ``(D, H, W) = (slices, rows, columns)`` as :func:`medlab.io.read_image`
lays out NIfTI (inferior->superior, anterior->posterior, right->left);
``spacing`` is ``(dz, dy, dx)`` in mm.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, ImageReadError, ParameterError

__all__ = ["VolumeData", "load_volumes", "resample_volume", "crop_or_pad", "FOLDER_LAYOUT", "VOLUME_TASKS",
           "find_cases"]

#: The ``task`` values of :func:`load_volumes` for phantoms.
VOLUME_TASKS = ("lesion", "tissue", "atrophy")

#: The folder layout ``folder:PATH`` reads (shown in its error messages).
FOLDER_LAYOUT = """\
PATH/<case>/        one folder per case (sub-folders are searched too), holding NIfTI files
                    (.nii or .nii.gz), all on the same voxel grid:
    one image per channel, named by a word in the file name (case-insensitive; words are
    split at '_', '-', '.'):  T1: t1, t1w, mprage   T2: t2, t2w   FLAIR: flair   PD: pd, dp
    one lesion mask: consensus*, mask*, *lesion*, seg* or label* (voxels > 0 are lesion;
    a brain mask, e.g. Brain_Mask.nii.gz, is ignored; Consensus is preferred to mask1 to mask2)
  MSSEG 2016:    PATH/Patient_01/FLAIR_preprocessed.nii.gz, T1_preprocessed.nii.gz,
                 T2_preprocessed.nii.gz, DP_preprocessed.nii.gz, Consensus.nii.gz
                 (the download's own Patient_XX/Raw_Data/, Preprocessed_Data/ and Masks/ sub-folders
                 work as they are: one folder per patient directly under PATH)
  ISBI 2015:     PATH/training01_01/training01_01_flair_pp.nii, ..._mprage_pp.nii, ..._t2_pp.nii,
                 ..._pd_pp.nii, training01_01_mask1.nii   (pass group_pattern=r"(training\\d+)_\\d+"
                 so that a patient's time points stay in one split)
Where several files match one channel, those named *preprocessed* or *_pp* are used."""

_CHANNEL_WORDS = {"T1": {"t1", "t1w", "mprage"}, "T2": {"t2", "t2w"}, "FLAIR": {"flair"}, "PD": {"pd", "dp", "pdw"}}
_CHANNEL_ORDER = ("T1", "T2", "FLAIR", "PD")
_DEFAULT_N = {"train": 32, "val": 8, "test": 16}


@dataclass
class VolumeData:
    """Train/val/test volumes of one task, with what is needed to evaluate them.

    Attributes:
        train, val, test: ``(images, targets)``: images float32 ``(N, C, D, H, W)``;
            targets uint8 ``(N, D, H, W)`` (segmentation) or int64 ``(N,)`` (classification).
        spacing: voxel size ``(dz, dy, dx)`` in mm (None for MedMNIST, whose volumes
            were resized to a cube without a physical size).
        channel_names: names of the ``C`` channels.
        class_names: names of the mask values (segmentation) or of the labels.
        task: ``"segmentation"`` or ``"classification"``.
        source: the ``DATA`` value it came from.
        lesion_tables: phantoms with lesions: ``{split: DataFrame}``, one row per
            lesion (see :class:`medlab.data.phantoms.BrainVolumes`); else None.
        meta: ``{split: {name: per-case array}}`` (phantoms: ``tissue``, ``age``,
            ``severity``, ...; folders: ``case``, ``original_spacing``).
        notes: where the spacing and the labels come from, in a sentence or two.
    """

    train: tuple
    val: tuple
    test: tuple
    spacing: tuple | None
    channel_names: list
    class_names: list
    task: str
    source: str
    lesion_tables: dict | None = None
    meta: dict = field(default_factory=dict)
    notes: str = ""

    def split(self, name: str) -> tuple:
        """``(images, targets)`` of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ParameterError(f"split must be 'train', 'val' or 'test', not {name!r}")
        return getattr(self, name)

    @property
    def num_classes(self) -> int:
        """Output channels of the network (background included for segmentation)."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Image channels ``C``."""
        return int(self.train[0].shape[1])

    @property
    def shape(self) -> tuple:
        """Spatial shape ``(D, H, W)`` of every volume."""
        return tuple(int(s) for s in self.train[0].shape[2:])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(getattr(self, k)[0])}" for k in ("train", "val", "test"))
        spacing = None if self.spacing is None else tuple(round(float(s), 2) for s in self.spacing)
        return (f"VolumeData(source={self.source!r}, task={self.task!r}, {sizes}, shape={self.shape}, "
                f"channels={self.channel_names}, classes={self.class_names}, spacing={spacing})")


# ----------------------------------------------------------------------------------------------
# resampling


def resample_volume(array, spacing, new_spacing, order: int = 1, antialias: bool = True) -> np.ndarray:
    """Resample a volume (the last three axes) from ``spacing`` to ``new_spacing`` mm.

    The output grid has ``round(n * spacing / new_spacing)`` voxels per axis,
    exactly ``new_spacing`` apart and centred on the input's extent. ``order``
    1 is trilinear (images), 0 nearest neighbour (masks and label maps keep
    their values). With ``antialias`` and ``order > 0``, an axis that gets
    coarser is first smoothed with a Gaussian of ``(factor - 1) / 2`` input
    voxels (as ``skimage.transform.resize`` does), so that fine detail does not
    alias. Leading axes (channels) are resampled alike.
    """
    from scipy import ndimage as ndi

    arr = np.asarray(array)
    if arr.ndim < 3:
        raise ParameterError(f"resample_volume needs a volume (..., D, H, W), got shape {arr.shape}")
    try:
        old = np.array([float(s) for s in spacing], dtype=np.float64)
        new = np.array([float(s) for s in (new_spacing if np.ndim(new_spacing) else (new_spacing,) * 3)])
    except (TypeError, ValueError):
        raise ParameterError(f"spacing and new_spacing must be numbers in mm, not {spacing!r}, "
                             f"{new_spacing!r}") from None
    if old.shape != (3,) or new.shape != (3,) or (old <= 0).any() or (new <= 0).any() or not np.isfinite(old).all():
        raise ParameterError(f"spacing and new_spacing need three positive values (mm), got {spacing!r}, "
                             f"{new_spacing!r}")
    if order not in (0, 1, 3):
        raise ParameterError("order must be 0 (nearest, masks), 1 (trilinear) or 3 (cubic)")
    shape_in = np.array(arr.shape[-3:])
    shape_out = np.maximum(1, np.round(shape_in * old / new).astype(int))
    step = new / old                                         # input voxels per output voxel
    offset = (shape_in - 1) / 2.0 - step * (shape_out - 1) / 2.0
    lead = arr.shape[:-3]
    flat = arr.reshape((-1,) + tuple(shape_in))
    out_dtype = arr.dtype if order == 0 else np.float32
    out = np.empty((flat.shape[0],) + tuple(shape_out), out_dtype)
    for i, vol in enumerate(flat):
        v = vol if order == 0 else vol.astype(np.float32)
        if order > 0 and antialias and (step > 1).any():
            v = ndi.gaussian_filter(v, np.maximum(step - 1.0, 0.0) / 2.0, mode="nearest")
        out[i] = ndi.affine_transform(v, step, offset=offset, output_shape=tuple(shape_out), order=order,
                                      mode="nearest", prefilter=order > 1)
    return out.reshape(lead + tuple(shape_out))


def crop_or_pad(array, shape, centre=None, value=0) -> np.ndarray:
    """Cut or pad the last three axes of ``array`` to ``shape``, keeping ``centre`` (voxels) in the middle.

    ``centre`` defaults to the middle of the array; padding uses ``value``.
    """
    arr = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    src = arr.shape[-3:]
    centre = np.array(src) / 2.0 if centre is None else np.asarray(centre, dtype=np.float64)
    out = np.full(arr.shape[:-3] + shape, value, dtype=arr.dtype)
    s_sl, d_sl = [], []
    for n_in, n_out, c in zip(src, shape, centre):
        start = int(round(c - n_out / 2.0))              # input index landing on output index 0
        a, b = max(start, 0), min(start + n_out, n_in)
        if b <= a:
            s_sl.append(slice(0, 0))
            d_sl.append(slice(0, 0))
            continue
        s_sl.append(slice(a, b))
        d_sl.append(slice(a - start, b - start))
    out[(Ellipsis,) + tuple(d_sl)] = arr[(Ellipsis,) + tuple(s_sl)]
    return out


# ----------------------------------------------------------------------------------------------
# entry point


def load_volumes(source: str = "phantom", task: str | None = "lesion", *, n_train: int | None = None,
                 n_val: int | None = None, n_test: int | None = None, seed: int = 0,
                 voxel_mm: float | None = None, size=None, root=None, channels=None, device=None,
                 **knobs) -> VolumeData:
    """Train, validation and test volumes of a 3D task.

    Args:
        source: ``phantom``, ``folder:PATH`` or ``medmnist:<flag>`` (a notebook's ``DATA``).
        task: phantoms: ``lesion`` (white-matter lesion masks, segmentation),
            ``tissue`` (grey matter / white matter / CSF, segmentation) or
            ``atrophy`` (control vs atrophy, classification); ``folder:``: ``lesion``;
            ``medmnist:``: the flag's labels (classification; pass ``task=None``
            or ``"classification"``).
        n_train, n_val, n_test: phantoms: cases per split (default 32, 8, 16);
            real data: at most this many cases per split (None = all).
        seed: phantoms: the data (each split from its own stream); folders: the
            split of cases; MedMNIST: the subset kept when ``n_*`` is smaller.
        voxel_mm: phantoms and folders: the (in-plane) voxel size in mm (default 4);
            not used by MedMNIST (its volumes have no physical size).
        size: phantoms and folders: the output shape ``(D, H, W)`` or one int
            (default: phantoms their field of view, folders the largest
            foreground box over the cases); MedMNIST: 28 (default) or 64.
        root: MedMNIST: the folder holding the ``.npz`` files (default
            ``MEDLAB_DATA_DIR/medmnist``).
        channels: phantoms: the contrasts to render (default T1, T2, FLAIR; atrophy T1);
            folders: the channels to read (default: those every case has).
        device: phantoms: where the volumes are rendered (``None``/``"cpu"``, ``"cuda"``, ``"auto"``; see
            :func:`medlab.data.phantoms.brain_mri`); the splits come back as NumPy arrays either way. Real
            sources are read from files on the CPU and ignore it.
        **knobs: phantoms: generator knobs (``lesion_load``, ``lesion_radius_mm``,
            ``lesion_contrast``, ``anisotropy``, ``noise``, ``effect``, ...);
            folders: ``group_pattern`` (regex whose first group names the patient,
            so that a patient's time points stay in one split), ``fractions``
            (train/val/test shares, default (0.7, 0.1, 0.2)).

    Raises:
        ParameterError: unknown source or task, bad knob.
        DataNotFoundError: the folder or the files are not there (the message gives the layout).
        ImageReadError: a file cannot be read, or a case's files disagree in shape.
    """
    name = str(source).strip()
    head, _, arg = name.partition(":")
    head = head.strip().lower()
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for k, v in counts.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise ParameterError(f"n_{k} must be a non-negative integer or None, not {v!r}")
    if head == "phantom":
        return _load_phantom(task, counts, seed, voxel_mm, size, channels, knobs, device)
    if head == "folder":
        if not arg.strip():
            raise ParameterError("give the folder, as in DATA = 'folder:/path/to/cases'")
        return _load_folder(Path(arg.strip()).expanduser(), task, counts, seed, voxel_mm, size, channels, knobs)
    if head == "medmnist":
        if knobs:
            raise ParameterError(f"medmnist volumes take no knobs {sorted(knobs)}; options: size, root, n_*, seed")
        return _load_medmnist(arg.strip().lower(), task, counts, seed, size, root, voxel_mm, channels)
    raise ParameterError(f"unknown volume source {source!r}; use 'phantom', 'folder:PATH' or 'medmnist:<flag>' "
                         "(3D flags: organmnist3d, nodulemnist3d, adrenalmnist3d, fracturemnist3d, "
                         "vesselmnist3d, synapsemnist3d)")


def _load_phantom(task, counts, seed, voxel_mm, size, channels, knobs, device=None):
    from .dataset import split_seeds
    from .phantoms.brain import ATROPHY_CLASSES, TISSUE_NAMES, brain_atrophy, brain_mri

    task = "lesion" if task is None else str(task)
    if "as_tensors" in knobs:
        raise ParameterError("load_volumes returns NumPy splits: leave as_tensors out (call medlab.data.phantoms."
                             "brain_mri or brain_atrophy with as_tensors=True for tensors on the device)")
    if task not in VOLUME_TASKS:
        raise ParameterError(f"phantom task must be one of {VOLUME_TASKS}, not {task!r}")
    seeds = split_seeds(seed)
    voxel_mm = 4.0 if voxel_mm is None else voxel_mm
    out, meta, tables = {}, {}, {}
    spacing = names = None
    for split in ("train", "val", "test"):
        n = _DEFAULT_N[split] if counts[split] is None else int(counts[split])
        try:
            if task == "atrophy":
                if channels not in (None, "T1", ("T1",), ["T1"]):
                    raise ParameterError("atrophy phantoms have one channel, T1; leave channels unset")
                b = brain_atrophy(n, seed=seeds[split], voxel_mm=voxel_mm, shape=size, device=device, **knobs)
                out[split] = (b.images, b.labels)
                meta[split] = {"age": b.age, "severity": b.severity, "tissue": b.tissue, **b.attrs}
            else:
                extra = {} if channels is None else {"channels": channels}
                b = brain_mri(n, seed=seeds[split], voxel_mm=voxel_mm, shape=size, device=device, **extra, **knobs)
                target = b.lesions if task == "lesion" else b.tissue
                out[split] = (b.images, target)
                meta[split] = {"tissue": b.tissue, **b.attrs}
                tables[split] = b.lesion_table
        except TypeError as exc:
            raise ParameterError(f"phantom task {task!r}: {exc}") from None
        spacing, names = b.spacing, b.channel_names
    if task == "atrophy":
        classes, kind = list(ATROPHY_CLASSES), "classification"
        notes = ("Brain atrophy phantoms (MNI152 template, nilearn): enlarged ventricles and thinner cortex with "
                 "disease and with age; labels exact.")
    else:
        classes = ["background", "lesion"] if task == "lesion" else list(TISSUE_NAMES)
        kind = "segmentation"
        notes = ("Brain MRI phantoms (MNI152 tissue masks, nilearn) with white-matter lesions; masks exact, "
                 f"spacing {tuple(round(s, 2) for s in spacing)} mm by construction.")
    return VolumeData(out["train"], out["val"], out["test"], tuple(spacing), list(names), classes, kind,
                      f"phantom:{task}", tables if task != "atrophy" else None, meta, notes)


# ----------------------------------------------------------------------------------------------
# folders of NIfTI cases


def _words(path: Path) -> list[str]:
    name = path.name.lower()
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return [w for w in re.split(r"[^a-z0-9]+", name) if w]


def _mask_rank(words: list[str]) -> int | None:
    """Preference of a file as the lesion mask (lower is better), None if it is not one."""
    if "brain" in words or "brainmask" in words:
        return None
    if "consensus" in words:
        return 0
    if any(w in ("mask", "mask1") or "lesion" in w for w in words):
        return 1
    if any(w.startswith("mask") for w in words):
        return 2
    if any(w in ("seg", "segmentation", "label", "labels") for w in words):
        return 3
    return None


def _channel_of(words: list[str]) -> str | None:
    for ch in _CHANNEL_ORDER:
        if any(w in _CHANNEL_WORDS[ch] for w in words):
            return ch
    return None


def _layout_error(path: Path, what: str) -> DataNotFoundError:
    return DataNotFoundError(f"folder:{path}", f"{what}.\nExpected layout:\n{FOLDER_LAYOUT}")


def find_cases(path, channels=None) -> list[dict]:
    """The cases under ``path`` (layout :data:`FOLDER_LAYOUT`): ``{"case", "files": {channel: Path}, "mask"}``.

    Raises DataNotFoundError naming the folder, the case and the expected layout
    when a case lacks a channel or a mask, or when a channel is ambiguous.
    """
    path = Path(path)
    if not path.is_dir():
        raise _layout_error(path, f"{path} is not a folder")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    cases = []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz")))
        if not files:
            continue
        masks = [(r, p) for p in files if (r := _mask_rank(_words(p))) is not None]
        if not masks:
            raise _layout_error(path, f"case {folder.name!r} has no lesion mask among "
                                      f"{[p.name for p in files]}")
        best = min(r for r, _ in masks)
        chosen = [p for r, p in masks if r == best]
        if len(chosen) > 1:
            raise _layout_error(path, f"case {folder.name!r} has several lesion masks {[p.name for p in chosen]}; "
                                      "keep one (or name it Consensus.nii.gz)")
        by_channel: dict[str, list[Path]] = {}
        for p in files:
            words = _words(p)
            if _mask_rank(words) is not None or "brain" in words:
                continue
            ch = _channel_of(words)
            if ch is not None:
                by_channel.setdefault(ch, []).append(p)
        picked = {}
        for ch, ps in by_channel.items():
            if len(ps) > 1:
                pre = [p for p in ps if {"preprocessed", "pp"} & set(_words(p))]
                ps = pre if pre else ps
            if len(ps) > 1:
                raise _layout_error(path, f"case {folder.name!r} has several {ch} images {[p.name for p in ps]}; "
                                          "keep one per channel")
            picked[ch] = ps[0]
        if not picked:
            raise _layout_error(path, f"case {folder.name!r} has no image named after a channel (t1, t2, flair, pd) "
                                      f"among {[p.name for p in files]}")
        cases.append({"case": folder.name, "files": picked, "mask": chosen[0]})
    if not cases:
        raise _layout_error(path, f"no case folders with NIfTI files under {path}"
                            + (" (the NIfTI files lie directly in it; put each case in its own sub-folder)"
                               if any(path.glob("*.nii*")) else ""))
    wanted = _pick_channels(path, cases, channels)
    for c in cases:
        missing = [ch for ch in wanted if ch not in c["files"]]
        if missing:
            raise _layout_error(path, f"case {c['case']!r} has no {', '.join(missing)} image (it has "
                                      f"{sorted(c['files'])}); pass channels=... to use fewer channels")
        c["files"] = {ch: c["files"][ch] for ch in wanted}
    return cases


def _pick_channels(path, cases, channels):
    if channels is None:
        common = [ch for ch in _CHANNEL_ORDER if all(ch in c["files"] for c in cases)]
        if not common:
            raise _layout_error(path, "no channel (t1, t2, flair, pd) is present in every case")
        return common
    chosen = [channels] if isinstance(channels, str) else list(channels)
    norm = []
    for ch in chosen:
        key = str(ch).upper()
        if key not in _CHANNEL_WORDS:
            raise ParameterError(f"unknown channel {ch!r}; channels: {', '.join(_CHANNEL_ORDER)}")
        norm.append(key)
    return norm


def _read_volume(p: Path):
    from .sources._base import read_any

    img = read_any(p)
    arr = np.asarray(img.array)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ImageReadError(p, f"expected a 3D volume, got an array of shape {arr.shape}")
    if img.spacing is None or len(img.spacing) != 3:
        raise ImageReadError(p, "the header gives no usable voxel size (pixdim); it is needed to resample")
    return arr, tuple(float(s) for s in img.spacing)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Divide by the 99th percentile of the foreground (voxels > 0, or all); negatives set to 0."""
    x = np.clip(x.astype(np.float32), 0.0, None)
    fg = x[x > 0]
    if fg.size == 0:
        return x
    scale = float(np.percentile(fg, 99.0))
    return x / scale if scale > 0 else x


def _split_groups(groups: list[str], fractions, seed: int) -> dict[str, str]:
    """Assign each group to train/val/test: ranked by a stable hash, at least one group per split."""
    from .sources._base import stable_hash

    uniq = sorted(set(groups))
    if len(uniq) < 3:
        raise ParameterError(f"{len(uniq)} case group(s): a train/val/test split needs at least 3")
    try:
        a, b, c = (float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ParameterError(f"fractions must be three shares (train, val, test), not {fractions!r}") from None
    if min(a, b, c) <= 0:
        raise ParameterError(f"fractions must be positive, not {fractions!r}")
    total = a + b + c
    order = sorted(uniq, key=lambda g: stable_hash(g, seed))
    n_val = max(1, int(round(len(uniq) * b / total)))
    n_test = max(1, int(round(len(uniq) * c / total)))
    n_val = min(n_val, len(uniq) - 2)
    n_test = min(n_test, len(uniq) - 1 - n_val)
    part = {}
    for i, g in enumerate(order):
        part[g] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return part


def _load_folder(path, task, counts, seed, voxel_mm, size, channels, knobs):
    task = "lesion" if task is None else str(task)
    if task != "lesion":
        raise ParameterError(f"folder:{path} holds lesion masks: use task='lesion', not {task!r}")
    group_pattern = knobs.pop("group_pattern", None)
    fractions = knobs.pop("fractions", (0.7, 0.1, 0.2))
    if knobs:
        raise ParameterError(f"folder: unknown option(s) {sorted(knobs)}; options: group_pattern, fractions, "
                             "voxel_mm, size, channels, n_train, n_val, n_test, seed")
    voxel_mm = 4.0 if voxel_mm is None else float(voxel_mm)
    if not 0.2 <= voxel_mm <= 20:
        raise ParameterError(f"voxel_mm={voxel_mm} is out of range [0.2, 20] mm")
    cases = find_cases(path, channels)
    names = [c["case"] for c in cases]
    if group_pattern:
        groups = []
        for n in names:
            m = re.search(group_pattern, n)
            if m is None or not m.groups():
                raise ParameterError(f"group_pattern {group_pattern!r} has no group matching case {n!r}")
            groups.append(m.group(1))
    else:
        groups = names
    part = _split_groups(groups, fractions, seed)
    chosen = {s: [i for i, g in enumerate(groups) if part[g] == s] for s in ("train", "val", "test")}
    for s, idx in chosen.items():
        if counts[s] is not None:
            chosen[s] = idx[: int(counts[s])]
    keep = sorted(i for idx in chosen.values() for i in idx)
    new = (voxel_mm,) * 3
    vols, masks, boxes, spacings = {}, {}, {}, {}
    for i in keep:
        c = cases[i]
        arrays = []
        for ch, p in c["files"].items():
            arr, sp = _read_volume(p)
            arrays.append((p, arr, sp))
        m, msp = _read_volume(c["mask"])
        for p, arr, sp in arrays:
            if arr.shape != m.shape:
                raise ImageReadError(p, f"shape {arr.shape} differs from the mask {c['mask'].name} {m.shape} "
                                        f"in case {c['case']!r}; the files of a case must share one voxel grid")
        img = np.stack([resample_volume(_normalise(arr), sp, new, order=1) for _, arr, sp in arrays])
        mask = resample_volume((m > 0).astype(np.uint8), msp, new, order=0)
        fg = np.argwhere(img.sum(0) > 0)
        lo, hi = (fg.min(0), fg.max(0) + 1) if len(fg) else (np.zeros(3, int), np.array(img.shape[1:]))
        vols[i], masks[i], boxes[i], spacings[i] = img, mask, (lo, hi), arrays[0][2]
    if size is None:
        shape = tuple(int(v) for v in np.max([hi - lo for lo, hi in boxes.values()], axis=0))
    else:
        shape = (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)
        if len(shape) != 3 or min(shape) < 1:
            raise ParameterError(f"size must be an int or three ints, not {size!r}")
    out, meta = {}, {}
    for s, idx in chosen.items():
        ch = len(cases[0]["files"])
        images = np.zeros((len(idx), ch) + shape, np.float32)
        targets = np.zeros((len(idx),) + shape, np.uint8)
        for j, i in enumerate(idx):
            lo, hi = boxes[i]
            centre = (lo + hi) / 2.0
            images[j] = crop_or_pad(vols[i], shape, centre)
            targets[j] = crop_or_pad(masks[i], shape, centre)
        out[s] = (images, targets)
        meta[s] = {"case": np.array([names[i] for i in idx], dtype=object),
                   "original_spacing": np.array([spacings[i] for i in idx]).reshape(len(idx), 3)}
    notes = (f"NIfTI cases from {path}, resampled to {voxel_mm} mm isotropic (trilinear images, nearest masks), "
             "each channel divided by its 99th foreground percentile, cropped or padded around the foreground.")
    return VolumeData(out["train"], out["val"], out["test"], new, list(cases[0]["files"]), ["background", "lesion"],
                      "segmentation", f"folder:{path}", None, meta, notes)


# ----------------------------------------------------------------------------------------------
# MedMNIST 3D


def _load_medmnist(flag, task, counts, seed, size, root, voxel_mm, channels):
    from .sources import medmnist as mm

    if not flag:
        raise ParameterError("name the MedMNIST 3D flag, as in 'medmnist:nodulemnist3d'")
    if flag not in mm.FLAGS_3D:
        hint = " (a 2D flag: use medlab.data.load_source)" if flag in mm.FLAGS else ""
        raise ParameterError(f"{flag!r} is not a MedMNIST 3D flag{hint}; 3D flags: {', '.join(mm.FLAGS_3D)}")
    if task not in (None, "classification", "label", "atrophy"):
        raise ParameterError(f"medmnist:{flag} has labels only (classification); task={task!r} needs masks — "
                             "use DATA='phantom' or 'folder:PATH' for it")
    size = 28 if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ParameterError(f"MedMNIST 3D size must be 28 or 64, not {size!r}")
    mm.check_flag(flag, int(size))
    if channels not in (None, 1):
        raise ParameterError(f"{flag} volumes have one channel; leave channels unset")
    from .sources._base import limit_items

    path = mm.find_file(flag, int(size), root)
    out = {}
    for split in ("train", "val", "test"):
        images, labels = mm.read_npz(path, split)
        if images.ndim != 4 or images.shape[1:] != (int(size),) * 3:
            raise ImageReadError(path, f"{split}_images has shape {images.shape}; expected (N, {size}, {size}, "
                                       f"{size}) for a 3D flag at size {size}")
        y = labels[:, 0].astype(np.int64)
        keep = np.arange(len(y))
        if counts[split] == 0:
            keep = keep[:0]
        elif counts[split] is not None and counts[split] < len(y):
            keep = np.array(limit_items(list(range(len(y))), y, int(counts[split]), seed), dtype=int)
        x = images[keep].astype(np.float32)[:, None]
        x /= 255.0
        out[split] = (x, y[keep])
    names, _, kind = mm.FLAGS_3D[flag][:3]
    notes = (f"MedMNIST 3D {flag} ({kind}), {size} voxels a side, official splits"
             + (f", at most {counts} cases per split" if any(v is not None for v in counts.values()) else "")
             + "; the volumes were resized to a cube, so they carry no physical voxel size"
             + (f" (voxel_mm={voxel_mm} is not used)" if voxel_mm is not None else "")
             + (f"; task {task!r} reads the flag's own labels" if task == "atrophy" else "") + ".")
    return VolumeData(out["train"], out["val"], out["test"], None, ["image"],
                      list(names), "classification", f"medmnist:{flag}", None, {}, notes)
