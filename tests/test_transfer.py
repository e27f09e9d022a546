"""Lesson 01's module: knobs, models, the pretraining cache, subsets, the learning curve and its summary."""
from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from medlab import transfer
from medlab.errors import ParameterError
from medlab.models import WeightsNotFoundError
from medlab.profiles import PROFILES


TINY = dict(steps=2, lr=1e-2, lr_finetune=3e-3, width=4)


def tiny_config(**changes):
    args = dict(task="cxr_covid", arch="small_cnn", size=32, n=24, steps=2, lr=1e-2, width=4, batch_size=8, seed=0)
    args.update(changes)
    return transfer.pretraining_config(**args)


def test_knobs_follow_profile_fields():
    cpu = transfer.lesson_knobs("cpu")
    assert cpu["sizes"][-1] == PROFILES["cpu"].n_train and list(cpu["sizes"]) == sorted(cpu["sizes"])
    small = PROFILES["gpu"].replace(n_train=48, epochs=1)
    knobs = transfer.lesson_knobs(small)
    assert knobs["sizes"] == (25, 48)
    assert knobs["steps"] < transfer.LESSON_KNOBS["gpu"]["steps"]
    assert knobs["pretrain_n"] < transfer.LESSON_KNOBS["gpu"]["pretrain_n"]


def test_classifier_name_aliases_and_errors():
    assert transfer.classifier_name("smallcnn") == "small_cnn"
    assert transfer.classifier_name("ResNet18") == "resnet18"
    with pytest.raises(ParameterError, match="unknown architecture"):
        transfer.classifier_name("vgg11")


def test_build_model_loads_backbone_and_keeps_a_new_head_of_another_size():
    source = transfer.build_model("small_cnn", num_classes=3, width=4)
    model = transfer.build_model("small_cnn", num_classes=2, width=4, weights=source.state_dict())
    assert model.fc.out_features == 2
    for (name, a), b in zip(model.features.state_dict().items(), source.features.state_dict().values()):
        assert torch.equal(a, b), name
    same = transfer.build_model("small_cnn", num_classes=3, width=4, weights=source.state_dict())
    assert torch.equal(same.fc.weight, source.fc.weight)
    with pytest.raises(ParameterError, match="do not fit"):
        transfer.build_model("small_cnn", num_classes=2, width=8, weights=source.state_dict())


def test_imagenet_needs_a_torchvision_network_and_fails_clearly_offline(tmp_path, monkeypatch):
    with pytest.raises(ParameterError, match="torchvision architectures"):
        transfer.resolve_pretraining("imagenet", {"arch": "small_cnn"})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsNotFoundError, match="resnet18"):
        transfer.resolve_pretraining("imagenet", {"arch": "resnet18"})


def test_phantom_pretraining_is_cached_by_configuration(tmp_path):
    config = tiny_config()
    first = transfer.resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    assert not first.from_cache and transfer.cache_path(config, tmp_path).is_file()
    assert 0.0 <= first.auroc <= 1.0
    second = transfer.resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    assert second.from_cache and second.weights == first.weights and second.auroc == first.auroc
    a = transfer.build_model("small_cnn", 2, width=4, weights=first.weights)
    b = transfer.build_model("small_cnn", 2, width=4, weights=second.weights)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = tiny_config(seed=1)
    assert transfer.cache_path(other, tmp_path) != transfer.cache_path(config, tmp_path)
    # a damaged cache file is trained again rather than failing
    transfer.cache_path(config, tmp_path).write_bytes(b"not a checkpoint")
    again = transfer.resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    assert not again.from_cache and again.auroc == first.auroc  # same seed, same result


def test_pretraining_from_a_file_and_bad_sources(tmp_path):
    model = transfer.build_model("small_cnn", 2, width=4)
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    resolved = transfer.resolve_pretraining(str(path))
    assert resolved.source == "file" and resolved.weights == str(path)
    with pytest.raises(ParameterError, match="neither"):
        transfer.resolve_pretraining(str(tmp_path / "missing.pt"))
    with pytest.raises(ParameterError, match="pretraining_config"):
        transfer.resolve_pretraining("phantom")
    with pytest.raises(ParameterError, match="unknown pretraining task"):
        tiny_config(task="mri")


