"""The pretrained weights cache (medlab.models.pretrained): phantom pretraining cached by its configuration,
ImageNet failing clearly offline, weights files, and the pretrained network handed back with its old head."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from medlab.errors import ParameterError
from medlab.models import SmallCNN, WeightsNotFoundError, build_classifier, resolve_pretraining
from medlab.models import pretrained as pre


def tiny_config(**changes):
    args = dict(task="cxr_covid", arch="small_cnn", size=32, n=24, steps=2, lr=1e-2, width=4, batch_size=8, seed=0)
    args.update(changes)
    return pre.pretraining_config(**args)


def test_config_names_everything_that_shapes_the_weights():
    config = tiny_config()
    assert config["arch"] == "small_cnn" and config["task_knobs"] == pre.PRETRAIN_TASKS["cxr_covid"]
    assert {"medlab", "torch", "seed", "steps", "n", "size", "lr", "width", "batch_size"} <= set(config)
    assert tiny_config(arch="SmallCNN") == config
    with pytest.raises(ParameterError, match="unknown pretraining task"):
        tiny_config(task="mri")
    with pytest.raises(ParameterError, match="unknown classifier"):
        tiny_config(arch="vgg11")


def test_imagenet_needs_a_torchvision_network_and_fails_clearly_offline(tmp_path, monkeypatch):
    with pytest.raises(ParameterError, match="torchvision architectures"):
        resolve_pretraining("imagenet", {"arch": "small_cnn"})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsNotFoundError, match="resnet18"):
        resolve_pretraining("imagenet", {"arch": "resnet18"})


def test_phantom_pretraining_is_cached_by_configuration(tmp_path):
    config = tiny_config()
    first = resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    assert not first.from_cache and pre.cache_path(config, tmp_path).is_file()
    assert first.weights == str(pre.cache_path(config, tmp_path)) and 0.0 <= first.auroc <= 1.0
    assert first.history["metrics"]["train_loss"]
    second = resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    assert second.from_cache and second.weights == first.weights and second.auroc == first.auroc
    a, b = first.network(), second.network()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert pre.cache_path(tiny_config(seed=1), tmp_path) != pre.cache_path(config, tmp_path)
    # a damaged cache file is trained again rather than failing; the same seed gives the same result
    pre.cache_path(config, tmp_path).write_bytes(b"not a checkpoint")
    again = resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    assert not again.from_cache and again.auroc == first.auroc


def test_the_network_comes_back_with_its_pretraining_head_and_fresh_copies(tmp_path):
    config = tiny_config()
    resolved = resolve_pretraining("phantom", config, progress=False, root=tmp_path)
    net = resolved.network()
    assert isinstance(net, SmallCNN) and net.fc.out_features == 2  # normal against COVID-19: its own head
    saved = torch.load(resolved.weights, weights_only=True)["model"]
    assert torch.equal(net.fc.weight, saved["fc.weight"]) and torch.equal(net.features[0].weight,
                                                                       saved["features.0.weight"])
    other = resolved.network()
    net.fc.weight.data.zero_()  # a copy, not a shared network: changing one leaves the next untouched
    assert not torch.equal(other.fc.weight, net.fc.weight)


def test_pretraining_from_a_file_keeps_its_head_size(tmp_path):
    model = build_classifier("small_cnn", 3, width=4)
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    resolved = resolve_pretraining(str(path), {"arch": "small_cnn", "width": 4})
    assert resolved.source == "file" and resolved.weights == str(path) and resolved.from_cache
    net = resolved.network()
    assert net.fc.out_features == 3 and torch.equal(net.fc.weight, model.fc.weight)
    with pytest.raises(ParameterError, match="do not fit"):
        resolve_pretraining(str(path), {"arch": "small_cnn", "width": 8}).network()
    with pytest.raises(ParameterError, match="neither"):
        resolve_pretraining(str(tmp_path / "missing.pt"))
    with pytest.raises(ParameterError, match="pretraining_config"):
        resolve_pretraining("phantom")
