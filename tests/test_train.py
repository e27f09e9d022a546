"""medlab.train: determinism, the GPU code paths on the CPU, checkpoints and resume, early stopping."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from medlab import metrics as M
from medlab import train as T
from medlab.errors import ParameterError
from medlab.models import SmallCNN, UNet




def toy_data(n=48, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 1, size, size, generator=g) * 0.5
    x[y == 1, :, 3:8, 3:8] += 1.0                     # a bright square marks class 1
    return x, y


def loaders(seed=0, batch_size=16):
    x, y = toy_data(seed=seed)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(*toy_data(n=32, seed=seed + 1)), batch_size=16)
    return train, val


def small_model(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(1, 2, width=4, depth=2, dropout=0.2)


def test_fit_is_deterministic_for_a_seed_and_learns():
    histories = []
    for _ in range(2):
        model = small_model()
        train, val = loaders()
        histories.append(T.fit(model, train, val, epochs=4, lr=0.02, seed=7, metrics={"auroc": M.auroc},
                               progress=False))
    a, b = histories
    assert a.metrics == b.metrics and a.best_epoch == b.best_epoch
    assert set(a.keys()) == {"epoch", "lr", "train_loss", "val_loss", "val_auroc"}
    assert a["epoch"] == [1, 2, 3, 4] and len(a) == 4 and len(a.epoch_seconds) == 4
    assert a["train_loss"][-1] < a["train_loss"][0]
    assert a["val_auroc"][-1] > 0.8
    assert a.best_value == min(a["val_loss"]) and a["val_loss"][a.best_epoch - 1] == a.best_value
    # a different seed gives a different run
    other = T.fit(small_model(), loaders()[0], None, epochs=1, lr=0.02, seed=8, progress=False)
    assert other["train_loss"][0] != a["train_loss"][0] and other.monitor == "train_loss"


def test_history_is_plain_data():
    import json

    history = T.fit(small_model(), *loaders(), epochs=2, progress=False, seed=0)
    data = history.to_dict()
    assert json.loads(json.dumps(data)) == data
    back = T.History.from_dict(data)
    assert back.metrics == history.metrics and back.best_epoch == history.best_epoch


class DtypeSpy(nn.Module):
    """Wraps a model and records the dtype of its outputs and the memory format of its inputs."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.dtypes, self.channels_last = set(), set()

    def forward(self, x):
        self.channels_last.add(x.stride(1) == 1)     # channels are the fastest-moving dimension
        out = self.inner(x)
        self.dtypes.add(out.dtype)
        return out


