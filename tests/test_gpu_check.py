"""benchmarks/gpu_check.py: the one-command GPU check, proven shrunken on the CPU."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



def test_wiring_overrides_match_the_notebook_tests():
    gpu_check = load_script()
    from test_notebooks import GPU_WIRING_OVERRIDES

    assert gpu_check.wiring_overrides() == GPU_WIRING_OVERRIDES


def test_budget_and_steps_are_respected_and_skips_are_said(tmp_path):
    gpu_check = load_script()
    report = gpu_check.main(["--device", "cpu", "--shrink", "--budget", "1", "--lessons", "00",
                             "--steps", "lessons,monai", "--out", str(tmp_path)])
    assert report["lessons"] == [] and report["steps"] == []
    skipped = {s["what"]: s["why"] for s in report["skipped"]}
    assert "budget" in skipped["lesson 00_medical_images"] and "not in --steps" in skipped["bench"]
    assert "left" in skipped["monai"]
    text = (tmp_path / "gpu_check.md").read_text()
    assert "Skipped:" in text and "lesson 00_medical_images" in text and "no GPU" in text
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--steps", "lessons,fly"])
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--cap", "bench"])


@pytest.mark.notebooks
def test_shrunken_check_runs_a_lesson_and_a_tiny_bench_on_the_cpu(tmp_path):
    gpu_check = load_script()
    report = gpu_check.main(["--device", "cpu", "--shrink", "--lessons", "00", "--steps", "lessons,bench",
                             "--out", str(tmp_path)])
    (lesson,) = report["lessons"]
    assert lesson["lesson"] == "00_medical_images" and lesson["status"] == "passed", lesson
    (bench_step,) = report["steps"]
    assert bench_step["step"] == "bench" and bench_step["status"] == "ok" and bench_step["rows_ok"] >= 4
    rows = json.loads((tmp_path / "bench_shrunk.json").read_text())["rows"]
    assert {r["model"] for r in rows if r["kind"] == "model"} == {"small_cnn"}
    recorded = json.loads((tmp_path / "lessons" / "00_medical_images" / "00_medical_images" / "metrics.json")
                          .read_text())
    assert recorded["profile"] == "gpu" and recorded["device"] == "cpu" and recorded["profile_overrides"]
    text = (tmp_path / "gpu_check.md").read_text()
    assert "Shrunken run" in text and "torch " in text and "| 00_medical_images | passed |" in text
    assert {s["what"] for s in report["skipped"]} == {"fit-compile", "monai"}
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["machine"]["torch"] and saved["profile_overrides"]["image_size"] == 32


def test_lesson_rows_carry_the_plans_estimate(monkeypatch):
    from medlab import profiles

    gpu_check = load_script()
    full = gpu_check.planned_training_s()
    assert "00_medical_images" not in full and full["02_segmentation"] > 0
    monkeypatch.setenv(profiles.OVERRIDES_VARIABLE, json.dumps(gpu_check.wiring_overrides()))
    shrunk = gpu_check.planned_training_s()  # the profile as the check resolves it: shrunken here
    assert set(shrunk) == set(full) and shrunk["02_segmentation"] < full["02_segmentation"]
    row = {"lesson": "02_segmentation", "status": "passed", "wall_s": 50.0, "cap_s": 120,
           "planned_training_s": full["02_segmentation"], "peak_memory_mb": 900.0}
    text = gpu_check.markdown({"machine": {"math_mode": {"tf32": True}}, "device": "cuda", "budget_s": 600, "elapsed_s": 60, "caps": {},
                               "started": "now", "shrink": False, "lessons": [row], "steps": [], "skipped": []})
    assert f"| 02_segmentation | passed | 50.0 | {full['02_segmentation']:.0f} | 120 |" in text
