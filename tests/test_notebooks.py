"""The lessons themselves: committed clean, parameterised, and passing in the smoke profile."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from medlab import profiles, runner

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("*.ipynb"))
REQUIRED_PARAMETERS = ("PROFILE", "SEED", "DATA", "DEVICE", "OUTPUT_DIR")


def test_there_are_lessons():
    assert [p.stem for p in LESSONS][:1] == ["00_medical_images"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs before committing"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_has_a_parameters_cell_with_the_common_knobs(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    declared = runner.notebook_parameters(path)
    assert all(name in declared for name in REQUIRED_PARAMETERS)
    assert declared["PROFILE"]["default"] == "auto" and declared["DATA"]["default"] == "phantom"
    for line in tagged[0].source.splitlines():
        if "=" in line:
            assert "#" in line, f"{path.name}: every parameter needs a comment: {line!r}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_has_expectations_for_every_profile(path):
    expectations = runner.load_expectations(NOTEBOOKS)
    assert set(expectations.get(path.stem, {})) == {"smoke", "cpu", "gpu"}, f"{path.stem}: add expectations"
    for bounds in expectations[path.stem].values():
        assert bounds, "an empty expectation checks nothing"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    results = runner.run_notebooks(profile="smoke", out=out, folder=NOTEBOOKS, jobs=2, timeout=600)
    return out, {r.notebook: r for r in results}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_passes_its_smoke_expectations(smoke_run, path):
    out, results = smoke_run
    result = results[path.stem]
    assert result.status == "passed", f"{path.stem}: {result.status}: {result.error}\nsee {out / path.stem}"
    assert result.checks and all(row["ok"] for row in result.checks)
    recorded = json.loads((out / path.stem / "metrics.json").read_text())
    assert recorded["profile"] == "smoke" and recorded["notebook"] == path.stem


@pytest.mark.notebooks
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_figures_show_as_images_not_as_text(smoke_run, path):
    out, results = smoke_run
    executed = nbformat.read(out / results[path.stem].executed, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text_only = [o for o in outputs if "image/png" not in o.get("data", {})
                 and str(o.get("data", {}).get("text/plain", "")).startswith("<Figure size")]
    assert images, f"{path.stem}: no figure was shown"
    assert not text_only, f"{path.stem}: {len(text_only)} figure(s) shown as text; is medlab.setup called first?"


@pytest.mark.notebooks
def test_smoke_run_writes_the_report(smoke_run):
    out, results = smoke_run
    page = (out / "index.html").read_text()
    for name, result in results.items():
        assert name in page
        assert (out / result.html).is_file()
    assert f"{len(results)} of {len(results)} notebooks passed" in (out / "summary.md").read_text()


#: The gpu profile's code path (ResNet-18, its batch size, DataLoader workers) on sizes a CPU runs in seconds.
#: Lesson knobs that set an amount of work of their own are shrunk under "lessons" (one entry per lesson).
GPU_WIRING_OVERRIDES = {"n_train": 48, "n_val": 16, "n_test": 32, "epochs": 1, "image_size": 32, "seeds": 1,
                        "bootstrap": 50, "num_workers": 2,
                        "lessons": {
                            "01_transfer_learning": {"sizes": [16, 48], "epochs": 1, "samples_per_epoch": 48,
                                                     "pretrain_n": 64, "pretrain_steps": 2, "ae_n": 64,
                                                     "ae_steps": 2, "baseline_size": 16},
                            "03_covid_cxr_classification": {"epochs": 1, "shortcut_epochs": 1, "cam_images": 4,
                                                            "baseline_size": 16},
                            "05_lung_ultrasound_severity": {"baseline_size": 16},
                            "07_trust_and_robustness": {"pgd_steps": 3, "n_attack": 32, "n_sanity": 4,
                                                        "epsilons": [0.0, 0.005, 0.02], "baseline_size": 16},
                            "02_segmentation": {"n_train": 48, "n_val": 16, "n_test": 32, "epochs": 1},
                            "04_covid_ct_lesion_segmentation": {"n_train": 48, "n_val": 16, "n_test": 32,
                                                                "epochs": 1},
                            "06_cascade_segment_then_classify": {"seg_base": 8, "crop_size": 32,
                                                                 "degrade": [0.0, 1.0], "baseline_size": 16},
                            "10_retinal_screening": {"n_train": 48, "n_val": 32, "n_test": 48, "epochs": 1,
                                                     "baseline_size": 32, "baseline_C": [0.01]},
                            "09_volumes_3d": {"voxel_mm": 8.0, "n_train": 4, "n_val": 2, "n_test": 3, "patch": 16,
                                              "patches": 32, "val_patches": 8, "epochs": 1, "cls_voxel_mm": 8.0,
                                              "cls_n_train": 12, "cls_n_val": 6, "cls_n_test": 12,
                                              "cls_epochs": 1},
                            "11_images_and_clinical_data": {"n_train": 96, "n_val": 48, "n_test": 64, "epochs": 1,
                                                            "head_epochs": 2},
                        }}


@pytest.fixture(scope="module")
def gpu_wiring_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-wiring")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(profiles.OVERRIDES_VARIABLE, json.dumps(GPU_WIRING_OVERRIDES))
        results = runner.run_notebooks(profile="gpu", params={"DEVICE": "cpu"}, out=out, folder=NOTEBOOKS,
                                       jobs=2, timeout=600)
    return out, {r.notebook: r for r in results}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_the_gpu_profile_code_path_on_a_cpu(gpu_wiring_run, path):
    out, results = gpu_wiring_run
    result = results[path.stem]
    assert result.status == "passed", f"{path.stem}: {result.status}: {result.error}\nsee {out / path.stem}"
    recorded = json.loads((out / path.stem / "metrics.json").read_text())
    assert recorded["profile"] == "gpu" and recorded["device"] == "cpu"
    assert recorded["profile_overrides"] == GPU_WIRING_OVERRIDES


#: The cpu profile is the one a learner runs on a laptop or Binder: every lesson must pass its cpu expectations
#: here too, not only in a hand-made run. Two lessons at a time, except the benchmark lesson, whose throughput
#: ratios are measured afterwards on a machine that is not also running another lesson.
ALONE = "08_benchmark"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu")
    shared = [p.stem for p in LESSONS if p.stem != ALONE]
    results = runner.run_notebooks(shared, profile="cpu", params={"DEVICE": "cpu"}, out=out / "together",
                                   folder=NOTEBOOKS, jobs=2, timeout=900)
    results += runner.run_notebooks([ALONE], profile="cpu", params={"DEVICE": "cpu"}, out=out / "alone",
                                    folder=NOTEBOOKS, jobs=1, timeout=900)
    return out, {r.notebook: r for r in results}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_passes_its_cpu_expectations(cpu_run, path):
    out, results = cpu_run
    out = out / ("alone" if path.stem == ALONE else "together")
    result = results[path.stem]
    assert result.status == "passed", f"{path.stem}: {result.status}: {result.error}\nsee {out / path.stem}"
    failed = [row for row in result.checks if not row["ok"]]
    assert result.checks and not failed, f"{path.stem}: {failed}"
    recorded = json.loads((out / path.stem / "metrics.json").read_text())
    assert recorded["profile"] == "cpu" and recorded["device"] == "cpu"
