"""medlab.compute: the FLOPs medlab.train counts, the T4 estimate, and where it is written and shown."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import medlab
from medlab import compute, runner
from medlab import train as T


def data(n=24, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def flop_counter(fn) -> int:
    """What torch's FlopCounterMode counts for ``fn()``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_fit_counts_what_flop_counter_mode_counts_for_the_same_steps():
    x, y = data()
    train = DataLoader(TensorDataset(x, y), batch_size=6)            # 4 steps of 6
    val = DataLoader(TensorDataset(*data(n=12, seed=1)), batch_size=6)  # 2 batches of 6
    net = model()
    compute.reset()
    T.fit(net, train, val, epochs=3, device="cpu", amp=None, progress=False)
    counted = compute.tally()
    step = flop_counter(lambda: F.cross_entropy(model()(x[:6]), y[:6]).backward())
    forward = flop_counter(lambda: model()(x[:6]))
    assert step > 2 * forward > 0                                      # backward counted too
    assert counted.flops == {"fp32": 3 * 4 * step + 3 * 2 * forward, "fp16": 0}
    assert counted.seconds > 0 and counted.loops == 2 and counted.batches == 3 * 4 + 3 * 2


def test_a_smaller_last_batch_is_counted_exactly_and_amp_auto_is_fp16_on_a_t4():
    x, y = data(n=20)
    compute.reset()
    T.fit(model(), DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, device="cpu", progress=False)
    full = flop_counter(lambda: F.cross_entropy(model()(x[:8]), y[:8]).backward())
    last = flop_counter(lambda: F.cross_entropy(model()(x[:4]), y[:4]).backward())
    assert compute.tally().flops == {"fp32": 0, "fp16": 2 * full + last}   # amp="auto" runs float16 on a T4


def test_predict_and_evaluate_are_counted():
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    net = model()
    forward = flop_counter(lambda: net(x[:8]))
    compute.reset()
    T.predict(net, loader, device="cpu", amp=None)
    T.evaluate(net, loader, loss="cross_entropy", device="cpu", amp=None)
    assert compute.tally().flops["fp32"] == 2 * 3 * forward and compute.tally().loops == 2


