"""medlab.bench: the measurement machinery, on tiny cases (CPU, one thread)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from medlab import bench
from medlab.errors import ParameterError


TINY = dict(warmup=1, repeats=3, steps=1)


def test_summarize_median_spread():
    s = bench.summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 10.0 and s["n"] == 5
    assert s["iqr"] == pytest.approx(2.0)        # inclusive quartiles 2 and 4
    assert bench.summarize([7.0])["iqr"] == 0.0
    with pytest.raises(ParameterError):
        bench.summarize([])


def test_case_validation_and_names():
    case = bench.Case("resnet18", 64, 32, "infer", amp=True, channels_last=True)
    assert case.variant == "amp+channels_last"
    assert case.label == "resnet18@64 infer b32 amp+channels_last"
    assert bench.Case("unet", 128, 4, width=16).label == "unet16@128 train b4 fp32"
    for bad in (dict(model="vgg", size=64, batch_size=8), dict(model="unet", size=64, batch_size=8, mode="eval"),
                dict(model="unet", size=0, batch_size=8), dict(model="unet", size=64, batch_size=True),
                dict(model="resnet18", size=64, batch_size=8, width=8)):
        with pytest.raises(ParameterError):
            bench.Case(**bad)


def test_time_repeats_calls_and_excludes_warmup():
    calls = []
    times = bench.time_repeats(lambda: calls.append(time.sleep(0.002)), "cpu", warmup=2, repeats=3, steps=4)
    assert len(calls) == 2 + 3 * 4
    assert len(times) == 3 and all(t >= 4 * 0.002 for t in times)
    with pytest.raises(ParameterError):
        bench.time_repeats(lambda: None, "cpu", repeats=0)


def test_peak_memory_sees_a_temporary_allocation():
    with bench.PeakMemory("cpu", interval=0.001) as memory:
        block = np.ones(160 * 2**20 // 8)        # 160 MiB, touched
        time.sleep(0.05)
        del block
    assert memory.kind == "rss"
    assert memory.delta_mb > 100
    assert memory.peak_mb >= memory.start_mb + memory.delta_mb - 1e-6


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_measure_small_model_row(mode):
    ceiling = {"matmul_tflops": {"float32": 1e-3}}
    row = bench.measure(bench.Case("small_cnn", 16, 4, mode, width=4), "cpu", seed=0, ceiling=ceiling, **TINY)
    assert row["status"] == "ok", row["status"]
    assert row["kind"] == "model" and row["device"] == "cpu" and row["dtype"] == "float32"
    assert 0 < row["images_per_s_min"] <= row["images_per_s"] <= row["images_per_s_max"]
    assert row["images_per_s"] == pytest.approx(4 / (row["step_ms"] / 1000), rel=0.5)
    assert row["peak_memory_mb"] > 0 and row["memory_kind"] == "rss"
    assert row["flops_per_image"] > 0
    # training does forward and backward: about three times the forward FLOPs
    if mode == "train":
        infer = bench.measure(bench.Case("small_cnn", 16, 4, "infer", width=4), "cpu", **TINY)
        assert 2 < row["flops_per_image"] / infer["flops_per_image"] < 4
    achieved = row["flops_per_image"] * row["images_per_s"]
    assert row["achieved_tflops"] == pytest.approx(achieved / 1e12)
    assert row["ceiling_fraction"] == pytest.approx(achieved / 1e9)


def test_measure_gpu_paths_run_on_the_cpu():
    """bf16 autocast, channels_last and the U-Net's Dice loss all run on the CPU."""
    amp = bench.measure(bench.Case("small_cnn", 16, 2, "train", amp=True, width=4), "cpu", **TINY)
    assert amp["status"] == "ok" and amp["dtype"] == "bfloat16"
    cl = bench.measure(bench.Case("unet", 16, 2, "train", channels_last=True, width=4), "cpu", **TINY)
    assert cl["status"] == "ok" and cl["images_per_s"] > 0
    # mixed precision is set against the faster of float32 and its own dtype
    ceiling = {"matmul_tflops": {"float32": 2e-3, "bfloat16": 1e-3}}
    row = dict(amp, images_per_s=10.0)
    bench._add_ceiling_fraction(row, ceiling)
    assert row["ceiling_dtype"] == "float32"
    assert row["ceiling_fraction"] == pytest.approx(amp["flops_per_image"] * 10.0 / 2e9)


