"""fit(compile=...): torch.compile (CUDA graphs on CUDA with "reduce-overhead") behind the same loop, on the CPU."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medlab import train as T
from medlab.errors import ParameterError
from medlab.models import SmallCNN


def toy_loaders(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.randn(64, 1, 12, 12, generator=g) * 0.5
    x[y == 1, :, 3:8, 3:8] += 1.0
    train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=16, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=16)
    return train, val


def model(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(1, 2, width=4, depth=2, dropout=0.0)


def test_resolve_compile_values_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for off in (None, False, "off", "OFF", "none", "no"):
        assert T.resolve_compile(off, cpu) is None and T.resolve_compile(off, cuda) is None
    assert T.resolve_compile("auto", cpu) is None                      # off on the CPU
    assert T.resolve_compile("auto", cuda) == "reduce-overhead"        # CUDA graphs on CUDA
    assert T.resolve_compile(True, cpu) == "default"
    for mode in T.COMPILE_MODES:
        assert T.resolve_compile(mode, cpu) == mode
    for bad in ("fast", 1, "reduce_overhead", ["default"]):
        with pytest.raises(ParameterError, match="compile must be"):
            T.resolve_compile(bad, cpu)
    with pytest.raises(ParameterError, match="compile must be"):      # refused before any work
        T.fit(model(), *toy_loaders(), epochs=1, device="cpu", compile="turbo", progress=False)


def _compiler_works() -> str | None:
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception as error:  # noqa: BLE001
        return f"torch.compile does not work here ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    finally:
        torch._dynamo.reset()
    return None


def test_fit_with_compile_gives_the_same_history_and_learns():
    reason = _compiler_works()
    if reason:
        pytest.skip(f"SKIPPED LOUDLY: fit(compile=...) is not tested on this machine: {reason}")
    plain = T.fit(model(), *toy_loaders(), epochs=3, lr=0.02, device="cpu", seed=0, progress=False)
    net = model()
    try:
        compiled = T.fit(net, *toy_loaders(), epochs=3, lr=0.02, device="cpu", seed=0, progress=False,
                         compile="reduce-overhead", metrics={"auroc": lambda y, p: float(p[:, 1].mean())})
    finally:
        torch._dynamo.reset()
    assert isinstance(compiled, T.History)
    assert set(compiled.keys()) == set(plain.keys()) | {"val_auroc"}
    assert len(compiled) == 3 and len(compiled.epoch_seconds) == 3
    assert compiled["train_loss"][-1] < compiled["train_loss"][0]           # it trains
    # the same arithmetic as the eager loop, up to the compiler's reordering of floating-point sums
    assert compiled["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-3, abs=1e-4)
    assert not hasattr(net, "_orig_mod")                                    # the caller's model stays uncompiled
    assert T.evaluate(net, toy_loaders()[1], loss="cross_entropy", device="cpu")["loss"] == \
        pytest.approx(compiled["val_loss"][-1], rel=1e-3)                   # and holds the trained weights
