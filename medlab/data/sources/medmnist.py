"""MedMNIST v2/v3 (MedMNIST+): the 2D and 3D data sets, read straight from their ``.npz`` files.

Each ``<flag>.npz`` (28 a side) or ``<flag>_<size>.npz`` (2D: 64, 128, 224; 3D: 64) holds
``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images``, ``test_labels``: images uint8 ``(N, H, W)`` or ``(N, H, W, 3)``
(3D: ``(N, D, H, W)``), labels ``(N, 1)`` (or ``(N, 14)`` for the multi-label
ChestMNIST). The ``medmnist`` package is not needed. The 3D flags are in
:data:`FLAGS_3D`; the names, classes, licences and MD5 sums of both tables
are those of the official package's ``medmnist/info.py`` (version 3.0.2).
"""
from __future__ import annotations

import shlex
import zipfile
from pathlib import Path

import numpy as np

from ...errors import ImageReadError, ParameterError
from ..dataset import ArrayDataset
from ..download import download, source_dir
from ._base import SourceInfo, check_split, require

SIZES = (28, 64, 128, 224)
ZENODO = "https://zenodo.org/records/10519652/files/{file}?download=1"

#: flag: (class names, channels, task, licence, MD5 of the 28, 64, 128, 224 files)
FLAGS: dict[str, tuple] = {
    "pathmnist": (["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                   "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
                  3, "multi-class", "CC BY 4.0",
                  ("a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
                   "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec")),
    "chestmnist": (["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
                   1, "multi-label", "CC BY 4.0",
                   ("02c8a6516a18b556561a56cbdd36c4a8", "9de6cd0b934ebb5b7426cfba5efbae16",
                    "db107e5590b27930b62dbaf558aebee3", "45bd33e6f06c3e8cdb481c74a89152aa")),
    "dermamnist": (["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                    "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                    "vascular lesions"], 3, "multi-class", "CC BY-NC 4.0",
                   ("0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
                    "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d")),
    "octmnist": (["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
                 1, "multi-class", "CC BY 4.0",
                 ("c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
                  "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3")),
    "pneumoniamnist": (["normal", "pneumonia"], 1, "binary", "CC BY 4.0",
                       ("28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
                        "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1")),
    "retinamnist": (["0", "1", "2", "3", "4"], 3, "ordinal", "CC BY 4.0",
                    ("bd4c0672f1bba3e3a89f0e4e876791e4", "afda852cc34dcda56f86ad2b2457dbcc",
                     "e48e916a24454daf90583d4e6efb1a18", "eae7e3b6f3fcbda4ae613ebdcbe35348")),
    "breastmnist": (["malignant", "normal, benign"], 1, "binary", "CC BY 4.0",
                    ("750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
                     "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b")),
    "bloodmnist": (["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                    "monocyte", "neutrophil", "platelet"], 3, "multi-class", "CC BY 4.0",
                   ("7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
                    "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601")),
    "tissuemnist": (["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                     "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                     "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"], 1, "multi-class",
                    "CC BY 4.0",
                    ("ebe78ee8b05294063de985d821c1c34b", "123ece2eba09d0aa5d698fda57103344",
                     "61b955355d7425a89687b06cca3ce0c2", "b077128c4a949f0a4eb01517f9037b9c")),
    "organamnist": (["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                     "lung-left", "lung-right", "pancreas", "spleen"], 1, "multi-class", "CC BY 4.0",
                    ("68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
                     "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170")),
    "organcmnist": (["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                     "lung-left", "lung-right", "pancreas", "spleen"], 1, "multi-class", "CC BY 4.0",
                    ("b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
                     "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1")),
    "organsmnist": (["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                     "lung-left", "lung-right", "pancreas", "spleen"], 1, "multi-class", "CC BY 4.0",
                    ("9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
                     "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1")),
}

SIZES_3D = (28, 64)

#: 3D flag: (class names, channels, task, licence, MD5 of the 28 and 64 files)
FLAGS_3D: dict[str, tuple] = {
    "organmnist3d": (["liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart",
                      "lung-right", "lung-left", "spleen", "pancreas"], 1, "multi-class", "CC BY 4.0",
                     ("a0c5a1ff56af4f155c46d46fbb45a2fe", "58a2205adf14a9d0a189cb06dc78bf10")),
    "nodulemnist3d": (["benign", "malignant"], 1, "binary", "CC BY 4.0",
                      ("8755a7e9e05a4d9ce80a24c3e7a256f3", "c47c5b7d457bf6332200d2ea6d64ecd8")),
    "adrenalmnist3d": (["normal", "hyperplasia"], 1, "binary", "CC BY 4.0",
                       ("bbd3c5a5576322bc4cdfea780653b1ce", "17721accfe9fb005146a47d33bc54b2f")),
    "fracturemnist3d": (["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"], 1,
                        "multi-class", "CC BY 4.0",
                        ("6aa7b0143a6b42da40027a9dda61302f", "f01d7e6316aedf4210da0da5b7437b42")),
    "vesselmnist3d": (["vessel", "aneurysm"], 1, "binary", "CC BY 4.0",
                      ("b41fd4f7e7e2feedddb201585ecafa1b", "6bb274a8846e1097066dcd64e2c4520f")),
    "synapsemnist3d": (["inhibitory synapse", "excitatory synapse"], 1, "binary", "CC BY 4.0",
                       ("1235b78a3cd6280881dd7850a78eadb6", "43bd14ebf3af9d3dd072446fedc14d5e")),
}

INFO = SourceInfo(
    name="medmnist:<flag>",
    title="MedMNIST v2 / MedMNIST+ (2D): " + ", ".join(FLAGS) + "; (3D, 28 or 64 voxels a side): "
          + ", ".join(FLAGS_3D),
    modality="X-ray, CT, ultrasound, OCT, pathology, dermatoscopy, fundus, microscopy",
    task="classification (official train/val/test splits); ChestMNIST multi-label",
    origin="https://medmnist.com/ (files on Zenodo, record 10519652)",
    licence="CC BY 4.0 (DermaMNIST CC BY-NC 4.0); the source data sets' licences also apply",
    citation="Yang et al. MedMNIST v2. Sci Data 10:41, 2023.",
    layout="<root>/<flag>.npz            (28x28, 3D: 28x28x28)\n"
           "<root>/<flag>_<size>.npz     (size 64, 128 or 224; 3D: 64)\n"
           "  keys: train_images, train_labels, val_images, val_labels, test_images, test_labels",
    how_to_get="`medlab data fetch medmnist:pneumoniamnist` (add --size 64), or download "
               "https://zenodo.org/records/10519652/files/<flag>[_<size>].npz; the `medmnist` "
               "package's ~/.medmnist folder is also searched.",
    folder="medmnist",
    downloadable=True,
    options={"size": "28 (default), 64, 128 or 224 (3D: 28 or 64)",
             "channels": "1 or 3 (default: the data set's own)",
             "limit": "at most this many samples"},
)


def file_name(flag: str, size: int = 28) -> str:
    """``<flag>.npz`` for 28x28, ``<flag>_<size>.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def nearest_size(size: int) -> int:
    """The MedMNIST image size (28, 64, 128 or 224) closest to ``size`` pixels."""
    return min(SIZES, key=lambda s: abs(s - int(size)))


def is_3d(flag: str) -> bool:
    """Whether ``flag`` is one of the 3D data sets (:data:`FLAGS_3D`)."""
    return flag in FLAGS_3D


def flag_info(flag: str) -> tuple:
    """The table row of a 2D or 3D flag: (class names, channels, task, licence, MD5 per size)."""
    return FLAGS_3D[flag] if is_3d(flag) else FLAGS[flag]


def flag_sizes(flag: str) -> tuple:
    """The sizes a flag comes in: :data:`SIZES` (2D) or :data:`SIZES_3D`."""
    return SIZES_3D if is_3d(flag) else SIZES


def check_flag(flag: str, size: int) -> None:
    """Raise ParameterError for an unknown flag or a size that flag does not come in."""
    if flag not in FLAGS and flag not in FLAGS_3D:
        raise ParameterError(f"unknown MedMNIST flag {flag!r}; 2D flags: {', '.join(FLAGS)}; "
                             f"3D flags: {', '.join(FLAGS_3D)}")
    if size not in flag_sizes(flag):
        raise ParameterError(f"MedMNIST size for {flag} must be one of {flag_sizes(flag)}, not {size!r}")


def default_root() -> Path:
    """``MEDLAB_DATA_DIR/medmnist``."""
    return source_dir("medmnist")


def find_file(flag: str, size: int = 28, root=None) -> Path:
    """The ``.npz`` for ``flag`` and ``size``: under ``root``, else the medlab folder, else ``~/.medmnist``."""
    check_flag(flag, size)
    name = file_name(flag, size)
    candidates = [Path(root)] if root is not None else [default_root(), Path.home() / ".medmnist"]
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    command = f"medlab data fetch medmnist:{flag} --size {size}"
    if root is not None:
        command += f" --root {shlex.quote(str(root))}"
    require(_info(flag), candidates[0], f"no file {name}", command=command)
    raise AssertionError  # pragma: no cover


def _info(flag: str) -> SourceInfo:
    import dataclasses

    return dataclasses.replace(INFO, name=f"medmnist:{flag}")


def read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W[, 3])`` uint8 and labels ``(N, k)`` of one split; ImageReadError if broken."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            need = [f"{split}_images", f"{split}_labels"]
            missing = [k for k in need if k not in keys]
            if missing:
                raise ImageReadError(path, f"missing key(s) {missing}; the file has {sorted(keys)} "
                                     "(a MedMNIST .npz has train_/val_/test_ images and labels)")
            images, labels = z[need[0]], z[need[1]]
    except ImageReadError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ImageReadError(path, f"not a readable .npz file ({exc}); delete it and fetch it again") from None
    volume = images.ndim == 4 and images.shape[-1] not in (1, 3)
    if images.ndim not in (3, 4) or (volume and not (images.shape[1] == images.shape[2] == images.shape[3])):
        raise ImageReadError(path, f"{split}_images has shape {images.shape}; expected (N, H, W), (N, H, W, 3) "
                             "or, for a 3D flag, (N, D, H, W) with D = H = W")
    labels = labels.reshape(len(labels), -1) if labels.ndim >= 1 else labels
    if len(labels) != len(images):
        raise ImageReadError(path, f"{len(images)} {split} images but {len(labels)} labels")
    return images, labels


def load(flag: str, root=None, split: str = "train", *, size: int = 28, channels: int | None = None,
         limit: int | None = None, seed: int = 0, transform=None, joint_transform=None) -> ArrayDataset:
    """A MedMNIST split as an :class:`ArrayDataset` (images float32 in [0, 1], ``(C, H, W)``; 3D ``(1, D, H, W)``)."""
    check_flag(flag, size)
    split = check_split(split)
    path = find_file(flag, size, root)
    parts = ("train", "val", "test") if split == "all" else (split,)
    arrays = [read_npz(path, s) for s in parts]
    images = np.concatenate([a for a, _ in arrays])
    labels = np.concatenate([b for _, b in arrays])
    names, native_ch, task = flag_info(flag)[:3]
    x = images.astype(np.float32) / 255.0
    if is_3d(flag):
        if images.ndim != 4:
            raise ImageReadError(path, f"{split}_images has shape {images.shape}; a 3D flag has (N, D, H, W)")
        if channels not in (None, 1):
            raise ParameterError(f"{flag} volumes have one channel; leave channels unset")
        x = x[:, None]
    elif images.ndim == 4 and images.shape[-1] not in (1, 3):
        raise ImageReadError(path, f"{split}_images has shape {images.shape}; a 2D flag has (N, H, W[, 3])")
    else:
        x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)
    want = channels or native_ch
    if want not in (1, 3):
        raise ParameterError("channels must be 1 or 3")
    if x.shape[1] == 3 and want == 1:
        x = (x * np.array([0.299, 0.587, 0.114], np.float32)[None, :, None, None]).sum(1, keepdims=True)
    elif x.shape[1] == 1 and want == 3:
        x = np.repeat(x, 3, axis=1)
    y = labels.astype(np.int64)
    if task != "multi-label":
        y = y[:, 0]
    if limit is not None and limit < len(x):
        from ._base import limit_items

        keep = limit_items(list(range(len(x))), y if y.ndim == 1 else None, limit, seed)
        x, y = x[keep], y[keep]
    ds = ArrayDataset(x, y, names, transform=transform, joint_transform=joint_transform)
    ds.source = f"medmnist:{flag}"
    ds.path = path
    return ds


def status(flag: str | None = None, root=None) -> str:
    """Which flags and sizes are on this machine, in words."""
    folders = [Path(root)] if root is not None else [default_root(), Path.home() / ".medmnist"]
    found = []
    for f in ([flag] if flag else [*FLAGS, *FLAGS_3D]):
        if f not in FLAGS and f not in FLAGS_3D:
            continue
        for s in flag_sizes(f):
            if any((d / file_name(f, s)).is_file() for d in folders):
                found.append(file_name(f, s))
    return ("found " + ", ".join(found)) if found else f"missing (none under {folders[0]})"


def fetch(flag: str, root=None, size: int = 28, progress: bool = True) -> Path:
    """Download ``<flag>[_<size>].npz`` from Zenodo, MD5-checked, into ``root``."""
    check_flag(flag, size)
    md5 = flag_info(flag)[4][flag_sizes(flag).index(size)]
    name = file_name(flag, size)
    dest = (Path(root) if root is not None else default_root()) / name
    return download(ZENODO.format(file=name), dest, checksum=f"md5:{md5}", progress=progress)


def verify(flag: str, root=None, size: int | None = None) -> list[tuple[Path, bool]]:
    """MD5-check the files of ``flag`` present (all sizes, or ``size``)."""
    from ..download import verify_checksum

    folder = Path(root) if root is not None else default_root()
    out = []
    check_flag(flag, size if size else flag_sizes(flag)[0])
    for s in ([size] if size else flag_sizes(flag)):
        p = folder / file_name(flag, s)
        if p.is_file():
            out.append((p, verify_checksum(p, "md5:" + flag_info(flag)[4][flag_sizes(flag).index(s)])))
    return out


load.__doc__ = (load.__doc__ or "") + "\n\n    Source:\n\n    " + INFO.describe().replace("\n", "\n    ")
