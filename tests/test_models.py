"""medlab.models: the factory, the weights policy (offline, no network calls), U-Net."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn as nn

from medlab import models
from medlab.errors import DataNotFoundError, ParameterError
from medlab.models import UNet, build_classifier, count_parameters, freeze_backbone, pixel_shares, unfreeze




@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME and a download function that fails at once, as offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch", calls


def fake_imagenet_file(torch_home, name="resnet18"):
    """Put a random 3-channel, 1000-class state dict where torchvision expects its ImageNet file."""
    from torchvision.models import get_model, get_model_weights

    url = get_model_weights(name).DEFAULT.url
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(123)
    state = get_model(name, weights=None).state_dict()
    torch.save(state, folder / url.rsplit("/", 1)[-1])
    return state


def test_every_classifier_builds_for_grey_images():
    x = torch.randn(2, 1, 64, 64)
    heads = {}
    for name in models.CLASSIFIERS:
        model = build_classifier(name, num_classes=3, in_channels=1).eval()
        with torch.no_grad():
            assert model(x).shape == (2, 3), name
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == 1
        heads[name] = model.medlab_head
        assert model.medlab_config == {"name": name, "num_classes": 3, "in_channels": 1, "weights": None}
    assert heads["resnet18"] == "fc" and heads["densenet121"] == "classifier"
    assert heads["mobilenet_v3_small"] == "classifier.3"


def test_small_cnn_is_small_and_rgb_works():
    model = build_classifier("small_cnn", num_classes=2, in_channels=3)
    assert count_parameters(model)["total"] < 50_000
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 2)


def test_imagenet_offline_error_says_how_to_prefetch(offline_torch_home):
    torch_home, calls = offline_torch_home
    with pytest.raises(models.WeightsNotFoundError) as info:
        build_classifier("resnet18", num_classes=2, weights="imagenet", progress=False)
    message = str(info.value)
    assert isinstance(info.value, DataNotFoundError)
    assert "resnet18-f37072fd.pth" in message                       # which file
    assert str(torch_home / "hub" / "checkpoints") in message       # where it goes
    assert "get_model('resnet18', weights='DEFAULT')" in message    # how to pre-fetch
    assert "TORCH_HOME" in message and "weights=None" in message
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]


def test_imagenet_from_cache_sums_first_layer_over_colour(offline_torch_home):
    torch_home, calls = offline_torch_home
    fake = fake_imagenet_file(torch_home)
    grey = build_classifier("resnet18", num_classes=2, in_channels=1, weights="imagenet", progress=False)
    assert calls == []                                                # read from the cache, no download
    torch.testing.assert_close(grey.conv1.weight, fake["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey.layer3[1].conv2.weight, fake["layer3.1.conv2.weight"])
    assert grey.fc.out_features == 2 and not torch.equal(grey.fc.weight[:2], fake["fc.weight"][:2])
    # a grey image gives the same features as the RGB image (x, x, x) through the original layer
    x = torch.randn(1, 1, 16, 16)
    conv = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    conv.weight.data = fake["conv1.weight"]
    torch.testing.assert_close(grey.conv1(x), conv(x.repeat(1, 3, 1, 1)))

    rgb = build_classifier("resnet18", num_classes=5, in_channels=3, weights="imagenet", progress=False)
    torch.testing.assert_close(rgb.conv1.weight, fake["conv1.weight"])
    two = build_classifier("resnet18", num_classes=5, in_channels=2, weights="imagenet", progress=False)
    torch.testing.assert_close(two.conv1.weight, fake["conv1.weight"][:, :2] * 1.5)


def test_corrupt_cached_file_says_delete_it(offline_torch_home):
    torch_home, _ = offline_torch_home
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(models.WeightsNotFoundError, match="could not be loaded"):
        build_classifier("resnet18", num_classes=2, weights="imagenet", progress=False)


def test_weights_from_state_dict_file_and_medlab_checkpoint(tmp_path):
    from medlab.train import save_checkpoint

    torch.manual_seed(0)
    source = build_classifier("small_cnn", num_classes=3, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    torch.save(source.state_dict(), tmp_path / "state.pt")
    save_checkpoint(tmp_path / "ckpt.pt", source, epoch=4)
    for path in (tmp_path / "state.pt", str(tmp_path / "ckpt.pt")):
        torch.manual_seed(99)
        loaded = build_classifier("small_cnn", num_classes=3, in_channels=1, weights=path).eval()
        torch.testing.assert_close(loaded(x), source(x))
    # DataParallel / torch.compile prefixes are stripped
    prefixed = {"module." + k: v for k, v in source.state_dict().items()}
    loaded = models.load_weights(build_classifier("small_cnn", 3), prefixed).eval()
    torch.testing.assert_close(loaded(x), source(x))


def test_weights_errors_are_clear(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        build_classifier("small_cnn", 2, weights=tmp_path / "missing.pt")
    torch.save(build_classifier("small_cnn", 3).state_dict(), tmp_path / "three.pt")
    with pytest.raises(ParameterError, match="num_classes"):
        build_classifier("small_cnn", 2, weights=tmp_path / "three.pt")
    with pytest.raises(ParameterError, match="no ImageNet"):
        build_classifier("small_cnn", 2, weights="imagenet")
    with pytest.raises(ParameterError, match="unknown classifier"):
        build_classifier("resnet19", 2)
    with pytest.raises(ParameterError, match="num_classes"):
        build_classifier("small_cnn", 0)


def test_freeze_and_unfreeze_backbone():
    model = build_classifier("resnet18", num_classes=4, in_channels=1)
    total = count_parameters(model)["total"]
    freeze_backbone(model)
    counts = count_parameters(model)
    assert counts == {"trainable": 512 * 4 + 4, "frozen": total - (512 * 4 + 4), "total": total}
    assert all(p.requires_grad == name.startswith("fc.") for name, p in model.named_parameters())
    # a step moves only the head
    before = model.conv1.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    opt.step()
    assert torch.equal(model.conv1.weight, before) and model.conv1.weight.grad is None
    unfreeze(model)
    assert count_parameters(model)["trainable"] == total


@pytest.mark.parametrize("norm", ["batch", "instance", "group", None])
def test_unet_shapes_any_size(norm):
    model = UNet(in_channels=1, num_classes=3, base_channels=4, depth=3, norm=norm)
    for size in [(32, 32), (37, 50), (9, 8)]:
        out = model(torch.randn(2, 1, *size))
        assert out.shape == (2, 3, *size)
    assert len(model.encoder) == 4 and len(model.decoder) == 3


def test_unet_structure_and_skips_matter():
    model = UNet(in_channels=2, num_classes=2, base_channels=8, depth=2).eval()
    assert [block[0].out_channels for block in model.encoder] == [8, 16, 32]
    assert [block[0].in_channels for block in model.decoder] == [32, 16]       # skip + up-sampled
    x = torch.randn(1, 2, 16, 16)
    out = model(x)
    # changing one pixel changes outputs near it even at full resolution (the skip carries it)
    x2 = x.clone()
    x2[0, :, 3, 3] += 5
    diff = (model(x2) - out).abs()[0].sum(0)
    assert diff[3, 3] > 0 and diff[12:, 12:].sum() < diff[:6, :6].sum()
    with pytest.raises(ParameterError):
        UNet(norm="layer")


def test_unet_learns_a_mask():
    torch.manual_seed(0)
    x = torch.zeros(8, 1, 16, 16)
    y = torch.zeros(8, 16, 16, dtype=torch.long)
    for i in range(8):
        r, c = 2 + i % 5, 3 + (i * 3) % 7
        x[i, 0, r:r + 6, c:c + 6] = 1.0
        y[i, r:r + 6, c:c + 6] = 1
    x += 0.1 * torch.randn_like(x)
    model = UNet(1, 2, base_channels=4, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    from medlab.metrics import dice

    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert dice(pred.numpy() == 1, y.numpy() == 1) > 0.9


def test_pixel_shares_count_every_class():
    masks = torch.tensor([[[0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]]])    # 10 background, 2 lesion pixels
    assert pixel_shares(masks, 2) == pytest.approx([10 / 12, 2 / 12])
    assert pixel_shares(masks, 3) == pytest.approx([10 / 13, 2 / 13, 1 / 13])  # an absent class counts as one
    with pytest.raises(ParameterError, match="0..1"):
        pixel_shares(masks + 1, 2)


def test_unet_class_prior_sets_only_the_output_bias():
    torch.manual_seed(3)
    plain = UNet(1, 2, base_channels=4, depth=2)
    torch.manual_seed(3)
    primed = UNet(1, 2, base_channels=4, depth=2, class_prior=[0.98, 0.02])
    for (name, a), (_, b) in zip(plain.state_dict().items(), primed.state_dict().items()):
        if name != "head.bias":                                  # same draws: every other weight is the same
            assert torch.equal(a, b), name
    assert torch.softmax(primed.head.bias, 0).tolist() == pytest.approx([0.98, 0.02])
    # untrained, as training first sees it (batch statistics): the outputs move by the bias alone, and the
    # network with the prior calls no pixel lesion where PyTorch's bias calls 99.9 % of them (this seed) lesion
    torch.manual_seed(1)
    plain = UNet(1, 2, base_channels=4, depth=2)
    torch.manual_seed(1)
    primed = UNet(1, 2, base_channels=4, depth=2, class_prior=[0.98, 0.02])
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        out = {name: m.train()(x) for name, m in (("plain", plain), ("primed", primed))}
    shift = (primed.head.bias - plain.head.bias).detach().view(1, 2, 1, 1)
    torch.testing.assert_close(out["primed"], out["plain"] + shift)
    share = {name: float((o.argmax(1) == 1).float().mean()) for name, o in out.items()}
    assert share["primed"] == 0.0 and share["plain"] > 0.9
    for bad in ([1.0], [0.5, 0.0], [0.5, float("nan")]):
        with pytest.raises(ParameterError, match="class_prior"):
            UNet(1, 2, class_prior=bad)
