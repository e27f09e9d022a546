"""Segmentation plumbing: medlab.data.labelmaps (data with a label per pixel), the per-case tables, burden and
threshold-averaged Dice of medlab.metrics, and the segmentation figures of medlab.viz."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medlab import metrics, viz
from medlab.data import labelmaps
from medlab.data.labelmaps import approximate_lung_mask, load_segmentation
from medlab.errors import ParameterError


# ---------------------------------------------------------------------------------------------
# data


def test_phantom_lung_lesion_labels_are_nested_and_reproducible():
    data = load_segmentation("phantom", "lung_lesion", size=32, n_train=8, n_val=4, n_test=6, seed=1)
    assert data.class_names == ["background", "lung", "lesion"] and data.num_classes == 3
    assert data.regions == {"lung": (1, 2), "lesion": (2,)}
    assert data.spacing == (labelmaps.PHANTOM_FOV_MM / 32,) * 2 and data.test_lung is None
    x, y = data.train[0]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    targets = data.test_targets
    assert set(np.unique(targets)) <= {0, 1, 2} and (targets == 2).any() and (targets == 1).any()
    images, train_targets = data.arrays("train")
    assert images.shape == (8, 32, 32) and train_targets.shape == (8, 32, 32)
    again = load_segmentation("phantom", "lung_lesion", size=32, n_train=8, n_val=4, n_test=6, seed=1)
    np.testing.assert_array_equal(again.test_targets, targets)
    np.testing.assert_array_equal(again.test_images, data.test_images)
    other = load_segmentation("phantom", "lung_lesion", size=32, n_train=8, n_val=4, n_test=6, seed=2)
    assert not np.array_equal(other.test_images, data.test_images)
    with pytest.raises(ParameterError, match="split"):
        data.arrays("holdout")


def test_phantom_lesion_type_has_lung_masks_and_severity():
    from medlab.data.phantoms import mosmed_band

    data = load_segmentation("phantom", "lesion_type", size=32, n_train=4, n_val=2, n_test=8, seed=0, lesion_size=1.5)
    assert data.class_names == ["background", "ground-glass", "consolidation"]
    assert data.regions["lesion"] == (1, 2)
    lesion = data.test_targets > 0
    assert data.test_lung.dtype == bool and data.test_lung.shape == lesion.shape
    assert not (lesion & ~data.test_lung).any()  # lesions lie in the lung
    burden = metrics.lesion_burden(lesion, data.test_lung)
    np.testing.assert_allclose(burden, data.test_meta["involvement"], atol=1e-6)
    np.testing.assert_array_equal(mosmed_band(burden), data.test_meta["severity"])


def test_load_segmentation_refuses_what_it_cannot_do():
    with pytest.raises(ParameterError, match="task"):
        load_segmentation("phantom", "organs")
    with pytest.raises(ParameterError, match="no lesions"):
        load_segmentation("mni152", "lesion_type")
    with pytest.raises(ParameterError, match="phantom knobs"):
        load_segmentation("mni152", "lung_lesion", lesion_size=2)
    with pytest.raises(ParameterError, match="no segmentation masks"):
        load_segmentation("medmnist:pneumoniamnist")


def test_mni152_tissue_classes_offline():
    pytest.importorskip("nilearn")
    data = load_segmentation("mni152", "lung_lesion", size=32, seed=0)
    assert data.source == "mni152" and data.class_names[0] == "background" and len(data.regions) >= 3
    assert data.test_targets.shape[1:] == (32, 32) and data.spacing[0] > 2


def _nifti(path, array):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([0.8, 0.8, 5.0, 1.0])), str(path))


def _ct_slab(n, side=24):
    """(x, y, slices) HU: air around a soft-tissue body holding two air-filled "lungs"."""
    hu = np.full((side, side, n), -1000.0, np.float32)
    hu[3:-3, 3:-3] = 40.0
    hu[6:11, 6:18] = -850.0
    hu[13:18, 6:18] = -850.0
    return hu


def test_medseg_layout_lesion_type(tmp_path):
    hu = _ct_slab(20)
    mask = np.zeros_like(hu)
    mask[7:9, 7:10, ::2] = 1
    mask[14:16, 8:11, 1::4] = 2
    mask[19:21, 4:8, 3::5] = 3  # pleural effusion: background in the lesion task
    _nifti(tmp_path / "tr_im.nii.gz", hu)
    _nifti(tmp_path / "tr_mask.nii.gz", mask)
    data = load_segmentation("medseg-covid-ct", "lesion_type", size=24, root=tmp_path)
    assert data.class_names == ["background", "ground-glass", "consolidation"]
    assert set(np.unique(data.test_targets)) <= {0, 1, 2}
    assert len(data.train) + len(data.val) + len(data.test) == 20
    assert data.test_lung.shape == data.test_targets.shape and data.test_lung.any()
    assert not (data.test_targets > 0)[~data.test_lung].any()
    x, _ = data.test[0]
    assert 0 <= float(x.min()) and float(x.max()) <= 1  # windowed for the network
    four = load_segmentation("medseg-covid-ct", "lung_lesion", size=24, root=tmp_path)
    assert four.class_names[-1] == "pleural effusion" and "pleural effusion" in four.regions


def test_mosmed_layout_becomes_slices(tmp_path):
    base = tmp_path / "COVID19_1110"
    for k in range(1, 11):
        _nifti(base / "studies" / "CT-1" / f"study_{k:04d}.nii.gz", _ct_slab(6, 16))
        m = np.zeros((16, 16, 6), np.float32)
        m[7:9, 7:10, 2:4] = 1
        _nifti(base / "masks" / f"study_{k:04d}_mask.nii.gz", m)
    data = load_segmentation("mosmeddata", "lesion_type", size=16, root=tmp_path)
    assert data.class_names == ["background", "lesion"] and data.regions == {"lesion": (1,)}
    total = len(data.train) + len(data.val) + len(data.test)
    assert total % 32 == 0 and total // 32 == 10  # every study resampled to 32 slices, all kept
    assert len(data.test_meta["study"]) == len(data.test) and data.test_lung is not None


def test_approximate_lung_mask_keeps_inner_air_only():
    hu = np.transpose(_ct_slab(1), (2, 0, 1))
    lung = approximate_lung_mask(hu)
    expected = np.zeros_like(lung)
    expected[0, 6:11, 6:18] = True
    expected[0, 13:18, 6:18] = True
    np.testing.assert_array_equal(lung, expected)
    lesion = np.zeros_like(lung)
    lesion[0, 11, 8] = True
    assert approximate_lung_mask(hu, lesion=lesion)[0, 11, 8]
    with pytest.raises(ParameterError):
        approximate_lung_mask(hu[0])


# ---------------------------------------------------------------------------------------------
# metrics: tables of cases, Dice per case, burden, threshold-averaged Dice


def _square(n=20, top=5, left=5, side=6):
    m = np.zeros((n, n), np.int64)
    m[top:top + side, left:left + side] = 1
    return m


def test_case_metrics_values_and_empty_conventions():
    truth = np.stack([_square(), _square(), np.zeros((20, 20), np.int64), np.zeros((20, 20), np.int64)])
    pred = np.stack([_square(), _square(left=7), np.zeros((20, 20), np.int64), _square()])
    table = metrics.case_metrics(pred, truth, {"lesion": (1,)}, spacing=(2.0, 2.0))
    d, h = table["dice_lesion"].to_numpy(), table["hd95_lesion"].to_numpy()
    assert d[0] == 1.0 and h[0] == 0.0
    assert d[1] == pytest.approx(2 * 24 / 72)  # 4 of 6 columns overlap
    assert h[1] == pytest.approx(4.0)  # two pixels of 2 mm
    assert table["iou_lesion"][1] == pytest.approx(24 / 48)
    assert d[2] == 1.0 and math.isnan(h[2])  # both empty
    assert d[3] == 0.0 and math.isinf(h[3])  # false alarm
    np.testing.assert_allclose(metrics.case_dice(pred == 1, truth == 1), d)
    summary = metrics.summarise_regions(table, ["lesion"])
    row = summary.loc["lesion"]
    assert row["n_present"] == 2 and row["n_both_empty"] == 1 and row["n_false_alarm"] == 1
    assert row["n_missed"] == 0 and row["n_hd95_inf"] == 1
    assert row["dice"] == pytest.approx(d.mean()) and row["dice_present"] == pytest.approx(d[:2].mean())
    assert row["hd95_median"] == pytest.approx(4.0)  # median of 0, 4, inf (nan left out)
    with pytest.raises(ParameterError):
        metrics.case_metrics(pred[:, :5], truth, {"lesion": (1,)})


def test_nested_regions_and_case_picking():
    truth = np.stack([np.where(_square(side=10) > 0, 1, 0) + _square(top=7, left=7, side=3) for _ in range(3)])
    pred = truth.copy()
    pred[1][pred[1] == 2] = 1  # lesion called lung: lung still perfect
    pred[2][8, 8] = 1
    table = metrics.case_metrics(pred, truth, {"lung": (1, 2), "lesion": (2,)})
    assert (table["dice_lung"] == 1.0).all()
    assert table["dice_lesion"][1] == 0.0 and 0 < table["dice_lesion"][2] < 1
    assert metrics.pick_cases(table, "lesion") == {"best": 0, "median": 2, "worst": 1}
    np.testing.assert_array_equal(metrics.region_masks(truth, (1, 2)), truth > 0)


def test_case_dice_matches_the_one_case_dice_and_refuses_bad_shapes():
    rng = np.random.default_rng(0)
    p, t = rng.random((6, 9, 7)) < 0.4, rng.random((6, 9, 7)) < 0.4
    p[0], t[0] = False, False  # both empty -> 1
    t[1] = False  # false alarm -> 0
    np.testing.assert_allclose(metrics.case_dice(p, t), metrics.per_case(metrics.dice, p, t))
    assert metrics.case_dice(p, t)[0] == 1.0 and metrics.case_dice(p, t)[1] == 0.0
    with pytest.raises(ParameterError):
        metrics.case_dice(p[:, :3], t)


def test_region_dice_metrics_read_probabilities_and_take_a_dice():
    truth = np.stack([_square(), np.zeros((20, 20), np.int64)])
    onehot = np.eye(2)[truth].transpose(0, 3, 1, 2)
    fn = metrics.region_dice_metrics({"ground-glass": (1,)})["dice_ground_glass"]
    assert fn(truth, onehot) == 1.0
    assert fn(truth, onehot[::-1]) == 0.0
    always_half = metrics.region_dice_metrics({"a": (1,)}, dice=lambda p, t: np.full(len(p), 0.5))["dice_a"]
    assert always_half(truth, onehot) == 0.5
    assert metrics.metric_name("grey matter-x") == "grey_matter_x"


def test_threshold_averaged_dice_is_not_the_thresholded_dice():
    truth = np.stack([_square().astype(bool)])
    exact = metrics.threshold_averaged_dice(truth.astype(float), truth)
    assert exact[0] == pytest.approx(255 / 256)  # the top threshold keeps nothing
    blurred = truth * 0.6 + 0.2 * np.random.default_rng(0).random(truth.shape)
    assert metrics.threshold_averaged_dice(blurred, truth)[0] < exact[0]
    with pytest.raises(ParameterError):
        metrics.threshold_averaged_dice(truth[:, :5].astype(float), truth)


def test_lesion_burden_counts_the_lung_only():
    lung = np.zeros((3, 10, 10), bool)
    lung[:, :, :5] = True  # 50 lung pixels per case
    lesion = np.zeros((3, 10, 10), bool)
    lesion[1, :2, :5] = True  # 10 / 50 = 20 %
    lesion[2, :6, :5] = True  # 30 / 50 = 60 %
    lesion[2, 0, 9] = True  # outside the lung: not counted
    np.testing.assert_allclose(metrics.lesion_burden(lesion, lung), [0.0, 0.2, 0.6])
    assert metrics.lesion_burden(lesion, np.zeros_like(lung)).tolist() == [0.0, 0.0, 0.0]  # no lung: 0
    with pytest.raises(ParameterError):
        metrics.lesion_burden(lesion[:, :5], lung)


# ---------------------------------------------------------------------------------------------
# figures


def test_segmentation_figures():
    from matplotlib.figure import Figure

    data = load_segmentation("phantom", "lung_lesion", size=32, n_train=6, n_val=2, n_test=8, seed=0)
    truth = data.test_targets
    pred = truth.copy()
    pred[:, :4] = 0
    table = metrics.case_metrics(pred, truth, data.regions, data.spacing)
    picked = metrics.pick_cases(table, "lesion")
    history = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "val_dice_lesion": [0.1, 0.4]}
    burden = metrics.lesion_burden(truth == 2, truth > 0)
    figures = [
        viz.plot_label_examples(*data.arrays("train"), data.class_names, n=3),
        viz.plot_cases(data.test_images, pred, truth, picked, data.class_names, table, "lesion"),
        viz.plot_case_dice({"a": table, "b": table}, ["lung", "lesion"]),
        viz.plot_dice_vs_hd95(table, "lesion"),
        viz.plot_burden(burden, burden * 0.8, same=burden < 0.3),
        viz.plot_histories({"dice": history}, ["val_dice_lesion"]),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert len(figures[1].axes) >= 3 and len(figures[0].axes) >= 3
