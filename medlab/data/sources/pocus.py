"""POCUS: the lung ultrasound videos and images of the ``covid19_ultrasound`` repository (Born et al.)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DataNotFoundError, ImageReadError, ParameterError
from ..download import source_dir
from ._base import FileDataset, SourceInfo, assign_split, check_split, limit_items, read_gray, resize_array

POCUS_CLASSES = ["COVID-19", "bacterial pneumonia", "healthy", "viral pneumonia"]
PREFIXES = {"cov": 0, "pne": 1, "reg": 2, "vir": 3}
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PROBES = ("convex", "linear")

POCUS_INFO = SourceInfo(
    name="pocus",
    title="POCUS / covid19_ultrasound: lung ultrasound videos and images (Born et al.)",
    modality="lung ultrasound, convex and linear probes; videos (mp4, avi, mov, gif) and images",
    task="classification COVID-19 / bacterial pneumonia / healthy / viral pneumonia, from the "
         "file-name prefix Cov / Pne(u) / Reg / Vir",
    origin="https://github.com/jannisborn/covid19_ultrasound",
    licence="per file: the repository's data README names each video's source and licence "
            "(several are non-commercial); check it before redistributing",
    citation="Born et al. Accelerating detection of lung pathologies with explainable ultrasound image "
             "analysis. Appl Sci 11:672, 2021.",
    layout="[covid19_ultrasound/]data/pocus_videos/{convex,linear}/<Cov|Pne|Reg|Vir>*.{mp4,avi,mov,gif}\n"
           "[covid19_ultrasound/]data/pocus_images/{convex,linear}/<Cov|Pne|Reg|Vir>*.{png,jpg}",
    how_to_get="git clone https://github.com/jannisborn/covid19_ultrasound into the root folder "
               "(or `medlab data fetch pocus`, which downloads the repository's zip archive; the "
               "repository's own scripts fetch the few videos it may not redistribute).",
    folder="pocus",
    downloadable=True,
    options={"probe": "convex, linear or all", "kind": "images, videos or all", "frames_per_video":
             "frames sampled evenly from each video (default 5)", "size": "resize (default 128)",
             "channels": "1 or 3", "limit": "at most this many samples", "seed": "split seed"},
)
ARCHIVE_URL = "https://github.com/jannisborn/covid19_ultrasound/archive/refs/heads/master.zip"


def label_from_name(name: str) -> int | None:
    """Class index from a file name's prefix (``Cov``, ``Pne``/``Pneu``, ``Reg``, ``Vir``), else None."""
    m = re.match(r"([A-Za-z]{3})", name)
    return PREFIXES.get(m.group(1).lower()) if m else None


def pocus_root(root=None) -> Path:
    """The repository's ``data`` folder under ``root`` (clone or zip layout accepted)."""
    base = Path(root) if root is not None else source_dir(POCUS_INFO.folder)
    for cand in (base / "covid19_ultrasound-master" / "data", base / "covid19_ultrasound" / "data",
                 base / "data", base):
        if (cand / "pocus_videos").is_dir() or (cand / "pocus_images").is_dir():
            return cand
    import shlex

    from ._base import require

    command = "medlab data fetch pocus" + (f" --root {shlex.quote(str(root))}" if root is not None else "")
    require(POCUS_INFO, base, "no data/pocus_videos or data/pocus_images folder", command=command)
    raise AssertionError  # pragma: no cover


def _probe_dirs(folder: Path, probe: str) -> list[Path]:
    if not folder.is_dir():
        return []
    subs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    wanted = PROBES if probe == "all" else (probe,)
    return [subs[w] for w in wanted if w in subs]


def video_frame_count(path: Path) -> int:
    """Number of frames of a video file (GIF through Pillow, others through imageio's ffmpeg plugin)."""
    if path.suffix.lower() == ".gif":
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                return int(getattr(im, "n_frames", 1))
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageReadError(path, f"not a readable GIF ({exc})") from None
    return len(_video_reader(path))