def test_counting_changes_nothing_in_training():
    x, y = data()
    results = []
    for meter in (None, compute.Meter()):
        net = model()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
        torch.manual_seed(1)
        T.train_one_epoch(net, DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True), nn.CrossEntropyLoss(),
                          optimizer, torch.device("cpu"), meter=meter)
        results.append(net.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_t4_precision():
    assert [compute.t4_precision(a) for a in ("auto", True, "fp16", None, False, "off", "bf16")] == \
        ["fp16", "fp16", "fp16", "fp32", "fp32", "fp32", "fp32"]


def test_estimate_formula():
    tally = compute.Tally(flops={"fp32": 7e12, "fp16": 19.6e12}, seconds=10.0, loops=3)
    cpu = compute.estimate_t4(tally, wall_s=100.0, device_type="cpu")
    rate32, rate16 = compute.T4_SUSTAINED_FLOPS["fp32"], compute.T4_SUSTAINED_FLOPS["fp16"]
    assert cpu["t4_compute_s"] == pytest.approx(7e12 / rate32 + 19.6e12 / rate16, abs=0.01)
    assert cpu["rest_s"] == 90.0 and cpu["t4_estimate_s"] == pytest.approx(cpu["t4_compute_s"] + 90.0, abs=0.1)
    assert cpu["flops"] == int(26.6e12) and cpu["wall_time_s"] == 100.0
    # measured on a GPU, the counted loops take at least as long on a T4 as they took there
    slow = compute.Tally(flops={"fp32": 0, "fp16": 1e9}, seconds=30.0)
    assert compute.estimate_t4(slow, 40.0, "cuda")["t4_estimate_s"] == 40.0
    assert compute.estimate_t4(slow, 40.0, "cpu")["t4_estimate_s"] == pytest.approx(10.0, abs=0.1)
    # the rates are a fraction of the published peaks
    assert all(0 < compute.T4_SUSTAINED_FLOPS[p] < compute.T4_PEAK_FLOPS[p] for p in compute.PRECISIONS)


def test_format_duration_and_report_line():
    assert [compute.format_duration(s) for s in (4.2, 89, 125, 600, 7200)] == ["4 s", "89 s", "2.1 min", "10 min",
                                                                                  "2.0 h"]
    estimate = compute.estimate_t4(compute.Tally(flops={"fp32": 0, "fp16": 294e12}, seconds=20.0), 41.0, "cuda")
    line = compute.report_line(estimate, "cuda", "NVIDIA H200")
    assert line.startswith("This run: 41 s on cuda (NVIDIA H200). Estimated on a T4: about 51 s")


def test_setup_resets_and_record_writes_and_prints_the_estimate(tmp_path, capsys):
    compute.add(1e15, "fp32", 5.0)                      # left over from before the lesson: not counted
    medlab.setup("99_test", profile="smoke", device="cpu", output_dir=tmp_path, quiet=True)
    assert compute.tally().total_flops == 0
    x, y = data()
    T.fit(model(), DataLoader(TensorDataset(x, y), batch_size=6), epochs=1, device="cpu", progress=False)
    medlab.record(score=1.0)
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["compute_flops"] == compute.tally().total_flops > 0
    assert document["t4_estimate_s"] == document["compute"]["t4_estimate_s"] >= 0
    assert document["compute"]["counted_s"] <= document["compute"]["wall_time_s"]
    assert "Estimated on a T4" not in capsys.readouterr().out          # quiet
    medlab.setup("99_test", profile="smoke", device="cpu", output_dir=tmp_path)
    capsys.readouterr()
    medlab.record(score=1.0)
    assert "This run:" in capsys.readouterr().out


def test_the_runner_summary_shows_each_notebook_t4_estimate(notebook_factory, tmp_path):
    params = 'PROFILE = "auto"\nSEED = 0\nOUTPUT_DIR = "."\n'
    notebook_factory("01_trains", params, (
        "import medlab, torch\n"
        "ctx = medlab.setup('01_trains', profile=PROFILE, seed=SEED, device='cpu', output_dir=OUTPUT_DIR)\n"
        "data = torch.utils.data.TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,)))\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 2))\n"
        "medlab.train.fit(net, torch.utils.data.DataLoader(data, batch_size=8), device='cpu', progress=False)\n"
        "medlab.record(done=1)"))
    out = tmp_path / "run"
    [result] = runner.run_notebooks(["01"], profile="smoke", out=out, folder=notebook_factory.folder, timeout=120)
    assert result.status == "passed" and result.t4_estimate_s is not None
    document = json.loads((out / "01_trains" / "metrics.json").read_text())
    assert document["compute_flops"] > 0 and result.t4_estimate_s == document["t4_estimate_s"]
    summary = (out / "summary.md").read_text()
    assert "| T4 estimate |" in summary and f"about {compute.format_duration(result.t4_estimate_s)}" in summary
    executed = json.dumps(json.loads((out / result.executed).read_text())["cells"])
    assert "Estimated on a T4" in executed
    # a results.json written before the column existed still renders
    payload = json.loads((out / "results.json").read_text())
    del payload["results"][0]["t4_estimate_s"]
    (out / "results.json").write_text(json.dumps(payload))
    assert runner.rerender(out)[0].t4_estimate_s == result.t4_estimate_s


def test_resolve_amp_does_not_pick_emulated_bfloat16(monkeypatch):
    """A T4 says True to is_bf16_supported() (emulation); autocast must pick float16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert T.resolve_amp("auto", "cuda") == torch.float16


def test_format_flops():
    assert [compute.format_flops(f) for f in (12, 1.82e9, 3.2e12, 1.1e15)] == ["12 FLOP", "1.82 GFLOP", "3.2 TFLOP",
                                                                                "1.1 PFLOP"]
