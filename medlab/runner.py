"""Execute the lessons with papermill and check what they record.

``medlab run`` calls :func:`run_notebooks`. For each notebook it:

1. checks the parameters given with ``-p NAME=VALUE`` against the ones the
   notebook declares in its ``parameters`` cell (names and types), before
   anything runs;
2. executes the notebook in its own process, with a kernel of this same Python
   environment, ``PROFILE`` and ``OUTPUT_DIR`` injected, and a wall-clock
   timeout; the executed copy is saved after every cell, so a notebook that
   fails or times out keeps its outputs and traceback;
3. reads the ``metrics.json`` the notebook wrote and checks each metric against
   the notebook's expectations for the profile (``notebooks/expectations.json``);
4. writes ``summary.md``, ``index.html`` and ``results.json`` in the output folder.

The run fails (non-zero exit from ``medlab run``) if any notebook failed,
timed out, recorded no metrics, or fell short of an expectation.
"""
from __future__ import annotations

import ast
import html
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import NotebookError
from .records import METRICS_FILE

__all__ = [
    "notebook_dir", "discover", "find_notebook", "notebook_parameters", "parse_assignments",
    "validate_parameters", "load_expectations", "check_metrics", "NotebookResult",
    "run_notebooks", "write_reports", "rerender", "EXPECTATIONS_FILE", "check_run_options",
    "expectations_for", "cap_outputs", "OUTPUT_CAP_CHARS",
]

EXPECTATIONS_FILE = "expectations.json"
KERNEL_NAME = "medlab-runner"
INJECTED = ("PROFILE", "OUTPUT_DIR")
PASSING = ("passed",)


# --------------------------------------------------------------------------- finding notebooks

def notebook_dir(path=None) -> Path:
    """The folder holding the lessons.

    ``path`` if given, else ``$MEDLAB_NOTEBOOKS``, else ``./notebooks``, else the
    ``notebooks/`` folder beside the installed package (a source checkout).
    """
    candidates = [path, os.environ.get("MEDLAB_NOTEBOOKS"), Path.cwd() / "notebooks",
                  Path(__file__).resolve().parent.parent / "notebooks"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    raise NotebookError("cannot find the lessons' folder: run from the medlab checkout, "
                        "or pass --notebooks DIR, or set MEDLAB_NOTEBOOKS")


def discover(folder=None) -> list[Path]:
    """The lessons in ``folder``, sorted by name (checkpoint copies skipped)."""
    folder = notebook_dir(folder)
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def find_notebook(name: str, folder=None) -> Path:
    """Resolve a notebook given by path, file name, stem, or number prefix (``"00"``).

    Raises:
        NotebookError: no notebook matches (the message lists them) or several do.
    """
    direct = Path(name)
    if direct.suffix == ".ipynb" and direct.is_file():
        return direct.resolve()
    notebooks = discover(folder)
    stem = direct.name.removesuffix(".ipynb")
    exact = [p for p in notebooks if p.stem == stem]
    matches = exact or [p for p in notebooks if p.stem.startswith(stem + "_") or p.stem.startswith(stem)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(p.stem for p in notebooks) or "(none)"
    if not matches:
        raise NotebookError(f"unknown notebook {name!r}; the notebooks are: {listing}")
    raise NotebookError(f"notebook name {name!r} is ambiguous: it matches {', '.join(p.stem for p in matches)}")


# --------------------------------------------------------------------------- parameters

def notebook_parameters(path) -> dict:
    """The parameters a notebook declares: ``{name: {"default": value, "type": str, "help": str}}``.

    Read from the cell tagged ``parameters`` with papermill's inspector.
    """
    import nbformat
    import papermill

    notebook = nbformat.read(str(path), as_version=4)
    # papermill reads the language from the kernelspec; a notebook saved without one is Python here
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "language": "python", "display_name": "Python 3"})
    declared = papermill.inspect_notebook(notebook)
    result = {}
    for name, info in declared.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            default = info["default"]
        inferred = info.get("inferred_type_name")
        if inferred in (None, "", "None"):  # papermill says "None" for a parameter without an annotation
            inferred = type(default).__name__
        result[name] = {"default": default, "type": inferred,
                        "help": info.get("help", "")}
    return result


