"""medlab.segmentation: data for the segmentation lessons, training, per-case metrics, burden and grades."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlab import profiles
from medlab import segmentation as seg
from medlab.errors import ParameterError



# ---------------------------------------------------------------------------------------------
# settings


def test_settings_cap_the_profile_and_follow_overrides():
    cpu = seg.settings(profiles.PROFILES["cpu"], "02")
    assert cpu["n_train"] == seg.SETTINGS["02"]["cpu"]["n_train"] < profiles.PROFILES["cpu"].n_train
    assert cpu["image_size"] == profiles.PROFILES["cpu"].image_size and cpu["depth"] == 3
    small = profiles.PROFILES["gpu"].replace(n_train=48, image_size=32, epochs=1)
    gpu = seg.settings(small, "04")
    assert gpu["n_train"] == 48 and gpu["epochs"] == 1 and gpu["base_channels"] == 32
    assert gpu["depth"] == 3  # 32 px: at most 3 halvings leave 4 pixels
    assert seg.settings(profiles.PROFILES["smoke"], "02", epochs=2)["epochs"] == 2
    args = seg.training_args(cpu)
    assert args["samples_per_epoch"] == cpu["n_train"] and "n_test" not in args
    with pytest.raises(ParameterError, match="lesson"):
        seg.settings(profiles.PROFILES["cpu"], "99")
    with pytest.raises(ParameterError, match="unknown segmentation setting"):
        seg.settings(profiles.PROFILES["cpu"], "02", width=3)


# ---------------------------------------------------------------------------------------------
# data


def test_phantom_lung_lesion_labels_are_nested_and_reproducible():
    data = seg.load_data("phantom", "lung_lesion", size=32, n_train=8, n_val=4, n_test=6, seed=1)
    assert data.class_names == ["background", "lung", "lesion"]
    assert data.regions == {"lung": (1, 2), "lesion": (2,)}
    assert data.spacing == (seg.PHANTOM_FOV_MM / 32,) * 2 and data.test_lung is None
    x, y = data.train[0]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    targets = data.test_targets
    assert set(np.unique(targets)) <= {0, 1, 2} and (targets == 2).any() and (targets == 1).any()
    again = seg.load_data("phantom", "lung_lesion", size=32, n_train=8, n_val=4, n_test=6, seed=1)
    np.testing.assert_array_equal(again.test_targets, targets)
    np.testing.assert_array_equal(again.test_images, data.test_images)
    other = seg.load_data("phantom", "lung_lesion", size=32, n_train=8, n_val=4, n_test=6, seed=2)
    assert not np.array_equal(other.test_images, data.test_images)


def test_phantom_lesion_type_has_lung_masks_and_severity():
    data = seg.load_data("phantom", "lesion_type", size=32, n_train=4, n_val=2, n_test=8, seed=0, lesion_size=1.5)
    assert data.class_names == ["background", "ground-glass", "consolidation"]
    assert data.regions["lesion"] == (1, 2)
    lesion = data.test_targets > 0
    assert data.test_lung.dtype == bool and data.test_lung.shape == lesion.shape
    assert not (lesion & ~data.test_lung).any()  # lesions lie in the lung
    burden = seg.lesion_burden(lesion, data.test_lung)
    np.testing.assert_allclose(burden, data.test_meta["involvement"], atol=1e-6)
    np.testing.assert_array_equal(seg.severity_grade(burden), data.test_meta["severity"])


def test_load_data_refuses_what_it_cannot_do():
    with pytest.raises(ParameterError, match="task"):
        seg.load_data("phantom", "organs")
    with pytest.raises(ParameterError, match="no lesions"):
        seg.load_data("mni152", "lesion_type")
    with pytest.raises(ParameterError, match="phantom knobs"):
        seg.load_data("mni152", "lung_lesion", lesion_size=2)
    with pytest.raises(ParameterError, match="no segmentation masks"):
        seg.load_data("medmnist:pneumoniamnist")


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
    data = seg.load_data("medseg-covid-ct", "lesion_type", size=24, root=tmp_path)
    assert data.class_names == ["background", "ground-glass", "consolidation"]
    assert set(np.unique(data.test_targets)) <= {0, 1, 2}
    assert len(data.train) + len(data.val) + len(data.test) == 20
    assert data.test_lung.shape == data.test_targets.shape and data.test_lung.any()
    assert not (data.test_targets > 0)[~data.test_lung].any()
    x, _ = data.test[0]
    assert 0 <= float(x.min()) and float(x.max()) <= 1  # windowed for the network
    four = seg.load_data("medseg-covid-ct", "lung_lesion", size=24, root=tmp_path)
    assert four.class_names[-1] == "pleural effusion" and "pleural effusion" in four.regions


def test_mosmed_layout_becomes_slices(tmp_path):
    base = tmp_path / "COVID19_1110"
    for k in range(1, 11):
        _nifti(base / "studies" / "CT-1" / f"study_{k:04d}.nii.gz", _ct_slab(6, 16))
        m = np.zeros((16, 16, 6), np.float32)
        m[7:9, 7:10, 2:4] = 1
        _nifti(base / "masks" / f"study_{k:04d}_mask.nii.gz", m)
    data = seg.load_data("mosmeddata", "lesion_type", size=16, root=tmp_path)
    assert data.class_names == ["background", "lesion"] and data.regions == {"lesion": (1,)}
    total = len(data.train) + len(data.val) + len(data.test)
    assert total % 32 == 0 and total // 32 == 10  # every study resampled to 32 slices, all kept
    assert len(data.test_meta["study"]) == len(data.test) and data.test_lung is not None


def test_approximate_lung_mask_keeps_inner_air_only():
    hu = np.transpose(_ct_slab(1), (2, 0, 1))
    lung = seg.approximate_lung_mask(hu)
    expected = np.zeros_like(lung)
    expected[0, 6:11, 6:18] = True
    expected[0, 13:18, 6:18] = True
    np.testing.assert_array_equal(lung, expected)
    lesion = np.zeros_like(lung)
    lesion[0, 11, 8] = True
    assert seg.approximate_lung_mask(hu, lesion=lesion)[0, 11, 8]
    with pytest.raises(ParameterError):
        seg.approximate_lung_mask(hu[0])


# ---------------------------------------------------------------------------------------------
# metrics tables


def _square(n=20, top=5, left=5, side=6):
    m = np.zeros((n, n), np.int64)
    m[top:top + side, left:left + side] = 1
    return m


def test_case_metrics_values_and_empty_conventions():
    truth = np.stack([_square(), _square(), np.zeros((20, 20), np.int64), np.zeros((20, 20), np.int64)])
    pred = np.stack([_square(), _square(left=7), np.zeros((20, 20), np.int64), _square()])
    table = seg.case_metrics(pred, truth, {"lesion": (1,)}, spacing=(2.0, 2.0))
    d, h = table["dice_lesion"].to_numpy(), table["hd95_lesion"].to_numpy()
    assert d[0] == 1.0 and h[0] == 0.0
    assert d[1] == pytest.approx(2 * 24 / 72)  # 4 of 6 columns overlap
    assert h[1] == pytest.approx(4.0)  # two pixels of 2 mm
    assert table["iou_lesion"][1] == pytest.approx(24 / 48)
    assert d[2] == 1.0 and math.isnan(h[2])  # both empty
    assert d[3] == 0.0 and math.isinf(h[3])  # false alarm
    summary = seg.summarise(table, ["lesion"])
    row = summary.loc["lesion"]
    assert row["n_present"] == 2 and row["n_both_empty"] == 1 and row["n_false_alarm"] == 1
    assert row["n_missed"] == 0 and row["n_hd95_inf"] == 1
    assert row["dice"] == pytest.approx(d.mean()) and row["dice_present"] == pytest.approx(d[:2].mean())
    assert row["hd95_median"] == pytest.approx(4.0)  # median of 0, 4, inf (nan left out)
    with pytest.raises(ParameterError):
        seg.case_metrics(pred[:, :5], truth, {"lesion": (1,)})


def test_nested_regions_and_case_picking():
    truth = np.stack([np.where(_square(side=10) > 0, 1, 0) + _square(top=7, left=7, side=3) for _ in range(3)])
    pred = truth.copy()
    pred[1][pred[1] == 2] = 1  # lesion called lung: lung still perfect
    pred[2][8, 8] = 1
    table = seg.case_metrics(pred, truth, {"lung": (1, 2), "lesion": (2,)})
    assert (table["dice_lung"] == 1.0).all()
    assert table["dice_lesion"][1] == 0.0 and 0 < table["dice_lesion"][2] < 1
    assert seg.pick_cases(table, "lesion") == {"best": 0, "median": 2, "worst": 1}


def test_threshold_averaged_dice_is_not_the_thresholded_dice():
    truth = np.stack([_square().astype(bool)])
    exact = seg.threshold_averaged_dice(truth.astype(float), truth)
    assert exact[0] == pytest.approx(255 / 256)  # the top threshold keeps nothing
    blurred = truth * 0.6 + 0.2 * np.random.default_rng(0).random(truth.shape)
    assert seg.threshold_averaged_dice(blurred, truth)[0] < exact[0]
    with pytest.raises(ParameterError):
        seg.threshold_averaged_dice(truth[:, :5].astype(float), truth)


def test_burden_grades_and_agreement():
    lung = np.zeros((3, 10, 10), bool)
    lung[:, :, :5] = True  # 50 lung pixels per case
    lesion_true = np.zeros((3, 10, 10), np.int64)
    lesion_true[1, :2, :5] = 1  # 10 / 50 = 20 %
    lesion_true[2, :6, :5] = 2  # 30 / 50 = 60 %
    lesion_true[2, 0, 9] = 1  # outside the lung: not counted
    np.testing.assert_allclose(seg.lesion_burden(lesion_true > 0, lung), [0.0, 0.2, 0.6])
    np.testing.assert_array_equal(seg.severity_grade([0.0, 0.2, 0.25, 0.6, 0.9]), [0, 1, 1, 3, 4])
    perfect = seg.burden_table(lesion_true, lesion_true, lung)
    assert seg.grade_agreement(perfect)["kappa"] == pytest.approx(1.0)
    pred = lesion_true.copy()
    pred[0, 0, 0] = 1  # a false alarm makes CT-0 into CT-1
    table = seg.burden_table(pred, lesion_true, lung)
    assert table["grade_pred"].tolist() == [1, 1, 3]
    agreement = seg.grade_agreement(table)
    assert agreement["exact"] == pytest.approx(2 / 3) and agreement["within_one"] == 1.0
    assert agreement["kappa"] < 1 and agreement["burden_mae"] == pytest.approx(0.02 / 3)
    with pytest.raises(ParameterError):
        seg.lesion_burden(lesion_true[:, :5], lung)


# ---------------------------------------------------------------------------------------------
# model and training


def test_losses_and_unet_description():
    from medlab.losses import DiceCELoss, DiceLoss

    assert isinstance(seg.make_loss("dice"), DiceLoss) and seg.make_loss("dice").batch
    assert isinstance(seg.make_loss("dice_ce"), DiceCELoss)
    assert isinstance(seg.make_loss("cross_entropy"), torch.nn.CrossEntropyLoss)
    with pytest.raises(ParameterError, match="loss"):
        seg.make_loss("hinge")
    text = seg.describe_unet(seg.build_unet(3, 4, 2), 32)
    assert "(16, 8, 8)" in text and "(3, 32, 32)" in text and "trainable parameters" in text


@pytest.fixture(scope="module")
def tiny():
    data = seg.load_data("phantom", "lung_lesion", size=32, n_train=16, n_val=8, n_test=8, seed=0)
    args = dict(epochs=1, batch_size=8, base_channels=4, depth=2, lr=3e-3, samples_per_epoch=16)
    return data, args


def test_train_is_deterministic_and_predicts_label_maps(tiny):
    data, args = tiny
    model, history = seg.train(data, "dice_ce", **args, seed=3, device="cpu", progress=False)
    _, again = seg.train(data, "dice_ce", **args, seed=3, device="cpu", progress=False)
    assert history["train_loss"] == again["train_loss"] and len(history) == 1
    assert set(history.keys()) >= {"val_loss", "val_dice_lung", "val_dice_lesion"}
    pred = seg.predict_masks(model, data.test, device="cpu")
    assert pred.shape == data.test_targets.shape and pred.dtype == np.int64 and pred.max() < 3
    probs = seg.predict_probabilities(model, data.test, device="cpu")
    assert probs.shape == (8, 3, 32, 32)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), pred)


def test_samples_per_epoch_repeats_a_small_training_set(tiny):
    data, _ = tiny
    loader = seg.make_loader(data.train, 8, shuffle=True, seed=0, samples_per_epoch=40)
    assert len(loader) == 5 and sum(len(x) for x, _ in loader) == 40
    assert len(seg.make_loader(data.train, 8, shuffle=True)) == 2
    first = [y.sum().item() for _, y in seg.make_loader(data.train, 8, shuffle=True, seed=5)]
    assert first == [y.sum().item() for _, y in seg.make_loader(data.train, 8, shuffle=True, seed=5)]


def test_dice_metric_for_fit_reads_probabilities():
    truth = np.stack([_square(), np.zeros((20, 20), np.int64)])
    onehot = np.eye(2)[truth].transpose(0, 3, 1, 2)
    fn = seg.dice_metrics({"lesion": (1,)})["dice_lesion"]
    assert fn(truth, onehot) == 1.0
    assert fn(truth, onehot[::-1]) == 0.0


def test_figures_and_published_table(tiny):
    from matplotlib.figure import Figure

    data, _ = tiny
    truth = data.test_targets
    pred = truth.copy()
    pred[:, :4] = 0
    table = seg.case_metrics(pred, truth, data.regions, data.spacing)
    picked = seg.pick_cases(table, "lesion")
    figures = [
        seg.plot_examples(data.train, data.class_names, n=3),
        seg.plot_cases(data.test_images, pred, truth, picked, data.class_names, table, "lesion"),
        seg.plot_dice_distribution({"a": table, "b": table}, ["lung", "lesion"]),
        seg.plot_dice_vs_hd95(table, "lesion"),
        seg.plot_burden(seg.burden_table(pred, truth, truth > 0, lesion_labels=(2,))),
    ]
    history = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "val_dice_lesion": [0.1, 0.4]}
    figures.append(seg.plot_histories({"dice": history}, ["lesion"]))
    assert all(isinstance(f, Figure) for f in figures)
    assert len(figures[1].axes) >= 3
    published = seg.published_covid_results({"lesion": 0.5, "data": "phantom"})
    assert published.index[0] == "this lesson" and published.loc["this lesson", "lesion"] == 0.5
    assert published.loc["Inf-Net (Fan et al. 2020)", "lesion"] == pytest.approx(0.682)
