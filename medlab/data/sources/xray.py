"""Chest X-ray sources: COVID-19 Radiography Database, COVID-QU-Ex, and any class-per-folder tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataNotFoundError, ImageReadError, ParameterError
from ..download import source_dir
from ._base import (FileDataset, SourceInfo, assign_split, check_split, limit_items, read_gray, require,
                    resize_array)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


class ImageFileDataset(FileDataset):
    """Images (and optional masks) read from files on access.

    ``items`` are ``(image_path, label, mask_path_or_None)``. ``target`` is
    ``"label"`` or ``"mask"``. Masks are binarised (stored value > 0 -> 1).
    """

    def __init__(self, items, class_names, split, target="label", size=None, channels=1,
                 transform=None, joint_transform=None, mask_names=("background", "lung"),
                 rescale_square_masks=False, source=""):
        if target not in ("label", "mask"):
            raise ParameterError(f"target must be 'label' or 'mask', not {target!r}")
        if channels not in (1, 3):
            raise ParameterError("channels must be 1 or 3")
        self.items = list(items)
        self.split, self.target, self.size, self.channels = split, target, size, channels
        self.transform, self.joint_transform = transform, joint_transform
        self.label_names = list(class_names)
        self.class_names = list(class_names) if target == "label" else list(mask_names)
        self.rescale_square_masks = rescale_square_masks
        self.source = source

    @property
    def labels(self) -> np.ndarray:
        """Image-level labels of all items (without reading any file)."""
        return np.array([it[1] for it in self.items], dtype=np.int64)

    def _load(self, item):
        path, label, mask_path = item
        image = read_gray(path)
        if self.target == "label":
            return np.repeat(resize_array(image, self.size)[None], self.channels, 0), label
        if mask_path is None:  # documented: images of classes without masks have empty masks
            mask = np.zeros(image.shape, np.int64)
        else:
            mask = read_gray(mask_path, mask=True)
            if mask.shape != image.shape:
                square = mask.shape[0] == mask.shape[1] and image.shape[0] == image.shape[1]
                if self.rescale_square_masks and square:
                    mask = resize_array(mask, image.shape[0], mask=True)
                else:
                    raise ImageReadError(mask_path, f"mask shape {mask.shape} differs from image shape "
                                         f"{image.shape} of {path}")
        mask = (mask > 0).astype(np.int64)
        image, mask = resize_array(image, self.size), resize_array(mask, self.size, mask=True)
        return np.repeat(image[None], self.channels, 0), mask


# ---------------------------------------------------------------------------------------------
# COVID-19 Radiography Database

RADIOGRAPHY_CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
RADIOGRAPHY_INFO = SourceInfo(
    name="covid-radiography",
    title="COVID-19 Radiography Database (Chowdhury et al.; Rahman et al.)",
    modality="chest X-ray (PA), 299x299 PNG, with lung masks",
    task="classification COVID / Lung_Opacity / Normal / Viral Pneumonia; lung segmentation",
    origin="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
    licence="as stated on the Kaggle page (research and educational use; the contributing data sets' "
            "own licences apply)",
    citation="Chowdhury et al. Can AI help in screening viral and COVID-19 pneumonia? IEEE Access 8, 2020; "
             "Rahman et al. Exploring the effect of image enhancement techniques on COVID-19 detection "
             "using chest X-ray images. Comput Biol Med 132, 2021.",
    layout="COVID-19_Radiography_Dataset/\n  COVID/images/COVID-1.png ...      COVID/masks/COVID-1.png ...\n"
           "  Lung_Opacity/images/*.png          Lung_Opacity/masks/*.png\n"
           "  Normal/images/*.png                Normal/masks/*.png\n"
           "  Viral Pneumonia/images/*.png       Viral Pneumonia/masks/*.png   (note the space)",
    how_to_get="kaggle datasets download -d tawsifurrahman/covid19-radiography-database "
               "(needs a Kaggle account and API token), then unzip so that "
               "COVID-19_Radiography_Dataset/ sits in the root folder.",
    folder="covid-radiography",
    options={"classes": "subset of the four folders", "target": "label or mask (lung)",
             "size": "resize to size x size", "channels": "1 or 3", "limit": "at most this many",
             "seed": "split seed (70/10/20 by file name)"},
)


def radiography_root(root=None) -> Path:
    """The ``COVID-19_Radiography_Dataset`` folder under ``root`` (or ``root`` itself)."""
    base = Path(root) if root is not None else source_dir(RADIOGRAPHY_INFO.folder)
    for cand in (base / "COVID-19_Radiography_Dataset", base):
        if all((cand / c).is_dir() for c in RADIOGRAPHY_CLASSES):
            return cand
    if not base.exists():
        require(RADIOGRAPHY_INFO, base, "the folder does not exist")
    found = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    require(RADIOGRAPHY_INFO, base, f"no COVID-19_Radiography_Dataset with the four class folders "
            f"{RADIOGRAPHY_CLASSES} (found: {found[:8]})")
    raise AssertionError  # pragma: no cover


def load_radiography(root=None, split="train", *, classes=None, target="label", size=None, channels=1,
                     limit=None, seed=0, transform=None, joint_transform=None) -> ImageFileDataset:
    """COVID-19 Radiography Database as a dataset; see ``RADIOGRAPHY_INFO`` for the layout.

    Split: 70/10/20 by a stable hash of the file name (the data set has no
    official split and no patient identifiers). The lung masks can come at
    another size than the images (in the Kaggle release the masks are
    256x256, the images 299x299): a mask is resized (nearest neighbour) to
    its image when both are square; any other mismatch raises
    :class:`ImageReadError`.
    """
    split = check_split(split)
    folder = radiography_root(root)
    names = list(RADIOGRAPHY_CLASSES) if classes is None else list(classes)
    bad = [c for c in names if c not in RADIOGRAPHY_CLASSES]
    if bad:
        raise ParameterError(f"unknown classes {bad}; the classes are {RADIOGRAPHY_CLASSES}")
    items = []
    for label, cls in enumerate(names):
        imgs = _images_in(folder / cls / "images")
        if not imgs:
            require(RADIOGRAPHY_INFO, folder, f"no images in {folder / cls / 'images'}")
        for p in imgs:
            m = folder / cls / "masks" / p.name
            items.append((p, label, m if m.is_file() else None))
    if target == "mask":
        missing = [str(it[0]) for it in items if it[2] is None]
        if missing:
            require(RADIOGRAPHY_INFO, folder, f"{len(missing)} image(s) have no mask, e.g. {missing[0]}")
    keep = assign_split([it[0].name for it in items], split, seed=seed)
    items = [it for it, k in zip(items, keep) if k]
    items = limit_items(items, [it[1] for it in items], limit, seed)
    return ImageFileDataset(items, names, split, target, size, channels, transform, joint_transform,
                            mask_names=("background", "lung"), rescale_square_masks=True,
                            source="covid-radiography")


# ---------------------------------------------------------------------------------------------
# COVID-QU-Ex

QUEX_CLASSES = ["COVID-19", "Non-COVID", "Normal"]
QUEX_SUBSETS = {"lung": "Lung Segmentation Data", "infection": "Infection Segmentation Data"}
QUEX_SPLITS = {"train": "Train", "val": "Val", "test": "Test"}
QUEX_INFO = SourceInfo(
    name="covid-qu-ex",
    title="COVID-QU-Ex (Qatar University / Tahir et al.)",
    modality="chest X-ray, 256x256 PNG, with lung masks and COVID-19 infection masks",
    task="classification COVID-19 / Non-COVID / Normal; lung and infection segmentation",
    origin="https://www.kaggle.com/datasets/anasmohammedtahir/covidqu",
    licence="as stated on the Kaggle page (check it before redistributing)",
    citation="Tahir et al. COVID-19 infection localization and severity grading from chest X-ray images. "
             "Comput Biol Med 139:105002, 2021.",
    layout="Lung Segmentation Data/[Lung Segmentation Data/]{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/\n"
           "    images/*.png   lung masks/*.png\n"
           "Infection Segmentation Data/[Infection Segmentation Data/]{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/\n"
           "    images/*.png   lung masks/*.png   infection masks/*.png",
    how_to_get="kaggle datasets download -d anasmohammedtahir/covidqu (needs a Kaggle account), then "
               "unzip into the root folder (the zip's doubled folder names are fine).",
    folder="covid-qu-ex",
    options={"subset": "lung (default, 33,920 images) or infection (5,826 images)",
             "target": "label, mask (the subset's mask), lung or infection",
             "size": "resize", "channels": "1 or 3", "limit": "at most this many"},
)


def quex_root(root=None, subset="lung") -> Path:
    """The folder holding Train/Val/Test of ``subset`` (the doubled folder name accepted)."""
    if subset not in QUEX_SUBSETS:
        raise ParameterError(f"subset must be one of {sorted(QUEX_SUBSETS)}, not {subset!r}")
    base = Path(root) if root is not None else source_dir(QUEX_INFO.folder)
    name = QUEX_SUBSETS[subset]
    for cand in (base / name / name, base / name, base):
        if all((cand / s).is_dir() for s in QUEX_SPLITS.values()):
            return cand
    if not base.exists():
        require(QUEX_INFO, base, "the folder does not exist")
    require(QUEX_INFO, base, f"no '{name}' folder with Train, Val and Test inside")
    raise AssertionError  # pragma: no cover


def load_quex(root=None, split="train", *, subset="lung", target="label", size=None, channels=1,
              limit=None, seed=0, transform=None, joint_transform=None) -> ImageFileDataset:
    """COVID-QU-Ex as a dataset, with its official Train/Val/Test split.

    ``target="mask"`` gives the subset's own mask (lung masks for ``lung``,
    infection masks for ``infection``); ``"lung"`` or ``"infection"`` choose
    explicitly. Images of Non-COVID and Normal classes without an infection
    mask get an empty one (they have no COVID-19 infection by definition).
    """
    split = check_split(split)
    folder = quex_root(root, subset)
    mask_kind = {"mask": subset, "lung": "lung", "infection": "infection", "label": None}.get(target, "?")
    if mask_kind == "?":
        raise ParameterError("target must be label, mask, lung or infection")
    if mask_kind == "infection" and subset != "infection":
        raise ParameterError("infection masks are in the 'infection' subset: pass subset='infection'")
    parts = list(QUEX_SPLITS.values()) if split == "all" else [QUEX_SPLITS[split]]
    items = []
    for part in parts:
        for label, cls in enumerate(QUEX_CLASSES):
            cdir = folder / part / cls
            imgs = _images_in(cdir / "images")
            if not imgs:
                require(QUEX_INFO, folder, f"no images in {cdir / 'images'}")
            for p in imgs:
                m = None
                if mask_kind is not None:
                    m = cdir / f"{mask_kind} masks" / p.name
                    if not m.is_file():
                        if mask_kind == "infection" and cls != "COVID-19":
                            m = None
                        else:
                            raise DataNotFoundError(QUEX_INFO.name, f"mask {m} is missing for image {p}. "
                                                    f"How to get it: {QUEX_INFO.how_to_get}")
                items.append((p, label, m))
    items = limit_items(items, [it[1] for it in items], limit, seed)
    ds = ImageFileDataset(items, QUEX_CLASSES, split, "label" if mask_kind is None else "mask", size, channels,
                          transform, joint_transform, mask_names=("background", mask_kind or "lung"),
                          source="covid-qu-ex")
    return ds


# ---------------------------------------------------------------------------------------------
# folder:<path>

FOLDER_INFO = SourceInfo(
    name="folder:<path>",
    title="Your own images, one sub-folder per class",
    modality="any 2D PNG/JPEG",
    task="classification",
    origin="your disk",
    licence="yours",
    citation="-",
    layout="<path>/<class A>/*.png|jpg ...  <path>/<class B>/...\n"
           "or <path>/{train,val,test}/<class>/*.png for your own split",
    how_to_get="put your images in class folders and pass DATA='folder:/path/to/them'",
    folder="",
    options={"size": "resize", "channels": "1 or 3", "limit": "at most this many", "seed": "split seed"},
)


def load_folder(path, split="train", *, size=None, channels=1, limit=None, seed=0, transform=None,
                joint_transform=None, **_ignored) -> ImageFileDataset:
    """Images in ``<path>/<class>/`` folders (classes sorted by name); files anywhere below a class folder.

    With ``train``/``val``/``test`` sub-folders their split is used, else a
    70/10/20 split by a stable hash of the file path relative to ``path``.
    """
    split = check_split(split)
    base = Path(path).expanduser()
    info = FOLDER_INFO
    if not base.is_dir():
        raise DataNotFoundError(f"folder:{path}", f"{base} is not a folder. Expected layout:\n{info.layout}")
    has_splits = all((base / s).is_dir() for s in ("train", "val", "test"))
    roots = ([base / s for s in ("train", "val", "test")] if split == "all" else [base / split]) if has_splits else [base]
    class_root = base / "train" if has_splits else base
    classes = sorted(p.name for p in class_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataNotFoundError(f"folder:{path}", f"{class_root} needs at least two class sub-folders, found "
                                f"{classes}. Expected layout:\n{info.layout}")
    items = []
    for r in roots:
        for label, cls in enumerate(classes):
            files = sorted(p for p in (r / cls).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            items += [(p, label, None) for p in files]
    if not items:
        raise DataNotFoundError(f"folder:{path}", f"no PNG/JPEG images under {base}. Expected layout:\n{info.layout}")
    if not has_splits:
        keep = assign_split([str(it[0].relative_to(base)) for it in items], split, seed=seed)
        items = [it for it, k in zip(items, keep) if k]
    items = limit_items(items, [it[1] for it in items], limit, seed)
    return ImageFileDataset(items, classes, split, "label", size, channels, transform, joint_transform,
                            source=f"folder:{path}")


for _fn, _info in ((load_radiography, RADIOGRAPHY_INFO), (load_quex, QUEX_INFO), (load_folder, FOLDER_INFO)):
    _fn.__doc__ = (_fn.__doc__ or "") + "\n\n    Source:\n\n    " + _info.describe().replace("\n", "\n    ")
