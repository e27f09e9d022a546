"""POCUS frames read into arrays with their source file (medlab.data.sources.pocus.PocusDataset.arrays)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medlab.data.sources import load_source
from medlab.errors import DataNotFoundError, ParameterError


def _pocus(tmp_path, prefixes=("Cov", "Pne", "Reg", "Vir")):
    rng = np.random.default_rng(0)
    images = tmp_path / "covid19_ultrasound" / "data" / "pocus_images" / "convex"
    videos = tmp_path / "covid19_ultrasound" / "data" / "pocus_videos" / "convex"
    images.mkdir(parents=True)
    videos.mkdir(parents=True)
    for prefix in prefixes:
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(images / f"{prefix}_{i}.png")
        frames = [Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)) for _ in range(6)]
        frames[0].save(videos / f"{prefix}-clip.gif", save_all=True, append_images=frames[1:], duration=50)
    return tmp_path


def test_arrays_keep_the_first_classes_and_group_frames_by_file(tmp_path):
    ds = load_source("pocus", root=_pocus(tmp_path), split="all", size=16, frames_per_video=3)
    images, labels, groups = ds.arrays(classes=3)
    # 4 images and 3 frames of one video per class, viral pneumonia (class 3) dropped
    assert images.shape == (21, 1, 16, 16) and images.dtype == np.float32
    assert sorted(set(labels.tolist())) == [0, 1, 2] and len(labels) == len(groups) == 21
    assert len(set(groups.tolist())) == 15  # 12 images + 3 videos
    for file in set(groups.tolist()):
        assert len(set(labels[groups == file].tolist())) == 1  # one label per file
    assert len(ds.arrays()[1]) == 28  # classes=None keeps all four


def test_arrays_say_when_no_frame_is_left(tmp_path):
    ds = load_source("pocus", root=_pocus(tmp_path, prefixes=("Vir",)), split="all", size=16)
    with pytest.raises(ParameterError, match="no frames"):
        ds.arrays(classes=3)


def test_pocus_missing_is_a_clear_not_found_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="covid19_ultrasound"):
        load_source("pocus", root=tmp_path / "nowhere", split="train")
