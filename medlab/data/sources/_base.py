"""Shared machinery of the real data sources: metadata, file datasets, splits, image reading."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from ...errors import DataNotFoundError, ImageReadError, ParameterError

SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class SourceInfo:
    """What a data source is and how to get it (shown by ``medlab data list``).

    Attributes:
        name: the name ``load_source`` and the notebooks' ``DATA`` parameter use.
        title: the data set's own name.
        modality: imaging modality.
        task: what the targets are.
        origin: where it comes from (URL).
        licence: its licence, as its publishers state it.
        citation: the paper to cite.
        layout: the expected folder layout under its root, as text.
        how_to_get: download instructions (URL or Kaggle command) and where to put the files.
        folder: its default folder under :func:`medlab.data.download.data_dir`.
        downloadable: whether ``medlab data fetch`` can download it (public URL, no login).
    """

    name: str
    title: str
    modality: str
    task: str
    origin: str
    licence: str
    citation: str
    layout: str
    how_to_get: str
    folder: str
    downloadable: bool = False
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        """A multi-line description for ``medlab data list --verbose`` and docstrings."""
        return (f"{self.name}: {self.title}\n  modality: {self.modality}; task: {self.task}\n"
                f"  origin: {self.origin}\n  licence: {self.licence}\n  cite: {self.citation}\n"
                f"  layout:\n" + "\n".join("    " + line for line in self.layout.strip().splitlines())
                + f"\n  get it: {self.how_to_get}")


def require(info: SourceInfo, root: Path, what: str, command: str | None = None) -> None:
    """Raise DataNotFoundError for ``info`` saying what is missing, where, and how to get it.

    ``command``: the exact ``medlab data fetch ...`` line that gets these files (size
    included) for sources with a public download; the message shows it first, as a shell
    command and as the Python call a notebook cell can run. Without it, the source's own
    instructions (a Kaggle command, a web page) come first. In Colab the message adds how to
    keep the data in Google Drive.
    """
    from ..download import in_colab

    lines = [f"Looked in {root}: {what}."]
    if command:
        python = _python_call(command)
        lines.append(f"Get it with one command: {command}\n  (in a notebook cell: !{command}"
                     + (f"  or  {python}" if python else "") + ")")
        lines.append(f"Or by hand: {info.how_to_get}")
    else:
        lines.append(f"How to get it: {info.how_to_get}")
    lines.append(f"Put the files under {root} (or pass root=..., or set MEDLAB_DATA_DIR); the layout there:\n"
                 f"{info.layout.rstrip()}")
    if in_colab():
        lines.append("In Colab this folder is lost when the session ends: run medlab.data.use_google_drive() "
                     "first (in a cell after the set-up cell) to keep the data in your Google Drive.")
    raise DataNotFoundError(info.name, "\n".join(lines))


def _python_call(command: str) -> str | None:
    """``medlab data fetch NAME [--size N] [--root R]`` as ``medlab.data.fetch(...)``."""
    import shlex

    words = shlex.split(command)
    if words[:3] != ["medlab", "data", "fetch"] or len(words) < 4:
        return None
    args, rest = [repr(words[3])], words[4:]
    while len(rest) >= 2 and rest[0] in ("--size", "--root"):
        key, value = rest[0][2:], rest[1]
        args.append(f"{key}={value}" if key == "size" else f"{key}={value!r}")
        rest = rest[2:]
    return f"medlab.data.fetch({', '.join(args)})" if not rest else None


def stable_hash(text: str, seed: int = 0) -> float:
    """A number in [0, 1) from a string, the same on every machine and Python run."""
    h = hashlib.sha1(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def assign_split(keys: Sequence[str], split: str, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> np.ndarray:
    """Boolean selection of the items whose group key falls in ``split``.

    Items are grouped by ``keys`` (patient, video or study, where known) so that a
    group never spans two splits; the assignment depends only on the key and
    ``seed`` (stable when files are added or removed).
    """
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, not {split!r}")
    if split == "all":
        return np.ones(len(keys), bool)
    a, b, _ = fractions
    u = np.array([stable_hash(k, seed) for k in keys])
    part = np.where(u < a, "train", np.where(u < a + b, "val", "test"))
    return part == split


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ParameterError."""
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, not {split!r}")
    return split


def read_any(path: Path):
    """:func:`medlab.io.read_image`, with any stray exception turned into :class:`ImageReadError`."""
    from ...io import read_image

    try:
        return read_image(path)
    except ImageReadError:
        raise
    except Exception as exc:  # e.g. zlib.error from a corrupt .gz while the format is sniffed
        raise ImageReadError(path, f"corrupt or unreadable file ({type(exc).__name__}: {exc})") from None


def read_gray(path: Path, size: int | None = None, mask: bool = False) -> np.ndarray:
    """Read a PNG/JPEG (through :func:`medlab.io.read_image`) as a 2D array.

    Images come back float32 in [0, 1] (8- or 16-bit scaled by their range,
    colour converted to grey), masks as int64 with their stored values.
    Resizes to ``size x size`` when given (bilinear for images, nearest for
    masks). Corrupt or unreadable files raise :class:`ImageReadError`.
    """
    arr = read_any(path).array
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if mask:
            arr = np.rint(arr)
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected a 2D grey or RGB image, got an array of shape {arr.shape}")
    if mask:
        return resize_array(arr.astype(np.int64), size, mask=True)
    top = 65535.0 if arr.dtype == np.uint16 or arr.max(initial=0) > 255 else 255.0
    if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
        top = 1.0
    return resize_array(arr.astype(np.float32) / top, size)


class FileDataset(Dataset):
    """Base of the lazily-read datasets (files read in ``__getitem__``).

    Subclasses fill ``self.items`` (one entry per sample) and implement
    ``_load(item) -> (image float32 (C,H,W) ndarray, target)``.
    """

    class_names: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        import torch

        image, target = self._load(self.items[i])
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        target = torch.as_tensor(np.asarray(target)).long()
        if self.transform is not None:
            image = self.transform(image)
        if self.joint_transform is not None:
            image, target = self.joint_transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, split={self.split!r}, classes={self.class_names})"


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) -> (channels, H, W); channels 1 or 3 (grey repeated)."""
    if channels not in (1, 3):
        raise ParameterError("channels must be 1 or 3")
    return np.repeat(image[None], channels, axis=0)


def limit_items(items: list, labels: Sequence[int] | None, limit: int | None, seed: int) -> list:
    """Keep at most ``limit`` items, a stable random subset that keeps every class represented."""
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        raise ParameterError("limit must be a positive number of samples")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    if labels is not None:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        # round robin over classes in the shuffled order
        per = {c: [i for i in order if labels[i] == c] for c in classes}
        chosen: list[int] = []
        while len(chosen) < limit:
            for c in classes:
                if per[c] and len(chosen) < limit:
                    chosen.append(per[c].pop(0))
        order = np.array(sorted(chosen))
    else:
        order = np.sort(order[:limit])
    return [items[i] for i in order]


def resize_array(arr: np.ndarray, size: int | None, mask: bool = False) -> np.ndarray:
    """Resize a 2D array to ``size x size`` (torch; nearest for masks)."""
    if size is None or arr.shape == (size, size):
        return arr
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    if mask:
        out = F.interpolate(t, size=(size, size), mode="nearest")
        return out[0, 0].numpy().astype(np.int64)
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=size < arr.shape[0])
    return out[0, 0].numpy()


Loader = Callable[..., object]