def test_bf16_autocast_and_channels_last_run_on_cpu():
    spy = DtypeSpy(small_model())
    history = T.fit(spy, *loaders(), epochs=2, lr=0.02, amp="bf16", channels_last=True, device="cpu", seed=0,
                    progress=False)
    assert spy.dtypes == {torch.bfloat16}
    assert spy.channels_last == {True}
    conv = spy.inner.features[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.dtype == torch.float32                    # master weights stay float32
    assert all(np.isfinite(history["train_loss"])) and history["train_loss"][-1] < history["train_loss"][0]
    # evaluation and prediction under the same settings
    probs, targets = T.predict(spy, loaders()[1], amp="bf16", channels_last=True, device="cpu")
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_fp16_with_grad_scaler_runs_on_cpu():
    history = T.fit(small_model(), *loaders(), epochs=1, amp="fp16", device="cpu", seed=0, progress=False)
    assert np.isfinite(history["train_loss"][0])


def test_resolve_amp(monkeypatch):
    assert T.resolve_amp("auto", "cpu") is None
    assert T.resolve_amp(None, "cuda") is None
    assert T.resolve_amp("bf16", "cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert T.resolve_amp("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert T.resolve_amp(True, "cuda") == torch.float16
    with pytest.raises(ParameterError):
        T.resolve_amp("int8", "cpu")


def test_checkpoints_are_plain_dicts_and_resume_continues_exactly(tmp_path):
    straight = small_model()
    h_straight = T.fit(straight, *loaders(), epochs=3, lr=0.02, seed=3, scheduler="cosine",
                       checkpoint_dir=tmp_path / "a", progress=False)
    checkpoint = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert checkpoint["format"] == T.CHECKPOINT_FORMAT and checkpoint["epoch"] == 3
    assert checkpoint["history"]["metrics"] == h_straight.metrics
    assert (tmp_path / "a" / "best.pt").is_file()
    assert h_straight["lr"][0] > h_straight["lr"][1] > h_straight["lr"][2]     # cosine schedule

    class Interrupt(Exception):
        pass

    class InterruptedLoader:
        """The same batches, but the run is killed at the start of the second epoch."""

        def __init__(self, loader):
            self.loader, self.epochs = loader, 0

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            self.epochs += 1
            if self.epochs == 2:
                raise Interrupt
            return iter(self.loader)

    interrupted = small_model()
    train, val = loaders()
    with pytest.raises(Interrupt):
        T.fit(interrupted, InterruptedLoader(train), val, epochs=3, lr=0.02, seed=3, scheduler="cosine",
              checkpoint_dir=tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = small_model(seed=42)                      # different initial weights: all must come from the file
    torch.manual_seed(1234)                             # and a different RNG state
    h_resumed = T.fit(resumed, train, val, epochs=3, lr=0.02, scheduler="cosine", checkpoint_dir=tmp_path / "b",
                      resume=True, progress=False)
    assert h_resumed.metrics == h_straight.metrics
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_early_stopping_and_restore_best(tmp_path):
    calls = iter([0.5, 0.9, 0.7, 0.6, 0.8, 0.95, 0.99])
    history = T.fit(small_model(), *loaders(), epochs=7, seed=0, metrics={"score": lambda t, p: next(calls)},
                    monitor="val_score", early_stopping=2, restore_best=True, checkpoint_dir=tmp_path,
                    progress=False)
    assert history.mode == "max" and history["val_score"] == [0.5, 0.9, 0.7, 0.6]
    assert history.best_epoch == 2 and history.stopped_early
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert best["epoch"] == 2 and last["epoch"] == 4
    model = small_model()
    T.load_checkpoint(tmp_path / "best.pt", model)
    # restore_best put the best epoch's weights back into the trained model
    restored = small_model()
    T.fit(restored, *loaders(), epochs=7, seed=0, metrics={"score": lambda t, p, c=iter([0.5, 0.9, 0.7, 0.6]):
                                                           next(c)},
          monitor="val_score", early_stopping=2, restore_best=True, progress=False)
    for p, q in zip(model.state_dict().values(), restored.state_dict().values()):
        torch.testing.assert_close(p, q)


def test_evaluate_and_predict_match_a_manual_pass():
    model = small_model().eval()
    _, val = loaders()
    with torch.no_grad():
        x, y = next(iter(DataLoader(val.dataset, batch_size=len(val.dataset))))
        logits = model(x)
    result = T.evaluate(model, val, loss="cross_entropy", metrics={"auroc": M.auroc}, device="cpu")
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    probs = torch.softmax(logits, 1).numpy()
    assert result["auroc"] == pytest.approx(M.auroc(y.numpy(), probs))
    pred = T.predict(model, val, device="cpu")
    np.testing.assert_allclose(pred.y_prob, probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.y_true, y.numpy())
    raw, _ = T.predict(model, val, device="cpu", activation=None)
    np.testing.assert_allclose(raw, logits.numpy(), rtol=1e-5, atol=1e-5)
    model.train()
    T.evaluate(model, val, device="cpu")
    assert model.training                                   # mode restored


def test_inference_runs_without_autograd():
    seen = []
    model = small_model()
    model.register_forward_hook(lambda m, i, o: seen.append((torch.is_inference_mode_enabled(), o.requires_grad)))
    T.predict(model, [torch.randn(2, 1, 12, 12)], device="cpu")        # bare tensors, no targets
    assert seen == [(True, False)]


class DictSegmentation(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 1, 16, 16, generator=g)
        self.masks = (self.images[:, 0] > 0.5).long()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "mask": self.masks[i], "id": i}


def test_segmentation_with_dict_batches_and_dice_ce():
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2)
    loader = DataLoader(DictSegmentation(), batch_size=4)

    def mean_dice(y_true, y_prob):
        return M.reduce_cases(M.per_case(M.dice, y_prob.argmax(1), y_true, num_classes=2)[:, 0]).mean

    history = T.fit(model, loader, loader, loss="dice_ce", epochs=2, lr=0.01, metrics={"dice": mean_dice},
                    seed=0, progress=False)
    assert set(history.keys()) >= {"val_dice", "val_loss"} and 0 <= history["val_dice"][-1] <= 1


def test_undefined_metric_records_nan_and_warns():
    _, val = loaders()
    one_class = DataLoader(TensorDataset(torch.randn(8, 1, 12, 12), torch.zeros(8, dtype=torch.long)), batch_size=4)
    with pytest.warns(UserWarning, match="undefined"):
        history = T.fit(small_model(), one_class, one_class, epochs=1, metrics={"auroc": M.auroc}, progress=False)
    assert np.isnan(history["val_auroc"][0])


def test_progress_bar_is_one_bar_with_postfix(capsys):
    T.fit(small_model(), *loaders(), epochs=2, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "val_loss=" in err and "6/6" in err
    T.fit(small_model(), *loaders(), epochs=1, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_optimizer_as_learning_rate_name_or_instance():
    model = small_model()
    h = T.fit(model, *loaders(), epochs=1, optimizer=0.05, progress=False)
    assert h["lr"] == [0.05]
    opt = torch.optim.SGD(model.parameters(), lr=0.003)
    assert T.fit(model, *loaders(), epochs=1, optimizer=opt, progress=False)["lr"] == [0.003]
    assert T.fit(model, *loaders(), epochs=1, optimizer="sgd", lr=0.2, progress=False)["lr"] == [0.2]
    with pytest.raises(ParameterError, match="optimizer"):
        T.fit(model, *loaders(), epochs=1, optimizer="lion", progress=False)
    with pytest.raises(ParameterError, match="monitor"):
        T.fit(model, *loaders(), epochs=1, monitor="val_auroc", progress=False)
    with pytest.raises(ParameterError, match="does not exist"):
        T.load_checkpoint("nowhere.pt")


def test_nan_loss_warns():
    model = small_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.warns(UserWarning, match="lower the learning rate"):
            T.fit(model, loaders()[0], None, loss=lambda out, y: out.sum() * float("nan"), epochs=1, progress=False)
