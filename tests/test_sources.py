"""Real data sources: small fake copies in the exact on-disk layouts, loaded through load_source."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medlab.data.sources import (SOURCE_NAMES, list_sources, load_source, source_info, source_status,
                                 verify_source)
from medlab.errors import DataNotFoundError, ImageReadError, ParameterError


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _noise(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# MedMNIST


@pytest.fixture
def medmnist_root(tmp_path):
    rng = np.random.default_rng(0)
    for size, name in ((28, "pneumoniamnist.npz"), (64, "pneumoniamnist_64.npz")):
        arrays = {}
        for split, n in (("train", 12), ("val", 4), ("test", 6)):
            arrays[f"{split}_images"] = _noise(rng, (n, size, size))
            arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
        np.savez(tmp_path / name, **arrays)
    np.savez(tmp_path / "chestmnist.npz", train_images=_noise(rng, (5, 28, 28)),
             train_labels=rng.integers(0, 2, (5, 14)).astype(np.uint8),
             val_images=_noise(rng, (2, 28, 28)), val_labels=np.zeros((2, 14), np.uint8),
             test_images=_noise(rng, (2, 28, 28)), test_labels=np.zeros((2, 14), np.uint8))
    return tmp_path


def test_medmnist_loads_both_file_names_and_splits(medmnist_root):
    ds = load_source("medmnist:pneumoniamnist", root=medmnist_root, split="train")
    assert len(ds) == 12 and ds.class_names == ["normal", "pneumonia"]
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and y.shape == ()
    big = load_source("medmnist:pneumoniamnist", root=medmnist_root, split="test", size=64, channels=3)
    assert len(big) == 6 and big[0][0].shape == (3, 64, 64)
    assert len(load_source("medmnist:pneumoniamnist", root=medmnist_root, split="all")) == 22
    raw = np.load(medmnist_root / "pneumoniamnist.npz")["val_images"]
    assert np.allclose(load_source("medmnist:pneumoniamnist", root=medmnist_root, split="val")[1][0][0].numpy(),
                       raw[1] / 255.0)
    multi = load_source("medmnist:chestmnist", root=medmnist_root)
    assert multi[0][1].shape == (14,) and len(multi.class_names) == 14
    small = load_source("medmnist:pneumoniamnist", root=medmnist_root, limit=4)
    assert len(small) == 4 and sorted(small.labels.tolist()) == [0, 0, 1, 1]


def test_medmnist_errors(medmnist_root, tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_source("medmnist:pneumoniamnist", root=medmnist_root, size=128)
    assert "pneumoniamnist_128.npz" in str(err.value) and "zenodo" in str(err.value).lower()
    with pytest.raises(ParameterError):
        load_source("medmnist:nosuchmnist", root=medmnist_root)
    with pytest.raises(ParameterError):
        load_source("medmnist:pneumoniamnist", root=medmnist_root, size=100)
    np.savez(medmnist_root / "breastmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ImageReadError) as err:
        load_source("medmnist:breastmnist", root=medmnist_root)
    assert "train_labels" in str(err.value)
    (medmnist_root / "octmnist.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ImageReadError):
        load_source("medmnist:octmnist", root=medmnist_root)
    np.savez(medmnist_root / "retinamnist.npz", train_images=np.zeros((3, 28, 28), np.uint8),
             train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(ImageReadError, match="3 train images but 2 labels"):
        load_source("medmnist:retinamnist", root=medmnist_root)


# ---------------------------------------------------------------------------------------------
# COVID-19 Radiography Database

RADIOGRAPHY = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.fixture
def radiography_root(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "COVID-19_Radiography_Dataset"
    for cls in RADIOGRAPHY:
        for i in range(1, 11):
            _png(base / cls / "images" / f"{cls}-{i}.png", _noise(rng, (40, 40)))
            mask = np.zeros((32, 32), np.uint8)  # like the real data: masks smaller than images
            mask[8:24, 4:14] = 255
            _png(base / cls / "masks" / f"{cls}-{i}.png", mask)
    (base / "README.md.txt").write_text("metadata")
    return tmp_path


def test_covid_radiography_layout_labels_masks_and_splits(radiography_root):
    parts = {s: load_source("covid-radiography", root=radiography_root, split=s) for s in ("train", "val", "test")}
    names = [set(str(it[0]) for it in parts[s].items) for s in parts]
    assert sum(len(n) for n in names) == 40 and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    ds = load_source("covid-radiography", root=radiography_root, split="all", size=24)
    assert ds.class_names == RADIOGRAPHY and len(ds) == 40
    x, y = ds[0]
    assert x.shape == (1, 24, 24) and int(y) in range(4)
    seg = load_source("covid-radiography", root=radiography_root, split="all", target="mask")
    img, mask = seg[3]
    assert img.shape == (1, 40, 40) and mask.shape == (40, 40)  # mask scaled to its image
    assert set(torch.unique(mask).tolist()) == {0, 1}
    assert seg.class_names == ["background", "lung"]
    two = load_source("covid-radiography", root=radiography_root, split="all", classes=["Normal", "COVID"])
    assert two.class_names == ["Normal", "COVID"] and len(two) == 20
    assert str(two.items[0][0]).find("Normal") >= 0 and two.labels[0] == 0


def test_covid_radiography_wrong_layout_and_bad_files(radiography_root, tmp_path):
    base = radiography_root / "COVID-19_Radiography_Dataset"
    (base / "Viral Pneumonia").rename(base / "Viral_Pneumonia")  # a common mistake
    with pytest.raises(DataNotFoundError) as err:
        load_source("covid-radiography", root=radiography_root)
    assert "Viral Pneumonia" in str(err.value) and "kaggle datasets download" in str(err.value)
    (base / "Viral_Pneumonia").rename(base / "Viral Pneumonia")
    (base / "COVID" / "images" / "COVID-1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = load_source("covid-radiography", root=radiography_root, split="all", classes=["COVID"] + RADIOGRAPHY[1:])
    idx = [i for i, it in enumerate(ds.items) if it[0].name == "COVID-1.png"][0]
    with pytest.raises(ImageReadError):
        ds[idx]
    _png(base / "Normal" / "masks" / "Normal-2.png", np.zeros((32, 20), np.uint8))  # not even square
    seg = load_source("covid-radiography", root=radiography_root, split="all", target="mask")
    idx = [i for i, it in enumerate(seg.items) if it[0].name == "Normal-2.png"][0]
    with pytest.raises(ImageReadError, match="differs from image shape"):
        seg[idx]
    with pytest.raises(ParameterError):
        load_source("covid-radiography", root=radiography_root, classes=["Flu"])
    with pytest.raises(DataNotFoundError):
        load_source("covid-radiography", root=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# COVID-QU-Ex


@pytest.fixture
def quex_root(tmp_path):
    rng = np.random.default_rng(2)
    for subset in ("Lung Segmentation Data", "Infection Segmentation Data"):
        base = tmp_path / subset / subset  # the Kaggle zip doubles the folder name
        for part in ("Train", "Val", "Test"):
            for cls in ("COVID-19", "Non-COVID", "Normal"):
                for i in range(3):
                    name = f"{cls.lower()}_{part}_{i}.png"
                    _png(base / part / cls / "images" / name, _noise(rng, (32, 32)))
                    lung = np.zeros((32, 32), np.uint8)
                    lung[4:28, 3:13] = 255
                    lung[4:28, 19:29] = 255
                    _png(base / part / cls / "lung masks" / name, lung)
                    if subset.startswith("Infection") and cls == "COVID-19":
                        inf = np.zeros((32, 32), np.uint8)
                        inf[20:26, 5:10] = 255
                        _png(base / part / cls / "infection masks" / name, inf)
    return tmp_path


def test_covid_qu_ex_subsets_and_official_splits(quex_root):
    ds = load_source("covid-qu-ex", root=quex_root, split="val")
    assert len(ds) == 9 and ds.class_names == ["COVID-19", "Non-COVID", "Normal"]
    assert all("_Val_" in it[0].name for it in ds.items)
    lung = load_source("covid-qu-ex", root=quex_root, split="test", target="mask", size=16)
    x, m = lung[0]
    assert x.shape == (1, 16, 16) and m.shape == (16, 16) and m.sum() > 0
    inf = load_source("covid-qu-ex", root=quex_root, split="train", subset="infection", target="mask")
    sums = [int(inf[i][1].sum()) for i in range(len(inf))]
    labels = inf.labels
    assert all(s > 0 for s, l in zip(sums, labels) if l == 0)  # COVID-19 images have infection
    assert all(s == 0 for s, l in zip(sums, labels) if l != 0)  # others: empty masks
    assert inf.class_names == ["background", "infection"]
    assert len(load_source("covid-qu-ex", root=quex_root, split="all", subset="infection")) == 27
    with pytest.raises(ParameterError):
        load_source("covid-qu-ex", root=quex_root, target="infection")  # needs subset="infection"


def test_covid_qu_ex_missing_and_mismatched_masks(quex_root):
    base = quex_root / "Lung Segmentation Data" / "Lung Segmentation Data" / "Train" / "Normal"
    (base / "lung masks" / "normal_Train_0.png").unlink()
    with pytest.raises(DataNotFoundError, match="normal_Train_0.png"):
        load_source("covid-qu-ex", root=quex_root, target="mask")
    _png(base / "lung masks" / "normal_Train_0.png", np.zeros((16, 16), np.uint8))
    ds = load_source("covid-qu-ex", root=quex_root, target="mask")
    idx = [i for i, it in enumerate(ds.items) if it[0].name == "normal_Train_0.png"][0]
    with pytest.raises(ImageReadError, match="differs from image shape"):
        ds[idx]
    import shutil

    shutil.rmtree(quex_root / "Lung Segmentation Data" / "Lung Segmentation Data" / "Val")
    with pytest.raises(DataNotFoundError, match="Train, Val and Test"):
        load_source("covid-qu-ex", root=quex_root)


# ---------------------------------------------------------------------------------------------
# MedSeg and MosMedData (NIfTI)


def _nifti(path, array):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([0.8, 0.8, 5.0, 1.0])), str(path))


@pytest.fixture
def medseg_root(tmp_path):
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1000, 200, (24, 24, 30)).astype(np.float32)  # (x, y, slices) as in the real files
    mask = np.zeros((24, 24, 30), np.float32)
    mask[5:10, 5:10, ::3] = 1
    mask[12:15, 12:15, 1::3] = 2
    mask[18:20, 2:6, 2::5] = 3
    _nifti(tmp_path / "tr_im.nii.gz", hu)
    _nifti(tmp_path / "tr_mask.nii.gz", mask)
    return tmp_path


def test_medseg_slices_labels_and_block_split(medseg_root):
    parts = {s: load_source("medseg-covid-ct", root=medseg_root, split=s) for s in ("train", "val", "test")}
    slices = [set(parts[s].meta["slice"].tolist()) for s in parts]
    assert sum(len(s) for s in slices) == 30 and not (slices[0] & slices[1] or slices[0] & slices[2])
    ds = load_source("medseg-covid-ct", root=medseg_root, split="all")
    assert ds.class_names == ["background", "ground-glass", "consolidation", "pleural effusion"]
    x, m = ds[0]
    assert x.shape == (1, 24, 24) and m.shape == (24, 24) and 0 <= x.min() and x.max() <= 1
    labels = set(torch.unique(ds.targets).tolist())
    assert labels == {0, 1, 2, 3}
    hu = load_source("medseg-covid-ct", root=medseg_root, split="all", window=None, size=12)
    assert hu.images.shape == (30, 1, 12, 12) and hu.images.min() < -500  # still HU
    lab = load_source("medseg-covid-ct", root=medseg_root, split="all", target="label")
    assert lab.class_names == ["no lesion", "lesion"] and 0 < lab.labels.sum() < 30


def test_medseg_errors(medseg_root, tmp_path):
    _nifti(medseg_root / "tr_mask.nii.gz", np.zeros((24, 24, 29), np.float32))
    with pytest.raises(ImageReadError, match="differs from image shape"):
        load_source("medseg-covid-ct", root=medseg_root)
    bad = np.zeros((24, 24, 30), np.float32)
    bad[0, 0, 0] = 7
    _nifti(medseg_root / "tr_mask.nii.gz", bad)
    with pytest.raises(ImageReadError, match="outside 0-3"):
        load_source("medseg-covid-ct", root=medseg_root)
    (medseg_root / "tr_im.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    with pytest.raises(ImageReadError):
        load_source("medseg-covid-ct", root=medseg_root)
    with pytest.raises(DataNotFoundError) as err:
        load_source("medseg-covid-ct", root=tmp_path / "empty")
    assert "tr_im.nii.gz" in str(err.value) and "medicalsegmentation.com" in str(err.value)


@pytest.fixture
def mosmed_root(tmp_path):
    rng = np.random.default_rng(4)
    base = tmp_path / "COVID19_1110"
    k = 1
    for band in range(5):
        for _ in range(3):
            _nifti(base / "studies" / f"CT-{band}" / f"study_{k:04d}.nii.gz",
                   rng.uniform(-1000, 100, (16, 16, 6)).astype(np.float32))
            if band == 1:
                m = np.zeros((16, 16, 6), np.float32)
                m[4:8, 4:8, 2:4] = 1
                _nifti(base / "masks" / f"study_{k:04d}_mask.nii.gz", m)
            k += 1
    return tmp_path


def test_mosmed_studies_bands_and_masks(mosmed_root):
    ds = load_source("mosmeddata", root=mosmed_root, split="all", depth=4, size=8)
    assert len(ds) == 15 and ds.class_names == ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]
    assert sorted(ds.labels.tolist()) == sorted([b for b in range(5) for _ in range(3)])
    x, y = ds[0]
    assert x.shape == (1, 4, 8, 8) and y.shape == ()
    seg = load_source("mosmeddata", root=mosmed_root, split="all", target="mask", depth=6, size=16)
    assert len(seg) == 3 and all(it[1] == 1 for it in seg.items)
    x, m = seg[0]
    assert m.shape == (6, 16, 16) and m.sum() > 0
    parts = [load_source("mosmeddata", root=mosmed_root, split=s) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 15
    assert "15 studies, 3 masks" in source_status("mosmeddata", root=mosmed_root)


def test_mosmed_wrong_layout(tmp_path):
    (tmp_path / "CT-0").mkdir()
    with pytest.raises(DataNotFoundError, match="studies"):
        load_source("mosmeddata", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# POCUS


@pytest.fixture
def pocus_root(tmp_path):
    rng = np.random.default_rng(5)
    data = tmp_path / "covid19_ultrasound" / "data"
    for probe in ("convex", "linear"):
        for prefix in ("Cov", "Pne", "Reg", "Vir"):
            for i in range(3):
                _png(data / "pocus_images" / probe / f"{prefix}_img_{probe}_{i}.png", _noise(rng, (30, 40)))
            frames = [Image.fromarray(_noise(rng, (30, 40))) for _ in range(7)]
            path = data / "pocus_videos" / probe / f"{prefix}-clip-{probe}.gif"
            path.parent.mkdir(parents=True, exist_ok=True)
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    (data / "pocus_images" / "convex" / "notes.txt").write_text("not an image")
    (data / "pocus_images" / "convex" / "xyz_unknown.png").write_bytes(b"")  # no class prefix: skipped
    return tmp_path


def test_pocus_class_from_prefix_frames_from_videos(pocus_root):
    ds = load_source("pocus", root=pocus_root, split="all", size=32, frames_per_video=3)
    assert ds.class_names == ["COVID-19", "bacterial pneumonia", "healthy", "viral pneumonia"]
    assert len(ds) == 2 * 4 * 3 + 2 * 4 * 3  # images + 3 frames from each of 8 videos
    for path, label, frame, probe in ds.items:
        assert label == ["cov", "pne", "reg", "vir"].index(path.name[:3].lower())
    x, y = ds[len(ds) - 1]
    assert x.shape == (1, 32, 32) and 0 <= x.min() and x.max() <= 1
    videos = load_source("pocus", root=pocus_root, split="all", kind="videos", probe="linear", frames_per_video=7)
    assert len(videos) == 4 * 7 and {it[2] for it in videos.items} == set(range(7))
    # frames of one video never span two splits
    split_of = {}
    for s in ("train", "val", "test"):
        for it in load_source("pocus", root=pocus_root, split=s).items:
            assert split_of.setdefault(it[0], s) == s


def test_pocus_unreadable_video_is_skipped_with_a_warning(pocus_root):
    bad = pocus_root / "covid19_ultrasound" / "data" / "pocus_videos" / "convex" / "Cov-broken.gif"
    bad.write_bytes(b"GIF89a garbage")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = load_source("pocus", root=pocus_root, split="all", kind="videos")
    assert len(ds) > 0
    with pytest.raises(ParameterError):
        load_source("pocus", root=pocus_root, probe="phased")
    with pytest.raises(DataNotFoundError, match="pocus_videos"):
        load_source("pocus", root=pocus_root / "covid19_ultrasound" / "nothing")


# ---------------------------------------------------------------------------------------------
# folder:<path>, phantom, mni152, registry


def test_folder_source_with_and_without_split_folders(tmp_path):
    rng = np.random.default_rng(6)
    for cls in ("benign", "malignant"):
        for i in range(10):
            _png(tmp_path / "flat" / cls / f"{i}.png", _noise(rng, (20, 20)))
            _png(tmp_path / "split" / ("train" if i < 6 else "val" if i < 8 else "test") / cls / f"{i}.jpg",
                 _noise(rng, (20, 20)))
    parts = [load_source(f"folder:{tmp_path / 'flat'}", split=s) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 20 and parts[0].class_names == ["benign", "malignant"]
    given = load_source(f"folder:{tmp_path / 'split'}", split="val", size=16, channels=3)
    assert len(given) == 4 and given[0][0].shape == (3, 16, 16)
    _png(tmp_path / "one" / "only" / "a.png", _noise(rng, (8, 8)))
    with pytest.raises(DataNotFoundError, match="two class"):
        load_source(f"folder:{tmp_path / 'one'}")
    with pytest.raises(DataNotFoundError):
        load_source(f"folder:{tmp_path / 'missing'}")


def test_phantom_source_matches_make_splits():
    from medlab.data.dataset import make_splits

    ds = load_source("phantom", split="val", n=10, size=32, seed=3)
    ref = make_splits("chest_xray", 4, 10, 4, size=32, seed=3)["val"]
    assert torch.equal(ds.images, ref.images) and ds.class_names == ref.class_names
    ct = load_source("phantom:ct_slice", split="test", n=6, size=32, target="mask")
    assert ct[0][1].shape == (32, 32) and ct.class_names[2] == "consolidation"
    assert len(load_source("phantom:nodule", split="all", n=4, size=32)) == 12
    with pytest.raises(ParameterError):
        load_source("phantom:mri")
    with pytest.raises(ParameterError):
        load_source("phantom", bogus_knob=1)


def test_mni152_loads_for_real_with_tissue_masks():
    pytest.importorskip("nilearn")
    ds = load_source("mni152", split="all")
    assert ds.class_names == ["background", "grey matter", "white matter", "CSF and other brain"]
    x, m = ds[len(ds) // 2]
    assert x.shape[0] == 1 and x.shape[1:] == m.shape and x.shape[1] == x.shape[2]
    t1, masks = ds.images[:, 0].numpy(), ds.targets.numpy()
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    # T1 contrast: white matter brighter than grey matter, both brighter than background
    assert t1[masks == 2].mean() > t1[masks == 1].mean() > t1[masks == 0].mean()
    parts = [load_source("mni152", split=s, size=64) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(ds) and parts[0][0][0].shape == (1, 64, 64)
    assert verify_source("mni152")[0]


def test_registry_lists_every_source_with_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    rows = {r["name"]: r for r in list_sources()}
    assert set(rows) == set(SOURCE_NAMES)
    for name, r in rows.items():
        for key in ("origin", "licence", "citation", "layout", "how_to_get", "status"):
            assert r[key], (name, key)
    assert rows["phantom"]["status"] == "built in"
    assert rows["covid-radiography"]["status"].startswith("missing")
    assert str(tmp_path) in rows["medseg-covid-ct"]["status"]
    with pytest.raises(DataNotFoundError) as err:
        load_source("medseg-covid-ct")
    assert str(tmp_path / "medseg-covid-ct") in str(err.value)  # where to put the files
    with pytest.raises(ParameterError):
        load_source("imagenet")
    with pytest.raises(ParameterError):
        load_source("phantom", split="training")
    with pytest.raises(ParameterError):
        source_info("nothing")
    assert "Chowdhury" in source_info("covid-radiography").citation
