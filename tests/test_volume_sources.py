"""Tests of the 3D real-data paths of medlab.data.load_volumes: NIfTI case folders and MedMNIST 3D.

Every file is written by the test in the real layout (MSSEG 2016 / ISBI 2015 names, MedMNIST ``.npz`` keys).
"""
from __future__ import annotations

import hashlib
import re

import nibabel as nib
import numpy as np
import pytest

from medlab.data.sources import medmnist as mm
from medlab.data.volumes import crop_or_pad, load_volumes, resample_volume
from medlab.errors import DataNotFoundError, ImageReadError, ParameterError

ZOOMS = (1.0, 1.25, 3.0)          # x, y, z in mm: thick slices, as in many clinical MS scans
SHAPE_XYZ = (40, 32, 10)


def _phantom_case(rng):
    """A box 'brain' with a bright lesion ball; arrays (x, y, z) as nibabel stores them."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in SHAPE_XYZ], indexing="ij")
    mm_x, mm_y, mm_z = x * ZOOMS[0], y * ZOOMS[1], z * ZOOMS[2]
    brain = (np.abs(mm_x - 20) < 16) & (np.abs(mm_y - 20) < 14) & (np.abs(mm_z - 15) < 12)
    c = rng.uniform([14, 14, 12], [26, 26, 18])
    lesion = ((mm_x - c[0]) ** 2 + (mm_y - c[1]) ** 2 + (mm_z - c[2]) ** 2) < 5.0 ** 2
    lesion &= brain
    t1 = np.where(brain, 500.0, 0.0) - 200.0 * lesion + rng.normal(0, 5, SHAPE_XYZ) * brain
    t2 = np.where(brain, 300.0, 0.0) + 400.0 * lesion
    flair = np.where(brain, 200.0, 0.0) + 500.0 * lesion
    return {"t1": t1, "t2": t2, "flair": flair, "mask": lesion.astype(np.uint8), "brain": brain.astype(np.uint8)}


def _save(path, array):
    affine = np.diag([*ZOOMS, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32 if array.dtype != np.uint8 else np.uint8), affine),
             str(path))


def _msseg_case(folder, rng):
    """MSSEG 2016 names: FLAIR_preprocessed.nii.gz, ..., Consensus.nii.gz and a Brain_Mask to be ignored."""
    folder.mkdir(parents=True)
    arrays = _phantom_case(rng)
    for name in ("T1", "T2", "FLAIR"):
        _save(folder / f"{name}_preprocessed.nii.gz", arrays[name.lower()])
    _save(folder / "Consensus.nii.gz", arrays["mask"])
    _save(folder / "Brain_Mask.nii.gz", arrays["brain"])
    return arrays


def _msseg_original_case(folder, rng):
    """The MSSEG 2016 download as it comes: Raw_Data/, Preprocessed_Data/ and Masks/ with seven raters."""
    arrays = _phantom_case(rng)
    for sub in ("Raw_Data", "Preprocessed_Data", "Masks"):
        (folder / sub).mkdir(parents=True)
    for name in ("T1", "T2", "FLAIR", "DP"):
        key = {"DP": "t2"}.get(name, name.lower())
        _save(folder / "Raw_Data" / f"{name}.nii.gz", arrays[key][:-2])          # another grid: must not be read
        _save(folder / "Preprocessed_Data" / f"{name}_preprocessed.nii.gz", arrays[key])
    _save(folder / "Masks" / "Consensus.nii.gz", arrays["mask"])
    for k in (1, 2):
        _save(folder / "Masks" / f"ManualSegmentation_{k}.nii.gz", np.zeros(SHAPE_XYZ, np.uint8))
    _save(folder / "Masks" / "Brain_Mask.nii.gz", arrays["brain"])
    return arrays


def test_msseg_download_layout_reads_as_is(tmp_path):
    rng = np.random.default_rng(5)
    cases = {f"Center_01_Patient_{i:02d}": _msseg_original_case(tmp_path / f"Center_01_Patient_{i:02d}", rng)
             for i in range(1, 4)}
    d = load_volumes(f"folder:{tmp_path}", voxel_mm=3.0)
    assert d.channel_names == ["T1", "T2", "FLAIR", "PD"]       # DP (MSSEG's name for proton density) is PD
    for s in ("train", "val", "test"):
        for j, name in enumerate(d.meta[s]["case"]):
            truth = cases[name]["mask"].sum() * np.prod(ZOOMS)
            assert abs(d.split(s)[1][j].sum() * 27.0 - truth) < 0.5 * truth   # Consensus, not a rater's empty mask


def _isbi_case(root, name, rng):
    """ISBI 2015 names: training01_01_flair_pp.nii, ..._mprage_pp.nii, ..._mask1.nii and ..._mask2.nii."""
    folder = root / name
    folder.mkdir(parents=True)
    arrays = _phantom_case(rng)
    for word, key in (("flair", "flair"), ("mprage", "t1"), ("t2", "t2")):
        _save(folder / f"{name}_{word}_pp.nii", arrays[key])
    _save(folder / f"{name}_mask1.nii", arrays["mask"])
    _save(folder / f"{name}_mask2.nii", arrays["mask"])
    return arrays


@pytest.fixture(scope="module")
def msseg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msseg")
    rng = np.random.default_rng(0)
    cases = {f"Patient_{i:02d}": _msseg_case(root / f"Patient_{i:02d}", rng) for i in range(1, 7)}
    return root, cases


def test_resample_volume_shapes_values_and_masks():
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 6, 6)).copy()
    same = resample_volume(ramp, (2.0, 1.0, 1.0), (2.0, 1.0, 1.0))
    assert np.allclose(same, ramp)
    up = resample_volume(ramp, (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), antialias=False)
    assert up.shape == (16, 6, 6)
    # output voxel centres lie exactly 2 mm apart, centred on the input's extent: linear in between
    inner = up[2:-2, 0, 0]
    assert np.allclose(np.diff(inner), 0.5)
    down = resample_volume(ramp, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert down.shape == (4, 3, 3) and down.dtype == np.float32
    mask = np.zeros((9, 9, 9), np.uint8)
    mask[3:6, 3:6, 3:6] = 1
    m = resample_volume(mask, (3.0, 1.0, 1.0), (1.5, 1.5, 1.5), order=0)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1} and m.shape == (18, 6, 6)
    assert abs(m.sum() * 1.5 ** 3 - mask.sum() * 3.0) < 0.35 * mask.sum() * 3.0
    two = resample_volume(np.stack([ramp, 2 * ramp]), (1, 1, 1), (2, 2, 2))
    assert two.shape == (2, 4, 3, 3) and np.allclose(two[1], 2 * two[0])
    with pytest.raises(ParameterError, match="spacing"):
        resample_volume(ramp, (1, 1), (2, 2, 2))
    with pytest.raises(ParameterError, match="volume"):
        resample_volume(ramp[0], (1, 1, 1), 2)


def test_crop_or_pad_keeps_the_centre():
    a = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    assert np.array_equal(crop_or_pad(a, (5, 6, 7)), a)
    big = crop_or_pad(a, (7, 8, 9))
    assert big.shape == (7, 8, 9) and big.sum() == a.sum()
    small = crop_or_pad(a, (3, 2, 3), centre=(2.5, 3, 3.5))
    assert np.array_equal(small, a[1:4, 2:4, 2:5])


def test_folder_of_msseg_cases_is_resampled_and_split(msseg_root):
    root, cases = msseg_root
    d = load_volumes(f"folder:{root}", "lesion", voxel_mm=2.0, seed=0)
    assert d.task == "segmentation" and d.class_names == ["background", "lesion"]
    assert d.spacing == (2.0, 2.0, 2.0) and d.channel_names == ["T1", "T2", "FLAIR"]
    names = [n for s in ("train", "val", "test") for n in d.meta[s]["case"]]
    assert sorted(names) == sorted(cases) and all(len(d.meta[s]["case"]) >= 1 for s in ("train", "val", "test"))
    # the original spacing, as read by medlab.io (slice, row, column) = (z, y, x)
    assert np.allclose(d.meta["train"]["original_spacing"][0], (3.0, 1.25, 1.0))
    for split in ("train", "val", "test"):
        x, y = d.split(split)
        assert x.dtype == np.float32 and x.shape[1] == 3 and x.shape[2:] == d.shape
        assert y.dtype == np.uint8 and set(np.unique(y)) <= {0, 1}
        for j, name in enumerate(d.meta[split]["case"]):
            truth = cases[name]["mask"].sum() * np.prod(ZOOMS)            # lesion volume in mm3
            got = y[j].sum() * 8.0
            assert abs(got - truth) < 0.5 * truth, (name, got, truth)
            les = y[j] > 0
            brain = x[j, 0] > 0.2
            assert x[j, 2][les].mean() > 1.5 * x[j, 2][brain & ~les].mean()   # FLAIR: lesions bright
    # the box brain is 32 x 28 x 24 mm: at 2 mm about 12 x 14 x 16 (z, y, x) voxels of foreground
    assert d.shape[0] in range(11, 15) and d.shape[1] in range(13, 17) and d.shape[2] in range(15, 19)
    # same seed, same split; another seed may move cases
    again = load_volumes(f"folder:{root}", voxel_mm=2.0, seed=0, size=(16, 20, 20), channels=("FLAIR",))
    assert list(again.meta["test"]["case"]) == list(d.meta["test"]["case"])
    assert again.shape == (16, 20, 20) and again.channel_names == ["FLAIR"]
    capped = load_volumes(f"folder:{root}", voxel_mm=3.0, n_train=1, n_val=1, n_test=1)
    assert [len(capped.split(s)[0]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_isbi_names_and_patient_groups(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"training{p:02d}_{t:02d}" for p in range(1, 6) for t in (1, 2)]
    for n in names:
        _isbi_case(tmp_path, n, rng)
    d = load_volumes(f"folder:{tmp_path}", voxel_mm=3.0, group_pattern=r"(training\d+)_\d+", seed=2)
    assert d.channel_names == ["T1", "T2", "FLAIR"]        # mprage read as T1; mask1 preferred over mask2
    where = {}
    for s in ("train", "val", "test"):
        for n in d.meta[s]["case"]:
            where.setdefault(re.match(r"(training\d+)_", n).group(1), set()).add(s)
    assert all(len(v) == 1 for v in where.values()) and len(where) == 5    # a patient's time points stay together
    with pytest.raises(ParameterError, match="group_pattern"):
        load_volumes(f"folder:{tmp_path}", group_pattern=r"patient(\d+)")


def test_bad_layouts_say_how_to_fix_them(tmp_path, msseg_root):
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        load_volumes(f"folder:{tmp_path / 'nowhere'}")
    flat = tmp_path / "flat"
    flat.mkdir()
    _save(flat / "FLAIR.nii.gz", np.zeros(SHAPE_XYZ, np.float32))
    with pytest.raises(DataNotFoundError) as err:
        load_volumes(f"folder:{flat}")
    assert "own sub-folder" in str(err.value) and "Expected layout" in str(err.value) and str(flat) in str(err.value)
    nomask = tmp_path / "nomask" / "case1"
    nomask.mkdir(parents=True)
    _save(nomask / "FLAIR.nii.gz", np.zeros(SHAPE_XYZ, np.float32))
    _save(nomask / "Brain_Mask.nii.gz", np.zeros(SHAPE_XYZ, np.uint8))   # a brain mask is not a lesion mask
    with pytest.raises(DataNotFoundError, match="'case1' has no lesion mask") as err:
        load_volumes(f"folder:{nomask.parent}")
    assert "Consensus" in str(err.value)
    root, _ = msseg_root
    with pytest.raises(DataNotFoundError, match=r"no PD image.*channels="):
        load_volumes(f"folder:{root}", channels=("FLAIR", "PD"))
    with pytest.raises(ParameterError, match="channel"):
        load_volumes(f"folder:{root}", channels=("CT",))
    with pytest.raises(ParameterError, match="task='lesion'"):
        load_volumes(f"folder:{root}", "atrophy")
    with pytest.raises(ParameterError, match="unknown option"):
        load_volumes(f"folder:{root}", lesion_load=(1, 2))
    two = tmp_path / "two"
    for i in range(2):
        _msseg_case(two / f"P{i}", np.random.default_rng(i))
    with pytest.raises(ParameterError, match="at least 3"):
        load_volumes(f"folder:{two}")
    grid = tmp_path / "grid" / "P1"
    grid.mkdir(parents=True)
    _save(grid / "FLAIR.nii.gz", np.zeros(SHAPE_XYZ, np.float32))
    _save(grid / "Consensus.nii.gz", np.zeros((8, 8, 8), np.uint8))
    for i in (2, 3):
        _msseg_case(tmp_path / "grid" / f"P{i}", np.random.default_rng(i))
    with pytest.raises(ImageReadError, match="one voxel grid"):
        load_volumes(f"folder:{tmp_path / 'grid'}", channels=("FLAIR",))
    with pytest.raises(ParameterError, match="unknown volume source"):
        load_volumes("mni999")


# ---------------------------------------------------------------------------------------------
# MedMNIST 3D

FLAGS_3D = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d")


def _write_3d(root, flag, size, n=(6, 2, 3)):
    rng = np.random.default_rng(len(flag) + size)
    k = len(mm.FLAGS_3D[flag][0])
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (m, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(m) % k).astype(np.uint8)[:, None]
    np.savez(root / mm.file_name(flag, size), **arrays)
    return arrays


def test_md5_table_has_all_six_3d_flags_at_28_and_64():
    assert tuple(mm.FLAGS_3D) == FLAGS_3D and mm.SIZES_3D == (28, 64)
    sums = set()
    for flag in FLAGS_3D:
        names, channels, task, licence, md5 = mm.FLAGS_3D[flag]
        assert len(md5) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", h) for h in md5)
        assert channels == 1 and licence == "CC BY 4.0" and task in ("binary", "multi-class")
        sums.update(md5)
    assert len(sums) == 12
    assert len(mm.FLAGS_3D["organmnist3d"][0]) == 11
    assert mm.FLAGS_3D["fracturemnist3d"][0][2] == "displaced rib fracture"
    assert mm.FLAGS_3D["nodulemnist3d"][4][0] == "8755a7e9e05a4d9ce80a24c3e7a256f3"      # medmnist 3.0.2 info.py


def test_medmnist_3d_loads_from_npz_files(tmp_path):
    raw = _write_3d(tmp_path, "organmnist3d", 28)
    _write_3d(tmp_path, "nodulemnist3d", 64)
    d = load_volumes("medmnist:organmnist3d", task=None, root=tmp_path)
    assert d.task == "classification" and d.spacing is None and d.source == "medmnist:organmnist3d"
    x, y = d.train
    assert x.shape == (6, 1, 28, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.allclose(x[:, 0], raw["train_images"] / 255.0) and np.array_equal(y, raw["train_labels"][:, 0])
    assert d.class_names[0] == "liver" and d.num_classes == 11 and len(d.test[0]) == 3
    big = load_volumes("medmnist:nodulemnist3d", "classification", root=tmp_path, size=64, n_train=4, n_val=0)
    assert big.train[0].shape == (4, 1, 64, 64, 64) and sorted(big.train[1].tolist()) == [0, 0, 1, 1]
    assert len(big.val[0]) == 0 and big.class_names == ["benign", "malignant"]
    # the torch-Dataset path knows the 3D flags too
    from medlab.data import load_source

    ds = load_source("medmnist:organmnist3d", root=tmp_path, split="val")
    assert tuple(ds[0][0].shape) == (1, 28, 28, 28)


def test_medmnist_3d_errors_and_fetch_table(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=r"medlab data fetch medmnist:vesselmnist3d --size 64"):
        load_volumes("medmnist:vesselmnist3d", None, root=tmp_path, size=64)
    with pytest.raises(ParameterError, match="28, 64"):
        load_volumes("medmnist:vesselmnist3d", None, root=tmp_path, size=128)
    with pytest.raises(ParameterError, match="needs masks"):
        load_volumes("medmnist:vesselmnist3d", "lesion", root=tmp_path)
    with pytest.raises(ParameterError, match="load_source"):
        load_volumes("medmnist:pneumoniamnist", None, root=tmp_path)
    np.savez(tmp_path / "synapsemnist3d.npz", train_images=np.zeros((2, 28, 28), np.uint8),
             train_labels=np.zeros((2, 1), np.uint8), val_images=np.zeros((1, 28, 28), np.uint8),
             val_labels=np.zeros((1, 1), np.uint8), test_images=np.zeros((1, 28, 28), np.uint8),
             test_labels=np.zeros((1, 1), np.uint8))
    with pytest.raises(ImageReadError, match="3D flag"):
        load_volumes("medmnist:synapsemnist3d", None, root=tmp_path)
    calls = []
    monkeypatch.setattr(mm, "download", lambda url, dest, checksum=None, progress=True: calls.append(
        (url, dest.name, checksum)) or dest)
    for flag in FLAGS_3D:
        for size, h in zip((28, 64), mm.FLAGS_3D[flag][4]):
            mm.fetch(flag, tmp_path, size=size, progress=False)
            assert calls[-1] == (f"https://zenodo.org/records/10519652/files/{mm.file_name(flag, size)}?download=1",
                                 mm.file_name(flag, size), f"md5:{h}")
    _write_3d(tmp_path, "adrenalmnist3d", 28)
    [(path, ok)] = mm.verify("adrenalmnist3d", tmp_path)
    assert path.name == "adrenalmnist3d.npz" and not ok            # our test file is not the real one
    good = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(mm.FLAGS_3D, "adrenalmnist3d", mm.FLAGS_3D["adrenalmnist3d"][:4] + ((good, "0" * 32),))
    assert mm.verify("adrenalmnist3d", tmp_path) == [(path, True)]
    assert "adrenalmnist3d.npz" in mm.status(root=tmp_path)


def test_data_list_names_the_3d_flags(capsys):
    from medlab.data.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in FLAGS_3D)
