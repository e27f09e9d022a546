"""The papermill runner and the medlab command, on tiny notebooks made by the tests."""
from __future__ import annotations

import json
import time

import pytest

from medlab import cli, runner
from medlab.errors import NotebookError

PARAMS = 'PROFILE = "auto"\nSEED = 0\nOUTPUT_DIR = "."\nRATE = 0.5\nDATA = "phantom"\n'
RECORD = ('import medlab\n'
          'ctx = medlab.setup("{name}", profile=PROFILE, seed=SEED, device="cpu", output_dir=OUTPUT_DIR, '
          'params=dict(RATE=RATE, DATA=DATA), quiet=True)\n'
          'medlab.record(score=RATE * 2, profile_seen=ctx.profile.name)')


@pytest.fixture
def lessons(notebook_factory):
    notebook_factory("01_good", PARAMS, RECORD.format(name="01_good"))
    notebook_factory("02_broken", PARAMS, 'print("before the error")', 'raise RuntimeError("deliberate failure")')
    notebook_factory("03_slow", PARAMS, "import time\ntime.sleep(60)")
    (notebook_factory.folder / "expectations.json").write_text(json.dumps({
        "01_good": {"smoke": {"score": {"min": 0.9, "max": 1.1}}},
    }))
    return notebook_factory.folder


def test_failing_notebook_fails_the_run_keeps_its_copy_and_others_still_run(lessons, tmp_path):
    out = tmp_path / "run"
    results = runner.run_notebooks(["01", "02"], profile="smoke", out=out, folder=lessons, timeout=120, jobs=2)
    status = {r.notebook: r.status for r in results}
    assert status == {"01_good": "passed", "02_broken": "failed"}
    broken = next(r for r in results if r.notebook == "02_broken")
    assert "deliberate failure" in broken.error
    executed = json.loads((out / broken.executed).read_text())
    outputs = json.dumps([c.get("outputs") for c in executed["cells"]])
    assert "before the error" in outputs and "RuntimeError" in outputs
    good = json.loads((out / "01_good" / "metrics.json").read_text())
    assert good["metrics"] == {"score": 1.0, "profile_seen": "smoke"}
    assert good["profile"] == "smoke" and good["params"]["RATE"] == 0.5
    summary = (out / "summary.md").read_text()
    assert "1 of 2 notebooks passed" in summary and "02_broken" in summary
    page = (out / "index.html").read_text()
    assert 'href="01_good/01_good.html"' in page and (out / "01_good" / "01_good.html").exists()
    assert cli.main(["report", str(out)]) == 1


def test_metric_below_expectation_makes_the_notebook_short(lessons, tmp_path):
    results = runner.run_notebooks(["01_good"], profile="smoke", params={"RATE": 0.2}, out=tmp_path / "r",
                                   folder=lessons, timeout=120)
    assert results[0].status == "short"
    assert results[0].checks == [{"metric": "score", "value": 0.4, "min": 0.9, "max": 1.1, "ok": False}]


