"""Profiles, runtime switches and the metrics record."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

import medlab
from medlab import profiles, records, runtime
from medlab.errors import ParameterError


def test_profiles_are_plain_data_and_grow_in_size():
    smoke, cpu, gpu = (profiles.resolve(n) for n in ("smoke", "cpu", "gpu"))
    assert smoke.epochs == 1
    for field in ("image_size", "n_train", "epochs", "bootstrap"):
        assert getattr(smoke, field) <= getattr(cpu, field) <= getattr(gpu, field)
    assert json.loads(json.dumps(cpu.as_dict()))["name"] == "cpu"


def test_auto_follows_cuda():
    assert profiles.resolve("auto", cuda_available=True).name == "gpu"
    assert profiles.resolve("AUTO", cuda_available=False).name == "cpu"


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ParameterError, match="'laptop'.*smoke, cpu, gpu, auto"):
        profiles.resolve("laptop")


def test_profile_replace_refuses_unknown_fields():
    assert profiles.resolve("cpu").replace(epochs=2).epochs == 2
    with pytest.raises(ParameterError, match="epoch"):
        profiles.resolve("cpu").replace(epoch=2)


def test_overrides_from_the_environment_replace_fields(monkeypatch):
    monkeypatch.setenv(profiles.OVERRIDES_VARIABLE, '{"n_train": 48, "epochs": 1}')
    gpu = profiles.resolve("gpu")
    assert (gpu.n_train, gpu.epochs, gpu.classifier) == (48, 1, profiles.PROFILES["gpu"].classifier)
    assert profiles.PROFILES["gpu"].n_train != 48  # the table itself is untouched


@pytest.mark.parametrize("text, fragment", [('{"bogus": 1}', "bogus"), ("[1, 2]", "JSON object"), ("{n_train", "JSON")])
def test_bad_overrides_name_the_variable_and_the_problem(monkeypatch, text, fragment):
    monkeypatch.setenv(profiles.OVERRIDES_VARIABLE, text)
    with pytest.raises(ParameterError, match=fragment):
        profiles.resolve("cpu")


def test_choose_device():
    assert runtime.choose_device("auto").type in ("cpu", "cuda", "mps")
    assert runtime.choose_device("CPU") == torch.device("cpu")
    with pytest.raises(ParameterError, match="unknown DEVICE 'tpu'"):
        runtime.choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            runtime.choose_device("cuda:1")


def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    runtime.seed_everything(7)
    first = draw()
    runtime.seed_everything(7)
    assert draw() == first
    with pytest.raises(ParameterError, match="SEED"):
        runtime.seed_everything(-1)


def test_environment_report_names_device_and_versions():
    text = runtime.environment_report("cpu", profiles.resolve("smoke"))
    assert "Device: cpu" in text and "torch " in text and "Profile: smoke" in text
    info = runtime.environment("cpu")
    assert info["cores"] >= 1 and info["memory_gb"] > 0


def test_record_writes_metrics_with_context(tmp_path):
    ctx = medlab.setup("99_test", profile="smoke", seed=3, device="cpu", output_dir=tmp_path,
                       params={"DATA": "phantom"}, quiet=True)
    assert ctx.profile.name == "smoke"
    medlab.record(auroc=np.float32(0.75), n=np.int64(12), label="ok", curve=np.array([0.1, 0.2]))
    medlab.record(dice=float("nan"))
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["notebook"] == "99_test" and document["profile"] == "smoke" and document["seed"] == 3
    assert document["params"] == {"DATA": "phantom"}
    assert document["metrics"] == {"auroc": 0.75, "n": 12, "label": "ok", "curve": [0.1, 0.2], "dice": None}
    assert document["nonfinite"] == ["dice"]
    assert document["wall_time_s"] >= 0 and document["peak_memory_mb"] > 10
    assert "torch" in document["versions"]


def test_record_refuses_what_is_not_plain_data(tmp_path):
    medlab.setup("99_test", profile="smoke", device="cpu", output_dir=tmp_path, quiet=True)
    with pytest.raises(ParameterError, match="metric 'model'"):
        medlab.record(model=torch.nn.Linear(1, 1))
    with pytest.raises(ParameterError, match="at most"):
        medlab.record(big=list(range(records.MAX_LIST_LENGTH + 1)))
    assert math.isfinite(records.peak_memory_mb())


def test_import_medlab_is_light():
    import subprocess
    import sys

    code = "import sys, medlab; print(sorted(m for m in ('torch', 'matplotlib', 'papermill') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
