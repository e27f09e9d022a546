"""medlab sweep: grids checked before anything runs, runs on a local Dask cluster, retries, restarts, report."""
from __future__ import annotations

import json
import os

import psutil
import pytest

from medlab import cli, sweep, sweep_report
from medlab.errors import MedlabError, NotebookError, ParameterError

# A notebook that starts in a second: it writes metrics.json itself instead of importing medlab (and torch).
PARAMS = 'PROFILE = "auto"\nSEED = 0\nOUTPUT_DIR = "."\nRATE = 0.5\nDATA = "phantom"\nDEVICE = "auto"\nKILL = ""\n'
KILL_WORKER = '''\
import os, time, psutil
if KILL:  # the first run to get here kills its Dask worker in the middle of the run
    try:
        fd = os.open(KILL, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        fd = None
    if fd is not None:
        runner_child = psutil.Process().parent()
        worker = runner_child.parent()
        assert "medlab.runner" in " ".join(runner_child.cmdline()), runner_child.cmdline()
        assert "multiprocessing" in " ".join(worker.cmdline()), worker.cmdline()
        os.write(fd, json.dumps({"worker": worker.pid, "runner_child": runner_child.pid}).encode())
        os.close(fd)
        worker.kill()
        time.sleep(120)
'''
RECORD = ('import json, os, pathlib\n'
          'pathlib.Path(OUTPUT_DIR, "metrics.json").write_text(json.dumps({"metrics": {'
          '"score": RATE * 2 + SEED / 10, "data": DATA, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "")}}))')


@pytest.fixture
def lessons(notebook_factory):
    notebook_factory("01_tiny", PARAMS, "import json", KILL_WORKER, RECORD)
    (notebook_factory.folder / "expectations.json").write_text(json.dumps(
        {"01_tiny": {"smoke": {"score": {"min": 0.9, "max": 3}}}}))
    return notebook_factory.folder


def _run_dirs(out):
    return sorted(p for p in (out / sweep.RUNS_DIR).iterdir() if p.is_dir())


def _outputs_present(run_dir, stem="01_tiny"):
    return all((run_dir / stem / name).is_file() for name in (f"{stem}.ipynb", "metrics.json")) and \
        (run_dir / sweep.DONE_FILE).is_file() and (run_dir / "index.html").is_file()


# --------------------------------------------------------------------------- grids, before anything runs

def test_parse_grid_splits_at_top_level_commas_and_reads_literals():
    assert sweep.parse_grid(["LR=0.1,1e-3", "DATA=phantom,medmnist:pneumoniamnist", "SIZES=[12, 48],[24,96]",
                             "NAME='a,b',c", "FLAG=True"]) == {
        "LR": [0.1, 0.001], "DATA": ["phantom", "medmnist:pneumoniamnist"], "SIZES": [[12, 48], [24, 96]],
        "NAME": ["a,b", "c"], "FLAG": [True]}


@pytest.mark.parametrize("items, message", [
    (["RATE="], r"gives RATE no values.*-p RATE=V1,V2"),
    (["RATE=0.1,,0.2"], "empty value between commas"),
    (["RATE"], "NAME=V1,V2"),
    (["RATE=1", "RATE=2"], "given twice"),
])
def test_parse_grid_refuses_empty_lists_and_malformed_items(items, message):
    with pytest.raises(NotebookError, match=message):
        sweep.parse_grid(items)


@pytest.mark.parametrize("grid, seeds, message", [
    ({"EPOCHS": [1, 2]}, None, r"no parameter 'EPOCHS'.*Valid parameters: PROFILE='auto' \(str\); SEED=0 \(int\)"),
    ({"RATE": [0.1, "fast"]}, None, r"parameter RATE='fast' has type str, expected float"),
    ({"SEED": [0, 1.5]}, None, r"parameter SEED=1.5 has type float, expected int"),
    ({"RATE": []}, None, r"RATE has an empty list of values"),
    ({"RATE": [0.1, 0.1]}, None, "more than once"),
    ({"SEED": [1, 2]}, 2, "either with --seeds N .* or with -p SEED"),
    ({}, 0, "--seeds must be a whole number of at least 1"),
    ({"OUTPUT_DIR": ["x"]}, None, "set by the sweep"),
])
def test_bad_grids_are_refused_before_anything_runs(lessons, tmp_path, grid, seeds, message):
    out = tmp_path / "sweep"
    with pytest.raises(NotebookError, match=message):
        sweep.sweep("01", profile="smoke", grid=grid, seeds=seeds, out=out, folder=lessons, progress=False)
    assert not out.exists()


