"""benchmarks/gpu_plan.py: the gpu profile's training, priced by its gradient steps, stays within the plan."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_plan.py"


@pytest.fixture(scope="module")
def gpu_plan():
    spec = importlib.util.spec_from_file_location("gpu_plan", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_plan"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_plan", None)


def test_every_lesson_that_trains_is_priced(gpu_plan):
    lessons = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    untrained = {"00_medical_images", "08_benchmark"}  # nothing trained at the profile's size
    assert set(gpu_plan.LESSONS) == lessons - untrained


def test_steps_follow_the_knobs(gpu_plan, monkeypatch):
    from medlab import profiles

    P = profiles.resolve("gpu")
    K = P.knobs("02_segmentation")
    loops = gpu_plan.LESSONS["02_segmentation"](P, K)
    assert [(loop.count, loop.steps) for loop in loops] == [(3, K["epochs"] * math.ceil(K["n_train"] / K["batch_size"]))]
    # a lesson's knobs, overridden as a user would, change its price
    monkeypatch.setenv(profiles.OVERRIDES_VARIABLE, json.dumps({"lessons": {"02_segmentation": {"epochs": 30}}}))
    doubled = {r["lesson"]: r for r in gpu_plan.plan("gpu")}["02_segmentation"]
    assert doubled["steps"] == 3 * 30 * math.ceil(K["n_train"] / K["batch_size"])


def test_pricing_is_launch_bound_for_small_steps_and_arithmetic_for_large(gpu_plan):
    small = gpu_plan.Loop("tiny", ("classifier", "small_cnn", 1, 2, 32, 4), steps=100, batch=8)
    large = gpu_plan.Loop("big", ("unet", 1, 2, 32, 4, 128, 2), steps=100, batch=64)
    assert gpu_plan.price(small)["bound"] == "launches"
    assert gpu_plan.price(small)["seconds"] == pytest.approx(100 * gpu_plan.LAUNCH_S)
    priced = gpu_plan.price(large)
    assert priced["bound"] == "arithmetic"
    assert priced["seconds"] == pytest.approx(100 * 64 * gpu_plan.flops_per_image(large.model)
                                              / gpu_plan.SUSTAINED_FLOPS)
    # a U-Net at 128 px costs more per image than a small CNN at 32 px, by orders of magnitude
    assert gpu_plan.flops_per_image(large.model) > 100 * gpu_plan.flops_per_image(small.model)


def test_the_gpu_profile_fits_the_plan(gpu_plan):
    rows = gpu_plan.plan("gpu")
    over = {r["lesson"]: round(r["seconds"]) for r in rows if not r["fits"]}
    assert not over, f"gpu profile lessons whose estimated training exceeds the plan: {over}"
    assert sum(r["seconds"] for r in rows) < 6 * 60  # the suite's training, within its 10 minutes
