"""Where the lessons' phantoms are rendered: ``Context.phantom_device`` and the loaders that pass it on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import medlab
from medlab import profiles
from medlab.data import phantoms
from medlab.records import Context

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("profile, device, expected", [
    ("gpu", "cuda", "cuda"), ("gpu", "cuda:1", "cuda:1"),   # the gpu profile draws on the GPU it trains on
    ("cpu", "cuda", "cpu"), ("smoke", "cuda", "cpu"),       # the images the cpu and smoke expectations know
    ("gpu", "mps", "cpu"), ("gpu", "cpu", "cpu"),           # mps lacks float64
])
def test_phantom_device_follows_profile_and_device(profile, device, expected, tmp_path):
    ctx = Context("02_segmentation", profiles.PROFILES[profile], 0, torch.device(device), tmp_path)
    assert ctx.phantom_device == torch.device(expected)


@pytest.fixture
def seen(monkeypatch):
    """Wrap every 2D generator so that the device each call asked for is recorded."""
    calls = []
    for name in ("ct_slice", "chest_xray", "lung_ultrasound", "us_nodule", "fundus"):
        original = getattr(phantoms, name)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, kwargs.get("device")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(phantoms, name, wrapped)
    return calls


CPU = torch.device("cpu")


@pytest.mark.parametrize("load, generator", [
    (lambda d: medlab.data.make_splits("us_nodule", 4, 4, 4, size=32, device=d), "us_nodule"),
    (lambda d: medlab.data.load_source("phantom:fundus", split="val", n=4, size=32, device=d), "fundus"),
    (lambda d: medlab.data.load_segmentation("phantom", "lesion_type", size=32, n_train=4, n_val=4, n_test=4,
                                             device=d), "ct_slice"),
    (lambda d: medlab.data.load_with_scanner_shift("phantom", 4, 4, 4, size=32, device=d), "chest_xray"),
    (lambda d: medlab.data.load_cohort("phantom", 8, size=32, device=d), "ct_slice"),
])
def test_loaders_pass_the_device_to_the_generator(load, generator, seen):
    load(CPU)
    assert seen and all(call == (generator, CPU) for call in seen)
    seen.clear()
    load(None)                                   # the default: the generator's own default, the CPU
    assert seen and all(call == (generator, None) for call in seen)


def test_a_device_reaches_the_renderer_and_is_checked():
    with pytest.raises(medlab.errors.ParameterError, match="device"):
        medlab.data.make_splits("ct_slice", 4, 4, 4, size=32, device="tpu:7")
    same = [medlab.data.make_splits("ct_slice", 4, 4, 4, size=32, seed=3, device=d)["test"] for d in (None, "cpu")]
    np.testing.assert_array_equal(same[0].batch.images, same[1].batch.images)


def test_real_data_ignore_the_phantom_device():
    data = medlab.data.load_segmentation("mni152", "lung_lesion", size=32, device=CPU)
    assert len(data.train) > 0


def test_every_lesson_renders_its_data_on_the_phantom_device():
    """Each lesson's phantom data calls pass ``device=ctx.phantom_device`` (lesson 08's stream: its own rule)."""
    calls = ("make_splits(", "load_segmentation(", "load_with_scanner_shift(", "load_cohort(", "load_volumes(",
             'load_source("phantom', "lung_ultrasound_clips(")
    missing = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            for call in calls:
                start = source.find(call)
                while start >= 0:
                    depth, end = 0, start + call.index("(")
                    for end in range(start + call.index("("), len(source)):
                        depth += {"(": 1, ")": -1}.get(source[end], 0)
                        if depth == 0:
                            break
                    if "device=ctx.phantom_device" not in source[start:end]:
                        missing.append(f"{path.name}: {source[start:end + 1][:80]}")
                    start = source.find(call, end)
    assert not missing, "phantom data drawn without device=ctx.phantom_device:\n" + "\n".join(missing)