def test_overridden_profile_is_recorded_and_its_expectations_are_not_applied(lessons, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_PROFILE_OVERRIDES", '{"n_train": 3}')
    out = tmp_path / "r"
    results = runner.run_notebooks(["01_good"], profile="smoke", params={"RATE": 0.2}, out=out,
                                   folder=lessons, timeout=120)
    assert (results[0].status, results[0].checks, results[0].profile_overrides) == ("passed", [], {"n_train": 3})
    assert json.loads((out / "01_good" / "metrics.json").read_text())["profile_overrides"] == {"n_train": 3}
    assert "not checked: profile fields overridden" in (out / "summary.md").read_text()


def test_timeout_stops_the_notebook_and_its_kernel(lessons, tmp_path):
    started = time.perf_counter()
    results = runner.run_notebooks(["03_slow"], profile="smoke", out=tmp_path / "r", folder=lessons, timeout=15)
    assert results[0].status == "timeout"
    assert time.perf_counter() - started < 45


def test_unknown_parameter_is_refused_before_anything_runs(lessons, tmp_path):
    with pytest.raises(NotebookError, match=r"no parameter 'EPOCHS'.*SEED=0"):
        runner.run_notebooks(["01"], profile="smoke", params={"EPOCHS": 3}, out=tmp_path / "r", folder=lessons)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, value", [("SEED", "three"), ("SEED", 1.5), ("RATE", "fast"), ("DATA", [1])])
def test_wrong_type_is_refused(lessons, name, value):
    with pytest.raises(NotebookError, match=f"parameter {name}="):
        runner.validate_parameters(lessons / "01_good.ipynb", {name: value})


def test_values_are_converted_where_the_type_allows(lessons):
    checked = runner.validate_parameters(lessons / "01_good.ipynb", {"RATE": 1, "DATA": 7, "SEED": 4})
    assert checked == {"RATE": 1.0, "DATA": "7", "SEED": 4}
    assert isinstance(checked["RATE"], float)


def test_unknown_notebook_is_refused_with_the_list(lessons):
    with pytest.raises(NotebookError, match="01_good, 02_broken, 03_slow"):
        runner.find_notebook("99_missing", lessons)


def test_parse_assignments():
    assert runner.parse_assignments(["SEED=3", "DATA=medmnist:pneumoniamnist", "RATE=1e-3", "FLAG=True"]) == {
        "SEED": 3, "DATA": "medmnist:pneumoniamnist", "RATE": 0.001, "FLAG": True}
    with pytest.raises(NotebookError, match="NAME=VALUE"):
        runner.parse_assignments(["SEED"])


def test_cli_reports_user_errors_without_a_traceback(lessons, capsys):
    code = cli.main(["run", "nope", "--notebooks", str(lessons), "--profile", "smoke"])
    assert code == 2
    assert "unknown notebook 'nope'" in capsys.readouterr().err
    code = cli.main(["run", "01", "--notebooks", str(lessons), "--profile", "fast"])
    assert code == 2
    assert "valid profiles are smoke, cpu, gpu, auto" in capsys.readouterr().err


def test_cli_list_shows_parameters(lessons, capsys):
    assert cli.main(["list", "--notebooks", str(lessons)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("01_good: PROFILE='auto', SEED=0")


def test_check_metrics_treats_missing_and_null_as_failures():
    rows = runner.check_metrics({"a": 0.5, "b": None}, {"a": {"min": 0.4}, "b": {"min": 0}, "c": {"max": 1}})
    assert [r["ok"] for r in rows] == [True, False, False]


THREADS_SEEN = ('import os, torch\n'
                'import medlab\n'
                'ctx = medlab.setup("{name}", profile=PROFILE, seed=SEED, device="cpu", output_dir=OUTPUT_DIR, '
                'params=dict(RATE=RATE, DATA=DATA), quiet=True)\n'
                'medlab.record(torch_threads=torch.get_num_threads(), '
                'omp=int(os.environ.get("OMP_NUM_THREADS", "0")))')


def test_notebooks_run_side_by_side_share_the_cores(notebook_factory, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for name in ("01_a", "02_b"):
        notebook_factory(name, PARAMS, THREADS_SEEN.format(name=name))
    out = tmp_path / "run"
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 4)
    results = runner.run_notebooks(profile="smoke", out=out, folder=notebook_factory.folder, timeout=120, jobs=2)
    assert [r.status for r in results] == ["passed", "passed"], [r.error for r in results]
    for r in results:
        recorded = json.loads((out / r.notebook / "metrics.json").read_text())["metrics"]
        assert recorded["omp"] == 2 and recorded["torch_threads"] == 2, r.notebook


def test_threads_per_notebook():
    assert runner.threads_per_notebook(1, cores=8) is None  # alone: torch's own choice
    assert runner.threads_per_notebook(2, cores=2) == 1
    assert runner.threads_per_notebook(3, cores=8) == 2
    assert runner.threads_per_notebook(4, cores=2) == 1


def test_a_thread_count_set_by_the_caller_stands(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runner.threads_per_notebook(2, cores=16) is None