def parse_assignments(assignments) -> dict:
    """Turn ``["SEED=3", "DATA=phantom"]`` into ``{"SEED": 3, "DATA": "phantom"}``.

    Values are read as Python literals where they are one (``3``, ``0.5``,
    ``True``, ``[1, 2]``) and kept as text otherwise.
    """
    params = {}
    for item in assignments or []:
        if "=" not in item:
            raise NotebookError(f"parameter {item!r} must look like NAME=VALUE")
        name, text = item.split("=", 1)
        name = name.strip()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        params[name] = value
    return params


def _type_ok(value, default) -> tuple[bool, object]:
    """Whether ``value`` fits the type of ``default``; returns (ok, value converted)."""
    if default is None:
        return True, value
    if isinstance(default, bool):
        return isinstance(value, bool), value
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if isinstance(default, str):
        if isinstance(value, str):
            return True, value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)  # DATA=123 typed on a command line
        return False, value
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)), value
    return isinstance(value, type(default)), value


def validate_parameters(path, params: dict) -> dict:
    """Check ``params`` against the notebook's declared parameters.

    Returns the parameters with their values converted (an ``int`` given for a
    ``float``, say).

    Raises:
        NotebookError: a name the notebook does not declare, or a value of the
            wrong type; the message lists the valid parameters with their defaults.
    """
    declared = notebook_parameters(path)
    listing = "; ".join(f"{n}={info['default']!r} ({info['type']})" for n, info in declared.items())
    checked = {}
    for name, value in params.items():
        if name not in declared:
            raise NotebookError(f"{Path(path).stem} has no parameter {name!r}. Valid parameters: {listing}")
        ok, converted = _type_ok(value, declared[name]["default"])
        if not ok:
            raise NotebookError(
                f"{Path(path).stem}: parameter {name}={value!r} has type {type(value).__name__}, "
                f"expected {declared[name]['type']} like its default {declared[name]['default']!r}. "
                f"Valid parameters: {listing}")
        checked[name] = converted
    return checked


# --------------------------------------------------------------------------- expectations

def load_expectations(folder=None) -> dict:
    """Read ``expectations.json`` beside the notebooks.

    Layout: ``{notebook_stem: {profile: {metric: {"min": x, "max": y}}}}``; either
    bound may be left out. A missing file means no expectations.
    """
    path = notebook_dir(folder) / EXPECTATIONS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NotebookError(f"{path} is not valid JSON: {err}") from err


def check_metrics(metrics: dict, expected: dict) -> list[dict]:
    """Compare recorded metrics with expectations; one row per expected metric.

    A metric that is missing or null fails its expectation.
    """
    rows = []
    for name, bounds in expected.items():
        value = metrics.get(name)
        low, high = bounds.get("min"), bounds.get("max")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            ok = False
        else:
            ok = (low is None or value >= low) and (high is None or value <= high)
        rows.append({"metric": name, "value": value, "min": low, "max": high, "ok": ok})
    return rows


# --------------------------------------------------------------------------- execution

@dataclass
class NotebookResult:
    """What happened to one notebook in a run."""

    notebook: str
    source: str
    status: str  # passed, failed, timeout, short, no-metrics
    wall_time_s: float
    executed: str | None = None  # executed .ipynb, relative to the run folder
    html: str | None = None  # rendered executed notebook, relative to the run folder
    metrics_file: str | None = None
    peak_memory_mb: float | None = None
    error: str | None = None
    checks: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    profile_overrides: dict | None = None  # fields replaced through MEDLAB_PROFILE_OVERRIDES, if any
    exercises: dict = field(default_factory=dict)  # exercise -> "passed" or "failed: why" (medlab.checks)
    unchecked: str | None = None  # why the metrics were not held to expectations (data they were not measured on)
    output_cut_chars: int = 0  # characters of cell output cut from the stored copy (see cap_outputs)
    t4_estimate_s: float | None = None  # the notebook's own estimate of its run time on a T4 (medlab.compute)