def test_compile_failure_and_oom_become_rows(monkeypatch):
    def broken_compile(model, *args, **kwargs):
        raise RuntimeError("no working C compiler\nlong traceback")

    monkeypatch.setattr(torch, "compile", broken_compile)
    row = bench.measure(bench.Case("small_cnn", 16, 2, "infer", compile=True, width=4), "cpu", **TINY)
    assert row["status"] == "not available: RuntimeError: no working C compiler"
    assert "images_per_s" not in row

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(bench, "build_model", oom)
    assert bench.measure(bench.Case("unet", 16, 2), "cpu", **TINY)["status"] == "out of memory"


def test_compiled_case_records_compile_time(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)     # stands in for the real compiler
    row = bench.measure(bench.Case("small_cnn", 16, 2, "infer", compile=True, width=4), "cpu", **TINY)
    assert row["status"] == "ok" and row["compile_s"] == row["first_step_s"] > 0


def test_ceiling_phantoms_and_loader():
    c = bench.measure_ceiling("cpu", matmul_n=64, copy_mb=1, repeats=3, dtypes=("float32",))
    assert c["matmul_tflops"]["float32"] > 0 and c["copy_gb_per_s"] > 0 and c["matmul_n"] == 64
    p = bench.measure_phantoms("ct_slice", size=16, n=8, repeats=2)
    assert p["kind"] == "phantom" and p["images_per_s"] > 0 and p["label"] == "ct_slice@16"
    with pytest.raises(ParameterError):
        bench.measure_phantoms("mri", size=16, n=4)
    rows = bench.measure_loader("chest_xray", size=16, n=16, batch_size=4, workers=(0,), repeats=2)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["workers"] == 0 and rows[0]["images_per_s"] > 0


def test_grids():
    full = bench.grid("full")
    assert bench.grid_for_profile("gpu").name == "gpu" and bench.grid_for_profile("smoke").name == "smoke"
    gpu_grid = bench.grid("gpu")
    assert {c.variant for c in gpu_grid.cases} == {c.variant for c in full.cases}
    assert sum(c.compile for c in gpu_grid.cases) < sum(c.compile for c in full.cases)
    combos = {(c.model, c.size) for c in full.cases}
    assert combos == {("resnet18", 64), ("resnet18", 224), ("resnet50", 224), ("densenet121", 224), ("unet", 128),
                      ("unet", 256)}
    resnet50 = [c for c in gpu_grid.cases if c.model == "resnet50"]
    assert {(c.mode, c.variant) for c in resnet50} == {(m, v) for m in ("train", "infer")
                                                        for v in ("fp32", "amp", "channels_last", "amp+channels_last")}
    for model, size in combos:
        for mode in ("train", "infer"):
            mine = [c for c in full.cases if (c.model, c.size, c.mode) == (model, size, mode)]
            assert {c.variant for c in mine} >= {"fp32", "amp", "channels_last", "compile"}
            assert len({c.batch_size for c in mine}) == 3
    assert full.loader[-1] == (0, 2, 4)
    from medlab.profiles import PROFILES

    gpu = PROFILES["gpu"]
    assert bench.grid_for_profile(gpu, torch.device("cuda")).name == "gpu"
    assert bench.grid_for_profile(gpu, torch.device("cpu")).name == "cpu"      # the full grid is for CUDA
    assert bench.grid_for_profile(gpu.replace(image_size=32), "cpu").name == "smoke"   # a shrunk profile
    assert len(bench.grid("smoke").cases) < len(bench.grid("cpu").cases) < len(full.cases)
    with pytest.raises(ParameterError):
        bench.grid("huge")


