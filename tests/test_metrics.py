"""medlab.metrics against its peers: MONAI, scikit-learn, medpy.

Where a peer's convention differs from medlab's, a test shows the difference
on purpose (names ending in ``_differs``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn import metrics as skm

from medlab import metrics as M
from medlab.errors import ParameterError

monai_metrics = pytest.importorskip("monai.metrics")
medpy_binary = pytest.importorskip("medpy.metric.binary")


def blob(rng, shape, level=0.52, sigma=2.0):
    """A random smooth binary mask (one or a few blobs)."""
    return gaussian_filter(rng.random(shape), sigma) > level


def onehot(mask):
    """A boolean mask as a MONAI (batch, channel, ...) float tensor."""
    return torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None, None]


CASES = [((40, 48), None), ((40, 48), (0.7, 1.3)), ((10, 24, 28), (3.0, 0.8, 0.8))]


@pytest.fixture(autouse=True)
def _quiet_peers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI and medpy warn on empty masks, which is what some tests are about
        yield


# ------------------------------------------------------------------------------------------
# segmentation overlap
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,spacing", CASES)
def test_dice_and_iou_match_monai_and_medpy(shape, spacing):
    rng = np.random.default_rng(1)
    for _ in range(3):
        p, t = blob(rng, shape), blob(rng, shape)
        d = M.dice(p, t)
        assert d == pytest.approx(monai_metrics.compute_dice(onehot(p), onehot(t), include_background=True).item(),
                                  abs=1e-6)
        assert d == pytest.approx(medpy_binary.dc(p, t))
        j = M.iou(p, t)
        assert j == pytest.approx(monai_metrics.compute_iou(onehot(p), onehot(t), include_background=True).item(),
                                  abs=1e-6)
        assert j == pytest.approx(medpy_binary.jc(p, t))
        assert j == pytest.approx(d / (2 - d))


def test_dice_empty_mask_conventions_match_monai_ignore_empty_false():
    empty = np.zeros((16, 16), bool)
    full = empty.copy()
    full[4:9, 3:7] = True
    for p, t, expected in [(empty, empty, 1.0), (empty, full, 0.0), (full, empty, 0.0)]:
        assert M.dice(p, t) == expected
        assert M.iou(p, t) == expected
        monai = monai_metrics.compute_dice(onehot(p), onehot(t), include_background=True, ignore_empty=False)
        assert monai.item() == expected


def test_dice_both_empty_medpy_dc_differs():
    # medpy's dc computes 0/0 for two empty masks; medlab (and MONAI, ignore_empty=False) say 1.0:
    # a correctly empty prediction must count as right, not vanish from a nan-ignoring mean.
    empty = np.zeros((8, 8), bool)
    assert np.isnan(medpy_binary.dc(empty, empty))
    assert M.dice(empty, empty) == 1.0
    assert medpy_binary.jc(empty, empty) == M.iou(empty, empty) == 1.0


def test_multiclass_labels_match_monai_per_class():
    rng = np.random.default_rng(2)
    shape, k = (30, 34), 4
    pred = rng.integers(0, k, shape)
    true = np.where(blob(rng, shape), 1, 0) + np.where(blob(rng, shape), 2, 0)   # labels 0..3, class 3 may be rare
    pred_1h = torch.nn.functional.one_hot(torch.as_tensor(pred), k).permute(2, 0, 1)[None].float()
    true_1h = torch.nn.functional.one_hot(torch.as_tensor(true), k).permute(2, 0, 1)[None].float()
    ours = M.dice(pred, true, num_classes=k)
    assert ours.shape == (k - 1,)
    monai = monai_metrics.compute_dice(pred_1h, true_1h, include_background=False, ignore_empty=False)[0].numpy()
    np.testing.assert_allclose(ours, monai, atol=1e-6)
    with_bg = M.dice(pred, true, num_classes=k, include_background=True)
    np.testing.assert_allclose(with_bg[1:], ours)
    np.testing.assert_allclose(M.dice(pred, true, labels=[2]), ours[1:2])
    # a class absent from both prediction and reference scores 1
    assert M.dice(np.zeros(shape, int), np.zeros(shape, int), num_classes=3).tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------------------
# surface distances
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,spacing", CASES)
def test_hd95_and_msd_match_monai_with_spacing(shape, spacing):
    rng = np.random.default_rng(3)
    for _ in range(3):
        p, t = blob(rng, shape), blob(rng, shape)
        hd = M.hausdorff95(p, t, spacing=spacing)
        monai_hd = monai_metrics.compute_hausdorff_distance(onehot(p), onehot(t), include_background=True,
                                                            percentile=95, spacing=spacing).item()
        assert hd == pytest.approx(monai_hd, rel=1e-5)
        msd = M.mean_surface_distance(p, t, spacing=spacing)
        monai_msd = monai_metrics.compute_average_surface_distance(onehot(p), onehot(t), include_background=True,
                                                                   symmetric=True, spacing=spacing).item()
        assert msd == pytest.approx(monai_msd, rel=1e-5)
        # medpy 0.5's assd pools both directions too
        assert msd == pytest.approx(medpy_binary.assd(p, t, voxelspacing=spacing), rel=1e-9)
        # the full Hausdorff distance (percentile 100) is medpy's hd
        assert M.hausdorff95(p, t, spacing=spacing, percentile=100) == pytest.approx(
            medpy_binary.hd(p, t, voxelspacing=spacing))


def test_anisotropic_spacing_changes_distances_as_physics_says():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b[5:10, 7:12] = True          # shifted by 2 columns
    assert M.hausdorff95(a, b, percentile=100) == pytest.approx(2.0)
    assert M.hausdorff95(a, b, spacing=(1.0, 0.5), percentile=100) == pytest.approx(1.0)
    assert M.hausdorff95(a, b, spacing=(9.0, 0.5), percentile=100) == pytest.approx(1.0)  # rows do not move


def test_hd95_medpy_pools_directions_and_differs():
    # A prediction that hugs the reference but adds a far-away blob: the directed 95th percentile from the
    # prediction side is large; pooling with the other direction (medpy) dilutes it.
    t = np.zeros((60, 60), bool)
    t[10:40, 10:40] = True
    p = t.copy()
    p[50:54, 50:54] = True
    ours = M.hausdorff95(p, t)
    forward, backward = M.surface_distances(p, t), M.surface_distances(t, p)
    assert ours == pytest.approx(max(np.percentile(forward, 95), np.percentile(backward, 95)))
    pooled = np.percentile(np.concatenate([forward, backward]), 95)
    assert medpy_binary.hd95(p, t) == pytest.approx(pooled)
    assert medpy_binary.hd95(p, t) < ours - 1.0


def test_surface_distance_empty_conventions_match_monai_medpy_raises():
    empty = np.zeros((20, 20), bool)
    full = empty.copy()
    full[5:12, 6:14] = True
    assert np.isnan(M.hausdorff95(empty, empty))
    assert np.isnan(M.mean_surface_distance(empty, empty))
    for p, t in [(empty, full), (full, empty)]:
        assert M.hausdorff95(p, t) == np.inf
        assert M.mean_surface_distance(p, t) == np.inf
        assert monai_metrics.compute_hausdorff_distance(onehot(p), onehot(t), include_background=True).item() == np.inf
        assert monai_metrics.compute_average_surface_distance(onehot(p), onehot(t), include_background=True,
                                                              symmetric=True).item() == np.inf
    assert np.isnan(monai_metrics.compute_hausdorff_distance(onehot(empty), onehot(empty),
                                                             include_background=True).item())
    # medpy has no convention for empty masks: it raises, so medlab cannot defer to it here
    with pytest.raises(RuntimeError):
        medpy_binary.hd95(empty, full)


def test_mask_touching_the_border_has_a_surface_there():
    a = np.zeros((10, 10), bool)
    a[:, :4] = True                          # touches three image borders
    b = np.zeros((10, 10), bool)
    b[:, :6] = True
    assert M.hausdorff95(a, b, percentile=100) == pytest.approx(
        monai_metrics.compute_hausdorff_distance(onehot(a), onehot(b), include_background=True, percentile=100)
        .item())


def test_per_case_and_reduce_cases_leave_out_nan_and_count_it():
    rng = np.random.default_rng(4)
    pred = np.stack([blob(rng, (24, 24)) for _ in range(4)])
    true = np.stack([blob(rng, (24, 24)) for _ in range(4)])
    pred[1] = false_mask = np.zeros((24, 24), bool)
    true[1] = false_mask                                        # both empty: HD95 nan
    values = M.per_case(M.hausdorff95, pred, true)
    assert values.shape == (4,) and np.isnan(values[1])
    summary = M.reduce_cases(values)
    assert summary.n_excluded == 1 and summary.n_used == 3
    assert summary.mean == pytest.approx(np.mean(values[[0, 2, 3]]))
    per_label = M.reduce_cases(np.array([[1.0, np.nan], [3.0, np.nan]]))
    assert per_label.mean[0] == 2.0 and np.isnan(per_label.mean[1]) and per_label.n_excluded.tolist() == [0, 2]


def test_segmentation_input_errors_are_clear():
    with pytest.raises(ParameterError, match="shape"):
        M.dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ParameterError, match="argmax"):
        M.dice(np.zeros((3, 3)), np.zeros((3, 3)))


# ------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------
def test_confusion_matrix_and_rates_match_sklearn():
    rng = np.random.default_rng(5)
    for _ in range(5):
        t = rng.integers(0, 2, 60)
        p = rng.integers(0, 2, 60)
        np.testing.assert_array_equal(M.confusion_matrix(t, p), skm.confusion_matrix(t, p, labels=[0, 1]))
        assert M.sensitivity(t, p) == pytest.approx(skm.recall_score(t, p))
        assert M.specificity(t, p) == pytest.approx(skm.recall_score(t, p, pos_label=0))
        assert M.ppv(t, p) == pytest.approx(skm.precision_score(t, p))
        assert M.npv(t, p) == pytest.approx(skm.precision_score(t, p, pos_label=0))
        assert M.f1(t, p) == pytest.approx(skm.f1_score(t, p))
    t3, p3 = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    np.testing.assert_array_equal(M.confusion_matrix(t3, p3, 3), skm.confusion_matrix(t3, p3, labels=[0, 1, 2]))
    np.testing.assert_allclose(M.sensitivity(t3, p3, average=None), skm.recall_score(t3, p3, average=None))
    np.testing.assert_allclose(M.ppv(t3, p3, average=None), skm.precision_score(t3, p3, average=None))
    assert M.f1(t3, p3, average="macro") == pytest.approx(skm.f1_score(t3, p3, average="macro"))
    with pytest.raises(ParameterError, match="binary"):
        M.sensitivity(t3, p3)


def test_empty_denominator_gives_nan_where_sklearn_default_gives_zero_differs():
    t = np.array([0, 0, 1, 1])
    nothing_positive = np.zeros(4, int)
    assert np.isnan(M.ppv(t, nothing_positive))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert skm.precision_score(t, nothing_positive) == 0.0          # sklearn's default zero_division
    assert np.isnan(skm.precision_score(t, nothing_positive, zero_division=np.nan))
    assert np.isnan(M.sensitivity(np.zeros(4, int), nothing_positive))  # no positives at all


def test_auroc_matches_sklearn_binary_and_one_vs_rest():
    rng = np.random.default_rng(6)
    t = rng.integers(0, 2, 100)
    s = rng.random(100) + 0.5 * t
    assert M.auroc(t, s) == pytest.approx(skm.roc_auc_score(t, s))
    two_column = np.stack([1 - s, s], axis=1)
    assert M.auroc(t, two_column) == pytest.approx(skm.roc_auc_score(t, s))
    t3 = rng.integers(0, 3, 120)
    logits = rng.normal(size=(120, 3)) + np.eye(3)[t3]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert M.auroc(t3, prob) == pytest.approx(skm.roc_auc_score(t3, prob, multi_class="ovr", average="macro"))
    assert M.auroc(t3, prob, average="weighted") == pytest.approx(
        skm.roc_auc_score(t3, prob, multi_class="ovr", average="weighted"))
    per_class = M.auroc(t3, prob, average=None)
    assert per_class.shape == (3,) and per_class.mean() == pytest.approx(M.auroc(t3, prob))


def test_auroc_single_class_raises_clear_error():
    with pytest.raises(ParameterError, match="only one class"):
        M.auroc(np.ones(5, int), np.linspace(0, 1, 5))
    with pytest.raises(ParameterError, match="one-vs-rest"):
        M.auroc(np.array([0, 1, 0, 1]), np.full((4, 3), 1 / 3))


def test_roc_curve_and_sensitivity_at_specificity_match_brute_force():
    rng = np.random.default_rng(7)
    t = rng.integers(0, 2, 150)
    s = np.round(rng.random(150) + 0.4 * t, 2)             # ties on purpose
    fpr, tpr, thr = M.roc_curve(t, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(t, s)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    for target in (0.5, 0.8, 0.9, 0.95):
        sens, threshold = M.sensitivity_at_specificity(t, s, target)
        best = max(((s[t == 1] >= c).mean() for c in np.unique(s) if (s[t == 0] < c).mean() >= target), default=0.0)
        assert sens == pytest.approx(best)
        op = M.operating_point(t, s, threshold)
        assert op["specificity"] >= target and op["sensitivity"] == pytest.approx(sens)


def test_quadratic_weighted_kappa_matches_sklearn():
    rng = np.random.default_rng(8)
    for _ in range(5):
        t = rng.integers(0, 5, 90)
        p = np.clip(t + rng.integers(-1, 2, 90), 0, 4)
        assert M.quadratic_weighted_kappa(t, p) == pytest.approx(skm.cohen_kappa_score(t, p, weights="quadratic"))
    assert M.quadratic_weighted_kappa(t, t) == pytest.approx(1.0)


def test_kappa_with_unobserved_grades_sklearn_default_differs():
    # grades 0, 1 and 3 occur, 2 never: medlab measures distances in grade values (0..3),
    # sklearn by default ranks the labels it sees (0, 1, 3 -> 0, 1, 2) unless given labels=range(K).
    t = np.array([0, 0, 1, 1, 3, 3, 0, 3])
    p = np.array([0, 1, 1, 3, 3, 0, 0, 3])
    ours = M.quadratic_weighted_kappa(t, p)
    assert ours == pytest.approx(skm.cohen_kappa_score(t, p, weights="quadratic", labels=[0, 1, 2, 3]))
    assert ours != pytest.approx(skm.cohen_kappa_score(t, p, weights="quadratic"))


def test_reliability_curve_matches_sklearn_and_ece_by_hand():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(9)
    prob = rng.random(300)
    prob[:5] = [0.0, 0.1, 0.5, 0.9, 1.0]            # values on bin edges
    t = (rng.random(300) < prob ** 2).astype(int)
    curve = M.reliability_curve(t, prob, n_bins=10)
    prob_true, prob_pred = calibration_curve(t, prob, n_bins=10)
    np.testing.assert_allclose(curve.observed, prob_true)
    np.testing.assert_allclose(curve.confidence, prob_pred)
    ece = sum(n / 300 * abs(o - c) for o, c, n in zip(prob_true, prob_pred, curve.count))
    assert M.expected_calibration_error(t, prob) == pytest.approx(ece)
    # a perfectly calibrated step predictor has ECE 0
    assert M.expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    # multi-class: top-label confidence vs accuracy
    p3 = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert M.expected_calibration_error([0, 1, 1], p3, n_bins=10) == pytest.approx((0.2 + 0.6 + 0.3) / 3)


def test_bootstrap_ci_is_seeded_and_resamples_patients():
    rng = np.random.default_rng(10)
    t = rng.integers(0, 2, 40)
    s = rng.random(40) + 0.6 * t
    a = M.bootstrap_ci(M.auroc, t, s, n=300, seed=1)
    b = M.bootstrap_ci(M.auroc, t, s, n=300, seed=1)
    assert a == b and a.low < a.estimate < a.high and a.estimate == pytest.approx(skm.roc_auc_score(t, s))
    # five images per patient: resampling patients gives exactly the interval of one image per patient;
    # resampling images as if independent makes it falsely narrow.
    t5, s5, patients = np.repeat(t, 5), np.repeat(s, 5), np.repeat(np.arange(40), 5)
    by_patient = M.bootstrap_ci(M.auroc, t5, s5, groups=patients, n=300, seed=1)
    assert by_patient.low == pytest.approx(a.low) and by_patient.high == pytest.approx(a.high)
    by_image = M.bootstrap_ci(M.auroc, t5, s5, n=300, seed=1)
    assert by_image.high - by_image.low < 0.7 * (a.high - a.low)


def test_bootstrap_ci_skips_single_class_resamples():
    t = np.array([0] * 9 + [1])
    s = np.linspace(0, 1, 10)
    result = M.bootstrap_ci(M.auroc, t, s, n=200, seed=0)
    assert result.n_skipped > 30                      # about (9/10)^10 = 35% of resamples have no positive
    assert result.n_resamples + result.n_skipped == 200
    assert 0 <= result.low <= result.high <= 1
    per_class = M.bootstrap_ci(lambda yt, yp: M.sensitivity(yt, yp, average=None), t, (s > 0.5).astype(int), n=50)
    assert np.shape(per_class.low) == (2,)