def _write_kernelspec(root: Path) -> Path:
    """A kernelspec that starts this very Python, so notebooks see the same packages."""
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "medlab (runner)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return root


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads_per_notebook(jobs: int, cores: int | None = None) -> int | None:
    """CPU threads each notebook's kernel may use when ``jobs`` notebooks run at once, or None for one at a time.

    PyTorch starts as many threads as there are cores in every process. Two
    kernels with two threads each on a 2-core machine do not share the cores
    gracefully: their threads spin while waiting for each other, and a lesson
    measured at one minute alone took over ten. So with ``jobs > 1`` each kernel
    gets ``cores // jobs`` threads (at least one), through ``OMP_NUM_THREADS``,
    unless that variable is already set (then the caller's choice stands).
    """
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (cores or os.cpu_count() or 1) // jobs)


def _child_environment(jupyter_root: Path, threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(threads))
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter_root), env.get("JUPYTER_PATH")]))
    env["MEDLAB_HEADLESS"] = "1"  # widgets draw static figures: nobody is there to move a slider
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _execute_in_child(source: Path, executed: Path, params: dict, cwd: Path, timeout: float,
                      jupyter_root: Path, log_path: Path,
                      threads: int | None = None) -> tuple[str, str | None, float | None]:
    """Run one notebook in a child process; returns (status, error, peak MiB of the kernel)."""
    job = {"source": str(source), "executed": str(executed), "params": params, "cwd": str(cwd),
           "timeout": timeout}
    command = [sys.executable, "-m", "medlab.runner", json.dumps(job)]
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=str(cwd),
                                 env=_child_environment(jupyter_root, threads), start_new_session=True)
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            return "timeout", f"did not finish within {timeout:g} s (the executed copy holds the cells that ran)", None
    outcome_path = executed.with_suffix(".outcome.json")
    if outcome_path.exists():
        outcome = json.loads(outcome_path.read_text())
        outcome_path.unlink()
        return outcome["status"], outcome.get("error"), outcome.get("peak_memory_mb")
    tail = Path(log_path).read_text()[-2000:]
    return "failed", f"the notebook process exited with code {child.returncode}:\n{tail}", None


