"""Tests of the 3D brain MRI phantoms (medlab.data.phantoms.brain) and their load_volumes entry."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from medlab.data.phantoms import ATROPHY_CLASSES, TISSUE_NAMES, brain_atrophy, brain_mri
from medlab.errors import ParameterError

FULL = np.ones((3, 3, 3), bool)   # 26-connectivity: lesions touching at a corner would be one component


@pytest.fixture(scope="module")
def batch():
    return brain_mri(4, seed=0, lesion_load=(4, 10))


@pytest.fixture(scope="module")
def atrophy():
    return brain_atrophy(24, seed=0)


def test_shapes_types_and_ranges(batch):
    n, c, d, h, w = batch.images.shape
    assert (n, c) == (4, 3) and batch.channel_names == ["T1", "T2", "FLAIR"]
    assert (d, h, w) == (46, 54, 46) and batch.spacing == (4.0, 4.0, 4.0)    # 184 x 216 x 184 mm at 4 mm
    assert batch.images.dtype == np.float32 and 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    assert batch.lesions.dtype == np.uint8 and set(np.unique(batch.lesions)) <= {0, 1}
    assert batch.tissue.dtype == np.uint8 and set(np.unique(batch.tissue)) == {0, 1, 2, 3}
    assert batch.lesions.shape == batch.tissue.shape == (n, d, h, w)
    assert len(TISSUE_NAMES) == 4
    # the template's generous brain mask (CSF, cerebellum and brain stem included) is about 1.9 litres;
    # each case is scaled by a few per cent
    brain_ml = (batch.tissue > 0).sum((1, 2, 3)) * 64 / 1000
    assert ((brain_ml > 1300) & (brain_ml < 2600)).all(), brain_ml


def test_same_seed_same_arrays_and_cases_do_not_depend_on_n(batch):
    again = brain_mri(2, seed=0, lesion_load=(4, 10))
    assert np.array_equal(again.images, batch.images[:2]) and np.array_equal(again.lesions, batch.lesions[:2])
    assert np.array_equal(again.tissue, batch.tissue[:2])
    assert again.lesion_table.equals(batch.lesion_table[batch.lesion_table.case < 2].reset_index(drop=True))
    other = brain_mri(1, seed=1, lesion_load=(4, 10))
    assert not np.array_equal(other.images[0], batch.images[0])


def test_lesions_lie_in_white_matter_and_look_like_lesions(batch):
    assert (batch.tissue[batch.lesions > 0] == 2).all()
    les = batch.lesions > 0
    wm = (batch.tissue == 2) & ~ndi.binary_dilation(les, structure=FULL[None])
    t1, t2, flair = (batch.images[:, k] for k in range(3))
    assert flair[les].mean() > flair[wm].mean() + 0.1        # bright on FLAIR
    assert t2[les].mean() > t2[wm].mean() + 0.1              # bright on T2
    assert t1[les].mean() < t1[wm].mean() - 0.05             # dark-ish on T1


def test_lesion_table_matches_the_mask(batch):
    table = batch.lesion_table
    assert list(table.columns[:9]) == ["case", "lesion", "volume_mm3", "voxels", "radius_mm", "contrast", "cnr",
                                       "rose", "visible"]
    voxel_mm3 = float(np.prod(batch.spacing))
    for i in range(len(batch)):
        labels, k = ndi.label(batch.lesions[i], structure=FULL)
        rows = table[table.case == i]
        assert k == len(rows) == batch.attrs["n_lesions"][i]
        sizes = np.bincount(labels.ravel())[1:]
        assert sorted(sizes.tolist()) == sorted(rows.voxels.tolist())
        assert np.allclose(rows.volume_mm3, rows.voxels * voxel_mm3)
        for _, r in rows.iterrows():      # the recorded centre lies in the component of that size
            comp = labels[int(round(r.z)), int(round(r.y)), int(round(r.x))]
            if comp:
                assert sizes[comp - 1] == r.voxels
        assert batch.attrs["lesion_volume_mm3"][i] == pytest.approx(rows.volume_mm3.sum())
    assert ((table.radius_mm >= 2.0) & (table.radius_mm <= 8.0)).all()
    assert ((table.contrast >= 0.3) & (table.contrast <= 1.0)).all()
    assert np.allclose(table.rose, table.cnr * np.sqrt(table.voxels))
    # findings run down to below what can be seen: some lesions fail the Rose criterion, some pass it
    assert table.visible.any() and not table.visible.all()


def test_lesion_load_zero_and_knobs_change_lesions():
    none = brain_mri(2, seed=3, lesion_load=(0, 0))
    assert none.lesions.sum() == 0 and len(none.lesion_table) == 0
    big = brain_mri(2, seed=3, lesion_load=(6, 6), lesion_radius_mm=(6.0, 10.0), lesion_contrast=(1.0, 1.0))
    small = brain_mri(2, seed=3, lesion_load=(6, 6), lesion_radius_mm=(1.0, 2.0), lesion_contrast=(0.1, 0.1))
    assert big.lesion_table.voxels.mean() > 3 * small.lesion_table.voxels.mean()
    assert big.lesion_table.visible.mean() > small.lesion_table.visible.mean()


def test_anisotropy_gives_thick_slices():
    b = brain_mri(1, seed=0, anisotropy=2.0, channels=("FLAIR",))
    assert b.spacing == (8.0, 4.0, 4.0)
    assert b.images.shape == (1, 1, 23, 54, 46) and b.channel_names == ["FLAIR"]
    c = brain_mri(1, seed=0, voxel_mm=5.0, anisotropy=1.5, shape=(20, 40, 36), channels=("T1", "T2"))
    assert c.spacing == (7.5, 5.0, 5.0) and c.images.shape == (1, 2, 20, 40, 36)


def test_bad_knobs_raise():
    with pytest.raises(ParameterError, match="voxel_mm"):
        brain_mri(1, voxel_mm=0.5)
    with pytest.raises(ParameterError, match="channel"):
        brain_mri(1, channels=("CT",))
    with pytest.raises(ParameterError, match="lesion_load"):
        brain_mri(1, lesion_load=(5, 2))
    with pytest.raises(ParameterError, match="anisotropy"):
        brain_mri(1, anisotropy=0.5)
    with pytest.raises(ParameterError):
        brain_atrophy(1, effect=-1)


def test_atrophy_groups_differ_but_overlap(atrophy):
    a = atrophy
    assert a.images.shape[:2] == (24, 1) and a.images.dtype == np.float32
    assert a.labels.dtype == np.int64 and np.bincount(a.labels).tolist() == [12, 12]
    assert a.class_names == ATROPHY_CLASSES
    assert (a.severity[a.labels == 0] == 0).all() and (a.severity[a.labels == 1] > 0).all()
    assert ((a.age >= 55) & (a.age <= 90)).all()
    vent = a.attrs["ventricle_ml"]
    ctrl, pat = vent[a.labels == 0], vent[a.labels == 1]
    assert pat.mean() > ctrl.mean() + 5          # patients' ventricles are larger on average ...
    assert ctrl.max() > pat.min()                 # ... but the groups overlap
    # CSF measured on the tissue maps tells the same story
    csf = (a.tissue == 3).sum((1, 2, 3))
    assert csf[a.labels == 1].mean() > csf[a.labels == 0].mean()
    # ageing enlarges ventricles in controls too
    old, young = a.age[a.labels == 0] > 72, a.age[a.labels == 0] <= 72
    assert a.attrs["ventricle_mm"][a.labels == 0][old].mean() > a.attrs["ventricle_mm"][a.labels == 0][young].mean()


def test_atrophy_effect_zero_leaves_only_age(atrophy):
    same = brain_atrophy(24, seed=0, effect=0.0)
    assert np.array_equal(same.labels, atrophy.labels)
    diff = same.attrs["ventricle_mm"][same.labels == 1].mean() - same.attrs["ventricle_mm"][same.labels == 0].mean()
    assert abs(diff) < abs(atrophy.attrs["ventricle_mm"][atrophy.labels == 1].mean()
                           - atrophy.attrs["ventricle_mm"][atrophy.labels == 0].mean())


def test_load_volumes_phantom_tasks():
    import medlab

    d = medlab.data.load_volumes("phantom", "lesion", n_train=2, n_val=1, n_test=1, seed=0)
    x, y = d.train
    assert x.shape == (2, 3, 46, 54, 46) and x.dtype == np.float32
    assert y.shape == (2, 46, 54, 46) and y.dtype == np.uint8
    assert d.task == "segmentation" and d.class_names == ["background", "lesion"] and d.num_classes == 2
    assert d.spacing == (4.0, 4.0, 4.0) and d.in_channels == 3 and d.shape == (46, 54, 46)
    assert set(d.lesion_tables) == {"train", "val", "test"} and len(d.meta["test"]["tissue"]) == 1
    assert not np.array_equal(d.train[0][0], d.test[0][0])           # splits come from different streams
    again = medlab.data.load_volumes("phantom", "lesion", n_train=2, n_val=1, n_test=1, seed=0)
    assert np.array_equal(again.test[0], d.test[0])
    t = medlab.data.load_volumes("phantom", "tissue", n_train=1, n_val=1, n_test=1, voxel_mm=6.0,
                                 channels=("T1",), anisotropy=1.5)
    assert t.class_names == TISSUE_NAMES and t.train[0].shape[1] == 1 and t.spacing == (9.0, 6.0, 6.0)
    a = medlab.data.load_volumes("phantom", "atrophy", n_train=4, n_val=2, n_test=2, voxel_mm=6.0)
    assert a.task == "classification" and a.train[1].dtype == np.int64 and a.train[0].shape[1] == 1
    assert a.lesion_tables is None and set(a.meta["train"]) >= {"age", "severity", "ventricle_ml"}
    with pytest.raises(ParameterError, match="task"):
        medlab.data.load_volumes("phantom", "tumour", n_train=1, n_val=1, n_test=1)
    with pytest.raises(ParameterError, match="nosuchknob"):
        medlab.data.load_volumes("phantom", "lesion", n_train=1, n_val=1, n_test=1, nosuchknob=3)


def test_template_maps_are_cached_on_disk(tmp_path, monkeypatch):
    from medlab.data.phantoms import brain

    built = brain._template_2mm()
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    cache = tmp_path / "cache" / brain._CACHE_NAME
    (tmp_path / "cache").mkdir()
    cache.write_bytes(b"PK\x03\x04 not a zip")            # a broken cache is rebuilt, not trusted
    brain._template_2mm.cache_clear()
    try:
        rebuilt = brain._template_2mm()
        assert cache.stat().st_size > 100_000
        brain._template_2mm.cache_clear()
        cached = brain._template_2mm()
        for a, b, c in zip(built, rebuilt, cached):
            assert np.array_equal(a, b) and np.array_equal(b, c)
    finally:
        brain._template_2mm.cache_clear()
