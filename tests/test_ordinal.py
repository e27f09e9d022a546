"""Ordinal grades and frame-to-clip aggregation (medlab.ordinal)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab import ordinal
from medlab.errors import ParameterError


def test_cumulative_targets_encode_the_grade_as_thresholds():
    t = ordinal.cumulative_targets([0, 1, 2, 3], 4)
    assert t.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    with pytest.raises(ParameterError, match="0 .. 3"):
        ordinal.cumulative_targets([4], 4)


def test_ordinal_loss_punishes_distant_grades_more():
    loss = ordinal.OrdinalLoss(4)
    confident_grade0 = torch.tensor([[-6.0, -6.0, -6.0]])
    near = loss(confident_grade0, torch.tensor([1]))
    far = loss(confident_grade0, torch.tensor([3]))
    right = loss(confident_grade0, torch.tensor([0]))
    assert right < near < far
    with pytest.raises(ParameterError, match="output_size"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_ordinal_probabilities_are_a_distribution_even_for_inconsistent_thresholds():
    logits = np.array([[5.0, -5.0, 5.0], [-5.0, -5.0, -5.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    p = ordinal.class_probabilities(logits, "ordinal")
    assert p.shape == (4, 4)
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)
    # the third threshold cannot be more likely than the second: the running minimum removes it
    assert ordinal.predict_grades(p, "ordinal").tolist()[:3] == [1, 0, 3]
    assert ordinal.expected_grade(p)[2] == pytest.approx(3.0, abs=0.03)


def test_nominal_probabilities_are_softmax():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    p = ordinal.class_probabilities(logits, "nominal")
    assert np.allclose(p, torch.softmax(logits, 1).numpy())
    assert ordinal.predict_grades(p, "nominal").tolist() == [1]
    assert ordinal.output_size(4, "nominal") == 4 and ordinal.output_size(4, "ordinal") == 3
    with pytest.raises(ParameterError, match="mode"):
        ordinal.output_size(4, "regression")


def test_severity_metrics_against_scikit_learn():
    from sklearn.metrics import cohen_kappa_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.clip(y + rng.integers(-1, 2, 200), 0, 3)
    m = ordinal.severity_metrics(y, p, 4)
    assert m["accuracy"] == pytest.approx(np.mean(y == p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["qwk"] == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))


def _one_hot(grades, k=4, sharp=0.9):
    p = np.full((len(grades), k), (1 - sharp) / (k - 1))
    p[np.arange(len(grades)), grades] = sharp
    return p


def test_max_and_mean_aggregation_differ_as_the_rules_say():
    clip = _one_hot([0, 0, 0, 3])  # one frame shows white lung
    assert ordinal.aggregate_clips([clip], "max").tolist() == [3]
    assert ordinal.aggregate_clips([clip], "mean").tolist() == [1]  # mean expected grade 0.9 -> 1
    nominal = _one_hot([2, 2, 0], k=3)
    assert ordinal.aggregate_clips([nominal], "mean", mode="nominal").tolist() == [2]
    with pytest.raises(ParameterError, match="aggregator"):
        ordinal.aggregate_clips([clip], "learned")


def test_learned_aggregate_learns_a_rule_that_max_gets_wrong():
    # clip grade = worst frame, but the frame model calls one spurious frame per clip one grade too high
    rng = np.random.default_rng(1)

    def clips(n):
        labels = rng.integers(0, 4, n)
        out = []
        for g in labels:
            frames = rng.integers(0, g + 1, 8)
            frames[0] = g
            frames[1] = min(g + 1, 3)
            out.append(_one_hot(frames, sharp=0.8))
        return np.stack(out), labels

    train, y_train = clips(200)
    test, y_test = clips(100)
    agg = ordinal.LearnedAggregator("ordinal").fit(train, y_train)
    learned = np.mean(ordinal.aggregate_clips(test, "learned", aggregator=agg) == y_test)
    by_max = np.mean(ordinal.aggregate_clips(test, "max") == y_test)
    assert learned > by_max + 0.2
    with pytest.raises(ParameterError, match="two grades"):
        ordinal.LearnedAggregator().fit(train[:3], [1, 1, 1])
    with pytest.raises(ParameterError, match="fit"):
        ordinal.LearnedAggregator().predict(test)


def test_clip_features_do_not_depend_on_clip_length():
    short = _one_hot([0, 3])
    long = np.concatenate([short] * 5)
    assert np.allclose(ordinal.clip_features(short), ordinal.clip_features(long))


def test_group_clips_keeps_files_together():
    probs = _one_hot([0, 1, 2, 0], k=3)
    clips, labels = ordinal.group_clips(probs, [2, 2, 0, 2], ["a", "a", "b", "a"])
    assert [len(c) for c in clips] == [3, 1] and labels.tolist() == [2, 0]


def test_cam_fraction_in_mask():
    cams = np.zeros((2, 4, 4))
    cams[0, :2] = 1.0  # all heat in the top half
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2] = True
    frac = ordinal.cam_fraction_in_mask(cams, masks)
    assert frac[0] == pytest.approx(1.0) and np.isnan(frac[1])
    with pytest.raises(ParameterError, match="non-negative"):
        ordinal.cam_fraction_in_mask(-cams - 1, masks)


def test_cam_targets_point_at_the_last_threshold_passed():
    p = _one_hot([0, 2, 3])
    assert ordinal.cam_targets(p, "ordinal") == [0, 1, 2]
    assert ordinal.cam_targets(_one_hot([1, 0], k=3), "nominal") == [1, 0]


def test_a_tiny_ordinal_model_trains_and_predicts_clips():
    from torch.utils.data import DataLoader

    from medlab.data import make_splits, phantoms
    from medlab.models import build_classifier
    from medlab.train import fit

    splits = make_splits("lung_ultrasound", 32, 8, 8, size=32, seed=0)
    model = build_classifier("small_cnn", ordinal.output_size(4), 1)
    fit(model, DataLoader(splits["train"], batch_size=16), loss=ordinal.OrdinalLoss(4), epochs=1, device="cpu",
        seed=0, progress=False)
    clips = phantoms.lung_ultrasound_clips(3, frames=2, size=32, seed=1)
    probs = ordinal.predict_probabilities(model, clips.images, device="cpu")
    assert probs.shape == (3, 2, 4) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    again = ordinal.predict_probabilities(model, clips.images, device="cpu")
    assert np.array_equal(probs, again)
    assert ordinal.aggregate_clips(probs, "max").shape == (3,)


def test_knobs_per_profile():
    assert ordinal.knobs("smoke")["clip_frames"] < ordinal.knobs("gpu")["clip_frames"]
    assert ordinal.knobs("custom") == ordinal.knobs("cpu")


def test_pocus_arrays_reads_the_real_layout_and_drops_viral(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "covid19_ultrasound" / "data" / "pocus_images" / "convex"
    folder.mkdir(parents=True)
    for prefix in ("Cov", "Pne", "Reg", "Vir"):
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(folder / f"{prefix}_{i}.png")
    images, labels, groups = ordinal.pocus_arrays("all", size=16, root=tmp_path)
    assert images.shape == (18, 1, 16, 16) and set(labels.tolist()) == {0, 1, 2}
    assert len(set(groups.tolist())) == 18


def test_load_severity_data_names_the_sources_it_takes():
    from medlab import profiles

    with pytest.raises(ParameterError, match="pocus"):
        ordinal.load_severity_data("medmnist:pneumoniamnist", profiles.resolve("smoke"))
    small = profiles.resolve("smoke").replace(n_train=8, n_val=4, n_test=4, image_size=32)
    data = ordinal.load_severity_data("phantom", small, seed=0, probe="linear")
    assert data.mode == "ordinal" and data.num_classes == 4
    assert data.findings.shape == (4, 32, 32) and data.findings.any()


def test_published_table_marks_missing_numbers():
    text = ordinal.published_table({"frame_accuracy": 0.8}, "phantom")
    assert "accuracy 0.80" in text and "F1 about 0.65" in text and "| accuracy - |" in text
