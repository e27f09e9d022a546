"""Segment-then-classify cascade (medlab.cascade)."""
from __future__ import annotations

import numpy as np
import pytest

from medlab import cascade, profiles
from medlab.errors import ParameterError


def _disc(n=1, size=32, centre=(16, 16), radius=5):
    yy, xx = np.mgrid[:size, :size]
    m = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    return np.repeat(m[None], n, axis=0)


def test_mask_boxes_are_square_around_the_nodule_with_margin():
    m = np.zeros((2, 32, 32), bool)
    m[0, 10:14, 8:20] = True  # 4 x 12 box
    boxes = cascade.mask_boxes(m, margin=0.5)
    r0, r1, c0, c1 = boxes[0]
    assert r1 - r0 == c1 - c0 == 18  # longer side 12 * 1.5
    assert r0 <= 10 and r1 >= 14 and c0 <= 8 and c1 >= 20
    assert boxes[1].tolist() == [0, 32, 0, 32]  # empty mask: the whole image
    with pytest.raises(ParameterError, match="margin"):
        cascade.mask_boxes(m, margin=-1)


def test_crop_shows_the_nodule_and_pads_outside_the_image():
    img = np.zeros((1, 1, 32, 32), np.float32)
    m = _disc(centre=(16, 16), radius=4)
    img[0, 0][m[0]] = 1.0
    crop = cascade.crop_around_mask(img, m, out_size=16, margin=0.2, with_mask=True)
    assert crop.shape == (1, 2, 16, 16)
    assert crop[0, 0].mean() > 0.4  # the nodule fills the crop (it fills under 5% of the image)
    assert set(np.unique(crop[0, 1])) <= {0.0, 1.0}
    corner = _disc(centre=(1, 1), radius=3)
    img2 = np.ones((1, 1, 32, 32), np.float32)
    out = cascade.crop_around_mask(img2, corner, out_size=8, margin=1.0)
    assert out[0, 0, 0, 0] == 0.0 and out[0, 0, -1, -1] == pytest.approx(1.0)  # zero padding past the edge


def test_stage2_inputs_variants():
    img = np.random.default_rng(0).uniform(size=(3, 1, 32, 32)).astype(np.float32)
    m = _disc(3)
    assert cascade.stage2_inputs(img, m, "whole", 16).shape == (3, 1, 32, 32)
    assert cascade.stage2_inputs(img, m, "crop", 16).shape == (3, 1, 16, 16)
    assert cascade.stage2_inputs(img, m, "crop+mask", 16).shape == (3, 2, 16, 16)
    with pytest.raises(ParameterError, match="variant"):
        cascade.stage2_inputs(img, m, "zoom", 16)
    with pytest.raises(ParameterError, match="masks must be"):
        cascade.stage2_inputs(img, m[:, :16], "crop", 16)


def test_degraded_masks_lose_dice_as_severity_grows_and_are_reproducible():
    m = _disc(20, size=48, centre=(24, 24), radius=8)
    dice = [cascade.case_dice(cascade.degrade_masks(m, s, seed=3), m).mean() for s in (0.0, 0.3, 0.6, 1.0)]
    assert dice[0] == 1.0
    assert all(a > b for a, b in zip(dice, dice[1:]))
    assert dice[-1] < 0.5
    assert np.array_equal(cascade.degrade_masks(m, 0.5, seed=1), cascade.degrade_masks(m, 0.5, seed=1))
    empty = np.zeros((1, 16, 16), bool)
    assert not cascade.degrade_masks(empty, 1.0).any()
    with pytest.raises(ParameterError, match="severity"):
        cascade.degrade_masks(m, -0.1)


def test_binary_report_uses_the_given_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.4, 0.8, 0.9])
    r = cascade.binary_report(y, s, threshold=0.5, n_bootstrap=50)
    assert r["auroc"] == pytest.approx(8 / 9)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(2 / 3)
    assert r["auroc_low"] <= r["auroc"] <= r["auroc_high"]


def test_classifier_name_maps_the_profile_spelling():
    assert cascade.classifier_name(profiles.resolve("cpu")) in ("small_cnn",)
    assert cascade.classifier_name("resnet18") == "resnet18"


def test_load_nodule_data_refuses_sources_without_outlines():
    with pytest.raises(ParameterError, match="outlines"):
        cascade.load_nodule_data("pocus", profiles.resolve("smoke"))


def test_the_comparison_and_error_propagation_run_end_to_end():
    P = profiles.resolve("smoke").replace(n_train=16, n_val=12, n_test=12, image_size=32, bootstrap=10)
    data = cascade.load_nodule_data("phantom", P, seed=0)
    assert data["train"][1].dtype == bool and data["train"][1].any()
    result = cascade.run_comparison(data, P, device="cpu", seed=0, progress=False)
    assert set(result.reports) == set(cascade.VARIANTS)
    for r in result.reports.values():
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["sensitivity"] <= 1.0
    assert result.pred_masks["test"].shape == data["test"][1].shape
    assert "direct" in result.table()
    rows = cascade.error_propagation(result, data["test"], P, severities=(0.0, 1.0), device="cpu", progress=False)
    assert [r["masks"] for r in rows] == ["predicted (stage 1)", "ground truth", "degraded 1.0"]
    assert rows[1]["dice"] == 1.0 and rows[2]["dice"] < 1.0
    # same seed, same numbers
    again = cascade.run_comparison(data, P, variants=("crop",), device="cpu", seed=0, progress=False)
    assert again.reports["crop"]["auroc"] == pytest.approx(result.reports["crop"]["auroc"])
    for fig in (cascade.plot_comparison(result), cascade.plot_error_propagation(rows, 0.5),
                cascade.plot_crops(*data["test"][:2], result.pred_masks["test"], data["test"][2], 16)):
        assert fig.axes


def test_plot_crops_without_predictions_shows_the_truth_only():
    img = np.random.default_rng(0).uniform(size=(2, 1, 32, 32)).astype(np.float32)
    fig = cascade.plot_crops(img, _disc(2), None, [0, 1], crop_size=16, n=2)
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles == ["benign", "malignant"]
