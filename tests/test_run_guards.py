"""What `medlab run` refuses before anything runs, what it cuts from a flood of output, and which
expectations it holds a run on real data to."""
from __future__ import annotations

import json

import nbformat
import pytest

from medlab import cli, runner
from medlab.errors import NotebookError

PARAMS = 'PROFILE = "auto"\nSEED = 0\nOUTPUT_DIR = "."\nDATA = "phantom"\nPRINT = 0\n'
RECORD = ('import medlab\n'
          'ctx = medlab.setup("01_lesson", profile=PROFILE, seed=SEED, device="cpu", output_dir=OUTPUT_DIR, '
          'params=dict(DATA=DATA), quiet=True)\n'
          'print("x" * PRINT, end="")\n'
          'medlab.record(score=0.3)')


@pytest.fixture
def lesson(notebook_factory):
    notebook_factory("01_lesson", PARAMS, RECORD)
    (notebook_factory.folder / "expectations.json").write_text(json.dumps({
        "01_lesson": {"smoke": {"score": {"min": 0.5}},
                      "data": {"medmnist:measured": {"smoke": {"score": {"min": 0.2, "max": 0.4}}}}},
    }))
    return notebook_factory.folder


# --------------------------------------------------------------------------- refused before anything runs

@pytest.mark.parametrize("option, value, fix", [
    ("--jobs", "0", "--jobs 2"), ("--jobs", "-3", "--jobs 2"), ("--jobs", "two", "--jobs 2"),
    ("--timeout", "0", "--timeout 900"), ("--timeout", "-5", "--timeout 900"), ("--timeout", "nan", "--timeout 900"),
])
def test_bad_jobs_and_timeout_are_refused_with_the_fix(option, value, fix, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run_notebooks", lambda *a, **k: pytest.fail("a notebook ran"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "00", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and fix in err, err


def test_out_naming_an_existing_file_is_refused_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "notebook_parameters", lambda *a, **k: pytest.fail("a notebook was read"))
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    assert cli.main(["run", "00", "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert "existing file" in err and "--out runs/latest" in err and "Traceback" not in err
    assert existing.read_text() == "keep me"
    assert cli.main(["run", "00", "--out", str(existing / "below")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_run_notebooks_checks_its_options_too(tmp_path):
    for kwargs in ({"jobs": 0}, {"timeout": 0}, {"timeout": -1.0}, {"jobs": 1.5}):
        with pytest.raises(NotebookError, match="jobs|timeout"):
            runner.run_notebooks(["00"], out=tmp_path / "r", **kwargs)


# --------------------------------------------------------------------------- output capped

def test_cap_outputs_keeps_head_and_tail_and_says_how_much_was_cut(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="A" * 600 + "B" * 600),
                    nbformat.v4.new_output("display_data", data={"text/plain": "C" * 500, "image/png": "iVBOR"}),
                    nbformat.v4.new_output("stream", name="stdout", text="D" * 300)]
    small = nbformat.v4.new_code_cell("1")
    small.outputs = [nbformat.v4.new_output("stream", name="stdout", text="short\n")]
    nb.cells = [cell, small]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert runner.cap_outputs(path, limit=400) == 2000 - 400
    capped = nbformat.read(str(path), as_version=4)
    texts = [o.get("text") or o["data"]["text/plain"] for o in capped.cells[0].outputs]
    joined = "".join(texts)
    assert joined.startswith("A" * 300) and joined.endswith("D" * 100)
    assert "1,600 characters of this cell's output were cut" in joined
    assert capped.cells[0].outputs[1]["data"]["image/png"] == "iVBOR"          # images are kept
    assert capped.cells[1].outputs[0]["text"] == "short\n"
    assert runner.cap_outputs(path, limit=400) == 0                           # already within the cap


# --------------------------------------------------------------------------- runs, end to end

def test_flood_is_capped_and_real_data_is_held_to_its_own_expectations(lesson, tmp_path):
    out = tmp_path / "r1"
    [default] = runner.run_notebooks(["01"], profile="smoke", params={"PRINT": 1_500_000}, out=out,
                                     folder=lesson, timeout=300)
    assert default.status == "short" and default.unchecked is None   # phantoms: held to the phantom floor
    assert 1_500_000 - runner.OUTPUT_CAP_CHARS <= default.output_cut_chars < 1_500_000 - runner.OUTPUT_CAP_CHARS + 1000
    assert (out / default.executed).stat().st_size < 2 * runner.OUTPUT_CAP_CHARS
    assert (out / default.html).stat().st_size < 3 * runner.OUTPUT_CAP_CHARS
    assert "characters of this cell's output were cut" in (out / default.executed).read_text()

    out = tmp_path / "r2"
    [unmeasured] = runner.run_notebooks(["01"], profile="smoke", out=out, folder=lesson, timeout=300,
                                        params={"DATA": "medmnist:other"})
    assert unmeasured.status == "passed" and unmeasured.checks == []   # not "short" against phantom floors
    assert unmeasured.unchecked.startswith("not checked") and "medmnist:other" in unmeasured.unchecked
    assert "not checked" in (out / "summary.md").read_text()
    assert "not checked" in (out / "index.html").read_text()
    [again] = runner.rerender(out)                                     # re-checked the same way
    assert again.unchecked == unmeasured.unchecked and again.status == "passed"

    expectations = json.loads((lesson / "expectations.json").read_text())  # now measured on that data set
    expectations["01_lesson"]["data"]["medmnist:other"] = {"smoke": {"score": {"min": 0.2, "max": 0.4}}}
    (lesson / "expectations.json").write_text(json.dumps(expectations))
    [measured] = runner.rerender(out)
    assert measured.status == "passed" and measured.unchecked is None
    assert measured.checks == [{"metric": "score", "value": 0.3, "min": 0.2, "max": 0.4, "ok": True}]
    expectations["01_lesson"]["data"]["medmnist:other"]["smoke"]["score"]["min"] = 0.35
    (lesson / "expectations.json").write_text(json.dumps(expectations))
    assert runner.rerender(out)[0].status == "short"                  # held to that data set's own floor


def test_expectations_for():
    entry = {"cpu": {"a": {"min": 1}}, "data": {"covid-radiography": {"cpu": {"a": {"min": 0.5}}}}}
    assert runner.expectations_for(entry, "cpu", "phantom", "phantom") == ({"a": {"min": 1}}, None)
    assert runner.expectations_for(entry, "cpu", None, "phantom") == ({"a": {"min": 1}}, None)
    assert runner.expectations_for(entry, "cpu", "covid-radiography", "phantom") == ({"a": {"min": 0.5}}, None)
    expected, why = runner.expectations_for(entry, "gpu", "covid-radiography", "phantom")
    assert expected == {} and why.startswith("not checked") and "gpu" in why