def test_cli_refuses_a_bad_grid_with_a_message_and_no_traceback(lessons, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(["sweep", "01", "--notebooks", str(lessons), "--profile", "smoke", "-p", "RATE=0.1,fast",
                     "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "parameter RATE='fast' has type str" in capsys.readouterr().err
    assert cli.main(["sweep", "01", "--notebooks", str(lessons), "--profile", "fastest", "--out", str(out)]) == 2
    assert "valid profiles are" in capsys.readouterr().err and not out.exists()
    for option, message in (("--jobs=0", "--jobs must be at least 1"), ("--timeout=0", "--timeout must be a positive"),
                            ("--retries=-1", "--retries must be 0 or more")):
        assert cli.main(["sweep", "01", "--notebooks", str(lessons), "--out", str(out), option]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_plan_is_the_product_of_the_values_and_the_seeds(lessons):
    plan = sweep.plan("01", "smoke", {"RATE": [1, 0.5], "DATA": "phantom"}, seeds=3, folder=lessons)
    assert plan.grid == {"DATA": ["phantom"], "RATE": [1.0, 0.5], "SEED": [0, 1, 2]}
    assert plan.swept == ["RATE"]
    assert [r["id"] for r in plan.runs][:2] == ["DATA=phantom__RATE=1.0__SEED=0", "DATA=phantom__RATE=1.0__SEED=1"]
    assert len(plan.runs) == 6 and all(isinstance(r["params"]["RATE"], float) for r in plan.runs)


def test_run_ids_are_safe_folder_names_and_distinct():
    assert sweep.run_id({}) == "default"
    a, b = sweep.run_id({"DATA": "a/b"}), sweep.run_id({"DATA": "a_b"})
    assert a != b and "/" not in a and a.startswith("DATA=a_b-")


def test_gpu_runs_ask_for_a_gpu_and_are_refused_on_a_machine_without_one(lessons, tmp_path, monkeypatch):
    assert sweep.needs_gpu("gpu", {}) and sweep.needs_gpu("smoke", {"DEVICE": "cuda:1"})
    assert not sweep.needs_gpu("gpu", {"DEVICE": "cpu"}) and not sweep.needs_gpu("cpu", {"DEVICE": "auto"})
    monkeypatch.setattr(sweep, "_local_gpu_ids", lambda: [])
    out = tmp_path / "sweep"
    with pytest.raises(ParameterError, match="need a GPU .* this machine has none"):
        sweep.sweep("01", profile="smoke", grid={"DEVICE": ["cpu", "cuda"]}, out=out, folder=lessons, progress=False)
    assert not out.exists()


def test_runs_that_need_a_gpu_ask_for_one_and_each_worker_is_pinned_to_its_own(lessons, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_local_gpu_ids", lambda: ["0", "1"])  # as on a machine with two GPUs
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = sweep.sweep("01", profile="smoke", grid={"DEVICE": ["cuda"]}, seeds=2, out=tmp_path / "sweep",
                         folder=lessons, timeout=120, progress=False)  # --jobs defaults to one worker per GPU
    assert [row["status"] for row in result.rows] == ["passed", "passed"]
    assert sorted(row["metrics"]["gpu"] for row in result.rows) == ["0", "1"]
    assert sweep.load_spec(tmp_path / "sweep")["invocations"][0]["jobs"] == 2


def test_seed_statistics():
    stats = sweep_report.seed_statistics([1.0, 2.0, 3.0])
    assert stats["n"] == 3 and stats["mean"] == 2.0 and stats["sd"] == pytest.approx(1.0)
    assert 1.0 <= stats["low"] < 2.0 < stats["high"] <= 3.0
    assert sweep_report.seed_statistics([4.0, None]) == {"n": 1, "mean": 4.0, "sd": None, "low": None, "high": None}


def test_a_folder_of_another_kind_is_refused(lessons, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    with pytest.raises(MedlabError, match="run folder written by 'medlab run'"):
        sweep.sweep("01", profile="smoke", out=out, folder=lessons, progress=False)


# --------------------------------------------------------------------------- runs on a local cluster

def test_a_worker_killed_in_the_middle_of_a_run_has_its_run_retried(lessons, tmp_path):
    out, kill = tmp_path / "sweep", tmp_path / "killed.json"
    result = sweep.sweep("01", profile="smoke", grid={"RATE": [0.5, 1.0], "KILL": [str(kill)]}, out=out,
                         jobs=2, folder=lessons, timeout=120, progress=False)
    assert kill.exists(), "no worker was killed: the test proves nothing"
    assert [row["status"] for row in result.rows] == ["passed", "passed"]
    run_dirs = _run_dirs(out)
    assert len(run_dirs) == 2 and all(_outputs_present(d) for d in run_dirs)
    assert sorted(row["attempts"] for row in result.rows) == [1, 2]
    retried = next(d for d, row in zip(run_dirs, sorted(result.rows, key=lambda r: r["id"])) if row["attempts"] == 2)
    assert (retried / sweep.EARLIER_DIR / "attempt-1" / "papermill.log").exists()  # the dead attempt's files are kept
    killed = json.loads(kill.read_text())
    for pid in killed.values():  # neither the worker nor the notebook process it started outlived the kill
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_sweep_runs_on_an_existing_cluster_given_its_scheduler_address(lessons, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = sweep.sweep("01", profile="smoke", grid={"RATE": [1.0]}, out=tmp_path / "sweep", folder=lessons,
                             scheduler=cluster.scheduler_address, timeout=120, progress=False)
        assert (result.ran, result.ok) == (1, True)
        assert cluster.scheduler_info["workers"], "the sweep must leave a cluster it did not start running"


def test_a_restarted_sweep_skips_complete_runs_and_keeps_what_was_written(lessons, tmp_path):
    out = tmp_path / "sweep"
    first = sweep.sweep("01", profile="smoke", grid={"RATE": [0.5]}, seeds=2, out=out, jobs=2, folder=lessons,
                        timeout=120, progress=False)
    assert (first.ran, first.skipped) == (2, 0) and first.ok
    kept, stopped = _run_dirs(out)
    kept_marker = (kept / sweep.DONE_FILE).stat().st_mtime_ns
    (stopped / sweep.DONE_FILE).unlink()  # as if the sweep had been stopped while this run was going

    second = sweep.sweep("01", profile="smoke", grid={"RATE": [0.5]}, seeds=3, out=out, jobs=2,
                         folder=lessons, timeout=120, progress=False)  # one seed more
    assert (second.ran, second.skipped) == (2, 1) and second.ok
    assert (kept / sweep.DONE_FILE).stat().st_mtime_ns == kept_marker
    assert (stopped / sweep.EARLIER_DIR / "attempt-1" / "metrics.json").exists()  # the stopped run's files are kept
    assert len(_run_dirs(out)) == 3 and all(_outputs_present(d) for d in _run_dirs(out))

    third = sweep.sweep("01", profile="smoke", grid={"RATE": [0.5]}, seeds=3, out=out, folder=lessons,
                        progress=False)  # nothing left to run: no cluster is started
    assert (third.ran, third.skipped) == (0, 3)
    spec = sweep.load_spec(out)
    assert len(spec["invocations"]) == 3 and len(spec["runs"]) == 3
    assert "3 run(s): 3 passed" in (out / "summary.md").read_text()
    with pytest.raises(NotebookError, match="holds a sweep of 01_tiny with profile smoke"):
        sweep.sweep("01", profile="cpu", out=out, folder=lessons, progress=False)


@pytest.mark.notebooks
def test_sweep_of_lesson_00_over_two_seeds_and_two_values_on_two_workers(tmp_path, capsys):
    out = tmp_path / "sweep00"
    code = cli.main(["sweep", "00", "--profile", "smoke", "-p", "DEVICE=cpu,auto", "--seeds", "2", "--jobs", "2",
                     "--out", str(out), "--no-progress", "--timeout", "300"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "4 of 4 runs passed (4 run now, 0 already complete)" in printed
    run_dirs = _run_dirs(out)
    assert [d.name for d in run_dirs] == ["DEVICE=auto__SEED=0", "DEVICE=auto__SEED=1",
                                          "DEVICE=cpu__SEED=0", "DEVICE=cpu__SEED=1"]
    assert all(_outputs_present(d, "00_medical_images") for d in run_dirs)
    summary = (out / "summary.md").read_text()
    assert "4 run(s): 4 passed" in summary and "| DEVICE | runs | hu_lung |" in summary
    assert "| cpu | 2/2 |" in summary and "±" in summary  # mean ± sd [interval] over two seeds
    results = json.loads((out / "results.json").read_text())
    assert results["swept"] == ["DEVICE"] and len(results["configurations"]) == 2
    assert all(c["stats"]["hu_lung"]["n"] == 2 for c in results["configurations"])
    for figure in results["figures"]:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figures/hu_lung.png" in results["figures"]
    page = (out / "index.html").read_text()
    assert 'href="runs/DEVICE=cpu__SEED=0/index.html"' in page and 'src="figures/hu_lung.png"' in page

    os.remove(out / "summary.md")  # medlab report re-renders a sweep folder
    assert cli.main(["report", str(out)]) == 0
    assert "4 run(s): 4 passed" in (out / "summary.md").read_text()