def _kill_group(child: subprocess.Popen) -> None:
    """Stop a child and everything it started (the kernel too)."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def _exit_with_parent(poll_s: float = 0.25) -> None:
    """Stop this child, and the kernel it started, as soon as the process that launched it is gone.

    The child runs in a session of its own (so that a timeout can stop it as a
    group), which also shields it from the signals that end its parent. When the
    parent dies without cleaning up (a Dask worker killed in the middle of a
    sweep, say), an orphan would go on writing into the run folder that the
    retry of the same run is using.
    """
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        try:
            import psutil

            for process in psutil.Process().children(recursive=True):
                process.kill()
        except Exception:  # noqa: BLE001 - the kernel's own parent poller stops it anyway
            pass
        os._exit(1)

    threading.Thread(target=watch, name="medlab-exit-with-parent", daemon=True).start()


def _child_main(job_text: str) -> int:
    """Entry point of the child process: execute one notebook with papermill."""
    import resource

    import papermill
    from papermill.exceptions import PapermillExecutionError

    _exit_with_parent()
    job = json.loads(job_text)
    executed = Path(job["executed"])
    status, error = "passed", None
    try:
        papermill.execute_notebook(job["source"], str(executed), parameters=job["params"],
                                   kernel_name=KERNEL_NAME, language="python", cwd=job["cwd"], progress_bar=False,
                                   log_output=True, execution_timeout=int(job["timeout"]),
                                   request_save_on_cell_execute=True)
    except PapermillExecutionError as err:
        status = "failed"
        error = f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    except Exception as err:  # a kernel that died, a per-cell timeout, a bad notebook file
        status = "failed"
        error = f"{type(err).__name__}: {err}"
    # The kernel is this process's child: its peak resident memory shows here.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    outcome = {"status": status, "error": error, "peak_memory_mb": round(peak, 1)}
    executed.with_suffix(".outcome.json").write_text(json.dumps(outcome))
    return 0


def _render_html(executed: Path) -> Path | None:
    """Render an executed notebook as a standalone HTML page (None if nbconvert fails)."""
    try:
        import nbformat
        from nbconvert import HTMLExporter

        notebook = nbformat.read(executed, as_version=4)
        body, _ = HTMLExporter().from_notebook_node(notebook)
    except Exception:  # a half-written notebook from a timeout can be unreadable
        return None
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


# --------------------------------------------------------------------------- run options, real data, outputs

OUTPUT_CAP_CHARS = 1_000_000  # text output kept per cell in the executed copy and its HTML page
_CUT_NOTE = "characters of this cell's output were cut from the stored copy"


def check_run_options(out, jobs, timeout) -> None:
    """Refuse a run folder that is a file, ``jobs`` below 1 and a timeout of 0 or less, before anything runs.

    Raises:
        NotebookError: the message names the fix.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotebookError(f"--out {out} is an existing file, not a folder; name a folder for the run "
                            f"(it is created if missing), e.g. --out runs/latest")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise NotebookError(f"--out {out}: {parent} is a file, not a folder; name a folder for the run, "
                                f"e.g. --out runs/latest")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise NotebookError(f"jobs must be a whole number of at least 1, got {jobs!r}; e.g. --jobs 2")
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise NotebookError(f"timeout must be a positive number of seconds, got {timeout!r}; e.g. --timeout 900")


def expectations_for(entry: dict, profile: str, data=None, default_data=None) -> tuple[dict, str | None]:
    """The expectations that apply to a run, or none and the reason.

    ``entry`` is one notebook's block of ``expectations.json``: ``{profile: {metric: bounds}}``
    for the data the notebook runs on by default (its declared ``DATA``, phantoms), and
    optionally ``"data": {DATA value: {profile: {metric: bounds}}}`` for expectations measured
    on a real data set. A run on data other than the default is held to that data set's own
    expectations where they were measured, and otherwise is not checked: floors measured on
    phantoms say nothing about a real data set.
    """
    if data is None or data == default_data:
        return entry.get(profile, {}), None
    measured = (entry.get("data") or {}).get(str(data), {})
    if profile in measured:
        return measured[profile], None
    return {}, (f"not checked: the expectations were measured on DATA={default_data!r}; none were measured "
                f"on DATA={data!r} in the {profile} profile (add them under \"data\" in {EXPECTATIONS_FILE})")


def _text_fields(output: dict) -> list[tuple[dict, str]]:
    """(container, key) of each text an output holds: a stream's text, the text/* parts of its data."""
    if output.get("output_type") == "stream":
        return [(output, "text")]
    data = output.get("data") or {}
    return [(data, key) for key in sorted(data) if key.startswith("text/")]


def cap_outputs(path, limit: int = OUTPUT_CAP_CHARS) -> int:
    """Cut each cell's text output in an executed notebook to ``limit`` characters; returns how many were cut.

    A cell that printed more keeps its first three quarters of ``limit`` and its last
    quarter, with a note where the text was cut saying how much. Images are kept.
    """
    import nbformat

    path = Path(path)
    try:
        notebook = nbformat.read(str(path), as_version=4)
    except Exception:  # a half-written notebook from a timeout: leave it as it is
        return 0
    total_cut = 0
    for cell in notebook.cells:
        fields = [f for out in cell.get("outputs", []) for f in _text_fields(out)]
        texts = [c[k] if isinstance(c[k], str) else "".join(c[k]) for c, k in fields]
        size = sum(len(s) for s in texts)
        if size <= limit or any(_CUT_NOTE in s for s in texts):  # within the cap, or capped already
            continue
        head, tail = limit * 3 // 4, limit - limit * 3 // 4
        cut = size - head - tail
        note = (f"\n[medlab: {cut:,} {_CUT_NOTE} "
                f"(kept the first {head:,} and the last {tail:,}); print less, or write it to a file]\n")
        start, noted = 0, False
        for (container, key), text in zip(fields, texts):
            end = start + len(text)
            keep_head = text[:max(0, min(end, head) - start)]
            keep_tail = text[len(text) - max(0, end - max(start, size - tail)):] if end > size - tail else ""
            middle = ""
            if not noted and end > head:
                middle, noted = note, True
            container[key] = keep_head + middle + keep_tail
            start = end
        total_cut += cut
    if total_cut:
        nbformat.write(notebook, str(path))
    return total_cut