def tiny_grid():
    cases = (bench.Case("small_cnn", 16, 2, "train", width=4), bench.Case("small_cnn", 16, 2, "infer", width=4),
             bench.Case("small_cnn", 16, 2, "infer", compile=True, width=4))
    return bench.Grid("tiny", cases, phantoms=(("ct_slice", 16, 8),), loader=("ct_slice", 16, 16, 4, (0,)),
                      warmup=1, repeats=2, steps=1, ceiling={"matmul_n": 64, "copy_mb": 1})


def test_run_writes_json_and_reloads(tmp_path):
    path = tmp_path / "bench.json"
    lines = []
    results = bench.run(tiny_grid(), device="cpu", compile="no", progress=False, out=path, log=lines.append)
    kinds = [r["kind"] for r in results.rows]
    assert kinds == ["model", "model", "model", "phantom", "loader"]
    assert results.rows[2]["status"].startswith("not available: skipped")
    assert len(lines) >= 5
    data = json.loads(path.read_text())
    assert data["format"] == bench.FORMAT and data["machine"]["cores"] >= 1 and data["ceiling"]["matmul_tflops"]
    again = bench.load(path)
    assert again.rows == results.rows and again.grid == "tiny"
    assert again.best(mode="infer")["label"] == "small_cnn4@16 infer b2 fp32"
    text = again.markdown()
    assert "small_cnn4@16 | train | 2 | fp32" in text and "skipped" in text and "ct_slice@16 workers=0" in text
    with pytest.raises(ParameterError):
        bench.run(tiny_grid(), device="cpu", compile="maybe", progress=False)
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ParameterError):
        bench.load(bad)


def test_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    results = bench.run(tiny_grid(), device="cpu", compile=False, progress=False)
    fig = bench.plot_throughput(results, mode="infer")
    ax = fig.axes[0]
    assert len(ax.patches) == 1                              # the fp32 bar; the skipped compile row has none
    assert any(t.get_text() == "n/a" for t in ax.texts)
    assert len(bench.plot_memory(results).axes[0].patches) == 2 * 2
    assert len(bench.plot_data_path(results, training_rate=10.0).axes[0].patches) == 2
    with pytest.raises(ParameterError):
        bench.plot_throughput(bench.BenchResults(), mode="train")


def test_cli_bench(tmp_path, capsys):
    from medlab.cli import main

    out = tmp_path / "b.json"
    md = tmp_path / "b.md"
    status = main(["bench", "--grid", "smoke", "--device", "cpu", "--model", "unet", "--mode", "infer",
                   "--repeats", "2", "--out", str(out), "--markdown", str(md), "--quiet"])
    assert status == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["label"] for r in rows if r["kind"] == "model"] == ["unet@32 infer b2 fp32"]
    assert "unet@32" in md.read_text() and "unet@32" in capsys.readouterr().out


def test_run_measures_a_named_data_set_and_fails_early_without_it(tmp_path, monkeypatch):
    grid = bench.Grid("data", (), loader=("ct_slice", 16, 8, 4, (0,)), warmup=1, repeats=2, steps=1, ceiling=None)
    results = bench.run(grid, device="cpu", progress=False, data="phantom:us_nodule")
    (row,) = results.select("loader")
    assert row["status"] == "ok" and row["label"] == "phantom:us_nodule@16 workers=0" and row["n"] > 8
    from medlab.errors import DataNotFoundError

    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    started = time.perf_counter()
    grid64 = bench.Grid("data", tiny_grid().cases, loader=("ct_slice", 64, 8, 4, (0,)), ceiling=None)
    with pytest.raises(DataNotFoundError):
        bench.run(grid64, device="cpu", progress=False, data="medmnist:pneumoniamnist")
    assert time.perf_counter() - started < 5     # before any model was measured