def _video_reader(path: Path):
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the plugin imageio needs for mp4/avi/mov)
    except ImportError:
        raise ImageReadError(path, "reading mp4/avi/mov videos needs the 'imageio-ffmpeg' package "
                             "(pip install imageio-ffmpeg); GIF videos and images work without it") from None
    try:
        return iio.imread(path)
    except Exception as exc:  # imageio raises many types
        raise ImageReadError(path, f"not a readable video ({type(exc).__name__}: {exc})") from None


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video as a grey float32 array in [0, 1]."""
    if path.suffix.lower() == ".gif":
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                im.seek(index)
                arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (OSError, ValueError, EOFError, SyntaxError) as exc:
            raise ImageReadError(path, f"cannot read frame {index} ({exc})") from None
        return arr
    frames = _video_reader(path)
    frame = np.asarray(frames[index], dtype=np.float32)
    if frame.ndim == 3:
        frame = frame[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return frame / 255.0


class PocusDataset(FileDataset):
    """POCUS images and frames sampled from videos; items ``(path, label, frame or None, probe)``."""

    def __init__(self, items, split, size, channels, transform, joint_transform):
        self.items, self.split, self.size, self.channels = items, split, size, channels
        self.transform, self.joint_transform = transform, joint_transform
        self.class_names = list(POCUS_CLASSES)
        self.source = "pocus"

    @property
    def labels(self) -> np.ndarray:
        """Class of every item (no file is read)."""
        return np.array([it[1] for it in self.items], dtype=np.int64)

    def arrays(self, classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every frame read into arrays: ``(images (N, C, S, S) float32, labels (N,), groups (N,))``.

        Args:
            classes: keep only the frames whose label is below this number
                (``3`` keeps COVID-19, bacterial pneumonia and healthy, and drops
                viral pneumonia, which has too few videos); None keeps all.

        ``groups`` holds the source file of each frame: the frames of one video
        share it, so predictions can be gathered back into clips by it.

        Raises:
            ParameterError: no frame is left.
        """
        keep = [i for i, item in enumerate(self.items) if classes is None or item[1] < classes]
        if not keep:
            raise ParameterError(f"pocus split {self.split!r} has no frames of the first {classes} classes "
                                 f"({', '.join(self.class_names[:classes or None])})")
        images = np.stack([np.asarray(self[i][0], dtype=np.float32) for i in keep])
        labels = np.array([self.items[i][1] for i in keep], dtype=np.int64)
        groups = np.array([str(self.items[i][0]) for i in keep])
        return images, labels, groups

    def _load(self, item):
        path, label, frame, _ = item
        img = read_gray(path) if frame is None else read_frame(path, frame)
        img = resize_array(img, self.size)
        return np.repeat(img[None], self.channels, 0), label


def load_pocus(root=None, split="train", *, probe="all", kind="all", frames_per_video=5, size=128,
               channels=1, limit=None, seed=0, transform=None, joint_transform=None) -> PocusDataset:
    """POCUS lung ultrasound as a frame-level classification dataset.

    Each image is one sample; each video gives ``frames_per_video`` frames
    evenly spaced over its length. The split (70/10/20) is by file, so the
    frames of one video never land in two splits. Files whose name does not
    start with a known prefix are skipped, and so (with a warning) are videos
    that cannot be decoded here (mp4/avi/mov need ``imageio-ffmpeg``).
    """
    split = check_split(split)
    if probe not in (*PROBES, "all"):
        raise ParameterError(f"probe must be convex, linear or all, not {probe!r}")
    if kind not in ("images", "videos", "all"):
        raise ParameterError(f"kind must be images, videos or all, not {kind!r}")
    if channels not in (1, 3):
        raise ParameterError("channels must be 1 or 3")
    folder = pocus_root(root)
    items, keys, skipped = [], [], []
    if kind in ("images", "all"):
        for d in _probe_dirs(folder / "pocus_images", probe):
            for p in sorted(d.iterdir()):
                label = label_from_name(p.name)
                if p.suffix.lower() in IMAGE_SUFFIXES and label is not None:
                    items.append((p, label, None, d.name.lower()))
                    keys.append(p.name)
    if kind in ("videos", "all"):
        for d in _probe_dirs(folder / "pocus_videos", probe):
            for p in sorted(d.iterdir()):
                label = label_from_name(p.name)
                if p.suffix.lower() not in VIDEO_SUFFIXES or label is None:
                    continue
                if not assign_split([p.name], split, seed=seed)[0]:
                    continue  # count frames only of the videos in this split
                try:
                    n = video_frame_count(p)
                except ImageReadError as exc:
                    skipped.append((p.name, exc.reason))
                    continue
                picks = np.unique(np.linspace(0, n - 1, max(1, frames_per_video)).round().astype(int))
                for f in picks:
                    items.append((p, label, int(f), d.name.lower()))
                    keys.append(p.name)
    if skipped:
        import warnings

        warnings.warn(f"pocus: skipped {len(skipped)} unreadable video(s), e.g. {skipped[0][0]}: {skipped[0][1]}",
                      stacklevel=2)
    if not items:
        raise DataNotFoundError(POCUS_INFO.name, f"no images or videos with a Cov/Pne/Reg/Vir prefix under {folder} "
                                f"for probe={probe!r}, kind={kind!r}.\nExpected layout:\n{POCUS_INFO.layout}\n"
                                f"How to get it: {POCUS_INFO.how_to_get}")
    keep = assign_split(keys, split, seed=seed)
    items = [it for it, k in zip(items, keep) if k]
    items = limit_items(items, [it[1] for it in items], limit, seed)
    return PocusDataset(items, split, size, channels, transform, joint_transform)


load_pocus.__doc__ = (load_pocus.__doc__ or "") + "\n\n    Source:\n\n    " + POCUS_INFO.describe().replace("\n", "\n    ")