def _run_one(source: Path, profile: str, params: dict, out: Path, timeout: float,
             expectations: dict, jupyter_root: Path, threads: int | None = None) -> NotebookResult:
    stem = source.stem
    folder = out / stem
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (folder / METRICS_FILE, folder / f"{stem}.ipynb", folder / f"{stem}.html"):
        stale.unlink(missing_ok=True)
    declared = notebook_parameters(source)
    injected = {"PROFILE": profile, "OUTPUT_DIR": str(folder.resolve())}
    full = {k: v for k, v in injected.items() if k in declared}
    full.update(params)
    executed = folder / f"{stem}.ipynb"
    started = time.perf_counter()
    status, error, peak = _execute_in_child(source, executed, full, source.parent, timeout,
                                            jupyter_root, folder / "papermill.log", threads)
    wall = round(time.perf_counter() - started, 1)
    result = NotebookResult(notebook=stem, source=str(source), status=status, wall_time_s=wall,
                            peak_memory_mb=peak, error=error, parameters=full)
    if executed.exists():
        result.executed = executed.relative_to(out).as_posix()
        result.output_cut_chars = cap_outputs(executed)
        page = _render_html(executed)
        if page is not None:
            result.html = page.relative_to(out).as_posix()
    expected, result.unchecked = expectations_for(expectations.get(stem, {}), profile, full.get("DATA"),
                                                  declared.get("DATA", {}).get("default"))
    _apply_checks(result, out, expected)
    return result


def _apply_checks(result: NotebookResult, out: Path, expected: dict) -> None:
    """Fill in metrics and checks from the notebook's metrics.json; set status 'short' or 'no-metrics'."""
    metrics_path = out / result.notebook / METRICS_FILE
    if metrics_path.exists():
        document = json.loads(metrics_path.read_text())
        result.metrics = document.get("metrics", {})
        result.metrics_file = metrics_path.relative_to(out).as_posix()
        if result.peak_memory_mb is None:
            result.peak_memory_mb = document.get("peak_memory_mb")
        result.profile_overrides = document.get("profile_overrides")
        result.exercises = document.get("exercises") or {}
        result.t4_estimate_s = document.get("t4_estimate_s")
    if result.profile_overrides:
        expected = {}  # the expectations are for the profile as published, not for a shrunken copy of it
    result.checks = check_metrics(result.metrics, expected)
    if result.status != "passed" and result.status not in ("short", "no-metrics"):
        return
    result.status = "passed"
    result.error = None
    if expected and not metrics_path.exists():
        result.status = "no-metrics"
        result.error = f"the notebook wrote no {METRICS_FILE} (did it call medlab.record?)"
    elif any(not row["ok"] for row in result.checks):
        result.status = "short"
        failed = [row["metric"] for row in result.checks if not row["ok"]]
        result.error = "below expectations: " + ", ".join(failed)
    wrong = {name: verdict for name, verdict in result.exercises.items() if verdict != "passed"}
    if wrong:  # a solution notebook whose own answer fails its check is broken
        result.status = "failed"
        result.error = "exercise check(s) failed: " + "; ".join(f"{k}: {v}" for k, v in wrong.items())