# ---------------------------------------------------------------------------------------------
# float32 math mode (TF32), the ceiling measured in it, and the fraction of the ceiling
# ---------------------------------------------------------------------------------------------
def test_math_mode_and_tf32_mode_restore_the_switches():
    mode = bench.math_mode("cpu")
    assert set(mode) == {"matmul_tf32", "conv_tf32", "float32_matmul_precision", "tf32_capable", "tf32"}
    assert mode["tf32"] is False and mode["tf32_capable"] is False          # no TF32 on a CPU, whatever the switches
    before = (bench._tf32_switch("matmul"), bench._tf32_switch("conv"))
    for on in (True, False):
        with bench.tf32_mode(on):
            assert bench._tf32_switch("matmul") is on and bench._tf32_switch("conv") is on
        assert (bench._tf32_switch("matmul"), bench._tf32_switch("conv")) == before
    with bench.tf32_mode(None):
        assert (bench._tf32_switch("matmul"), bench._tf32_switch("conv")) == before
    with pytest.raises(ParameterError):
        bench._resolve_tf32("sometimes")
    with pytest.raises(ParameterError, match="tf32"):
        bench.run(bench.Grid("none", ()), device="cpu", progress=False, tf32="sometimes")
    assert [bench._resolve_tf32(v) for v in ("auto", "ON", "off", True, None)] == [None, True, False, True, None]


def test_ceiling_records_the_math_mode_and_measures_float32_in_it(monkeypatch):
    ceiling = bench.measure_ceiling("cpu", matmul_n=64, copy_mb=1, repeats=2, dtypes=("float32",))
    assert ceiling["tf32"] is False and ceiling["math_mode"]["tf32"] is False
    assert "float32_ieee_tflops" not in ceiling
    # where the models' float32 convolutions may use TF32 (a CUDA GPU, by default), the product is measured with
    # TF32 on too, and once more without it for reference; the switch is restored afterwards
    monkeypatch.setattr(bench, "math_mode", lambda device=None: {"matmul_tf32": False, "conv_tf32": True,
                                                                 "float32_matmul_precision": "highest",
                                                                 "tf32_capable": True, "tf32": True})
    seen = []
    real = bench.time_repeats

    def spy(step, device="cpu", **kw):
        seen.append(bench._tf32_switch("matmul"))
        return real(step, device, **kw)

    before = bench._tf32_switch("matmul")
    monkeypatch.setattr(bench, "time_repeats", spy)
    ceiling = bench.measure_ceiling("cpu", matmul_n=64, copy_mb=1, repeats=2, dtypes=("float32",))
    assert ceiling["tf32"] is True and ceiling["float32_ieee_tflops"] > 0
    assert seen[:2] == [True, False]          # the float32 ceiling with TF32, then the reference without
    assert bench._tf32_switch("matmul") == before


def test_add_ceiling_fraction_semantics():
    base = {"flops_per_image": 1e9, "images_per_s": 100.0, "dtype": "float32", "tf32": False}
    # the fraction: achieved FLOP/s over the float32 product's
    row = dict(base)
    bench._add_ceiling_fraction(row, {"matmul_tflops": {"float32": 0.2}, "tf32": False})
    assert row["achieved_tflops"] == pytest.approx(0.1) and row["ceiling_fraction"] == pytest.approx(0.5)
    assert "ceiling_exceeded" not in row and "ceiling_note" not in row
    # above 1 (noise): kept as measured, not clipped, and flagged
    row = dict(base)
    bench._add_ceiling_fraction(row, {"matmul_tflops": {"float32": 0.08}, "tf32": False})
    assert row["ceiling_fraction"] == pytest.approx(1.25) and row["ceiling_exceeded"] is True
    # a TF32 row against a ceiling measured without TF32 (or the reverse) is not compared at all
    for row_tf32, ceiling_tf32 in ((True, False), (False, True)):
        row = dict(base, tf32=row_tf32)
        bench._add_ceiling_fraction(row, {"matmul_tflops": {"float32": 0.08}, "tf32": ceiling_tf32})
        assert "ceiling_fraction" not in row and "TF32" in row["ceiling_note"] and row["achieved_tflops"] > 0
    # mixed precision: against the faster of float32 and its own dtype
    row = dict(base, dtype="bfloat16")
    bench._add_ceiling_fraction(row, {"matmul_tflops": {"float32": 0.2, "bfloat16": 0.8}, "tf32": False})
    assert row["ceiling_dtype"] == "bfloat16" and row["ceiling_fraction"] == pytest.approx(0.125)
    # results written before the mode was recorded are compared as before
    row = {k: v for k, v in base.items() if k != "tf32"}
    bench._add_ceiling_fraction(row, {"matmul_tflops": {"float32": 0.2}})
    assert row["ceiling_fraction"] == pytest.approx(0.5)
    # nothing to compare: no FLOP count
    row = dict(base, flops_per_image=None)
    bench._add_ceiling_fraction(row, {"matmul_tflops": {"float32": 0.2}})
    assert "achieved_tflops" not in row and "ceiling_fraction" not in row


