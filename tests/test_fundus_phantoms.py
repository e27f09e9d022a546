"""Fundus phantoms (medlab.data.phantoms.fundus): shapes, determinism, the grade rule, findings, variation."""
from __future__ import annotations

import numpy as np
import pytest

import medlab
from medlab.data.phantoms import FUNDUS_CLASSES, FUNDUS_MASK_CLASSES, dr_grade, fundus
from medlab.errors import ParameterError


@pytest.fixture(scope="module")
def batch():
    return fundus(60, size=48, seed=5)


def test_shapes_types_and_ranges(batch):
    assert batch.images.shape == (60, 3, 48, 48) and batch.images.dtype == np.float32
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    assert batch.labels.dtype == np.int64 and np.bincount(batch.labels, minlength=5).tolist() == [12] * 5
    assert batch.class_names == FUNDUS_CLASSES and batch.kind == "fundus"
    mask = batch.mask()
    assert mask.shape == (60, 48, 48) and mask.min() >= 0 and mask.max() < len(FUNDUS_MASK_CLASSES)
    for name, values in batch.attrs.items():
        assert len(values) == 60, name
    # the colour image looks like a fundus: red above green above blue inside the field of view, black outside
    inside = batch.images[:, :, 24, 24].mean(0)
    assert inside[0] > inside[1] > inside[2]
    assert batch.images[:, :, 0, 0].max() == 0.0


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = fundus(10, size=32, seed=1), fundus(10, size=32, seed=1), fundus(10, size=32, seed=2)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks["findings"], b.masks["findings"])
    assert all(np.array_equal(a.attrs[k], b.attrs[k]) for k in a.attrs)
    assert not np.array_equal(a.images, c.images)


def test_recorded_findings_obey_the_grade_rule(batch):
    a = batch.attrs
    assert np.array_equal(dr_grade(a["n_microaneurysms"], a["n_haemorrhages"], a["n_exudates"],
                                   a["haemorrhage_quadrants"], a["neovascularisation"]), batch.labels)
    assert np.array_equal(a["referable"], (batch.labels >= 2).astype(int))
    assert np.array_equal(a["severity"], batch.labels)
    g = batch.labels
    assert (a["n_microaneurysms"][g == 1] > 0).all()
    assert (a["n_haemorrhages"][g == 1] == 0).all() and (a["n_exudates"][g == 1] == 0).all()
    assert ((a["n_haemorrhages"][g == 2] > 0) | (a["n_exudates"][g == 2] > 0)).all()
    assert (a["n_haemorrhages"][g == 3] >= 10).all() and (a["haemorrhage_quadrants"][g == 3] == 4).all()
    assert (a["neovascularisation"][g == 4] == 1).all() and (a["neovascularisation"][g < 4] == 0).all()
    assert (a["referable_signal"][g >= 2] > 0).all() and (a["referable_signal"][g < 2] == 0).all()


def test_the_grade_rule_itself():
    #                 MA  haem exud quadrants NV
    cases = [((0, 0, 0, 0, 0), 0), ((3, 0, 0, 0, 0), 1), ((3, 2, 0, 2, 0), 2), ((0, 0, 5, 0, 0), 2),
             ((5, 12, 0, 3, 0), 2), ((5, 12, 0, 4, 0), 3), ((0, 9, 0, 4, 0), 2), ((0, 0, 0, 0, 1), 4)]
    for args, expected in cases:
        assert int(dr_grade(*args)) == expected, args


def test_grade_0_has_no_lesions(batch):
    healthy = batch.labels == 0
    a = batch.attrs
    for key in ("n_microaneurysms", "n_haemorrhages", "n_exudates", "neovascularisation", "preretinal_haemorrhage",
                "lesion_area", "largest_haemorrhage"):
        assert (a[key][healthy] == 0).all(), key
    assert (batch.masks["findings"][healthy] < 3).all()   # vessels and disc only


def test_findings_are_in_the_mask_and_darken_the_image():
    b = fundus(40, size=64, seed=3)
    mask = b.masks["findings"]
    severe = b.labels == 3
    assert ((mask == 4).sum(axis=(1, 2))[severe] > 0).all()   # haemorrhages drawn
    assert ((mask == 1).sum(axis=(1, 2)) > 0.03 * 64 * 64).all()   # every eye has a vessel tree
    assert ((mask == 2).sum(axis=(1, 2)) > 0).all()   # and an optic disc
    # the same eyes without findings (contrast 0) differ only where findings are
    plain = fundus(40, size=64, seed=3, lesion_contrast=0.0)
    diff = np.abs(b.images - plain.images).sum(1)
    assert diff[b.labels == 0].max() < 1e-6
    assert diff[severe].mean() > diff[b.labels == 1].mean() > 0


def test_variation_knobs_vary_position_pose_colour_and_camera():
    b = fundus(200, size=32, seed=0)
    a = b.attrs
    assert set(np.unique(a["eye"])) == {0, 1}
    left, right = a["disc_x"][a["eye"] == 1], a["disc_x"][a["eye"] == 0]
    assert left.max() < 0 < right.min()   # the disc is on the nasal side: image left for a left eye
    for key in ("illumination", "vignetting", "blur", "noise", "disc_x"):
        assert a[key].std() > 0, key
    colour = b.images.mean(axis=(2, 3))
    assert (colour.std(axis=0) > 0.02).all()   # colour balance and brightness vary between eyes
    still = fundus(200, size=32, seed=0, variation=0.0)
    for key in ("illumination", "vignetting", "blur"):
        assert np.allclose(still.attrs[key], still.attrs[key][0]), key
    assert still.images.mean(axis=(2, 3)).std(axis=0).mean() < colour.std(axis=0).mean()


def test_sizes_and_contrast_of_findings_reach_below_visibility():
    b = fundus(300, size=64, seed=1)
    a = b.attrs
    moderate = b.labels == 2
    assert a["referable_signal"][moderate].min() < 0.15   # some moderate eyes show almost nothing:
    assert a["referable_evidence"][moderate].min() < 2.0   # contrast x area of about a pixel, under noise
    haem = a["n_haemorrhages"] > 0
    assert a["largest_haemorrhage"][haem].min() < 1.0 < a["largest_haemorrhage"][haem].max()


def test_make_splits_and_load_source_know_the_kind():
    splits = medlab.data.make_splits("fundus", 10, 5, 5, size=32, seed=0)
    assert splits["train"].images.shape == (10, 3, 32, 32) and len(splits["test"]) == 5
    assert medlab.data.make_splits("retina", 5, 5, 5, size=32)["val"].class_names == FUNDUS_CLASSES
    ds = medlab.data.load_source("phantom:fundus", split="val", n=5, size=32)
    image, target = ds[0]
    assert tuple(image.shape) == (3, 32, 32) and int(target) in range(5)


def test_bad_knobs_are_refused():
    with pytest.raises(ParameterError):
        fundus(4, size=32, lesion_contrast=-1)
    with pytest.raises(ParameterError):
        fundus(4, size=8)
    with pytest.raises(ParameterError):
        fundus(4, size=32, variation=5)