def run_notebooks(names=None, profile: str = "cpu", params: dict | None = None, out="runs/latest",
                  jobs: int = 1, timeout: float = 1200, folder=None, log=print) -> list[NotebookResult]:
    """Execute notebooks, check their metrics and write the reports.

    Args:
        names: notebooks to run (names, stems, number prefixes or paths); all when empty.
        profile: the ``PROFILE`` injected into each notebook.
        params: extra parameters for every notebook (each must be declared by
            every notebook it goes to).
        out: the run folder; one sub-folder per notebook.
        jobs: notebooks executed at the same time (each kernel then gets its share of the
            CPU threads, see :func:`threads_per_notebook`).
        timeout: seconds a notebook may take before it is stopped.
        folder: where the notebooks are (see :func:`notebook_dir`).
        log: where progress lines go.

    Every parameter is validated for every notebook before any notebook runs.
    """
    from . import profiles

    check_run_options(out, jobs, timeout)
    profile_name = profiles.resolve(profile).name
    sources = [find_notebook(n, folder) for n in names] if names else discover(folder)
    if not sources:
        raise NotebookError(f"no notebooks found in {notebook_dir(folder)}")
    params = dict(params or {})
    for key in INJECTED:
        if key in params:
            raise NotebookError(f"{key} is set by the runner; use --profile / --out instead of -p {key}=...")
    checked = {src: validate_parameters(src, params) for src in sources}
    expectations = load_expectations(sources[0].parent)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jupyter_root = _write_kernelspec(out / ".jupyter")
    threads = threads_per_notebook(jobs)
    log(f"running {len(sources)} notebook(s), profile {profile_name}, into {out}"
        + (f"; {jobs} at a time, {threads} CPU thread(s) each" if threads else ""))

    def one(src):
        log(f"  start  {src.stem}")
        result = _run_one(src, profile_name, checked[src], out, timeout, expectations, jupyter_root, threads)
        log(f"  {result.status:<7}{src.stem} ({result.wall_time_s:.0f} s)" + (f": {result.error.splitlines()[0]}" if result.error else ""))
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, sources))
    write_reports(out, results, profile_name)
    return results


# --------------------------------------------------------------------------- reports

def write_reports(out, results: list[NotebookResult], profile: str) -> None:
    """Write ``results.json``, ``summary.md`` and ``index.html`` into ``out``."""
    out = Path(out)
    payload = {"profile": profile, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
               "results": [asdict(r) for r in results]}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    (out / "summary.md").write_text(_summary_markdown(results, profile))
    (out / "index.html").write_text(_summary_html(results, profile), encoding="utf-8")


def rerender(out, folder=None) -> list[NotebookResult]:
    """Re-read a run folder's metrics, re-check them against the current expectations and rewrite the reports."""
    out = Path(out).resolve()
    path = out / "results.json"
    if not path.exists():
        raise NotebookError(f"{out} holds no results.json: is it a folder written by 'medlab run'?")
    payload = json.loads(path.read_text())
    results = [NotebookResult(**row) for row in payload["results"]]
    try:
        expectations = load_expectations(folder or Path(results[0].source).parent)
    except (NotebookError, IndexError):
        expectations = {}
    for result in results:
        data = result.parameters.get("DATA")
        try:
            default = notebook_parameters(result.source).get("DATA", {}).get("default") if data is not None else None
        except Exception:  # the notebook moved or is unreadable: keep the verdict written at run time
            default = data if result.unchecked is None else object()
        expected, result.unchecked = expectations_for(expectations.get(result.notebook, {}), payload["profile"],
                                                      data, default)
        _apply_checks(result, out, expected)
    write_reports(out, results, payload["profile"])
    return results


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _t4(seconds) -> str:
    """A T4 estimate for the reports: "about 6 min", or a dash when the notebook gave none."""
    from .compute import format_duration

    return "—" if seconds is None else f"about {format_duration(seconds)}"