def test_a_small_real_grid_stays_under_its_ceiling_on_the_cpu():
    """Every fraction of a real run is at most 1, because the ceiling is measured in the rows' math mode."""
    cases = (bench.Case("small_cnn", 32, 8, "train"), bench.Case("small_cnn", 32, 8, "infer"),
             bench.Case("unet", 32, 2, "train", width=8), bench.Case("resnet18", 32, 4, "infer"))
    grid = bench.Grid("tiny-ceiling", cases, warmup=1, repeats=3, steps=1, ceiling={"matmul_n": 512, "copy_mb": 4})
    results = bench.run(grid, device="cpu", compile=False, progress=False)
    assert results.ceiling["tf32"] is False and results.machine["math_mode"]["tf32"] is False
    rows = [r for r in results.select("model") if r["status"] == "ok"]
    assert len(rows) == len(cases)
    for r in rows:
        assert r["tf32"] is False and r["math"] == "float32"
        assert 0 < r["ceiling_fraction"] <= 1.0, (r["label"], r["ceiling_fraction"])
        assert not r.get("ceiling_exceeded")
    text = results.markdown()
    assert "tf32: false" in text and "float32 math: tf32 false" in text


def test_phantom_ratios_and_published_points():
    rows = [
        {"kind": "model", "model": "small_cnn", "size": 64, "mode": "train", "variant": "fp32", "status": "ok",
         "images_per_s": 100.0, "label": "small_cnn@64 train b32 fp32", "amp": False},
        {"kind": "model", "model": "small_cnn", "size": 64, "mode": "train", "variant": "amp", "status": "ok",
         "images_per_s": 300.0, "label": "small_cnn@64 train b32 amp", "amp": True},
        {"kind": "phantom", "label": "ct_slice@64", "status": "ok", "images_per_s": 700.0},
        {"kind": "phantom", "label": "chest_xray@64", "status": "ok", "images_per_s": 300.0},
    ]
    ratios = bench.phantom_ratios(bench.BenchResults(rows))
    assert [(r["phantom"], r["ratio"], r["met"]) for r in ratios] == [("ct_slice@64", 7.0, True),
                                                                       ("chest_xray@64", 3.0, False)]
    assert all(r["train_case"] == "small_cnn@64 train b32 fp32" for r in ratios)    # float32, the cpu profile's
    text = bench.BenchResults(rows).markdown(parts=("ratios",))
    assert "7.0× met" in text and "3.0× NOT met" in text
    assert bench.phantom_ratios(bench.BenchResults(rows[2:])) == []
    assert bench.published_markdown(bench.BenchResults(rows)) == ""
    resnet50 = {"kind": "model", "model": "resnet50", "size": 224, "mode": "train", "variant": "amp", "amp": True,
                "status": "ok", "images_per_s": 2470.0, "label": "resnet50@224 train b256 amp"}
    text = bench.published_markdown(bench.BenchResults([resnet50]))
    assert "2,470" in text and "1.00×" in text and "not verified" in text and "DeepLearningExamples" in text