def test_stratified_subset_keeps_proportions_and_is_reproducible():
    labels = np.array([0] * 75 + [1] * 25)
    index = transfer.stratified_subset(labels, 20, seed=3)
    assert len(index) == 20 and len(set(index.tolist())) == 20
    assert np.bincount(labels[index]).tolist() == [15, 5]
    assert np.array_equal(index, transfer.stratified_subset(labels, 20, seed=3))
    assert not np.array_equal(index, transfer.stratified_subset(labels, 20, seed=4))
    assert np.bincount(labels[transfer.stratified_subset(labels, 3, seed=0)]).min() >= 1
    assert np.array_equal(transfer.stratified_subset(labels, 100), np.arange(100))
    with pytest.raises(ParameterError):
        transfer.stratified_subset(labels, 1)
    with pytest.raises(ParameterError):
        transfer.stratified_subset(labels, 101)


@pytest.fixture(scope="module")
def tiny_curve(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    weights = transfer.resolve_pretraining("phantom", tiny_config(), progress=False, root=root).weights
    pool, test = transfer.target_data("phantom", 24, 40, 32, seed=0)
    result = transfer.learning_curve(pool, test, (8, 24), range(2), weights, "small_cnn", TINY, progress=False)
    return result, weights, pool, test


def test_learning_curve_runs_every_arm_size_and_seed(tiny_curve):
    result, weights, pool, test = tiny_curve
    assert len(result.rows) == 3 * 2 * 2
    assert {(r["arm"], r["size"], r["seed"]) for r in result.rows} == set(result.scores)
    assert all(0.0 <= r["auroc"] <= 1.0 for r in result.rows)
    assert all(p.shape == (len(test),) for p in result.scores.values())
    # the same seed gives the same numbers
    again = transfer.learning_curve(pool, test, (8,), [0], weights, "small_cnn", TINY, arms=("scratch", "finetune"),
                                    progress=False)
    for row in again.rows:
        match = [r for r in result.rows if (r["arm"], r["size"], r["seed"]) == (row["arm"], row["size"], row["seed"])]
        assert row["auroc"] == pytest.approx(match[0]["auroc"])
    with pytest.raises(ParameterError, match="pretrained weights"):
        transfer.learning_curve(pool, test, (8,), [0], None, "small_cnn", TINY, progress=False)


def test_summary_bootstrap_matches_sklearn_auroc(tiny_curve):
    from sklearn.metrics import roc_auc_score

    result = tiny_curve[0]
    summary = transfer.summarize(result, n_bootstrap=300, seed=0)
    assert len(summary) == 6
    for row in summary:
        values = result.auroc(row["arm"], row["size"])
        assert row["mean"] == pytest.approx(values.mean())
        assert row["low"] <= row["high"]
    # perfect scores: every resample has AUROC 1; with ties the rank formula must agree with scikit-learn
    y = np.array([0, 1] * 10)
    tied = np.where(y == 1, 0.7, 0.3)
    tied[:4] = 0.5
    fake = transfer.CurveResult([{"arm": "scratch", "size": 5, "seed": 0, "auroc": roc_auc_score(y, tied)}],
                                {("scratch", 5, 0): tied}, y, (5,), ("scratch",), (0,))
    row = transfer.summarize(fake, n_bootstrap=400)[0]
    assert row["low"] < roc_auc_score(y, tied) <= row["high"] <= 1.0
    perfect = transfer.CurveResult([{"arm": "scratch", "size": 5, "seed": 0, "auroc": 1.0}],
                                   {("scratch", 5, 0): y.astype(float)}, y, (5,), ("scratch",), (0,))
    row = transfer.summarize(perfect, n_bootstrap=50)[0]
    assert row["low"] == row["high"] == 1.0


def test_figures(tiny_curve):
    result, _, _, test = tiny_curve
    assert len(transfer.plot_learning_curve(result).axes) == 1
    assert len(transfer.plot_roc_arms(result, 8).axes[0].lines) == 4
    fig = transfer.misclassified_figure(result, test, "scratch", 8, k=4)
    assert fig is None or len(fig.axes) >= 1


def test_target_data_reads_medmnist(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "medmnist"
    folder.mkdir()
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(folder / "pneumoniamnist_64.npz", **arrays)
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    train, test = transfer.target_data("medmnist:pneumoniamnist", 10, 6, 60)
    assert len(train) == 10 and len(test) == 6 and tuple(train[0][0].shape) == (1, 64, 64)
    assert set(np.unique(train.labels)) == {0, 1}