def _rule(row) -> str:
    low, high = row["min"], row["max"]
    if low is not None and high is not None:
        return f"in [{_format(low)}, {_format(high)}]"
    return f">= {_format(low)}" if low is not None else f"<= {_format(high)}"


def _summary_markdown(results, profile) -> str:
    passed = sum(r.status in PASSING for r in results)
    lines = [f"# medlab run: profile `{profile}`", "",
             f"{passed} of {len(results)} notebooks passed.", "",
             "| notebook | status | wall time (s) | peak memory (MiB) | T4 estimate | checks |",
             "|---|---|---|---|---|---|"]
    for r in results:
        checks = "; ".join(f"{'ok' if c['ok'] else 'FAIL'} {c['metric']}={_format(c['value'])} ({_rule(c)})" for c in r.checks) or "none"
        if r.profile_overrides:
            checks = f"not checked: profile fields overridden {r.profile_overrides}"
        elif r.unchecked:
            checks = r.unchecked
        lines.append(f"| {r.notebook} | {r.status} | {r.wall_time_s:.1f} | {_format(r.peak_memory_mb)} | "
                     f"{_t4(r.t4_estimate_s)} | {checks} |")
    if any(r.t4_estimate_s is not None for r in results):
        lines += ["", "T4 estimate: each notebook's estimate of its run time on an NVIDIA T4, from the FLOPs its "
                  "medlab.train loops did and an assumed sustained T4 rate, plus the rest of its time as measured "
                  "here, from medlab.setup to medlab.record (kernel start and imports not included; see "
                  "medlab/compute.py)."]
    problems = [r for r in results if r.error]
    if problems:
        lines += ["", "## Problems", ""]
        lines += [f"- **{r.notebook}** ({r.status}): {r.error.splitlines()[0]}" for r in problems]
    return "\n".join(lines) + "\n"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.35em .6em;vertical-align:top}
.passed{background:#e6f4ea}.failed,.timeout,.no-metrics{background:#fce8e6}.short{background:#fef7e0}
.ok{color:#137333}.fail{color:#c5221f;font-weight:bold}pre{white-space:pre-wrap;margin:0}"""


def _summary_html(results, profile) -> str:
    esc = html.escape
    passed = sum(r.status in PASSING for r in results)
    rows = []
    for r in results:
        links = []
        if r.html:
            links.append(f'<a href="{esc(r.html)}">executed notebook</a>')
        if r.executed:
            links.append(f'<a href="{esc(r.executed)}">.ipynb</a>')
        if r.metrics_file:
            links.append(f'<a href="{esc(r.metrics_file)}">metrics.json</a>')
        checks = "<br>".join(
            f'<span class="{"ok" if c["ok"] else "fail"}">{"✓" if c["ok"] else "✗"} {esc(c["metric"])} = {esc(_format(c["value"]))}</span> ({esc(_rule(c))})'
            for c in r.checks) or "no expectations"
        if r.profile_overrides:
            checks = f"not checked: profile fields overridden {esc(json.dumps(r.profile_overrides))}"
        elif r.unchecked:
            checks = esc(r.unchecked)
        error = f"<pre>{esc(r.error)}</pre>" if r.error else ""
        rows.append(f'<tr class="{esc(r.status)}"><td>{esc(r.notebook)}</td><td>{esc(r.status)}{error}</td>'
                    f"<td>{r.wall_time_s:.1f}</td><td>{esc(_format(r.peak_memory_mb))}</td>"
                    f"<td>{esc(_t4(r.t4_estimate_s))}</td>"
                    f"<td>{checks}</td><td>{' · '.join(links)}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>medlab run ({esc(profile)})</title>"
            f"<style>{_STYLE}</style></head><body><h1>medlab run: profile {esc(profile)}</h1>"
            f"<p>{passed} of {len(results)} notebooks passed.</p><table><thead><tr><th>notebook</th><th>status</th>"
            "<th>wall time (s)</th><th>peak memory (MiB)</th><th>T4 estimate</th><th>metrics against expectations</th><th>links</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></body></html>\n")


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
